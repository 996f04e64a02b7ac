//! `GROUP BY tumble(...)` / `hop(...)` / `cumulate(...)`: event-time (or processing-time)
//! window aggregation, keyed or global; and the same over rows that are windows already
//! (`GROUP BY window_start, window_end` of an upstream window aggregate,
//! [`WindowAssigner::Attached`]). Rows are assigned to windows and grouped per batch
//! with Arrow's row format; each (window, key) holds DataFusion accumulators, so every SQL
//! aggregate DataFusion offers works here. A window fires when the watermark passes its end.
//! With allowed lateness it is kept that much longer: a row for a fired window updates it and
//! the window's row is emitted again at once (an updated row for the same window and key).
//! Rows for windows past their lateness are late: counted, and either dropped or (with a
//! late side output) handed to [`Operator::take_side_output`].
//!
//! State (`window_accumulators`): one row per open (window, key) group — the key, the window
//! bounds, whether it changed since it was last emitted (a fired window kept for allowed
//! lateness is not pending) and its accumulators' state; `window_watermark`: the watermark
//! at the checkpoint (see [`WatermarkTable`]), below which a restored operator never goes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, UInt32Array};
use arrow::compute::{cast, take, take_record_batch};
use arrow::datatypes::{DataType, Field, Int64Type, SchemaRef, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use arrow::row::OwnedRow;
use datafusion_physical_expr::PhysicalExpr;
use datafusion_physical_expr::aggregate::AggregateFunctionExpr;
use millrace_types::Watermark;

use crate::error::OperatorError;
use crate::operator::{Operator, OperatorContext, StateScope, StateTable};
use crate::operators::accumulator_state::AccumulatorState;
use crate::operators::state_table::{StateLayout, WatermarkTable, refuse_unknown_tables};
use crate::operators::window_output::{
    EmittedRow, GroupState, WindowOutput, WindowOutputColumn, timestamp_ms,
};
use crate::state::TableSnapshot;

/// How rows map to windows. Sizes are in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowAssigner {
    /// Fixed, non-overlapping windows `[k*size, (k+1)*size)`.
    Tumbling { size_ms: i64 },
    /// Windows of `size_ms` starting every `slide_ms` (a row belongs to `size/slide` windows).
    Hopping { size_ms: i64, slide_ms: i64 },
    /// Flink's CUMULATE: windows `[k*max, k*max + n*step)` for `n = 1..=max/step`, all
    /// starting at the same `max`-aligned start and growing by `step` (`max` is a multiple of
    /// `step`). A row belongs to every such window whose end lies beyond it.
    Cumulate { step_ms: i64, max_size_ms: i64 },
    /// The rows are windows already (a window aggregate's output, grouped again by its
    /// window: Flink's window attribute propagation): each row's window is
    /// `[row[start], row[end])`, the input columns at these indices (any timestamp type).
    /// The spec's `time` is the end column. [`Self::for_each_window`] assigns nothing for
    /// it: the operator reads both columns itself.
    Attached { start: usize, end: usize },
}

