//! The sending end of a remote channel: [`RemoteSender`] connects (retrying until a deadline,
//! since the receiver may not listen yet), performs the handshake, starts the channel's Arrow
//! IPC stream, and then sends one frame per [`StreamMessage`], each only against a credit.
//!
//! Credits arrive on the read half of the same connection and are read by a task of their
//! own, so a sender waiting for credit also learns at once when the receiver is gone: the
//! task closes the credit semaphore and the waiting `send` fails with the reason. The write
//! half belongs to `send` alone.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use arrow::datatypes::SchemaRef;
use millrace_types::StreamMessage;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::channel::{ChannelId, SenderOptions};
use super::error::NetworkError;
use super::frame::{Frame, ReadError, WriteError, read_frame, write_frame};
use super::handshake::{self, Hello};
use super::ipc::BatchEncoder;

/// Large enough that a small control frame and most batches go out in one write.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// One channel's sending end. Not `Clone`: one task sends on one channel.
pub struct RemoteSender {
    channel: ChannelId,
    writer: BufWriter<OwnedWriteHalf>,
    /// Set by the schema frame: at connect, or with the first batch (see
    /// [`RemoteSender::connect_deferred`]).
    encoder: Option<BatchEncoder>,
    shared: Arc<SenderShared>,
    credit_reader: Option<JoinHandle<Result<(), NetworkError>>>,
    max_frame_bytes: usize,
    /// Why the channel can no longer be used: set by a failed `send`, or left behind by one
    /// cancelled after it took its credit, so later calls fail instead of writing garbage.
    broken: Option<String>,
}

struct SenderShared {
    /// One permit per message the receiver can take.
    credits: Semaphore,
    sent: AtomicU64,
    end_sent: AtomicBool,
}

/// Counters of a [`RemoteSender`], readable from another task while it sends.
#[derive(Clone)]
pub struct SenderStats(Arc<SenderShared>);

impl SenderStats {
    /// Messages written so far (each took one credit).
    pub fn sent(&self) -> u64 {
        self.0.sent.load(Ordering::Acquire)
    }

    /// Credit not yet used: how many messages may go out before the sender waits.
    pub fn available_credit(&self) -> usize {
        self.0.credits.available_permits()
    }
}

impl fmt::Debug for SenderStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SenderStats")
            .field("sent", &self.sent())
            .field("available_credit", &self.available_credit())
            .finish()
    }
}

impl RemoteSender {
    /// Connects to the receiver at `addr` (`host:port`) for `channel` of job `job_id`,
    /// retrying with backoff until `options.connect_deadline` while nothing listens there,
    /// and sends the channel's schema. A refused handshake is not retried.
    pub async fn connect(
        addr: &str,
        job_id: &str,
        channel: ChannelId,
        schema: SchemaRef,
        options: &SenderOptions,
    ) -> Result<RemoteSender, NetworkError> {
        let mut sender = Self::connect_deferred(addr, job_id, channel, options).await?;
        sender.start_stream(schema).await?;
        Ok(sender)
    }

    /// [`RemoteSender::connect`] for a sender that does not know its schema before its first
    /// batch (the executor's stages do not carry their output schema): the schema frame goes
    /// out right before the first batch, taken from that batch. Watermarks, barriers and
    /// EndOfStream before it need no schema.
    pub async fn connect_deferred(
        addr: &str,
        job_id: &str,
        channel: ChannelId,
        options: &SenderOptions,
    ) -> Result<RemoteSender, NetworkError> {
        let mut stream = connect_with_retry(addr, channel, options).await?;
        stream.set_nodelay(true).map_err(|source| NetworkError::Io { channel, source })?;
        options.liveness.apply(&stream).map_err(|source| NetworkError::Io { channel, source })?;
        let hello = Hello { job_id: job_id.to_owned(), channel };
        handshake::offer(&mut stream, &hello, options.handshake_timeout, options.max_frame_bytes).await?;

        let (read, write) = stream.into_split();
        let shared = Arc::new(SenderShared {
            credits: Semaphore::new(0),
            sent: AtomicU64::new(0),
            end_sent: AtomicBool::new(false),
        });
        let credit_reader =
            tokio::spawn(read_credits(read, channel, shared.clone(), options.max_frame_bytes));
        tracing::debug!(%channel, addr, "remote channel connected");
        Ok(RemoteSender {
            channel,
            writer: BufWriter::with_capacity(WRITE_BUFFER_BYTES, write),
            encoder: None,
            shared,
            credit_reader: Some(credit_reader),
            max_frame_bytes: options.max_frame_bytes,
            broken: None,
        })
    }

