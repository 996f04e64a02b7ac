//! `millrace-operator`: watches KafkaTopic resources and reconciles them into Kafka topics,
//! and StreamJob resources into coordinator and worker Deployments. This entry point owns
//! argument parsing, tracing, the ops endpoints (`/healthz`, `/readyz`, `/metrics`), leader
//! election, and starting both controllers under one Lease; the reconcile logic lives in the
//! controller modules.

mod kafka_admin;
mod kafka_topic;
mod leader;
mod metrics;
mod stream_job;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use futures::FutureExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use millrace_telemetry::{OpsState, default_ops_addr, init_tracing, ops_router, serve_ops, shutdown_signal};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::leader::LeaseLock;
use crate::metrics::Metrics;

/// Reconciles Millrace KafkaTopic and StreamJob resources against Kubernetes and Kafka.
#[derive(Debug, Parser)]
#[command(name = "millrace-operator", version)]
struct Args {
    /// Address for /healthz, /readyz and /metrics [default: $POD_IP:9100, else 127.0.0.1:9100].
    #[arg(long, env = "MILLRACE_OPS_ADDR")]
    ops_addr: Option<SocketAddr>,

    /// Bootstrap servers of the default Kafka cluster, for KafkaTopics without
    /// spec.connection [falls back to $KAFKA_BOOTSTRAP].
    #[arg(long, env = "MILLRACE_KAFKA_BOOTSTRAP")]
    kafka_bootstrap: Option<String>,

    /// The millrace-worker image of StreamJobs without spec.image
    /// [default: millrace/millrace-worker:<operator version>].
    #[arg(long, env = "MILLRACE_WORKER_IMAGE")]
    worker_image: Option<String>,

    /// Checkpoint and savepoint storage (`file:///…`, `s3://bucket/prefix`) of StreamJobs
    /// without spec.checkpointing.storage; each job gets `<storage>/<namespace>/<name>`.
    /// Without it such jobs take no checkpoints.
    #[arg(long, env = "MILLRACE_CHECKPOINT_STORAGE")]
    checkpoint_storage: Option<String>,

    /// Seconds between two looks at a running StreamJob's coordinator (checkpoints, failures,
    /// periodic savepoints).
    #[arg(long, default_value_t = 5)]
    job_poll_seconds: u64,

    /// Seconds between two comparisons of an in-sync topic with Kafka (reverts drift).
    #[arg(long, env = "MILLRACE_RESYNC_SECONDS", default_value_t = 30)]
    resync_seconds: u64,

    /// Seconds before a resource whose spec must change is looked at again without a change.
    #[arg(long, default_value_t = 300)]
    wait_for_change_seconds: u64,

    /// Cap, in seconds, of the exponential backoff after Kafka or API failures.
    #[arg(long, default_value_t = 300)]
    max_backoff_seconds: u64,

    /// Reconciles running at once.
    #[arg(long, default_value_t = 4)]
    concurrency: u16,

