//! The RPC between the coordinator and its workers: one TCP connection per worker, opened by
//! the worker, carrying length-prefixed JSON messages both ways (`length: u32 BE | JSON`,
//! at most [`MAX_MESSAGE_BYTES`]). Operator state never travels here: workers write it to
//! checkpoint storage and acknowledge with the files. Sink pre-commit state (small) travels
//! base64-encoded inside the JSON.
//!
//! A connection is: the worker's [`ToCoordinator::Register`], the coordinator's
//! [`ToWorker::Registered`], then any messages in both directions. Both ends send
//! [`ToCoordinator::Heartbeat`] / [`ToWorker::Heartbeat`] every [`HEARTBEAT_INTERVAL`]; a peer
//! silent for [`HEARTBEAT_TIMEOUT`] (a hung process, a vanished host) counts as gone, like a
//! closed connection. Every job message names its `attempt`: messages of an attempt that is
//! no longer running are ignored.
//!
//! This module owns the messages and their framing only; `coordinator_role` and
//! `worker_role` own what the messages mean.

use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::task_state::WrittenAck;

/// The largest message either end accepts.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a worker tells the coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ToCoordinator {
    #[serde(rename_all = "camelCase")]
    Register {
        slots: usize,
        data_addr: String,
    },
    Heartbeat,
    /// A task's barriers aligned, it snapshotted, and the worker wrote its state files.
    #[serde(rename_all = "camelCase")]
    Ack {
        attempt: String,
        ack: WrittenAck,
    },
    /// A task's input ended (see `TaskEvent::Finished`).
    #[serde(rename_all = "camelCase")]
    TaskFinished {
        attempt: String,
        stage: usize,
        subtask: usize,
        positions: Option<Vec<(i32, i64)>>,
    },
    /// A sink instance pre-committed checkpoint `checkpoint`. `side` 0 is the sink table, 1
    /// the late side output.
    #[serde(rename_all = "camelCase")]
    SinkAck {
        attempt: String,
        side: usize,
        subtask: usize,
        checkpoint: u64,
        state: Option<String>,
    },
    /// Every task of this worker has finished (bounded input); its sinks wait for the final
    /// checkpoint's barrier and commit.
    #[serde(rename_all = "camelCase")]
    Ended {
        attempt: String,
    },
    /// The worker's part of the attempt failed.
    #[serde(rename_all = "camelCase")]
    Failed {
        attempt: String,
        error: String,
    },
    /// The worker has stopped the attempt and joined its connector threads.
    #[serde(rename_all = "camelCase")]
    Cancelled {
        attempt: String,
    },
}

/// What the coordinator tells a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ToWorker {
    Registered {
        worker: u64,
    },
    Heartbeat,
    Deploy(Box<Deployment>),
    /// Sources inject the barrier of checkpoint `checkpoint`. `previous`: the last completed
    /// checkpoint in the job's storage, whose unchanged state files the tasks reference.
    #[serde(rename_all = "camelCase")]
    Barrier {
        attempt: String,
        checkpoint: u64,
        previous: Option<u64>,
    },
    /// For a sink instance: a barrier (its upstream finished, or the final checkpoint) or the
    /// commit of a completed checkpoint.
    #[serde(rename_all = "camelCase")]
    Sink {
        attempt: String,
        side: usize,
        instance: usize,
        commit: bool,
        checkpoint: u64,
    },
    /// Stop the attempt (after everything sent before it was delivered).
    #[serde(rename_all = "camelCase")]
    Cancel {
        attempt: String,
    },
}

/// A worker's part of a job attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// Unique per attempt (and per coordinator run); names the network exchange's channels.
    pub attempt: String,
    pub sql: String,
    pub parallelism: usize,
    pub max_parallelism: u32,
    pub channel_capacity: usize,
    /// The job's Kafka defaults, client properties excepted (each worker reads its own).
    pub kafka: millrace_connectors::KafkaDefaults,
    /// The checkpoint storage (the job takes checkpoints: sources inject barriers, tasks
    /// write their state files there and acknowledge).
    pub checkpoint_storage: Option<String>,
    pub restore: Option<RestorePoint>,
    pub allow_non_restored_state: bool,
    /// The limit on the operator state of each worker process (the coordinator's
    /// `--state-max-bytes`, replaced by the worker's own); the job's SQL may set one too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_max_bytes: Option<u64>,
    /// The slots this worker runs (slot `i` runs subtask `i` of every stage).
    pub slots: Vec<usize>,
    /// The exchange address of the worker running each slot (all slots), as pairs: an
    /// internally tagged enum cannot carry integer map keys through JSON.
    pub peers: Vec<(usize, String)>,
}

/// The snapshot an attempt starts from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestorePoint {
    /// A checkpoint storage root with `checkpoint_id`, or a savepoint folder without.
    pub url: String,
    pub checkpoint_id: Option<u64>,
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer closed the connection")]
    Closed,
    #[error("a message of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("no message for {} s", HEARTBEAT_TIMEOUT.as_secs())]
    Silent,
}

/// Writes one message.
pub async fn write_message<T: Serialize>(
    writer: &mut (impl AsyncWrite + Unpin),
    message: &T,
) -> Result<(), RpcError> {
    let body = serde_json::to_vec(message).map_err(|e| RpcError::Malformed(e.to_string()))?;
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(RpcError::TooLarge(body.len()));
    }
    writer.write_all(&(body.len() as u32).to_be_bytes()).await?;
    writer.write_all(&body).await?;
    writer.flush().await?;
    Ok(())
}

/// Reads one message, waiting at most [`HEARTBEAT_TIMEOUT`] for it to start.
pub async fn read_message<T: for<'de> Deserialize<'de>>(
    reader: &mut (impl AsyncRead + Unpin),
) -> Result<T, RpcError> {
    let mut length = [0u8; 4];
    match tokio::time::timeout(HEARTBEAT_TIMEOUT, reader.read_exact(&mut length)).await {
        Err(_) => return Err(RpcError::Silent),
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Err(RpcError::Closed),
        Ok(Err(err)) => return Err(err.into()),
        Ok(Ok(_)) => {}
    }
    let length = u32::from_be_bytes(length) as usize;
    if length > MAX_MESSAGE_BYTES {
        return Err(RpcError::TooLarge(length));
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map_err(|e| RpcError::Malformed(e.to_string()))
}

pub fn encode_bytes(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn decode_bytes(text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| format!("bad base64: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_round_trip_and_garbage_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let sent = ToCoordinator::SinkAck {
            attempt: "a1".into(),
            side: 0,
            subtask: 2,
            checkpoint: 7,
            state: Some(encode_bytes(b"{\"x\":1}")),
        };
        write_message(&mut a, &sent).await.expect("write");
        let got: ToCoordinator = read_message(&mut b).await.expect("read");
        match got {
            ToCoordinator::SinkAck { subtask: 2, checkpoint: 7, state: Some(state), .. } => {
                assert_eq!(decode_bytes(&state).expect("base64"), b"{\"x\":1}");
            }
            other => panic!("unexpected {other:?}"),
        }
        a.write_all(&5u32.to_be_bytes()).await.expect("write");
        a.write_all(b"nope!").await.expect("write");
        assert!(matches!(read_message::<ToWorker>(&mut b).await, Err(RpcError::Malformed(_))));
        a.write_all(&u32::MAX.to_be_bytes()).await.expect("write");
        assert!(matches!(read_message::<ToWorker>(&mut b).await, Err(RpcError::TooLarge(_))));
        drop(a);
        assert!(matches!(read_message::<ToWorker>(&mut b).await, Err(RpcError::Closed)));
    }
}
