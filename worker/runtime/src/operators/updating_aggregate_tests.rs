//! Tests of the updating aggregate (its own file to keep the operator's short).

use arrow::array::{AsArray, Int64Array, StringArray};
use arrow::datatypes::{Field, Int64Type, Schema};
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
use datafusion::physical_expr::expressions::col;
use millrace_types::changelog::split_row_kinds;
use millrace_types::{SubtaskIndex, Watermark};

use super::*;

fn input_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true), Field::new("v", DataType::Int64, true)]))
}

fn batch(rows: &[(&str, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        input_schema(),
        vec![
            Arc::new(StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
        ],
    )
    .expect("batch")
}

fn ctx() -> OperatorContext {
    OperatorContext {
        subtask: SubtaskIndex(0),
        parallelism: 1,
        max_parallelism: millrace_types::DEFAULT_MAX_PARALLELISM,
        key_groups: crate::state::KeyGroupRange {
            first: 0,
            last: millrace_types::DEFAULT_MAX_PARALLELISM - 1,
        },
        watermark: Watermark::MIN,
        late_records: Default::default(),
    }
}

fn aggregate(distinct_count: bool) -> UpdatingAggregateOperator {
    aggregate_with_ttl(distinct_count, None)
}

fn aggregate_with_ttl(distinct_count: bool, ttl_ms: Option<i64>) -> UpdatingAggregateOperator {
    let schema = input_schema();
    let v = col("v", &schema).expect("v");
    let sum = AggregateExprBuilder::new(sum_udaf(), vec![Arc::clone(&v)])
        .schema(Arc::clone(&schema))
        .alias("total")
        .build()
        .expect("sum");
    let count = AggregateExprBuilder::new(count_udaf(), vec![v])
        .schema(Arc::clone(&schema))
        .alias("n")
        .with_distinct(distinct_count)
        .build()
        .expect("count");
    UpdatingAggregateOperator::try_new(UpdatingAggregateSpec {
        keys: vec![col("k", &schema).expect("k")],
        aggregates: vec![Arc::new(sum), Arc::new(count)],
        output_schema: Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("total", DataType::Int64, true),
            Field::new("n", DataType::Int64, false),
        ])),
        input_schema: Arc::clone(&schema),
        ttl_ms,
    })
    .expect("operator")
}

/// (key, total, n, kind) per output row.
fn rows(batches: &[RecordBatch]) -> Vec<(String, i64, i64, RowKind)> {
    let mut out = Vec::new();
    for b in batches {
        let (logical, kinds) = split_row_kinds(b).expect("changelog");
        let kinds = kinds.expect("an updating aggregate emits row kinds");
        let k = logical.column(0).as_string::<i32>();
        let total = logical.column(1).as_primitive::<Int64Type>();
        let n = logical.column(2).as_primitive::<Int64Type>();
        for (i, kind) in kinds.into_iter().enumerate() {
            out.push((k.value(i).to_string(), total.value(i), n.value(i), kind));
        }
    }
    out
}

#[test]
fn each_batch_emits_the_current_value_of_every_key_it_changed_once() {
    let mut op = aggregate(false);
    let mut out = Vec::new();
    op.process_batch(batch(&[("a", 1), ("b", 2), ("a", 3)]), &ctx(), &mut out).expect("batch 1");
    assert_eq!(rows(&out), vec![("a".into(), 4, 2, RowKind::Insert), ("b".into(), 2, 1, RowKind::Insert)]);
    out.clear();
    op.process_batch(batch(&[("c", 5), ("a", 10), ("a", 1)]), &ctx(), &mut out).expect("batch 2");
    assert_eq!(
        rows(&out),
        vec![("c".into(), 5, 1, RowKind::Insert), ("a".into(), 15, 4, RowKind::UpdateAfter)],
        "one row per changed key, b unchanged is not emitted"
    );
    let mut watermark_out = Vec::new();
    op.handle_watermark(Watermark(1000), &ctx(), &mut watermark_out).expect("watermark");
    assert!(watermark_out.is_empty(), "a watermark emits nothing");
}

#[test]
fn count_distinct_counts_each_value_once() {
    let mut op = aggregate(true);
    let mut out = Vec::new();
    op.process_batch(batch(&[("a", 1), ("a", 1), ("a", 2)]), &ctx(), &mut out).expect("batch 1");
    op.process_batch(batch(&[("a", 2), ("a", 3)]), &ctx(), &mut out).expect("batch 2");
    assert_eq!(
        rows(&out),
        vec![("a".into(), 4, 2, RowKind::Insert), ("a".into(), 9, 3, RowKind::UpdateAfter)]
    );
}

