//! One attempt of a job spread over workers, as the coordinator runs it: choose the snapshot
//! to start from (the newest completed checkpoint, else `--restore-from`), settle the sinks'
//! transactions of that snapshot, start the checkpoint [`Coordinator`] of `coordinator.rs`
//! (the same one `run` uses) with its ends bridged to the workers over the RPC, deploy every
//! worker's slots, and relay until the attempt ends: the input ended (final checkpoint), a
//! stop at a checkpoint, or a failure (a worker lost, a task failed). Then it cancels the
//! attempt on every worker and waits for them to confirm.
//!
//! The bridges: the coordinator's [`BarrierTrigger`] is watched and each request is sent to
//! every worker (their sources inject the barrier); each sink instance's sender is a proxy
//! whose barriers and commits travel to the worker running that slot; acknowledgements
//! coming back are decoded into the coordinator's task-event and sink-ack channels.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use millrace_checkpoint::CheckpointStorage;
use millrace_connectors::{BarrierTrigger, SinkAck, StopSignal};
use millrace_runtime::{TaskEvent, operator_ids};
use millrace_types::{CheckpointId, SinkMessage};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use super::acks::positions_from_wire;
use super::pool::{Pool, PoolEvent, WorkerHandle};
use super::rpc::{Deployment, RestorePoint, ToCoordinator, ToWorker, decode_bytes};
use crate::control::{JobControl, JobPhase};
use crate::coordinator::{Control, Coordinator, JobStatusView, SinkSide, sink_operator_id};
use crate::job::{Job, JobError, JobMetrics, JobOptions, JobOverrides, ask, job_shape, recover_sink};
use crate::restore::{PlanState, Restored, restore};
use crate::task_state::WrittenAck;

/// How long the workers get to confirm a cancel before the coordinator goes on without.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a shutdown of the coordinator waits for its last checkpoint.
const SHUTDOWN_CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(30);

/// What does not change between attempts.
pub struct JobSpec {
    pub sql: String,
    pub options: JobOptions,
}

/// How an attempt ended.
#[derive(Debug)]
pub enum Outcome {
    /// The input ended and the final checkpoint was committed (or it had been before).
    Finished,
    /// Stopped at a committed checkpoint (a stop-with-savepoint, or a shutdown).
    Stopped,
    /// Restart from the newest checkpoint.
    Failed(String),
    /// Restarting cannot help (the snapshot does not fit the plan).
    Fatal(String),
}

pub struct AttemptContext<'a> {
    pub spec: &'a JobSpec,
    pub metrics: &'a JobMetrics,
    pub control: &'a JobControl,
    /// The coordinator process is shutting down.
    pub terminate: &'a StopSignal,
}

/// The checkpoint coordinator's side of an attempt, while it runs.
struct Checkpointing {
    control: mpsc::Sender<Control>,
    task: JoinHandle<()>,
    events: mpsc::UnboundedSender<TaskEvent>,
    written_acks: mpsc::UnboundedSender<WrittenAck>,
    sink_acks: Vec<mpsc::UnboundedSender<SinkAck>>,
    /// The sink proxies.
    bridges: JoinSet<()>,
    barrier_bridge: JoinHandle<()>,
}

pub async fn run_attempt(
    ctx: &AttemptContext<'_>,
    pool: &mut Pool,
    attempt: &str,
    assigned: &BTreeMap<u64, Vec<usize>>,
) -> Outcome {
    let mut checkpointing = None;
    let outcome = match start(ctx, pool, attempt, assigned, &mut checkpointing).await {
        Ok(Started::AlreadyFinished) => Outcome::Finished,
        Ok(Started::Deployed) => relay(ctx, pool, attempt, assigned, checkpointing.as_ref()).await,
        Err(outcome) => outcome,
    };
    ctx.control.detach();
    if let Some(c) = checkpointing {
        drop(c.control);
        if let Err(err) = c.task.await {
            tracing::warn!(%err, "the checkpoint coordinator panicked");
        }
        // The sink proxies end once the coordinator's senders are gone, after their last
        // commit; the cancel below follows them on each worker's connection.
        c.barrier_bridge.abort();
        let mut bridges = c.bridges;
        while bridges.join_next().await.is_some() {}
    }
    cancel(pool, attempt, assigned).await;
    outcome
}

