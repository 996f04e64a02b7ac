//! `millrace-api`: configuration, start-up checks and serving. Everything behind the socket
//! is built by `millrace_api::app`.
//!
//! Start-up refuses to serve (exit 1 with a message saying why) when the database is
//! unreachable, when its schema was migrated by a newer binary, when no admin token is
//! configured, or when no Kubernetes configuration can be inferred.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use millrace_api::{AppState, app, db, jobs, metrics::HttpMetrics, readiness, topics};
use millrace_telemetry::{OpsState, default_ops_addr, init_tracing, shutdown_signal};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Millrace's REST control plane.
#[derive(Debug, Parser)]
#[command(name = "millrace-api", version)]
struct Args {
    /// Address to listen on [default: $POD_IP:8080, else 127.0.0.1:8080].
    #[arg(long, env = "MILLRACE_LISTEN_ADDR")]
    listen_addr: Option<SocketAddr>,

    /// Postgres URL of the catalog.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,

    /// File holding the admin token (e.g. a mounted Secret). Used when MILLRACE_ADMIN_TOKEN is unset.
    #[arg(long, env = "MILLRACE_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,

    /// How long to wait for the database at start before giving up.
    #[arg(long, default_value_t = 10)]
    database_timeout_seconds: u64,

    /// How often every topic and job is checked against its resource (status and drift).
    #[arg(long, env = "MILLRACE_RESYNC_SECONDS", default_value_t = 30)]
    resync_seconds: u64,

    /// Base URL of job checkpoint storage (`s3://bucket/prefix`); each job's checkpoints go
    /// to `<base>/<tenant>/<job>`. Unset: the operator's default storage.
    #[arg(long, env = "MILLRACE_CHECKPOINT_STORAGE")]
    checkpoint_storage: Option<String>,
}

/// The admin token: `MILLRACE_ADMIN_TOKEN`, else the file. At least 16 characters.
fn admin_token(file: Option<&PathBuf>) -> anyhow::Result<String> {
    let token = match (std::env::var("MILLRACE_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()), file) {
        (Some(token), _) => token,
        (None, Some(path)) => {
            // Mounted Secrets live under MILLRACE_MOUNT_PREFIX on the local pod runner.
            let path = match std::env::var_os("MILLRACE_MOUNT_PREFIX") {
                Some(prefix) if path.is_absolute() && !path.exists() => {
                    PathBuf::from(prefix).join(path.strip_prefix("/").unwrap_or(path))
                }
                _ => path.clone(),
            };
            std::fs::read_to_string(&path)
                .with_context(|| format!("reading the admin token from {}", path.display()))?
        }
        (None, None) => bail!("no admin token: set MILLRACE_ADMIN_TOKEN or --admin-token-file"),
    };
    let token = token.trim().to_owned();
    if token.len() < 16 {
        bail!("the admin token is shorter than 16 characters");
    }
    Ok(token)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing("info,kube=warn,sqlx=warn");
    let token = admin_token(args.admin_token_file.as_ref())?;

    let pool = db::connect(&args.database_url, Duration::from_secs(args.database_timeout_seconds)).await?;
    db::migrate(&pool).await?;
    tracing::info!(database = %db::redact(&args.database_url), "catalog migrated");

    let kube = kube::Client::try_default()
        .await
        .context("no Kubernetes configuration (KUBECONFIG or in-cluster)")?;

    let mut registry = Registry::with_prefix("millrace_api");
    let metrics = HttpMetrics::register(&mut registry);
    let ops = OpsState::new(registry);
    let state =
        AppState::new(pool, kube, &token, metrics).with_checkpoint_storage(args.checkpoint_storage.clone());

    tokio::spawn(readiness::readiness_loop(state.clone(), ops.clone()));
    tokio::spawn(jobs::watch::run(state.clone()));
    tokio::spawn(topics::sync::resync_loop(state.clone(), Duration::from_secs(args.resync_seconds.max(1))));

    let addr = args.listen_addr.unwrap_or_else(|| default_ops_addr(8080));
    let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    tracing::info!(%addr, "serving the Millrace API (/v1, /openapi.json, /docs, /healthz, /readyz, /metrics)");
    axum::serve(listener, app(state, ops)).with_graceful_shutdown(shutdown_signal()).await?;
    Ok(())
}
