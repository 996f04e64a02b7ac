//! Top-N: Flink's `ROW_NUMBER() OVER (PARTITION BY p ORDER BY s) AS rn` under `WHERE rn <= N`,
//! over an append-only input (deduplication, `ORDER BY ts DESC … rn <= 1`, is the case N = 1).
//!
//! Each partition key keeps its best N rows, ordered by the sort key in Arrow's row format (so
//! `DESC`, `NULLS FIRST` and several sort columns compare as bytes); a row equal to a kept one
//! ranks after it (the earlier row keeps the better rank, as in Flink's Top-N), except in
//! a deduplication keeping the last row (`ORDER BY` one time attribute `DESC`, N = 1), where
//! the later row wins, as in Flink's deduplication. A row that ranks
//! within N is inserted and the row pushed past N is dropped; a row that does not is dropped
//! at once. The operator works per batch, like the updating aggregate: after each batch,
//! every rank position of a key that the batch changed is emitted once with its current row
//! and row number, an upsert of (partition key, row number): `+I` for a position filled for
//! the first time, `+U` after. Rows never leave a key's top N except by being pushed out, and
//! positions never empty, so there are no deletes. The planner makes the upsert key (partition
//! key, row number), or the partition key alone when N = 1.
//!
//! State: the kept rows per key (every input column, in Arrow's row format), as the keyed
//! table `top_n_rows` at a checkpoint, each key's rows in rank order. It grows with the number
//! of partition keys (no state TTL). Watermarks pass through.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, UInt64Array};
use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, Field, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::row::{OwnedRow, Row, RowConverter, SortField};
use datafusion_physical_expr::PhysicalExpr;
use millrace_types::RowKind;
use millrace_types::changelog::{row_kind_array, with_row_kind};

use crate::error::OperatorError;
use crate::operator::{Operator, OperatorContext, StateScope, StateTable};
use crate::operators::group_keys::GroupKeys;
use crate::operators::state_table::{StateLayout, refuse_unknown_tables};
use crate::state::TableSnapshot;

/// What the planner hands the Top-N operator.
#[derive(Clone)]
pub struct TopNSpec {
    /// PARTITION BY; empty for a global Top-N (one instance, behind a single exchange).
    pub partition_by: Vec<Arc<dyn PhysicalExpr>>,
    /// The type each partition expression evaluates to (the key's type).
    pub partition_types: Vec<DataType>,
    /// ORDER BY, best first.
    pub order_by: Vec<(Arc<dyn PhysicalExpr>, SortOptions)>,
    /// N: how many rows each key keeps (at least 1).
    pub limit: usize,
    /// Whether a row ranks before the kept rows equal to it rather than after: Flink's
    /// deduplication keeping the last row (`ORDER BY ts DESC`, N = 1), where the later of two
    /// rows at one time wins.
    pub ties_to_latest: bool,
    /// The rows the operator receives (append-only).
    pub input_schema: SchemaRef,
    /// The logical output: the input's columns, then the row number (UInt64). The operator
    /// emits it with the row-kind column appended.
    pub output_schema: SchemaRef,
}

impl TopNSpec {
    /// The schema of the batches the operator emits.
    pub fn emitted_schema(&self) -> SchemaRef {
        Arc::new(with_row_kind(&self.output_schema))
    }
}

/// One kept row: its sort key and its columns.
struct Ranked {
    sort: OwnedRow,
    row: OwnedRow,
}

impl Ranked {
    fn heap_bytes(&self) -> usize {
        self.sort.row().as_ref().len() + self.row.row().as_ref().len()
    }
}

/// The Top-N operator; see the module docs.
pub struct TopNOperator {
    spec: TopNSpec,
    schema: SchemaRef,
    keys: GroupKeys,
    sort: RowConverter,
    rows: RowConverter,
    /// Each key's kept rows, best first (at most `limit`).
    ranked: HashMap<OwnedRow, Vec<Ranked>>,
    layout: StateLayout,
    /// Heap bytes of keys and kept rows beyond the map's own table.
    heap_bytes: usize,
}