enum Started {
    Deployed,
    /// The snapshot to start from is marked finished: nothing is left to do.
    AlreadyFinished,
}

/// Restores, recovers the sinks, starts the checkpoint coordinator and deploys.
async fn start(
    ctx: &AttemptContext<'_>,
    pool: &Pool,
    attempt: &str,
    assigned: &BTreeMap<u64, Vec<usize>>,
    checkpointing: &mut Option<Checkpointing>,
) -> Result<Started, Outcome> {
    let options = &ctx.spec.options;
    let p = options.parallelism;
    let failed = |e: &dyn std::fmt::Display| Outcome::Failed(e.to_string());
    let mut job = Job::prepare(&ctx.spec.sql, options, JobOverrides::default())
        .map_err(|e| Outcome::Fatal(e.to_string()))?;
    let (restored, point) = choose_snapshot(&job, options).await?;
    if let Some(restored) = &restored {
        if restored.finished {
            tracing::info!(location = %restored.location, "the job finished in an earlier run; nothing to do");
            return Ok(Started::AlreadyFinished);
        }
        tracing::info!(location = %restored.location, "restoring");
        ctx.control.status.update(|s| s.restored_from = Some(restored.location.clone()));
        let id = CheckpointId(restored.checkpoint_id);
        job.sink = recover_sink(job.sink, &restored.sink_states, id).await.map_err(|e| failed(&e))?;
        if let Some((table, late)) = job.late.take() {
            job.late = Some((
                table,
                recover_sink(late, &restored.late_sink_states, id).await.map_err(|e| failed(&e))?,
            ));
        }
    }
    let owners: HashMap<usize, WorkerHandle> = assigned
        .iter()
        .filter_map(|(id, slots)| pool.workers.get(id).map(|w| (slots.clone(), w.clone())))
        .flat_map(|(slots, w)| slots.into_iter().map(move |slot| (slot, w.clone())))
        .collect();
    if owners.len() != p {
        return Err(Outcome::Failed("a worker left before the attempt was deployed".into()));
    }
    if let Some(settings) = &options.checkpointing {
        let storage = CheckpointStorage::open(&settings.storage_url).map_err(|e| failed(&e))?;
        let newest = storage.completed_checkpoints().await.map_err(|e| failed(&e))?.into_iter().max();
        let dataflow = &job.plan.dataflow;
        let barriers = BarrierTrigger::default();
        let mut bridges = JoinSet::new();
        let mut sides = Vec::new();
        let mut sink_acks = Vec::new();
        let mut side_specs = vec![(
            sink_operator_id(&job.sink_table.name),
            dataflow.sink_parallelism(p),
            dataflow.stages.len() - 1,
        )];
        if let (Some((table, _)), Some(late)) = (&job.late, &dataflow.late_output) {
            side_specs.push((sink_operator_id(&table.name), dataflow.late_output_parallelism(p), late.stage));
        }
        for (side, (operator_id, instances, upstream_stage)) in side_specs.into_iter().enumerate() {
            let (acks_tx, acks) = mpsc::unbounded_channel();
            sink_acks.push(acks_tx);
            let mut senders = Vec::with_capacity(instances);
            for instance in 0..instances {
                let owner = owners
                    .get(&instance)
                    .ok_or_else(|| Outcome::Failed(format!("no worker runs slot {instance}")))?;
                senders.push(sink_proxy(&mut bridges, attempt, side, instance, owner));
            }
            sides.push(SinkSide { operator_id, senders, acks, upstream_stage });
        }
        let workers: Vec<WorkerHandle> =
            assigned.keys().filter_map(|id| pool.workers.get(id).cloned()).collect();
        let restored_checkpoint = point.as_ref().and_then(|p| p.checkpoint_id);
        let barrier_bridge = tokio::spawn(barrier_bridge(
            barriers.clone(),
            attempt.to_owned(),
            workers,
            ctx.control.status.clone(),
            restored_checkpoint,
        ));
        let (events, task_events) = mpsc::unbounded_channel();
        let (written_acks, written) = mpsc::unbounded_channel();
        let (control, requests) = mpsc::channel(16);
        let coordinator = Coordinator::new(
            storage,
            settings.clone(),
            job_shape(&job.plan, &job.source_table, &job.join_sources, p, options.max_parallelism),
            barriers,
            task_events,
            sides,
            ctx.metrics.checkpoints.clone(),
            restored.as_ref().map(|r| r.checkpoint_id),
            ctx.control.status.clone(),
        )
        .numbering_after(newest)
        .with_written_acks(written);
        ctx.control.attach(control.clone(), p, options.max_parallelism, &settings.storage_url);
        let task = tokio::spawn(coordinator.run(requests));
        *checkpointing =
            Some(Checkpointing { control, task, events, written_acks, sink_acks, bridges, barrier_bridge });
    }
    let mut peers: Vec<(usize, String)> =
        owners.iter().map(|(slot, w)| (*slot, w.data_addr.clone())).collect();
    peers.sort();
    for (id, slots) in assigned {
        let deployment = Deployment {
            attempt: attempt.to_owned(),
            sql: ctx.spec.sql.clone(),
            parallelism: p,
            max_parallelism: options.max_parallelism,
            channel_capacity: options.channel_capacity,
            kafka: options.kafka.clone(),
            checkpoint_storage: options.checkpointing.as_ref().map(|c| c.storage_url.clone()),
            restore: point.clone(),
            allow_non_restored_state: options.allow_non_restored_state,
            state_max_bytes: options.state_max_bytes,
            slots: slots.clone(),
            peers: peers.clone(),
        };
        if let Some(worker) = pool.workers.get(id) {
            let _ = worker.tx.send(ToWorker::Deploy(Box::new(deployment)));
        }
    }
    tracing::info!(%attempt, ?assigned, "job deployed");
    ctx.control.set_phase(JobPhase::Running, None);
    Ok(Started::Deployed)
}

