//! What the platform fills in for Kafka tables whose `WITH (…)` options leave it out: the
//! bootstrap servers, client properties (SASL/TLS credentials), the dead-letter topic and the
//! sinks' delivery guarantee. A StreamJob's `spec.kafka`, `spec.deadLetter` and
//! `spec.checkpointing.delivery` reach the engine this way (the operator passes them as
//! flags and a mounted Secret); a table's own options always win.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ConnectorError;

/// Delivery guarantee of Kafka sinks that do not set `sink.delivery-guarantee`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkDeliveryDefault {
    AtLeastOnce,
    /// Exactly-once with transactional ids `{transactional_id_base}.{sink table}-…`: unique per
    /// job (the operator uses `<namespace>.<job>`) and stable across its deployments, so a
    /// restored job settles the transactions of the checkpoint it restores.
    ExactlyOnce {
        transactional_id_base: String,
    },
}

/// Defaults for the Kafka tables of one job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaDefaults {
    /// For tables without `bootstrap_servers`.
    pub bootstrap_servers: Option<String>,
    /// librdkafka properties for every Kafka client of the job (sources, sinks, dead-letter
    /// and late-row producers, transaction recovery); a table's `properties.<key>` wins.
    /// Never sent over the coordinator RPC: each process reads its own (a mounted Secret).
    #[serde(skip)]
    pub properties: Vec<(String, String)>,
    /// Dead-letter topic of Kafka sources that name neither `dlq_topic` nor `bad_records`.
    pub dead_letter_topic: Option<String>,
    /// Delivery of Kafka sinks without `sink.delivery-guarantee` (none: at-least-once).
    pub sink_delivery: Option<SinkDeliveryDefault>,
}

impl KafkaDefaults {
    /// Only a bootstrap default (tests, `millrace-worker run --kafka-bootstrap`).
    pub fn with_bootstrap(bootstrap_servers: impl Into<String>) -> Self {
        Self { bootstrap_servers: Some(bootstrap_servers.into()), ..Self::default() }
    }

    /// Reads client properties from a folder with one file per property, named by its
    /// librdkafka key and holding its value (a Kubernetes Secret mounted as a volume). Hidden
    /// files (the `..data` links Kubernetes writes) are skipped; trailing newlines are trimmed.
    pub fn read_properties_dir(dir: &Path) -> Result<Vec<(String, String)>, ConnectorError> {
        let unreadable = |source: std::io::Error| ConnectorError::Io {
            context: format!("reading Kafka client properties from {}", dir.display()),
            source,
        };
        let mut properties = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(unreadable)? {
            let entry = entry.map_err(unreadable)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !entry.path().is_file() {
                continue;
            }
            let value = std::fs::read_to_string(entry.path()).map_err(unreadable)?;
            properties.push((name, value.trim_end_matches(['\r', '\n']).to_owned()));
        }
        properties.sort();
        Ok(properties)
    }

