//! Readiness: the API can serve only when both the catalog database and the Kubernetes API
//! answer. Checked in the background every two seconds so that `/readyz` (served by
//! millrace-telemetry from a flag) stays instant and never piles up probes on a slow backend.

use std::time::Duration;

use millrace_telemetry::OpsState;

use crate::AppState;

const TIMEOUT: Duration = Duration::from_secs(2);

/// What each dependency answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    pub database: bool,
    pub kubernetes: bool,
}

impl Readiness {
    pub fn ready(self) -> bool {
        self.database && self.kubernetes
    }
}

/// Asks both dependencies once, each within two seconds.
pub async fn check(state: &AppState) -> Readiness {
    let database = tokio::time::timeout(TIMEOUT, sqlx::query("SELECT 1").execute(&state.db)).await;
    let kubernetes = tokio::time::timeout(TIMEOUT, state.kube.apiserver_version()).await;
    Readiness { database: matches!(database, Ok(Ok(_))), kubernetes: matches!(kubernetes, Ok(Ok(_))) }
}

/// Keeps `ops`' readiness flag in step with [`check`], logging every change.
pub async fn readiness_loop(state: AppState, ops: OpsState) {
    let mut ticker = tokio::time::interval(Duration::from_secs(2));
    loop {
        ticker.tick().await;
        let readiness = check(&state).await;
        if readiness.ready() != ops.is_ready() {
            tracing::info!(
                ready = readiness.ready(),
                database = readiness.database,
                kubernetes = readiness.kubernetes,
                "readiness changed"
            );
        }
        ops.set_ready(readiness.ready());
    }
}
