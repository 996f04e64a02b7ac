//! The receiving side of a worker: [`ExchangeServer`] listens on one TCP port for all of a
//! job's inbound channels, checks each connection's handshake against the channels it was
//! told to [`expect`](ExchangeServer::expect), and runs every accepted channel (see
//! `inbound`) into its local input. Each expected channel gets an [`InboundChannel`] handle
//! that resolves when the channel ends: `Ok` after a clean EndOfStream, an error when the
//! connection was lost or broke the protocol.
//!
//! A connection may arrive before its channel is expected (the server listens as soon as it
//! is bound), or before its job has begun on this server (a restarted job's next attempt,
//! see [`ExchangeServer::begin_job`]): it waits up to [`ReceiverOptions::pending_channel_wait`]
//! for the `expect`, and is refused as an unknown channel (or a job mismatch) after that.
//! Refusals are final.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use super::Envelope;
use super::channel::{ChannelId, ReceiverOptions};
use super::error::{NetworkError, RefusalReason};
use super::frame::{Frame, read_frame, write_frame};
use super::handshake::{Hello, PROTOCOL_VERSION};
use super::inbound::{self, InboundCounters, InboundSummary};

/// Listens for a job's inbound channels. Dropping it stops accepting and breaks every
/// channel still running (their handles report [`NetworkError::ServerStopped`]).
pub struct ExchangeServer {
    local_addr: SocketAddr,
    registry: Arc<Registry>,
    accept_loop: JoinHandle<()>,
}

type Outcome = Result<InboundSummary, NetworkError>;

struct Registry {
    /// The job (attempt) whose channels are accepted; see [`ExchangeServer::begin_job`].
    job_id: Mutex<String>,
    options: ReceiverOptions,
    channels: Mutex<HashMap<ChannelId, Slot>>,
    /// Woken by every `expect`, for connections waiting for their channel.
    expected: Notify,
}

enum Slot {
    Expected(Expected),
    /// Taken by a connection; a second one for the same channel is refused.
    Connected,
}

struct Expected {
    into: mpsc::Sender<Envelope>,
    outcome: oneshot::Sender<Outcome>,
    counters: Arc<InboundCounters>,
}

/// The handle of one expected channel.
pub struct InboundChannel {
    channel: ChannelId,
    outcome: oneshot::Receiver<Outcome>,
    counters: Arc<InboundCounters>,
}

impl InboundChannel {
    pub fn channel(&self) -> ChannelId {
        self.channel
    }

    /// Messages read from the connection so far (handed over or buffered against credit).
    pub fn received(&self) -> u64 {
        self.counters.received.load(Ordering::Acquire)
    }

    /// Messages handed to the local input so far.
    pub fn forwarded(&self) -> u64 {
        self.counters.forwarded.load(Ordering::Acquire)
    }

    /// Waits for the channel to end. `Ok` means the sender sent EndOfStream, it and every
    /// message before it are in the local input, and the sender closed the connection. An
    /// error means the channel broke (the sender's process died, the connection was lost, a
    /// malformed frame, the local input was closed, or the server was dropped): the job must
    /// fail and restart from a checkpoint. Waits forever for a sender that never connects.
    pub async fn finished(self) -> Result<InboundSummary, NetworkError> {
        let channel = self.channel;
        self.outcome.await.unwrap_or(Err(NetworkError::ServerStopped { channel }))
    }
}

