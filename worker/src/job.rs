//! One job in one process: plan the SQL, configure the source and sink from their tables'
//! options (or from overrides, for tests), start connector threads, run the dataflow, and
//! fail the job if any part fails. Invalid SQL or options fail here, before anything runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use millrace_checkpoint::CheckpointStorage;

use millrace_connectors::{
    BarrierTrigger, ConnectorError, ConnectorMetrics, ConnectorTable, ConnectorThread, KafkaDefaults,
    MetadataField, SinkConnector, SourceConnector, StopSignal, start_sink, start_source,
};
use millrace_runtime::{
    CheckpointIo, DataflowIo, RunOptions, RuntimeError, RuntimeMetrics, operator_ids, run_dataflow,
};
use millrace_types::CheckpointId;
use tokio::sync::{mpsc, oneshot};

use crate::control::{JobControl, JobPhase};
use crate::coordinator::{
    CheckpointMetrics, CheckpointSettings, Control, Coordinator, JobShape, SinkSide, sink_operator_id,
};
use crate::restore::{PlanState, Restored, restore};
use millrace_sql::{JobPlan, LateTarget, MetadataKey, SqlError, TableDef, plan_job};
use prometheus_client::registry::Registry;

/// Why a job could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("invalid SQL: {0}")]
    Sql(#[from] SqlError),
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("invalid manifest: {0}")]
    Manifest(String),
    #[error("{0}")]
    Io(String),
    #[error("invalid job options: {0}")]
    Options(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("{0}")]
    Restore(String),
}

/// How `run` executes a job.
#[derive(Debug, Clone)]
pub struct JobOptions {
    pub parallelism: usize,
    /// Slots of this process: the engine's thread budget (one slot runs one parallel
    /// instance of the whole chain at a time).
    pub slots: usize,
    pub max_parallelism: u32,
    pub channel_capacity: usize,
    /// What Kafka tables leave out: bootstrap servers, client properties, dead-letter topic,
    /// sink delivery guarantee.
    pub kafka: KafkaDefaults,
    /// Take checkpoints (and restore from the latest one at start).
    pub checkpointing: Option<CheckpointSettings>,
    /// Start from this savepoint (a folder URL) instead of the latest checkpoint.
    pub restore_from: Option<String>,
    /// Start even if some of the snapshot's state maps to no operator of the plan.
    pub allow_non_restored_state: bool,
    /// The limit on the operator state this process holds (`--state-max-bytes`); wins over
    /// the job's `SET 'state.max-bytes'`.
    pub state_max_bytes: Option<u64>,
}

impl Default for JobOptions {
    fn default() -> Self {
        Self {
            parallelism: 1,
            slots: 1,
            max_parallelism: millrace_types::DEFAULT_MAX_PARALLELISM,
            channel_capacity: 16,
            kafka: KafkaDefaults::default(),
            checkpointing: None,
            restore_from: None,
            allow_non_restored_state: false,
            state_max_bytes: None,
        }
    }
}

/// Connectors that replace what a table's options say (tests, embedding).
#[derive(Debug, Default)]
pub struct JobOverrides {
    pub sources: HashMap<String, SourceConnector>,
    pub sinks: HashMap<String, SinkConnector>,
    /// Replaces the late side output the source table names (`late_topic`/`late_path`).
    pub late: Option<SinkConnector>,
}

/// Metrics of a running job, registered into the process registry.
#[derive(Debug, Clone, Default)]
pub struct JobMetrics {
    pub runtime: RuntimeMetrics,
    pub connectors: ConnectorMetrics,
    pub checkpoints: CheckpointMetrics,
}

impl JobMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        Self {
            runtime: RuntimeMetrics::register(registry),
            connectors: ConnectorMetrics::register(registry),
            checkpoints: CheckpointMetrics::register(registry),
        }
    }
}

