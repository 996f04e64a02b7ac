//! What the window operators share: turning group keys into comparable rows, evaluating
//! accumulators, and building output batches whose group columns carry the window start
//! (at the window function's position; for count windows, whose window column is an integer,
//! the window's sequence number) and whose aggregate columns may carry the window end
//! (`window_end(ts)`). It owns no state and never decides when a window fires.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int8Array, Int64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use datafusion_common::ScalarValue;
use datafusion_expr::Accumulator;
use datafusion_physical_expr::PhysicalExpr;
use datafusion_physical_expr::aggregate::AggregateFunctionExpr;

use crate::error::OperatorError;

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
    keys: Vec<Arc<dyn PhysicalExpr>>,
    window_position: usize,
    columns: Vec<WindowOutputColumn>,
    schema: SchemaRef,
    converter: RowConverter,
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
    ) -> Result<Self, OperatorError> {
        let fields = if keys.is_empty() {
            vec![SortField::new(DataType::Int8)]
        } else {
            Self::key_types(&schema, keys.len(), window_position).into_iter().map(SortField::new).collect()
        };
        let converter = RowConverter::new(fields)?;
        Ok(Self { keys, window_position, columns, schema, converter })
    }

    fn key_types(schema: &SchemaRef, keys: usize, window_position: usize) -> Vec<DataType> {
        schema
            .fields()
            .iter()
            .take(keys + 1)
            .enumerate()
            .filter(|(i, _)| *i != window_position)
            .map(|(_, f)| f.data_type().clone())
            .collect()
    }

    pub fn is_keyed(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The group keys of every row of `batch`, comparable and hashable.
    pub fn key_rows(&self, batch: &RecordBatch) -> Result<Rows, OperatorError> {
        let rows = batch.num_rows();
        if self.keys.is_empty() {
            let constant: ArrayRef = Arc::new(Int8Array::from(vec![0i8; rows]));
            return Ok(self.converter.convert_columns(&[constant])?);
        }
        let types = Self::key_types(&self.schema, self.keys.len(), self.window_position);
        let mut columns = Vec::with_capacity(self.keys.len());
        for (expr, field) in self.keys.iter().zip(&types) {
            let array = expr.evaluate(batch)?.into_array(rows)?;
            // Keys are compared in their output type so that emitted keys round-trip exactly.
            columns.push(if array.data_type() == field { array } else { cast(&array, field)? });
        }
        Ok(self.converter.convert_columns(&columns)?)
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
        let group_count = self.keys.len() + 1;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        if !self.keys.is_empty() {
            columns = self.converter.convert_rows(rows.iter().map(|r| r.key.row()))?;
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
