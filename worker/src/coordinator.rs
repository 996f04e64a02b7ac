//! The checkpoint coordinator of a job: it triggers checkpoints on an interval (barriers
//! injected at the sources through the [`BarrierTrigger`]), collects every task's
//! acknowledgement (operator snapshots, or the state files a worker process already wrote
//! for its tasks; source positions) and every sink's pre-commit, writes the state files it
//! holds and then the `_metadata` (last: a checkpoint exists only once it is complete),
//! tells the sinks to commit, and keeps the last N checkpoints. A checkpoint
//! that does not complete within its timeout fails: it is counted, its files are cleaned up
//! by retention, and the job goes on.
//!
//! One checkpoint is in flight at a time. Tasks that have finished (their input ended) need
//! not acknowledge; a sink whose upstream task has finished gets its barrier from here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use millrace_checkpoint::{
    CheckpointStorage, OperatorState, SnapshotKind, SnapshotMetadata, SourcePosition,
    StateScope as StoredScope, TableState,
};
use millrace_connectors::{BarrierTrigger, SinkAck};
use millrace_runtime::{TaskAck, TaskEvent};
use millrace_types::{CheckpointId, SinkMessage};
use tokio::sync::{mpsc, oneshot};

pub use crate::checkpoint_status::{CheckpointMetrics, CheckpointStatus, JobStatusView};
use crate::incremental::{FileIndex, Slot, StateWriter};
use crate::task_state::{WrittenAck, merge_written, write_task_state};

/// How a job takes checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointSettings {
    /// The job's checkpoint storage root (`file:///…`).
    pub storage_url: String,
    pub interval: Duration,
    /// Completed checkpoints kept (older ones and failed ones are deleted).
    pub retained: usize,
    /// A checkpoint not complete after this long fails.
    pub timeout: Duration,
    /// Fault injection for tests (`MILLRACE_FAULT_CRASH_AFTER_CHECKPOINT`): the process
    /// aborts right after checkpoint N's metadata is written, before any sink commits it.
    pub crash_after_checkpoint: Option<u64>,
}

impl Default for CheckpointSettings {
    fn default() -> Self {
        Self {
            storage_url: String::new(),
            interval: Duration::from_secs(10),
            retained: 3,
            timeout: Duration::from_secs(600),
            crash_after_checkpoint: None,
        }
    }
}

/// A savepoint written by [`Control::Savepoint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavepointWritten {
    pub checkpoint_id: u64,
    /// The savepoint's folder URL (what `--restore-from` takes).
    pub location: String,
}

/// What the job asks of the coordinator.
#[derive(Debug)]
pub enum Control {
    /// Take a checkpoint now and answer once it is complete and committed (a stop keeps
    /// everything up to it and nothing after it). Once the job is stopping, answers with
    /// the checkpoint it stops at.
    CheckpointNow(oneshot::Sender<Result<u64, String>>),
    /// Take a checkpoint now and copy it, self-contained, into the empty folder `target`.
    /// With `stop`, the job stops at it: no later checkpoint completes.
    Savepoint { target: String, stop: bool, reply: oneshot::Sender<Result<SavepointWritten, String>> },
    /// Every task has finished: take the final checkpoint (sinks only, marked finished),
    /// commit it, and answer.
    Finish(oneshot::Sender<Result<u64, String>>),
}

/// One sink side of the job (the sink table, or the late side output).
pub struct SinkSide {
    /// The id its pre-commit state is filed under (`sink.<table>`).
    pub operator_id: String,
    /// One sender per instance, for barriers of finished upstreams and for commits.
    pub senders: Vec<mpsc::Sender<SinkMessage>>,
    pub acks: mpsc::UnboundedReceiver<SinkAck>,
    /// The stage whose subtask `i` feeds instance `i`.
    pub upstream_stage: usize,
}

/// The job's shape, as the coordinator counts acknowledgements.
pub struct JobShape {
    pub job: String,
    pub parallelism: usize,
    pub max_parallelism: u32,
    /// Parallelism of every stage.
    pub stage_parallelism: Vec<usize>,
    /// The source table and its topic (empty when the source is not Kafka).
    pub source_table: String,
    pub source_topic: String,
    /// The further sources of a job with joins: the stage reading each, its table and topic.
    pub join_sources: Vec<(usize, String, String)>,
}

