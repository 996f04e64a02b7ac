//! The runner's Prometheus metrics, registered once into the registry served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    pub probe: &'static str,
}

/// Counters and gauges the runner updates; cheap to clone (each metric is an `Arc`).
#[derive(Debug, Clone, Default)]
pub struct RunnerMetrics {
    pub pods: Gauge,
    pub bindings: Counter,
    pub container_starts: Counter,
    pub container_restarts: Counter,
    pub probe_failures: Family<ProbeLabels, Counter>,
    pub status_patches: Counter,
    pub status_patch_errors: Counter,
    pub proxy_connections: Counter,
    pub proxy_connection_errors: Counter,
}

impl RunnerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register("pods", "Pods the runner currently manages", metrics.pods.clone());
        registry.register(
            "bindings",
            "Pods bound to the node by the scheduler stand-in",
            metrics.bindings.clone(),
        );
        registry.register(
            "container_starts",
            "Container processes started",
            metrics.container_starts.clone(),
        );
        registry.register(
            "container_restarts",
            "Container restarts (crashes and liveness kills)",
            metrics.container_restarts.clone(),
        );
        registry.register(
            "probe_failures",
            "Failed probe runs by probe kind",
            metrics.probe_failures.clone(),
        );
        registry.register("status_patches", "Pod status patches sent", metrics.status_patches.clone());
        registry.register(
            "status_patch_errors",
            "Pod status patches that failed",
            metrics.status_patch_errors.clone(),
        );
        registry.register(
            "proxy_connections",
            "Connections forwarded to Service backends",
            metrics.proxy_connections.clone(),
        );
        registry.register(
            "proxy_connection_errors",
            "Service connections closed because no backend answered",
            metrics.proxy_connection_errors.clone(),
        );
        metrics
    }
}
