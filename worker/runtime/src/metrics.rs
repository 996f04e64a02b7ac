//! The runtime's Prometheus metrics, registered into the binary's one registry. Labels name
//! the stage and operator (`s1.window_aggregate`), never a row value, so cardinality stays
//! bounded by the plan.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of per-operator metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperatorLabels {
    pub operator: String,
}

/// Labels of per-stage metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: String,
}

/// Counters and gauges of running dataflows (cheap to clone: handles to shared atomics).
#[derive(Clone, Debug, Default)]
pub struct RuntimeMetrics {
    pub records_in: Family<OperatorLabels, Counter>,
    pub records_out: Family<OperatorLabels, Counter>,
    pub late_records: Family<OperatorLabels, Counter>,
    pub watermark_ms: Family<OperatorLabels, Gauge>,
    pub watermark_lag_ms: Family<OperatorLabels, Gauge>,
    pub backpressured_seconds: Family<OperatorLabels, Counter<f64, AtomicU64>>,
    /// Time a stage's tasks spent running batches and watermarks through their operators
    /// (not waiting for input or for space downstream).
    pub busy_seconds: Family<StageLabels, Counter<f64, AtomicU64>>,
    /// Per stage: how long the last checkpoint's barrier alignment took (first barrier in to
    /// last barrier in) at its slowest subtask since the gauge was last set.
    pub last_alignment_ms: Family<StageLabels, Gauge>,
    /// Per stage: how long the last snapshot of its operators' state took.
    pub last_snapshot_ms: Family<StageLabels, Gauge>,
    /// Per operator: the bytes its instances in this process hold in state (see
    /// [`crate::Operator::state_bytes`]).
    pub state_bytes: Family<OperatorLabels, Gauge>,
    /// The bytes of state every operator instance of the process holds, together.
    pub process_state_bytes: Gauge,
    /// The process's state limit in bytes (0: none), see [`crate::state_budget`].
    pub state_max_bytes: Gauge,
}

impl RuntimeMetrics {
    /// Creates the metrics and registers them (a detached set for tests: `Default`).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register("records_in", "Rows entering an operator", metrics.records_in.clone());
        registry.register("records_out", "Rows leaving an operator", metrics.records_out.clone());
        registry.register(
            "late_records",
            "Rows dropped because their window had already closed",
            metrics.late_records.clone(),
        );
        registry.register(
            "watermark_ms",
            "Current watermark of a stage input, ms since epoch",
            metrics.watermark_ms.clone(),
        );
        registry.register(
            "watermark_lag_ms",
            "Wall clock minus the current watermark of a stage input",
            metrics.watermark_lag_ms.clone(),
        );
        registry.register(
            "backpressured_seconds",
            "Time an operator chain waited for space in a full downstream channel",
            metrics.backpressured_seconds.clone(),
        );
        registry.register(
            "busy_seconds",
            "Time a stage's tasks spent processing batches and watermarks in their operators",
            metrics.busy_seconds.clone(),
        );
        registry.register(
            "checkpoint_alignment_ms",
            "Barrier alignment time of a stage's task in the last checkpoint",
            metrics.last_alignment_ms.clone(),
        );
        registry.register(
            "checkpoint_snapshot_ms",
            "Time a stage's task took to snapshot its operators' state in the last checkpoint",
            metrics.last_snapshot_ms.clone(),
        );
        registry.register(
            "state_bytes",
            "Bytes of keyed and operator state held in memory by this process's instances of an operator",
            metrics.state_bytes.clone(),
        );
        registry.register(
            "process_state_bytes",
            "Bytes of operator state held in memory by every operator instance of this process",
            metrics.process_state_bytes.clone(),
        );
        registry.register(
            "state_max_bytes",
            "The process's limit on operator state bytes (state.max-bytes; 0: none)",
            metrics.state_max_bytes.clone(),
        );
        metrics
    }

    pub(crate) fn labels(operator: String) -> OperatorLabels {
        OperatorLabels { operator }
    }
}
