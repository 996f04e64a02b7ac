//! `group_accumulators`, `distinct_keys` and the upsert filter's `passed_keys`.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::logical_expr::Operator as BinaryOperator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{Column, binary, cast, col, lit};
use millrace_runtime::Operator;
use millrace_runtime::operators::{
    ProjectionOperator, UpdatingAggregateOperator, UpdatingAggregateSpec, UpsertFilterOperator,
};
use millrace_types::changelog::{ROW_KIND_COLUMN, with_row_kind};

use super::harness::{Scenario, assert_restore_fails, without_column};
use super::{input_rows, input_schema, steps, sum_and_count_distinct};

/// Row kinds as the harness formats the row-kind column.
const UPDATE_AFTER: &str = "2";
const DELETE: &str = "3";

/// `GROUP BY k` with `sum(v)`, `count(DISTINCT v)`; keys as `key_type` (the INT column, or
/// BIGINT).
fn aggregate(keyed: bool, key_type: DataType) -> UpdatingAggregateOperator {
    let schema = input_schema();
    let mut fields = Vec::new();
    if keyed {
        fields.push(Field::new("k", key_type, true));
    }
    fields.push(Field::new("total", DataType::Int64, true));
    fields.push(Field::new("n", DataType::Int64, false));
    UpdatingAggregateOperator::try_new(UpdatingAggregateSpec {
        keys: if keyed { vec![col("k", &schema).expect("k")] } else { Vec::new() },
        aggregates: sum_and_count_distinct(),
        output_schema: Arc::new(Schema::new(fields)),
        input_schema: schema,
        ttl_ms: None,
    })
    .expect("operator")
}

fn keyed_scenario(make: &dyn Fn() -> Vec<Box<dyn Operator>>) -> Scenario<'_> {
    let schema = input_schema();
    Scenario {
        make,
        exchange_keys: vec![col("k", &schema).expect("k")],
        output_key: vec![0],
        steps: steps(&input_rows(100, 17), 6, 0),
    }
}

#[test]
fn keyed_aggregates_restore_at_any_parallelism() {
    for key_type in [DataType::Int32, DataType::Int64] {
        let make = move || vec![Box::new(aggregate(true, key_type.clone())) as Box<dyn Operator>];
        let scenario = keyed_scenario(&make);
        for at in [1, 6, 13, 20] {
            let (after, _) = scenario.check(at, &[1, 2, 3]);
            assert!(
                after.iter().any(|r| r.last().is_some_and(|kind| kind == UPDATE_AFTER)),
                "restored keys update"
            );
        }
    }
}

#[test]
fn a_global_aggregate_restores() {
    let make = || vec![Box::new(aggregate(false, DataType::Int32)) as Box<dyn Operator>];
    let scenario = Scenario {
        make: &make,
        exchange_keys: Vec::new(),
        output_key: Vec::new(),
        steps: steps(&input_rows(40, 5), 6, 0),
    };
    for at in [2, 7] {
        scenario.check(at, &[1]);
    }
}

#[test]
fn distinct_keys_restore() {
    let schema = input_schema();
    let make = || {
        let schema = input_schema();
        let keys: Vec<Arc<dyn PhysicalExpr>> =
            vec![col("k", &schema).expect("k"), col("v", &schema).expect("v")];
        let output = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int32, true),
            Field::new("v", DataType::Int64, true),
        ]));
        vec![Box::new(
            UpdatingAggregateOperator::try_new(UpdatingAggregateSpec {
                keys,
                aggregates: Vec::new(),
                output_schema: output,
                input_schema: schema,
                ttl_ms: None,
            })
            .expect("distinct"),
        ) as Box<dyn Operator>]
    };
    let scenario = Scenario {
        make: &make,
        exchange_keys: vec![col("k", &schema).expect("k"), col("v", &schema).expect("v")],
        output_key: vec![0, 1],
        steps: steps(&input_rows(80, 9), 5, 0),
    };
    for at in [2, 9, 20] {
        let (_, tables) = scenario.check(at, &[1, 2, 3]);
        assert_eq!(tables[0].name, "distinct_keys");
    }
}

/// The logical schema after the projection: `CAST(k AS VARCHAR) AS k, total, n`.
fn projected_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, true),
        Field::new("total", DataType::Int64, true),
        Field::new("n", DataType::Int64, false),
    ]))
}

/// `SELECT CAST(k AS VARCHAR) AS k, total, n FROM (GROUP BY k) WHERE total % 2 = 0`: an
/// updating aggregate, a projection that casts the key, and the upsert filter keyed by the
/// cast column; the exchange hashed the INT, so the filter's keys must be hashed as INTs.
fn filtered_chain() -> Vec<Box<dyn Operator>> {
    let emitted = with_row_kind(&Schema::new(vec![
        Field::new("k", DataType::Int32, true),
        Field::new("total", DataType::Int64, true),
        Field::new("n", DataType::Int64, false),
    ]));
    let exprs: Vec<Arc<dyn PhysicalExpr>> = vec![
        cast(col("k", &emitted).expect("k"), &emitted, DataType::Utf8).expect("cast"),
        col("total", &emitted).expect("total"),
        col("n", &emitted).expect("n"),
        Arc::new(Column::new(ROW_KIND_COLUMN, 3)),
    ];
    let logical = projected_schema();
    let total = col("total", &logical).expect("total");
    let parity = binary(total, BinaryOperator::Modulo, lit(2i64), &logical).expect("modulo");
    let predicate = binary(parity, BinaryOperator::Eq, lit(0i64), &logical).expect("predicate");
    vec![
        Box::new(aggregate(true, DataType::Int32)),
        Box::new(ProjectionOperator::new(exprs, Arc::new(with_row_kind(&logical)))),
        Box::new(
            UpsertFilterOperator::try_new(predicate, vec![0], &logical, vec![DataType::Int32])
                .expect("filter"),
        ),
    ]
}

