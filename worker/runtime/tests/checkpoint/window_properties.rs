//! Property: a window aggregate snapshotted at a random point of a random stream (keys,
//! out-of-order and late rows, batch sizes, watermark lag, allowed lateness, assigner) and
//! restored at parallelism 1, 2 and 3 emits what the uninterrupted operator emits.

use datafusion::physical_expr::expressions::col;
use millrace_runtime::Operator;
use millrace_runtime::operators::WindowAssigner;
use proptest::prelude::*;

use super::harness::{Scenario, Step};
use super::window_aggregate::operator;
use super::{batch, input_schema};

fn assigners() -> impl Strategy<Value = WindowAssigner> {
    prop_oneof![
        (1i64..20).prop_map(|s| WindowAssigner::Tumbling { size_ms: s * 100 }),
        (1i64..6, 1i64..4).prop_map(|(slide, n)| WindowAssigner::Hopping {
            size_ms: slide * n * 100,
            slide_ms: slide * 100
        }),
        (1i64..6, 1i64..4).prop_map(|(step, n)| WindowAssigner::Cumulate {
            step_ms: step * 100,
            max_size_ms: step * n * 100
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn restored_windows_emit_what_uninterrupted_ones_emit(
        rows in prop::collection::vec((0i32..8, 0i64..6000, 0i64..4), 1..80),
        sizes in prop::collection::vec(1usize..10, 1..20),
        lag in 0i64..800,
        lateness in 0i64..1500,
        assigner in assigners(),
        cut in 0.0f64..1.0,
    ) {
        let mut steps = Vec::new();
        let (mut start, mut highest) = (0, i64::MIN);
        for size in sizes.iter().cycle() {
            if start >= rows.len() {
                break;
            }
            let chunk = &rows[start..(start + size).min(rows.len())];
            start += chunk.len();
            steps.push(Step::Batch(batch(chunk)));
            highest = highest.max(chunk.iter().map(|r| r.1).max().unwrap_or(i64::MIN));
            steps.push(Step::Watermark(highest - lag));
        }
        steps.push(Step::Watermark(i64::MAX));
        let at = ((steps.len() as f64) * cut) as usize;
        let make = move || vec![Box::new(operator(assigner, true, lateness)) as Box<dyn Operator>];
        let schema = input_schema();
        let scenario = Scenario {
            make: &make,
            exchange_keys: vec![col("k", &schema).expect("k")],
            output_key: vec![0, 1],
            steps,
        };
        scenario.check(at, &[1, 2, 3]);
    }
}
