//! Property tests: the window aggregate operator against a naive reference on random input —
//! random keys, timestamps out of order within a bound (and sometimes beyond it, so late
//! rows occur), random batch sizes, random allowed lateness; tumbling, hopping, cumulate and
//! session windows. The late side output must hold exactly the rows the reference drops.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{AsArray, Int64Array, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
use datafusion::physical_expr::expressions::col;
use millrace_runtime::operators::{
    SessionWindowOperator, SessionWindowSpec, WindowAggregateOperator, WindowAggregateSpec, WindowAssigner,
    WindowOutputColumn,
};
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

/// Which window the property runs.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Fixed(WindowAssigner),
    Session { gap_ms: i64 },
}

fn operator(kind: Kind, allowed_lateness_ms: i64) -> Box<dyn Operator> {
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
        Field::new("window_end", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        Field::new("n", DataType::Int64, false),
    ]));
    let output_columns = vec![
        WindowOutputColumn::Aggregate(0),
        WindowOutputColumn::WindowEnd,
        WindowOutputColumn::Aggregate(1),
    ];
    match kind {
        Kind::Fixed(assigner) => Box::new(
            WindowAggregateOperator::try_new(WindowAggregateSpec {
                time: col("ts", &schema).expect("ts"),
                assigner,
                keys: vec![col("k", &schema).expect("k")],
                window_position: 1,
                aggregates: vec![Arc::new(sum), Arc::new(count)],
                output_columns,
                output_schema: output,
                allowed_lateness_ms,
                late_side_output: true,
                input_schema: Arc::clone(&schema),
            })
            .expect("operator"),
        ),
        Kind::Session { gap_ms } => Box::new(
            SessionWindowOperator::try_new(SessionWindowSpec {
                time: col("ts", &schema).expect("ts"),
                gap_ms,
                keys: vec![col("k", &schema).expect("k")],
                window_position: 1,
                aggregates: vec![Arc::new(sum), Arc::new(count)],
                output_columns,
                output_schema: output,
                allowed_lateness_ms,
                late_side_output: true,
                input_schema: Arc::clone(&schema),
            })
            .expect("operator"),
        ),
    }
}

/// (window start, window end, key) → (sum, count), the last value emitted for the window.
type Results = BTreeMap<(i64, i64, i64), (i64, i64)>;

/// Windows `(start, end)` containing `ts`, enumerated from the definitions (not the
/// operator's code).
fn naive_windows(assigner: WindowAssigner, ts: i64) -> Vec<(i64, i64)> {
    match assigner {
        WindowAssigner::Tumbling { size_ms } | WindowAssigner::Hopping { size_ms, .. } => {
            let slide = match assigner {
                WindowAssigner::Hopping { slide_ms, .. } => slide_ms,
                _ => size_ms,
            };
            let lowest = (ts - size_ms).div_euclid(slide) - 1;
            let highest = ts.div_euclid(slide) + 1;
            (lowest..=highest)
                .map(|k| (k * slide, k * slide + size_ms))
                .filter(|(start, end)| *start <= ts && ts < *end)
                .collect()
        }
        WindowAssigner::Cumulate { step_ms, max_size_ms } => {
            // Every window [s, s + n*step) with s on the max grid that contains ts.
            let s = ts.div_euclid(max_size_ms) * max_size_ms;
            (1..=max_size_ms / step_ms).map(|n| (s, s + n * step_ms)).filter(|(_, end)| ts < *end).collect()
        }
        WindowAssigner::Attached { .. } => unreachable!("the proptest draws time-assigned windows only"),
    }
}

/// What a run produced: final rows, late count, late rows seen on the side output, and
/// whether any window was emitted more than once.
struct Outcome {
    results: Results,
    late: u64,
    late_rows: Vec<(i64, i64, i64)>,
}

/// Feeds the rows in batches, with a bounded-out-of-orderness watermark after each batch,
/// then the end-of-input watermark.
fn run_operator(
    kind: Kind,
    lateness: i64,
    rows: &[(i64, i64, i64)],
    batch_sizes: &[usize],
    delay: i64,
) -> Outcome {
    let mut op = operator(kind, lateness);
    let mut ctx = OperatorContext {
        subtask: SubtaskIndex(0),
        parallelism: 1,
        max_parallelism: millrace_types::DEFAULT_MAX_PARALLELISM,
        key_groups: millrace_runtime::KeyGroupRange {
            first: 0,
            last: millrace_types::DEFAULT_MAX_PARALLELISM - 1,
        },
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
        let end = batch.column(3).as_primitive::<TimestampMillisecondType>();
        let n = batch.column(4).as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            let key = (w.value(i), end.value(i), k.value(i));
            let value = (total.value(i), n.value(i));
            if let Some(previous) = results.insert(key, value) {
                // Only allowed lateness re-emits a window, and only with more rows in it.
                assert!(lateness > 0, "window {key:?} emitted twice without allowed lateness");
                assert!(previous.1 < value.1, "window {key:?} re-emitted without new rows");
            }
        }
    }
    let mut late_rows = Vec::new();
    for batch in op.take_side_output() {
        let k = batch.column(0).as_primitive::<Int64Type>();
        let ts = batch.column(1).as_primitive::<TimestampMillisecondType>();
        let v = batch.column(2).as_primitive::<Int64Type>();
        late_rows.extend((0..batch.num_rows()).map(|i| (k.value(i), ts.value(i), v.value(i))));
    }
    late_rows.sort_unstable();
    Outcome { results, late: ctx.late_records.get(), late_rows }
}