/// A planned job with configured connectors, ready to run.
#[derive(Debug)]
pub struct Job {
    pub plan: JobPlan,
    pub(crate) source_table: ConnectorTable,
    pub(crate) sink_table: ConnectorTable,
    pub(crate) source: SourceConnector,
    /// The other sources of a job with joins, in the order of the dataflow's branches.
    pub(crate) join_sources: Vec<(ConnectorTable, SourceConnector)>,
    pub(crate) sink: SinkConnector,
    /// The late side output, if the source table names one.
    pub(crate) late: Option<(ConnectorTable, SinkConnector)>,
}

/// The late side output as a sink table: the window stage's input rows, as JSON, into the
/// source table's `late_topic` (on the source's Kafka cluster) or `late_path`.
fn late_table(plan: &JobPlan) -> Option<ConnectorTable> {
    let late = plan.dataflow.late_output.as_ref()?;
    let mut options = std::collections::BTreeMap::new();
    match plan.source.late_output.as_ref()? {
        LateTarget::Topic(topic) => {
            options.insert("connector".to_string(), "kafka".to_string());
            options.insert("topic".to_string(), topic.clone());
            if let Some(bootstrap) = plan.source.options.get("bootstrap_servers") {
                options.insert("bootstrap_servers".to_string(), bootstrap.clone());
            }
        }
        LateTarget::Path(path) => {
            options.insert("connector".to_string(), "file".to_string());
            options.insert("path".to_string(), path.clone());
        }
    }
    options.insert("format".to_string(), "json".to_string());
    Some(ConnectorTable {
        name: format!("{}_late", plan.source.name),
        schema: late.schema.clone(),
        metadata: Vec::new(),
        primary_key: Vec::new(),
        options,
    })
}

fn connector_table(def: &TableDef) -> ConnectorTable {
    ConnectorTable {
        name: def.name.clone(),
        schema: def.connector_schema(),
        metadata: def
            .metadata
            .iter()
            .map(|(i, key)| {
                let field = match key {
                    MetadataKey::Timestamp => MetadataField::Timestamp,
                    MetadataKey::Partition => MetadataField::Partition,
                    MetadataKey::Offset => MetadataField::Offset,
                };
                (*i, field)
            })
            .collect(),
        primary_key: def.primary_key.clone(),
        options: def.options.clone(),
    }
}

impl Job {
    /// Plans `sql` and configures its connectors; every error names where it is in the SQL.
    pub fn prepare(sql: &str, options: &JobOptions, mut overrides: JobOverrides) -> Result<Self, JobError> {
        let plan = plan_job(sql)?;
        let source_table = connector_table(&plan.source);
        let sink_table = connector_table(&plan.sink);
        let bootstrap = &options.kafka;
        let at =
            |def: &TableDef, err: ConnectorError| JobError::Sql(SqlError::at(def.location, err.to_string()));
        let source = match overrides.sources.remove(&plan.source.name) {
            Some(source) => source,
            None => SourceConnector::from_table(&source_table, bootstrap).map_err(|e| at(&plan.source, e))?,
        };
        let mut join_sources = Vec::with_capacity(plan.join_sources.len());
        for def in &plan.join_sources {
            let table = connector_table(def);
            let connector = match overrides.sources.remove(&def.name) {
                Some(source) => source,
                None => SourceConnector::from_table(&table, bootstrap).map_err(|e| at(def, e))?,
            };
            if let SourceConnector::Kafka(k) = &connector {
                millrace_connectors::RecordDecoder::new(&table, k.format).map_err(|e| at(def, e))?;
            }
            join_sources.push((table, connector));
        }
        let sink = match overrides.sinks.remove(&plan.sink.name) {
            Some(sink) => sink,
            None => SinkConnector::from_table(&sink_table, bootstrap).map_err(|e| at(&plan.sink, e))?,
        };
        let late = match late_table(&plan) {
            None => None,
            Some(table) => {
                let connector = match overrides.late.take() {
                    Some(connector) => connector,
                    None => SinkConnector::from_table(&table, bootstrap).map_err(|e| at(&plan.source, e))?,
                };
                Some((table, connector))
            }
        };
        // Decoders validate formats against schemas (e.g. raw needs one payload column).
        if let SourceConnector::Kafka(k) = &source {
            millrace_connectors::RecordDecoder::new(&source_table, k.format)
                .map_err(|e| at(&plan.source, e))?;
        }
        if options.parallelism == 0
            || options.parallelism > options.max_parallelism as usize
            || options.slots == 0
        {
            return Err(JobError::Options(format!(
                "parallelism {} must be between 1 and maxParallelism {}, slots at least 1",
                options.parallelism, options.max_parallelism
            )));
        }
        Ok(Self { plan, source_table, sink_table, source, join_sources, sink, late })
    }

