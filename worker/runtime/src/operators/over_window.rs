//! `agg(x) OVER ([PARTITION BY …] ORDER BY <time attribute> {ROWS | RANGE} BETWEEN …
//! PRECEDING AND CURRENT ROW)`: one output row per input row (the input row plus one column
//! per window function), as in Flink. The frames and accumulators are [`over_frame`]'s.
//!
//! - **Processing time** (ORDER BY a `PROCTIME()` column): rows are processed on arrival, in
//!   arrival order. Every row of a batch carries the same stamp, so for RANGE a batch's rows
//!   of one partition are peers.
//! - **Event time** (ORDER BY the `WATERMARK` column): as Flink does, rows are buffered until
//!   the watermark passes their timestamp, then processed in timestamp order (ties in arrival
//!   order) and emitted on that watermark. A row that arrives at or below the current
//!   watermark is late: counted in `late_records` and dropped, as Flink drops late rows in
//!   OVER windows. Rows with a NULL timestamp are dropped too. End of input (`+inf`) flushes
//!   the buffer.
//!
//! State: `over_frames`, per partition and window function either the rows still inside a
//! bounded frame (one state row each: order value and arguments) or an unbounded frame's
//! accumulator state (one state row); and for event time `over_buffered_rows`, the input rows
//! still waiting for the watermark, and `over_watermark`, the watermark at the checkpoint (see
//! [`WatermarkTable`]).
//!
//! [`over_frame`]: crate::operators::over_frame

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, UInt32Array, new_null_array};
use arrow::compute::{cast, concat, concat_batches, filter_record_batch, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampMillisecondType, UInt32Type};
use arrow::record_batch::RecordBatch;
use arrow::row::OwnedRow;
use datafusion_common::ScalarValue;
use datafusion_physical_expr::PhysicalExpr;
use millrace_types::Watermark;

use crate::error::OperatorError;
use crate::operator::{Operator, OperatorContext, StateScope, StateTable};
use crate::operators::accumulator_state::AccumulatorState;
use crate::operators::group_keys::GroupKeys;
use crate::operators::over_frame::{FunctionFrame, OverFunction};
use crate::operators::state_table::{StateLayout, WatermarkTable, refuse_unknown_tables};
use crate::operators::window_aggregate::{aggregate_arguments, evaluate_time_ms};
use crate::state::{TableSnapshot, key_groups_of};

/// Which time the window is ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverTime {
    /// A `PROCTIME()` column: arrival order, no buffering.
    Processing,
    /// The `WATERMARK` column: buffered until the watermark passes, then in timestamp order.
    Event,
}

/// What the planner hands the OVER operator.
#[derive(Clone)]
pub struct OverWindowSpec {
    pub partition_by: Vec<Arc<dyn PhysicalExpr>>,
    /// The partition keys' types (their row format).
    pub partition_types: Vec<DataType>,
    /// The ORDER BY time attribute (any timestamp type).
    pub order_by: Arc<dyn PhysicalExpr>,
    pub time: OverTime,
    pub functions: Vec<OverFunction>,
    /// The input columns followed by one column per function.
    pub output_schema: SchemaRef,
}

/// The OVER window operator; see the module docs.
pub struct OverWindowOperator {
    spec: OverWindowSpec,
    partition_keys: GroupKeys,
    partitions: HashMap<OwnedRow, Vec<FunctionFrame>>,
    /// Event time: rows waiting for the watermark, in arrival order.
    buffered: Vec<RecordBatch>,
    /// The smallest timestamp in `buffered`, so a watermark that releases nothing is cheap.
    buffered_min: Option<i64>,
    checkpoint: OverCheckpoint,
    /// Event time: the watermark restored from a checkpoint, which lateness and release never
    /// go below.
    watermark_floor: Watermark,
}

/// One function's frame in one partition as read back: an unbounded frame's accumulator, or
/// a bounded frame's rows (order values and one-row argument slices).
type RestoredFrame = (Option<Box<dyn datafusion_expr::Accumulator>>, Vec<i64>, Vec<Vec<ArrayRef>>);

/// The layout of the OVER operator's state tables.
struct OverCheckpoint {
    /// The operator's input (the output's leading columns).
    input: SchemaRef,
    /// Every function's aggregate state (written for unbounded frames only).
    accumulators: AccumulatorState,
    /// Per function, the types of its arguments (written for bounded frames only).
    argument_types: Vec<Vec<DataType>>,
    frames: StateLayout,
    buffered: StateLayout,
    watermark: WatermarkTable,
}