impl TopNOperator {
    pub fn try_new(spec: TopNSpec) -> Result<Self, OperatorError> {
        if spec.limit == 0 {
            return Err(OperatorError::Invalid("a Top-N keeps at least one row".into()));
        }
        if spec.order_by.is_empty() {
            return Err(OperatorError::Invalid("a Top-N needs an ORDER BY".into()));
        }
        let input = &spec.input_schema;
        let keys = GroupKeys::try_new(spec.partition_by.clone(), spec.partition_types.clone(), input)?;
        let sort_fields = spec
            .order_by
            .iter()
            .map(|(expr, options)| Ok(SortField::new_with_options(expr.data_type(input)?, *options)))
            .collect::<Result<Vec<_>, OperatorError>>()?;
        let row_fields = input.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect();
        let scope = if spec.partition_by.is_empty() { StateScope::Instance } else { StateScope::KeyGroups };
        let fields: Vec<Field> =
            input.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
        Ok(Self {
            schema: spec.emitted_schema(),
            keys,
            sort: RowConverter::new(sort_fields)?,
            rows: RowConverter::new(row_fields)?,
            ranked: HashMap::new(),
            layout: StateLayout::new("top_n_rows", scope, fields),
            heap_bytes: 0,
            spec,
        })
    }

    /// The sort key of every row of `batch`.
    fn sort_keys(&self, batch: &RecordBatch) -> Result<arrow::row::Rows, OperatorError> {
        let columns = self
            .spec
            .order_by
            .iter()
            .map(|(expr, _)| Ok(expr.evaluate(batch)?.into_array(batch.num_rows())?))
            .collect::<Result<Vec<ArrayRef>, OperatorError>>()?;
        Ok(self.sort.convert_columns(&columns)?)
    }

    /// Ranks `row` (sort key `sort`) among `kept`: the position it took, or `None` when it
    /// ranks past the limit. Returns the heap bytes added (positive) and freed.
    fn rank(
        kept: &mut Vec<Ranked>,
        sort: Row<'_>,
        row: Row<'_>,
        limit: usize,
        ties_to_latest: bool,
    ) -> (Option<usize>, usize, usize) {
        let position = if ties_to_latest {
            kept.partition_point(|r| r.sort.row() < sort)
        } else {
            kept.partition_point(|r| r.sort.row() <= sort)
        };
        if position >= limit {
            return (None, 0, 0);
        }
        let entry = Ranked { sort: sort.owned(), row: row.owned() };
        let added = entry.heap_bytes();
        kept.insert(position, entry);
        let freed = if kept.len() > limit { kept.pop().map_or(0, |r| r.heap_bytes()) } else { 0 };
        (Some(position), added, freed)
    }

