//! A join stage in the executor: two sources, each hash-exchanged on the key into one stage
//! whose first operator receives each input's rows as its own input, with the watermark the
//! minimum of both inputs' (a window closes only when both have passed it).

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, Int64Array, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::col;
use millrace_runtime::operators::{JoinKind, JoinSpec, JoinType};
use millrace_runtime::{
    Branch, Dataflow, DataflowIo, Exchange, OperatorSpec, RunOptions, RuntimeMetrics, SourceSpec, Stage,
    TimeAttribute, run_dataflow,
};
use millrace_types::{SinkMessage, SourceEvent, SourcePartition};
use tokio::sync::mpsc;

fn schema(prefix: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(format!("{prefix}k"), DataType::Int64, false),
        Field::new(format!("{prefix}v"), DataType::Int64, false),
        Field::new(format!("{prefix}end"), DataType::Timestamp(TimeUnit::Millisecond, None), false),
    ]))
}

fn batch(prefix: &str, k: i64, v: i64, end: i64) -> RecordBatch {
    RecordBatch::try_new(
        schema(prefix),
        vec![
            Arc::new(Int64Array::from(vec![k])),
            Arc::new(Int64Array::from(vec![v])),
            Arc::new(TimestampMillisecondArray::from(vec![end])),
        ],
    )
    .expect("batch")
}

fn source(table: &str, prefix: &str) -> SourceSpec {
    SourceSpec {
        table: table.into(),
        schema: schema(prefix),
        time: TimeAttribute::EventTime { column: 2, max_out_of_orderness_ms: 0, idle_timeout_ms: None },
    }
}

/// A full outer window join of `l` and `r` on (k, end), each hash-exchanged on it.
fn dataflow() -> Dataflow {
    let keys = |prefix: &str| -> Vec<Arc<dyn PhysicalExpr>> {
        let s = schema(prefix);
        vec![col(&format!("{prefix}k"), &s).expect("k"), col(&format!("{prefix}end"), &s).expect("end")]
    };
    let fields: Vec<Field> = schema("l")
        .fields()
        .iter()
        .chain(schema("r").fields())
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    let output = Arc::new(Schema::new(fields));
    let join = JoinSpec {
        join_type: JoinType::Full,
        kind: JoinKind::Window { left_end: 2, right_end: 2 },
        left_schema: schema("l"),
        right_schema: schema("r"),
        left_keys: keys("l"),
        right_keys: keys("r"),
        filter: None,
        output_schema: Arc::clone(&output),
    };
    Dataflow {
        source: source("l", "l"),
        stages: vec![
            Stage { input: Exchange::Forward, operators: Vec::new() },
            Stage { input: Exchange::Hash(keys("l")), operators: vec![OperatorSpec::Join(join)] },
        ],
        output_schema: output,
        late_output: None,
        changelog: None,
        branches: vec![Branch {
            source: source("r", "r"),
            stages: vec![Stage { input: Exchange::Forward, operators: Vec::new() }],
            into: 1,
            exchange: Exchange::Hash(keys("r")),
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_join_stage_fires_only_when_both_inputs_have_passed_the_window() {
    let flow = dataflow();
    assert_eq!(flow.stage_count(), 3);
    assert_eq!(flow.upstreams(1), vec![0, 2]);
    let parallelism = 2;
    // Sources: the left's two instances, then the right's.
    let mut senders = Vec::new();
    let mut sources = Vec::new();
    for _ in 0..2 * parallelism {
        let (tx, rx) = mpsc::channel(16);
        senders.push(tx);
        sources.push(rx);
    }
    let mut sinks = Vec::new();
    let mut outputs = Vec::new();
    for _ in 0..parallelism {
        let (tx, rx) = mpsc::channel(16);
        sinks.push(tx);
        outputs.push(rx);
    }
    let options = RunOptions { parallelism, ..RunOptions::default() };
    let metrics = RuntimeMetrics::default();
    let run = tokio::spawn(async move {
        run_dataflow(
            &flow,
            DataflowIo { sources, sinks, late: Vec::new(), checkpoints: None },
            &options,
            &metrics,
        )
        .await
    });
    let p0 = SourcePartition(0);
    // Instance 1 of each source reads nothing.
    for idle in [&senders[1], &senders[3]] {
        idle.send(SourceEvent::Assigned(Vec::new())).await.expect("assigned");
        idle.send(SourceEvent::End { positions: Default::default() }).await.expect("end");
    }
    // The right input runs ahead to 50 s; the window [0, 10 s) still waits for the left.
    let right = &senders[2];
    right.send(SourceEvent::Assigned(vec![p0])).await.expect("assigned");
    right.send(SourceEvent::Batch { partition: p0, batch: batch("r", 1, 100, 10_000) }).await.expect("batch");
    right.send(SourceEvent::Batch { partition: p0, batch: batch("r", 2, 200, 50_000) }).await.expect("batch");
    right.send(SourceEvent::End { positions: Default::default() }).await.expect("end");
    let left = &senders[0];
    left.send(SourceEvent::Assigned(vec![p0])).await.expect("assigned");
    left.send(SourceEvent::Batch { partition: p0, batch: batch("l", 1, 10, 10_000) }).await.expect("batch");
    left.send(SourceEvent::End { positions: Default::default() }).await.expect("end");
    drop(senders);

    let mut pairs = Vec::new();
    for mut output in outputs {
        while let Some(message) =
            tokio::time::timeout(Duration::from_secs(30), output.recv()).await.expect("output within 30 s")
        {
            let SinkMessage::Batch(b) = message else { continue };
            let (l, r) = (b.column(1).as_primitive::<Int64Type>(), b.column(4).as_primitive::<Int64Type>());
            for i in 0..b.num_rows() {
                pairs.push((
                    if l.is_null(i) { -1 } else { l.value(i) },
                    if r.is_null(i) { -1 } else { r.value(i) },
                ));
            }
        }
    }
    run.await.expect("executor task").expect("dataflow succeeds");
    pairs.sort_unstable();
    // Had the join fired on the right input's watermark alone, key 1's window would have
    // closed before the left row came: (-1, 100) and a late (10, -1).
    assert_eq!(pairs, vec![(-1, 200), (10, 100)]);
}
