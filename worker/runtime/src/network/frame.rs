//! The framing layer: every message on an exchange connection is one length-prefixed frame,
//!
//! ```text
//! frame := length: u32 big-endian (bytes after these 4, at least 1) | kind: u8 | payload
//! ```
//!
//! This module encodes and decodes frames and reads/writes them on a byte stream with a
//! maximum size, checked before anything is allocated. It knows the frame kinds but not the
//! protocol (what may follow what: `handshake`, `server`, `sender`) nor Arrow (the batch and
//! schema payloads are opaque bytes here, see `ipc`).

use std::borrow::Cow;
use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::error::{FrameError, RefusalReason};

/// The first bytes of every handshake payload, so that a stray client is told apart from a
/// peer of another protocol version.
pub(crate) const MAGIC: [u8; 4] = *b"MLRX";

const HELLO: u8 = 0x01;
const ACCEPT: u8 = 0x02;
const REFUSE: u8 = 0x03;
const SCHEMA: u8 = 0x10;
const BATCH: u8 = 0x11;
const WATERMARK: u8 = 0x12;
const BARRIER: u8 = 0x13;
const END_OF_STREAM: u8 = 0x14;
const CREDIT: u8 = 0x20;
const DONE: u8 = 0x21;

/// One frame. Data frames go sender → receiver, `Credit` and the handshake reply receiver →
/// sender.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Frame {
    /// The sender's handshake: [`MAGIC`], the protocol version, and the version's handshake
    /// body (see `handshake`), kept raw so that a peer of another version can still be told so.
    Hello {
        version: u16,
        body: Vec<u8>,
    },
    Accept {
        version: u16,
    },
    Refuse {
        version: u16,
        reason: RefusalReason,
        detail: String,
    },
    /// The Arrow IPC schema message that starts the channel's IPC stream.
    Schema(Vec<u8>),
    /// The Arrow IPC messages of one record batch (its dictionary batches, then the batch).
    Batch(Vec<u8>),
    Watermark(i64),
    Barrier(u64),
    EndOfStream,
    /// The receiver grants this many more messages.
    Credit(u32),
    /// The receiver has handed every message, EndOfStream included, to its consumer.
    Done,
}

impl Frame {
    fn kind(&self) -> u8 {
        match self {
            Frame::Hello { .. } => HELLO,
            Frame::Accept { .. } => ACCEPT,
            Frame::Refuse { .. } => REFUSE,
            Frame::Schema(_) => SCHEMA,
            Frame::Batch(_) => BATCH,
            Frame::Watermark(_) => WATERMARK,
            Frame::Barrier(_) => BARRIER,
            Frame::EndOfStream => END_OF_STREAM,
            Frame::Credit(_) => CREDIT,
            Frame::Done => DONE,
        }
    }

