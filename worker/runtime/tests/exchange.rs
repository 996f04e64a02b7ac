//! The executor spread over two "processes" (two placements, each with its own exchange
//! server on loopback) in one test: a keyed exchange at parallelism 4 with slots {0, 1} in
//! one and {2, 3} in the other sends every row to the one subtask owning its key, across
//! the network where that subtask is remote; end of input crosses too (every sink ends);
//! and a peer that disappears mid-stream fails the other side's run with a network error.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, Int64Array};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::physical_expr::expressions::col;
use millrace_runtime::network::{ExchangeServer, ReceiverOptions, SenderOptions};
use millrace_runtime::{
    Dataflow, DataflowIo, Exchange, ExchangePlacement, RunOptions, RuntimeError, RuntimeMetrics, SourceSpec,
    Stage, TimeAttribute, run_dataflow,
};
use millrace_types::{SinkMessage, SourceEvent, SourcePartition};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const PARALLELISM: usize = 4;
const DEADLINE: Duration = Duration::from_secs(30);

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
    ]))
}

fn batch(rows: &[(i64, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
        ],
    )
    .expect("batch")
}

fn keyed() -> Dataflow {
    Dataflow {
        source: SourceSpec { table: "t".into(), schema: schema(), time: TimeAttribute::None },
        stages: vec![
            Stage { input: Exchange::Forward, operators: Vec::new() },
            Stage { input: Exchange::Hash(vec![col("k", &schema()).expect("k")]), operators: Vec::new() },
        ],
        output_schema: schema(),
        late_output: None,
        changelog: None,
        branches: Vec::new(),
    }
}

/// One process's part: its sources' senders, its sinks' receivers (by subtask), its run.
struct Part {
    sources: Vec<mpsc::Sender<SourceEvent>>,
    sinks: Vec<(usize, mpsc::Receiver<SinkMessage>)>,
    run: JoinHandle<Result<(), RuntimeError>>,
}

async fn servers() -> (Arc<ExchangeServer>, Arc<ExchangeServer>) {
    let options =
        ReceiverOptions { pending_channel_wait: Duration::from_secs(10), ..ReceiverOptions::default() };
    let a = ExchangeServer::bind("127.0.0.1:0", "job-1", options.clone()).await.expect("bind a");
    let b = ExchangeServer::bind("127.0.0.1:0", "job-1", options).await.expect("bind b");
    (Arc::new(a), Arc::new(b))
}

