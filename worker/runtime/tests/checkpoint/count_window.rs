//! `count_windows`: tumbling and sliding row-count windows, keyed and global.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use datafusion::physical_expr::expressions::col;
use millrace_runtime::Operator;
use millrace_runtime::operators::{CountWindowOperator, CountWindowSpec};

use super::harness::{Scenario, assert_restore_fails, without_column};
use super::{input_rows, input_schema, steps, sum_and_count_distinct};

fn operator(size: u64, slide: u64, keyed: bool) -> CountWindowOperator {
    let schema = input_schema();
    let mut fields = Vec::new();
    if keyed {
        fields.push(Field::new("k", DataType::Int64, true));
    }
    fields.push(Field::new("w", DataType::Int64, false));
    fields.push(Field::new("total", DataType::Int64, true));
    fields.push(Field::new("n", DataType::Int64, false));
    CountWindowOperator::try_new(CountWindowSpec {
        size,
        slide,
        keys: if keyed { vec![col("k", &schema).expect("k")] } else { Vec::new() },
        window_position: usize::from(keyed),
        aggregates: sum_and_count_distinct(),
        output_schema: Arc::new(Schema::new(fields)),
        input_schema: schema,
    })
    .expect("operator")
}

#[test]
fn keyed_count_windows_restore_at_any_parallelism() {
    for (size, slide) in [(3, 3), (4, 2), (5, 1)] {
        let make = move || vec![Box::new(operator(size, slide, true)) as Box<dyn Operator>];
        let schema = input_schema();
        let scenario = Scenario {
            make: &make,
            exchange_keys: vec![col("k", &schema).expect("k")],
            output_key: vec![0],
            steps: steps(&input_rows(120, 11), 7, 0),
        };
        for at in [1, 4, 9, 16, 25] {
            let (after, _) = scenario.check(at, &[1, 2, 3]);
            assert!(!after.is_empty());
        }
    }
}

#[test]
fn global_count_windows_restore() {
    let make = || vec![Box::new(operator(4, 3, false)) as Box<dyn Operator>];
    let scenario = Scenario {
        make: &make,
        exchange_keys: Vec::new(),
        output_key: Vec::new(),
        steps: steps(&input_rows(50, 3), 5, 0),
    };
    for at in [1, 6, 11] {
        scenario.check(at, &[1]);
    }
}

#[test]
fn malformed_tables_fail_naming_the_table() {
    let make = || vec![Box::new(operator(4, 2, true)) as Box<dyn Operator>];
    let schema = input_schema();
    let scenario = Scenario {
        make: &make,
        exchange_keys: vec![col("k", &schema).expect("k")],
        output_key: vec![0],
        steps: steps(&input_rows(40, 11), 7, 0),
    };
    let (_, tables) = scenario.check(3, &[1]);
    for drop in [0, 2, 3] {
        assert_restore_fails(
            Box::new(operator(4, 2, true)),
            without_column(&tables, "count_windows", drop),
            "count_windows",
        );
    }
}