    /// Writes the schema frame that starts the channel's IPC stream.
    async fn start_stream(&mut self, schema: SchemaRef) -> Result<(), NetworkError> {
        let (encoder, schema_message) = BatchEncoder::new(self.channel, schema)?;
        self.encoder = Some(encoder);
        self.write(&Frame::Schema(schema_message)).await
    }

    pub fn channel(&self) -> ChannelId {
        self.channel
    }

    pub fn stats(&self) -> SenderStats {
        SenderStats(self.shared.clone())
    }

    /// Sends one message, first waiting for a credit: a receiver that does not take its
    /// messages stops this sender after the credit it granted. Fails at once once the
    /// receiver is gone, with the reason.
    ///
    /// Cancel-safe while it waits for credit. Any error, or a cancellation after the credit
    /// was taken, leaves the channel broken (the IPC stream's dictionary state or a frame may
    /// be half sent): later calls fail, and the task must fail.
    pub async fn send(&mut self, message: StreamMessage) -> Result<(), NetworkError> {
        let channel = self.channel;
        if let Some(reason) = &self.broken {
            return Err(NetworkError::Protocol {
                channel,
                detail: format!("the channel is unusable after an earlier failure: {reason}"),
            });
        }
        if self.shared.end_sent.load(Ordering::Acquire) {
            return Err(NetworkError::Closed { channel });
        }
        let shared = self.shared.clone();
        let Ok(permit) = shared.credits.acquire().await else {
            let err = self.failure().await;
            self.broken = Some(err.to_string());
            return Err(err);
        };
        // From here on a dropped future leaves this reason behind.
        self.broken = Some("a send was cancelled while it encoded or wrote".into());
        let end = matches!(message, StreamMessage::EndOfStream);
        match self.encode_and_write(message).await {
            Ok(()) => {
                permit.forget();
                self.broken = None;
                self.shared.sent.fetch_add(1, Ordering::AcqRel);
                if end {
                    self.shared.end_sent.store(true, Ordering::Release);
                }
                Ok(())
            }
            Err(err) => {
                self.broken = Some(err.to_string());
                Err(err)
            }
        }
    }

    async fn encode_and_write(&mut self, message: StreamMessage) -> Result<(), NetworkError> {
        let frame = match message {
            StreamMessage::Batch(batch) => {
                if self.encoder.is_none() {
                    self.start_stream(batch.schema()).await?;
                }
                let channel = self.channel;
                let encoder = self.encoder.as_mut().ok_or_else(|| NetworkError::Protocol {
                    channel,
                    detail: "the schema frame was not sent".into(),
                })?;
                Frame::Batch(encoder.encode(&batch)?)
            }
            StreamMessage::Watermark(w) => Frame::Watermark(w.0),
            StreamMessage::Barrier(id) => Frame::Barrier(id.0),
            StreamMessage::EndOfStream => Frame::EndOfStream,
        };
        self.write(&frame).await
    }

    /// Ends the channel cleanly: sends EndOfStream unless it was sent, closes the write
    /// half, and waits until the receiver has handed every message to its local input and
    /// closed its side. Waits as long as the receiver's consumer takes to drain.
    pub async fn close(mut self) -> Result<(), NetworkError> {
        if !self.shared.end_sent.load(Ordering::Acquire) {
            self.send(StreamMessage::EndOfStream).await?;
        }
        let channel = self.channel;
        if let Err(err) = self.writer.shutdown().await {
            return Err(self.lost_on_write(err).await);
        }
        match self.credit_reader.take() {
            Some(reader) => match reader.await {
                Ok(result) => result,
                Err(join) => {
                    Err(NetworkError::ConnectionLost { channel, detail: format!("credit reader: {join}") })
                }
            },
            None => Ok(()),
        }
    }

    /// Writes and flushes one frame; an oversized one is refused before any byte is written.
    async fn write(&mut self, frame: &Frame) -> Result<(), NetworkError> {
        let written = match write_frame(&mut self.writer, frame, self.max_frame_bytes).await {
            Ok(()) => self.writer.flush().await,
            Err(WriteError::Io(err)) => Err(err),
            Err(WriteError::Frame(source)) => {
                return Err(NetworkError::Frame { channel: self.channel, source });
            }
        };
        match written {
            Ok(()) => Ok(()),
            Err(err) => Err(self.lost_on_write(err).await),
        }
    }

