//! `millrace-worker`: the stream engine's binary. This entry point owns argument parsing,
//! tracing, the tokio runtime and the ops endpoints (`/healthz`, `/readyz`, `/metrics`).
//!
//! Roles: with no subcommand it serves the ops endpoints only (a worker waiting for work);
//! `run` runs a whole job in this process. `coordinator` and `worker` arrive with the
//! fault-tolerance issue.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use millrace_connectors::StopSignal;
use millrace_telemetry::{OpsState, default_ops_addr, init_tracing, ops_router, serve_ops, shutdown_signal};
use millrace_worker::{Job, JobError, JobMetrics, JobOptions, JobOverrides, load_job_file};
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
    /// Kafka bootstrap servers for tables that do not name them.
    #[arg(long, env = "KAFKA_BOOTSTRAP")]
    kafka_bootstrap: Option<String>,
    /// Print the plan and exit without running.
    #[arg(long)]
    explain: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing("info");
    match args.role {
        None => block_on(None, serve_only(args.ops_addr)),
        Some(Role::Run(run)) => run_role(args.ops_addr, run),
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
    let parallelism = args.parallelism.or(source.parallelism).unwrap_or(1);
    let options = JobOptions {
        parallelism,
        slots: args.slots.or(source.slots_per_worker).unwrap_or(parallelism),
        max_parallelism: args
            .max_parallelism
            .or(source.max_parallelism)
            .unwrap_or(millrace_types::DEFAULT_MAX_PARALLELISM),
        kafka_bootstrap: args.kafka_bootstrap.clone(),
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
    block_on(Some(options.slots), run_job(job, options, ops_addr))
}

async fn run_job(job: Job, options: JobOptions, ops_addr: SocketAddr) -> anyhow::Result<()> {
    let mut registry = Registry::with_prefix("millrace_worker");
    let metrics = JobMetrics::register(&mut registry);
    let ops = OpsState::new(registry);
    let server = tokio::spawn(serve_ops(ops_addr, ops_router(ops.clone())));
    let stop = StopSignal::default();
    let signalled = {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("stopping: draining the job");
            stop.stop();
        })
    };
    ops.set_ready(true);
    let result = job.run(&options, &metrics, &stop).await;
    ops.set_ready(false);
    signalled.abort();
    server.abort();
    result.context("the job failed")?;
    tracing::info!("job finished");
    Ok(())
}
