//! The coordinator's workers: it accepts their RPC connections, registers each (an id, its
//! slots and exchange address), heartbeats them, and turns everything that happens on the
//! connections into [`PoolEvent`]s for the one task that runs the job. A connection that
//! closes, breaks or stays silent past the heartbeat timeout is a worker that left.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::rpc::{HEARTBEAT_INTERVAL, ToCoordinator, ToWorker, read_message, write_message};

/// A registered worker.
#[derive(Debug, Clone)]
pub struct WorkerHandle {
    pub id: u64,
    pub slots: usize,
    pub data_addr: String,
    pub tx: mpsc::UnboundedSender<ToWorker>,
}

#[derive(Debug)]
pub enum PoolEvent {
    Joined(WorkerHandle),
    Message(u64, ToCoordinator),
    Left(u64, String),
}

/// Accepts worker connections until the process ends.
pub async fn accept_workers(listener: TcpListener, events: mpsc::UnboundedSender<PoolEvent>) {
    let ids = Arc::new(AtomicU64::new(1));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let id = ids.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_worker(stream, peer.to_string(), id, events.clone()));
            }
            Err(err) => {
                tracing::warn!(%err, "coordinator: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_worker(stream: TcpStream, peer: String, id: u64, events: mpsc::UnboundedSender<PoolEvent>) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let (slots, data_addr) = match read_message::<ToCoordinator>(&mut reader).await {
        Ok(ToCoordinator::Register { slots, data_addr }) => (slots, data_addr),
        Ok(other) => {
            tracing::warn!(%peer, ?other, "coordinator: a connection that did not register first");
            return;
        }
        Err(err) => {
            tracing::warn!(%peer, %err, "coordinator: a connection that did not register");
            return;
        }
    };
    if write_message(&mut writer, &ToWorker::Registered { worker: id }).await.is_err() {
        return;
    }
    tracing::info!(worker = id, %peer, slots, %data_addr, "worker registered");
    let (tx, mut outgoing) = mpsc::unbounded_channel::<ToWorker>();
    if events.send(PoolEvent::Joined(WorkerHandle { id, slots, data_addr, tx })).is_err() {
        return;
    }
    let mut writing = tokio::spawn(async move {
        let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
        loop {
            let message = tokio::select! {
                message = outgoing.recv() => match message {
                    Some(message) => message,
                    None => return "the coordinator dropped the worker".to_string(),
                },
                _ = heartbeat.tick() => ToWorker::Heartbeat,
            };
            if let Err(err) = write_message(&mut writer, &message).await {
                return err.to_string();
            }
        }
    });
    let why = loop {
        let message = tokio::select! {
            message = read_message::<ToCoordinator>(&mut reader) => message,
            why = &mut writing => break why.unwrap_or_else(|e| e.to_string()),
        };
        match message {
            Ok(ToCoordinator::Heartbeat) => {}
            Ok(message) => {
                if events.send(PoolEvent::Message(id, message)).is_err() {
                    break "the coordinator stopped".to_string();
                }
            }
            Err(err) => break err.to_string(),
        }
    };
    writing.abort();
    tracing::warn!(worker = id, %peer, %why, "worker left");
    let _ = events.send(PoolEvent::Left(id, why));
}

/// The registered workers, as the job's task sees them.
pub struct Pool {
    pub workers: BTreeMap<u64, WorkerHandle>,
    pub events: mpsc::UnboundedReceiver<PoolEvent>,
}

impl Pool {
    pub fn slots(&self) -> usize {
        self.workers.values().map(|w| w.slots).sum()
    }

    /// Applies a join or leave; hands every event back for the caller to act on.
    pub fn apply(&mut self, event: PoolEvent) -> PoolEvent {
        match &event {
            PoolEvent::Joined(worker) => {
                self.workers.insert(worker.id, worker.clone());
            }
            PoolEvent::Left(id, _) => {
                self.workers.remove(id);
            }
            PoolEvent::Message(..) => {}
        }
        event
    }

    /// Slot sharing: the first `parallelism` slots, worker by worker in registration order;
    /// slot `i` runs subtask `i` of every stage. `None` while there are not enough slots.
    pub fn assign(&self, parallelism: usize) -> Option<BTreeMap<u64, Vec<usize>>> {
        if self.slots() < parallelism {
            return None;
        }
        let mut assigned = BTreeMap::new();
        let mut next = 0;
        for worker in self.workers.values() {
            if next == parallelism {
                break;
            }
            let take = worker.slots.min(parallelism - next);
            if take > 0 {
                assigned.insert(worker.id, (next..next + take).collect());
                next += take;
            }
        }
        Some(assigned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(id: u64, slots: usize) -> WorkerHandle {
        let (tx, _rx) = mpsc::unbounded_channel();
        WorkerHandle { id, slots, data_addr: format!("127.0.0.1:{id}"), tx }
    }

    #[test]
    fn slots_are_assigned_in_registration_order_once_there_are_enough() {
        let (_tx, events) = mpsc::unbounded_channel();
        let mut pool = Pool { workers: BTreeMap::new(), events };
        pool.apply(PoolEvent::Joined(worker(3, 2)));
        assert_eq!(pool.assign(4), None);
        pool.apply(PoolEvent::Joined(worker(5, 2)));
        pool.apply(PoolEvent::Joined(worker(7, 2)));
        let assigned = pool.assign(3).expect("enough slots");
        assert_eq!(assigned.get(&3), Some(&vec![0, 1]));
        assert_eq!(assigned.get(&5), Some(&vec![2]));
        assert!(!assigned.contains_key(&7), "a spare worker gets nothing");
        pool.apply(PoolEvent::Left(3, "killed".into()));
        assert_eq!(pool.assign(4).map(|a| a.len()), Some(2));
    }
}
