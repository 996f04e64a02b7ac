use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use datafusion_physical_expr::PhysicalExpr;
use datafusion_physical_expr::expressions::Column;
use millrace_types::{SubtaskIndex, Watermark};
use prometheus_client::metrics::counter::Counter;

use super::*;
use crate::state::KeyGroupRange;

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

/// (k, v, ts) on each side.
fn side_schema(prefix: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(format!("{prefix}k"), DataType::Int64, true),
        Field::new(format!("{prefix}v"), DataType::Int64, false),
        Field::new(format!("{prefix}ts"), ts(), false),
    ]))
}

fn output_schema(left: &SchemaRef, right: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> =
        left.fields().iter().chain(right.fields()).map(|f| f.as_ref().clone().with_nullable(true)).collect();
    Arc::new(Schema::new(fields))
}

fn spec(join_type: JoinType, kind: JoinKind) -> JoinSpec {
    let (left, right) = (side_schema("l"), side_schema("r"));
    let key = |name: &str| vec![Arc::new(Column::new(name, 0)) as Arc<dyn PhysicalExpr>];
    JoinSpec {
        join_type,
        kind,
        output_schema: output_schema(&left, &right),
        left_schema: left,
        right_schema: right,
        left_keys: key("lk"),
        right_keys: key("rk"),
        filter: None,
    }
}

fn interval(join_type: JoinType) -> JoinSpec {
    // l.ts BETWEEN r.ts - 1000 AND r.ts + 2000
    spec(join_type, JoinKind::Interval { left_time: 2, right_time: 2, lower_ms: -1000, upper_ms: 2000 })
}

fn ctx(first: u32, last: u32, parallelism: usize) -> OperatorContext {
    OperatorContext {
        subtask: SubtaskIndex(0),
        parallelism,
        max_parallelism: 128,
        key_groups: KeyGroupRange { first, last },
        watermark: Watermark::MIN,
        late_records: Counter::default(),
    }
}

