//! `session_accumulators`: keyed and global sessions that merge, with allowed lateness.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::physical_expr::expressions::col;
use millrace_runtime::Operator;
use millrace_runtime::operators::{SessionWindowOperator, SessionWindowSpec, WindowOutputColumn};

use super::harness::{Scenario, Step, assert_restore_fails, without_column};
use super::{batch, input_rows, input_schema, steps, sum_and_count_distinct};

fn operator(keyed: bool, gap_ms: i64, allowed_lateness_ms: i64) -> SessionWindowOperator {
    let schema = input_schema();
    let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
    let mut fields = Vec::new();
    if keyed {
        fields.push(Field::new("k", DataType::Int64, true));
    }
    fields.push(Field::new("window_start", ts.clone(), false));
    fields.push(Field::new("total", DataType::Int64, true));
    fields.push(Field::new("window_end", ts, false));
    fields.push(Field::new("n", DataType::Int64, false));
    SessionWindowOperator::try_new(SessionWindowSpec {
        time: col("ts", &schema).expect("ts"),
        gap_ms,
        keys: if keyed { vec![col("k", &schema).expect("k")] } else { Vec::new() },
        window_position: usize::from(keyed),
        aggregates: sum_and_count_distinct(),
        output_columns: vec![
            WindowOutputColumn::Aggregate(0),
            WindowOutputColumn::WindowEnd,
            WindowOutputColumn::Aggregate(1),
        ],
        output_schema: Arc::new(Schema::new(fields)),
        allowed_lateness_ms,
        late_side_output: false,
        input_schema: Arc::clone(&schema),
    })
    .expect("operator")
}

#[test]
fn keyed_sessions_restore_at_any_parallelism() {
    // Sparse keys (gap 600 ms, a key's rows ~700 ms apart on average) so that sessions both
    // close and merge; lateness keeps fired sessions open to late rows.
    for (gap, lateness) in [(600, 0), (900, 1500)] {
        let make = move || vec![Box::new(operator(true, gap, lateness)) as Box<dyn Operator>];
        let schema = input_schema();
        let scenario = Scenario {
            make: &make,
            exchange_keys: vec![col("k", &schema).expect("k")],
            output_key: vec![0],
            steps: steps(&input_rows(150, 7), 6, 400),
        };
        for at in [2, 9, 20, 33, 50] {
            scenario.check(at, &[1, 2, 3]);
        }
    }
}

#[test]
fn global_sessions_restore() {
    let make = || vec![Box::new(operator(false, 150, 300)) as Box<dyn Operator>];
    let scenario = Scenario {
        make: &make,
        exchange_keys: Vec::new(),
        output_key: Vec::new(),
        // Ten rows a second with gaps: several sessions.
        steps: steps(
            &input_rows(90, 3).into_iter().filter(|r| r.1.rem_euclid(2000) < 1200).collect::<Vec<_>>(),
            5,
            200,
        ),
    };
    for at in [3, 8, 15] {
        scenario.check(at, &[1]);
    }
}

#[test]
fn malformed_tables_fail_naming_the_table() {
    let make = || vec![Box::new(operator(true, 600, 0)) as Box<dyn Operator>];
    let schema = input_schema();
    let scenario = Scenario {
        make: &make,
        exchange_keys: vec![col("k", &schema).expect("k")],
        output_key: vec![0],
        steps: steps(&input_rows(60, 7), 6, 400),
    };
    let (_, tables) = scenario.check(6, &[1]);
    assert!(!tables[0].batches.is_empty());
    for drop in [2, 4, 6] {
        assert_restore_fails(
            Box::new(operator(true, 600, 0)),
            without_column(&tables, "session_accumulators", drop),
            "session_accumulators",
        );
    }
}

/// A row that could only open a session the watermark closed before the checkpoint is late
/// after the restore too.
#[test]
fn rows_late_before_the_checkpoint_stay_late_after_it() {
    let make = || vec![Box::new(operator(true, 300, 0)) as Box<dyn Operator>];
    let schema = input_schema();
    let scenario = Scenario {
        make: &make,
        exchange_keys: vec![col("k", &schema).expect("k")],
        output_key: vec![0],
        steps: vec![
            Step::Batch(batch(&[(1, 100, 1)])),
            Step::Watermark(1000),
            Step::Batch(batch(&[(1, 150, 2), (2, 1200, 7)])),
            Step::Watermark(i64::MAX),
        ],
    };
    let (after, _) = scenario.check(2, &[1, 2, 3]);
    assert_eq!(after.len(), 1, "only key 2's session fires: {after:?}");
}
