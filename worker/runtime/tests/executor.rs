//! The executor with real channels: keyed exchanges route each key to exactly one subtask
//! without losing rows, and a sink that stops reading backpressures the source.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, Int64Array};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::physical_expr::expressions::col;
use millrace_runtime::{
    Dataflow, DataflowIo, Exchange, RunOptions, RuntimeMetrics, SourceSpec, Stage, TimeAttribute,
    run_dataflow,
};
use millrace_types::{SinkMessage, SourceEvent, SourcePartition};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

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

fn dataflow(second_stage: Option<Exchange>) -> Dataflow {
    let mut stages = vec![Stage { input: Exchange::Forward, operators: Vec::new() }];
    if let Some(exchange) = second_stage {
        stages.push(Stage { input: exchange, operators: Vec::new() });
    }
    Dataflow {
        source: SourceSpec { table: "t".into(), schema: schema(), time: TimeAttribute::None },
        stages,
        output_schema: schema(),
        late_output: None,
        changelog: None,
        branches: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_exchange_sends_each_key_to_one_subtask_and_keeps_every_row() {
    let parallelism = 3;
    let flow = dataflow(Some(Exchange::Hash(vec![col("k", &schema()).expect("k")])));
    let mut sources = Vec::new();
    let mut senders = Vec::new();
    for _ in 0..parallelism {
        let (tx, rx) = mpsc::channel(4);
        sources.push(rx);
        senders.push(tx);
    }
    let mut sinks = Vec::new();
    let mut outputs = Vec::new();
    for _ in 0..parallelism {
        let (tx, rx) = mpsc::channel(4);
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

    let collectors: Vec<_> = outputs
        .into_iter()
        .map(|mut rx| {
            tokio::spawn(async move {
                let mut rows = Vec::new();
                while let Some(message) = rx.recv().await {
                    let SinkMessage::Batch(b) = message else { continue };
                    let k = b.column(0).as_primitive::<Int64Type>();
                    let v = b.column(1).as_primitive::<Int64Type>();
                    rows.extend((0..b.num_rows()).map(|i| (k.value(i), v.value(i))));
                }
                rows
            })
        })
        .collect();
    let mut sent = Vec::new();
    for (i, tx) in senders.into_iter().enumerate() {
        tx.send(SourceEvent::Assigned(vec![SourcePartition(i as i32)])).await.expect("assigned");
        for round in 0..20i64 {
            let rows: Vec<(i64, i64)> =
                (0..16).map(|j| ((round * 7 + j) % 23, i as i64 * 1000 + round * 16 + j)).collect();
            sent.extend(rows.iter().copied());
            tx.send(SourceEvent::Batch { partition: SourcePartition(i as i32), batch: batch(&rows) })
                .await
                .expect("batch");
        }
        tx.send(SourceEvent::End { positions: Default::default() }).await.expect("end");
    }
    run.await.expect("executor task").expect("dataflow succeeds");
    let mut owner: BTreeMap<i64, usize> = BTreeMap::new();
    let mut received = Vec::new();
    for (subtask, collector) in collectors.into_iter().enumerate() {
        for (k, v) in collector.await.expect("collector") {
            assert_eq!(*owner.entry(k).or_insert(subtask), subtask, "key {k} reached two subtasks");
            received.push((k, v));
        }
    }
    received.sort_unstable();
    sent.sort_unstable();
    assert_eq!(received, sent);
    assert!(owner.values().collect::<BTreeSet<_>>().len() > 1, "23 keys spread over more than one subtask");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_stops_reading_backpressures_the_source() {
    let flow = dataflow(Some(Exchange::Single));
    let (source_tx, source_rx) = mpsc::channel(1);
    let (sink_tx, mut sink_rx) = mpsc::channel(1);
    let options = RunOptions { parallelism: 1, channel_capacity: 1, ..RunOptions::default() };
    let metrics = RuntimeMetrics::default();
    let run = tokio::spawn(async move {
        run_dataflow(
            &flow,
            DataflowIo {
                sources: vec![source_rx],
                sinks: vec![sink_tx],
                late: Vec::new(),
                checkpoints: None,
            },
            &options,
            &metrics,
        )
        .await
    });
    source_tx.send(SourceEvent::Assigned(vec![SourcePartition(0)])).await.expect("assigned");
    // Nobody reads the sink: the bounded channels fill up and the source must block. "Blocked"
    // means a thousand attempts in a row find the channel full while the executor's tasks get
    // every chance to run (no timing assumptions), once a first accepted batch shows it runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut accepted: i64 = 0;
    let mut full_in_a_row = 0;
    while full_in_a_row < 1000 || accepted == 0 {
        match source_tx
            .try_send(SourceEvent::Batch { partition: SourcePartition(0), batch: batch(&[(1, accepted)]) })
        {
            Ok(()) => {
                accepted += 1;
                full_in_a_row = 0;
            }
            Err(TrySendError::Full(_)) => full_in_a_row += 1,
            Err(TrySendError::Closed(_)) => panic!("the dataflow stopped"),
        }
        assert!(Instant::now() < deadline, "the source never blocked ({accepted} batches accepted)");
        assert!(accepted < 50, "the source was never backpressured ({accepted} batches accepted)");
        tokio::task::yield_now().await;
    }
    // One batch read at the sink makes room that propagates back to the source.
    let first = tokio::time::timeout(Duration::from_secs(10), sink_rx.recv()).await;
    assert!(
        matches!(first, Ok(Some(_))),
        "the sink received nothing: {first:?} after {accepted} accepted batches"
    );
    let mut delivered = 1;
    loop {
        match source_tx
            .try_send(SourceEvent::Batch { partition: SourcePartition(0), batch: batch(&[(1, accepted)]) })
        {
            Ok(()) => {
                accepted += 1;
                break;
            }
            Err(TrySendError::Full(_)) => {}
            Err(TrySendError::Closed(_)) => panic!("the dataflow stopped"),
        }
        assert!(Instant::now() < deadline, "reading the sink did not unblock the source");
        tokio::task::yield_now().await;
    }
    // Drain the rest concurrently; every accepted batch arrives.
    let drain = tokio::spawn(async move {
        let mut rows = 0;
        while let Some(message) = sink_rx.recv().await {
            let SinkMessage::Batch(b) = message else { continue };
            rows += b.num_rows();
        }
        rows
    });
    let finish = async {
        source_tx.send(SourceEvent::End { positions: Default::default() }).await.expect("end");
        drop(source_tx);
        let rows = drain.await.expect("drain task");
        run.await.expect("executor task").expect("dataflow succeeds");
        rows
    };
    delivered += tokio::time::timeout(Duration::from_secs(30), finish).await.expect("the dataflow finishes");
    assert_eq!(delivered as i64, accepted, "every accepted batch arrives");
}
