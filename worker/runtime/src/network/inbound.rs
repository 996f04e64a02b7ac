//! The receiving end of one accepted channel: reads its frames, decodes them, hands them to
//! the local input channel in order, and grants the sender one credit back for each message
//! handed over.
//!
//! Two loops share one task. The *reader* reads the socket all the time, so a lost sender is
//! noticed at once even while the local input is full; it holds at most `credit` decoded
//! messages (a sender that exceeds its credit is a protocol violation). The *forwarder*
//! moves them into the local input; a message is handed over only when the input has room,
//! that is once the local consumer has taken an earlier one, and only then is its credit
//! returned. Credits are coalesced: they are written before the forwarder would wait, and
//! whenever half the grant is owed.
//!
//! A channel finishes cleanly only with EndOfStream, after which the sender closes the
//! connection; anything else that ends it is an error, and nothing more is forwarded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use millrace_types::{CheckpointId, StreamMessage, Watermark};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc::{self, error::TryRecvError, error::TrySendError};

use super::Envelope;
use super::channel::ChannelId;
use super::error::NetworkError;
use super::frame::{Frame, ReadError, read_frame, write_frame};
use super::ipc::BatchDecoder;

/// How a channel that finished cleanly went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundSummary {
    /// Messages handed to the local input, EndOfStream included.
    pub messages: u64,
    /// Rows in the batches among them.
    pub rows: u64,
}

/// Counters of one inbound channel, readable while it runs.
#[derive(Debug, Default)]
pub(crate) struct InboundCounters {
    /// Credit granted so far, the initial grant included; raised before a credit frame is
    /// written, so the sender can never legitimately be ahead of it.
    pub granted: AtomicU64,
    pub received: AtomicU64,
    pub forwarded: AtomicU64,
    pub rows: AtomicU64,
}

/// Runs an accepted channel (handshake done, initial credit granted) to its end.
pub(crate) async fn run(
    stream: TcpStream,
    channel: ChannelId,
    into: mpsc::Sender<Envelope>,
    credit: usize,
    max_frame_bytes: usize,
    counters: Arc<InboundCounters>,
) -> Result<InboundSummary, NetworkError> {
    let (read, write) = stream.into_split();
    let (queue_tx, queue_rx) = mpsc::channel(credit);
    let reader = read_loop(read, channel, queue_tx, max_frame_bytes, &counters);
    let forwarder = forward_loop(queue_rx, channel, into, write, max_frame_bytes, &counters);
    tokio::pin!(reader, forwarder);
    // Whichever loop fails first fails the channel; the other is dropped with the socket.
    tokio::select! {
        read = &mut reader => {
            read?;
            forwarder.await?;
        }
        forward = &mut forwarder => {
            forward?;
            reader.await?;
        }
    }
    Ok(InboundSummary {
        messages: counters.forwarded.load(Ordering::Acquire),
        rows: counters.rows.load(Ordering::Acquire),
    })
}

async fn read_loop(
    mut read: OwnedReadHalf,
    channel: ChannelId,
    queue: mpsc::Sender<StreamMessage>,
    max_frame_bytes: usize,
    counters: &InboundCounters,
) -> Result<(), NetworkError> {
    let mut decoder = BatchDecoder::new(channel);
    let mut ended = false;
    loop {
        let frame = match read_frame(&mut read, max_frame_bytes).await {
            Ok(Some(frame)) => frame,
            Ok(None) if ended => return Ok(()),
            Ok(None) => {
                return Err(NetworkError::ConnectionLost {
                    channel,
                    detail: "the sender closed the connection before EndOfStream".into(),
                });
            }
            // Everything was received; how the connection ends after that does not matter.
            Err(ReadError::Io(err)) if ended => {
                tracing::debug!(%channel, error = %err, "connection reset after EndOfStream");
                return Ok(());
            }
            Err(ReadError::Io(err)) => {
                return Err(NetworkError::ConnectionLost {
                    channel,
                    detail: format!("reading failed: {err}"),
                });
            }
            Err(ReadError::Frame(source)) => return Err(NetworkError::Frame { channel, source }),
        };
        if ended {
            return Err(NetworkError::Protocol {
                channel,
                detail: format!("a {} frame after EndOfStream", frame.name()),
            });
        }
        let message = match frame {
            Frame::Schema(bytes) => {
                decoder.schema(bytes)?;
                continue;
            }
            Frame::Batch(bytes) => StreamMessage::Batch(decoder.batch(bytes)?),
            Frame::Watermark(w) => StreamMessage::Watermark(Watermark(w)),
            Frame::Barrier(id) => StreamMessage::Barrier(CheckpointId(id)),
            Frame::EndOfStream => {
                ended = true;
                StreamMessage::EndOfStream
            }
            other => {
                return Err(NetworkError::Protocol {
                    channel,
                    detail: format!("a {} frame from the sender", other.name()),
                });
            }
        };
        let received = counters.received.fetch_add(1, Ordering::AcqRel) + 1;
        let granted = counters.granted.load(Ordering::Acquire);
        let exceeded = || NetworkError::Protocol {
            channel,
            detail: format!(
                "the sender exceeded its credit: {received} messages received, {granted} granted"
            ),
        };
        if received > granted {
            return Err(exceeded());
        }
        match queue.try_send(message) {
            Ok(()) => {}
            // Cannot happen while the credit holds (the queue has room for the initial
            // credit), but a full queue must never block the reader.
            Err(TrySendError::Full(_)) => return Err(exceeded()),
            // The forwarder stopped; its error is the channel's.
            Err(TrySendError::Closed(_)) => return Ok(()),
        }
    }
}