struct Pending {
    id: u64,
    started: Instant,
    tasks: HashMap<(usize, usize), Acked>,
    sinks: Vec<HashMap<usize, Option<Vec<u8>>>>,
    final_checkpoint: bool,
    waiters: Vec<Waiter>,
}

/// A task's acknowledgement: its snapshot (the coordinator writes the state files), or the
/// files its worker already wrote.
enum Acked {
    Snapshot(TaskAck),
    Written(WrittenAck),
}

/// Someone waiting for the pending checkpoint.
enum Waiter {
    /// A stop: answered with the checkpoint id; the job stops there.
    Stop(oneshot::Sender<Result<u64, String>>),
    Savepoint {
        target: String,
        stop: bool,
        reply: oneshot::Sender<Result<SavepointWritten, String>>,
    },
}

impl Waiter {
    fn stops(&self) -> bool {
        matches!(self, Waiter::Stop(_) | Waiter::Savepoint { stop: true, .. })
    }

    fn fail(self, why: String) {
        match self {
            Waiter::Stop(reply) => {
                let _ = reply.send(Err(why));
            }
            Waiter::Savepoint { reply, .. } => {
                let _ = reply.send(Err(why));
            }
        }
    }
}

pub struct Coordinator {
    storage: CheckpointStorage,
    settings: CheckpointSettings,
    shape: JobShape,
    barriers: BarrierTrigger,
    events: mpsc::UnboundedReceiver<TaskEvent>,
    /// Acknowledgements of tasks that wrote their own state files (workers of a job spread
    /// over processes).
    written_acks: Option<mpsc::UnboundedReceiver<WrittenAck>>,
    sinks: Vec<SinkSide>,
    metrics: CheckpointMetrics,
    finished: HashSet<(usize, usize)>,
    next_id: u64,
    pending: Option<Pending>,
    /// Set once a checkpoint asked for by [`Control::CheckpointNow`] completed: the job is
    /// stopping there, and no later checkpoint may complete (its sinks would not commit it).
    stopping: bool,
    last_completed: Option<u64>,
    status: JobStatusView,
    /// Waiters for the checkpoint after the pending one.
    queued: Vec<Waiter>,
    /// Where the sources of finished first-stage tasks ended, by subtask: every checkpoint
    /// that subtask did not acknowledge (it had finished) records them.
    finished_positions: BTreeMap<(usize, usize), BTreeMap<i32, i64>>,
    /// The files of the last completed (or the restored) checkpoint, which the next one
    /// references where its state has not changed.
    last_files: FileIndex,
}