    /// One output batch of the emitted positions: rows, their row numbers (from 1) and kinds.
    fn build(
        &self,
        rows: Vec<Row<'_>>,
        numbers: Vec<u64>,
        kinds: Vec<RowKind>,
    ) -> Result<RecordBatch, OperatorError> {
        let mut columns = self.rows.convert_rows(rows)?;
        columns.push(Arc::new(UInt64Array::from(numbers)));
        columns.push(row_kind_array(kinds));
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

impl Operator for TopNOperator {
    fn name(&self) -> &'static str {
        "top_n"
    }

    fn state_tables(&self) -> Vec<StateTable> {
        vec![self.layout.table()]
    }

    fn state_bytes(&self) -> usize {
        self.ranked.capacity() * (std::mem::size_of::<(OwnedRow, Vec<Ranked>)>() + 1) + self.heap_bytes
    }

    fn process_batch(
        &mut self,
        batch: RecordBatch,
        _ctx: &OperatorContext,
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        let keys = self.keys.rows(&batch)?;
        let sorts = self.sort_keys(&batch)?;
        let rows = self.rows.convert_columns(batch.columns())?;
        // The batch's keys in order of first appearance, each with its row indices.
        let mut position: HashMap<Row<'_>, usize> = HashMap::new();
        let mut changed: Vec<(Row<'_>, Vec<usize>)> = Vec::new();
        for i in 0..batch.num_rows() {
            let key = keys.row(i);
            let at = *position.entry(key).or_insert_with(|| {
                changed.push((key, Vec::new()));
                changed.len() - 1
            });
            changed[at].1.push(i);
        }
        let limit = self.spec.limit;
        // (key, first changed position, positions filled before the batch) per changed key.
        let mut emitted = Vec::new();
        for (key, indices) in changed {
            let key = key.owned();
            let kept = self.ranked.entry(key.clone()).or_insert_with(|| {
                self.heap_bytes += key.row().as_ref().len();
                Vec::with_capacity(limit.min(16))
            });
            let before = kept.len();
            let mut first = usize::MAX;
            for i in indices {
                let (taken, added, freed) =
                    Self::rank(kept, sorts.row(i), rows.row(i), limit, self.spec.ties_to_latest);
                if let Some(p) = taken {
                    first = first.min(p);
                    self.heap_bytes = (self.heap_bytes + added).saturating_sub(freed);
                }
            }
            if first != usize::MAX {
                emitted.push((key, first, before));
            }
        }
        if emitted.is_empty() {
            return Ok(());
        }
        let (mut out_rows, mut numbers, mut kinds) = (Vec::new(), Vec::new(), Vec::new());
        for (key, first, before) in &emitted {
            let kept = &self.ranked[key];
            for (p, ranked) in kept.iter().enumerate().skip(*first) {
                out_rows.push(ranked.row.row());
                numbers.push(p as u64 + 1);
                kinds.push(if p >= *before { RowKind::Insert } else { RowKind::UpdateAfter });
            }
        }
        out.push(self.build(out_rows, numbers, kinds)?);
        Ok(())
    }

    fn snapshot_state(&mut self, ctx: &OperatorContext) -> Result<Vec<TableSnapshot>, OperatorError> {
        let mut key_rows = Vec::new();
        let mut kept_rows = Vec::new();
        for (key, kept) in &self.ranked {
            for ranked in kept {
                key_rows.push(key.row());
                kept_rows.push(ranked.row.row());
            }
        }
        let count = kept_rows.len();
        if count == 0 {
            return Ok(vec![self.layout.snapshot(Vec::new(), Vec::new(), 0)?]);
        }
        let key_groups = if self.keys.is_keyed() {
            let key_columns = self.keys.columns(key_rows)?;
            self.keys.key_groups(&key_columns, ctx.max_parallelism)?
        } else {
            Vec::new()
        };
        let columns = self.rows.convert_rows(kept_rows)?;
        Ok(vec![self.layout.snapshot(key_groups, columns, count)?])
    }

    fn restore_state(
        &mut self,
        mut tables: Vec<TableSnapshot>,
        ctx: &OperatorContext,
    ) -> Result<(), OperatorError> {
        let batches = self.layout.take_restored(&mut tables, ctx)?;
        refuse_unknown_tables(self.name(), &tables)?;
        for columns in batches {
            let batch = RecordBatch::try_new(Arc::clone(&self.spec.input_schema), columns.columns().to_vec())
                .map_err(|e| self.layout.error(e))?;
            let keys = self.keys.rows(&batch)?;
            let sorts = self.sort_keys(&batch)?;
            let rows = self.rows.convert_columns(batch.columns())?;
            for i in 0..batch.num_rows() {
                let key = keys.row(i).owned();
                let kept = self.ranked.entry(key.clone()).or_insert_with(|| {
                    self.heap_bytes += key.row().as_ref().len();
                    Vec::new()
                });
                // Rows were written best first, so each lands after its equals, as before.
                let (taken, added, freed) =
                    Self::rank(kept, sorts.row(i), rows.row(i), self.spec.limit, false);
                if taken.is_none() || freed > 0 {
                    return Err(self
                        .layout
                        .error(format!("holds more than {} rows of a key", self.spec.limit)));
                }
                self.heap_bytes += added;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "top_n_tests.rs"]
mod tests;
