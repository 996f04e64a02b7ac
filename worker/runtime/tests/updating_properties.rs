//! Property test: the updating aggregate against a naive reference on random keyed input cut
//! into random batches — each batch emits exactly one row per key it contains (`+I` for a
//! key's first, `+U` after) with the key's running SUM and COUNT(DISTINCT) so far.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{AsArray, Int64Array};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
use datafusion::physical_expr::expressions::col;
use millrace_runtime::operators::{UpdatingAggregateOperator, UpdatingAggregateSpec};
use millrace_runtime::{Operator, OperatorContext};
use millrace_types::changelog::split_row_kinds;
use millrace_types::{RowKind, SubtaskIndex, Watermark};
use proptest::prelude::*;

fn input_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
    ]))
}

fn operator() -> UpdatingAggregateOperator {
    let schema = input_schema();
    let v = col("v", &schema).expect("v");
    let sum = AggregateExprBuilder::new(sum_udaf(), vec![Arc::clone(&v)])
        .schema(Arc::clone(&schema))
        .alias("total")
        .build()
        .expect("sum");
    let distinct = AggregateExprBuilder::new(count_udaf(), vec![v])
        .schema(Arc::clone(&schema))
        .alias("values")
        .with_distinct(true)
        .build()
        .expect("count distinct");
    UpdatingAggregateOperator::try_new(UpdatingAggregateSpec {
        keys: vec![col("k", &schema).expect("k")],
        aggregates: vec![Arc::new(sum), Arc::new(distinct)],
        output_schema: Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("total", DataType::Int64, true),
            Field::new("values", DataType::Int64, false),
        ])),
        input_schema: Arc::clone(&schema),
        ttl_ms: None,
    })
    .expect("operator")
}

proptest! {
    #[test]
    fn every_batch_upserts_each_key_it_touched_with_its_running_values(
        rows in prop::collection::vec((0i64..6, 0i64..5), 1..120),
        cuts in prop::collection::vec(1usize..12, 1..40),
    ) {
        let mut op = operator();
        let ctx = OperatorContext {
            subtask: SubtaskIndex(0),
            parallelism: 1,
            max_parallelism: millrace_types::DEFAULT_MAX_PARALLELISM,
            key_groups: millrace_runtime::KeyGroupRange { first: 0, last: millrace_types::DEFAULT_MAX_PARALLELISM - 1 },
            watermark: Watermark::MIN,
            late_records: Default::default(),
        };
        // The reference: per key, the values seen so far.
        let mut seen: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        let mut start = 0;
        let mut cut = cuts.iter().cycle();
        while start < rows.len() {
            let end = (start + cut.next().copied().unwrap_or(1)).min(rows.len());
            let part = &rows[start..end];
            let batch = RecordBatch::try_new(
                input_schema(),
                vec![
                    Arc::new(Int64Array::from(part.iter().map(|r| r.0).collect::<Vec<_>>())),
                    Arc::new(Int64Array::from(part.iter().map(|r| r.1).collect::<Vec<_>>())),
                ],
            )
            .expect("batch");
            let mut want = BTreeMap::new();
            for (k, v) in part {
                let first = !seen.contains_key(k);
                seen.entry(*k).or_default().push(*v);
                want.entry(*k).or_insert(if first { RowKind::Insert } else { RowKind::UpdateAfter });
            }
            let want: BTreeMap<i64, (i64, i64, RowKind)> = want
                .into_iter()
                .map(|(k, kind)| {
                    let values = &seen[&k];
                    let distinct = values.iter().collect::<BTreeSet<_>>().len() as i64;
                    (k, (values.iter().sum(), distinct, kind))
                })
                .collect();
            let mut out = Vec::new();
            op.process_batch(batch, &ctx, &mut out).expect("process");
            let mut got = BTreeMap::new();
            for b in &out {
                let (logical, kinds) = split_row_kinds(b).expect("split");
                let kinds = kinds.expect("row kinds");
                for (i, kind) in kinds.into_iter().enumerate() {
                    let k = logical.column(0).as_primitive::<Int64Type>().value(i);
                    let total = logical.column(1).as_primitive::<Int64Type>().value(i);
                    let distinct = logical.column(2).as_primitive::<Int64Type>().value(i);
                    prop_assert!(got.insert(k, (total, distinct, kind)).is_none(), "key {} emitted twice in a batch", k);
                }
            }
            prop_assert_eq!(got, want);
            start = end;
        }
    }
}
