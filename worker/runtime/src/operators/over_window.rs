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
//! [`over_frame`]: crate::operators::over_frame

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{AsArray, BooleanArray, UInt32Array};
use arrow::compute::{cast, concat_batches, filter_record_batch, take_record_batch};
use arrow::datatypes::{DataType, SchemaRef, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use arrow::row::OwnedRow;
use datafusion_common::ScalarValue;
use datafusion_physical_expr::PhysicalExpr;
use millrace_types::Watermark;

use crate::error::OperatorError;
use crate::operator::{Operator, OperatorContext, StateScope, StateTable};
use crate::operators::group_keys::GroupKeys;
use crate::operators::over_frame::{FunctionFrame, OverFunction};
use crate::operators::window_aggregate::{aggregate_arguments, evaluate_time_ms};

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
}

impl OverWindowOperator {
    pub fn try_new(spec: OverWindowSpec) -> Result<Self, OperatorError> {
        Ok(Self {
            partition_keys: GroupKeys::try_new(spec.partition_by.clone(), spec.partition_types.clone())?,
            spec,
            partitions: HashMap::new(),
            buffered: Vec::new(),
            buffered_min: None,
        })
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
        let times = evaluate_time_ms(&self.spec.order_by, &batch)?;
        let times = times.as_primitive::<TimestampMillisecondType>();
        let keep: BooleanArray = times.iter().map(|t| Some(t.is_some_and(|t| t > ctx.watermark.0))).collect();
        let late = times.iter().filter(|t| t.is_some_and(|t| t <= ctx.watermark.0)).count();
        if late > 0 {
            ctx.late_records.inc_by(late as u64);
        }
        let kept = filter_record_batch(&batch, &keep)?;
        if kept.num_rows() == 0 {
            return Ok(());
        }
        let min = times.iter().flatten().filter(|t| *t > ctx.watermark.0).min();
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
        let scope =
            if self.spec.partition_by.is_empty() { StateScope::Instance } else { StateScope::KeyGroups };
        let mut tables = vec![StateTable { name: "over_frames", scope }];
        if self.spec.time == OverTime::Event {
            tables.push(StateTable { name: "over_buffered_rows", scope });
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
            && let Some(batch) = self.release(watermark)?
        {
            out.push(batch);
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
