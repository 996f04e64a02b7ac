//! `GROUP BY tumble(...)` / `GROUP BY hop(...)`: event-time (or processing-time) window
//! aggregation, keyed or global. Rows are assigned to windows and grouped per batch with
//! Arrow's row format; each (window, key) holds DataFusion accumulators, so every SQL
//! aggregate DataFusion offers works here. A window is emitted once, when the watermark
//! passes its end (retraction-free); rows for already-closed windows are late: counted and
//! dropped (the late side output comes with allowed lateness).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int8Array, Int64Array, UInt32Array};
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion_common::ScalarValue;
use datafusion_expr::Accumulator;
use datafusion_physical_expr::PhysicalExpr;
use datafusion_physical_expr::aggregate::AggregateFunctionExpr;
use millrace_types::Watermark;

use crate::error::OperatorError;
use crate::operator::{Operator, OperatorContext, StateScope, StateTable};

/// How rows map to windows. Sizes are in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowAssigner {
    /// Fixed, non-overlapping windows `[k*size, (k+1)*size)`.
    Tumbling { size_ms: i64 },
    /// Windows of `size_ms` starting every `slide_ms` (a row belongs to `size/slide` windows).
    Hopping { size_ms: i64, slide_ms: i64 },
}

impl WindowAssigner {
    pub fn size_ms(&self) -> i64 {
        match *self {
            WindowAssigner::Tumbling { size_ms } | WindowAssigner::Hopping { size_ms, .. } => size_ms,
        }
    }

    /// Calls `f` with the start of every window containing `ts`, oldest first.
    pub fn for_each_window(&self, ts: i64, mut f: impl FnMut(i64)) {
        match *self {
            WindowAssigner::Tumbling { size_ms } => f(ts - ts.rem_euclid(size_ms)),
            WindowAssigner::Hopping { size_ms, slide_ms } => {
                // Window starts lie on the slide grid; the oldest window containing `ts` is
                // the first start greater than `ts - size`.
                let last = ts - ts.rem_euclid(slide_ms);
                let count = (last - (ts - size_ms)).div_euclid(slide_ms)
                    + i64::from((last - (ts - size_ms)).rem_euclid(slide_ms) != 0);
                let oldest = last - (count - 1) * slide_ms;
                let mut start = oldest;
                while start <= last {
                    f(start);
                    start += slide_ms;
                }
            }
        }
    }
}

/// What the planner hands the window aggregate.
#[derive(Clone)]
pub struct WindowAggregateSpec {
    /// The time attribute (event time or processing time), any timestamp type.
    pub time: Arc<dyn PhysicalExpr>,
    pub assigner: WindowAssigner,
    /// Group keys besides the window; empty for a global window.
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Where the window-start column sits among the group columns of the output.
    pub window_position: usize,
    pub aggregates: Vec<Arc<AggregateFunctionExpr>>,
    /// Group columns (keys with the window start inserted at `window_position`), then one
    /// column per aggregate.
    pub output_schema: SchemaRef,
}

/// Accumulators of one (window, key) group.
type GroupState = Vec<Box<dyn Accumulator>>;

/// The window aggregate operator; see the module docs.
pub struct WindowAggregateOperator {
    spec: WindowAggregateSpec,
    converter: RowConverter,
    /// window start → key → accumulators. Ordered by start so closing is a range pop.
    windows: BTreeMap<i64, HashMap<OwnedRow, GroupState>>,
}

impl WindowAggregateOperator {
    pub fn try_new(spec: WindowAggregateSpec) -> Result<Self, OperatorError> {
        let key_fields = if spec.keys.is_empty() {
            vec![SortField::new(DataType::Int8)]
        } else {
            let group_fields: Vec<_> = spec
                .output_schema
                .fields()
                .iter()
                .take(spec.keys.len() + 1)
                .enumerate()
                .filter(|(i, _)| *i != spec.window_position)
                .map(|(_, f)| SortField::new(f.data_type().clone()))
                .collect();
            group_fields
        };
        let converter = RowConverter::new(key_fields)?;
        Ok(Self { spec, converter, windows: BTreeMap::new() })
    }