fn start(slots: &[usize], server: Arc<ExchangeServer>, peers: HashMap<usize, String>) -> Part {
    let placement = ExchangePlacement {
        local_slots: slots.iter().copied().collect(),
        peers,
        job_id: "job-1".into(),
        server,
        sender_options: SenderOptions::default(),
    };
    let (mut sources, mut receivers, mut sinks, mut outputs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for &slot in slots {
        let (tx, rx) = mpsc::channel(4);
        sources.push(tx);
        receivers.push(rx);
        let (tx, rx) = mpsc::channel(4);
        sinks.push(tx);
        outputs.push((slot, rx));
    }
    let options = RunOptions {
        parallelism: PARALLELISM,
        placement: Some(Arc::new(placement)),
        ..RunOptions::default()
    };
    let run = tokio::spawn(async move {
        let io = DataflowIo { sources: receivers, sinks, late: Vec::new(), checkpoints: None };
        run_dataflow(&keyed(), io, &options, &RuntimeMetrics::default()).await
    });
    Part { sources, sinks: outputs, run }
}

fn two_parts(a: Arc<ExchangeServer>, b: Arc<ExchangeServer>) -> (Part, Part) {
    let (addr_a, addr_b) = (a.local_addr().to_string(), b.local_addr().to_string());
    let peers_of_a = HashMap::from([(2, addr_b.clone()), (3, addr_b)]);
    let peers_of_b = HashMap::from([(0, addr_a.clone()), (1, addr_a)]);
    (start(&[0, 1], a, peers_of_a), start(&[2, 3], b, peers_of_b))
}

/// (k, v) rows.
type Rows = Vec<(i64, i64)>;

/// Reads a sink until it ends; its rows.
async fn drain(mut sink: mpsc::Receiver<SinkMessage>) -> Rows {
    let mut rows = Vec::new();
    while let Some(message) =
        tokio::time::timeout(DEADLINE, sink.recv()).await.expect("the sink ended in time")
    {
        if let SinkMessage::Batch(batch) = message {
            let k = batch.column(0).as_primitive::<Int64Type>();
            let v = batch.column(1).as_primitive::<Int64Type>();
            rows.extend((0..batch.num_rows()).map(|i| (k.value(i), v.value(i))));
        }
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keyed_exchange_across_two_processes_keeps_every_row_and_ends() {
    let (a, b) = servers().await;
    let (part_a, part_b) = two_parts(a, b);
    // Sinks are read while the input goes in (they backpressure the sources otherwise).
    let drains: Vec<(usize, JoinHandle<Rows>)> = part_a
        .sinks
        .into_iter()
        .chain(part_b.sinks)
        .map(|(subtask, sink)| (subtask, tokio::spawn(drain(sink))))
        .collect();
    let mut sent = BTreeSet::new();
    for (i, source) in part_a.sources.iter().chain(&part_b.sources).enumerate() {
        source.send(SourceEvent::Assigned(vec![SourcePartition(i as i32)])).await.expect("assigned");
        for round in 0..20i64 {
            let rows: Vec<(i64, i64)> =
                (0..50).map(|j| ((j * 7 + round) % 23, i as i64 * 10_000 + round * 50 + j)).collect();
            sent.extend(rows.iter().copied());
            let batch = batch(&rows);
            source
                .send(SourceEvent::Batch { partition: SourcePartition(i as i32), batch })
                .await
                .expect("batch");
        }
        source.send(SourceEvent::End { positions: BTreeMap::new() }).await.expect("end");
    }
    let mut owner_of_key: BTreeMap<i64, usize> = BTreeMap::new();
    let mut received = BTreeSet::new();
    for (subtask, drained) in drains {
        for (k, v) in drained.await.expect("drain") {
            assert_eq!(*owner_of_key.entry(k).or_insert(subtask), subtask, "key {k} reached two subtasks");
            assert!(received.insert((k, v)), "row ({k}, {v}) arrived twice");
        }
    }
    assert_eq!(received, sent, "every row arrives exactly once");
    let owners: BTreeSet<usize> = owner_of_key.values().copied().collect();
    assert!(owners.contains(&0) && owners.contains(&3), "keys land in both processes: {owners:?}");
    part_a.run.await.expect("join").expect("process a ends cleanly");
    part_b.run.await.expect("join").expect("process b ends cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_that_disappears_fails_the_other_process_with_a_network_error() {
    let (a, b) = servers().await;
    let (part_a, part_b) = two_parts(a, b.clone());
    for (i, source) in part_a.sources.iter().chain(&part_b.sources).enumerate() {
        source.send(SourceEvent::Assigned(vec![SourcePartition(i as i32)])).await.expect("assigned");
        let rows: Vec<(i64, i64)> = (0..50).map(|j| (j, i as i64 * 1000 + j)).collect();
        source
            .send(SourceEvent::Batch { partition: SourcePartition(i as i32), batch: batch(&rows) })
            .await
            .expect("batch");
    }
    // Wait until rows of process b's sources reach process a's sinks: b's channels to a are up.
    let (rows_tx, mut rows) = mpsc::unbounded_channel();
    for (_, mut sink) in part_a.sinks {
        let rows_tx = rows_tx.clone();
        tokio::spawn(async move {
            while let Some(message) = sink.recv().await {
                if let SinkMessage::Batch(batch) = message {
                    let v = batch.column(1).as_primitive::<Int64Type>();
                    let _ = rows_tx.send(v.values().iter().copied().max().unwrap_or(0));
                }
            }
        });
    }
    loop {
        let v = tokio::time::timeout(DEADLINE, rows.recv()).await.expect("rows in time").expect("a row");
        if v >= 2000 {
            break;
        }
    }
    // Process b dies: its tasks and its exchange server go away without any EndOfStream.
    part_b.run.abort();
    drop(part_b.sinks);
    drop(b);
    let outcome = tokio::time::timeout(DEADLINE, part_a.run).await.expect("a noticed in time").expect("join");
    match outcome {
        Err(RuntimeError::Exchange(why)) => assert!(!why.is_empty()),
        other => panic!("expected a network exchange error, got {other:?}"),
    }
    drop(part_a.sources);
}