impl ExchangeServer {
    /// Binds `addr` (port 0 picks a free port, see [`local_addr`](Self::local_addr)) and
    /// starts accepting connections for job `job_id`.
    pub async fn bind(
        addr: &str,
        job_id: &str,
        options: ReceiverOptions,
    ) -> Result<ExchangeServer, NetworkError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| NetworkError::Bind { addr: addr.to_owned(), source })?;
        let local_addr =
            listener.local_addr().map_err(|source| NetworkError::Bind { addr: addr.to_owned(), source })?;
        let registry = Arc::new(Registry {
            job_id: Mutex::new(job_id.to_owned()),
            options,
            channels: Mutex::new(HashMap::new()),
            expected: Notify::new(),
        });
        let accept_loop = tokio::spawn(accept_loop(listener, registry.clone()));
        tracing::info!(%local_addr, job_id, "exchange server listening");
        Ok(ExchangeServer { local_addr, registry, accept_loop })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves another job (a new attempt of a restarted job) from now on: forgets every
    /// channel of the previous one (their handles report [`NetworkError::ServerStopped`] if
    /// still waiting), and refuses connections that name the old job. A worker process keeps
    /// one listening port for all the attempts it runs.
    pub fn begin_job(&self, job_id: &str) {
        let mut channels = self.registry.lock();
        channels.clear();
        *self.registry.job_id.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = job_id.to_owned();
        drop(channels);
        self.registry.expected.notify_waiters();
    }

    /// Accepts `channel` from now on and routes it into `into`, as envelopes whose sender
    /// index is `channel.sender`. The sender is granted `options.initial_credit` messages, or
    /// `into`'s capacity when that is `None`.
    pub fn expect(
        &self,
        channel: ChannelId,
        into: mpsc::Sender<Envelope>,
    ) -> Result<InboundChannel, NetworkError> {
        let mut channels = self.registry.lock();
        if channels.contains_key(&channel) {
            return Err(NetworkError::AlreadyExpected { channel });
        }
        let (outcome_tx, outcome_rx) = oneshot::channel();
        let counters = Arc::new(InboundCounters::default());
        channels.insert(
            channel,
            Slot::Expected(Expected { into, outcome: outcome_tx, counters: counters.clone() }),
        );
        drop(channels);
        self.registry.expected.notify_waiters();
        Ok(InboundChannel { channel, outcome: outcome_rx, counters })
    }
}