    /// Runs the job until its sources end (bounded input) or `stop` is signalled.
    ///
    /// Without checkpoints a stop drains: open windows fire, sinks flush. With checkpoints
    /// (`options.checkpointing`) the job first restores from its latest checkpoint (or
    /// `options.restore_from`), and a stop takes a checkpoint, commits it and ends there
    /// without draining, so that the next run resumes exactly at it; a bounded input that
    /// ends takes a final checkpoint, marked finished, and commits everything.
    pub async fn run(
        self,
        options: &JobOptions,
        metrics: &JobMetrics,
        stop: &StopSignal,
    ) -> Result<(), JobError> {
        self.run_with_control(options, metrics, &JobControl::new(stop.clone(), None)).await
    }

    /// [`Job::run`], reporting to and taking requests (savepoints, stop) from `control`.
    pub async fn run_with_control(
        self,
        options: &JobOptions,
        metrics: &JobMetrics,
        control: &JobControl,
    ) -> Result<(), JobError> {
        let outcome = self.run_inner(options, metrics, control).await;
        match &outcome {
            Ok(()) => control.set_phase(JobPhase::Finished, None),
            Err(err) => control.set_phase(JobPhase::Failed, Some(err.to_string())),
        }
        outcome
    }

    async fn run_inner(
        mut self,
        options: &JobOptions,
        metrics: &JobMetrics,
        control: &JobControl,
    ) -> Result<(), JobError> {
        let stop = &control.stop;
        let p = options.parallelism;
        let dataflow = &self.plan.dataflow;
        let sink_instances = dataflow.sink_parallelism(p);
        tracing::info!(
            job_source = %self.plan.source.name,
            sink = %self.plan.sink.name,
            parallelism = p,
            slots = options.slots,
            workers = p.div_ceil(options.slots),
            plan = %dataflow.explain(),
            "starting job"
        );
        let operator_ids = operator_ids(dataflow).map_err(|e| JobError::Options(e.to_string()))?;
        let checkpointing = match &options.checkpointing {
            None => None,
            Some(settings) => Some((
                settings.clone(),
                CheckpointStorage::open(&settings.storage_url)
                    .map_err(|e| JobError::Checkpoint(e.to_string()))?,
            )),
        };
        let late_name = self.late.as_ref().map(|(table, _)| table.name.clone());
        let restored = match &checkpointing {
            None => None,
            Some((_, storage)) => {
                let plan = PlanState {
                    operator_ids: &operator_ids,
                    max_parallelism: options.max_parallelism,
                    sink_table: &self.sink_table.name,
                    late_table: late_name.as_deref(),
                    allow_non_restored_state: options.allow_non_restored_state,
                };
                self.load_snapshot(storage, options, &plan).await?
            }
        };
        if let Some(restored) = &restored {
            if restored.finished {
                tracing::info!(checkpoint = restored.checkpoint_id, location = %restored.location, "the job finished in an earlier run; nothing to do");
                return Ok(());
            }
            tracing::info!(checkpoint = restored.checkpoint_id, location = %restored.location, "restoring");
            control.status.update(|status| status.restored_from = Some(restored.location.clone()));
            let id = CheckpointId(restored.checkpoint_id);
            self.sink = recover_sink(self.sink, &restored.sink_states, id).await?;
            if let Some((table, late)) = self.late.take() {
                self.late = Some((table, recover_sink(late, &restored.late_sink_states, id).await?));
            }
        }

        let (acks, sink_acks) = mpsc::unbounded_channel();
        let (late_acks, late_sink_acks) = mpsc::unbounded_channel();
        let barriers = BarrierTrigger::default();
        let (sinks, sink_threads) = start_sink(
            &self.sink_table,
            self.sink,
            sink_instances,
            options.channel_capacity,
            &metrics.connectors,
            &acks,
        )?;
        let (late, late_threads) = match self.late {
            None => (Vec::new(), Vec::new()),
            Some((table, connector)) => match start_sink(
                &table,
                connector,
                dataflow.late_output_parallelism(p),
                options.channel_capacity,
                &metrics.connectors,
                &late_acks,
            ) {
                Ok(started) => started,
                Err(err) => {
                    drop(sinks);
                    join_all(sink_threads).await?;
                    return Err(err.into());
                }
            },
        };
        let sink_threads: Vec<ConnectorThread> = sink_threads.into_iter().chain(late_threads).collect();
        // With checkpoints a stop ends the job at a checkpoint, not by draining the sources.
        let source_stop = if checkpointing.is_some() { StopSignal::default() } else { stop.clone() };
        let join_sources = std::mem::take(&mut self.join_sources);
        let mut inputs = vec![(&self.source_table, self.source, restored.as_ref().map(|r| &r.sources))];
        for (table, connector) in &join_sources {
            let restore = restored.as_ref().and_then(|r| r.by_table.get(&table.name));
            inputs.push((table, connector.clone(), restore));
        }
        // One receiver per instance of each source, main source first (as the executor takes them).
        let mut sources = Vec::new();
        let mut source_threads = Vec::new();
        for (table, connector, restore) in inputs {
            match start_source(
                table,
                connector,
                p,
                options.channel_capacity,
                &metrics.connectors,
                &source_stop,
                &barriers,
                restore,
            ) {
                Ok((receivers, threads)) => {
                    sources.extend(receivers);
                    source_threads.extend(threads);
                }
                Err(err) => {
                    drop(sinks);
                    drop(late);
                    drop(sources);
                    source_stop.stop();
                    join_all(source_threads).await?;
                    join_all(sink_threads).await?;
                    return Err(err.into());
                }
            }
        }
        let run_options = RunOptions {
            parallelism: p,
            max_parallelism: options.max_parallelism,
            channel_capacity: options.channel_capacity,
            state_max_bytes: options.state_max_bytes.or(self.plan.state_max_bytes),
            ..RunOptions::default()
        };
        let mut coordinator = None;
        let checkpoint_io = match checkpointing {
            None => None,
            Some((settings, storage)) => {
                let (events, task_events) = mpsc::unbounded_channel();
                let last_stage = dataflow.stages.len() - 1;
                let mut sides = vec![SinkSide {
                    operator_id: sink_operator_id(&self.sink_table.name),
                    senders: sinks.clone(),
                    acks: sink_acks,
                    upstream_stage: last_stage,
                }];
                if let (Some(name), Some(late_output)) = (&late_name, &dataflow.late_output) {
                    sides.push(SinkSide {
                        operator_id: sink_operator_id(name),
                        senders: late.clone(),
                        acks: late_sink_acks,
                        upstream_stage: late_output.stage,
                    });
                }
                let shape =
                    job_shape(&self.plan, &self.source_table, &join_sources, p, options.max_parallelism);
                let (control_tx, requests) = mpsc::channel(16);
                let storage_url = settings.storage_url.clone();
                let newest = storage
                    .completed_checkpoints()
                    .await
                    .map_err(|e| JobError::Checkpoint(e.to_string()))?
                    .into_iter()
                    .max();
                let task = Coordinator::new(
                    storage,
                    settings,
                    shape,
                    barriers.clone(),
                    task_events,
                    sides,
                    metrics.checkpoints.clone(),
                    restored.as_ref().map(|r| r.checkpoint_id),
                    control.status.clone(),
                )
                .numbering_after(newest);
                control.attach(control_tx.clone(), p, options.max_parallelism, &storage_url);
                coordinator = Some((control_tx, tokio::spawn(task.run(requests))));
                Some(CheckpointIo { events, restore: restored.as_ref().map(|r| Arc::clone(&r.state)) })
            }
        };
        let io = DataflowIo { sources, sinks, late, checkpoints: checkpoint_io };
        let mut threads: Vec<ConnectorThread> = source_threads.into_iter().chain(sink_threads).collect();
        let asks = coordinator.as_ref().map(|(control, _)| control.clone());
        control.set_phase(JobPhase::Running, None);
        let outcome = tokio::select! {
            result = run_dataflow(dataflow, io, &run_options, &metrics.runtime) => match (result, &asks) {
                (Ok(()), Some(control)) => ask(control, Control::Finish).await.map(|id| {
                    tracing::info!(checkpoint = id, "input ended: final checkpoint committed");
                }),
                (result, _) => result.map_err(JobError::from),
            },
            failed = first_failure(&mut threads) => Err(failed),
            stopped = stopped_with_checkpoint(stop, asks.as_ref(), control) => stopped,
        };
        // Sources stop (a failure, or a stop at a checkpoint); the dataflow is gone.
        source_stop.stop();
        stop.stop();
        drop(asks);
        control.set_phase(JobPhase::Stopping, None);
        control.detach();
        if let Some((control, task)) = coordinator {
            // The coordinator ends once no one can ask it anything; then the sinks' last
            // senders are gone.
            drop(control);
            if let Err(err) = task.await {
                tracing::warn!(%err, "the checkpoint coordinator panicked");
            }
        }
        // Connector threads finish as their channels close.
        let joined = join_all(threads).await;
        outcome.and(joined)
    }