async fn forward_loop(
    mut queue: mpsc::Receiver<StreamMessage>,
    channel: ChannelId,
    into: mpsc::Sender<Envelope>,
    write: OwnedWriteHalf,
    max_frame_bytes: usize,
    counters: &InboundCounters,
) -> Result<(), NetworkError> {
    let mut credits =
        CreditReturn { writer: BufWriter::new(write), owed: 0, channel, max_frame_bytes, counters };
    let sender_index = channel.sender as usize;
    // Return credit in halves of the grant as well, so a fast consumer keeps the sender
    // streaming instead of stopping it once per full grant.
    let batch_credit = (queue.max_capacity() / 2).max(1) as u32;
    loop {
        let message = match queue.try_recv() {
            Ok(message) => message,
            Err(TryRecvError::Empty) => {
                credits.flush().await?;
                match queue.recv().await {
                    Some(message) => message,
                    None => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        let permit = match into.try_reserve() {
            Ok(permit) => permit,
            Err(TrySendError::Full(())) => {
                credits.flush().await?;
                into.reserve().await.map_err(|_| NetworkError::LocalInputClosed { channel })?
            }
            Err(TrySendError::Closed(())) => return Err(NetworkError::LocalInputClosed { channel }),
        };
        if let StreamMessage::Batch(batch) = &message {
            credits.counters.rows.fetch_add(batch.num_rows() as u64, Ordering::AcqRel);
        }
        permit.send((sender_index, message));
        credits.counters.forwarded.fetch_add(1, Ordering::AcqRel);
        credits.owed += 1;
        if credits.owed >= batch_credit {
            credits.flush().await?;
        }
    }
    // The reader has seen EndOfStream and the end of the connection: tell the sender that
    // everything was handed over, and close this side.
    let closing = |err: &dyn std::fmt::Display| NetworkError::ConnectionLost {
        channel,
        detail: format!("closing failed: {err}"),
    };
    write_frame(&mut credits.writer, &Frame::Done, max_frame_bytes).await.map_err(|err| closing(&err))?;
    credits.writer.shutdown().await.map_err(|err| closing(&err))
}

/// Credits owed to the sender, written in one frame when the forwarder would wait.
struct CreditReturn<'a> {
    writer: BufWriter<OwnedWriteHalf>,
    owed: u32,
    channel: ChannelId,
    max_frame_bytes: usize,
    counters: &'a InboundCounters,
}

impl CreditReturn<'_> {
    async fn flush(&mut self) -> Result<(), NetworkError> {
        if self.owed == 0 {
            return Ok(());
        }
        let channel = self.channel;
        let lost = |detail: String| NetworkError::ConnectionLost { channel, detail };
        self.counters.granted.fetch_add(u64::from(self.owed), Ordering::AcqRel);
        write_frame(&mut self.writer, &Frame::Credit(self.owed), self.max_frame_bytes)
            .await
            .map_err(|err| lost(format!("returning credit failed: {err}")))?;
        self.writer.flush().await.map_err(|err| lost(format!("returning credit failed: {err}")))?;
        self.owed = 0;
        Ok(())
    }
}