    /// A short name for error messages.
    pub(crate) fn name(&self) -> &'static str {
        kind_name(self.kind())
    }

    fn payload(&self) -> Cow<'_, [u8]> {
        match self {
            Frame::Hello { version, body } => {
                let mut out = Vec::with_capacity(6 + body.len());
                out.extend_from_slice(&MAGIC);
                out.extend_from_slice(&version.to_be_bytes());
                out.extend_from_slice(body);
                Cow::Owned(out)
            }
            Frame::Accept { version } => Cow::Owned(version.to_be_bytes().to_vec()),
            Frame::Refuse { version, reason, detail } => {
                let mut out = Vec::with_capacity(3 + detail.len());
                out.extend_from_slice(&version.to_be_bytes());
                out.push(reason.code());
                out.extend_from_slice(detail.as_bytes());
                Cow::Owned(out)
            }
            Frame::Schema(bytes) | Frame::Batch(bytes) => Cow::Borrowed(bytes),
            Frame::Watermark(w) => Cow::Owned(w.to_be_bytes().to_vec()),
            Frame::Barrier(id) => Cow::Owned(id.to_be_bytes().to_vec()),
            Frame::EndOfStream | Frame::Done => Cow::Borrowed(&[]),
            Frame::Credit(n) => Cow::Owned(n.to_be_bytes().to_vec()),
        }
    }

    /// The frame's length field: kind byte plus payload.
    pub(crate) fn encoded_len(&self) -> usize {
        1 + match self {
            Frame::Schema(bytes) | Frame::Batch(bytes) => bytes.len(),
            other => other.payload().len(),
        }
    }

    /// Decodes a frame from its kind and payload (the bytes after the kind byte).
    pub(crate) fn decode(kind: u8, payload: Vec<u8>) -> Result<Frame, FrameError> {
        let name = kind_name(kind);
        let bad = |detail: String| FrameError::BadPayload { kind: name, detail };
        let exact = |want: usize| {
            if payload.len() == want {
                Ok(())
            } else {
                Err(bad(format!("payload is {} bytes, expected {want}", payload.len())))
            }
        };
        Ok(match kind {
            HELLO => {
                if payload.len() < 6 {
                    return Err(bad(format!("payload is {} bytes, expected at least 6", payload.len())));
                }
                if payload[..4] != MAGIC {
                    return Err(bad("bad magic: not a Millrace exchange connection".into()));
                }
                let version = u16::from_be_bytes([payload[4], payload[5]]);
                Frame::Hello { version, body: payload[6..].to_vec() }
            }
            ACCEPT => {
                exact(2)?;
                Frame::Accept { version: u16::from_be_bytes([payload[0], payload[1]]) }
            }
            REFUSE => {
                if payload.len() < 3 {
                    return Err(bad(format!("payload is {} bytes, expected at least 3", payload.len())));
                }
                let version = u16::from_be_bytes([payload[0], payload[1]]);
                let reason = RefusalReason::from_code(payload[2])
                    .ok_or_else(|| bad(format!("unknown refusal reason {}", payload[2])))?;
                let detail = String::from_utf8(payload[3..].to_vec())
                    .map_err(|_| bad("reason text is not UTF-8".into()))?;
                Frame::Refuse { version, reason, detail }
            }
            SCHEMA => Frame::Schema(payload),
            BATCH => Frame::Batch(payload),
            WATERMARK => {
                exact(8)?;
                Frame::Watermark(i64::from_be_bytes(eight(&payload)))
            }
            BARRIER => {
                exact(8)?;
                Frame::Barrier(u64::from_be_bytes(eight(&payload)))
            }
            END_OF_STREAM => {
                exact(0)?;
                Frame::EndOfStream
            }
            CREDIT => {
                exact(4)?;
                let n = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                if n == 0 {
                    return Err(bad("a credit of 0".into()));
                }
                Frame::Credit(n)
            }
            DONE => {
                exact(0)?;
                Frame::Done
            }
            other => return Err(FrameError::UnknownKind(other)),
        })
    }
}

fn eight(payload: &[u8]) -> [u8; 8] {
    let mut out = [0; 8];
    out.copy_from_slice(&payload[..8]);
    out
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        HELLO => "handshake",
        ACCEPT => "accept",
        REFUSE => "refuse",
        SCHEMA => "schema",
        BATCH => "batch",
        WATERMARK => "watermark",
        BARRIER => "barrier",
        END_OF_STREAM => "end-of-stream",
        CREDIT => "credit",
        DONE => "done",
        _ => "unknown",
    }
}

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The stream failed or ended inside a frame: the peer is gone.
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Reads one frame. `Ok(None)` when the stream ends cleanly between frames; a stream that
/// ends inside a frame is an `UnexpectedEof` I/O error. The length is checked against
/// `max_frame_bytes` before the payload is allocated.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_frame_bytes: usize,
) -> Result<Option<Frame>, ReadError> {
    let mut header = [0u8; 4];
    let mut filled = 0;
    while filled < header.len() {
        let n = reader.read(&mut header[filled..]).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(
                io::Error::new(io::ErrorKind::UnexpectedEof, "stream ended inside a frame header").into()
            );
        }
        filled += n;
    }
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 {
        return Err(FrameError::Empty.into());
    }
    if len > max_frame_bytes {
        return Err(FrameError::TooLarge { len, max: max_frame_bytes }.into());
    }
    let kind = reader.read_u8().await?;
    let mut payload = vec![0u8; len - 1];
    reader.read_exact(&mut payload).await?;
    Ok(Some(Frame::decode(kind, payload)?))
}

/// Writes one frame (not flushed). Refuses a frame over `max_frame_bytes` before writing
/// anything, so the receiver never sees it.
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &Frame,
    max_frame_bytes: usize,
) -> Result<(), WriteError> {
    let len = frame.encoded_len();
    if len > max_frame_bytes {
        return Err(FrameError::TooLarge { len, max: max_frame_bytes }.into());
    }
    let len = u32::try_from(len).map_err(|_| FrameError::TooLarge { len, max: u32::MAX as usize })?;
    writer.write_all(&len.to_be_bytes()).await?;
    writer.write_u8(frame.kind()).await?;
    writer.write_all(&frame.payload()).await?;
    Ok(())
}