    pub(crate) async fn load_snapshot(
        &self,
        storage: &CheckpointStorage,
        options: &JobOptions,
        plan: &PlanState<'_>,
    ) -> Result<Option<Restored>, JobError> {
        let fail = |e: millrace_checkpoint::CheckpointError| JobError::Restore(e.to_string());
        let (storage, metadata) = match &options.restore_from {
            Some(url) => {
                let from = CheckpointStorage::open(url).map_err(fail)?;
                let metadata = from.load_savepoint().await.map_err(fail)?;
                (from, metadata)
            }
            None => match storage.latest_checkpoint().await.map_err(fail)? {
                Some(metadata) => (storage.clone(), metadata),
                None => return Ok(None),
            },
        };
        restore(&storage, metadata, plan).await.map(Some)
    }
}

/// The job's shape as the checkpoint coordinator counts acknowledgements.
pub(crate) fn job_shape(
    plan: &JobPlan,
    source_table: &ConnectorTable,
    join_sources: &[(ConnectorTable, SourceConnector)],
    parallelism: usize,
    max_parallelism: u32,
) -> JobShape {
    let dataflow = &plan.dataflow;
    JobShape {
        job: plan.sink.name.clone(),
        parallelism,
        max_parallelism,
        stage_parallelism: (0..dataflow.stage_count())
            .map(|k| dataflow.stage_parallelism(k, parallelism))
            .collect(),
        source_table: source_table.name.clone(),
        source_topic: source_table.options.get("topic").cloned().unwrap_or_default(),
        join_sources: dataflow
            .source_stages()
            .into_iter()
            .skip(1)
            .zip(join_sources)
            .map(|((stage, _), (table, _))| {
                let topic = table.options.get("topic").cloned().unwrap_or_default();
                (stage, table.name.clone(), topic)
            })
            .collect(),
    }
}