    /// Take a coordination.k8s.io Lease before reconciling, so that replicas never act at once.
    #[arg(long, env = "MILLRACE_LEADER_ELECTION")]
    leader_election: bool,

    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "millrace-system")]
    lease_namespace: String,

    /// Name of the leader-election Lease.
    #[arg(long, default_value = "millrace-operator")]
    lease_name: String,

    /// This replica's identity in the Lease and in Events [default: $POD_NAME, else host name and pid].
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing("info");
    let bootstrap = args
        .kafka_bootstrap
        .clone()
        .or_else(|| std::env::var("KAFKA_BOOTSTRAP").ok())
        .filter(|b| !b.trim().is_empty())
        .context(
            "no default Kafka cluster: set --kafka-bootstrap, MILLRACE_KAFKA_BOOTSTRAP or KAFKA_BOOTSTRAP",
        )?;
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });

    let mut registry = Registry::with_prefix("millrace_operator");
    let metrics = Arc::new(Metrics::register(&mut registry));
    let ops = OpsState::new(registry);
    let ops_addr = args.ops_addr.unwrap_or_else(|| default_ops_addr(9100));
    let ops_server = tokio::spawn(serve_ops(ops_addr, ops_router(ops.clone())));

    let client = Client::try_default().await.context("connecting to the Kubernetes API")?;
    ops.set_ready(true);

    let (lost_tx, mut lost_rx) = watch::channel(false);
    let lost_check = lost_rx.clone();
    let lease = if args.leader_election {
        let api: Api<Lease> = Api::namespaced(client.clone(), &args.lease_namespace);
        let lock =
            Arc::new(LeaseLock::new(api, args.lease_name.clone(), identity.clone(), Duration::from_secs(15)));
        if !acquire(&lock).await {
            info!("shut down before becoming leader");
            return Ok(());
        }
        tokio::spawn(keep_renewing(Arc::clone(&lock), lost_tx));
        Some(lock)
    } else {
        None
    };

    let job_settings = stream_job::Settings {
        defaults: stream_job::children::Defaults {
            image: args
                .worker_image
                .clone()
                .unwrap_or_else(|| format!("millrace/millrace-worker:{}", env!("CARGO_PKG_VERSION"))),
            kafka_bootstrap: bootstrap.clone(),
            checkpoint_storage: args.checkpoint_storage.clone().filter(|s| !s.trim().is_empty()),
        },
        poll: Duration::from_secs(args.job_poll_seconds.max(1)),
        wait_for_change: Duration::from_secs(args.wait_for_change_seconds),
        max_backoff: Duration::from_secs(args.max_backoff_seconds),
        concurrency: args.concurrency,
        instance: Some(identity.clone()),
    };
    let settings = kafka_topic::Settings {
        default_bootstrap: bootstrap,
        resync: Duration::from_secs(args.resync_seconds),
        wait_for_change: Duration::from_secs(args.wait_for_change_seconds),
        max_backoff: Duration::from_secs(args.max_backoff_seconds),
        concurrency: args.concurrency,
        instance: Some(identity),
    };
    let lost_leadership = async move {
        let _ = lost_rx.wait_for(|lost| *lost).await;
    };
    let stop = async move {
        tokio::select! {
            () = shutdown_signal() => {}
            () = lost_leadership => warn!("lost the leader Lease; stopping"),
        }
    };
    // Both controllers stop together, on a signal or when the Lease is lost.
    let stop = stop.shared();
    let (_, jobs) = tokio::join!(
        kafka_topic::run(client.clone(), settings, Arc::clone(&metrics), stop.clone()),
        stream_job::run(client, job_settings, metrics, stop),
    );
    if let Err(err) = jobs {
        warn!(%err, "the StreamJob controller could not start");
    }

    if let Some(lock) = lease {
        if let Err(err) = lock.release().await {
            warn!(%err, "could not release the leader Lease");
        }
        if *lost_check.borrow() {
            anyhow::bail!("lost the leader Lease");
        }
    }
    ops_server.abort();
    Ok(())
}

/// Waits until this replica holds the Lease; false if the process is told to stop first.
async fn acquire(lock: &LeaseLock) -> bool {
    info!(identity = lock.identity(), "waiting for the leader Lease");
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        match lock.try_acquire_or_renew().await {
            Ok(true) => {
                info!(identity = lock.identity(), "became leader");
                return true;
            }
            Ok(false) => {}
            Err(err) => warn!(%err, "could not read or take the leader Lease"),
        }
        tokio::select! {
            () = &mut shutdown => return false,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// Renews every third of the Lease duration; flags `lost` once a renewal has not
/// succeeded for a whole duration (another replica may have taken over by then).
async fn keep_renewing(lock: Arc<LeaseLock>, lost: watch::Sender<bool>) {
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(lock.duration() / 3).await;
        match lock.try_acquire_or_renew().await {
            Ok(true) => last_renewed = tokio::time::Instant::now(),
            Ok(false) => {
                let _ = lost.send(true);
                return;
            }
            Err(err) => warn!(%err, "could not renew the leader Lease"),
        }
        if last_renewed.elapsed() >= lock.duration() {
            let _ = lost.send(true);
            return;
        }
    }
}
