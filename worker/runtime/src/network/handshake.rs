//! The handshake that opens every exchange connection: the sender says which job and which
//! channel it carries, in which protocol version; the receiver accepts or refuses with a
//! reason. Body of a version-1 `Hello` frame (after the magic and the version):
//!
//! ```text
//! stage: u32 | sender: u32 | receiver: u32 | job id length: u16 | job id: UTF-8
//! ```
//!
//! All integers big-endian. This module owns the hello body and the sender's side of the
//! exchange of handshake frames; which channels a server accepts is `server`'s business.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::channel::ChannelId;
use super::error::{FrameError, NetworkError};
use super::frame::{Frame, ReadError, WriteError, read_frame, write_frame};

/// The protocol version this build speaks. Both ends must speak the same one.
pub const PROTOCOL_VERSION: u16 = 1;

/// What a sender announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hello {
    pub job_id: String,
    pub channel: ChannelId,
}

impl Hello {
    pub(crate) fn to_frame(&self) -> Result<Frame, NetworkError> {
        let job = self.job_id.as_bytes();
        let job_len = u16::try_from(job.len()).map_err(|_| NetworkError::Protocol {
            channel: self.channel,
            detail: format!("job id of {} bytes is longer than 65535 bytes", job.len()),
        })?;
        let mut body = Vec::with_capacity(14 + job.len());
        body.extend_from_slice(&self.channel.stage.to_be_bytes());
        body.extend_from_slice(&self.channel.sender.to_be_bytes());
        body.extend_from_slice(&self.channel.receiver.to_be_bytes());
        body.extend_from_slice(&job_len.to_be_bytes());
        body.extend_from_slice(job);
        Ok(Frame::Hello { version: PROTOCOL_VERSION, body })
    }

    /// Parses a version-1 hello body.
    pub(crate) fn parse(body: &[u8]) -> Result<Hello, FrameError> {
        let bad = |detail: String| FrameError::BadPayload { kind: "handshake", detail };
        if body.len() < 14 {
            return Err(bad(format!("body is {} bytes, expected at least 14", body.len())));
        }
        let u32_at = |at: usize| u32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
        let channel = ChannelId { stage: u32_at(0), sender: u32_at(4), receiver: u32_at(8) };
        let job_len = u16::from_be_bytes([body[12], body[13]]) as usize;
        let job = &body[14..];
        if job.len() != job_len {
            return Err(bad(format!("job id is {} bytes, its length field says {job_len}", job.len())));
        }
        let job_id = std::str::from_utf8(job).map_err(|_| bad("job id is not UTF-8".into()))?.to_owned();
        Ok(Hello { job_id, channel })
    }
}

/// The sender's half: sends `hello`, waits for the answer. Refusals and anything but an
/// `Accept` are errors naming the channel.
pub(crate) async fn offer<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    hello: &Hello,
    timeout: Duration,
    max_frame_bytes: usize,
) -> Result<(), NetworkError> {
    let channel = hello.channel;
    let io = |source| NetworkError::Io { channel, source };
    write_frame(stream, &hello.to_frame()?, max_frame_bytes).await.map_err(|e| match e {
        WriteError::Io(source) => io(source),
        WriteError::Frame(source) => NetworkError::Frame { channel, source },
    })?;
    stream.flush().await.map_err(io)?;
    let reply = tokio::time::timeout(timeout, read_frame(stream, max_frame_bytes)).await.map_err(|_| {
        NetworkError::ConnectionLost {
            channel,
            detail: format!("no handshake answer within {} ms", timeout.as_millis()),
        }
    })?;
    match reply {
        Ok(Some(Frame::Accept { .. })) => Ok(()),
        Ok(Some(Frame::Refuse { reason, detail, .. })) => {
            Err(NetworkError::Refused { channel, reason, detail })
        }
        Ok(Some(other)) => Err(NetworkError::Protocol {
            channel,
            detail: format!("expected a handshake answer, got a {} frame", other.name()),
        }),
        Ok(None) => Err(NetworkError::ConnectionLost {
            channel,
            detail: "the receiver closed the connection during the handshake".into(),
        }),
        Err(ReadError::Io(source)) => Err(io(source)),
        Err(ReadError::Frame(source)) => Err(NetworkError::Frame { channel, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips() {
        let hello = Hello { job_id: "job-ü".into(), channel: ChannelId::new(2, 3, 4) };
        let Frame::Hello { version, body } = hello.to_frame().expect("frame") else {
            panic!("not a hello frame");
        };
        assert_eq!(version, PROTOCOL_VERSION);
        assert_eq!(Hello::parse(&body).expect("parse"), hello);
    }

    #[test]
    fn malformed_hello_bodies_are_errors() {
        let hello = Hello { job_id: "job".into(), channel: ChannelId::new(0, 0, 0) };
        let Frame::Hello { body, .. } = hello.to_frame().expect("frame") else {
            panic!("not a hello frame");
        };
        let short = Hello::parse(&body[..10]).expect_err("short");
        assert_eq!(short.to_string(), "handshake frame: body is 10 bytes, expected at least 14");
        let cut = Hello::parse(&body[..body.len() - 1]).expect_err("cut");
        assert_eq!(cut.to_string(), "handshake frame: job id is 2 bytes, its length field says 3");
        let mut not_utf8 = body.clone();
        let last = not_utf8.len() - 1;
        not_utf8[last] = 0xff;
        assert_eq!(
            Hello::parse(&not_utf8).expect_err("utf8").to_string(),
            "handshake frame: job id is not UTF-8"
        );
    }
}
