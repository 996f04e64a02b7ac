//! Checkpoint tests: every stateful operator snapshotted mid-stream and restored at
//! parallelism 1, 2 and 3 (keyed) or 1 (global) must go on exactly as if never interrupted
//! (see [`harness`]); malformed tables fail with an error naming the table.

mod harness;

mod count_window;
mod over_window;
mod session_window;
mod updating_aggregate;
mod window_aggregate;
mod window_cascade;
mod window_properties;

use std::sync::Arc;

use arrow::array::{Int32Array, Int64Array, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::physical_expr::aggregate::{AggregateExprBuilder, AggregateFunctionExpr};
use datafusion::physical_expr::expressions::col;

/// The input of every test: an INT key (Int32, so that operators which keep keys as BIGINT
/// must hash them as the exchange does), an event time and a value.
pub fn input_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int32, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        Field::new("v", DataType::Int64, true),
    ]))
}

/// A batch of (k, ts, v) rows.
pub fn batch(rows: &[(i32, i64, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        input_schema(),
        vec![
            Arc::new(Int32Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            Arc::new(TimestampMillisecondArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
        ],
    )
    .expect("batch")
}

/// `sum(v)` and `count(DISTINCT v)` (whose state is a list) over the input.
pub fn sum_and_count_distinct() -> Vec<Arc<AggregateFunctionExpr>> {
    let schema = input_schema();
    let sum = AggregateExprBuilder::new(sum_udaf(), vec![col("v", &schema).expect("v")])
        .schema(Arc::clone(&schema))
        .alias("total")
        .build()
        .expect("sum");
    let distinct = AggregateExprBuilder::new(count_udaf(), vec![col("v", &schema).expect("v")])
        .schema(Arc::clone(&schema))
        .alias("n")
        .distinct()
        .build()
        .expect("count distinct");
    vec![Arc::new(sum), Arc::new(distinct)]
}

/// Deterministic rows over `keys` keys: timestamps rise by about 100 ms a row with some
/// disorder (and a few rows far behind, late for most windows), values repeat so that
/// DISTINCT matters.
pub fn input_rows(count: usize, keys: i32) -> Vec<(i32, i64, i64)> {
    (0..count)
        .map(|i| {
            let i = i as i64;
            let k = ((i * 7 + i / 3) % i64::from(keys)) as i32;
            let disorder = (i * 37) % 250;
            let ts = if i % 17 == 16 { i * 100 - 1800 } else { i * 100 - disorder };
            (k, ts, i % 5)
        })
        .collect()
}

/// `rows` in batches of `size`, each followed by a watermark `lag` behind its highest time.
pub fn steps(rows: &[(i32, i64, i64)], size: usize, lag: i64) -> Vec<harness::Step> {
    let mut steps = Vec::new();
    let mut highest = i64::MIN;
    for chunk in rows.chunks(size) {
        steps.push(harness::Step::Batch(batch(chunk)));
        highest = highest.max(chunk.iter().map(|r| r.1).max().unwrap_or(i64::MIN));
        steps.push(harness::Step::Watermark(highest - lag));
    }
    steps.push(harness::Step::Watermark(i64::MAX));
    steps
}
