//! The network exchange: the edges of a dataflow whose two subtasks run in different worker
//! processes, carried over TCP with Flink's credit-based flow control, so that a slow
//! receiver backpressures its senders across processes just as a full local channel does.
//!
//! This module owns the transport only: connections, framing, the handshake, credits and
//! Arrow IPC encoding. It does not decide which edges are remote or where subtasks run (the
//! executor and the coordinator do), and it never touches operators.
//!
//! # Channels
//!
//! A [`ChannelId`] `{ stage, sender, receiver }` names the edge from subtask `sender` of
//! stage `stage` to subtask `receiver` of stage `stage + 1`. Every channel has its own TCP
//! connection, so a blocked channel never holds up another (no head-of-line blocking); the
//! receiving worker listens on one port for all of them ([`ExchangeServer`]), the sending
//! subtask opens its connection with [`RemoteSender::connect`].
//!
//! # Wire format (protocol version 1)
//!
//! Every frame is `length: u32 BE | kind: u8 | payload`, the length counting kind and
//! payload; frames above the maximum frame size (default 64 MiB, both ends) are refused
//! before allocation. Integers are big-endian.
//!
//! | kind | frame | direction | payload |
//! | --- | --- | --- | --- |
//! | 0x01 | Hello | sender → receiver | `"MLRX"`, version u16, stage u32, sender u32, receiver u32, job id length u16, job id UTF-8 |
//! | 0x02 | Accept | receiver → sender | version u16 |
//! | 0x03 | Refuse | receiver → sender | version u16, reason u8 (1 unknown channel, 2 version mismatch, 3 job mismatch, 4 already connected), reason text UTF-8 |
//! | 0x10 | Schema | sender → receiver | the Arrow IPC schema message (encapsulated format) |
//! | 0x11 | Batch | sender → receiver | the Arrow IPC dictionary messages and the record-batch message of one batch |
//! | 0x12 | Watermark | sender → receiver | i64 |
//! | 0x13 | Barrier | sender → receiver | checkpoint id u64 |
//! | 0x14 | EndOfStream | sender → receiver | empty |
//! | 0x20 | Credit | receiver → sender | u32 > 0, messages granted |
//! | 0x21 | Done | receiver → sender | empty: everything, EndOfStream included, is in the local input |
//!
//! A connection is: Hello; Accept and Credit(initial), or Refuse and close; then Schema; then
//! any number of Batch, Watermark and Barrier frames, and EndOfStream; then the sender closes
//! its write side, and the receiver, once it has handed everything to its local input, sends
//! Done and closes its own. Credit frames flow back on the same connection at any time after Accept. The
//! channel's frames form one Arrow IPC stream (schema once, dictionaries tracked across
//! batches; see `ipc` for why).
//!
//! # Credits
//!
//! The receiver grants an initial credit, by default the capacity of the local channel the
//! messages go into, and returns one credit for each message it hands to that channel,
//! which it can do only once the local consumer has taken an earlier one. The sender spends
//! one credit per message (any kind) and waits when it has none, so at most `credit`
//! messages are in flight per channel and the socket buffers never fill up behind a slow
//! consumer. The schema frame is not counted.
//!
//! # Clean end versus a lost peer
//!
//! A receiver's channel ends cleanly only when EndOfStream arrived (and is in the local
//! input): [`InboundChannel::finished`] returns `Ok`. A connection that ends without it (the
//! sender's process was killed, the network failed), a malformed frame or a protocol
//! violation makes `finished` return an error, and nothing more is forwarded; the job must
//! fail and restart from its last checkpoint. The local input itself only ever sees the
//! messages that arrived, never a made-up EndOfStream, so the consumer must watch the
//! handle (the executor's input loop treats a closed channel as the end). A sender learns
//! that its receiver is gone from its next [`RemoteSender::send`], immediately also when it
//! is waiting for credit.
//!
//! A peer whose host vanishes without closing its sockets (no FIN or RST) is found by TCP
//! keepalive and TCP_USER_TIMEOUT ([`Liveness`], about 25–30 s by default), not at once;
//! there are no application heartbeats.

mod channel;
mod error;
mod frame;
mod handshake;
mod inbound;
mod ipc;
mod liveness;
mod sender;
mod server;

#[cfg(test)]
mod tests;

pub use channel::{ChannelId, DEFAULT_MAX_FRAME_BYTES, ReceiverOptions, SenderOptions};
pub use error::{FrameError, NetworkError, RefusalReason};
pub use handshake::PROTOCOL_VERSION;
pub use inbound::InboundSummary;
pub use liveness::Liveness;
pub use sender::{RemoteSender, SenderStats};
pub use server::{ExchangeServer, InboundChannel};

/// What travels on a subtask's input channel: the index of the sending subtask, and the
/// message (the executor's envelope).
pub type Envelope = (usize, millrace_types::StreamMessage);