impl Coordinator {
    /// `last_completed`: the checkpoint the job restored from (ids go on after it).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        storage: CheckpointStorage,
        settings: CheckpointSettings,
        shape: JobShape,
        barriers: BarrierTrigger,
        events: mpsc::UnboundedReceiver<TaskEvent>,
        sinks: Vec<SinkSide>,
        metrics: CheckpointMetrics,
        last_completed: Option<u64>,
        status: JobStatusView,
    ) -> Self {
        Self {
            storage,
            settings,
            shape,
            barriers,
            events,
            written_acks: None,
            sinks,
            metrics,
            finished: HashSet::new(),
            next_id: last_completed.map_or(1, |id| id + 1),
            pending: None,
            stopping: false,
            last_completed,
            status,
            queued: Vec::new(),
            finished_positions: BTreeMap::new(),
            last_files: FileIndex::default(),
        }
    }

    /// Numbers new checkpoints after `newest` too (the newest checkpoint already in storage),
    /// so a job restored from an older savepoint never reuses an id, nor overwrites the state
    /// files of a checkpoint that later ones may reference.
    pub fn numbering_after(mut self, newest: Option<u64>) -> Self {
        if let Some(newest) = newest {
            self.next_id = self.next_id.max(newest + 1);
        }
        self
    }

    /// Takes acknowledgements whose state files their tasks wrote themselves from `acks` too.
    pub fn with_written_acks(mut self, acks: mpsc::UnboundedReceiver<WrittenAck>) -> Self {
        self.written_acks = Some(acks);
        self
    }

    /// Runs until `control` closes. Errors only when storage refuses a completed checkpoint's
    /// commit protocol in a way the job cannot go on from.
    pub async fn run(mut self, mut control: mpsc::Receiver<Control>) {
        self.last_files = self.restored_files().await;
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + self.settings.interval,
            self.settings.interval,
        );
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.pending.as_ref().map(|p| p.started + self.settings.timeout);
            let sink_acks = futures_first_ack(&mut self.sinks);
            tokio::select! {
                _ = ticker.tick() => {
                    if self.pending.is_none() && !self.stopping {
                        self.trigger(false, None).await;
                    }
                }
                Some(event) = self.events.recv() => self.on_task_event(event).await,
                Some(ack) = next_written(&mut self.written_acks) => self.on_written_ack(ack),
                Some((side, ack)) = sink_acks => self.on_sink_ack(side, ack),
                _ = sleep_until(deadline), if deadline.is_some() => {
                    self.fail_pending("timed out");
                }
                request = control.recv() => match request {
                    None => return,
                    Some(Control::CheckpointNow(reply)) => {
                        if self.stopping {
                            let _ = reply.send(self.last_completed.ok_or_else(|| "no checkpoint completed".to_string()));
                        } else {
                            self.wait_for_checkpoint(Waiter::Stop(reply)).await;
                        }
                    }
                    Some(Control::Savepoint { target, stop, reply }) => {
                        if self.stopping {
                            let _ = reply.send(Err("the job is stopping".into()));
                        } else {
                            self.wait_for_checkpoint(Waiter::Savepoint { target, stop, reply }).await;
                        }
                    }
                    Some(Control::Finish(reply)) => {
                        if self.pending.is_some() {
                            self.fail_pending("superseded by the final checkpoint");
                        }
                        self.trigger(true, Some(Waiter::Stop(reply))).await;
                    }
                },
            }
            self.complete_if_acknowledged().await;
        }
    }

    /// The files of the checkpoint the job restored from, when it is one of this job's own
    /// checkpoints (a savepoint's files live elsewhere and are not referenced).
    async fn restored_files(&self) -> FileIndex {
        let Some(id) = self.last_completed else { return FileIndex::default() };
        match self.storage.load_checkpoint(id).await {
            Ok(metadata) => {
                let files = FileIndex::of_checkpoint(&metadata);
                tracing::debug!(
                    checkpoint = id,
                    files = files.len(),
                    "the next checkpoint may reference the restored one's files"
                );
                files
            }
            Err(err) => {
                tracing::debug!(checkpoint = id, %err, "not restored from a checkpoint of this storage; the next checkpoint writes all its state");
                FileIndex::default()
            }
        }
    }

    /// Attaches `waiter` to the pending checkpoint, or triggers one for it. A savepoint
    /// needs a checkpoint triggered after it was asked for, so it never joins one in flight.
    async fn wait_for_checkpoint(&mut self, waiter: Waiter) {
        match self.pending.as_mut() {
            Some(pending) if !pending.final_checkpoint && matches!(waiter, Waiter::Stop(_)) => {
                pending.waiters.push(waiter)
            }
            // Let the pending one finish; the savepoint's own follows right after.
            Some(pending) if !pending.final_checkpoint => self.queued.push(waiter),
            Some(_) => waiter.fail("the job's input has ended".into()),
            None => self.trigger(false, Some(waiter)).await,
        }
    }

    async fn trigger(&mut self, final_checkpoint: bool, waiter: Option<Waiter>) {
        let id = self.next_id;
        self.next_id += 1;
        tracing::debug!(checkpoint = id, final_checkpoint, "triggering checkpoint");
        // Savepoints that waited for the checkpoint in flight are served by this one, whatever
        // triggered it (the interval may come first); a final checkpoint ends the input.
        let mut waiters: Vec<Waiter> = waiter.into_iter().collect();
        if final_checkpoint {
            for queued in self.queued.drain(..) {
                queued.fail("the job's input has ended".into());
            }
        } else {
            waiters.append(&mut self.queued);
        }
        self.pending = Some(Pending {
            id,
            started: Instant::now(),
            tasks: HashMap::new(),
            sinks: self.sinks.iter().map(|_| HashMap::new()).collect(),
            final_checkpoint,
            waiters,
        });
        if !final_checkpoint {
            self.barriers.request(CheckpointId(id));
        }
        // Sinks whose upstream task has finished get the barrier from here.
        for side in 0..self.sinks.len() {
            for instance in 0..self.sinks[side].senders.len() {
                let upstream = (self.sinks[side].upstream_stage, instance);
                if final_checkpoint || self.finished.contains(&upstream) {
                    self.send_to_sink(side, instance, SinkMessage::Barrier(CheckpointId(id))).await;
                }
            }
        }
    }

    async fn send_to_sink(&self, side: usize, instance: usize, message: SinkMessage) {
        if let Some(sender) = self.sinks[side].senders.get(instance)
            && sender.send(message).await.is_err()
        {
            tracing::debug!(sink = %self.sinks[side].operator_id, instance, "sink has stopped");
        }
    }

    async fn on_task_event(&mut self, event: TaskEvent) {
        match event {
            TaskEvent::Finished { stage, subtask, positions } => {
                self.finished.insert((stage, subtask));
                if let Some(positions) = positions {
                    self.finished_positions
                        .insert((stage, subtask), positions.into_iter().map(|(p, o)| (p.0, o)).collect());
                }
                // Its sink may still wait for the pending checkpoint's barrier.
                let Some((id, acked)) =
                    self.pending.as_ref().map(|p| (p.id, p.tasks.contains_key(&(stage, subtask))))
                else {
                    return;
                };
                if acked {
                    return;
                }
                for side in 0..self.sinks.len() {
                    if self.sinks[side].upstream_stage == stage {
                        self.send_to_sink(side, subtask, SinkMessage::Barrier(CheckpointId(id))).await;
                    }
                }
            }
            TaskEvent::Ack(ack) => match self.pending.as_mut() {
                Some(pending) if pending.id == ack.checkpoint.0 => {
                    pending.tasks.insert((ack.stage, ack.subtask), Acked::Snapshot(ack));
                }
                _ => {
                    tracing::debug!(checkpoint = %ack.checkpoint, "acknowledgement of a checkpoint no longer pending")
                }
            },
        }
    }

    fn on_written_ack(&mut self, ack: WrittenAck) {
        match self.pending.as_mut() {
            Some(pending) if pending.id == ack.checkpoint => {
                pending.tasks.insert((ack.stage, ack.subtask), Acked::Written(ack));
            }
            _ => tracing::debug!(
                checkpoint = ack.checkpoint,
                "acknowledgement of a checkpoint no longer pending"
            ),
        }
    }

    fn on_sink_ack(&mut self, side: usize, ack: SinkAck) {
        match self.pending.as_mut() {
            Some(pending) if pending.id == ack.checkpoint.0 => {
                pending.sinks[side].insert(ack.subtask, ack.state);
            }
            _ => {
                tracing::debug!(checkpoint = %ack.checkpoint, "sink acknowledgement of a checkpoint no longer pending")
            }
        }
    }

    fn fail_pending(&mut self, why: &str) {
        if let Some(pending) = self.pending.take() {
            tracing::warn!(checkpoint = pending.id, why, "checkpoint failed");
            self.metrics.failed.inc();
            self.status.update(|s| s.checkpoints_failed += 1);
            for waiter in pending.waiters {
                waiter.fail(format!("checkpoint {} failed: {why}", pending.id));
            }
        }
    }

    fn acknowledged(&self, pending: &Pending) -> bool {
        let tasks_done = pending.final_checkpoint
            || self.shape.stage_parallelism.iter().enumerate().all(|(stage, p)| {
                (0..*p).all(|subtask| {
                    pending.tasks.contains_key(&(stage, subtask)) || self.finished.contains(&(stage, subtask))
                })
            });
        let sinks_done =
            self.sinks.iter().zip(&pending.sinks).all(|(side, acked)| acked.len() == side.senders.len());
        tasks_done && sinks_done
    }

    async fn complete_if_acknowledged(&mut self) {
        if self.pending.is_none() && !self.queued.is_empty() && !self.stopping {
            let mut queued = std::mem::take(&mut self.queued).into_iter();
            if let Some(first) = queued.next() {
                self.trigger(false, Some(first)).await;
                if let Some(pending) = self.pending.as_mut() {
                    pending.waiters.extend(queued);
                }
            }
            return;
        }
        if !self.pending.as_ref().is_some_and(|p| self.acknowledged(p)) {
            return;
        }
        let Some(pending) = self.pending.take() else { return };
        let id = pending.id;
        let outcome = self.write(&pending).await;
        match outcome {
            Ok(Written { metadata, referenced: bytes, written }) => {
                self.last_files = FileIndex::of_checkpoint(&metadata);
                if self.settings.crash_after_checkpoint == Some(id) {
                    tracing::error!(
                        checkpoint = id,
                        "fault injection: aborting between checkpoint completion and commit"
                    );
                    std::process::abort();
                }
                let took = pending.started.elapsed();
                self.last_completed = Some(id);
                self.metrics.completed.inc();
                self.metrics.last_duration_ms.set(took.as_millis() as i64);
                self.metrics.last_bytes.set(bytes as i64);
                self.metrics.last_checkpoint_bytes_written.set(written as i64);
                self.metrics.last_completed_id.set(id as i64);
                let location = self.storage.location(&format!("chk-{id}"));
                self.status.update(|s| {
                    s.last_checkpoint_id = Some(id);
                    s.last_checkpoint_location = Some(location);
                    s.last_checkpoint_completed_at_ms = Some(metadata.completed_at_ms);
                    s.last_checkpoint_duration_ms = Some(took.as_millis() as u64);
                    s.last_checkpoint_bytes = Some(bytes);
                    s.last_checkpoint_bytes_written = Some(written);
                    s.checkpoints_completed += 1;
                });
                tracing::info!(
                    checkpoint = id,
                    ms = took.as_millis() as u64,
                    bytes,
                    written,
                    final_checkpoint = pending.final_checkpoint,
                    "checkpoint complete"
                );
                for side in 0..self.sinks.len() {
                    for instance in 0..self.sinks[side].senders.len() {
                        self.send_to_sink(side, instance, SinkMessage::Commit(CheckpointId(id))).await;
                    }
                }
                match self.storage.retain(self.settings.retained.max(1)).await {
                    Ok(removed) if !removed.removed_checkpoints.is_empty() => {
                        tracing::debug!(?removed.removed_checkpoints, "old checkpoints removed");
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(%err, "could not clean up old checkpoints"),
                }
                self.stopping |= pending.waiters.iter().any(Waiter::stops);
                for waiter in pending.waiters {
                    match waiter {
                        Waiter::Stop(reply) => {
                            let _ = reply.send(Ok(id));
                        }
                        Waiter::Savepoint { target, reply, .. } => {
                            let _ = reply.send(self.write_savepoint(&metadata, &target).await);
                        }
                    }
                }
            }
            Err(why) => {
                self.pending = Some(pending);
                self.fail_pending(&why);
            }
        }
    }

    /// Copies completed checkpoint `metadata` into `target` as a savepoint.
    async fn write_savepoint(
        &self,
        metadata: &SnapshotMetadata,
        target: &str,
    ) -> Result<SavepointWritten, String> {
        let folder = CheckpointStorage::open(target).map_err(|e| e.to_string())?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        self.storage.write_savepoint(metadata, &folder, now).await.map_err(|e| e.to_string())?;
        tracing::info!(checkpoint = metadata.checkpoint_id, location = %folder.url(), "savepoint written");
        Ok(SavepointWritten { checkpoint_id: metadata.checkpoint_id, location: folder.url().to_owned() })
    }

    /// Writes the state files and the metadata of a fully acknowledged checkpoint: keyed
    /// tables in key-group chunks, every file not written again when the last checkpoint
    /// holds the same bytes for it (see [`crate::incremental`]).
    async fn write(&self, pending: &Pending) -> Result<Written, String> {
        let shape = &self.shape;
        let mut metadata = SnapshotMetadata::new(
            SnapshotKind::Checkpoint,
            &shape.job,
            pending.id,
            shape.max_parallelism,
            shape.parallelism as u32,
        );
        metadata.finished = pending.final_checkpoint;
        let mut writer = StateWriter::new(&self.storage, pending.id, &self.last_files);
        let mut operators: BTreeMap<String, Vec<TableState>> = BTreeMap::new();
        // Positions per source stage (stage 0 reads the main source).
        let mut positions: BTreeMap<usize, BTreeMap<i32, i64>> = BTreeMap::new();
        let mut acks: Vec<(&(usize, usize), &Acked)> = pending.tasks.iter().collect();
        acks.sort_by_key(|(at, _)| **at);
        let (mut referenced, mut written) = (0, 0);
        for ((stage, _), ack) in acks {
            match ack {
                Acked::Snapshot(ack) => {
                    if let Some(p) = &ack.positions {
                        let at = positions.entry(*stage).or_default();
                        at.extend(p.iter().map(|(partition, offset)| (partition.0, *offset)));
                    }
                    let stage_parallelism = shape.stage_parallelism.get(*stage).copied().unwrap_or(1);
                    write_task_state(
                        &mut writer,
                        ack,
                        stage_parallelism,
                        shape.max_parallelism,
                        &mut operators,
                    )
                    .await?;
                }
                Acked::Written(ack) => {
                    if let Some(p) = ack.source_positions() {
                        let at = positions.entry(*stage).or_default();
                        at.extend(p.iter().map(|(partition, offset)| (partition.0, *offset)));
                    }
                    merge_written(&mut operators, ack);
                    referenced += ack.referenced;
                    written += ack.written;
                }
            }
        }
        for (side, acked) in self.sinks.iter().zip(&pending.sinks) {
            let mut files = Vec::new();
            let mut instances: Vec<(&usize, &Option<Vec<u8>>)> = acked.iter().collect();
            instances.sort_by_key(|(i, _)| **i);
            for (instance, state) in instances {
                let Some(state) = state else { continue };
                let bytes = bytes::Bytes::from(state.clone());
                let slot = Slot::Subtask(*instance as u32);
                files.push(writer.file(&side.operator_id, SINK_TABLE, slot, "json", bytes).await?);
            }
            if !files.is_empty() {
                operators.insert(
                    side.operator_id.clone(),
                    vec![TableState { name: SINK_TABLE.to_owned(), scope: StoredScope::Instance, files }],
                );
            }
        }
        metadata.operators = operators
            .into_iter()
            .map(|(operator_id, tables)| OperatorState { operator_id, tables })
            .collect();
        // A subtask that acknowledged this checkpoint finished after its barrier: its
        // positions at the barrier hold, not where it ended.
        for ((stage, subtask), ended) in &self.finished_positions {
            if !pending.tasks.contains_key(&(*stage, *subtask)) {
                positions.entry(*stage).or_default().extend(ended.iter().map(|(p, o)| (*p, *o)));
            }
        }
        let main = (0, shape.source_table.clone(), shape.source_topic.clone());
        metadata.sources = std::iter::once(&main)
            .chain(&shape.join_sources)
            .map(|(stage, table, topic)| SourcePosition {
                table: table.clone(),
                topic: topic.clone(),
                next_offsets: positions.remove(stage).unwrap_or_default(),
            })
            .collect();
        metadata.completed_at_ms =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        self.storage.complete_checkpoint(&metadata).await.map_err(|e| e.to_string())?;
        Ok(Written {
            metadata,
            referenced: referenced + writer.referenced,
            written: written + writer.written,
        })
    }
}

/// A completed checkpoint as [`Coordinator::write`] wrote it.
struct Written {
    metadata: SnapshotMetadata,
    /// Bytes of every state file it references.
    referenced: u64,
    /// Bytes of the state files it (and its tasks) wrote (the rest it took over from the one
    /// before).
    written: u64,
}

/// The state table a sink's pre-commit state is filed under.
pub const SINK_TABLE: &str = "transactions";

/// The id a sink side's state is filed under.
pub fn sink_operator_id(table: &str) -> String {
    format!("sink.{table}")
}

/// The next acknowledgement of any sink side, with the side's index.
async fn futures_first_ack(sinks: &mut [SinkSide]) -> Option<(usize, SinkAck)> {
    if sinks.is_empty() {
        return std::future::pending().await;
    }
    std::future::poll_fn(|cx| {
        for (i, side) in sinks.iter_mut().enumerate() {
            if let std::task::Poll::Ready(Some(ack)) = side.acks.poll_recv(cx) {
                return std::task::Poll::Ready(Some((i, ack)));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

async fn next_written(acks: &mut Option<mpsc::UnboundedReceiver<WrittenAck>>) -> Option<WrittenAck> {
    match acks {
        Some(acks) => acks.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await,
        None => std::future::pending().await,
    }
}
