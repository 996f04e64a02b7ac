//! `window_accumulators`: tumbling, hopping and global windows with allowed lateness.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, TimeUnit, UInt32Type};
use datafusion::physical_expr::expressions::col;
use millrace_runtime::Operator;
use millrace_runtime::TableSnapshot;
use millrace_runtime::operators::{
    WindowAggregateOperator, WindowAggregateSpec, WindowAssigner, WindowOutputColumn,
};
use millrace_runtime::state::{KEY_GROUP_COLUMN, key_groups_of};

use super::harness::{MAX_PARALLELISM, Scenario, Step, assert_restore_fails, without_column};
use super::{batch, input_rows, input_schema, steps, sum_and_count_distinct};

/// `GROUP BY k, <assigner>` with `sum(v)`, `window_end` and `count(DISTINCT v)`; the key is
/// kept as `key_type` while the exchange hashes the INT column.
pub fn typed_operator(
    assigner: WindowAssigner,
    keyed: bool,
    allowed_lateness_ms: i64,
    key_type: DataType,
) -> WindowAggregateOperator {
    let schema = input_schema();
    let ts = || Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), false);
    let mut fields = Vec::new();
    if keyed {
        fields.push(Field::new("k", key_type, true));
    }
    fields.push(Field::new("window_start", ts().data_type().clone(), false));
    fields.push(Field::new("total", DataType::Int64, true));
    fields.push(Field::new("window_end", ts().data_type().clone(), false));
    fields.push(Field::new("n", DataType::Int64, false));
    WindowAggregateOperator::try_new(WindowAggregateSpec {
        time: col("ts", &schema).expect("ts"),
        assigner,
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
        late_side_output: true,
        input_schema: Arc::clone(&schema),
    })
    .expect("operator")
}

/// [`typed_operator`] keeping the key as BIGINT (as the planner would as INT; the hash is the
/// same).
pub fn operator(assigner: WindowAssigner, keyed: bool, allowed_lateness_ms: i64) -> WindowAggregateOperator {
    typed_operator(assigner, keyed, allowed_lateness_ms, DataType::Int64)
}

fn scenario(make: &dyn Fn() -> Vec<Box<dyn Operator>>, keyed: bool) -> Scenario<'_> {
    let schema = input_schema();
    Scenario {
        make,
        exchange_keys: if keyed { vec![col("k", &schema).expect("k")] } else { Vec::new() },
        // k, window_start (global: window_start only).
        output_key: if keyed { vec![0, 1] } else { vec![0] },
        steps: steps(&input_rows(120, 13), 7, 300),
    }
}

#[test]
fn keyed_windows_with_lateness_restore_at_any_parallelism() {
    for assigner in [
        WindowAssigner::Tumbling { size_ms: 1000 },
        WindowAssigner::Hopping { size_ms: 1500, slide_ms: 500 },
        WindowAssigner::Cumulate { step_ms: 500, max_size_ms: 2000 },
    ] {
        let make = move || vec![Box::new(operator(assigner, true, 1000)) as Box<dyn Operator>];
        let scenario = scenario(&make, true);
        for at in [3, 10, 17, 24, scenario.steps.len() - 1] {
            let (after, tables) = scenario.check(at, &[1, 2, 3]);
            assert!(
                at == scenario.steps.len() - 1 || !after.is_empty(),
                "{assigner:?} at {at}: nothing after"
            );
            assert!(tables.iter().any(|t| !t.batches.is_empty()) || at == scenario.steps.len() - 1);
        }
    }
}

#[test]
fn fired_windows_kept_for_lateness_are_checkpointed_as_not_pending() {
    let make = || {
        vec![Box::new(operator(WindowAssigner::Tumbling { size_ms: 1000 }, true, 5000)) as Box<dyn Operator>]
    };
    let scenario = scenario(&make, true);
    let (_, tables) = scenario.check(20, &[1, 2, 3]);
    let batch = &tables[0].batches[0];
    let pending = batch.column_by_name("pending").expect("pending").as_boolean();
    assert!(pending.false_count() > 0, "some windows fired and are kept for late rows");
}