/// Why writing a frame failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn round_trip(frame: Frame) -> Frame {
        let mut bytes = Vec::new();
        write_frame(&mut bytes, &frame, 1 << 20).await.expect("write");
        assert_eq!(bytes.len(), 4 + frame.encoded_len());
        let mut reader = bytes.as_slice();
        let decoded = read_frame(&mut reader, 1 << 20).await.expect("read").expect("a frame");
        assert!(read_frame(&mut reader, 1 << 20).await.expect("clean end").is_none());
        decoded
    }

    #[tokio::test]
    async fn every_frame_kind_round_trips() {
        let frames = vec![
            Frame::Hello { version: 7, body: vec![1, 2, 3] },
            Frame::Accept { version: 1 },
            Frame::Refuse {
                version: 1,
                reason: RefusalReason::JobMismatch,
                detail: "expected job \"a\"".into(),
            },
            Frame::Schema(vec![9; 10]),
            Frame::Batch(vec![8; 1000]),
            Frame::Watermark(i64::MIN),
            Frame::Watermark(-5),
            Frame::Barrier(u64::MAX),
            Frame::EndOfStream,
            Frame::Credit(16),
            Frame::Done,
        ];
        for frame in frames {
            assert_eq!(round_trip(frame.clone()).await, frame);
        }
    }

    async fn read_raw(bytes: &[u8], max: usize) -> Result<Option<Frame>, ReadError> {
        let mut reader = bytes;
        read_frame(&mut reader, max).await
    }

    #[tokio::test]
    async fn oversized_frame_is_refused_before_allocation() {
        let bytes = [0xff, 0xff, 0xff, 0xff, BATCH];
        let err = read_raw(&bytes, 1024).await.expect_err("too large");
        assert!(
            matches!(err, ReadError::Frame(FrameError::TooLarge { len: 0xffff_ffff, max: 1024 })),
            "{err}"
        );
        assert_eq!(err.to_string(), "frame of 4294967295 bytes exceeds the maximum frame size of 1024 bytes");
    }

    #[tokio::test]
    async fn writing_an_oversized_frame_writes_nothing() {
        let mut bytes = Vec::new();
        let err = write_frame(&mut bytes, &Frame::Batch(vec![0; 100]), 50).await.expect_err("too large");
        assert!(matches!(err, WriteError::Frame(FrameError::TooLarge { len: 101, max: 50 })), "{err}");
        assert!(bytes.is_empty());
    }

    #[tokio::test]
    async fn malformed_frames_name_what_is_wrong() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![0, 0, 0, 0], "empty frame (length 0, no kind byte)"),
            (vec![0, 0, 0, 1, 0x7f], "unknown frame kind 0x7f"),
            (vec![0, 0, 0, 4, WATERMARK, 1, 2, 3], "watermark frame: payload is 3 bytes, expected 8"),
            (vec![0, 0, 0, 2, END_OF_STREAM, 0], "end-of-stream frame: payload is 1 bytes, expected 0"),
            (vec![0, 0, 0, 5, CREDIT, 0, 0, 0, 0], "credit frame: a credit of 0"),
            (vec![0, 0, 0, 4, REFUSE, 0, 1, 99], "refuse frame: unknown refusal reason 99"),
            (vec![0, 0, 0, 1, HELLO], "handshake frame: payload is 0 bytes, expected at least 6"),
            (
                vec![0, 0, 0, 7, HELLO, b'G', b'E', b'T', b' ', 0, 1],
                "handshake frame: bad magic: not a Millrace exchange connection",
            ),
        ];
        for (bytes, message) in cases {
            let err = read_raw(&bytes, 1024).await.expect_err(message);
            assert!(matches!(err, ReadError::Frame(_)), "{err}");
            assert_eq!(err.to_string(), message);
        }
    }

    #[tokio::test]
    async fn a_stream_ending_inside_a_frame_is_an_io_error() {
        for bytes in [vec![0, 0], vec![0, 0, 0, 9, BATCH, 1, 2]] {
            let err = read_raw(&bytes, 1024).await.expect_err("truncated");
            assert!(matches!(&err, ReadError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof), "{err}");
        }
    }
}
