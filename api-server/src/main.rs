//! `millrace-api`: the self-service REST control plane. This entry point owns only argument
//! parsing, tracing and the ops endpoints; the `/v1` API and the Postgres catalog arrive with
//! the control-plane issue.

use std::net::SocketAddr;

use clap::Parser;
use millrace_telemetry::{OpsState, default_ops_addr, init_tracing, ops_router, serve_ops};
use prometheus_client::registry::Registry;

/// Millrace's REST control plane.
#[derive(Debug, Parser)]
#[command(name = "millrace-api", version)]
struct Args {
    /// Address to listen on [default: $POD_IP:8080, else 127.0.0.1:8080].
    #[arg(long, env = "MILLRACE_LISTEN_ADDR")]
    listen_addr: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing("info");
    let ops = OpsState::new(Registry::with_prefix("millrace_api"));
    ops.set_ready(true);
    serve_ops(args.listen_addr.unwrap_or_else(|| default_ops_addr(8080)), ops_router(ops)).await
}
