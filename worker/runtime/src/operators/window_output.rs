//! What the window operators share: group keys as comparable rows ([`GroupKeys`]), evaluating
//! accumulators, and building output batches whose group columns carry the window start
//! (at the window function's position; for count windows, whose window column is an integer,
//! the window's sequence number) and whose aggregate columns may carry the window end
//! (`window_end(ts)`). It owns no state and never decides when a window fires.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use arrow::row::{OwnedRow, Rows};
use datafusion_common::ScalarValue;
use datafusion_expr::Accumulator;
use datafusion_physical_expr::PhysicalExpr;
use datafusion_physical_expr::aggregate::AggregateFunctionExpr;

use crate::error::OperatorError;
use crate::operators::group_keys::GroupKeys;

/// One output column after the group columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowOutputColumn {
    /// The aggregate at this index of the spec's `aggregates`.
    Aggregate(usize),
    /// The end of the row's window (exclusive), `window_end(ts)` in SQL.
    WindowEnd,
}

/// Accumulators of one (window, key) group.
pub(crate) type GroupState = Vec<Box<dyn Accumulator>>;

/// One emitted row: window start, window end, key, aggregate values.
pub(crate) struct EmittedRow {
    /// The window start in ms (a count window's sequence number).
    pub start: i64,
    pub end: i64,
    pub key: OwnedRow,
    pub values: Vec<ScalarValue>,
}

/// Key conversion and output building for a window operator.
pub(crate) struct WindowOutput {
    keys: GroupKeys,
    window_position: usize,
    columns: Vec<WindowOutputColumn>,
    schema: SchemaRef,
}

pub(crate) fn timestamp_ms() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

impl WindowOutput {
    pub fn try_new(
        keys: Vec<Arc<dyn PhysicalExpr>>,
        window_position: usize,
        columns: Vec<WindowOutputColumn>,
        schema: SchemaRef,
        input: &Schema,
    ) -> Result<Self, OperatorError> {
        let types = Self::key_fields_of(&schema, keys.len(), window_position)
            .into_iter()
            .map(|f| f.data_type().clone())
            .collect();
        Ok(Self { keys: GroupKeys::try_new(keys, types, input)?, window_position, columns, schema })
    }

    fn key_fields_of(schema: &SchemaRef, keys: usize, window_position: usize) -> Vec<Field> {
        schema
            .fields()
            .iter()
            .take(keys + 1)
            .enumerate()
            .filter(|(i, _)| *i != window_position)
            .map(|(_, f)| f.as_ref().clone())
            .collect()
    }

    /// The key columns' fields in the output (for state tables), nullable.
    pub fn key_fields(&self) -> Vec<Field> {
        Self::key_fields_of(&self.schema, self.keys.count(), self.window_position)
            .into_iter()
            .map(|f| f.with_nullable(true))
            .collect()
    }

    pub fn keys(&self) -> &GroupKeys {
        &self.keys
    }

    /// The decoded key columns of `keys` and their key groups, for a state table (nothing for
    /// a global operator).
    pub fn key_columns(
        &self,
        keys: &[OwnedRow],
        max_parallelism: u32,
    ) -> Result<(Vec<ArrayRef>, Vec<u32>), OperatorError> {
        if !self.keys.is_keyed() || keys.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let columns = self.keys.columns(keys.iter().map(|k| k.row()))?;
        let key_groups = self.keys.key_groups(&columns, max_parallelism)?;
        Ok((columns, key_groups))
    }

    pub fn is_keyed(&self) -> bool {
        self.keys.is_keyed()
    }

    /// The group keys of every row of `batch`, comparable and hashable.
    pub fn key_rows(&self, batch: &RecordBatch) -> Result<Rows, OperatorError> {
        self.keys.rows(batch)
    }

    /// Fresh accumulators for a new group.
    pub fn accumulators(aggregates: &[Arc<AggregateFunctionExpr>]) -> Result<GroupState, OperatorError> {
        Ok(aggregates.iter().map(|a| a.create_accumulator()).collect::<Result<Vec<_>, _>>()?)
    }

    /// The current values of a group's accumulators.
    pub fn evaluate(group: &mut GroupState) -> Result<Vec<ScalarValue>, OperatorError> {
        Ok(group.iter_mut().map(|a| a.evaluate()).collect::<Result<Vec<_>, _>>()?)
    }

    /// One batch from `rows`, in the given order; `None` when there are none.
    pub fn build(&self, rows: Vec<EmittedRow>) -> Result<Option<RecordBatch>, OperatorError> {
        if rows.is_empty() {
            return Ok(None);
        }
        let as_timestamps = |values: Vec<i64>, target: &DataType| -> Result<ArrayRef, OperatorError> {
            let values: ArrayRef = Arc::new(Int64Array::from(values));
            if target.is_integer() {
                return Ok(cast(&values, target)?);
            }
            Ok(cast(&cast(&values, &timestamp_ms())?, target)?)
        };
        let group_count = self.keys.count() + 1;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        if self.keys.is_keyed() {
            columns = self.keys.columns(rows.iter().map(|r| r.key.row()))?;
        }
        let starts = rows.iter().map(|r| r.start).collect();
        columns.insert(
            self.window_position,
            as_timestamps(starts, self.schema.field(self.window_position).data_type())?,
        );
        for (i, column) in self.columns.iter().enumerate() {
            let field_type = self.schema.field(group_count + i).data_type();
            let array = match column {
                WindowOutputColumn::WindowEnd => {
                    as_timestamps(rows.iter().map(|r| r.end).collect(), field_type)?
                }
                WindowOutputColumn::Aggregate(a) => {
                    ScalarValue::iter_to_array(rows.iter().map(|r| r.values[*a].clone()))?
                }
            };
            columns.push(if array.data_type() == field_type { array } else { cast(&array, field_type)? });
        }
        Ok(Some(RecordBatch::try_new(Arc::clone(&self.schema), columns)?))
    }
}
