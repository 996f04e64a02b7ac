//! `over_frames` and `over_buffered_rows`: event-time OVER windows with bounded ROWS, bounded
//! RANGE (a sliding MAX, which cannot be merged and is replayed) and unbounded frames;
//! processing-time and global OVER windows.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::min_max::max_udaf;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
use datafusion::physical_expr::expressions::col;
use millrace_runtime::Operator;
use millrace_runtime::operators::{OverFrame, OverFunction, OverTime, OverWindowOperator, OverWindowSpec};

use super::harness::{Scenario, Step, assert_restore_fails, without_column};
use super::{batch, input_rows, input_schema, steps};

fn operator(time: OverTime, partitioned: bool) -> OverWindowOperator {
    let schema = input_schema();
    let v = || col("v", &schema).expect("v");
    let build = |udaf, alias: &str, distinct: bool| {
        Arc::new(
            AggregateExprBuilder::new(udaf, vec![v()])
                .schema(Arc::clone(&schema))
                .alias(alias)
                .with_distinct(distinct)
                .build()
                .expect("aggregate"),
        )
    };
    let functions = vec![
        OverFunction {
            aggregate: build(sum_udaf(), "s", false),
            frame: OverFrame::Rows { preceding: Some(2) },
        },
        OverFunction {
            aggregate: build(max_udaf(), "m", false),
            frame: OverFrame::Range { preceding_ms: Some(300) },
        },
        OverFunction {
            aggregate: build(count_udaf(), "c", true),
            frame: OverFrame::Rows { preceding: None },
        },
    ];
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("s", DataType::Int64, true));
    fields.push(Field::new("m", DataType::Int64, true));
    fields.push(Field::new("c", DataType::Int64, false));
    let (partition_by, partition_types) = if partitioned {
        (vec![col("k", &schema).expect("k")], vec![DataType::Int32])
    } else {
        (Vec::new(), Vec::new())
    };
    OverWindowOperator::try_new(OverWindowSpec {
        partition_by,
        partition_types,
        order_by: col("ts", &schema).expect("ts"),
        time,
        functions,
        output_schema: Arc::new(Schema::new(fields)),
    })
    .expect("operator")
}

#[test]
fn event_time_over_windows_restore_frames_and_buffered_rows_at_any_parallelism() {
    let make = || vec![Box::new(operator(OverTime::Event, true)) as Box<dyn Operator>];
    let schema = input_schema();
    let scenario = Scenario {
        make: &make,
        exchange_keys: vec![col("k", &schema).expect("k")],
        output_key: vec![0],
        // The watermark lags 500 ms: rows wait in the buffer across snapshots.
        steps: steps(&input_rows(140, 5), 6, 500),
    };
    for at in [2, 7, 14, 25, 40] {
        let (_, tables) = scenario.check(at, &[1, 2, 3]);
        let buffered = tables.iter().find(|t| t.name == "over_buffered_rows").expect("buffered table");
        assert!(at < 3 || buffered.batches.iter().any(|b| b.num_rows() > 0), "rows wait at {at}");
    }
}

#[test]
fn processing_time_and_global_over_windows_restore() {
    for (time, partitioned) in
        [(OverTime::Processing, true), (OverTime::Processing, false), (OverTime::Event, false)]
    {
        let make = move || vec![Box::new(operator(time, partitioned)) as Box<dyn Operator>];
        let schema = input_schema();
        let scenario = Scenario {
            make: &make,
            exchange_keys: if partitioned { vec![col("k", &schema).expect("k")] } else { Vec::new() },
            output_key: if partitioned { vec![0] } else { Vec::new() },
            steps: steps(&input_rows(60, 5), 6, 300),
        };
        let parallelisms: &[usize] = if partitioned { &[1, 2, 3] } else { &[1] };
        for at in [3, 8, 15] {
            let (_, tables) = scenario.check(at, parallelisms);
            assert_eq!(tables.len(), if time == OverTime::Event { 3 } else { 1 });
        }
    }
}

#[test]
fn malformed_tables_fail_naming_the_table() {
    let make = || vec![Box::new(operator(OverTime::Event, true)) as Box<dyn Operator>];
    let schema = input_schema();
    let scenario = Scenario {
        make: &make,
        exchange_keys: vec![col("k", &schema).expect("k")],
        output_key: vec![0],
        steps: steps(&input_rows(40, 5), 6, 500),
    };
    let (_, tables) = scenario.check(6, &[1]);
    for (table, drop) in [("over_frames", 2), ("over_frames", 5), ("over_buffered_rows", 3)] {
        let mut broken = without_column(&tables, table, drop);
        broken.extend(tables.iter().filter(|t| t.name != table).cloned());
        assert_restore_fails(Box::new(operator(OverTime::Event, true)), broken, table);
    }
}

/// A row at or below the watermark of the checkpoint is late after the restore too.
#[test]
fn rows_late_before_the_checkpoint_stay_late_after_it() {
    let make = || vec![Box::new(operator(OverTime::Event, true)) as Box<dyn Operator>];
    let schema = input_schema();
    let scenario = Scenario {
        make: &make,
        exchange_keys: vec![col("k", &schema).expect("k")],
        output_key: vec![0],
        steps: vec![
            Step::Batch(batch(&[(1, 100, 1), (1, 900, 2)])),
            Step::Watermark(500),
            Step::Batch(batch(&[(1, 300, 4)])),
            Step::Watermark(i64::MAX),
        ],
    };
    let (after, _) = scenario.check(2, &[1, 2, 3]);
    assert_eq!(after.len(), 1, "only the buffered row at 900 comes out: {after:?}");
}