    /// The job's properties under a table's own: the table's `properties.*` win key by key.
    pub fn merged_properties(&self, table: Vec<(String, String)>) -> Vec<(String, String)> {
        let mut merged: Vec<(String, String)> =
            self.properties.iter().filter(|(key, _)| !table.iter().any(|(k, _)| k == key)).cloned().collect();
        merged.extend(table);
        merged
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::{BadRecordPolicy, ConnectorTable, DeliveryGuarantee, SinkConnector, SourceConnector};

    fn table(name: &str, options: &[(&str, &str)]) -> ConnectorTable {
        ConnectorTable {
            name: name.into(),
            schema: Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)])),
            metadata: Vec::new(),
            primary_key: Vec::new(),
            options: options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    fn job_defaults() -> KafkaDefaults {
        KafkaDefaults {
            bootstrap_servers: Some("kafka:9092".into()),
            properties: vec![("security.protocol".into(), "SASL_SSL".into())],
            dead_letter_topic: Some("job-dlq".into()),
            sink_delivery: Some(SinkDeliveryDefault::ExactlyOnce { transactional_id_base: "ns.job".into() }),
        }
    }

    #[test]
    fn a_source_without_dead_letter_options_gets_the_jobs_topic_and_properties() {
        let source = table("input", &[("connector", "kafka"), ("topic", "in")]);
        let SourceConnector::Kafka(k) = SourceConnector::from_table(&source, &job_defaults()).expect("valid")
        else {
            panic!("not kafka")
        };
        assert_eq!(k.bootstrap_servers, "kafka:9092");
        assert_eq!(k.bad_records, BadRecordPolicy::DeadLetterTopic("job-dlq".into()));
        assert_eq!(k.properties, vec![("security.protocol".to_string(), "SASL_SSL".to_string())]);
    }

    #[test]
    fn a_sources_own_dead_letter_choice_wins() {
        let own = table("input", &[("connector", "kafka"), ("topic", "in"), ("dlq_topic", "mine")]);
        let SourceConnector::Kafka(k) = SourceConnector::from_table(&own, &job_defaults()).expect("valid")
        else {
            panic!("not kafka")
        };
        assert_eq!(k.bad_records, BadRecordPolicy::DeadLetterTopic("mine".into()));
        let dropping = table("input", &[("connector", "kafka"), ("topic", "in"), ("bad_records", "drop")]);
        let SourceConnector::Kafka(k) =
            SourceConnector::from_table(&dropping, &job_defaults()).expect("valid")
        else {
            panic!("not kafka")
        };
        assert_eq!(k.bad_records, BadRecordPolicy::Drop);
    }

    #[test]
    fn a_sink_without_a_delivery_guarantee_gets_the_jobs_named_after_the_table() {
        let sink = table("output", &[("connector", "kafka"), ("topic", "out")]);
        let SinkConnector::Kafka(k) = SinkConnector::from_table(&sink, &job_defaults()).expect("valid")
        else {
            panic!("not kafka")
        };
        assert_eq!(
            k.delivery,
            DeliveryGuarantee::ExactlyOnce { transactional_id_prefix: "ns.job.output".into() }
        );
        let own =
            table("output", &[("connector", "kafka"), ("topic", "out"), ("sink.delivery-guarantee", "none")]);
        let SinkConnector::Kafka(k) = SinkConnector::from_table(&own, &job_defaults()).expect("valid") else {
            panic!("not kafka")
        };
        assert_eq!(k.delivery, DeliveryGuarantee::None);
        let plain = SinkConnector::from_table(&sink, &KafkaDefaults::with_bootstrap("b")).expect("valid");
        assert!(matches!(plain, SinkConnector::Kafka(k) if k.delivery == DeliveryGuarantee::AtLeastOnce));
    }

    #[test]
    fn a_tables_own_property_wins_over_the_jobs() {
        let defaults = KafkaDefaults {
            properties: vec![
                ("security.protocol".into(), "SASL_SSL".into()),
                ("client.id".into(), "job".into()),
            ],
            ..KafkaDefaults::default()
        };
        let merged = defaults.merged_properties(vec![("client.id".into(), "table".into())]);
        assert_eq!(
            merged,
            vec![
                ("security.protocol".to_string(), "SASL_SSL".to_string()),
                ("client.id".into(), "table".into())
            ]
        );
    }

    #[test]
    fn properties_are_read_one_file_per_key_skipping_kubernetes_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("sasl.username"), "alice\n").expect("write");
        std::fs::write(dir.path().join("sasl.password"), "s3cret").expect("write");
        std::fs::create_dir(dir.path().join("..2026_12_02")).expect("mkdir");
        std::fs::write(dir.path().join("..data"), "").expect("write");
        let properties = KafkaDefaults::read_properties_dir(dir.path()).expect("read");
        assert_eq!(
            properties,
            vec![
                ("sasl.password".to_string(), "s3cret".to_string()),
                ("sasl.username".into(), "alice".into())
            ]
        );
    }

    #[test]
    fn a_missing_properties_folder_is_an_error_naming_it() {
        let err = KafkaDefaults::read_properties_dir(Path::new("/nonexistent/kafka")).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/kafka"), "{err}");
    }
}
