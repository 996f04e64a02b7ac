//! A worker's part of one job attempt: plan the SQL the coordinator sent, restore this
//! worker's subtasks from the attempt's snapshot, start the source and sink instances of its
//! slots, run its subtasks of the dataflow with the network exchange to the other workers,
//! and relay the checkpoint protocol: barrier requests and sink commits in, task and sink
//! acknowledgements out (the tasks' state files written to checkpoint storage first). The coordinator settles the sinks' transactions (recovery) before
//! it deploys, so this side only resumes after the restored checkpoint.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use millrace_checkpoint::CheckpointStorage;
use millrace_connectors::{
    BarrierTrigger, ConnectorThread, SinkAck, StopSignal, start_sink_instances, start_source_instances,
};
use millrace_runtime::network::{ExchangeServer, ReceiverOptions, SenderOptions};
use millrace_runtime::{
    CheckpointIo, DataflowIo, ExchangePlacement, RunOptions, TaskEvent, local_subtasks, operator_ids,
    run_dataflow,
};
use millrace_types::{CheckpointId, SinkMessage};
use tokio::sync::{mpsc, oneshot};

use super::acks::{AckWriter, positions_to_wire};
use super::rpc::{Deployment, ToCoordinator, encode_bytes};
use crate::job::{Job, JobError, JobMetrics, JobOptions, JobOverrides, first_failure, join_all};
use crate::restore::{PlanState, restore};

/// What the coordinator asks of a running attempt.
#[derive(Debug)]
pub enum Command {
    /// Inject the barrier of a checkpoint; the last completed one before it.
    Barrier {
        checkpoint: u64,
        previous: Option<u64>,
    },
    Sink {
        side: usize,
        instance: usize,
        message: SinkMessage,
    },
    /// Stop after every command before it was carried out.
    Cancel,
}

/// How long a connection for a channel this worker has not set up yet waits for it: the
/// workers of an attempt start at about the same time, but restoring state may take a while.
pub fn receiver_options() -> ReceiverOptions {
    ReceiverOptions {
        pending_channel_wait: std::time::Duration::from_secs(120),
        ..ReceiverOptions::default()
    }
}

/// Runs the attempt until it is cancelled or fails, then reports `Failed` (if it did) and
/// `Cancelled` (once its connector threads are joined).
pub async fn run_deployment(
    deployment: Deployment,
    server: Arc<ExchangeServer>,
    metrics: JobMetrics,
    commands: mpsc::UnboundedReceiver<Command>,
    out: mpsc::UnboundedSender<ToCoordinator>,
) {
    let attempt = deployment.attempt.clone();
    if let Err(err) = run(deployment, server, &metrics, commands, &out).await {
        tracing::warn!(%attempt, %err, "this worker's part of the job failed");
        let _ = out.send(ToCoordinator::Failed { attempt: attempt.clone(), error: err.to_string() });
    }
    let _ = out.send(ToCoordinator::Cancelled { attempt });
}

