//! `millrace-worker`: the stream engine's binary. This entry point owns argument parsing,
//! tracing, the tokio runtime and the ops endpoints (`/healthz`, `/readyz`, `/metrics`).
//!
//! Roles: with no subcommand it serves the ops endpoints only;
//! `run` runs a whole job in this process — with `--checkpoint-dir`, with checkpoints,
//! restore, restarts after failures and the job's control API (savepoints) beside
//! `/metrics`. `coordinator` and `worker` spread a job over processes (see
//! `millrace_worker::roles` and docs/checkpoints.md, "A job over several processes"): the
//! coordinator serves the control API and runs the checkpoint coordinator, the workers run
//! the subtasks and exchange rows over the network.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use millrace_connectors::StopSignal;
use millrace_telemetry::{OpsState, default_ops_addr, init_tracing, ops_router, serve_ops, shutdown_signal};
use millrace_worker::roles::{
    JobSpec, RestartPolicy as RolesRestartPolicy, WorkerSettings, default_data_addr, run_coordinator,
    run_worker,
};
use millrace_worker::{
    CheckpointSettings, Job, JobControl, JobError, JobMetrics, JobOptions, JobOverrides, KafkaDefaults,
    SinkDeliveryDefault, control_router, load_job_file,
};
use prometheus_client::registry::Registry;

/// Millrace's stream engine.
#[derive(Debug, Parser)]
#[command(name = "millrace-worker", version)]
struct Args {
    /// Address for /healthz, /readyz and /metrics [default: $POD_IP:9200, else 127.0.0.1:9200].
    #[arg(long, env = "MILLRACE_OPS_ADDR", global = true)]
    ops_addr: Option<SocketAddr>,
    #[command(subcommand)]
    role: Option<Role>,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// Run a whole job in this process, from a SQL file or a StreamJob manifest.
    Run(RunArgs),
    /// Coordinate a job spread over worker processes (one per job).
    Coordinator(CoordinatorArgs),
    /// Offer slots to a job's coordinator and run the subtasks it deploys.
    Worker(WorkerArgs),
}