impl OverCheckpoint {
    fn try_new(spec: &OverWindowSpec) -> Result<Self, OperatorError> {
        let inputs = spec.output_schema.fields().len().saturating_sub(spec.functions.len());
        let input = Arc::new(Schema::new(spec.output_schema.fields()[..inputs].to_vec()));
        let aggregates: Vec<_> = spec.functions.iter().map(|f| Arc::clone(&f.aggregate)).collect();
        let accumulators = AccumulatorState::try_new(&aggregates)?;
        let argument_types = aggregates
            .iter()
            .map(|a| a.expressions().iter().map(|e| e.data_type(&input)).collect::<Result<Vec<_>, _>>())
            .collect::<Result<Vec<_>, _>>()?;
        let scope = if spec.partition_by.is_empty() { StateScope::Instance } else { StateScope::KeyGroups };
        let mut fields: Vec<Field> = spec
            .partition_types
            .iter()
            .enumerate()
            .map(|(i, t)| Field::new(format!("partition_{i}"), t.clone(), true))
            .collect();
        fields.push(Field::new("function", DataType::UInt32, false));
        fields.push(Field::new("order_time", DataType::Int64, true));
        for (f, types) in argument_types.iter().enumerate() {
            for (a, t) in types.iter().enumerate() {
                fields.push(Field::new(format!("function_{f}_argument_{a}"), t.clone(), true));
            }
        }
        fields.extend(accumulators.fields());
        let frames = StateLayout::new("over_frames", scope, fields);
        let buffered = StateLayout::new(
            "over_buffered_rows",
            scope,
            input.fields().iter().map(|f| f.as_ref().clone()).collect(),
        );
        let watermark = WatermarkTable::new("over_watermark", scope);
        Ok(Self { input, accumulators, argument_types, frames, buffered, watermark })
    }
}

impl OverWindowOperator {
    pub fn try_new(spec: OverWindowSpec) -> Result<Self, OperatorError> {
        let checkpoint = OverCheckpoint::try_new(&spec)?;
        Ok(Self {
            partition_keys: GroupKeys::try_new(
                spec.partition_by.clone(),
                spec.partition_types.clone(),
                &checkpoint.input,
            )?,
            spec,
            partitions: HashMap::new(),
            buffered: Vec::new(),
            buffered_min: None,
            checkpoint,
            watermark_floor: Watermark::MIN,
        })
    }

    /// `over_frames`: per partition and function, a bounded frame's rows or an unbounded
    /// frame's accumulator state.
    fn snapshot_frames(&mut self, ctx: &OperatorContext) -> Result<TableSnapshot, OperatorError> {
        let checkpoint = &self.checkpoint;
        let mut keys = Vec::new();
        let mut functions: Vec<u32> = Vec::new();
        let mut times: Vec<Option<i64>> = Vec::new();
        // Per function and argument, the pieces of its column (nulls for other functions' rows).
        let mut arguments: Vec<Vec<Vec<ArrayRef>>> =
            checkpoint.argument_types.iter().map(|types| vec![Vec::new(); types.len()]).collect();
        let mut state = checkpoint.accumulators.builder(&checkpoint.frames);
        for (key, frames) in &mut self.partitions {
            for (f, frame) in frames.iter_mut().enumerate() {
                let rows = if frame.is_bounded() {
                    let Some((frame_times, columns)) = frame.retained_rows()? else { continue };
                    for (a, column) in columns.into_iter().enumerate() {
                        arguments[f][a].push(column);
                    }
                    for _ in &frame_times {
                        state.push_nulls()?;
                    }
                    let rows = frame_times.len();
                    times.extend(frame_times.into_iter().map(Some));
                    rows
                } else {
                    state.push_one(f, frame.accumulator_mut())?;
                    times.push(None);
                    1
                };
                for (other, types) in checkpoint
                    .argument_types
                    .iter()
                    .enumerate()
                    .filter(|(o, _)| *o != f || !frame.is_bounded())
                {
                    for (a, t) in types.iter().enumerate() {
                        arguments[other][a].push(new_null_array(t, rows));
                    }
                }
                functions.extend(std::iter::repeat_n(f as u32, rows));
                keys.extend(std::iter::repeat_n(key.clone(), rows));
            }
        }
        let rows = keys.len();
        let mut columns: Vec<ArrayRef> = Vec::new();
        let mut key_groups = Vec::new();
        if self.partition_keys.is_keyed() && rows > 0 {
            columns = self.partition_keys.columns(keys.iter().map(|k| k.row()))?;
            key_groups = self.partition_keys.key_groups(&columns, ctx.max_parallelism)?;
        }
        columns.push(Arc::new(UInt32Array::from(functions)));
        columns.push(Arc::new(Int64Array::from(times)));
        for (pieces, types) in arguments.iter().zip(&checkpoint.argument_types) {
            for (parts, t) in pieces.iter().zip(types) {
                let parts: Vec<&dyn Array> = parts.iter().map(|p| p.as_ref()).collect();
                columns.push(if parts.is_empty() { new_null_array(t, 0) } else { concat(&parts)? });
            }
        }
        columns.extend(state.finish()?);
        checkpoint.frames.snapshot(key_groups, columns, rows)
    }