#[test]
fn distinct_emits_each_key_once_as_an_append_only_stream() {
    let schema = input_schema();
    let mut op = UpdatingAggregateOperator::try_new(UpdatingAggregateSpec {
        keys: vec![col("k", &schema).expect("k"), col("v", &schema).expect("v")],
        aggregates: Vec::new(),
        output_schema: Arc::clone(&schema),
        input_schema: Arc::clone(&schema),
        ttl_ms: None,
    })
    .expect("operator");
    let mut out = Vec::new();
    op.process_batch(batch(&[("a", 1), ("a", 1), ("b", 1)]), &ctx(), &mut out).expect("batch 1");
    op.process_batch(batch(&[("a", 1), ("a", 2)]), &ctx(), &mut out).expect("batch 2");
    assert!(out.iter().all(|b| b.schema() == schema), "no row-kind column: insert-only");
    let got: Vec<(String, i64)> = out
        .iter()
        .flat_map(|b| {
            let k = b.column(0).as_string::<i32>().clone();
            let v = b.column(1).as_primitive::<Int64Type>().clone();
            (0..b.num_rows()).map(move |i| (k.value(i).to_string(), v.value(i)))
        })
        .collect();
    assert_eq!(got, vec![("a".into(), 1), ("b".into(), 1), ("a".into(), 2)]);
    assert_eq!(op.name(), "distinct");
}

#[test]
fn state_tables_are_per_key_group_when_keyed_and_per_instance_when_global() {
    assert_eq!(
        aggregate(false).state_tables(),
        vec![
            StateTable { name: "group_accumulators", scope: StateScope::KeyGroups },
            StateTable { name: "group_expiry", scope: StateScope::KeyGroups }
        ]
    );
    let schema = input_schema();
    let count = AggregateExprBuilder::new(count_udaf(), vec![col("v", &schema).expect("v")])
        .schema(Arc::clone(&schema))
        .alias("n")
        .build()
        .expect("count");
    let mut global = UpdatingAggregateOperator::try_new(UpdatingAggregateSpec {
        keys: Vec::new(),
        aggregates: vec![Arc::new(count)],
        output_schema: Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)])),
        input_schema: Arc::clone(&schema),
        ttl_ms: None,
    })
    .expect("operator");
    assert_eq!(
        global.state_tables(),
        vec![
            StateTable { name: "group_accumulators", scope: StateScope::Instance },
            StateTable { name: "group_expiry", scope: StateScope::Instance }
        ]
    );
    let mut out = Vec::new();
    global.process_batch(batch(&[("a", 1), ("b", 2)]), &ctx(), &mut out).expect("batch 1");
    global.process_batch(batch(&[("c", 3)]), &ctx(), &mut out).expect("batch 2");
    let counts: Vec<(i64, RowKind)> = out
        .iter()
        .map(|b| {
            let (logical, kinds) = split_row_kinds(b).expect("split");
            (logical.column(0).as_primitive::<Int64Type>().value(0), kinds.expect("kinds")[0])
        })
        .collect();
    assert_eq!(counts, vec![(2, RowKind::Insert), (3, RowKind::UpdateAfter)]);
}

/// The context of subtask `subtask` of `parallelism`.
fn ctx_of(subtask: usize, parallelism: usize) -> OperatorContext {
    let m = millrace_types::DEFAULT_MAX_PARALLELISM;
    OperatorContext {
        subtask: SubtaskIndex(subtask),
        parallelism,
        key_groups: crate::state::KeyGroupRange::of_subtask(subtask, parallelism, m),
        ..ctx()
    }
}

/// `tables` as restored by subtask `ctx`: keyed tables reduced to its key groups.
fn owned_by(tables: &[TableSnapshot], ctx: &OperatorContext) -> Vec<TableSnapshot> {
    tables
        .iter()
        .map(|t| TableSnapshot {
            name: t.name.clone(),
            batches: t
                .batches
                .iter()
                .map(|b| crate::state::retain_key_groups(b, ctx.key_groups).expect("retain"))
                .filter(|b| b.num_rows() > 0)
                .collect(),
        })
        .collect()
}