    /// A write failed: the connection is gone. The credit reader usually knows why.
    async fn lost_on_write(&mut self, err: std::io::Error) -> NetworkError {
        if self.shared.credits.is_closed() {
            return self.failure().await;
        }
        NetworkError::ConnectionLost { channel: self.channel, detail: format!("write failed: {err}") }
    }

    /// The reason the credit reader stopped (it closes the semaphore when it does).
    async fn failure(&mut self) -> NetworkError {
        let channel = self.channel;
        match self.credit_reader.take() {
            Some(reader) => match reader.await {
                Ok(Err(err)) => err,
                Ok(Ok(())) => NetworkError::Closed { channel },
                Err(join) => {
                    NetworkError::ConnectionLost { channel, detail: format!("credit reader: {join}") }
                }
            },
            None => {
                NetworkError::ConnectionLost { channel, detail: "the connection was lost earlier".into() }
            }
        }
    }
}

impl Drop for RemoteSender {
    /// Dropping without `close` ends the connection without EndOfStream: the receiver sees a
    /// lost connection, as if this process had died.
    fn drop(&mut self) {
        if let Some(reader) = self.credit_reader.take() {
            reader.abort();
        }
    }
}

async fn connect_with_retry(
    addr: &str,
    channel: ChannelId,
    options: &SenderOptions,
) -> Result<TcpStream, NetworkError> {
    let start = Instant::now();
    let deadline = tokio::time::Instant::from_std(start + options.connect_deadline);
    let mut pause = options.retry_interval;
    let give_up = |source: std::io::Error| NetworkError::Connect {
        channel,
        addr: addr.to_owned(),
        waited_ms: start.elapsed().as_millis(),
        source,
    };
    loop {
        let err = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(err)) => err,
            Err(_elapsed) => {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connection attempt timed out")
            }
        };
        // Any failure may be a receiver that is not up yet (refused, or its name does not
        // resolve yet), so every one is retried until the deadline.
        if tokio::time::Instant::now() + pause >= deadline {
            return Err(give_up(err));
        }
        tracing::debug!(%channel, addr, error = %err, "receiver not reachable yet, retrying");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(options.max_retry_interval);
    }
}

/// Adds every credit the receiver grants; stops at the first other frame or at the end of
/// the connection, and closes the semaphore so that a waiting `send` wakes up.
async fn read_credits(
    mut read: OwnedReadHalf,
    channel: ChannelId,
    shared: Arc<SenderShared>,
    max_frame_bytes: usize,
) -> Result<(), NetworkError> {
    let mut done = false;
    let result = loop {
        match read_frame(&mut read, max_frame_bytes).await {
            Ok(Some(Frame::Done)) if shared.end_sent.load(Ordering::Acquire) && !done => done = true,
            Ok(Some(Frame::Credit(n))) if !done => {
                let n = n as usize;
                if shared.credits.available_permits().saturating_add(n) > Semaphore::MAX_PERMITS {
                    break Err(NetworkError::Protocol {
                        channel,
                        detail: format!("a credit of {n} overflows"),
                    });
                }
                shared.credits.add_permits(n);
            }
            Ok(Some(other)) => {
                break Err(NetworkError::Protocol {
                    channel,
                    detail: format!(
                        "expected a credit frame from the receiver, got a {} frame",
                        other.name()
                    ),
                });
            }
            // The receiver says Done and closes its side once it has handed EndOfStream to
            // its consumer.
            Ok(None) if done => break Ok(()),
            Ok(None) => {
                break Err(NetworkError::ConnectionLost {
                    channel,
                    detail: "the receiver closed the connection".into(),
                });
            }
            Err(ReadError::Io(err)) => {
                break Err(NetworkError::ConnectionLost {
                    channel,
                    detail: format!("reading credits failed: {err}"),
                });
            }
            Err(ReadError::Frame(source)) => break Err(NetworkError::Frame { channel, source }),
        }
    };
    if let Err(err) = &result {
        tracing::warn!(%channel, error = %err, "remote channel broken on the sending side");
    }
    shared.credits.close();
    result
}