async fn run(
    deployment: Deployment,
    server: Arc<ExchangeServer>,
    metrics: &JobMetrics,
    commands: mpsc::UnboundedReceiver<Command>,
    out: &mpsc::UnboundedSender<ToCoordinator>,
) -> Result<(), JobError> {
    let attempt = deployment.attempt.clone();
    server.begin_job(&attempt);
    let p = deployment.parallelism;
    let options = JobOptions {
        parallelism: p,
        slots: deployment.slots.len().max(1),
        max_parallelism: deployment.max_parallelism,
        channel_capacity: deployment.channel_capacity,
        kafka: deployment.kafka.clone(),
        allow_non_restored_state: deployment.allow_non_restored_state,
        state_max_bytes: deployment.state_max_bytes,
        ..JobOptions::default()
    };
    let mut job = Job::prepare(&deployment.sql, &options, JobOverrides::default())?;
    let local_slots: BTreeSet<usize> = deployment.slots.iter().copied().collect();
    let peers = deployment
        .peers
        .iter()
        .filter(|(slot, _)| !local_slots.contains(slot))
        .map(|(slot, addr)| (*slot, addr.clone()))
        .collect();
    let placement = Arc::new(ExchangePlacement {
        local_slots,
        peers,
        job_id: attempt.clone(),
        server,
        sender_options: SenderOptions::default(),
    });
    tracing::info!(%attempt, slots = ?deployment.slots, parallelism = p, "starting this worker's part of the job");

    let restored = match &deployment.restore {
        None => None,
        Some(point) => {
            let fail = |e: millrace_checkpoint::CheckpointError| JobError::Restore(e.to_string());
            let storage = CheckpointStorage::open(&point.url).map_err(fail)?;
            let metadata = match point.checkpoint_id {
                Some(id) => storage.load_checkpoint(id).await.map_err(fail)?,
                None => storage.load_savepoint().await.map_err(fail)?,
            };
            let ids = operator_ids(&job.plan.dataflow).map_err(|e| JobError::Options(e.to_string()))?;
            let late_name = job.late.as_ref().map(|(table, _)| table.name.clone());
            let plan = PlanState {
                operator_ids: &ids,
                max_parallelism: options.max_parallelism,
                sink_table: &job.sink_table.name,
                late_table: late_name.as_deref(),
                allow_non_restored_state: options.allow_non_restored_state,
            };
            let restored = restore(&storage, metadata, &plan).await?;
            let id = CheckpointId(restored.checkpoint_id);
            job.sink = job.sink.restored_from(id);
            job.late = job.late.map(|(table, late)| (table, late.restored_from(id)));
            Some(restored)
        }
    };

    let dataflow = job.plan.dataflow.clone();
    let here = Some(placement.as_ref());
    let (sink_acks_tx, sink_acks) = mpsc::unbounded_channel();
    let (late_acks_tx, late_acks) = mpsc::unbounded_channel();
    let sink_instances = local_subtasks(here, dataflow.sink_parallelism(p));
    let late_instances = local_subtasks(here, dataflow.late_output_parallelism(p));
    let source_instances = local_subtasks(here, p);
    let mut threads: Vec<ConnectorThread> = Vec::new();
    let (sinks, started) = start_sink_instances(
        &job.sink_table,
        job.sink,
        &sink_instances,
        options.channel_capacity,
        &metrics.connectors,
        &sink_acks_tx,
    )?;
    threads.extend(started);
    let mut late = Vec::new();
    if let Some((table, connector)) = job.late {
        match start_sink_instances(
            &table,
            connector,
            &late_instances,
            options.channel_capacity,
            &metrics.connectors,
            &late_acks_tx,
        ) {
            Ok((senders, started)) => {
                late = senders;
                threads.extend(started);
            }
            Err(err) => {
                drop(sinks);
                join_all(threads).await?;
                return Err(err.into());
            }
        }
    }
    let barriers = BarrierTrigger::default();
    let source_stop = StopSignal::default();
    // This worker's instances of every source, main source first, then each join source in
    // the order of the dataflow's branches (as the executor takes them).
    let mut inputs = vec![(job.source_table, job.source, restored.as_ref().map(|r| r.sources.clone()))];
    for (table, connector) in job.join_sources {
        let restore = restored.as_ref().and_then(|r| r.by_table.get(&table.name).cloned());
        inputs.push((table, connector, restore));
    }
    let mut sources = Vec::new();
    let mut source_threads = Vec::new();
    let mut failed = None;
    for (table, connector, restore) in inputs {
        match start_source_instances(
            &table,
            connector,
            &source_instances,
            p,
            options.channel_capacity,
            &metrics.connectors,
            &source_stop,
            &barriers,
            restore.as_ref(),
        ) {
            Ok((receivers, started)) => {
                sources.extend(receivers);
                source_threads.extend(started);
            }
            Err(err) => {
                failed = Some(err);
                break;
            }
        }
    }
    if let Some(err) = failed {
        source_stop.stop();
        drop((sources, sinks, late));
        join_all(source_threads).await?;
        join_all(threads).await?;
        return Err(err.into());
    }
    let source_names: Vec<String> = source_threads.iter().map(|t| t.name.clone()).collect();
    threads.extend(source_threads);
    let mut relays = tokio::task::JoinSet::new();
    relays.spawn(relay_sink_acks(attempt.clone(), 0, sink_acks, out.clone()));
    relays.spawn(relay_sink_acks(attempt.clone(), 1, late_acks, out.clone()));
    drop((sink_acks_tx, late_acks_tx));
    let mut sides: HashMap<(usize, usize), mpsc::Sender<SinkMessage>> = HashMap::new();
    sides.extend(sink_instances.iter().zip(&sinks).map(|(i, s)| ((0, *i), s.clone())));
    sides.extend(late_instances.iter().zip(&late).map(|(i, s)| ((1, *i), s.clone())));
    let (cancel_tx, cancelled) = oneshot::channel();
    let previous = Previous::default();
    relays.spawn(carry_out(commands, barriers, sides, previous.clone(), cancel_tx));
    let checkpoints = if let Some(url) = &deployment.checkpoint_storage {
        let storage = CheckpointStorage::open(url).map_err(|e| JobError::Checkpoint(e.to_string()))?;
        let stages = (0..dataflow.stage_count()).map(|k| dataflow.stage_parallelism(k, p)).collect();
        let writer = AckWriter::new(storage, stages, options.max_parallelism);
        let (events, task_events) = mpsc::unbounded_channel();
        relays.spawn(relay_task_events(attempt.clone(), task_events, writer, previous, out.clone()));
        Some(CheckpointIo { events, restore: restored.as_ref().map(|r| Arc::clone(&r.state)) })
    } else {
        None
    };
    let io = DataflowIo { sources, sinks, late, checkpoints };
    let run_options = RunOptions {
        parallelism: p,
        max_parallelism: options.max_parallelism,
        channel_capacity: options.channel_capacity,
        placement: Some(placement),
        state_max_bytes: options.state_max_bytes.or(job.plan.state_max_bytes),
        ..RunOptions::default()
    };
    let outcome =
        drive(&dataflow, io, &run_options, metrics, &mut threads, &source_names, cancelled, &attempt, out)
            .await;
    source_stop.stop();
    // The command relay holds sink senders; without it the sinks finish.
    relays.abort_all();
    while relays.join_next().await.is_some() {}
    let joined = join_all(threads).await;
    outcome.and(joined)
}