#[test]
fn a_key_not_written_for_the_ttl_is_dropped_and_starts_afresh() {
    let mut op = aggregate_with_ttl(false, Some(1_000));
    let mut out = Vec::new();
    op.process_at(batch(&[("a", 1), ("b", 2)]), 10_000, &mut out).expect("t=10.0 s");
    // a written again at 10.9 s: its TTL runs from there; b is not.
    op.process_at(batch(&[("a", 3)]), 10_900, &mut out).expect("t=10.9 s");
    out.clear();
    op.process_at(batch(&[("a", 5), ("b", 7)]), 11_500, &mut out).expect("t=11.5 s");
    assert_eq!(
        rows(&out),
        vec![("a".into(), 9, 3, RowKind::UpdateAfter), ("b".into(), 7, 1, RowKind::Insert)],
        "b expired at 11.0 s: its row starts a new group, emitted as an insert (no delete before it)"
    );
    out.clear();
    op.process_at(batch(&[("a", 1)]), 12_500, &mut out).expect("t=12.5 s");
    assert_eq!(rows(&out), vec![("a".into(), 1, 1, RowKind::Insert)], "expires at exactly its TTL");
    // Expiry itself emits nothing, and the sweep frees the memory.
    let before = op.state_bytes();
    let mut swept = Vec::new();
    op.sweep(20_000);
    assert!(op.groups.is_empty(), "everything expired by 20 s");
    op.handle_watermark(Watermark(0), &ctx(), &mut swept).expect("watermark");
    assert!(swept.is_empty(), "expiry emits nothing");
    assert!(op.state_bytes() < before, "{} bytes after the sweep, {before} before", op.state_bytes());
    assert_eq!(op.heap_bytes, 0);
}

#[test]
fn distinct_with_a_ttl_emits_a_key_again_once_it_expired() {
    let schema = input_schema();
    let mut op = UpdatingAggregateOperator::try_new(UpdatingAggregateSpec {
        keys: vec![col("k", &schema).expect("k")],
        aggregates: Vec::new(),
        output_schema: Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true)])),
        input_schema: Arc::clone(&schema),
        ttl_ms: Some(100),
    })
    .expect("operator");
    let mut out = Vec::new();
    op.process_at(batch(&[("a", 1)]), 1_000, &mut out).expect("first");
    op.process_at(batch(&[("a", 1)]), 1_090, &mut out).expect("seen, refreshes the TTL");
    op.process_at(batch(&[("a", 1)]), 1_180, &mut out).expect("seen");
    op.process_at(batch(&[("a", 1)]), 1_300, &mut out).expect("expired at 1.28 s");
    let keys: usize = out.iter().map(|b| b.num_rows()).sum();
    assert_eq!(keys, 2, "emitted when first seen and again after it expired");
}

