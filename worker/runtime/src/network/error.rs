//! The errors of the network exchange, one enum for both ends of a channel, and the reasons
//! a receiver refuses a handshake.
//!
//! Every variant names the channel or the frame it is about, so a failed job says which edge
//! broke and why. This module owns no I/O.

use std::fmt;
use std::io;

use arrow::error::ArrowError;

use super::channel::ChannelId;

/// Why a receiver refused a connection; sent back to the sender in the handshake reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// The receiver does not expect this channel (no `expect` for it).
    UnknownChannel,
    /// The two ends speak different protocol versions.
    VersionMismatch,
    /// The sender belongs to another job (or another attempt of it).
    JobMismatch,
    /// Another connection already carries this channel.
    AlreadyConnected,
}

impl RefusalReason {
    pub(crate) fn code(self) -> u8 {
        match self {
            RefusalReason::UnknownChannel => 1,
            RefusalReason::VersionMismatch => 2,
            RefusalReason::JobMismatch => 3,
            RefusalReason::AlreadyConnected => 4,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(RefusalReason::UnknownChannel),
            2 => Some(RefusalReason::VersionMismatch),
            3 => Some(RefusalReason::JobMismatch),
            4 => Some(RefusalReason::AlreadyConnected),
            _ => None,
        }
    }
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RefusalReason::UnknownChannel => "unknown channel",
            RefusalReason::VersionMismatch => "protocol version mismatch",
            RefusalReason::JobMismatch => "job mismatch",
            RefusalReason::AlreadyConnected => "channel already connected",
        })
    }
}

/// A frame that cannot be decoded. Raised by the framing layer, which knows no channel; the
/// channel layer wraps it in [`NetworkError::Frame`].
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the maximum frame size of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("empty frame (length 0, no kind byte)")]
    Empty,
    #[error("unknown frame kind 0x{0:02x}")]
    UnknownKind(u8),
    #[error("{kind} frame: {detail}")]
    BadPayload { kind: &'static str, detail: String },
}

/// A failure of the network exchange.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("could not bind the exchange server to {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("channel {channel}: could not connect to {addr} within {waited_ms} ms: {source}")]
    Connect {
        channel: ChannelId,
        addr: String,
        waited_ms: u128,
        #[source]
        source: io::Error,
    },
    #[error("channel {channel}: the receiver refused the connection ({reason}): {detail}")]
    Refused { channel: ChannelId, reason: RefusalReason, detail: String },
    /// The peer went away before the channel ended cleanly (no EndOfStream, or the sender
    /// lost the receiver). The job must fail and restart from a checkpoint.
    #[error("channel {channel}: connection lost: {detail}")]
    ConnectionLost { channel: ChannelId, detail: String },
    #[error("channel {channel}: {source}")]
    Io {
        channel: ChannelId,
        #[source]
        source: io::Error,
    },
    /// A frame that cannot be decoded (see [`FrameError`]).
    #[error("channel {channel}: {source}")]
    Frame {
        channel: ChannelId,
        #[source]
        source: FrameError,
    },
    /// A well-formed frame at a point where the protocol does not allow it.
    #[error("channel {channel}: protocol violation: {detail}")]
    Protocol { channel: ChannelId, detail: String },
    #[error("channel {channel}: Arrow IPC: {source}")]
    Ipc {
        channel: ChannelId,
        #[source]
        source: ArrowError,
    },
    #[error("channel {channel}: batch does not match the channel's schema: {detail}")]
    SchemaMismatch { channel: ChannelId, detail: String },
    #[error("channel {channel}: the channel was already expected on this server")]
    AlreadyExpected { channel: ChannelId },
    #[error("channel {channel}: the local input channel was closed by its consumer")]
    LocalInputClosed { channel: ChannelId },
    #[error("channel {channel}: the channel is closed (EndOfStream was sent)")]
    Closed { channel: ChannelId },
    #[error("channel {channel}: the exchange server stopped before the channel finished")]
    ServerStopped { channel: ChannelId },
}

impl NetworkError {
    /// Whether the error means the peer is gone (as opposed to a bug or a refusal): the
    /// caller fails the job and restarts from a checkpoint.
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, NetworkError::ConnectionLost { .. } | NetworkError::Io { .. })
    }
}