#[derive(Debug, clap::Args)]
struct CoordinatorArgs {
    /// The job: `*.sql`, or a StreamJob manifest (`*.yaml`).
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Parallel instances of the operator chain [default: the manifest's, else 1].
    #[arg(long)]
    parallelism: Option<usize>,
    /// Key groups [default: the manifest's, else 128].
    #[arg(long)]
    max_parallelism: Option<u32>,
    /// Slots of each worker (informational: workers say how many they have) [default: the
    /// manifest's slotsPerWorker].
    #[arg(long)]
    slots_per_worker: Option<usize>,
    /// Where workers register [default: $POD_IP:6123, else 127.0.0.1:6123].
    #[arg(long, env = "MILLRACE_COORDINATOR_LISTEN")]
    listen: Option<String>,
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Take checkpoints into this folder and restore from the newest one at start.
    #[arg(long, env = "MILLRACE_CHECKPOINT_DIR")]
    checkpoint_dir: Option<String>,
    #[arg(long, value_parser = parse_duration)]
    checkpoint_interval: Option<Duration>,
    #[arg(long)]
    checkpoints_retained: Option<usize>,
    #[arg(long, env = "MILLRACE_SAVEPOINT_DIR")]
    savepoint_dir: Option<String>,
    /// Start from this savepoint folder when the checkpoint folder has no checkpoint yet.
    #[arg(long)]
    restore_from: Option<String>,
    #[arg(long)]
    allow_non_restored_state: bool,
    /// The limit on the operator state each worker process holds (the workers' own flag wins), as `2gb`, `512mb` or bytes (see
    /// docs/checkpoints.md); wins over the job's SET 'state.max-bytes'.
    #[arg(long, env = "MILLRACE_STATE_MAX_BYTES", value_parser = parse_state_bytes)]
    state_max_bytes: Option<u64>,
    /// Restarts from the newest checkpoint after a failure, at most this many times within
    /// --restart-window before the job is FAILED.
    #[arg(long, default_value_t = 3)]
    restart_attempts: u32,
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    restart_window: Duration,
}

#[derive(Debug, clap::Args)]
struct WorkerArgs {
    /// The coordinator's RPC address, `host:port` (the host through MILLRACE_HOSTS_FILE, then DNS).
    #[arg(long, env = "MILLRACE_COORDINATOR")]
    coordinator: String,
    /// Slots of this process (slot i runs subtask i of every stage).
    #[arg(long, env = "MILLRACE_SLOTS", default_value_t = 1)]
    slots: usize,
    /// The network exchange's listener, advertised to the coordinator [default: $POD_IP:0,
    /// else 127.0.0.1:0].
    #[arg(long)]
    data_addr: Option<String>,
    /// Kafka bootstrap servers for tables that do not name them [default: the coordinator's].
    #[arg(long, env = "KAFKA_BOOTSTRAP")]
    kafka_bootstrap: Option<String>,
    /// The limit on the operator state this process holds, as `2gb`, `512mb` or bytes (see
    /// docs/checkpoints.md); wins over the job's SET 'state.max-bytes'.
    #[arg(long, env = "MILLRACE_STATE_MAX_BYTES", value_parser = parse_state_bytes)]
    state_max_bytes: Option<u64>,
    /// Kafka client properties of this process, one file per librdkafka key (a mounted Secret).
    #[arg(long, env = "MILLRACE_KAFKA_PROPERTIES_DIR")]
    kafka_properties_dir: Option<PathBuf>,
}

/// What the job's Kafka tables leave out (a StreamJob's `spec.kafka`, `spec.deadLetter` and
/// `spec.checkpointing.delivery`, passed by the operator); a table's own options win.
#[derive(Debug, clap::Args)]
struct KafkaArgs {
    /// Kafka bootstrap servers for tables that do not name them.
    #[arg(long, env = "KAFKA_BOOTSTRAP")]
    kafka_bootstrap: Option<String>,
    /// Kafka client properties for every Kafka client of the job, one file per librdkafka
    /// key holding its value (a mounted Secret); a table's `properties.<key>` wins.
    #[arg(long, env = "MILLRACE_KAFKA_PROPERTIES_DIR")]
    kafka_properties_dir: Option<PathBuf>,
    /// Dead-letter topic of Kafka sources that set neither `dlq_topic` nor `bad_records`.
    #[arg(long, env = "MILLRACE_DEAD_LETTER_TOPIC")]
    dead_letter_topic: Option<String>,
    /// Delivery guarantee of Kafka sinks that do not set `sink.delivery-guarantee`
    /// [default: at-least-once]; `exactly-once` needs --transactional-id-base.
    #[arg(long, value_parser = ["at-least-once", "exactly-once"])]
    sink_delivery: Option<String>,
    /// Names the exactly-once transactions of sinks without `sink.transactional-id-prefix`:
    /// `<base>.<sink table>`; unique per job, stable across its deployments.
    #[arg(long)]
    transactional_id_base: Option<String>,
}

impl KafkaArgs {
    fn defaults(&self) -> anyhow::Result<KafkaDefaults> {
        let sink_delivery = match (self.sink_delivery.as_deref(), &self.transactional_id_base) {
            (None, _) => None,
            (Some("exactly-once"), Some(base)) if !base.trim().is_empty() => {
                Some(SinkDeliveryDefault::ExactlyOnce { transactional_id_base: base.clone() })
            }
            (Some("exactly-once"), _) => {
                anyhow::bail!("--sink-delivery exactly-once needs --transactional-id-base")
            }
            (Some(_), _) => Some(SinkDeliveryDefault::AtLeastOnce),
        };
        Ok(KafkaDefaults {
            bootstrap_servers: self.kafka_bootstrap.clone(),
            properties: read_properties(self.kafka_properties_dir.as_deref())?,
            dead_letter_topic: self.dead_letter_topic.clone(),
            sink_delivery,
        })
    }
}

fn read_properties(dir: Option<&std::path::Path>) -> anyhow::Result<Vec<(String, String)>> {
    Ok(dir.map(KafkaDefaults::read_properties_dir).transpose()?.unwrap_or_default())
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The job: `*.sql`, or a StreamJob manifest (`*.yaml`).
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Parallel instances of the operator chain [default: the manifest's, else 1].
    #[arg(long)]
    parallelism: Option<usize>,
    /// Slots of this process: worker threads of the engine [default: the manifest's
    /// slotsPerWorker, else the parallelism].
    #[arg(long)]
    slots: Option<usize>,
    /// Key groups [default: the manifest's, else 128].
    #[arg(long)]
    max_parallelism: Option<u32>,
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Print the plan and exit without running.
    #[arg(long)]
    explain: bool,
    /// Take checkpoints into this folder (`file:///…`) and restore from the latest one at
    /// start [default: the manifest's spec.checkpointing.storage].
    #[arg(long, env = "MILLRACE_CHECKPOINT_DIR")]
    checkpoint_dir: Option<String>,
    /// Time between checkpoints (`500ms`, `10s`, `2m`) [default: the manifest's, else 10s].
    #[arg(long, value_parser = parse_duration)]
    checkpoint_interval: Option<Duration>,
    /// Completed checkpoints kept [default: the manifest's, else 3].
    #[arg(long)]
    checkpoints_retained: Option<usize>,
    /// Default folder for savepoints triggered through the API [default: next to the
    /// checkpoints, `<checkpoint-dir>-savepoints`].
    #[arg(long, env = "MILLRACE_SAVEPOINT_DIR")]
    savepoint_dir: Option<String>,
    /// Start from this savepoint folder instead of the latest checkpoint [default: the
    /// manifest's spec.initialSavepoint, used only when no checkpoint exists yet].
    #[arg(long)]
    restore_from: Option<String>,
    /// Start even if savepoint state maps to no operator of the plan (it is dropped).
    #[arg(long)]
    allow_non_restored_state: bool,
    /// The limit on the operator state this process holds, as `2gb`, `512mb` or bytes (see
    /// docs/checkpoints.md); wins over the job's SET 'state.max-bytes'.
    #[arg(long, env = "MILLRACE_STATE_MAX_BYTES", value_parser = parse_state_bytes)]
    state_max_bytes: Option<u64>,
    /// With checkpoints: restarts from the latest checkpoint after a failure, at most this
    /// many times within --restart-window before the job is failed.
    #[arg(long, default_value_t = 3)]
    restart_attempts: u32,
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    restart_window: Duration,
}

/// `500ms`, `10s`, `2m`, `1h`, or plain milliseconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 =
        number.parse().map_err(|_| format!("'{text}' is not a duration like 500ms, 10s or 2m"))?;
    let ms = match unit {
        "" | "ms" => number,
        "s" => number * 1000,
        "m" => number * 60_000,
        "h" => number * 3_600_000,
        other => return Err(format!("unknown unit '{other}' in '{text}' (use ms, s, m or h)")),
    };
    Ok(Duration::from_millis(ms))
}

/// `2gb`, `512 mb`, `1048576` (Flink's memory sizes, binary multiples).
fn parse_state_bytes(text: &str) -> Result<u64, String> {
    match millrace_runtime::state_budget::parse_bytes(text) {
        Some(bytes) if bytes > 0 => Ok(bytes),
        _ => Err(format!("'{text}' is not a memory size like 2gb, 512mb or 1048576")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing("info");
    match args.role {
        None => block_on(None, serve_only(args.ops_addr)),
        Some(Role::Run(run)) => run_role(args.ops_addr, run),
        Some(Role::Coordinator(coordinator)) => coordinator_role(args.ops_addr, coordinator),
        Some(Role::Worker(worker)) => worker_role(args.ops_addr, worker),
    }
}

fn block_on(threads: Option<usize>, work: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(threads) = threads {
        builder.worker_threads(threads.max(1));
    }
    let result =
        builder.build().context("starting the tokio runtime").and_then(|runtime| runtime.block_on(work));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve_only(ops_addr: Option<SocketAddr>) -> anyhow::Result<()> {
    let ops = OpsState::new(Registry::with_prefix("millrace_worker"));
    ops.set_ready(true);
    serve_ops(ops_addr.unwrap_or_else(|| default_ops_addr(9200)), ops_router(ops)).await
}

fn run_role(ops_addr: Option<SocketAddr>, args: RunArgs) -> ExitCode {
    let source = match load_job_file(&args.file) {
        Ok(source) => source,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    let kafka = match args.kafka.defaults() {
        Ok(kafka) => kafka,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::from(2);
        }
    };
    let parallelism = args.parallelism.or(source.parallelism).unwrap_or(1);
    let checkpoint_dir = args.checkpoint_dir.clone().or(source.checkpoint_storage.clone());
    let checkpointing = checkpoint_dir.as_ref().map(|url| CheckpointSettings {
        storage_url: url.clone(),
        interval: args
            .checkpoint_interval
            .or(source.checkpoint_interval_ms.map(Duration::from_millis))
            .unwrap_or(Duration::from_secs(10)),
        retained: args.checkpoints_retained.or(source.checkpoints_retained).unwrap_or(3),
        crash_after_checkpoint: std::env::var("MILLRACE_FAULT_CRASH_AFTER_CHECKPOINT")
            .ok()
            .and_then(|v| v.parse().ok()),
        ..CheckpointSettings::default()
    });
    let options = JobOptions {
        checkpointing,
        restore_from: args.restore_from.clone(),
        allow_non_restored_state: args.allow_non_restored_state || source.allow_non_restored_state,
        parallelism,
        slots: args.slots.or(source.slots_per_worker).unwrap_or(parallelism),
        max_parallelism: args
            .max_parallelism
            .or(source.max_parallelism)
            .unwrap_or(millrace_types::DEFAULT_MAX_PARALLELISM),
        kafka,
        state_max_bytes: args.state_max_bytes,
        ..JobOptions::default()
    };
    let job = match Job::prepare(&source.sql, &options, JobOverrides::default()) {
        Ok(job) => job,
        Err(JobError::Sql(err)) => {
            // file:line:column, as compilers print it, so editors can jump there.
            eprintln!("error: {}:{}:{}: {}", args.file.display(), err.line, err.column, err.message);
            if let Some(hint) = &err.hint {
                eprintln!("hint: {hint}");
            }
            return ExitCode::from(2);
        }
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    if args.explain {
        println!("{}\n{}", job.plan.logical_plan, job.plan.dataflow.explain());
        return ExitCode::SUCCESS;
    }
    let ops_addr = ops_addr.unwrap_or_else(|| default_ops_addr(9200));
    let savepoint_dir = args
        .savepoint_dir
        .clone()
        .or_else(|| checkpoint_dir.as_ref().map(|dir| format!("{}-savepoints", dir.trim_end_matches('/'))));
    let restarts = RestartPolicy { attempts: args.restart_attempts, window: args.restart_window };
    let run =
        JobRun { sql: source.sql, initial_savepoint: source.initial_savepoint, savepoint_dir, restarts };
    block_on(Some(options.slots), run_job(job, run, options, ops_addr))
}

/// Prints a planning error as `file:line:column: message` (exit code 2).
fn refuse(file: &std::path::Path, err: JobError) -> ExitCode {
    match err {
        JobError::Sql(err) => {
            eprintln!("error: {}:{}:{}: {}", file.display(), err.line, err.column, err.message);
            if let Some(hint) = &err.hint {
                eprintln!("hint: {hint}");
            }
        }
        err => eprintln!("error: {err}"),
    }
    ExitCode::from(2)
}

fn coordinator_role(ops_addr: Option<SocketAddr>, args: CoordinatorArgs) -> ExitCode {
    let source = match load_job_file(&args.file) {
        Ok(source) => source,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    let kafka = match args.kafka.defaults() {
        Ok(kafka) => kafka,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::from(2);
        }
    };
    let parallelism = args.parallelism.or(source.parallelism).unwrap_or(1);
    let checkpoint_dir = args.checkpoint_dir.clone().or(source.checkpoint_storage.clone());
    let checkpointing = checkpoint_dir.as_ref().map(|url| CheckpointSettings {
        storage_url: url.clone(),
        interval: args
            .checkpoint_interval
            .or(source.checkpoint_interval_ms.map(Duration::from_millis))
            .unwrap_or(Duration::from_secs(10)),
        retained: args.checkpoints_retained.or(source.checkpoints_retained).unwrap_or(3),
        crash_after_checkpoint: std::env::var("MILLRACE_FAULT_CRASH_AFTER_CHECKPOINT")
            .ok()
            .and_then(|v| v.parse().ok()),
        ..CheckpointSettings::default()
    });
    let options = JobOptions {
        checkpointing,
        restore_from: args.restore_from.clone().or(source.initial_savepoint.clone()),
        allow_non_restored_state: args.allow_non_restored_state || source.allow_non_restored_state,
        parallelism,
        slots: args.slots_per_worker.or(source.slots_per_worker).unwrap_or(1),
        max_parallelism: args
            .max_parallelism
            .or(source.max_parallelism)
            .unwrap_or(millrace_types::DEFAULT_MAX_PARALLELISM),
        kafka,
        state_max_bytes: args.state_max_bytes,
        ..JobOptions::default()
    };
    if let Err(err) = Job::prepare(&source.sql, &options, JobOverrides::default()) {
        return refuse(&args.file, err);
    }
    let listen = args.listen.clone().unwrap_or_else(|| {
        format!("{}:6123", std::env::var("POD_IP").unwrap_or_else(|_| "127.0.0.1".into()))
    });
    let savepoint_dir = args
        .savepoint_dir
        .clone()
        .or_else(|| checkpoint_dir.as_ref().map(|dir| format!("{}-savepoints", dir.trim_end_matches('/'))));
    let restarts = RolesRestartPolicy { attempts: args.restart_attempts, window: args.restart_window };
    let spec = JobSpec { sql: source.sql, options };
    let ops_addr = ops_addr.unwrap_or_else(|| default_ops_addr(9200));
    block_on(None, async move {
        let mut registry = Registry::with_prefix("millrace_worker");
        let metrics = JobMetrics::register(&mut registry);
        let ops = OpsState::new(registry);
        let control = JobControl::new(StopSignal::default(), savepoint_dir);
        let router = ops_router(ops.clone()).merge(control_router(control.clone()));
        let server = tokio::spawn(serve_ops(ops_addr, router));
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("listening for workers on {listen}"))?;
        tracing::info!(%listen, "coordinator listening for workers");
        ops.set_ready(true);
        let terminate = StopSignal::default();
        let signalled = {
            let terminate = terminate.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!("coordinator stopping");
                terminate.stop();
                // Stopping waits for a checkpoint and the workers' confirmations, each with
                // its own timeout; this bounds the whole.
                tokio::time::sleep(Duration::from_secs(120)).await;
                tracing::warn!("the coordinator did not stop in time; exiting");
                std::process::exit(0);
            })
        };
        run_coordinator(listener, spec, restarts, metrics, control, terminate).await;
        signalled.abort();
        server.abort();
        Ok(())
    })
}

fn worker_role(ops_addr: Option<SocketAddr>, args: WorkerArgs) -> ExitCode {
    let kafka_properties = match read_properties(args.kafka_properties_dir.as_deref()) {
        Ok(properties) => properties,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::from(2);
        }
    };
    let settings = WorkerSettings {
        coordinator: args.coordinator,
        slots: args.slots.max(1),
        data_addr: args.data_addr.unwrap_or_else(default_data_addr),
        kafka_bootstrap: args.kafka_bootstrap,
        kafka_properties,
        state_max_bytes: args.state_max_bytes,
    };
    let ops_addr = ops_addr.unwrap_or_else(|| default_ops_addr(9200));
    block_on(Some(settings.slots + 1), async move {
        let mut registry = Registry::with_prefix("millrace_worker");
        let metrics = JobMetrics::register(&mut registry);
        let ops = OpsState::new(registry);
        let server = tokio::spawn(serve_ops(ops_addr, ops_router(ops.clone())));
        let outcome = tokio::select! {
            outcome = run_worker(settings, ops, metrics) => outcome,
            _ = shutdown_signal() => {
                tracing::info!("worker stopping");
                Ok(())
            }
        };
        server.abort();
        outcome
    })
}

/// How a job with checkpoints is restarted after a failure: from its latest checkpoint,
/// with exponential backoff (1 s doubling to 30 s), at most `attempts` times within `window`.
struct RestartPolicy {
    attempts: u32,
    window: Duration,
}

struct JobRun {
    sql: String,
    initial_savepoint: Option<String>,
    savepoint_dir: Option<String>,
    restarts: RestartPolicy,
}

async fn run_job(
    first: Job,
    run: JobRun,
    mut options: JobOptions,
    ops_addr: SocketAddr,
) -> anyhow::Result<()> {
    let mut registry = Registry::with_prefix("millrace_worker");
    let metrics = JobMetrics::register(&mut registry);
    let ops = OpsState::new(registry);
    let stop = StopSignal::default();
    let control = JobControl::new(stop.clone(), run.savepoint_dir.clone());
    control.watch_state(&metrics.runtime);
    let router = ops_router(ops.clone()).merge(control_router(control.clone()));
    let server = tokio::spawn(serve_ops(ops_addr, router));
    let checkpointing = options.checkpointing.is_some();
    let signalled = {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            if checkpointing {
                tracing::info!("stopping at a checkpoint");
            } else {
                tracing::info!("stopping: draining the job");
            }
            stop.stop();
        })
    };
    // The manifest's initial savepoint applies only to a job that has no checkpoint yet.
    if options.restore_from.is_none()
        && let (Some(savepoint), Some(settings)) = (&run.initial_savepoint, &options.checkpointing)
    {
        let storage = millrace_checkpoint::CheckpointStorage::open(&settings.storage_url)?;
        if storage.latest_checkpoint().await?.is_none() {
            options.restore_from = Some(savepoint.clone());
        }
    }
    ops.set_ready(true);
    let mut job = Some(first);
    let mut failures: Vec<std::time::Instant> = Vec::new();
    let mut backoff = Duration::from_secs(1);
    let result = loop {
        let current = match job.take() {
            Some(job) => job,
            None => match Job::prepare(&run.sql, &options, JobOverrides::default()) {
                Ok(job) => job,
                Err(err) => break Err(err),
            },
        };
        let result = current.run_with_control(&options, &metrics, &control).await;
        let Err(err) = result else { break Ok(()) };
        if !checkpointing || stop.is_stopped() {
            break Err(err);
        }
        let now = std::time::Instant::now();
        failures.retain(|at| now.duration_since(*at) < run.restarts.window);
        failures.push(now);
        if failures.len() as u32 > run.restarts.attempts {
            tracing::error!(%err, failures = failures.len(), "the job failed too often; giving up");
            break Err(err);
        }
        tracing::warn!(%err, restart_in_ms = backoff.as_millis() as u64, "the job failed; restarting from its latest checkpoint");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
        // A restart resumes from the latest checkpoint, not from the savepoint it began with.
        options.restore_from = None;
    };
    ops.set_ready(false);
    signalled.abort();
    server.abort();
    result.context("the job failed")?;
    tracing::info!("job finished");
    Ok(())
}
