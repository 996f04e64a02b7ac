//! The layout of one operator state table: its name, scope and columns, how an operator's
//! columns become a [`TableSnapshot`] (the key-group column first for keyed tables), and the
//! checks a restored table must pass before an operator reads it: the same columns by position
//! and type, and for keyed tables only key groups the subtask owns. A table that fails says
//! so with an [`OperatorError`] naming it, never a panic. It owns no state and knows nothing
//! of any operator's columns. [`WatermarkTable`] is the one table every event-time operator
//! shares the layout of.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, UInt32Type};
use arrow::record_batch::RecordBatch;
use millrace_types::Watermark;

use crate::error::OperatorError;
use crate::operator::{OperatorContext, StateScope, StateTable};
use crate::state::{KEY_GROUP_COLUMN, TableSnapshot, key_group_array, key_group_field};

/// One state table's layout; see the module docs.
pub(crate) struct StateLayout {
    name: &'static str,
    scope: StateScope,
    /// Every column, the key-group column first for a keyed table.
    schema: SchemaRef,
}

impl StateLayout {
    /// `fields`: the operator's columns (nullable where they may be null), without the
    /// key-group column.
    pub fn new(name: &'static str, scope: StateScope, fields: Vec<Field>) -> Self {
        let mut all = Vec::with_capacity(fields.len() + 1);
        if scope == StateScope::KeyGroups {
            all.push(key_group_field());
        }
        all.extend(fields);
        Self { name, scope, schema: Arc::new(Schema::new(all)) }
    }

    pub fn table(&self) -> StateTable {
        StateTable { name: self.name, scope: self.scope }
    }

    pub fn is_keyed(&self) -> bool {
        self.scope == StateScope::KeyGroups
    }

    /// An error about this table.
    pub fn error(&self, message: impl std::fmt::Display) -> OperatorError {
        OperatorError::Invalid(format!("state table {}: {message}", self.name))
    }

    /// The table holding `columns` (the operator's columns, `rows` rows each); `key_groups`
    /// (one per row) for a keyed table, ignored for an instance table. No rows: no batch.
    pub fn snapshot(
        &self,
        key_groups: Vec<u32>,
        columns: Vec<ArrayRef>,
        rows: usize,
    ) -> Result<TableSnapshot, OperatorError> {
        let mut batches = Vec::new();
        if rows > 0 {
            let mut all = Vec::with_capacity(self.schema.fields().len());
            if self.is_keyed() {
                if key_groups.len() != rows {
                    return Err(self.error(format!("{} key groups for {rows} rows", key_groups.len())));
                }
                all.push(key_group_array(key_groups));
            }
            all.extend(columns);
            if all.len() != self.schema.fields().len() {
                return Err(self.error(format!(
                    "{} columns built, the layout has {}",
                    all.len(),
                    self.schema.fields().len()
                )));
            }
            let all = all
                .into_iter()
                .zip(self.schema.fields())
                .map(|(a, f)| if a.data_type() == f.data_type() { Ok(a) } else { cast(&a, f.data_type()) })
                .collect::<Result<Vec<_>, _>>()?;
            batches.push(RecordBatch::try_new(Arc::clone(&self.schema), all).map_err(|e| self.error(e))?);
        }
        Ok(TableSnapshot { name: self.name.to_string(), batches })
    }

    /// Takes this table's batches out of `tables` (none if it is missing), checked against
    /// the layout, each reduced to the operator's columns (without the key-group column).
    pub fn take_restored(
        &self,
        tables: &mut Vec<TableSnapshot>,
        ctx: &OperatorContext,
    ) -> Result<Vec<RecordBatch>, OperatorError> {
        let (mine, others): (Vec<_>, Vec<_>) =
            std::mem::take(tables).into_iter().partition(|t| t.name == self.name);
        *tables = others;
        mine.into_iter()
            .flat_map(|t| t.batches)
            .filter(|b| b.num_rows() > 0)
            .map(|b| self.check(b, ctx))
            .collect()
    }

