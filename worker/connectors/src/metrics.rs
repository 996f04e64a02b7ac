//! Connector metrics: rows and bytes in and out per table, dead-lettered records per table
//! and policy. Registered into the binary's one registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    pub table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub table: String,
    pub partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    pub table: String,
    /// `dlq` (written to the dead-letter topic) or `dropped`.
    pub outcome: String,
}

/// Handles to the connector counters (cheap to clone).
#[derive(Clone, Debug, Default)]
pub struct ConnectorMetrics {
    pub records_in: Family<TableLabels, Counter>,
    pub bytes_in: Family<TableLabels, Counter>,
    pub records_out: Family<TableLabels, Counter>,
    pub bytes_out: Family<TableLabels, Counter>,
    pub dead_lettered: Family<DeadLetterLabels, Counter>,
    /// Records between a Kafka source's position and the partition's high watermark.
    pub consumer_lag: Family<PartitionLabels, Gauge>,
}

impl ConnectorMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register("source_records", "Rows decoded by a source", m.records_in.clone());
        registry.register("source_bytes", "Payload bytes read by a source", m.bytes_in.clone());
        registry.register("sink_records", "Rows written by a sink", m.records_out.clone());
        registry.register("sink_bytes", "Payload bytes written by a sink", m.bytes_out.clone());
        registry.register(
            "dead_lettered_records",
            "Records that could not be decoded, by outcome (dlq or dropped)",
            m.dead_lettered.clone(),
        );
        registry.register(
            "consumer_lag_records",
            "Kafka records not yet read by a source, per partition (high watermark fetched every 5 s)",
            m.consumer_lag.clone(),
        );
        m
    }

    pub fn labels(&self, table: &str) -> TableLabels {
        TableLabels { table: table.to_string() }
    }

    pub fn dlq_labels(&self, table: &str, outcome: &str) -> DeadLetterLabels {
        DeadLetterLabels { table: table.to_string(), outcome: outcome.to_string() }
    }

    /// Dead-lettered records of a table so far, all outcomes.
    pub fn dead_lettered_total(&self, table: &str) -> u64 {
        ["dlq", "dropped"]
            .iter()
            .map(|o| self.dead_lettered.get_or_create(&self.dlq_labels(table, o)).get())
            .sum()
    }
}
