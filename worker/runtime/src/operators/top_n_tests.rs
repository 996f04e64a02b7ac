//! Tests of the Top-N operator (its own file to keep the operator's short).

use arrow::array::{Array, AsArray, Int64Array, StringArray};
use arrow::datatypes::{Int64Type, Schema, UInt64Type};
use datafusion::physical_expr::expressions::col;
use millrace_types::changelog::split_row_kinds;
use millrace_types::{SubtaskIndex, Watermark};

use super::*;

fn input_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, true),
        Field::new("v", DataType::Int64, true),
        Field::new("id", DataType::Int64, false),
    ]))
}

/// Rows of (key, value, id).
fn batch(rows: &[(&str, Option<i64>, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        input_schema(),
        vec![
            Arc::new(StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
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

/// `ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC) <= limit` (or without PARTITION BY).
fn top_n(limit: usize, keyed: bool, ties_to_latest: bool) -> TopNOperator {
    let schema = input_schema();
    let mut output: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    output.push(Field::new("rn", DataType::UInt64, false));
    let descending = SortOptions { descending: true, nulls_first: false };
    TopNOperator::try_new(TopNSpec {
        partition_by: if keyed { vec![col("k", &schema).expect("k")] } else { Vec::new() },
        partition_types: if keyed { vec![DataType::Utf8] } else { Vec::new() },
        order_by: vec![(col("v", &schema).expect("v"), descending)],
        limit,
        ties_to_latest,
        input_schema: Arc::clone(&schema),
        output_schema: Arc::new(Schema::new(output)),
    })
    .expect("operator")
}

/// (key, value, id, row number, kind) per output row.
fn rows(batches: &[RecordBatch]) -> Vec<(String, Option<i64>, i64, u64, RowKind)> {
    let mut out = Vec::new();
    for b in batches {
        let (logical, kinds) = split_row_kinds(b).expect("changelog");
        let kinds = kinds.expect("a Top-N emits row kinds");
        let k = logical.column(0).as_string::<i32>();
        let v = logical.column(1).as_primitive::<Int64Type>();
        let id = logical.column(2).as_primitive::<Int64Type>();
        let rn = logical.column(3).as_primitive::<UInt64Type>();
        for (i, kind) in kinds.into_iter().enumerate() {
            let value = (!v.is_null(i)).then(|| v.value(i));
            out.push((k.value(i).to_string(), value, id.value(i), rn.value(i), kind));
        }
    }
    out
}

fn run(
    op: &mut TopNOperator,
    input: &[(&str, Option<i64>, i64)],
) -> Vec<(String, Option<i64>, i64, u64, RowKind)> {
    let mut out = Vec::new();
    op.process_batch(batch(input), &ctx(), &mut out).expect("processes");
    rows(&out)
}

use RowKind::{Insert as I, UpdateAfter as U};

#[test]
fn each_batch_emits_every_changed_position_once_with_its_row_number() {
    let mut op = top_n(2, true, false);
    // a: 5 then 7 in one batch: position 1 is 7, position 2 is 5, both new.
    assert_eq!(
        run(&mut op, &[("a", Some(5), 1), ("a", Some(7), 2), ("b", Some(1), 3)]),
        vec![("a".into(), Some(7), 2, 1, I), ("a".into(), Some(5), 1, 2, I), ("b".into(), Some(1), 3, 1, I),]
    );
    // 3 ranks past the top 2 of a: nothing. 6 takes position 2 (5 drops out).
    assert_eq!(run(&mut op, &[("a", Some(3), 4)]), vec![]);
    assert_eq!(run(&mut op, &[("a", Some(6), 5)]), vec![("a".into(), Some(6), 5, 2, U)]);
    // 9 takes position 1: both positions move.
    assert_eq!(
        run(&mut op, &[("a", Some(9), 6)]),
        vec![("a".into(), Some(9), 6, 1, U), ("a".into(), Some(7), 2, 2, U)]
    );
    // b's second position fills for the first time: +I for it only.
    assert_eq!(run(&mut op, &[("b", Some(0), 7)]), vec![("b".into(), Some(0), 7, 2, I)]);
}

#[test]
fn equal_sort_keys_keep_arrival_order_and_nulls_sort_last_when_descending() {
    let mut op = top_n(3, true, false);
    let out = run(&mut op, &[("a", Some(4), 1), ("a", None, 2), ("a", Some(4), 3)]);
    let ranked: Vec<(i64, u64)> = out.iter().map(|r| (r.2, r.3)).collect();
    assert_eq!(ranked, vec![(1, 1), (3, 2), (2, 3)]);
    // Another 4 ranks after both earlier 4s, before the NULL.
    let out = run(&mut op, &[("a", Some(4), 4)]);
    assert_eq!(out, vec![("a".into(), Some(4), 4, 3, U)]);
}

#[test]
fn deduplication_keeping_the_last_row_lets_the_later_of_equal_rows_win() {
    let mut op = top_n(1, true, true);
    assert_eq!(run(&mut op, &[("a", Some(4), 1)]), vec![("a".into(), Some(4), 1, 1, I)]);
    assert_eq!(run(&mut op, &[("a", Some(4), 2)]), vec![("a".into(), Some(4), 2, 1, U)]);
    assert_eq!(run(&mut op, &[("a", Some(3), 3)]), vec![]);
}

#[test]
fn a_global_top_n_ranks_every_row_together() {
    let mut op = top_n(2, false, false);
    let out = run(&mut op, &[("a", Some(1), 1), ("b", Some(3), 2), ("c", Some(2), 3)]);
    let ranked: Vec<(i64, u64, RowKind)> = out.iter().map(|r| (r.2, r.3, r.4)).collect();
    assert_eq!(ranked, vec![(2, 1, I), (3, 2, I)]);
}

#[test]
fn a_restored_top_n_continues_as_the_uninterrupted_one() {
    let first: Vec<(&str, Option<i64>, i64)> =
        (0..40).map(|i| (["a", "b", "c"][i % 3], Some((i as i64 * 37) % 11), i as i64)).collect();
    let second: Vec<(&str, Option<i64>, i64)> =
        (40..80).map(|i| (["a", "b", "c", "d"][i % 4], Some((i as i64 * 13) % 11), i as i64)).collect();
    let mut whole = top_n(3, true, false);
    run(&mut whole, &first);
    let expected = run(&mut whole, &second);

    let mut before = top_n(3, true, false);
    run(&mut before, &first);
    let tables = before.snapshot_state(&ctx()).expect("snapshot");
    assert_eq!(tables[0].batches.iter().map(|b| b.num_rows()).sum::<usize>(), 9, "3 keys × 3 rows");
    let mut after = top_n(3, true, false);
    after.restore_state(tables, &ctx()).expect("restores");
    assert_eq!(after.state_bytes(), before.state_bytes());
    assert_eq!(run(&mut after, &second), expected);
}

#[test]
fn a_restored_table_with_too_many_rows_of_a_key_is_refused() {
    let mut op = top_n(2, true, false);
    run(&mut op, &[("a", Some(1), 1), ("a", Some(2), 2)]);
    let tables = op.snapshot_state(&ctx()).expect("snapshot");
    let mut smaller = top_n(1, true, false);
    let err = smaller.restore_state(tables, &ctx()).expect_err("2 rows for a Top-1");
    assert!(err.to_string().contains("top_n_rows"), "{err}");
}