#[test]
fn an_upsert_filter_behind_a_cast_key_restores_at_any_parallelism() {
    let scenario = keyed_scenario(&filtered_chain);
    let mut deletes = 0;
    for at in [3, 8, 15, 24] {
        let (after, tables) = scenario.check(at, &[1, 2, 3]);
        deletes += after.iter().filter(|r| r.last().is_some_and(|kind| kind == DELETE)).count();
        assert!(tables.iter().any(|t| t.name == "passed_keys" && !t.batches.is_empty()));
    }
    assert!(deletes > 0, "keys stop passing after the snapshot and are deleted");
}

#[test]
fn malformed_tables_fail_naming_the_table() {
    let make = || vec![Box::new(aggregate(true, DataType::Int64)) as Box<dyn Operator>];
    let (_, tables) = keyed_scenario(&make).check(6, &[1]);
    for drop in [1, 2, 3] {
        assert_restore_fails(
            Box::new(aggregate(true, DataType::Int64)),
            without_column(&tables, "group_accumulators", drop),
            "group_accumulators",
        );
    }
    let (_, tables) = keyed_scenario(&filtered_chain).check(6, &[1]);
    let filter = filtered_chain().pop().expect("filter");
    assert_restore_fails(filter, without_column(&tables, "passed_keys", 1), "passed_keys");
}

/// A sum whose partial states cannot be merged (DataFusion's `merge_batch` is optional in
/// spirit: some UDAFs refuse it).
#[derive(Debug, Default)]
struct UnmergeableSum(i64);

impl datafusion::logical_expr::Accumulator for UnmergeableSum {
    fn update_batch(&mut self, values: &[arrow::array::ArrayRef]) -> datafusion::common::Result<()> {
        use arrow::array::AsArray;
        let values = values[0].as_primitive::<arrow::datatypes::Int64Type>();
        self.0 += values.iter().flatten().sum::<i64>();
        Ok(())
    }

    fn evaluate(&mut self) -> datafusion::common::Result<datafusion::common::ScalarValue> {
        Ok(datafusion::common::ScalarValue::Int64(Some(self.0)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }

    fn state(&mut self) -> datafusion::common::Result<Vec<datafusion::common::ScalarValue>> {
        Ok(vec![datafusion::common::ScalarValue::Int64(Some(self.0))])
    }

    fn merge_batch(&mut self, _states: &[arrow::array::ArrayRef]) -> datafusion::common::Result<()> {
        datafusion::common::not_impl_err!("unmergeable_sum has no merge")
    }
}

#[test]
fn an_aggregate_that_cannot_merge_fails_the_snapshot_naming_it() {
    use datafusion::logical_expr::{Volatility, create_udaf};
    use millrace_types::Watermark;

    let schema = input_schema();
    let udaf = create_udaf(
        "unmergeable_sum",
        vec![DataType::Int64],
        Arc::new(DataType::Int64),
        Volatility::Immutable,
        Arc::new(|_| Ok(Box::new(UnmergeableSum::default()))),
        Arc::new(vec![DataType::Int64]),
    );
    let aggregate = datafusion::physical_expr::aggregate::AggregateExprBuilder::new(
        Arc::new(udaf),
        vec![col("v", &schema).expect("v")],
    )
    .schema(Arc::clone(&schema))
    .alias("s")
    .build()
    .expect("aggregate");
    let mut op = UpdatingAggregateOperator::try_new(UpdatingAggregateSpec {
        keys: vec![col("k", &schema).expect("k")],
        aggregates: vec![Arc::new(aggregate)],
        output_schema: Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int32, true),
            Field::new("s", DataType::Int64, true),
        ])),
        input_schema: Arc::clone(&schema),
        ttl_ms: None,
    })
    .expect("operator");
    let ctx = super::harness::context(0, 1, Watermark::MIN);
    op.process_batch(super::batch(&[(1, 0, 5)]), &ctx, &mut Vec::new()).expect("batch");
    let err = op.snapshot_state(&ctx).expect_err("an unmergeable aggregate cannot be checkpointed");
    let message = err.to_string();
    assert!(message.contains("group_accumulators") && message.contains("s"), "{message}");
    assert!(message.contains("cannot be checkpointed"), "{message}");
}

/// `SELECT total, n FROM (global aggregate) WHERE total % 2 = 0`: the filter's one implicit
/// key, in an instance table.
#[test]
fn an_upsert_filter_behind_a_global_aggregate_restores() {
    let make = || {
        let logical = Arc::new(Schema::new(vec![
            Field::new("total", DataType::Int64, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let total = col("total", &logical).expect("total");
        let parity = binary(total, BinaryOperator::Modulo, lit(2i64), &logical).expect("modulo");
        let predicate = binary(parity, BinaryOperator::Eq, lit(0i64), &logical).expect("predicate");
        vec![
            Box::new(aggregate(false, DataType::Int32)) as Box<dyn Operator>,
            Box::new(
                UpsertFilterOperator::try_new(predicate, Vec::new(), &logical, Vec::new()).expect("filter"),
            ),
        ]
    };
    let scenario = Scenario {
        make: &make,
        exchange_keys: Vec::new(),
        output_key: Vec::new(),
        steps: steps(&input_rows(60, 5), 3, 0),
    };
    let mut passed = 0;
    for at in [2, 5, 9, 14, 21] {
        let (_, tables) = scenario.check(at, &[1]);
        let table = tables.iter().find(|t| t.name == "passed_keys").expect("passed_keys");
        passed += table.batches.iter().map(|b| b.num_rows()).sum::<usize>();
    }
    assert!(passed > 0, "the global row was passed on at some snapshot");
}
