//! Observability shared by every Millrace binary: tracing setup and the operational HTTP
//! endpoints `/healthz` (the process is alive), `/readyz` (it can do its job) and `/metrics`
//! (Prometheus text format from one registry per binary).
//!
//! This crate owns no business logic; binaries register their own metrics into the
//! [`Registry`] they hand to [`OpsState::new`] and flip readiness with [`OpsState::set_ready`].

mod ops_http;

pub use ops_http::{OpsState, default_ops_addr, ops_router, serve_ops, shutdown_signal};

use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber. `RUST_LOG` overrides `default_filter`;
/// `MILLRACE_LOG_FORMAT=json` switches to JSON lines for log shippers.
pub fn init_tracing(default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("MILLRACE_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second init (tests calling it twice) is harmless, so the error is ignored.
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}
