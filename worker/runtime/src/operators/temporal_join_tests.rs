use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use datafusion_physical_expr::PhysicalExpr;
use datafusion_physical_expr::expressions::Column;
use millrace_types::{SubtaskIndex, Watermark};
use prometheus_client::metrics::counter::Counter;

use super::*;
use crate::state::KeyGroupRange;

/// orders (currency, amount, ts) ⋈ rates (currency, rate, ts).
fn schema(prefix: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(format!("{prefix}k"), DataType::Int64, true),
        Field::new(format!("{prefix}v"), DataType::Int64, false),
        Field::new(format!("{prefix}ts"), DataType::Timestamp(TimeUnit::Millisecond, None), false),
    ]))
}

fn spec(join_type: JoinType) -> JoinSpec {
    let (left, right) = (schema("l"), schema("r"));
    let fields: Vec<Field> =
        left.fields().iter().chain(right.fields()).map(|f| f.as_ref().clone().with_nullable(true)).collect();
    let key = |name: &str| vec![Arc::new(Column::new(name, 0)) as Arc<dyn PhysicalExpr>];
    JoinSpec {
        join_type,
        kind: JoinKind::Temporal { left_time: 2, right_time: 2 },
        left_schema: left,
        right_schema: right,
        left_keys: key("lk"),
        right_keys: key("rk"),
        filter: None,
        output_schema: Arc::new(Schema::new(fields)),
    }
}

fn rows(prefix: &str, rows: &[(Option<i64>, i64, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        schema(prefix),
        vec![
            Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
            Arc::new(TimestampMillisecondArray::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
        ],
    )
    .expect("valid rows")
}

struct Run {
    op: TemporalJoinOperator,
    ctx: OperatorContext,
    out: Vec<RecordBatch>,
}

impl Run {
    fn new(join_type: JoinType) -> Self {
        let ctx = OperatorContext {
            subtask: SubtaskIndex(0),
            parallelism: 1,
            max_parallelism: 128,
            key_groups: KeyGroupRange { first: 0, last: 127 },
            watermark: Watermark::MIN,
            late_records: Counter::default(),
        };
        Self {
            op: TemporalJoinOperator::try_new(spec(join_type)).expect("a temporal join"),
            ctx,
            out: Vec::new(),
        }
    }
    fn order(&mut self, r: &[(Option<i64>, i64, i64)]) {
        self.op.process_batch(rows("l", r), &self.ctx, &mut self.out).expect("order");
    }
    fn rate(&mut self, r: &[(Option<i64>, i64, i64)]) {
        self.op.process_input(1, rows("r", r), &self.ctx, &mut self.out).expect("rate");
    }
    fn watermark(&mut self, w: i64) {
        self.ctx.watermark = Watermark(w);
        self.op.handle_watermark(Watermark(w), &self.ctx, &mut self.out).expect("watermark");
    }
    /// (order value, rate value or -1), in output order.
    fn take(&mut self) -> Vec<(i64, i64)> {
        let mut pairs = Vec::new();
        for b in std::mem::take(&mut self.out) {
            let (l, r) = (b.column(1).as_primitive::<Int64Type>(), b.column(4).as_primitive::<Int64Type>());
            for i in 0..b.num_rows() {
                pairs.push((l.value(i), if r.is_null(i) { -1 } else { r.value(i) }));
            }
        }
        pairs.sort_unstable();
        pairs
    }
}

#[test]
fn each_order_meets_the_rate_valid_at_its_time_once_the_watermark_passes_it() {
    let mut run = Run::new(JoinType::Left);
    run.rate(&[(Some(1), 100, 1_000), (Some(1), 110, 5_000), (Some(2), 200, 3_000)]);
    run.order(&[(Some(1), 10, 2_000), (Some(1), 11, 6_000), (Some(2), 20, 2_000), (Some(3), 30, 2_000)]);
    // A later version, out of order, that is valid for the order at 6 s.
    run.rate(&[(Some(1), 105, 5_500)]);
    assert!(run.take().is_empty(), "orders wait for the watermark");
    run.watermark(2_000);
    // 10 at 2 s: rate 100 (from 1 s); 20 at 2 s: no rate of key 2 yet (from 3 s); 30: none.
    assert_eq!(run.take(), vec![(10, 100), (20, -1), (30, -1)]);
    run.watermark(6_000);
    assert_eq!(run.take(), vec![(11, 105)]);
    // Superseded versions are gone: only the newest at or before 6 s, per key.
    assert_eq!(run.op.right.held(), 2);
    // An order behind the watermark meets the versions held, and is late.
    run.order(&[(Some(1), 12, 5_800)]);
    assert_eq!(run.take(), vec![(12, 105)]);
    assert_eq!(run.ctx.late_records.get(), 1);
}

#[test]
fn an_inner_temporal_join_drops_orders_without_a_valid_rate() {
    let mut run = Run::new(JoinType::Inner);
    run.rate(&[(Some(1), 100, 1_000)]);
    run.order(&[(Some(1), 10, 500), (Some(1), 11, 1_000), (None, 12, 1_000)]);
    run.watermark(i64::MAX);
    assert_eq!(run.take(), vec![(11, 100)]);
}

#[test]
fn waiting_orders_and_versions_survive_a_snapshot() {
    let mut run = Run::new(JoinType::Left);
    run.rate(&[(Some(1), 100, 1_000), (Some(2), 200, 1_000)]);
    run.order(&[(Some(1), 10, 3_000), (Some(2), 20, 3_000)]);
    run.watermark(1_500);
    let snapshot = run.op.snapshot_state(&run.ctx).expect("snapshot");
    let mut restored = Run::new(JoinType::Left);
    restored.op.restore_state(snapshot, &restored.ctx).expect("restore");
    restored.rate(&[(Some(1), 110, 2_000)]);
    restored.watermark(3_000);
    assert_eq!(restored.take(), vec![(10, 110), (20, 200)]);
}