fn rows(prefix: &str, rows: &[(Option<i64>, i64, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        side_schema(prefix),
        vec![
            Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
            Arc::new(TimestampMillisecondArray::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
        ],
    )
    .expect("test input is valid")
}

/// (left v, right v) of every output row, NULL as -1, sorted.
fn pairs(out: &[RecordBatch]) -> Vec<(i64, i64)> {
    let mut pairs = Vec::new();
    for batch in out {
        let (l, r) =
            (batch.column(1).as_primitive::<Int64Type>(), batch.column(4).as_primitive::<Int64Type>());
        for i in 0..batch.num_rows() {
            let get =
                |a: &arrow::array::PrimitiveArray<Int64Type>| if a.is_null(i) { -1 } else { a.value(i) };
            pairs.push((get(l), get(r)));
        }
    }
    pairs.sort();
    pairs
}

struct Run {
    op: JoinOperator,
    ctx: OperatorContext,
    out: Vec<RecordBatch>,
}

impl Run {
    fn new(spec: JoinSpec) -> Self {
        Self {
            op: JoinOperator::try_new(spec).expect("test input is valid"),
            ctx: ctx(0, 127, 1),
            out: Vec::new(),
        }
    }
    fn left(&mut self, r: &[(Option<i64>, i64, i64)]) {
        self.op.process_batch(rows("l", r), &self.ctx, &mut self.out).expect("test input is valid");
    }
    fn right(&mut self, r: &[(Option<i64>, i64, i64)]) {
        self.op.process_input(1, rows("r", r), &self.ctx, &mut self.out).expect("test input is valid");
    }
    fn watermark(&mut self, w: i64) {
        self.ctx.watermark = Watermark(w);
        self.op.handle_watermark(Watermark(w), &self.ctx, &mut self.out).expect("test input is valid");
    }
    fn take(&mut self) -> Vec<(i64, i64)> {
        pairs(&std::mem::take(&mut self.out))
    }
}

#[test]
fn interval_inner_emits_each_pair_once_within_the_bounds() {
    let mut run = Run::new(interval(JoinType::Inner));
    run.left(&[(Some(1), 10, 5_000), (Some(2), 20, 5_000)]);
    // r at 3_000: l in [2_000, 5_000] matches 10; r at 7_500: l in [6_500, 9_500] does not.
    run.right(&[(Some(1), 100, 3_000), (Some(1), 101, 7_500), (Some(3), 102, 5_000)]);
    assert_eq!(run.take(), vec![(10, 100)]);
    // A later left row meets the held right rows.
    run.left(&[(Some(1), 11, 7_000)]);
    assert_eq!(run.take(), vec![(11, 101)]);
    run.watermark(i64::MAX);
    assert!(run.take().is_empty(), "inner joins pad nothing");
}

#[test]
fn interval_state_expires_with_the_watermark() {
    let mut run = Run::new(interval(JoinType::Inner));
    run.left(&[(Some(1), 10, 5_000)]);
    run.right(&[(Some(1), 100, 1_000)]);
    // The left row can meet right rows up to 6_000, the right row left rows up to 3_000.
    run.watermark(2_999);
    assert_eq!((run.op.left.held(), run.op.right.held()), (1, 1));
    run.watermark(3_000);
    assert_eq!((run.op.left.held(), run.op.right.held()), (1, 0));
    run.watermark(5_999);
    assert_eq!((run.op.left.held(), run.op.right.held()), (1, 0));
    run.watermark(6_000);
    assert_eq!((run.op.left.held(), run.op.right.held()), (0, 0));
    assert!(run.take().is_empty());
}

#[test]
fn interval_outer_pads_unmatched_rows_once_their_interval_has_passed() {
    let mut run = Run::new(interval(JoinType::Full));
    run.left(&[(Some(1), 10, 5_000), (Some(2), 20, 5_000), (None, 30, 5_000)]);
    run.right(&[(Some(1), 100, 4_000), (Some(9), 900, 4_000)]);
    assert_eq!(run.take(), vec![(10, 100)]);
    run.watermark(5_000);
    assert!(run.take().is_empty(), "nothing has expired yet");
    // Left rows expire at 6_000, right rows at 6_000.
    run.watermark(6_000);
    assert_eq!(run.take(), vec![(-1, 900), (20, -1), (30, -1)]);
    // A row whose interval is already past: joined with nothing held, padded, late.
    run.left(&[(Some(4), 40, 1_000)]);
    assert_eq!(run.take(), vec![(40, -1)]);
    assert_eq!(run.ctx.late_records.get(), 1);
}

#[test]
fn left_and_right_outer_pad_only_their_side() {
    for (join_type, expected) in
        [(JoinType::Left, vec![(20, -1)]), (JoinType::Right, vec![(-1, 900)]), (JoinType::Inner, vec![])]
    {
        let mut run = Run::new(interval(join_type));
        run.left(&[(Some(2), 20, 5_000)]);
        run.right(&[(Some(9), 900, 4_000)]);
        run.watermark(i64::MAX);
        assert_eq!(run.take(), expected, "{join_type:?}");
    }
}

#[test]
fn the_residual_condition_decides_matches_and_padding() {
    let mut spec = interval(JoinType::Left);
    // l.v < r.v - 85
    spec.filter = Some(Arc::new(datafusion_physical_expr::expressions::BinaryExpr::new(
        Arc::new(Column::new("lv", 1)),
        datafusion_expr::Operator::Lt,
        Arc::new(datafusion_physical_expr::expressions::BinaryExpr::new(
            Arc::new(Column::new("rv", 4)),
            datafusion_expr::Operator::Minus,
            Arc::new(datafusion_physical_expr::expressions::Literal::new(
                datafusion_common::ScalarValue::Int64(Some(85)),
            )),
        )),
    )));
    let mut run = Run::new(spec);
    run.left(&[(Some(1), 10, 5_000), (Some(1), 20, 5_000)]);
    run.right(&[(Some(1), 100, 5_000)]);
    assert_eq!(run.take(), vec![(10, 100)]);
    run.watermark(i64::MAX);
    assert_eq!(run.take(), vec![(20, -1)], "a pair the condition refused is no match");
}

fn window(join_type: JoinType) -> JoinSpec {
    // The window end is the `ts` column; the key is k and the end.
    let mut spec = spec(join_type, JoinKind::Window { left_end: 2, right_end: 2 });
    spec.left_keys.push(Arc::new(Column::new("lts", 2)));
    spec.right_keys.push(Arc::new(Column::new("rts", 2)));
    spec
}

#[test]
fn window_join_emits_when_the_window_closes_and_drops_late_rows() {
    let mut run = Run::new(window(JoinType::Full));
    run.left(&[(Some(1), 10, 10_000), (Some(1), 11, 10_000), (Some(2), 20, 10_000), (Some(1), 12, 20_000)]);
    run.right(&[(Some(1), 100, 10_000), (Some(3), 300, 10_000), (Some(1), 101, 20_000)]);
    assert!(run.take().is_empty(), "nothing before the window closes");
    run.watermark(9_999);
    assert_eq!(run.take(), vec![(-1, 300), (10, 100), (11, 100), (20, -1)]);
    run.left(&[(Some(1), 13, 10_000)]);
    assert_eq!(run.ctx.late_records.get(), 1, "the window [0, 10s) has closed");
    run.watermark(i64::MAX);
    assert_eq!(run.take(), vec![(12, 101)]);
}

#[test]
fn regular_inner_join_emits_on_arrival_and_forgets_after_the_ttl() {
    let mut run = Run::new(spec(JoinType::Inner, JoinKind::Regular { ttl_ms: None }));
    run.left(&[(Some(1), 10, 0), (Some(2), 20, 0)]);
    run.right(&[(Some(1), 100, 0), (Some(1), 101, 0), (None, 102, 0)]);
    run.left(&[(Some(1), 11, 0)]);
    assert_eq!(run.take(), vec![(10, 100), (10, 101), (11, 100), (11, 101)]);

    let mut run = Run::new(spec(JoinType::Inner, JoinKind::Regular { ttl_ms: Some(0) }));
    run.left(&[(Some(1), 10, 0)]);
    // A TTL of 0 ms: the row expires at the wall-clock millisecond it was stored, so the next
    // batch finds it gone.
    run.right(&[(Some(1), 100, 0)]);
    assert_eq!(run.op.left.held(), 0);
    assert!(run.take().is_empty());
    assert!(matches!(
        JoinOperator::try_new(spec(JoinType::Left, JoinKind::Regular { ttl_ms: None })),
        Err(OperatorError::Invalid(_))
    ));
}

#[test]
fn snapshot_restores_at_another_parallelism_with_the_same_results() {
    let feed = |run: &mut Run| {
        run.left(&[(Some(1), 10, 5_000), (Some(2), 20, 5_000), (Some(3), 30, 5_000), (Some(4), 40, 5_000)]);
        run.right(&[(Some(1), 100, 4_500)]);
        run.watermark(4_000);
    };
    let finish_right: &[(Option<i64>, i64, i64)] =
        &[(Some(2), 200, 5_500), (Some(3), 300, 5_500), (Some(7), 700, 5_500)];
    let mut reference = Run::new(interval(JoinType::Full));
    feed(&mut reference);
    let mut snapshot = reference.op.snapshot_state(&reference.ctx).expect("test input is valid");
    reference.take();
    reference.right(finish_right);
    reference.watermark(i64::MAX);
    let expected = reference.take();
    // 10 met 100 before the snapshot: it stays matched, so it is not padded.
    assert_eq!(expected, vec![(-1, 700), (20, 200), (30, 300), (40, -1)]);

    // Restore into two subtasks, each fed only its key groups' rows.
    let mut got = Vec::new();
    for subtask in 0..2 {
        let range = KeyGroupRange::of_subtask(subtask, 2, 128);
        let mut run = Run::new(interval(JoinType::Full));
        run.ctx = ctx(range.first, range.last, 2);
        let tables: Vec<TableSnapshot> = snapshot
            .iter_mut()
            .map(|t| TableSnapshot {
                name: t.name.clone(),
                batches: t
                    .batches
                    .iter()
                    .map(|b| crate::state::retain_key_groups(b, range).expect("test input is valid"))
                    .collect(),
            })
            .collect();
        run.op.restore_state(tables, &run.ctx).expect("test input is valid");
        let batch = rows("r", finish_right);
        let keys = [batch.column(0).clone()];
        let groups = crate::state::key_groups_of(&keys, batch.num_rows(), 128).expect("test input is valid");
        let mine: Vec<u32> =
            (0..batch.num_rows() as u32).filter(|i| range.contains(groups[*i as usize])).collect();
        let mine = arrow::compute::take_record_batch(&batch, &arrow::array::UInt32Array::from(mine))
            .expect("test input is valid");
        run.op.process_input(1, mine, &run.ctx, &mut run.out).expect("test input is valid");
        run.watermark(i64::MAX);
        got.extend(run.take());
    }
    got.sort();
    assert_eq!(got, expected);
}

#[test]
fn a_few_long_held_rows_do_not_keep_their_batches_alive() {
    // Each batch: one row that waits long (ts 1000 s), and many that expire at 6 s.
    let mut run = Run::new(interval(JoinType::Inner));
    for b in 0..20i64 {
        let mut batch: Vec<(Option<i64>, i64, i64)> =
            (0..8_191).map(|i| (Some(i), b * 10_000 + i, 5_000)).collect();
        batch.push((Some(-b), b, 1_000_000));
        run.left(&batch);
    }
    assert_eq!(run.op.left.kept(), 20 * 8_192);
    run.watermark(6_000);
    assert_eq!(run.op.left.held(), 20);
    assert_eq!(run.op.left.kept(), 20, "the 20 held rows were copied out of their batches");
    // They still join after the copy.
    run.right(&[(Some(-7), 700, 1_000_000)]);
    assert_eq!(run.take(), vec![(7, 700)]);
}

#[test]
fn state_bytes_follow_the_held_rows_and_their_batches() {
    let mut run = Run::new(interval(JoinType::Inner));
    assert_eq!(run.op.state_bytes(), 0);
    let batch: Vec<(Option<i64>, i64, i64)> = (0..1_000).map(|i| (Some(i), i, 5_000)).collect();
    run.left(&batch);
    let held = run.op.state_bytes();
    eprintln!("interval join, 3 BIGINT columns: {} bytes per held row at 1000 rows", held / 1000);
    // Three Int64 columns (8 bytes each) per row at least, plus the indexes.
    assert!(held >= 1_000 * 24, "{held} bytes for 1000 held rows");
    assert!(held < 1_000 * 1_000, "{held} bytes for 1000 held rows");
    run.left(&batch);
    let peak = run.op.state_bytes();
    assert!(peak > held, "a second batch is counted");
    run.watermark(6_000);
    assert_eq!(run.op.left.held(), 0);
    // What is left is the key map's table, which keeps its capacity.
    let left = run.op.state_bytes();
    assert!(left < peak / 2, "{left} bytes after every row expired, {peak} before");
}