impl WindowAssigner {
    /// Calls `f(start, end)` for every window containing `ts`, in ascending end order.
    pub fn for_each_window(&self, ts: i64, mut f: impl FnMut(i64, i64)) {
        match *self {
            WindowAssigner::Tumbling { size_ms } => {
                let start = ts - ts.rem_euclid(size_ms);
                f(start, start.saturating_add(size_ms))
            }
            WindowAssigner::Hopping { size_ms, slide_ms } => {
                // Window starts lie on the slide grid; the oldest window containing `ts` is
                // the first start greater than `ts - size`.
                let last = ts - ts.rem_euclid(slide_ms);
                let count = (last - (ts - size_ms)).div_euclid(slide_ms)
                    + i64::from((last - (ts - size_ms)).rem_euclid(slide_ms) != 0);
                let oldest = last - (count - 1) * slide_ms;
                let mut start = oldest;
                while start <= last {
                    f(start, start.saturating_add(size_ms));
                    start += slide_ms;
                }
            }
            WindowAssigner::Cumulate { step_ms, max_size_ms } => {
                let start = ts - ts.rem_euclid(max_size_ms);
                // The first end beyond `ts` on the step grid, then every step up to the max.
                let mut end = ts - ts.rem_euclid(step_ms) + step_ms;
                while end <= start.saturating_add(max_size_ms) {
                    f(start, end);
                    end += step_ms;
                }
            }
            WindowAssigner::Attached { .. } => {}
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
    /// The output columns after the group columns: aggregates and window ends.
    pub output_columns: Vec<WindowOutputColumn>,
    /// Group columns (keys with the window start inserted at `window_position`), then
    /// `output_columns`.
    pub output_schema: SchemaRef,
    /// How long after firing a window still accepts rows (and emits again), in ms.
    pub allowed_lateness_ms: i64,
    /// Whether rows too late for every one of their windows go to the side output.
    pub late_side_output: bool,
    /// The schema of the rows the operator receives (what the hash exchange hashes keys of).
    pub input_schema: SchemaRef,
}

/// One (window, key) group.
struct Group {
    accumulators: GroupState,
    /// Updated since it was last emitted (or never emitted).
    pending: bool,
}

/// The window aggregate operator; see the module docs.
pub struct WindowAggregateOperator {
    spec: WindowAggregateSpec,
    output: WindowOutput,
    /// (window end, window start) → key → group. Ordered by end so firing is a prefix.
    windows: BTreeMap<(i64, i64), HashMap<OwnedRow, Group>>,
    late: Vec<RecordBatch>,
    accumulator_state: AccumulatorState,
    layout: StateLayout,
    watermark_table: WatermarkTable,
    /// The watermark restored from a checkpoint: lateness and firing never go below it.
    watermark_floor: Watermark,
}

impl WindowAggregateOperator {
    pub fn try_new(spec: WindowAggregateSpec) -> Result<Self, OperatorError> {
        if let WindowAssigner::Attached { start, end } = spec.assigner {
            let columns = spec.input_schema.fields().len();
            if start >= columns || end >= columns {
                return Err(OperatorError::Invalid(format!(
                    "attached window columns {start} and {end} are not in the input's {columns} columns"
                )));
            }
        }
        let output = WindowOutput::try_new(
            spec.keys.clone(),
            spec.window_position,
            spec.output_columns.clone(),
            Arc::clone(&spec.output_schema),
            &spec.input_schema,
        )?;
        let accumulator_state = AccumulatorState::try_new(&spec.aggregates)?;
        let scope = if output.is_keyed() { StateScope::KeyGroups } else { StateScope::Instance };
        let mut fields = output.key_fields();
        fields.push(Field::new("window_start", DataType::Int64, false));
        fields.push(Field::new("window_end", DataType::Int64, false));
        fields.push(Field::new("pending", DataType::Boolean, false));
        fields.extend(accumulator_state.fields());
        let layout = StateLayout::new("window_accumulators", scope, fields);
        Ok(Self {
            spec,
            output,
            windows: BTreeMap::new(),
            late: Vec::new(),
            accumulator_state,
            layout,
            watermark_table: WatermarkTable::new("window_watermark", scope),
            watermark_floor: Watermark::MIN,
        })
    }

    /// Emits the pending groups of `windows` (whose ends the watermark has passed), oldest
    /// first, keys in row order; drops windows past their allowed lateness.
    fn emit(
        &mut self,
        windows: Vec<(i64, i64)>,
        watermark: Watermark,
    ) -> Result<Option<RecordBatch>, OperatorError> {
        let mut rows = Vec::new();
        for (end, start) in windows {
            let window = (end, start);
            if watermark.closes_window_ending_at(end.saturating_add(self.spec.allowed_lateness_ms)) {
                // The window is done: its keys move into the output.
                let Some(groups) = self.windows.remove(&window) else { continue };
                let mut pending: Vec<_> = groups.into_iter().filter(|(_, g)| g.pending).collect();
                pending.sort_by(|a, b| a.0.cmp(&b.0));
                for (key, mut group) in pending {
                    let values = WindowOutput::evaluate(&mut group.accumulators)?;
                    rows.push(EmittedRow { start, end, key, values });
                }
            } else {
                // Kept for late rows: emit what changed, keep the state.
                let Some(groups) = self.windows.get_mut(&window) else { continue };
                let mut pending: Vec<_> = groups.iter_mut().filter(|(_, g)| g.pending).collect();
                pending.sort_by(|a, b| a.0.cmp(b.0));
                for (key, group) in pending {
                    group.pending = false;
                    let values = WindowOutput::evaluate(&mut group.accumulators)?;
                    rows.push(EmittedRow { start, end, key: key.clone(), values });
                }
            }
        }
        self.output.build(rows)
    }
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

/// The aggregates' argument columns for a batch.
pub(crate) fn aggregate_arguments(
    aggregates: &[Arc<AggregateFunctionExpr>],
    batch: &RecordBatch,
) -> Result<Vec<Vec<ArrayRef>>, OperatorError> {
    Ok(aggregates
        .iter()
        .map(|aggregate| {
            aggregate
                .expressions()
                .iter()
                .map(|e| e.evaluate(batch).and_then(|v| v.into_array(batch.num_rows())))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?)
}

/// Updates `group` with the rows at `indices`.
pub(crate) fn update_group(
    group: &mut GroupState,
    arguments: &[Vec<ArrayRef>],
    indices: &UInt32Array,
) -> Result<(), OperatorError> {
    for (accumulator, columns) in group.iter_mut().zip(arguments) {
        let taken = columns.iter().map(|c| take(c.as_ref(), indices, None)).collect::<Result<Vec<_>, _>>()?;
        accumulator.update_batch(&taken)?;
    }
    Ok(())
}

impl Operator for WindowAggregateOperator {
    fn name(&self) -> &'static str {
        "window_aggregate"
    }

    fn state_tables(&self) -> Vec<StateTable> {
        vec![self.layout.table(), self.watermark_table.table()]
    }

    fn process_batch(
        &mut self,
        batch: RecordBatch,
        ctx: &OperatorContext,
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        let watermark = ctx.watermark.max(self.watermark_floor);
        let time = evaluate_time_ms(&self.spec.time, &batch)?;
        let time = time.as_primitive::<TimestampMillisecondType>();
        let keys = self.output.key_rows(&batch)?;
        let arguments = aggregate_arguments(&self.spec.aggregates, &batch)?;
        let attached_starts = match self.spec.assigner {
            WindowAssigner::Attached { start, .. } => {
                let column = batch.column(start);
                Some(if column.data_type() == &timestamp_ms() {
                    Arc::clone(column)
                } else {
                    cast(column, &timestamp_ms())?
                })
            }
            _ => None,
        };
        let attached_starts = attached_starts.as_ref().map(|a| a.as_primitive::<TimestampMillisecondType>());

        // Group row indices by (window, key) for this batch, then update each group's
        // accumulators once with all of its rows.
        let lateness = self.spec.allowed_lateness_ms;
        let mut groups: HashMap<((i64, i64), arrow::row::Row<'_>), Vec<u32>> = HashMap::new();
        let mut late = 0u64;
        let mut late_rows = Vec::new();
        for (i, ts) in time.iter().enumerate() {
            let Some(ts) = ts else { continue };
            let row = keys.row(i);
            let mut kept = false;
            let mut assign = |start: i64, end: i64| {
                if watermark.closes_window_ending_at(end.saturating_add(lateness)) {
                    late += 1;
                } else {
                    kept = true;
                    groups.entry(((end, start), row)).or_default().push(i as u32);
                }
            };
            match attached_starts {
                // A row of an upstream window: its own window, if it has a start.
                Some(starts) => {
                    if starts.is_valid(i) {
                        assign(starts.value(i), ts)
                    }
                }
                None => self.spec.assigner.for_each_window(ts, assign),
            }
            if !kept && self.spec.late_side_output {
                late_rows.push(i as u32);
            }
        }
        if late > 0 {
            ctx.late_records.inc_by(late);
        }
        if !late_rows.is_empty() {
            self.late.push(take_record_batch(&batch, &UInt32Array::from(late_rows))?);
        }
        // Fired windows that these rows update are emitted again right away.
        let mut updated_fired = BTreeSet::new();
        for ((window, row), indices) in groups {
            let indices = UInt32Array::from(indices);
            let groups = self.windows.entry(window).or_default();
            let group = match groups.entry(row.owned()) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(entry) => entry.insert(Group {
                    accumulators: WindowOutput::accumulators(&self.spec.aggregates)?,
                    pending: true,
                }),
            };
            update_group(&mut group.accumulators, &arguments, &indices)?;
            group.pending = true;
            if watermark.closes_window_ending_at(window.0) {
                updated_fired.insert(window);
            }
        }
        if !updated_fired.is_empty()
            && let Some(batch) = self.emit(updated_fired.into_iter().collect(), watermark)?
        {
            out.push(batch);
        }
        Ok(())
    }

    fn handle_watermark(
        &mut self,
        watermark: Watermark,
        _ctx: &OperatorContext,
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        let watermark = watermark.max(self.watermark_floor);
        let fired: Vec<(i64, i64)> = self
            .windows
            .keys()
            .take_while(|(end, _)| watermark.closes_window_ending_at(*end))
            .copied()
            .collect();
        if let Some(batch) = self.emit(fired, watermark)? {
            out.push(batch);
        }
        Ok(())
    }

    fn take_side_output(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.late)
    }

    fn snapshot_state(&mut self, ctx: &OperatorContext) -> Result<Vec<TableSnapshot>, OperatorError> {
        let (mut keys, mut starts, mut ends, mut pending) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut state = self.accumulator_state.builder(&self.layout);
        for ((end, start), groups) in &mut self.windows {
            for (key, group) in groups.iter_mut() {
                keys.push(key.clone());
                starts.push(*start);
                ends.push(*end);
                pending.push(group.pending);
                state.push_all(&mut group.accumulators)?;
            }
        }
        let rows = keys.len();
        let (mut columns, key_groups) = self.output.key_columns(&keys, ctx.max_parallelism)?;
        columns.push(Arc::new(Int64Array::from(starts)));
        columns.push(Arc::new(Int64Array::from(ends)));
        columns.push(Arc::new(BooleanArray::from(pending)));
        columns.extend(state.finish()?);
        Ok(vec![
            self.layout.snapshot(key_groups, columns, rows)?,
            self.watermark_table.snapshot(ctx.watermark.max(self.watermark_floor), ctx)?,
        ])
    }

    fn restore_state(
        &mut self,
        mut tables: Vec<TableSnapshot>,
        ctx: &OperatorContext,
    ) -> Result<(), OperatorError> {
        let batches = self.layout.take_restored(&mut tables, ctx)?;
        if let Some(watermark) = self.watermark_table.take_restored(&mut tables, ctx)? {
            self.watermark_floor = watermark;
        }
        refuse_unknown_tables(self.name(), &tables)?;
        let k = self.output.keys().count();
        for batch in batches {
            let keys = self.output.keys().rows_of_columns(&batch.columns()[..k], batch.num_rows())?;
            let starts = batch.column(k).as_primitive::<Int64Type>();
            let ends = batch.column(k + 1).as_primitive::<Int64Type>();
            let pending = batch.column(k + 2).as_boolean();
            let state = &batch.columns()[k + 3..];
            for i in 0..batch.num_rows() {
                let accumulators = self.accumulator_state.restore_all(&self.layout, state, i)?;
                let group = Group { accumulators, pending: pending.value(i) };
                let window = (ends.value(i), starts.value(i));
                if self.windows.entry(window).or_default().insert(keys.row(i).owned(), group).is_some() {
                    return Err(self.layout.error(format!("window {window:?} holds a key twice")));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows_of(assigner: WindowAssigner, ts: i64) -> Vec<i64> {
        let mut starts = Vec::new();
        assigner.for_each_window(ts, |s, _| starts.push(s));
        starts
    }

    #[test]
    fn cumulate_assigns_every_window_ending_after_the_row() {
        let c = WindowAssigner::Cumulate { step_ms: 1000, max_size_ms: 3000 };
        let mut windows = Vec::new();
        c.for_each_window(1500, |s, e| windows.push((s, e)));
        assert_eq!(windows, vec![(0, 2000), (0, 3000)]);
        windows.clear();
        c.for_each_window(3000, |s, e| windows.push((s, e)));
        assert_eq!(windows, vec![(3000, 4000), (3000, 5000), (3000, 6000)]);
        windows.clear();
        c.for_each_window(-1, |s, e| windows.push((s, e)));
        assert_eq!(windows, vec![(-3000, 0)]);
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