/// Settles what a crash left of a sink's two-phase commit before it starts again: commits
/// the transactions the restored checkpoint covers, aborts later ones (on a blocking thread:
/// it talks to the broker). Returns the sink set to go on after the restored checkpoint.
pub(crate) async fn recover_sink(
    connector: SinkConnector,
    states: &[Vec<u8>],
    restored: CheckpointId,
) -> Result<SinkConnector, JobError> {
    let states = states.to_vec();
    let report = tokio::task::spawn_blocking({
        let connector = connector.clone();
        move || millrace_connectors::recover_sink(&connector, &states, restored)
    })
    .await
    .map_err(|e| JobError::Io(format!("recovering the sink: {e}")))??;
    if !report.committed.is_empty() || !report.aborted.is_empty() {
        tracing::info!(committed = ?report.committed, aborted = ?report.aborted, "sink transactions recovered");
    }
    Ok(connector.restored_from(restored))
}

/// Asks the coordinator and waits for its answer.
pub(crate) async fn ask(
    control: &mpsc::Sender<Control>,
    request: fn(oneshot::Sender<Result<u64, String>>) -> Control,
) -> Result<u64, JobError> {
    let (reply, answer) = oneshot::channel();
    control
        .send(request(reply))
        .await
        .map_err(|_| JobError::Checkpoint("the coordinator has stopped".into()))?;
    answer
        .await
        .map_err(|_| JobError::Checkpoint("the coordinator has stopped".into()))?
        .map_err(JobError::Checkpoint)
}