/// Runs the dataflow until cancelled or failed. When this worker's input ends it reports
/// `Ended` and waits for the cancel (its sinks still take the final checkpoint meanwhile).
#[allow(clippy::too_many_arguments)]
async fn drive(
    dataflow: &millrace_runtime::Dataflow,
    io: DataflowIo,
    run_options: &RunOptions,
    metrics: &JobMetrics,
    threads: &mut Vec<ConnectorThread>,
    source_names: &[String],
    mut cancelled: oneshot::Receiver<()>,
    attempt: &str,
    out: &mpsc::UnboundedSender<ToCoordinator>,
) -> Result<(), JobError> {
    tokio::select! {
        result = run_dataflow(dataflow, io, run_options, &metrics.runtime) => {
            result?;
            // A source that failed (a Kafka client it could not create, say) closes its
            // channel too, and a sink that failed ends the dataflow early: their error, not
            // an end of input, is what this worker reports.
            sources_ended(threads, source_names).await?;
            tracing::info!(%attempt, "this worker's input has ended");
            let _ = out.send(ToCoordinator::Ended { attempt: attempt.to_owned() });
        }
        failed = first_failure(threads) => return Err(failed),
        _ = &mut cancelled => return Ok(()),
    }
    tokio::select! {
        failed = first_failure(threads) => Err(failed),
        _ = cancelled => Ok(()),
    }
}

