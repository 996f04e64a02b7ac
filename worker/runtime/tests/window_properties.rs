//! Property tests: the window aggregate operator against a naive reference on random input —
//! random keys, timestamps out of order within a bound (and sometimes beyond it, so late
//! rows occur), random batch sizes, tumbling and hopping windows.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{AsArray, Int64Array, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
use datafusion::physical_expr::expressions::col;
use millrace_runtime::operators::{WindowAggregateOperator, WindowAggregateSpec, WindowAssigner};
use millrace_runtime::{Operator, OperatorContext};
use millrace_types::{SubtaskIndex, Watermark};
use proptest::prelude::*;

fn input_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        Field::new("v", DataType::Int64, false),
    ]))
}

fn operator(assigner: WindowAssigner) -> WindowAggregateOperator {
    let schema = input_schema();
    let sum = AggregateExprBuilder::new(sum_udaf(), vec![col("v", &schema).expect("v")])
        .schema(Arc::clone(&schema))
        .alias("total")
        .build()
        .expect("sum");
    let count = AggregateExprBuilder::new(count_udaf(), vec![col("v", &schema).expect("v")])
        .schema(Arc::clone(&schema))
        .alias("n")
        .build()
        .expect("count");
    let output = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("window_start", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        Field::new("total", DataType::Int64, true),
        Field::new("n", DataType::Int64, false),
    ]));
    WindowAggregateOperator::try_new(WindowAggregateSpec {
        time: col("ts", &schema).expect("ts"),
        assigner,
        keys: vec![col("k", &schema).expect("k")],
        window_position: 1,
        aggregates: vec![Arc::new(sum), Arc::new(count)],
        output_schema: output,
    })
    .expect("operator")
}

type Results = BTreeMap<(i64, i64), (i64, i64)>;

/// Window starts containing `ts`, enumerated from the definition (not the operator's code).
fn naive_windows(assigner: WindowAssigner, ts: i64) -> Vec<i64> {
    let (size, slide) = match assigner {
        WindowAssigner::Tumbling { size_ms } => (size_ms, size_ms),
        WindowAssigner::Hopping { size_ms, slide_ms } => (size_ms, slide_ms),
    };
    let lowest = (ts - size).div_euclid(slide) - 1;
    let highest = ts.div_euclid(slide) + 1;
    (lowest..=highest).map(|k| k * slide).filter(|start| *start <= ts && ts < start + size).collect()
}

/// Feeds the rows in batches, with a bounded-out-of-orderness watermark after each batch,
/// then the end-of-input watermark; returns the results and the late-row count.
fn run_operator(
    assigner: WindowAssigner,
    rows: &[(i64, i64, i64)],
    batch_sizes: &[usize],
    delay: i64,
) -> (Results, u64) {
    let mut op = operator(assigner);
    let mut ctx = OperatorContext {
        subtask: SubtaskIndex(0),
        parallelism: 1,
        watermark: Watermark::MIN,
        late_records: Default::default(),
    };
    let mut out = Vec::new();
    let mut max_ts = i64::MIN;
    let mut start = 0;
    let mut sizes = batch_sizes.iter().cycle();
    while start < rows.len() {
        let end = (start + sizes.next().copied().unwrap_or(1)).min(rows.len());
        let chunk = &rows[start..end];
        let batch = RecordBatch::try_new(
            input_schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(chunk.iter().map(|r| r.0))),
                Arc::new(TimestampMillisecondArray::from_iter_values(chunk.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter_values(chunk.iter().map(|r| r.2))),
            ],
        )
        .expect("batch");
        op.process_batch(batch, &ctx, &mut out).expect("process");
        max_ts = max_ts.max(chunk.iter().map(|r| r.1).max().unwrap_or(i64::MIN));
        let w = Watermark::bounded_out_of_orderness(max_ts, delay);
        if w > ctx.watermark {
            ctx.watermark = w;
            op.handle_watermark(w, &ctx, &mut out).expect("watermark");
        }
        start = end;
    }
    ctx.watermark = Watermark::MAX;
    op.handle_watermark(Watermark::MAX, &ctx, &mut out).expect("final watermark");
    let mut results = Results::new();
    for batch in out {
        let k = batch.column(0).as_primitive::<Int64Type>();
        let w = batch.column(1).as_primitive::<TimestampMillisecondType>();
        let total = batch.column(2).as_primitive::<Int64Type>();
        let n = batch.column(3).as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            let previous = results.insert((w.value(i), k.value(i)), (total.value(i), n.value(i)));
            assert!(previous.is_none(), "window ({}, {}) emitted twice", w.value(i), k.value(i));
        }
    }
    (results, ctx.late_records.get())
}

/// The reference: the same watermark schedule, evaluated row by row with maps.
fn reference(
    assigner: WindowAssigner,
    rows: &[(i64, i64, i64)],
    batch_sizes: &[usize],
    delay: i64,
) -> (Results, u64) {
    let size = match assigner {
        WindowAssigner::Tumbling { size_ms } | WindowAssigner::Hopping { size_ms, .. } => size_ms,
    };
    let mut results = Results::new();
    let mut late = 0;
    let mut watermark = i64::MIN;
    let mut max_ts = i64::MIN;
    let mut start = 0;
    let mut sizes = batch_sizes.iter().cycle();
    while start < rows.len() {
        let end = (start + sizes.next().copied().unwrap_or(1)).min(rows.len());
        for &(k, ts, v) in &rows[start..end] {
            for window in naive_windows(assigner, ts) {
                // A window is complete once the watermark reaches its last millisecond.
                if watermark >= window + size - 1 {
                    late += 1;
                } else {
                    let entry = results.entry((window, k)).or_insert((0, 0));
                    entry.0 += v;
                    entry.1 += 1;
                }
            }
            max_ts = max_ts.max(ts);
        }
        watermark = watermark.max(max_ts - delay - 1);
        start = end;
    }
    (results, late)
}

fn assigners() -> impl Strategy<Value = WindowAssigner> {
    prop_oneof![
        (1i64..5).prop_map(|s| WindowAssigner::Tumbling { size_ms: s * 1000 }),
        (1i64..4, 1i64..4).prop_map(|(slide, factor)| WindowAssigner::Hopping {
            size_ms: slide * 500 * factor + (factor - 1) * 250,
            slide_ms: slide * 500,
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn window_aggregate_matches_a_naive_reference(
        assigner in assigners(),
        rows in prop::collection::vec((0i64..4, -2_000i64..20_000, -50i64..100), 0..120),
        batch_sizes in prop::collection::vec(1usize..9, 1..5),
        delay in 0i64..3_000,
    ) {
        let (got, got_late) = run_operator(assigner, &rows, &batch_sizes, delay);
        let (want, want_late) = reference(assigner, &rows, &batch_sizes, delay);
        prop_assert_eq!(got, want);
        prop_assert_eq!(got_late, want_late);
    }
}
