//! Throughput of the network exchange over loopback: one channel, batches of 8192 rows of
//! (BIGINT, DOUBLE, VARCHAR), sent by a `RemoteSender` and drained by a consumer of the local
//! input, with the default credit (the local capacity, 16 batches).
//!
//! ```text
//! cargo run --release -p millrace-runtime --example exchange_throughput -- [batches]
//! ```

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use millrace_runtime::network::{ChannelId, ExchangeServer, ReceiverOptions, RemoteSender, SenderOptions};
use millrace_types::StreamMessage;
use tokio::sync::mpsc;

const ROWS: usize = 8192;

fn batch() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("price", DataType::Float64, false),
        Field::new("name", DataType::Utf8, false),
    ]));
    let ids: Vec<i64> = (0..ROWS as i64).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(Float64Array::from_iter_values(ids.iter().map(|&i| i as f64 * 0.5))),
        Arc::new(StringArray::from_iter_values(ids.iter().map(|i| format!("item-{i:08}")))),
    ];
    RecordBatch::try_new(schema, columns).expect("the batch matches its schema")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let batches: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 2000,
    };
    let batch = batch();
    let channel = ChannelId::new(0, 0, 0);
    let server = ExchangeServer::bind("127.0.0.1:0", "bench", ReceiverOptions::default()).await?;
    let (tx, mut rx) = mpsc::channel(16);
    let inbound = server.expect(channel, tx)?;
    let addr = server.local_addr().to_string();
    let mut sender =
        RemoteSender::connect(&addr, "bench", channel, batch.schema(), &SenderOptions::default()).await?;

    let consumer = tokio::spawn(async move {
        let mut rows = 0usize;
        while let Some((_, message)) = rx.recv().await {
            match message {
                StreamMessage::Batch(b) => rows += b.num_rows(),
                StreamMessage::EndOfStream => break,
                _ => {}
            }
        }
        rows
    });
    let start = Instant::now();
    for _ in 0..batches {
        sender.send(StreamMessage::Batch(batch.clone())).await?;
    }
    sender.close().await?;
    let rows = consumer.await?;
    let elapsed = start.elapsed();
    inbound.finished().await?;

    let bytes = batch.get_array_memory_size() * batches;
    let secs = elapsed.as_secs_f64();
    println!(
        "{rows} rows in {batches} batches of {ROWS} over loopback in {:.3} s: {:.2} M rows/s, {:.0} MiB/s of Arrow data",
        secs,
        rows as f64 / secs / 1e6,
        bytes as f64 / secs / (1024.0 * 1024.0)
    );
    Ok(())
}