impl Drop for ExchangeServer {
    fn drop(&mut self) {
        // Aborting the loop drops its JoinSet, which aborts every running channel.
        self.accept_loop.abort();
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ChannelId, Slot>> {
        // A panic while holding this lock cannot leave the map half-updated (every critical
        // section is a single insert or replace), so a poisoned lock is still consistent.
        self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Checks a handshake and takes the channel's slot.
    fn admit(&self, version: u16, body: &[u8]) -> Result<(Hello, Expected), Refusal> {
        if version != PROTOCOL_VERSION {
            return Err(Refusal::new(
                RefusalReason::VersionMismatch,
                format!("the receiver speaks protocol version {PROTOCOL_VERSION}, the sender {version}"),
            ));
        }
        let hello = Hello::parse(body).map_err(|err| Refusal::malformed(err.to_string()))?;
        let job_id = self.job_id.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        if hello.job_id != job_id {
            return Err(Refusal::new(
                RefusalReason::JobMismatch,
                format!("the receiver runs job {:?}, the sender belongs to job {:?}", job_id, hello.job_id),
            ));
        }
        let mut channels = self.lock();
        match channels.insert(hello.channel, Slot::Connected) {
            Some(Slot::Expected(expected)) => Ok((hello, expected)),
            Some(Slot::Connected) => Err(Refusal::new(
                RefusalReason::AlreadyConnected,
                format!("another connection already carries channel {}", hello.channel),
            )),
            None => {
                channels.remove(&hello.channel);
                Err(Refusal::new(
                    RefusalReason::UnknownChannel,
                    format!("the receiver expects no channel {} of job {:?}", hello.channel, job_id),
                ))
            }
        }
    }
}

/// Why a connection was not admitted. `reason` is `None` for a malformed handshake, which is
/// closed without an answer (the peer may not speak this protocol at all).
struct Refusal {
    reason: Option<RefusalReason>,
    detail: String,
}

impl Refusal {
    fn new(reason: RefusalReason, detail: String) -> Self {
        Self { reason: Some(reason), detail }
    }

    fn malformed(detail: String) -> Self {
        Self { reason: None, detail }
    }
}

async fn accept_loop(listener: TcpListener, registry: Arc<Registry>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_connection(stream, peer, registry.clone()));
                }
                Err(err) => {
                    // Out of file descriptors or an aborted connection: keep serving the
                    // channels already running, and do not spin.
                    tracing::warn!(error = %err, "exchange server: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(mut stream: TcpStream, peer: SocketAddr, registry: Arc<Registry>) {
    let options = &registry.options;
    if let Err(err) = stream.set_nodelay(true) {
        tracing::warn!(%peer, error = %err, "exchange server: could not set TCP_NODELAY");
    }
    if let Err(err) = options.liveness.apply(&stream) {
        tracing::warn!(%peer, error = %err, "exchange server: could not set keepalive and user timeout");
    }
    let first =
        tokio::time::timeout(options.handshake_timeout, read_frame(&mut stream, options.max_frame_bytes))
            .await;
    let (version, body) = match first {
        Ok(Ok(Some(Frame::Hello { version, body }))) => (version, body),
        Ok(Ok(Some(other))) => {
            tracing::warn!(%peer, "exchange server: expected a handshake, got a {} frame", other.name());
            return;
        }
        Ok(Ok(None)) => return,
        Ok(Err(err)) => {
            tracing::warn!(%peer, error = %err, "exchange server: bad handshake");
            return;
        }
        Err(_elapsed) => {
            tracing::warn!(%peer, "exchange server: no handshake within {} ms", options.handshake_timeout.as_millis());
            return;
        }
    };
    let (hello, expected) = match admit_waiting(&registry, version, &body).await {
        Ok(admitted) => admitted,
        Err(Refusal { reason: None, detail }) => {
            tracing::warn!(%peer, detail, "exchange server: malformed handshake");
            return;
        }
        Err(Refusal { reason: Some(reason), detail }) => {
            tracing::warn!(%peer, %reason, detail, "exchange server: refused a connection");
            let refuse = Frame::Refuse { version: PROTOCOL_VERSION, reason, detail };
            if write_frame(&mut stream, &refuse, options.max_frame_bytes).await.is_ok() {
                let _ = stream.shutdown().await;
            }
            return;
        }
    };
    let channel = hello.channel;
    let Expected { into, outcome, counters } = expected;
    let credit = options.initial_credit.unwrap_or_else(|| into.max_capacity()).clamp(1, u32::MAX as usize);
    counters.granted.store(credit as u64, Ordering::Release);
    let outcome_value = match accept(&mut stream, credit as u32, options.max_frame_bytes).await {
        Ok(()) => {
            tracing::debug!(%channel, %peer, credit, "remote channel accepted");
            inbound::run(stream, channel, into, credit, options.max_frame_bytes, counters).await
        }
        Err(source) => Err(NetworkError::Io { channel, source }),
    };
    if let Err(err) = &outcome_value {
        tracing::warn!(%channel, %peer, error = %err, "remote channel broken on the receiving side");
    }
    // The handle may have been dropped: nobody waits for this channel then.
    let _ = outcome.send(outcome_value);
}

/// Admits a connection, waiting a while for a channel that is not expected yet.
async fn admit_waiting(registry: &Registry, version: u16, body: &[u8]) -> Result<(Hello, Expected), Refusal> {
    let deadline = tokio::time::Instant::now() + registry.options.pending_channel_wait;
    loop {
        // Registered before the check, so an `expect` right after it still wakes us.
        let expected = registry.expected.notified();
        tokio::pin!(expected);
        expected.as_mut().enable();
        match registry.admit(version, body) {
            // A job not begun yet may be the next attempt, which this worker begins shortly.
            Err(refusal)
                if matches!(
                    refusal.reason,
                    Some(RefusalReason::UnknownChannel | RefusalReason::JobMismatch)
                ) =>
            {
                if tokio::time::timeout_at(deadline, expected).await.is_err() {
                    return Err(refusal);
                }
            }
            admitted => return admitted,
        }
    }
}

async fn accept(stream: &mut TcpStream, credit: u32, max_frame_bytes: usize) -> std::io::Result<()> {
    let frames = [Frame::Accept { version: PROTOCOL_VERSION }, Frame::Credit(credit)];
    for frame in &frames {
        write_frame(stream, frame, max_frame_bytes).await.map_err(|err| match err {
            super::frame::WriteError::Io(err) => err,
            super::frame::WriteError::Frame(err) => std::io::Error::other(err),
        })?;
    }
    stream.flush().await
}