/// The newest completed checkpoint, else the savepoint of `--restore-from`, else nothing.
async fn choose_snapshot(
    job: &Job,
    options: &JobOptions,
) -> Result<(Option<Restored>, Option<RestorePoint>), Outcome> {
    let Some(settings) = &options.checkpointing else { return Ok((None, None)) };
    let failed = |e: &dyn std::fmt::Display| Outcome::Failed(e.to_string());
    let storage = CheckpointStorage::open(&settings.storage_url).map_err(|e| failed(&e))?;
    let (from, metadata, point) = match storage.latest_checkpoint().await.map_err(|e| failed(&e))? {
        Some(metadata) => {
            let point = RestorePoint {
                url: settings.storage_url.clone(),
                checkpoint_id: Some(metadata.checkpoint_id),
            };
            (storage, metadata, point)
        }
        None => match &options.restore_from {
            None => return Ok((None, None)),
            Some(url) => {
                let from = CheckpointStorage::open(url).map_err(|e| Outcome::Fatal(e.to_string()))?;
                let metadata = from.load_savepoint().await.map_err(|e| Outcome::Fatal(e.to_string()))?;
                (from, metadata, RestorePoint { url: url.clone(), checkpoint_id: None })
            }
        },
    };
    let ids = operator_ids(&job.plan.dataflow).map_err(|e| Outcome::Fatal(e.to_string()))?;
    let late_name = job.late.as_ref().map(|(table, _)| table.name.clone());
    let plan = PlanState {
        operator_ids: &ids,
        max_parallelism: options.max_parallelism,
        sink_table: &job.sink_table.name,
        late_table: late_name.as_deref(),
        allow_non_restored_state: options.allow_non_restored_state,
    };
    match restore(&from, metadata, &plan).await {
        Ok(restored) => Ok((Some(restored), Some(point))),
        Err(JobError::Restore(why)) => Err(Outcome::Fatal(why)),
        Err(err) => Err(failed(&err)),
    }
}

