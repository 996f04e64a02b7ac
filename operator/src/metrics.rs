//! The operator's Prometheus metrics: reconciles, failures by reason and reconcile duration,
//! per controller. Registered once into the binary's registry (served at `/metrics` by
//! millrace-telemetry); controllers only record into them.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub controller: &'static str,
    pub reason: &'static str,
}

type HistogramFamily = Family<ControllerLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    reconciles: Family<ControllerLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: HistogramFamily,
}

fn duration_histogram() -> Histogram {
    // 5 ms … ~41 s: a reconcile is a few API calls, or a Kafka timeout at worst.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            reconciles: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
        };
        registry.register("reconciles", "Reconciles started", metrics.reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that ended in an error, by reason",
            metrics.failures.clone(),
        );
        registry.register("reconcile_duration_seconds", "Time one reconcile took", metrics.duration.clone());
        metrics
    }

    pub fn reconciled(&self, controller: &'static str, took: Duration, failure: Option<&'static str>) {
        let labels = ControllerLabels { controller };
        self.reconciles.get_or_create(&labels).inc();
        self.duration.get_or_create(&labels).observe(took.as_secs_f64());
        if let Some(reason) = failure {
            self.failures.get_or_create(&FailureLabels { controller, reason }).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn failures_are_labelled_by_reason() {
        let mut registry = Registry::with_prefix("millrace_operator");
        let metrics = Metrics::register(&mut registry);
        metrics.reconciled("kafkatopic", Duration::from_millis(20), None);
        metrics.reconciled("kafkatopic", Duration::from_millis(20), Some("KafkaUnavailable"));
        let mut text = String::new();
        encode(&mut text, &registry).expect("encodes");
        assert!(text.contains("millrace_operator_reconciles_total{controller=\"kafkatopic\"} 2"), "{text}");
        assert!(
            text.contains(
                "millrace_operator_reconcile_failures_total{controller=\"kafkatopic\",reason=\"KafkaUnavailable\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("millrace_operator_reconcile_duration_seconds_count{controller=\"kafkatopic\"} 2")
        );
    }
}