#[test]
fn global_windows_restore_at_parallelism_one() {
    let make = || {
        vec![Box::new(operator(WindowAssigner::Tumbling { size_ms: 1000 }, false, 1000)) as Box<dyn Operator>]
    };
    let scenario = scenario(&make, false);
    for at in [4, 11, 30] {
        let (_, tables) = scenario.check(at, &[1]);
        let schema = tables[0].batches[0].schema();
        assert!(schema.column_with_name(KEY_GROUP_COLUMN).is_none(), "an instance table has no key groups");
    }
}

/// With the key kept as DOUBLE (the output type) the table's key group must still be that of
/// the INT the exchange hashes: hashing the DOUBLE would restore keys on the wrong subtask.
#[test]
fn key_groups_are_those_of_the_exchange_types() {
    let make = || {
        let op = typed_operator(WindowAssigner::Tumbling { size_ms: 1000 }, true, 500, DataType::Float64);
        vec![Box::new(op) as Box<dyn Operator>]
    };
    let scenario = scenario(&make, true);
    for at in [5, 9, 20] {
        scenario.check(at, &[1, 2, 3]);
    }
    let (_, tables) = scenario.check(9, &[1]);
    let batch = &tables[0].batches[0];
    let keys = batch.column_by_name("k").expect("k");
    assert_eq!(keys.data_type(), &DataType::Float64);
    let groups: Vec<u32> = batch.column(0).as_primitive::<UInt32Type>().values().to_vec();
    let as_int: ArrayRef = cast(keys, &DataType::Int32).expect("cast");
    assert_eq!(groups, key_groups_of(&[as_int], batch.num_rows(), MAX_PARALLELISM).expect("groups"));
    let as_double = key_groups_of(&[Arc::clone(keys)], batch.num_rows(), MAX_PARALLELISM).expect("groups");
    assert_ne!(groups, as_double, "the test needs keys whose INT and DOUBLE hashes differ");
}

#[test]
fn malformed_tables_fail_naming_the_table() {
    let make = || {
        vec![Box::new(operator(WindowAssigner::Tumbling { size_ms: 1000 }, true, 1000)) as Box<dyn Operator>]
    };
    let (_, tables) = scenario(&make, true).check(9, &[1]);
    let fresh =
        || Box::new(operator(WindowAssigner::Tumbling { size_ms: 1000 }, true, 1000)) as Box<dyn Operator>;
    // A missing column (the window end).
    assert_restore_fails(fresh(), without_column(&tables, "window_accumulators", 3), "window_accumulators");
    // The accumulators of another query (no DISTINCT count): fewer state columns.
    let last = tables[0].batches[0].num_columns() - 1;
    assert_restore_fails(
        fresh(),
        without_column(&tables, "window_accumulators", last),
        "window_accumulators",
    );
    // A wrong type: the key as text.
    let batch = &tables[0].batches[0];
    let mut columns = batch.columns().to_vec();
    columns[1] = cast(&columns[1], &DataType::Utf8).expect("cast");
    let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields[1] = Field::new("k", DataType::Utf8, true);
    let wrong =
        arrow::record_batch::RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("batch");
    let tables = vec![TableSnapshot { name: "window_accumulators".into(), batches: vec![wrong] }];
    assert_restore_fails(fresh(), tables, "window_accumulators");
    // A table the operator does not have.
    let tables = vec![TableSnapshot { name: "session_accumulators".into(), batches: Vec::new() }];
    assert_restore_fails(fresh(), tables, "session_accumulators");
}

/// A row for a window the watermark closed before the checkpoint is late after the restore
/// too, though the restored operator starts at no watermark.
#[test]
fn rows_late_before_the_checkpoint_stay_late_after_it() {
    let make =
        || vec![Box::new(operator(WindowAssigner::Tumbling { size_ms: 1000 }, true, 0)) as Box<dyn Operator>];
    let schema = input_schema();
    let scenario = Scenario {
        make: &make,
        exchange_keys: vec![col("k", &schema).expect("k")],
        output_key: vec![0, 1],
        steps: vec![
            Step::Batch(batch(&[(1, 100, 1), (2, 300, 1)])),
            Step::Watermark(1500),
            Step::Batch(batch(&[(1, 200, 5), (2, 1700, 3)])),
            Step::Watermark(i64::MAX),
        ],
    };
    let (after, _) = scenario.check(2, &[1, 2, 3]);
    assert_eq!(after.len(), 1, "only key 2's window [1000, 2000) fires: {after:?}");
}