/// A sink instance's sender on the coordinator: barriers and commits go to its worker.
fn sink_proxy(
    bridges: &mut JoinSet<()>,
    attempt: &str,
    side: usize,
    instance: usize,
    worker: &WorkerHandle,
) -> mpsc::Sender<SinkMessage> {
    let (tx, mut rx) = mpsc::channel::<SinkMessage>(16);
    let (attempt, worker) = (attempt.to_owned(), worker.tx.clone());
    bridges.spawn(async move {
        while let Some(message) = rx.recv().await {
            let (commit, id) = match message {
                SinkMessage::Barrier(id) => (false, id),
                SinkMessage::Commit(id) => (true, id),
                SinkMessage::Batch(_) => continue,
            };
            let attempt = attempt.clone();
            let _ = worker.send(ToWorker::Sink { attempt, side, instance, commit, checkpoint: id.0 });
        }
    });
    tx
}

/// Sends every barrier the coordinator requests to the workers' sources, with the last
/// completed checkpoint (the restored one until this attempt completes its own).
async fn barrier_bridge(
    barriers: BarrierTrigger,
    attempt: String,
    workers: Vec<WorkerHandle>,
    status: JobStatusView,
    restored: Option<u64>,
) {
    let mut sent = barriers.requested();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    loop {
        tick.tick().await;
        let requested = barriers.requested();
        if requested > sent {
            sent = requested;
            let previous = status.get().last_checkpoint_id.max(restored);
            for worker in &workers {
                let (attempt, checkpoint) = (attempt.clone(), requested);
                let _ = worker.tx.send(ToWorker::Barrier { attempt, checkpoint, previous });
            }
        }
    }
}

/// Relays the workers' messages until the attempt ends.
async fn relay(
    ctx: &AttemptContext<'_>,
    pool: &mut Pool,
    attempt: &str,
    assigned: &BTreeMap<u64, Vec<usize>>,
    checkpointing: Option<&Checkpointing>,
) -> Outcome {
    let mut ended = BTreeSet::new();
    let mut finishing: Option<JoinHandle<Result<u64, JobError>>> = None;
    let mut stopping: Option<JoinHandle<Result<u64, JobError>>> = None;
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            event = pool.events.recv() => {
                let Some(event) = event else { return Outcome::Failed("the RPC listener stopped".into()) };
                let event = pool.apply(event);
                ctx.control.set_workers(pool.workers.len(), pool.slots());
                let (worker, message) = match event {
                    PoolEvent::Left(id, why) if assigned.contains_key(&id) => {
                        return Outcome::Failed(format!("worker {id} was lost: {why}"));
                    }
                    PoolEvent::Joined(_) | PoolEvent::Left(..) => continue,
                    PoolEvent::Message(worker, message) => (worker, message),
                };
                if let Some(outcome) = on_message(attempt, worker, message, checkpointing, &mut ended) {
                    return outcome;
                }
                if ended.len() == assigned.len() && finishing.is_none() {
                    let Some(c) = checkpointing else { return Outcome::Finished };
                    let control = c.control.clone();
                    finishing = Some(tokio::spawn(async move { ask(&control, Control::Finish).await }));
                }
            }
            done = wait(&mut finishing) => return match done {
                Ok(id) => {
                    tracing::info!(checkpoint = id, "input ended: final checkpoint committed");
                    Outcome::Finished
                }
                Err(err) => Outcome::Failed(err),
            },
            done = wait(&mut stopping) => return match done {
                Ok(id) => {
                    tracing::info!(checkpoint = id, "stopped at a committed checkpoint");
                    Outcome::Stopped
                }
                Err(err) => Outcome::Failed(err),
            },
            _ = poll.tick() => {
                let stop = ctx.control.stop.is_stopped() || ctx.terminate.is_stopped();
                if stop && stopping.is_none() {
                    let Some(c) = checkpointing else { return Outcome::Stopped };
                    ctx.control.set_phase(JobPhase::Stopping, None);
                    let control = c.control.clone();
                    stopping = Some(tokio::spawn(async move {
                        match tokio::time::timeout(SHUTDOWN_CHECKPOINT_TIMEOUT, ask(&control, Control::CheckpointNow)).await {
                            Ok(answer) => answer,
                            Err(_) => Err(JobError::Checkpoint("no checkpoint completed in time to stop at".into())),
                        }
                    }));
                }
            }
        }
    }
}