#[test]
fn ttl_bookkeeping_survives_a_restore_at_another_parallelism() {
    let mut op = aggregate_with_ttl(false, Some(1_000));
    let mut out = Vec::new();
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    let early: Vec<(&str, i64)> = keys[..20].iter().map(|k| (k.as_str(), 1)).collect();
    let late: Vec<(&str, i64)> = keys[20..].iter().map(|k| (k.as_str(), 1)).collect();
    op.process_at(batch(&early), 10_000, &mut out).expect("first half at 10 s");
    op.process_at(batch(&late), 10_600, &mut out).expect("second half at 10.6 s");
    let tables = op.snapshot_at(10_700, &ctx()).expect("snapshot");
    let expiry = tables.iter().find(|t| t.name == "group_expiry").expect("the expiry table");
    assert_eq!(expiry.batches.iter().map(|b| b.num_rows()).sum::<usize>(), 40);
    // Restored on two subtasks at 11.2 s: the first half expired at 11.0 s, the second has
    // not (11.6 s), wherever each key landed.
    let mut fresh = 0;
    let mut updated = 0;
    for subtask in 0..2 {
        let ctx = ctx_of(subtask, 2);
        let mut restored = aggregate_with_ttl(false, Some(1_000));
        restored.restore_at(owned_by(&tables, &ctx), 11_200, &ctx).expect("restore");
        let mut out = Vec::new();
        let all: Vec<(&str, i64)> = keys.iter().map(|k| (k.as_str(), 1)).collect();
        // Only the keys this subtask owns reach it; feeding all of them is enough here,
        // counting what was restored.
        restored.process_at(batch(&all), 11_200, &mut out).expect("after restore");
        for (key, _, n, kind) in rows(&out) {
            let first_half = keys[..20].contains(&key);
            let owned = restored_owned(&tables, &ctx, &key);
            if !owned {
                continue;
            }
            match kind {
                RowKind::Insert => {
                    assert!(first_half, "{key} had not expired (11.6 s): it must keep its group");
                    assert_eq!(n, 1);
                    fresh += 1;
                }
                RowKind::UpdateAfter => {
                    assert!(!first_half, "{key} expired at 11.0 s: it must start afresh");
                    assert_eq!(n, 2);
                    updated += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!((fresh, updated), (20, 20), "every key restored on exactly one subtask");
}

/// Whether `key`'s group is among the rows `ctx` restores of the accumulator table.
fn restored_owned(tables: &[TableSnapshot], ctx: &OperatorContext, key: &str) -> bool {
    owned_by(tables, ctx).iter().filter(|t| t.name == "group_accumulators").flat_map(|t| &t.batches).any(
        |b| {
            let keys = b.column(1).as_string::<i32>();
            (0..b.num_rows()).any(|i| keys.value(i) == key)
        },
    )
}

#[test]
fn a_snapshot_without_expiry_restores_with_the_ttl_starting_at_the_restore() {
    let mut untimed = aggregate(false);
    let mut out = Vec::new();
    untimed.process_at(batch(&[("a", 1)]), 10_000, &mut out).expect("no TTL");
    let tables = untimed.snapshot_at(10_000, &ctx()).expect("snapshot");
    assert!(
        tables.iter().filter(|t| t.name == "group_expiry").all(|t| t.batches.is_empty()),
        "no TTL, no expiry rows"
    );
    let mut timed = aggregate_with_ttl(false, Some(1_000));
    timed.restore_at(tables, 50_000, &ctx()).expect("restore into a job with a TTL");
    out.clear();
    timed.process_at(batch(&[("a", 1)]), 50_900, &mut out).expect("within the TTL from the restore");
    assert_eq!(rows(&out), vec![("a".into(), 2, 2, RowKind::UpdateAfter)]);
    // And back: a TTL dropped from the job ignores the expiry table.
    let tables = timed.snapshot_at(50_900, &ctx()).expect("snapshot with expiry");
    let mut again = aggregate(false);
    again.restore_at(tables, 99_000, &ctx()).expect("restore without a TTL");
    out.clear();
    again.process_at(batch(&[("a", 1)]), 99_000, &mut out).expect("kept forever");
    assert_eq!(rows(&out), vec![("a".into(), 3, 3, RowKind::UpdateAfter)]);
}

#[test]
fn state_bytes_grow_with_the_keys_and_include_the_accumulators() {
    let mut op = aggregate(false);
    assert_eq!(op.state_bytes(), 0);
    let mut out = Vec::new();
    let keys: Vec<String> = (0..1000).map(|i| format!("key-{i:05}")).collect();
    let rows: Vec<(&str, i64)> = keys.iter().map(|k| (k.as_str(), 1)).collect();
    op.process_at(batch(&rows), 0, &mut out).expect("1000 keys");
    let per_key = op.state_bytes() / 1000;
    eprintln!("updating aggregate (string key, SUM, COUNT): {per_key} bytes per key at 1000 keys");
    // At least the key (9 bytes + the row format's) and two accumulators; a sanity bound
    // above (the map's table grows by doubling).
    assert!((60..1_000).contains(&per_key), "{per_key} bytes per key");
    let before = op.state_bytes();
    op.process_at(batch(&rows), 1, &mut out).expect("the same keys again");
    assert_eq!(op.state_bytes(), before, "updating a SUM and a COUNT allocates nothing");
    let mut distinct = aggregate(true);
    distinct.process_at(batch(&[("a", 1)]), 0, &mut out).expect("one value");
    let one = distinct.state_bytes();
    let many: Vec<(&str, i64)> = (0..1000).map(|v| ("a", v)).collect();
    distinct.process_at(batch(&many), 1, &mut out).expect("1000 distinct values");
    assert!(distinct.state_bytes() > one + 1000 * 8, "COUNT(DISTINCT) counts its values");
    eprintln!("COUNT(DISTINCT) of 1000 BIGINT values: {} bytes", distinct.state_bytes() - one);
}
