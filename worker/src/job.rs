//! One job in one process: plan the SQL, configure the source and sink from their tables'
//! options (or from overrides, for tests), start connector threads, run the dataflow, and
//! fail the job if any part fails. Invalid SQL or options fail here, before anything runs.

use std::collections::HashMap;
use std::time::Duration;

use millrace_connectors::{
    BarrierTrigger, ConnectorError, ConnectorMetrics, ConnectorTable, ConnectorThread, MetadataField,
    SinkConnector, SourceConnector, StopSignal, start_sink, start_source,
};
use millrace_runtime::{DataflowIo, RunOptions, RuntimeError, RuntimeMetrics, run_dataflow};
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
    /// Used for Kafka tables that do not name `bootstrap_servers`.
    pub kafka_bootstrap: Option<String>,
}

impl Default for JobOptions {
    fn default() -> Self {
        Self {
            parallelism: 1,
            slots: 1,
            max_parallelism: millrace_types::DEFAULT_MAX_PARALLELISM,
            channel_capacity: 16,
            kafka_bootstrap: None,
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
}

impl JobMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        Self { runtime: RuntimeMetrics::register(registry), connectors: ConnectorMetrics::register(registry) }
    }
}

/// A planned job with configured connectors, ready to run.
#[derive(Debug)]
pub struct Job {
    pub plan: JobPlan,
    source_table: ConnectorTable,
    sink_table: ConnectorTable,
    source: SourceConnector,
    sink: SinkConnector,
    /// The late side output, if the source table names one.
    late: Option<(ConnectorTable, SinkConnector)>,
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
        let bootstrap = options.kafka_bootstrap.as_deref();
        let at =
            |def: &TableDef, err: ConnectorError| JobError::Sql(SqlError::at(def.location, err.to_string()));
        let source = match overrides.sources.remove(&plan.source.name) {
            Some(source) => source,
            None => SourceConnector::from_table(&source_table, bootstrap).map_err(|e| at(&plan.source, e))?,
        };
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
        Ok(Self { plan, source_table, sink_table, source, sink, late })
    }

    /// Runs the job until its sources end (bounded input) or `stop` is signalled, then
    /// drains: open windows fire, sinks flush.
    pub async fn run(
        self,
        options: &JobOptions,
        metrics: &JobMetrics,
        stop: &StopSignal,
    ) -> Result<(), JobError> {
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
        let (acks, _acks_rx) = tokio::sync::mpsc::unbounded_channel();
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
                &acks,
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
        let (sources, source_threads) = match start_source(
            &self.source_table,
            self.source,
            p,
            options.channel_capacity,
            &metrics.connectors,
            stop,
            &barriers,
            None,
        ) {
            Ok(started) => started,
            Err(err) => {
                drop(sinks);
                drop(late);
                join_all(sink_threads).await?;
                return Err(err.into());
            }
        };
        let run_options = RunOptions {
            parallelism: p,
            max_parallelism: options.max_parallelism,
            channel_capacity: options.channel_capacity,
            ..RunOptions::default()
        };
        let io = DataflowIo { sources, sinks, late };
        let mut threads: Vec<ConnectorThread> = source_threads.into_iter().chain(sink_threads).collect();
        let outcome = tokio::select! {
            result = run_dataflow(dataflow, io, &run_options, &metrics.runtime) => result.map_err(JobError::from),
            failed = first_failure(&mut threads) => Err(failed),
        };
        if outcome.is_err() {
            stop.stop();
        }
        // The dataflow has ended (or failed): connector threads finish as their channels close.
        let joined = join_all(threads).await;
        outcome.and(joined)
    }
}

/// Resolves with the error of the first connector thread that fails while the job runs.
async fn first_failure(threads: &mut Vec<ConnectorThread>) -> JobError {
    loop {
        if let Some(i) = threads.iter().position(ConnectorThread::is_finished) {
            let thread = threads.swap_remove(i);
            match tokio::task::spawn_blocking(move || thread.join()).await {
                Ok(Ok(())) => continue,
                Ok(Err(err)) => return err.into(),
                Err(err) => return JobError::Io(format!("joining a connector thread: {err}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn join_all(threads: Vec<ConnectorThread>) -> Result<(), JobError> {
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