/// With checkpoints: resolves once `stop` is signalled and a checkpoint taken after it is
/// complete and committed. Without: never (the sources see `stop` and drain).
async fn stopped_with_checkpoint(
    stop: &StopSignal,
    control: Option<&mpsc::Sender<Control>>,
    job: &JobControl,
) -> Result<(), JobError> {
    let Some(control) = control else { return std::future::pending().await };
    while !stop.is_stopped() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    job.set_phase(JobPhase::Stopping, None);
    let id = ask(control, Control::CheckpointNow).await?;
    tracing::info!(checkpoint = id, "stopped at a committed checkpoint");
    Ok(())
}

/// Resolves with the error of the first connector thread that fails while the job runs.
///
/// Cancel-safe, as a `select!` branch must be: a thread leaves `threads` only when its result
/// is in hand. Joining a finished thread does not block, so it is joined inline; were the join
/// awaited, a branch completing meanwhile would drop the thread and its error with it (a sink
/// that failed at once was then never reported, and the job hung RUNNING).
pub(crate) async fn first_failure(threads: &mut Vec<ConnectorThread>) -> JobError {
    loop {
        while let Some(i) = threads.iter().position(ConnectorThread::is_finished) {
            if let Err(err) = threads.swap_remove(i).join() {
                return err.into();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn join_all(threads: Vec<ConnectorThread>) -> Result<(), JobError> {
    let mut first = Ok(());
    for thread in threads {
        let joined = tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|e| JobError::Io(format!("joining a connector thread: {e}")))
            .and_then(|r| r.map_err(JobError::from));
        if first.is_ok() {
            first = joined;
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `select!` whose other branch wins must not lose a failure `first_failure` already saw:
    /// it either returns the error or leaves the thread for the next call.
    #[tokio::test]
    async fn first_failure_loses_no_error_when_another_branch_wins() {
        let failing = ConnectorThread::spawn("sink-output-0".into(), || {
            Err(ConnectorError::Delivery("writing out/output.jsonl: No such file or directory".into()))
        })
        .expect("thread");
        while !failing.is_finished() {
            std::thread::yield_now();
        }
        let mut threads = vec![failing];
        let reported = tokio::select! {
            biased;
            failed = first_failure(&mut threads) => Some(failed),
            () = std::future::ready(()) => None,
        };
        let reported = match reported {
            Some(failed) => failed,
            None => {
                assert_eq!(threads.len(), 1, "the failed thread was dropped with its error");
                first_failure(&mut threads).await
            }
        };
        assert!(reported.to_string().contains("output.jsonl"), "{reported}");
        assert!(threads.is_empty());
    }
}