    fn key_columns(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>, OperatorError> {
        let rows = batch.num_rows();
        if self.spec.keys.is_empty() {
            return Ok(vec![Arc::new(Int8Array::from(vec![0i8; rows]))]);
        }
        let mut columns = Vec::with_capacity(self.spec.keys.len());
        for (expr, field) in self.spec.keys.iter().zip(self.key_fields()) {
            let array = expr.evaluate(batch)?.into_array(rows)?;
            // Keys are compared in their output type so that emitted keys round-trip exactly.
            columns.push(if array.data_type() == field { array } else { cast(&array, field)? });
        }
        Ok(columns)
    }

    fn key_fields(&self) -> Vec<&DataType> {
        self.spec
            .output_schema
            .fields()
            .iter()
            .take(self.spec.keys.len() + 1)
            .enumerate()
            .filter(|(i, _)| *i != self.spec.window_position)
            .map(|(_, f)| f.data_type())
            .collect()
    }

    /// Emits every window that `watermark` completes, oldest first, keys in row order.
    fn close_windows(&mut self, watermark: Watermark) -> Result<Option<RecordBatch>, OperatorError> {
        let size = self.spec.assigner.size_ms();
        let mut starts = Vec::new();
        let mut keys = Vec::new();
        let mut values: Vec<Vec<ScalarValue>> = vec![Vec::new(); self.spec.aggregates.len()];
        while let Some(entry) = self.windows.first_entry() {
            if !watermark.closes_window_ending_at(entry.key().saturating_add(size)) {
                break;
            }
            let start = *entry.key();
            let mut groups: Vec<_> = entry.remove().into_iter().collect();
            groups.sort_by(|a, b| a.0.cmp(&b.0));
            for (key, mut accumulators) in groups {
                starts.push(start);
                keys.push(key);
                for (column, accumulator) in values.iter_mut().zip(accumulators.iter_mut()) {
                    column.push(accumulator.evaluate()?);
                }
            }
        }
        if starts.is_empty() {
            return Ok(None);
        }
        let schema = &self.spec.output_schema;
        let window_type = schema.field(self.spec.window_position).data_type();
        let window_column = cast(&(Arc::new(Int64Array::from(starts)) as ArrayRef), &timestamp_ms())?;
        let window_column = cast(&window_column, window_type)?;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        if !self.spec.keys.is_empty() {
            columns = self.converter.convert_rows(keys.iter().map(|k| k.row()))?;
        }
        columns.insert(self.spec.window_position, window_column);
        for (i, column) in values.into_iter().enumerate() {
            let array = ScalarValue::iter_to_array(column)?;
            let field_type = schema.field(self.spec.keys.len() + 1 + i).data_type();
            columns.push(if array.data_type() == field_type { array } else { cast(&array, field_type)? });
        }
        Ok(Some(RecordBatch::try_new(Arc::clone(schema), columns)?))
    }
}

fn timestamp_ms() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

/// Evaluates a time attribute to milliseconds since the epoch.
pub(crate) fn evaluate_time_ms(
    expr: &Arc<dyn PhysicalExpr>,
    batch: &RecordBatch,
) -> Result<ArrayRef, OperatorError> {
    let array = expr.evaluate(batch)?.into_array(batch.num_rows())?;
    let ms = if array.data_type() == &timestamp_ms() { array } else { cast(&array, &timestamp_ms())? };
    Ok(ms)
}

impl Operator for WindowAggregateOperator {
    fn name(&self) -> &'static str {
        "window_aggregate"
    }

    fn state_tables(&self) -> Vec<StateTable> {
        let scope = if self.spec.keys.is_empty() { StateScope::Instance } else { StateScope::KeyGroups };
        vec![StateTable { name: "window_accumulators", scope }]
    }

    fn process_batch(
        &mut self,
        batch: RecordBatch,
        ctx: &OperatorContext,
        _out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        let time = evaluate_time_ms(&self.spec.time, &batch)?;
        let time = time.as_primitive::<TimestampMillisecondType>();
        let keys = self.converter.convert_columns(&self.key_columns(&batch)?)?;
        let arguments = self
            .spec
            .aggregates
            .iter()
            .map(|aggregate| {
                aggregate
                    .expressions()
                    .iter()
                    .map(|e| e.evaluate(&batch).and_then(|v| v.into_array(batch.num_rows())))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;

        // Group row indices by (window, key) for this batch, then update each group's
        // accumulators once with all of its rows.
        let size = self.spec.assigner.size_ms();
        let mut groups: HashMap<(i64, arrow::row::Row<'_>), Vec<u32>> = HashMap::new();
        let mut late = 0u64;
        for (i, ts) in time.iter().enumerate() {
            let Some(ts) = ts else { continue };
            let row = keys.row(i);
            self.spec.assigner.for_each_window(ts, |start| {
                if ctx.watermark.closes_window_ending_at(start.saturating_add(size)) {
                    late += 1;
                } else {
                    groups.entry((start, row)).or_default().push(i as u32);
                }
            });
        }
        if late > 0 {
            ctx.late_records.inc_by(late);
        }
        for ((start, row), indices) in groups {
            let indices = UInt32Array::from(indices);
            let window = self.windows.entry(start).or_default();
            let group = match window.entry(row.owned()) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(entry) => {
                    let fresh = self
                        .spec
                        .aggregates
                        .iter()
                        .map(|a| a.create_accumulator())
                        .collect::<Result<Vec<_>, _>>()?;
                    entry.insert(fresh)
                }
            };
            for (accumulator, columns) in group.iter_mut().zip(&arguments) {
                let taken = columns
                    .iter()
                    .map(|c| take(c.as_ref(), &indices, None))
                    .collect::<Result<Vec<_>, _>>()?;
                accumulator.update_batch(&taken)?;
            }
        }
        Ok(())
    }

    fn handle_watermark(
        &mut self,
        watermark: Watermark,
        _ctx: &OperatorContext,
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        if let Some(batch) = self.close_windows(watermark)? {
            out.push(batch);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows_of(assigner: WindowAssigner, ts: i64) -> Vec<i64> {
        let mut starts = Vec::new();
        assigner.for_each_window(ts, |s| starts.push(s));
        starts
    }

    #[test]
    fn tumbling_assigns_one_window() {
        let t = WindowAssigner::Tumbling { size_ms: 3000 };
        assert_eq!(windows_of(t, 0), vec![0]);
        assert_eq!(windows_of(t, 2999), vec![0]);
        assert_eq!(windows_of(t, 3000), vec![3000]);
        assert_eq!(windows_of(t, -1), vec![-3000]);
    }

    #[test]
    fn hopping_assigns_size_over_slide_windows() {
        let h = WindowAssigner::Hopping { size_ms: 3000, slide_ms: 1000 };
        assert_eq!(windows_of(h, 2500), vec![0, 1000, 2000]);
        assert_eq!(windows_of(h, 3000), vec![1000, 2000, 3000]);
        let uneven = WindowAssigner::Hopping { size_ms: 2500, slide_ms: 1000 };
        assert_eq!(windows_of(uneven, 2600), vec![1000, 2000]);
        assert_eq!(windows_of(uneven, 2400), vec![0, 1000, 2000]);
    }
}