    /// `over_buffered_rows`: the rows waiting for the watermark, keyed as the exchange keys
    /// them (the partition expressions evaluated on the rows themselves).
    fn snapshot_buffered(&self, ctx: &OperatorContext) -> Result<TableSnapshot, OperatorError> {
        let layout = &self.checkpoint.buffered;
        let all = concat_batches(&self.checkpoint.input, &self.buffered)?;
        let rows = all.num_rows();
        let mut key_groups = Vec::new();
        if layout.is_keyed() && rows > 0 {
            let keys = self
                .spec
                .partition_by
                .iter()
                .map(|e| e.evaluate(&all).and_then(|v| v.into_array(rows)))
                .collect::<Result<Vec<_>, _>>()?;
            key_groups = key_groups_of(&keys, rows, ctx.max_parallelism)?;
        }
        layout.snapshot(key_groups, all.columns().to_vec(), rows)
    }

    fn restore_frames(&mut self, batches: Vec<RecordBatch>) -> Result<(), OperatorError> {
        let checkpoint = &self.checkpoint;
        let layout = &checkpoint.frames;
        let k = self.partition_keys.count();
        // (partition, function) → its restored accumulator or rows, in table order.
        let mut restored: HashMap<OwnedRow, Vec<RestoredFrame>> = HashMap::new();
        let function_count = self.spec.functions.len();
        for batch in &batches {
            let keys = self.partition_keys.rows_of_columns(&batch.columns()[..k], batch.num_rows())?;
            let functions = batch.column(k).as_primitive::<UInt32Type>();
            let times = batch.column(k + 1).as_primitive::<arrow::datatypes::Int64Type>();
            let mut at = k + 2;
            let mut argument_columns = Vec::with_capacity(function_count);
            for types in &checkpoint.argument_types {
                argument_columns.push(&batch.columns()[at..at + types.len()]);
                at += types.len();
            }
            let state = &batch.columns()[at..];
            for i in 0..batch.num_rows() {
                let f = functions.value(i) as usize;
                let Some(function) = self.spec.functions.get(f) else {
                    return Err(
                        layout.error(format!("row {i} names function {f}, there are {function_count}"))
                    );
                };
                let partition = restored
                    .entry(keys.row(i).owned())
                    .or_insert_with(|| (0..function_count).map(|_| (None, Vec::new(), Vec::new())).collect());
                let (accumulator, frame_times, arguments) = &mut partition[f];
                if function.frame.is_bounded() {
                    if times.is_null(i) {
                        return Err(layout.error(format!("row {i} of a bounded frame has no order_time")));
                    }
                    frame_times.push(times.value(i));
                    arguments.push(argument_columns[f].iter().map(|c| c.slice(i, 1)).collect());
                } else {
                    *accumulator = Some(checkpoint.accumulators.restore_one(layout, f, state, i)?);
                }
            }
        }
        for (key, functions) in restored {
            let mut frames = Vec::with_capacity(function_count);
            for (function, (accumulator, times, rows)) in self.spec.functions.iter().zip(functions) {
                let arguments = (0..checkpoint.argument_types[frames.len()].len())
                    .map(|a| {
                        let parts: Vec<&dyn Array> = rows.iter().map(|r| r[a].as_ref()).collect();
                        if parts.is_empty() {
                            Ok(new_null_array(&checkpoint.argument_types[frames.len()][a], 0))
                        } else {
                            concat(&parts)
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                frames.push(FunctionFrame::restored(function, accumulator, &times, &arguments)?);
            }
            self.partitions.insert(key, frames);
        }
        Ok(())
    }

    /// Runs `batch`'s rows through the frames in row order and returns them with the
    /// functions' results appended.
    fn evaluate_in_order(&mut self, batch: &RecordBatch) -> Result<RecordBatch, OperatorError> {
        let rows = batch.num_rows();
        let keys = self.partition_keys.rows(batch)?;
        let aggregates: Vec<_> = self.spec.functions.iter().map(|f| Arc::clone(&f.aggregate)).collect();
        let arguments = aggregate_arguments(&aggregates, batch)?;
        let times = evaluate_time_ms(&self.spec.order_by, batch)?;
        // NULL order values never reach here (event time drops them; processing time stamps
        // every row); 0 keeps the slice dense.
        let times: Vec<i64> =
            times.as_primitive::<TimestampMillisecondType>().iter().map(|t| t.unwrap_or(0)).collect();

        // Rows of one partition are processed together (one state lookup per partition and
        // batch), in row order; results keep the batch's row order.
        let mut by_partition: HashMap<arrow::row::Row<'_>, Vec<u32>> = HashMap::new();
        for i in 0..rows {
            by_partition.entry(keys.row(i)).or_default().push(i as u32);
        }
        let mut results: Vec<Vec<ScalarValue>> = self
            .spec
            .functions
            .iter()
            .map(|f| ScalarValue::try_from(f.aggregate.field().data_type()).map(|null| vec![null; rows]))
            .collect::<Result<_, _>>()?;
        for (key, indices) in by_partition {
            let states = match self.partitions.entry(key.owned()) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(entry) => entry.insert(
                    self.spec.functions.iter().map(FunctionFrame::try_new).collect::<Result<Vec<_>, _>>()?,
                ),
            };
            for ((state, args), result) in states.iter_mut().zip(&arguments).zip(results.iter_mut()) {
                state.add(args, &times, &indices, result)?;
            }
        }

        let schema = &self.spec.output_schema;
        let mut columns = batch.columns().to_vec();
        for (i, values) in results.into_iter().enumerate() {
            let array = ScalarValue::iter_to_array(values)?;
            let field_type = schema.field(batch.num_columns() + i).data_type();
            columns.push(if array.data_type() == field_type { array } else { cast(&array, field_type)? });
        }
        Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
    }

    /// Event time: keeps the rows above the watermark, counts and drops the others.
    fn buffer(&mut self, batch: RecordBatch, ctx: &OperatorContext) -> Result<(), OperatorError> {
        let watermark = ctx.watermark.max(self.watermark_floor);
        let times = evaluate_time_ms(&self.spec.order_by, &batch)?;
        let times = times.as_primitive::<TimestampMillisecondType>();
        let keep: BooleanArray = times.iter().map(|t| Some(t.is_some_and(|t| t > watermark.0))).collect();
        let late = times.iter().filter(|t| t.is_some_and(|t| t <= watermark.0)).count();
        if late > 0 {
            ctx.late_records.inc_by(late as u64);
        }
        let kept = filter_record_batch(&batch, &keep)?;
        if kept.num_rows() == 0 {
            return Ok(());
        }
        let min = times.iter().flatten().filter(|t| *t > watermark.0).min();
        self.buffered_min = match (self.buffered_min, min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.buffered.push(kept);
        Ok(())
    }

    /// Event time: the buffered rows at or below `watermark`, in timestamp order (ties in
    /// arrival order); the rest stay buffered.
    fn release(&mut self, watermark: Watermark) -> Result<Option<RecordBatch>, OperatorError> {
        if self.buffered_min.is_none_or(|min| min > watermark.0) {
            return Ok(None);
        }
        let Some(schema) = self.buffered.first().map(RecordBatch::schema) else {
            return Ok(None);
        };
        let all = concat_batches(&schema, &self.buffered)?;
        self.buffered.clear();
        let times = evaluate_time_ms(&self.spec.order_by, &all)?;
        let times = times.as_primitive::<TimestampMillisecondType>();
        let mut ready: Vec<(i64, u32)> = Vec::new();
        let mut waiting: Vec<u32> = Vec::new();
        let mut waiting_min: Option<i64> = None;
        for (i, t) in times.iter().enumerate() {
            // Buffered rows all have a timestamp (see `buffer`).
            let t = t.unwrap_or(i64::MIN);
            if t <= watermark.0 {
                ready.push((t, i as u32));
            } else {
                waiting.push(i as u32);
                waiting_min = Some(waiting_min.map_or(t, |m| m.min(t)));
            }
        }
        // (time, arrival position) is unique, so an unstable sort is deterministic.
        ready.sort_unstable();
        if !waiting.is_empty() {
            self.buffered.push(take_record_batch(&all, &UInt32Array::from(waiting))?);
        }
        self.buffered_min = waiting_min;
        let ordered = take_record_batch(&all, &ready.into_iter().map(|(_, i)| i).collect::<UInt32Array>())?;
        Ok(Some(self.evaluate_in_order(&ordered)?))
    }
}

impl Operator for OverWindowOperator {
    fn name(&self) -> &'static str {
        "over_window"
    }

    fn state_tables(&self) -> Vec<StateTable> {
        let mut tables = vec![self.checkpoint.frames.table()];
        if self.spec.time == OverTime::Event {
            tables.push(self.checkpoint.buffered.table());
            tables.push(self.checkpoint.watermark.table());
        }
        tables
    }

    fn process_batch(
        &mut self,
        batch: RecordBatch,
        ctx: &OperatorContext,
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        match self.spec.time {
            OverTime::Processing => out.push(self.evaluate_in_order(&batch)?),
            OverTime::Event => self.buffer(batch, ctx)?,
        }
        Ok(())
    }

    fn handle_watermark(
        &mut self,
        watermark: Watermark,
        _ctx: &OperatorContext,
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        if self.spec.time == OverTime::Event
            && let Some(batch) = self.release(watermark.max(self.watermark_floor))?
        {
            out.push(batch);
        }
        Ok(())
    }

    fn snapshot_state(&mut self, ctx: &OperatorContext) -> Result<Vec<TableSnapshot>, OperatorError> {
        let mut tables = vec![self.snapshot_frames(ctx)?];
        if self.spec.time == OverTime::Event {
            tables.push(self.snapshot_buffered(ctx)?);
            let watermark = ctx.watermark.max(self.watermark_floor);
            tables.push(self.checkpoint.watermark.snapshot(watermark, ctx)?);
        }
        Ok(tables)
    }

    fn restore_state(
        &mut self,
        mut tables: Vec<TableSnapshot>,
        ctx: &OperatorContext,
    ) -> Result<(), OperatorError> {
        let frames = self.checkpoint.frames.take_restored(&mut tables, ctx)?;
        let mut buffered = Vec::new();
        if self.spec.time == OverTime::Event {
            buffered = self.checkpoint.buffered.take_restored(&mut tables, ctx)?;
            if let Some(watermark) = self.checkpoint.watermark.take_restored(&mut tables, ctx)? {
                self.watermark_floor = watermark;
            }
        }
        refuse_unknown_tables(self.name(), &tables)?;
        self.restore_frames(frames)?;
        for batch in buffered {
            // The layout checked the columns' types; the input schema names them.
            let batch = RecordBatch::try_new(Arc::clone(&self.checkpoint.input), batch.columns().to_vec())?;
            let times = evaluate_time_ms(&self.spec.order_by, &batch)?;
            let min = times.as_primitive::<TimestampMillisecondType>().iter().flatten().min();
            self.buffered_min = match (self.buffered_min, min) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            self.buffered.push(batch);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{Field, Schema, TimeUnit};
    use datafusion::functions_aggregate::sum::sum_udaf;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::col;
    use millrace_types::SubtaskIndex;
    use prometheus_client::metrics::counter::Counter;

    use super::*;
    use crate::operators::OverFrame;

    fn input_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), false),
            Field::new("v", DataType::Int64, false),
        ]))
    }

    fn operator(time: OverTime, frame: OverFrame, partitioned: bool) -> OverWindowOperator {
        let schema = input_schema();
        let sum = AggregateExprBuilder::new(sum_udaf(), vec![col("v", &schema).expect("v")])
            .schema(Arc::clone(&schema))
            .alias("s")
            .build()
            .expect("sum");
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("s", DataType::Int64, true));
        let (partition_by, partition_types) = if partitioned {
            (vec![col("k", &schema).expect("k")], vec![DataType::Utf8])
        } else {
            (Vec::new(), Vec::new())
        };
        OverWindowOperator::try_new(OverWindowSpec {
            partition_by,
            partition_types,
            order_by: col("ts", &schema).expect("ts"),
            time,
            functions: vec![OverFunction { aggregate: Arc::new(sum), frame }],
            output_schema: Arc::new(Schema::new(fields)),
        })
        .expect("operator")
    }

    fn batch(rows: &[(&str, i64, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            input_schema(),
            vec![
                Arc::new(StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
                Arc::new(TimestampMillisecondArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
            ],
        )
        .expect("batch")
    }

    fn context(watermark: i64) -> OperatorContext {
        OperatorContext {
            subtask: SubtaskIndex(0),
            parallelism: 1,
            max_parallelism: millrace_types::DEFAULT_MAX_PARALLELISM,
            key_groups: crate::state::KeyGroupRange {
                first: 0,
                last: millrace_types::DEFAULT_MAX_PARALLELISM - 1,
            },
            watermark: Watermark(watermark),
            late_records: Counter::default(),
        }
    }

    /// (k, ts, v, s) of every output row.
    fn rows(batches: &[RecordBatch]) -> Vec<(String, i64, i64, i64)> {
        let mut out = Vec::new();
        for b in batches {
            let k = b.column(0).as_string::<i32>();
            let ts = b.column(1).as_primitive::<TimestampMillisecondType>();
            let v = b.column(2).as_primitive::<arrow::datatypes::Int64Type>();
            let s = b.column(3).as_primitive::<arrow::datatypes::Int64Type>();
            for i in 0..b.num_rows() {
                out.push((k.value(i).to_string(), ts.value(i), v.value(i), s.value(i)));
            }
        }
        out
    }

    #[test]
    fn event_time_rows_wait_for_the_watermark_and_come_out_in_time_order() {
        let mut op = operator(OverTime::Event, OverFrame::Rows { preceding: Some(1) }, true);
        let ctx = context(0);
        let mut out = Vec::new();
        op.process_batch(batch(&[("a", 300, 3), ("a", 100, 1), ("b", 200, 20)]), &ctx, &mut out)
            .expect("batch");
        assert!(out.is_empty(), "nothing is emitted before the watermark");
        op.handle_watermark(Watermark(200), &ctx, &mut out).expect("watermark");
        assert_eq!(rows(&out), vec![("a".into(), 100, 1, 1), ("b".into(), 200, 20, 20)]);
        out.clear();
        // 150 <= watermark 200: late, counted and dropped.
        let ctx = context(200);
        op.process_batch(batch(&[("a", 150, 100), ("a", 250, 2)]), &ctx, &mut out).expect("batch");
        assert_eq!(ctx.late_records.get(), 1);
        op.handle_watermark(Watermark::MAX, &ctx, &mut out).expect("end of input");
        assert_eq!(rows(&out), vec![("a".into(), 250, 2, 3), ("a".into(), 300, 3, 5)]);
    }

    #[test]
    fn event_time_range_peers_share_a_result_whatever_their_arrival() {
        let mut op = operator(OverTime::Event, OverFrame::Range { preceding_ms: Some(100) }, false);
        let ctx = context(0);
        let mut out = Vec::new();
        op.process_batch(batch(&[("a", 200, 1), ("b", 100, 2)]), &ctx, &mut out).expect("batch");
        op.process_batch(batch(&[("c", 200, 4), ("d", 301, 8)]), &ctx, &mut out).expect("batch");
        op.handle_watermark(Watermark::MAX, &ctx, &mut out).expect("end of input");
        // Frames: 100 → [0,100]; 200 → [100,200] (both peers); 301 → [201,301].
        assert_eq!(
            rows(&out),
            vec![
                ("b".into(), 100, 2, 2),
                ("a".into(), 200, 1, 7),
                ("c".into(), 200, 4, 7),
                ("d".into(), 301, 8, 8)
            ]
        );
    }

    #[test]
    fn processing_time_rows_are_evaluated_on_arrival() {
        let mut op = operator(OverTime::Processing, OverFrame::Range { preceding_ms: None }, true);
        let ctx = context(i64::MIN);
        let mut out = Vec::new();
        op.process_batch(batch(&[("a", 5, 1), ("b", 5, 2), ("a", 5, 4)]), &ctx, &mut out).expect("batch");
        op.process_batch(batch(&[("a", 6, 8)]), &ctx, &mut out).expect("batch");
        assert_eq!(
            rows(&out),
            vec![("a".into(), 5, 1, 5), ("b".into(), 5, 2, 2), ("a".into(), 5, 4, 5), ("a".into(), 6, 8, 13)]
        );
    }
}
