//! Tests of the network exchange against real loopback TCP sockets: round trips of every
//! message kind (`round_trip`), credit backpressure (`flow`), refusals, lost peers and
//! malformed frames (`failures`), and peers in another process killed mid-stream
//! (`process`). Waits poll a condition with a deadline; none sleeps a fixed time to wait.

mod failures;
mod flow;
mod process;
mod round_trip;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, ListArray, StringArray,
    TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use millrace_types::StreamMessage;
use tokio::sync::mpsc;

use super::{ChannelId, Envelope, ExchangeServer, ReceiverOptions, RemoteSender, SenderOptions};

const JOB: &str = "job-net-test";
const DEADLINE: Duration = Duration::from_secs(20);

fn receiver_options() -> ReceiverOptions {
    ReceiverOptions { pending_channel_wait: Duration::ZERO, ..ReceiverOptions::default() }
}

fn sender_options() -> SenderOptions {
    SenderOptions { connect_deadline: Duration::from_secs(10), ..SenderOptions::default() }
}

async fn server_with(options: ReceiverOptions) -> ExchangeServer {
    ExchangeServer::bind("127.0.0.1:0", JOB, options).await.expect("bind")
}

async fn server() -> ExchangeServer {
    server_with(receiver_options()).await
}

async fn connect(server: &ExchangeServer, channel: ChannelId, schema: SchemaRef) -> RemoteSender {
    RemoteSender::connect(&server.local_addr().to_string(), JOB, channel, schema, &sender_options())
        .await
        .expect("connect")
}

/// The next envelope, within the deadline.
async fn recv(rx: &mut mpsc::Receiver<Envelope>) -> Envelope {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("an envelope within the deadline")
        .expect("the channel is open")
}

/// Polls `condition` until it holds, failing the test after the deadline.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Awaits a future that must finish within the deadline.
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, future).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A schema with the column types a job's edges carry: integers, floats, booleans, strings,
/// timestamps with a zone, lists, and nulls in every nullable column.
fn mixed_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("price", DataType::Float64, true),
        Field::new("ok", DataType::Boolean, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), true),
        Field::new("tags", DataType::List(Arc::new(Field::new("item", DataType::Int32, true))), true),
    ]))
}

/// `rows` rows of [`mixed_schema`] starting at id `first`; every 7th value is null.
fn mixed_batch(first: i64, rows: usize) -> RecordBatch {
    let ids: Vec<i64> = (first..first + rows as i64).collect();
    let null_every = |i: i64| i % 7 == 3;
    let price: Float64Array = ids.iter().map(|&i| (!null_every(i)).then_some(i as f64 * 0.25)).collect();
    let ok: BooleanArray = ids.iter().map(|&i| (!null_every(i)).then_some(i % 2 == 0)).collect();
    let name: StringArray = ids.iter().map(|&i| (!null_every(i)).then(|| format!("name-{i}-ü"))).collect();
    let ts = TimestampMillisecondArray::from(
        ids.iter().map(|&i| (!null_every(i)).then_some(1_700_000_000_000 + i)).collect::<Vec<_>>(),
    )
    .with_timezone("UTC");
    let tags = ListArray::from_iter_primitive::<Int32Type, _, _>(ids.iter().map(|&i| {
        (!null_every(i)).then(|| (0..(i % 4) as i32).map(|j| (j != 1).then_some(j)).collect::<Vec<_>>())
    }));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids)),
        Arc::new(price),
        Arc::new(ok),
        Arc::new(name),
        Arc::new(ts),
        Arc::new(tags),
    ];
    RecordBatch::try_new(mixed_schema(), columns).expect("mixed batch")
}

fn int_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("v", DataType::Int32, false)]))
}

fn int_batch(v: i32) -> RecordBatch {
    RecordBatch::try_new(int_schema(), vec![Arc::new(Int32Array::from(vec![v])) as ArrayRef])
        .expect("int batch")
}

/// The value of an [`int_batch`].
fn int_value(message: &StreamMessage) -> Option<i32> {
    match message {
        StreamMessage::Batch(batch) => {
            batch.column(0).as_any().downcast_ref::<Int32Array>().map(|a| a.value(0))
        }
        _ => None,
    }
}
