//! Names and settings of one logical channel: [`ChannelId`] (which sender subtask of which
//! stage feeds which receiver subtask of the next), and the options of both ends.
//!
//! Plain data only; the connection logic lives in `sender` and `server`.

use std::fmt;
use std::time::Duration;

use super::liveness::Liveness;

/// One edge between two subtasks: subtask `sender` of stage `stage` sends to subtask
/// `receiver` of stage `stage + 1`. One TCP connection carries exactly one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelId {
    pub stage: u32,
    pub sender: u32,
    pub receiver: u32,
}

impl ChannelId {
    pub fn new(stage: u32, sender: u32, receiver: u32) -> Self {
        Self { stage, sender, receiver }
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}[{}]→s{}[{}]", self.stage, self.sender, self.stage + 1, self.receiver)
    }
}

/// The largest frame either end accepts by default (64 MiB): a batch whose Arrow IPC
/// encoding is larger fails to send, so the sender's batch size must stay below it.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// How a [`RemoteSender`](super::RemoteSender) connects and frames.
#[derive(Debug, Clone)]
pub struct SenderOptions {
    /// How long to keep retrying while the receiver is not listening yet.
    pub connect_deadline: Duration,
    /// First pause between connection attempts; doubles up to `max_retry_interval`.
    pub retry_interval: Duration,
    pub max_retry_interval: Duration,
    /// How long to wait for the receiver's answer to the handshake; longer than the
    /// receiver's `pending_channel_wait`, which it may spend waiting for the channel.
    pub handshake_timeout: Duration,
    pub max_frame_bytes: usize,
    pub liveness: Liveness,
}

impl Default for SenderOptions {
    fn default() -> Self {
        Self {
            connect_deadline: Duration::from_secs(30),
            retry_interval: Duration::from_millis(20),
            max_retry_interval: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(20),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            liveness: Liveness::default(),
        }
    }
}

/// How an [`ExchangeServer`](super::ExchangeServer) accepts channels.
#[derive(Debug, Clone)]
pub struct ReceiverOptions {
    /// Credit granted to every sender, in messages. `None` grants the capacity of the
    /// local channel given to `expect` (Flink's exclusive buffers per channel).
    pub initial_credit: Option<usize>,
    /// How long a new connection may take to send its handshake.
    pub handshake_timeout: Duration,
    /// How long a connection for a channel not expected yet waits for its `expect` before
    /// it is refused as unknown.
    pub pending_channel_wait: Duration,
    pub max_frame_bytes: usize,
    pub liveness: Liveness,
}

impl Default for ReceiverOptions {
    fn default() -> Self {
        Self {
            initial_credit: None,
            handshake_timeout: Duration::from_secs(10),
            pending_channel_wait: Duration::from_secs(10),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            liveness: Liveness::default(),
        }
    }
}
