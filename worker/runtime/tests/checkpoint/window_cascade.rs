//! A window aggregate over the windows of another ([`WindowAssigner::Attached`], Flink's
//! window attribute propagation): a keyed hopping `sum(v)`, then per key and window the
//! `max` and `sum` of those sums, both operators chained and snapshotted together.

use std::sync::Arc;

use arrow::array::{AsArray, Int64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::functions_aggregate::min_max::max_udaf;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::physical_expr::aggregate::{AggregateExprBuilder, AggregateFunctionExpr};
use datafusion::physical_expr::expressions::col;
use millrace_runtime::Operator;
use millrace_runtime::operators::{
    WindowAggregateOperator, WindowAggregateSpec, WindowAssigner, WindowOutputColumn,
};

use super::harness::{Chain, Scenario};
use super::window_aggregate::operator;
use super::{input_rows, input_schema, steps};

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

/// What [`operator`] emits: `k, window_start, total, window_end, n`.
fn first_output() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("window_start", ts_type(), false),
        Field::new("total", DataType::Int64, true),
        Field::new("window_end", ts_type(), false),
        Field::new("n", DataType::Int64, false),
    ]))
}

fn aggregate(
    f: Arc<datafusion::logical_expr::AggregateUDF>,
    column: &str,
    alias: &str,
) -> Arc<AggregateFunctionExpr> {
    let schema = first_output();
    Arc::new(
        AggregateExprBuilder::new(f, vec![col(column, &schema).expect("column")])
            .schema(Arc::clone(&schema))
            .alias(alias)
            .build()
            .expect("aggregate"),
    )
}

/// `SELECT k, window_start, max(total), sum(n) FROM first GROUP BY k, window_start, window_end`.
fn cascade() -> WindowAggregateOperator {
    let input = first_output();
    WindowAggregateOperator::try_new(WindowAggregateSpec {
        time: col("window_end", &input).expect("window_end"),
        assigner: WindowAssigner::Attached { start: 1, end: 3 },
        keys: vec![col("k", &input).expect("k")],
        window_position: 1,
        aggregates: vec![aggregate(max_udaf(), "total", "max_total"), aggregate(sum_udaf(), "n", "sum_n")],
        output_columns: vec![WindowOutputColumn::Aggregate(0), WindowOutputColumn::Aggregate(1)],
        output_schema: Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("window_start", ts_type(), false),
            Field::new("max_total", DataType::Int64, true),
            Field::new("sum_n", DataType::Int64, true),
        ])),
        allowed_lateness_ms: 0,
        late_side_output: false,
        input_schema: input,
    })
    .expect("cascade")
}

fn chain() -> Vec<Box<dyn Operator>> {
    vec![
        Box::new(operator(WindowAssigner::Hopping { size_ms: 1500, slide_ms: 500 }, true, 0)),
        Box::new(cascade()),
    ]
}

#[test]
fn cascaded_windows_restore_at_any_parallelism() {
    let scenario = Scenario {
        make: &chain,
        exchange_keys: vec![col("k", &input_schema()).expect("k")],
        output_key: vec![0, 1],
        steps: steps(&input_rows(120, 13), 7, 300),
    };
    for at in [3, 10, 17, 24, scenario.steps.len() - 1] {
        let (after, tables) = scenario.check(at, &[1, 2, 3]);
        assert!(at == scenario.steps.len() - 1 || !after.is_empty(), "at {at}: nothing after");
        // Both operators' tables are in the snapshot: 2 accumulator and 2 watermark tables.
        assert_eq!(tables.len(), 4, "at {at}");
    }
}

/// Every row of the first aggregate reaches its own window in the second one, and none is
/// late there: the cascade's sums of `n` equal the first operator's, per key and window.
#[test]
fn cascaded_windows_take_every_upstream_window_once() {
    let mut first =
        vec![Box::new(operator(WindowAssigner::Hopping { size_ms: 1500, slide_ms: 500 }, true, 0))
            as Box<dyn Operator>];
    let mut both = chain();
    let run = |ops: &mut Vec<Box<dyn Operator>>| {
        let mut chain = Chain::new(std::mem::take(ops), 0, 1, millrace_types::Watermark::MIN);
        let mut out = Vec::new();
        for step in steps(&input_rows(120, 13), 7, 300) {
            out.extend(chain.step(&step));
        }
        out
    };
    let upstream = run(&mut first);
    let cascaded = run(&mut both);
    let rows = |batches: &[arrow::record_batch::RecordBatch], value: &str| {
        let mut rows: Vec<(i64, i64, i64)> = batches
            .iter()
            .flat_map(|b| {
                let k = b.column(0).as_primitive::<arrow::datatypes::Int64Type>().clone();
                let start = arrow::compute::cast(b.column(1), &DataType::Int64).expect("ms");
                let start = start.as_primitive::<arrow::datatypes::Int64Type>().clone();
                let v: Int64Array = b
                    .column_by_name(value)
                    .expect("value")
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .clone();
                (0..b.num_rows()).map(move |i| (k.value(i), start.value(i), v.value(i))).collect::<Vec<_>>()
            })
            .collect();
        rows.sort_unstable();
        rows
    };
    let want = rows(&upstream, "n");
    assert!(want.len() > 50, "the first aggregate emits many windows: {}", want.len());
    assert_eq!(rows(&cascaded, "sum_n"), want);
    let totals = rows(&upstream, "total");
    assert_eq!(rows(&cascaded, "max_total"), totals);
}
