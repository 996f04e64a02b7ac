//! The physical limit of a Kafka → Kafka job on this broker: consume every record of the input
//! topic and produce its key and value unchanged to the same partition of the output topic.
//! No decoding, no state, no checkpoints — any engine doing real work can only be slower.
//!
//! The consume loop runs on a plain thread (librdkafka's poll blocks); tokio only waits for
//! SIGINT/SIGTERM so the producer is flushed before exit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

#[derive(Parser, Debug)]
#[command(about = "Kafka consume → produce passthrough (the bench's physical limit)")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[arg(long)]
    input: String,
    #[arg(long)]
    output: String,
    #[arg(long)]
    group: String,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let signal_stop = Arc::clone(&stop);
    runtime.spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => return,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        signal_stop.store(true, Ordering::Relaxed);
    });
    let copier = std::thread::spawn(move || copy(&args, &stop));
    copier.join().map_err(|_| anyhow::anyhow!("copy thread panicked"))?
}

fn copy(args: &Args, stop: &AtomicBool) -> Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("group.id", &args.group)
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // Large fetches: one partition must not be limited by the 1 MB per-partition default.
        .set("max.partition.fetch.bytes", "16777216")
        .set("queued.min.messages", "1000000")
        .create()
        .context("creating the consumer")?;
    consumer.subscribe(&[args.input.as_str()]).context("subscribing")?;
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("queue.buffering.max.messages", "1000000")
        .set("batch.num.messages", "100000")
        .set("batch.size", "4194304")
        .set("linger.ms", "10")
        .create()
        .context("creating the producer")?;

    while !stop.load(Ordering::Relaxed) {
        let Some(result) = consumer.poll(Duration::from_millis(100)) else { continue };
        let message = result.context("consuming")?;
        let mut record = BaseRecord::<[u8], [u8]>::to(&args.output).partition(message.partition());
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        let mut pending = record;
        loop {
            match producer.send(pending) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The local queue is full: let the background thread drain it, then retry.
                    producer.poll(Duration::from_millis(1));
                    pending = back;
                }
                Err((e, _)) => return Err(e).context("producing"),
            }
        }
    }
    producer.flush(Duration::from_secs(10)).context("flushing")?;
    Ok(())
}