    fn check(&self, batch: RecordBatch, ctx: &OperatorContext) -> Result<RecordBatch, OperatorError> {
        let expected = self.schema.fields();
        let got = batch.schema();
        if got.fields().len() != expected.len() {
            let names =
                |s: &Schema| s.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ");
            return Err(self.error(format!(
                "has columns [{}], expected [{}]",
                names(&got),
                names(&self.schema)
            )));
        }
        for (i, (want, have)) in expected.iter().zip(got.fields()).enumerate() {
            if want.data_type() != have.data_type() {
                return Err(self.error(format!(
                    "column {i} ({}) is {}, expected {} ({})",
                    have.name(),
                    have.data_type(),
                    want.data_type(),
                    want.name()
                )));
            }
            if !want.is_nullable() && batch.column(i).null_count() > 0 {
                return Err(self.error(format!("column {i} ({}) holds nulls", want.name())));
            }
        }
        if !self.is_keyed() {
            return Ok(batch);
        }
        if got.field(0).name() != KEY_GROUP_COLUMN {
            return Err(self
                .error(format!("the first column is {}, expected {KEY_GROUP_COLUMN}", got.field(0).name())));
        }
        let groups = batch.column(0).as_primitive::<UInt32Type>();
        if let Some(g) = groups.values().iter().find(|g| !ctx.key_groups.contains(**g)) {
            return Err(self.error(format!(
                "holds key group {g}, outside this subtask's key groups {}..={}",
                ctx.key_groups.first, ctx.key_groups.last
            )));
        }
        Ok(batch.project(&(1..batch.num_columns()).collect::<Vec<_>>())?)
    }
}

/// Fails on restored tables that none of `layouts` claims (what is left after every
/// [`StateLayout::take_restored`]).
pub(crate) fn refuse_unknown_tables(operator: &str, tables: &[TableSnapshot]) -> Result<(), OperatorError> {
    match tables.first() {
        None => Ok(()),
        Some(table) => {
            Err(OperatorError::Invalid(format!("state table {}: {operator} has no such table", table.name)))
        }
    }
}

/// The watermark an event-time operator had at a checkpoint, so that rows late before it stay
/// late after a restore (the runtime starts a restored job at no watermark; the sources' first
/// watermarks after it may lie below the checkpoint's). A keyed operator writes one row per
/// key group it owns, so that every subtask of any parallelism restores it; a restored
/// operator takes the lowest it is given.
pub(crate) struct WatermarkTable {
    layout: StateLayout,
}

impl WatermarkTable {
    pub fn new(name: &'static str, scope: StateScope) -> Self {
        Self { layout: StateLayout::new(name, scope, vec![Field::new("watermark", DataType::Int64, false)]) }
    }

    pub fn table(&self) -> StateTable {
        self.layout.table()
    }

    pub fn snapshot(
        &self,
        watermark: Watermark,
        ctx: &OperatorContext,
    ) -> Result<TableSnapshot, OperatorError> {
        let key_groups: Vec<u32> = if self.layout.is_keyed() {
            (ctx.key_groups.first..=ctx.key_groups.last).collect()
        } else {
            vec![0]
        };
        let rows = key_groups.len();
        let watermarks: ArrayRef = Arc::new(Int64Array::from(vec![watermark.0; rows]));
        self.layout.snapshot(key_groups, vec![watermarks], rows)
    }

    /// The lowest watermark restored (`None` when the table is missing or empty).
    pub fn take_restored(
        &self,
        tables: &mut Vec<TableSnapshot>,
        ctx: &OperatorContext,
    ) -> Result<Option<Watermark>, OperatorError> {
        let batches = self.layout.take_restored(tables, ctx)?;
        Ok(batches
            .iter()
            .filter_map(|b| arrow::compute::min(b.column(0).as_primitive::<Int64Type>()))
            .min()
            .map(Watermark))
    }
}
