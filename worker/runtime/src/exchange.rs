//! How the edges of a dataflow travel: in memory between subtasks of this process, over the
//! network exchange ([`crate::network`]) to subtasks in other worker processes.
//!
//! Slot sharing, as in Flink: slot `i` runs subtask `i` of every stage, so a forward edge
//! (subtask `i` to subtask `i`) never leaves its process, and only hash and single exchanges
//! cross processes. [`ExchangePlacement`] says which slots are in this process and where
//! the others' exchange servers listen; without one (`millrace-worker run`) every subtask is
//! local. This module owns the choice between the two kinds of [`Target`] and their
//! sending and closing; the executor owns the tasks.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use millrace_types::StreamMessage;
use tokio::sync::mpsc;

use crate::error::RuntimeError;
use crate::network::{ChannelId, Envelope, ExchangeServer, InboundChannel, RemoteSender, SenderOptions};

/// Where the subtasks of a job spread over processes run, as this process sees it.
pub struct ExchangePlacement {
    /// The slots of this process: it runs subtask `i` of every stage for each slot `i`.
    pub local_slots: BTreeSet<usize>,
    /// The exchange server (`host:port`) of the process running each other slot.
    pub peers: HashMap<usize, String>,
    /// The job attempt, named in every channel's handshake (a restarted job's channels
    /// never mix with the previous attempt's).
    pub job_id: String,
    /// This process's exchange server; the caller has begun `job_id` on it.
    pub server: Arc<ExchangeServer>,
    pub sender_options: SenderOptions,
}

impl fmt::Debug for ExchangePlacement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExchangePlacement")
            .field("local_slots", &self.local_slots)
            .field("peers", &self.peers)
            .field("job_id", &self.job_id)
            .field("server", &self.server.local_addr())
            .finish()
    }
}

/// Whether subtask `subtask` (of any stage) runs in this process.
pub(crate) fn is_local(placement: Option<&ExchangePlacement>, subtask: usize) -> bool {
    placement.is_none_or(|p| p.local_slots.contains(&subtask))
}

/// The subtasks of a stage with `parallelism` instances that run in this process, in order.
pub fn local_subtasks(placement: Option<&ExchangePlacement>, parallelism: usize) -> Vec<usize> {
    (0..parallelism).filter(|j| is_local(placement, *j)).collect()
}

/// Opens the inbound channel from a remote subtask of stage `stage` to local subtask `receiver`
/// of its downstream stage, delivering into `into`. `sender` is the sending subtask's index
/// among all senders of the receiving stage (its subtask number, after the senders of the
/// stage's earlier inputs for a join), which the receiver sees on every message.
pub(crate) fn expect_remote(
    placement: &ExchangePlacement,
    stage: usize,
    sender: usize,
    receiver: usize,
    into: mpsc::Sender<Envelope>,
) -> Result<InboundChannel, RuntimeError> {
    let channel = ChannelId::new(stage as u32, sender as u32, receiver as u32);
    placement.server.expect(channel, into).map_err(|e| RuntimeError::Exchange(e.to_string()))
}

/// Waits for an inbound channel to end; a lost or broken one fails the job.
pub(crate) async fn watch_inbound(inbound: InboundChannel) -> Result<(), RuntimeError> {
    inbound.finished().await.map(|_| ()).map_err(|e| RuntimeError::Exchange(e.to_string()))
}

/// One downstream subtask of a sending subtask.
pub(crate) enum Target {
    Local(mpsc::Sender<Envelope>),
    Remote(Box<RemoteTarget>),
}

/// A channel to a subtask in another process, connected at its first message.
pub(crate) struct RemoteTarget {
    addr: String,
    job_id: String,
    channel: ChannelId,
    options: SenderOptions,
    sender: Option<RemoteSender>,
}

/// Why a message did not reach its target.
pub(crate) enum SendError {
    /// A local target has stopped (its task failed or the job stops): stop quietly, the
    /// failing task reports the cause.
    Disconnected,
    /// A remote channel failed: the job must fail and restart.
    Failed(RuntimeError),
}

impl Target {
    /// The target for subtask `receiver` of the stage downstream of `stage`, sent to by a
    /// local subtask of `stage` whose index among the receiving stage's senders is `sender`
    /// (see [`expect_remote`]).
    pub(crate) fn new(
        placement: Option<&ExchangePlacement>,
        local: &[Option<mpsc::Sender<Envelope>>],
        stage: usize,
        sender: usize,
        receiver: usize,
    ) -> Result<Target, RuntimeError> {
        if let Some(Some(local)) = local.get(receiver) {
            return Ok(Target::Local(local.clone()));
        }
        let placement = placement.ok_or_else(|| {
            RuntimeError::InvalidDataflow(format!("no input channel for subtask {receiver}"))
        })?;
        let addr = placement.peers.get(&receiver).ok_or_else(|| {
            RuntimeError::InvalidDataflow(format!(
                "no worker runs slot {receiver} (downstream of stage {stage})"
            ))
        })?;
        Ok(Target::Remote(Box::new(RemoteTarget {
            addr: addr.clone(),
            job_id: placement.job_id.clone(),
            channel: ChannelId::new(stage as u32, sender as u32, receiver as u32),
            options: placement.sender_options.clone(),
            sender: None,
        })))
    }

    pub(crate) async fn send(&mut self, envelope: Envelope) -> Result<(), SendError> {
        match self {
            Target::Local(sender) => sender.send(envelope).await.map_err(|_| SendError::Disconnected),
            Target::Remote(remote) => remote.send(envelope.1).await,
        }
    }

    /// After EndOfStream: a remote channel waits until its receiver has everything.
    pub(crate) async fn close(self) -> Result<(), SendError> {
        match self {
            Target::Local(_) => Ok(()),
            Target::Remote(remote) => match remote.sender {
                Some(sender) => sender.close().await.map_err(|e| failed(remote.channel, e)),
                None => Ok(()),
            },
        }
    }
}

impl RemoteTarget {
    async fn send(&mut self, message: StreamMessage) -> Result<(), SendError> {
        if self.sender.is_none() {
            let sender =
                RemoteSender::connect_deferred(&self.addr, &self.job_id, self.channel, &self.options)
                    .await
                    .map_err(|e| failed(self.channel, e))?;
            self.sender = Some(sender);
        }
        match self.sender.as_mut() {
            Some(sender) => sender.send(message).await.map_err(|e| failed(self.channel, e)),
            None => Err(SendError::Disconnected),
        }
    }
}

fn failed(channel: ChannelId, err: crate::network::NetworkError) -> SendError {
    SendError::Failed(RuntimeError::Exchange(format!("channel {channel}: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_placement_every_subtask_is_local() {
        assert_eq!(local_subtasks(None, 3), vec![0, 1, 2]);
    }
}