/// Acts on one worker message; `Some` ends the attempt.
fn on_message(
    attempt: &str,
    worker: u64,
    message: ToCoordinator,
    checkpointing: Option<&Checkpointing>,
    ended: &mut BTreeSet<u64>,
) -> Option<Outcome> {
    let current = |a: &str| a == attempt;
    match message {
        ToCoordinator::Ack { attempt, ack } if current(&attempt) => {
            if let Some(c) = checkpointing {
                let _ = c.written_acks.send(ack);
            }
        }
        ToCoordinator::TaskFinished { attempt, stage, subtask, positions } if current(&attempt) => {
            if let Some(c) = checkpointing {
                let positions = positions.as_deref().map(positions_from_wire);
                let _ = c.events.send(TaskEvent::Finished { stage, subtask, positions });
            }
        }
        ToCoordinator::SinkAck { attempt, side, subtask, checkpoint, state } if current(&attempt) => {
            let state = match state.as_deref().map(decode_bytes).transpose() {
                Ok(state) => state,
                Err(why) => return Some(Outcome::Failed(format!("worker {worker}: sink state: {why}"))),
            };
            if let Some(acks) = checkpointing.and_then(|c| c.sink_acks.get(side)) {
                let _ = acks.send(SinkAck { subtask, checkpoint: CheckpointId(checkpoint), state });
            }
        }
        ToCoordinator::Ended { attempt } if current(&attempt) => {
            ended.insert(worker);
        }
        ToCoordinator::Failed { attempt, error } if current(&attempt) => {
            return Some(Outcome::Failed(format!("worker {worker}: {error}")));
        }
        other => tracing::debug!(worker, ?other, "a message of another attempt, or out of place"),
    }
    None
}

async fn wait(task: &mut Option<JoinHandle<Result<u64, JobError>>>) -> Result<u64, String> {
    match task.as_mut() {
        None => std::future::pending().await,
        Some(handle) => {
            let result = handle.await;
            *task = None;
            match result {
                Ok(answer) => answer.map_err(|e| e.to_string()),
                Err(err) => Err(err.to_string()),
            }
        }
    }
}

/// Cancels the attempt on its workers and waits until each confirmed or left.
async fn cancel(pool: &mut Pool, attempt: &str, assigned: &BTreeMap<u64, Vec<usize>>) {
    let mut waiting: BTreeSet<u64> = BTreeSet::new();
    for id in assigned.keys() {
        if let Some(worker) = pool.workers.get(id)
            && worker.tx.send(ToWorker::Cancel { attempt: attempt.to_owned() }).is_ok()
        {
            waiting.insert(*id);
        }
    }
    let deadline = tokio::time::Instant::now() + CANCEL_TIMEOUT;
    while !waiting.is_empty() {
        let event = match tokio::time::timeout_at(deadline, pool.events.recv()).await {
            Ok(Some(event)) => pool.apply(event),
            Ok(None) => return,
            Err(_) => {
                tracing::warn!(?waiting, "workers did not confirm the cancel in time");
                return;
            }
        };
        match event {
            PoolEvent::Left(id, _) => {
                waiting.remove(&id);
            }
            PoolEvent::Message(id, ToCoordinator::Cancelled { attempt: a }) if a == attempt => {
                waiting.remove(&id);
            }
            _ => {}
        }
    }
}