/// Waits for the source threads to end once their input ended (they are ending: their channels
/// are closed), bounded by [`SOURCE_END_TIMEOUT`]; meanwhile joins every connector thread that
/// finished, returning the first one's error.
async fn sources_ended(threads: &mut Vec<ConnectorThread>, source_names: &[String]) -> Result<(), JobError> {
    let deadline = tokio::time::Instant::now() + SOURCE_END_TIMEOUT;
    loop {
        while let Some(i) = threads.iter().position(ConnectorThread::is_finished) {
            // Finished: the join does not block.
            threads.swap_remove(i).join()?;
        }
        let running = threads.iter().any(|t| source_names.contains(&t.name));
        if !running || tokio::time::Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How long a source thread may take to end after its channels closed.
const SOURCE_END_TIMEOUT: Duration = Duration::from_secs(30);

/// The last completed checkpoint at each barrier's trigger, by checkpoint id.
type Previous = Arc<std::sync::Mutex<HashMap<u64, Option<u64>>>>;

/// Carries out the coordinator's commands in order; a cancel resolves `cancel` after every
/// command before it (a sink commit, say) has reached its sink.
async fn carry_out(
    mut commands: mpsc::UnboundedReceiver<Command>,
    barriers: BarrierTrigger,
    sides: HashMap<(usize, usize), mpsc::Sender<SinkMessage>>,
    previous: Previous,
    cancel: oneshot::Sender<()>,
) {
    while let Some(command) = commands.recv().await {
        match command {
            Command::Barrier { checkpoint, previous: last } => {
                // Recorded before the sources can see the request, so every task's
                // acknowledgement finds it.
                if let Ok(mut known) = previous.lock() {
                    known.insert(checkpoint, last);
                }
                barriers.request(CheckpointId(checkpoint));
            }
            Command::Sink { side, instance, message } => match sides.get(&(side, instance)) {
                Some(sink) => {
                    if sink.send(message).await.is_err() {
                        tracing::debug!(side, instance, "sink has stopped");
                    }
                }
                None => tracing::warn!(side, instance, "no such sink instance on this worker"),
            },
            Command::Cancel => break,
        }
    }
    // Dropped with the loop: the coordinator connection is gone, which cancels too.
    let _ = cancel.send(());
    // The sinks must outlive the cancel's delivery, not the relay: wait to be aborted.
    std::future::pending::<()>().await;
}

async fn relay_sink_acks(
    attempt: String,
    side: usize,
    mut acks: mpsc::UnboundedReceiver<SinkAck>,
    out: mpsc::UnboundedSender<ToCoordinator>,
) {
    while let Some(ack) = acks.recv().await {
        let state = ack.state.as_deref().map(encode_bytes);
        let message = ToCoordinator::SinkAck {
            attempt: attempt.clone(),
            side,
            subtask: ack.subtask,
            checkpoint: ack.checkpoint.0,
            state,
        };
        if out.send(message).is_err() {
            return;
        }
    }
}

/// Writes each acknowledged task's state files and tells the coordinator.
async fn relay_task_events(
    attempt: String,
    mut events: mpsc::UnboundedReceiver<TaskEvent>,
    mut writer: AckWriter,
    previous: Previous,
    out: mpsc::UnboundedSender<ToCoordinator>,
) {
    while let Some(event) = events.recv().await {
        let message = match event {
            TaskEvent::Ack(ack) => {
                let last =
                    previous.lock().ok().and_then(|known| known.get(&ack.checkpoint.0).copied()).flatten();
                match writer.write(&ack, last).await {
                    Ok(ack) => ToCoordinator::Ack { attempt: attempt.clone(), ack },
                    Err(err) => ToCoordinator::Failed {
                        attempt: attempt.clone(),
                        error: format!("writing the state of checkpoint {}: {err}", ack.checkpoint),
                    },
                }
            }
            TaskEvent::Finished { stage, subtask, positions } => ToCoordinator::TaskFinished {
                attempt: attempt.clone(),
                stage,
                subtask,
                positions: positions.as_ref().map(positions_to_wire),
            },
        };
        if out.send(message).is_err() {
            return;
        }
    }
}