/// The reference: the same watermark schedule, evaluated row by row with maps and lists.
fn reference(
    kind: Kind,
    lateness: i64,
    rows: &[(i64, i64, i64)],
    batch_sizes: &[usize],
    delay: i64,
) -> Outcome {
    // A window is gone once the watermark reaches its last millisecond plus the lateness.
    let gone = |watermark: i64, end: i64| watermark >= end - 1 + lateness;
    let mut results = Results::new();
    // Sessions per key, as (start, end, sum, count), not yet gone.
    let mut sessions: BTreeMap<i64, Vec<(i64, i64, i64, i64)>> = BTreeMap::new();
    let mut late = 0;
    let mut late_rows = Vec::new();
    let mut watermark = i64::MIN;
    let mut max_ts = i64::MIN;
    let mut start = 0;
    let mut sizes = batch_sizes.iter().cycle();
    while start < rows.len() {
        let end = (start + sizes.next().copied().unwrap_or(1)).min(rows.len());
        for &(k, ts, v) in &rows[start..end] {
            match kind {
                Kind::Fixed(assigner) => {
                    let mut kept = false;
                    for (ws, we) in naive_windows(assigner, ts) {
                        if watermark != i64::MIN && gone(watermark, we) {
                            late += 1;
                        } else {
                            kept = true;
                            let entry = results.entry((ws, we, k)).or_insert((0, 0));
                            entry.0 += v;
                            entry.1 += 1;
                        }
                    }
                    if !kept {
                        late_rows.push((k, ts, v));
                    }
                }
                Kind::Session { gap_ms } => {
                    let list = sessions.entry(k).or_default();
                    let (mut s, mut e, mut sum, mut n) = (ts, ts + gap_ms, v, 1);
                    let touching: Vec<usize> =
                        (0..list.len()).filter(|&i| list[i].0 <= e && list[i].1 >= s).collect();
                    if touching.is_empty() && watermark != i64::MIN && gone(watermark, e) {
                        late += 1;
                        late_rows.push((k, ts, v));
                        continue;
                    }
                    for &i in touching.iter().rev() {
                        let old = list.remove(i);
                        s = s.min(old.0);
                        e = e.max(old.1);
                        sum += old.2;
                        n += old.3;
                    }
                    list.push((s, e, sum, n));
                }
            }
            max_ts = max_ts.max(ts);
        }
        // Fired sessions the batch updated are emitted again after it (unchanged ones again
        // too: the map keeps the same value).
        for (k, list) in &sessions {
            for &(s, e, sum, n) in list.iter().filter(|s| watermark >= s.1 - 1) {
                results.insert((s, e, *k), (sum, n));
            }
        }
        watermark = watermark.max(max_ts - delay - 1);
        for (k, list) in sessions.iter_mut() {
            for &(s, e, sum, n) in list.iter().filter(|s| watermark >= s.1 - 1) {
                results.insert((s, e, *k), (sum, n));
            }
            list.retain(|s| !gone(watermark, s.1));
        }
        start = end;
    }
    // The end of input fires every session still open.
    for (k, list) in &sessions {
        for &(s, e, sum, n) in list {
            results.insert((s, e, *k), (sum, n));
        }
    }
    late_rows.sort_unstable();
    Outcome { results, late, late_rows }
}

fn kinds() -> impl Strategy<Value = Kind> {
    prop_oneof![
        (1i64..5).prop_map(|s| Kind::Fixed(WindowAssigner::Tumbling { size_ms: s * 1000 })),
        (1i64..4, 1i64..4).prop_map(|(slide, factor)| Kind::Fixed(WindowAssigner::Hopping {
            size_ms: slide * 500 * factor + (factor - 1) * 250,
            slide_ms: slide * 500,
        })),
        (1i64..4, 1i64..5).prop_map(|(step, steps)| Kind::Fixed(WindowAssigner::Cumulate {
            step_ms: step * 500,
            max_size_ms: step * 500 * steps,
        })),
        (1i64..40).prop_map(|gap| Kind::Session { gap_ms: gap * 100 }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn window_operators_match_a_naive_reference(
        kind in kinds(),
        lateness in prop_oneof![Just(0i64), 1i64..3_000],
        // Timestamps on a 100 ms grid half of the time, so rows often sit exactly on window
        // bounds and sessions often just touch.
        rows in prop_oneof![
            prop::collection::vec((0i64..4, -2_000i64..20_000, -50i64..100), 0..120),
            prop::collection::vec((0i64..4, (-20i64..200).prop_map(|t| t * 100), -50i64..100), 0..120),
        ],
        batch_sizes in prop::collection::vec(1usize..9, 1..5),
        delay in 0i64..3_000,
    ) {
        let got = run_operator(kind, lateness, &rows, &batch_sizes, delay);
        let want = reference(kind, lateness, &rows, &batch_sizes, delay);
        prop_assert_eq!(got.results, want.results);
        prop_assert_eq!(got.late, want.late);
        prop_assert_eq!(got.late_rows, want.late_rows);
    }
}
