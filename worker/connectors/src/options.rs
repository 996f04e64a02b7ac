//! Typed connector configuration from a table's `WITH (…)` options. Unknown keys are errors,
//! so a typo never silently falls back to a default.
//!
//! | connector | options |
//! | --- | --- |
//! | `kafka` (source) | `topic`, `bootstrap_servers` (default: `$KAFKA_BOOTSTRAP`), `format` = `raw`\|`json`, `group_id`, `scan_startup_mode` = `earliest`\|`latest`\|`committed`, `dlq_topic`, `bad_records` = `dlq`\|`drop`, `batch_size`, `properties.<librdkafka key>` |
//! | `kafka` (sink) | `topic`, `bootstrap_servers`, `format`, `key_columns` (comma-separated sink columns encoded as the record key), `sink.delivery-guarantee`, `sink.transactional-id-prefix`, `properties.<key>` |
//! | `upsert-kafka` (sink) | `topic`, `bootstrap_servers`, `format`, `sink.delivery-guarantee`, `sink.transactional-id-prefix`, `properties.<key>`; the record key is the table's `PRIMARY KEY`, a delete is a tombstone |
//! | `generator` (source) | `count`, `rows_per_second`, `min`, `max`, `seed`, `batch_size` |
//! | `nexmark` (source) | `event_type` = `person`\|`auction`\|`bid`, `events`, `events_per_second`, `first_event_rate`, `out_of_order_group_size`, `seed`, `batch_size`, `base_time_ms` |
//! | `file` | `path`, `format` (a source reads one record per line; a sink writes one per line) |
//! | `stdout` (sink) | `format` |
//!
//! A Kafka sink's `sink.delivery-guarantee` (Flink's option) says what a checkpoint makes of
//! its output (see [`DeliveryGuarantee`]): `at-least-once` (the default) flushes the producer
//! at every checkpoint barrier, `exactly-once` writes each checkpoint's records in a Kafka
//! transaction committed when the checkpoint completes (needs `sink.transactional-id-prefix`,
//! unique per job and sink, and consumers with `isolation.level=read_committed`), `none`
//! neither flushes nor waits.

use std::collections::BTreeMap;
use std::path::PathBuf;

use millrace_types::CheckpointId;

use crate::kafka_defaults::{KafkaDefaults, SinkDeliveryDefault};
use crate::memory::{MemorySink, MemorySourceConfig};
use crate::nexmark::{EventKind, NexmarkConfig, model};
use crate::{ConnectorError, ConnectorTable};

/// How a record's bytes map to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The whole value is the text of the table's single payload column (cast to its type).
    Raw,
    /// The value is a JSON object whose fields are the payload columns.
    Json,
}

/// Where a Kafka source starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupMode {
    Earliest,
    Latest,
    /// The group's committed offsets (earliest where there are none).
    Committed,
}

/// What happens to a record that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRecordPolicy {
    DeadLetterTopic(String),
    Drop,
}

#[derive(Debug, Clone)]
pub struct KafkaSourceConfig {
    pub bootstrap_servers: String,
    pub topic: String,
    pub group_id: String,
    pub startup: StartupMode,
    pub format: Format,
    pub bad_records: BadRecordPolicy,
    pub batch_size: usize,
    pub properties: Vec<(String, String)>,
}

/// What a checkpoint guarantees about a Kafka sink's records (`sink.delivery-guarantee`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryGuarantee {
    /// `none`: records are sent as they come; a checkpoint waits for nothing (a failure may
    /// lose or duplicate records).
    None,
    /// `at-least-once`: a checkpoint barrier flushes the producer and checks every delivery
    /// before the checkpoint is acknowledged (a restore may duplicate records, never lose one).
    AtLeastOnce,
    /// `exactly-once`: each checkpoint's records are one Kafka transaction per sink instance,
    /// committed when the checkpoint completes; transactional ids are
    /// `{transactional_id_prefix}-{subtask}-{epoch}`.
    ExactlyOnce { transactional_id_prefix: String },
}

#[derive(Debug, Clone)]
pub struct KafkaSinkConfig {
    pub bootstrap_servers: String,
    pub topic: String,
    pub format: Format,
    /// Indices (in the sink table's schema) of the columns encoded as the record key; empty:
    /// records have no key.
    pub key_columns: Vec<usize>,
    /// `upsert-kafka`: the key columns are the primary key, and a delete of a key is written
    /// as a tombstone (the key with a null value). A plain `kafka` sink refuses deletes.
    pub upsert: bool,
    pub delivery: DeliveryGuarantee,
    pub properties: Vec<(String, String)>,
    /// The checkpoint a restored job resumes from (see [`SinkConnector::restored_from`]):
    /// exactly-once transactions of this run start at its epoch + 1.
    pub restored: Option<CheckpointId>,
}

/// Random rows: integers uniformly in `[min, max]`, floats in `[min, max)`, text, and the
/// current time for timestamps.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    /// Rows per instance; `None` runs until stopped.
    pub count: Option<u64>,
    /// Rows per second per instance; `None` is as fast as possible.
    pub rows_per_second: Option<f64>,
    pub min: i64,
    pub max: i64,
    pub seed: u64,
    pub batch_size: usize,
}

#[derive(Debug, Clone)]
pub struct FileConfig {
    pub path: PathBuf,
    pub format: Format,
}

/// A configured source.
#[derive(Debug, Clone)]
pub enum SourceConnector {
    Kafka(KafkaSourceConfig),
    Generator(GeneratorConfig),
    /// Nexmark persons, auctions or bids.
    Nexmark(NexmarkConfig),
    File(FileConfig),
    /// Records given in memory (tests, embedding).
    Memory(MemorySourceConfig),
}

/// A configured sink.
#[derive(Debug, Clone)]
pub enum SinkConnector {
    Kafka(KafkaSinkConfig),
    Stdout(Format),
    File(FileConfig),
    /// Collects batches in memory (tests, embedding).
    Memory(MemorySink),
}

struct Options<'a> {
    table: &'a str,
    values: BTreeMap<String, String>,
}

impl<'a> Options<'a> {
    fn new(table: &'a ConnectorTable) -> Self {
        Self { table: &table.name, values: table.options.clone() }
    }

    fn error(&self, message: impl Into<String>) -> ConnectorError {
        ConnectorError::Options { table: self.table.to_string(), message: message.into() }
    }

    fn take(&mut self, key: &str) -> Option<String> {
        self.values.remove(key)
    }

    fn required(&mut self, key: &str) -> Result<String, ConnectorError> {
        self.take(key).ok_or_else(|| self.error(format!("option '{key}' is required")))
    }

    fn parsed<T: std::str::FromStr>(&mut self, key: &str) -> Result<Option<T>, ConnectorError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| self.error(format!("option '{key}' has an invalid value '{v}'"))),
        }
    }

    fn format(&mut self) -> Result<Format, ConnectorError> {
        match self.take("format").as_deref() {
            None | Some("raw") => Ok(Format::Raw),
            Some("json") => Ok(Format::Json),
            Some(other) => {
                Err(self.error(format!("format '{other}' is not supported (use 'raw' or 'json')")))
            }
        }
    }

    fn bootstrap(&mut self, defaults: &KafkaDefaults) -> Result<String, ConnectorError> {
        match (self.take("bootstrap_servers"), defaults.bootstrap_servers.as_deref()) {
            (Some(v), _) => Ok(v),
            (None, Some(d)) => Ok(d.to_string()),
            (None, None) => {
                Err(self.error("option 'bootstrap_servers' is required (or set KAFKA_BOOTSTRAP)"))
            }
        }
    }

    /// The table's `properties.*` over the job's default client properties.
    fn properties(&mut self, defaults: &KafkaDefaults) -> Vec<(String, String)> {
        let keys: Vec<String> =
            self.values.keys().filter(|k| k.starts_with("properties.")).cloned().collect();
        let own = keys
            .into_iter()
            .filter_map(|k| self.values.remove(&k).map(|v| (k["properties.".len()..].to_string(), v)))
            .collect();
        defaults.merged_properties(own)
    }

    /// `key_columns = 'a, b'`: the named columns of the table, in that order.
    fn key_columns(&mut self, table: &ConnectorTable) -> Result<Vec<usize>, ConnectorError> {
        let Some(value) = self.take("key_columns") else {
            return Ok(Vec::new());
        };
        let mut indices = Vec::new();
        for name in value.split(',').map(str::trim) {
            let name = name.trim_matches('"');
            let index = table.schema.index_of(name).map_err(|_| {
                self.error(format!("key_columns names '{name}', which is not a column of the table"))
            })?;
            if indices.contains(&index) {
                return Err(self.error(format!("key_columns names '{name}' twice")));
            }
            indices.push(index);
        }
        if indices.is_empty() {
            return Err(self.error("key_columns is empty"));
        }
        Ok(indices)
    }

    /// `sink.delivery-guarantee` and `sink.transactional-id-prefix` of a Kafka sink; a sink
    /// that sets neither gets the job's default.
    fn delivery_guarantee(&mut self, defaults: &KafkaDefaults) -> Result<DeliveryGuarantee, ConnectorError> {
        let prefix = self.take("sink.transactional-id-prefix");
        let guarantee = self.take("sink.delivery-guarantee");
        if guarantee.is_none() && prefix.is_none() {
            return Ok(match &defaults.sink_delivery {
                None | Some(SinkDeliveryDefault::AtLeastOnce) => DeliveryGuarantee::AtLeastOnce,
                Some(SinkDeliveryDefault::ExactlyOnce { transactional_id_base }) => {
                    DeliveryGuarantee::ExactlyOnce {
                        transactional_id_prefix: format!("{transactional_id_base}.{}", self.table),
                    }
                }
            });
        }
        match (guarantee.as_deref(), prefix) {
            (Some("exactly-once"), Some(prefix)) if !prefix.trim().is_empty() => {
                Ok(DeliveryGuarantee::ExactlyOnce { transactional_id_prefix: prefix })
            }
            (Some("exactly-once"), _) => Err(self.error(
                "sink.delivery-guarantee = 'exactly-once' needs option 'sink.transactional-id-prefix' \
                 (unique per job and sink: it names the sink's Kafka transactions)",
            )),
            (_, Some(_)) => Err(self.error(
                "option 'sink.transactional-id-prefix' applies only to sink.delivery-guarantee = 'exactly-once'",
            )),
            (None | Some("at-least-once"), None) => Ok(DeliveryGuarantee::AtLeastOnce),
            (Some("none"), None) => Ok(DeliveryGuarantee::None),
            (Some(other), None) => Err(self.error(format!(
                "sink.delivery-guarantee '{other}' is not one of exactly-once, at-least-once, none"
            ))),
        }
    }

    /// A Kafka sink's `properties.*`, refusing those exactly-once delivery manages itself.
    fn sink_properties(
        &mut self,
        delivery: &DeliveryGuarantee,
        defaults: &KafkaDefaults,
    ) -> Result<Vec<(String, String)>, ConnectorError> {
        let properties = self.properties(defaults);
        if matches!(delivery, DeliveryGuarantee::ExactlyOnce { .. })
            && let Some((key, _)) = properties.iter().find(|(k, _)| k == "transactional.id")
        {
            return Err(self.error(format!(
                "option 'properties.{key}' cannot be set with exactly-once delivery \
                 (the sink names its transactions from 'sink.transactional-id-prefix')"
            )));
        }
        Ok(properties)
    }

    fn finish(self) -> Result<(), ConnectorError> {
        match self.values.keys().next() {
            None => Ok(()),
            Some(key) => Err(self.error(format!("unknown option '{key}'"))),
        }
    }
}

impl SourceConnector {
    /// Reads a source table's options; `defaults` fill what a Kafka table leaves out (the
    /// platform's Kafka, client properties, the dead-letter topic).
    pub fn from_table(table: &ConnectorTable, defaults: &KafkaDefaults) -> Result<Self, ConnectorError> {
        let mut o = Options::new(table);
        let connector = o.required("connector")?;
        let parsed = match connector.as_str() {
            "kafka" => {
                let topic = o.required("topic")?;
                let bootstrap_servers = o.bootstrap(defaults)?;
                let format = o.format()?;
                let group_id = o.take("group_id").unwrap_or_else(|| format!("millrace-{}", table.name));
                let startup = match o.take("scan_startup_mode").as_deref() {
                    None | Some("committed") => StartupMode::Committed,
                    Some("earliest") => StartupMode::Earliest,
                    Some("latest") => StartupMode::Latest,
                    Some(other) => {
                        return Err(o.error(format!(
                            "scan_startup_mode '{other}' is not one of earliest, latest, committed"
                        )));
                    }
                };
                let dlq = o.take("dlq_topic");
                let policy = o.take("bad_records");
                let dlq = match (&policy, dlq) {
                    (None, None) => defaults.dead_letter_topic.clone(),
                    (_, dlq) => dlq,
                };
                let bad_records = match (policy.as_deref(), dlq) {
                    (None | Some("dlq"), Some(topic)) => BadRecordPolicy::DeadLetterTopic(topic),
                    (None | Some("drop"), None) => BadRecordPolicy::Drop,
                    (Some("drop"), Some(_)) => {
                        return Err(o.error("bad_records = 'drop' contradicts dlq_topic"));
                    }
                    (Some("dlq"), None) => return Err(o.error("bad_records = 'dlq' needs dlq_topic")),
                    (Some(other), _) => {
                        return Err(o.error(format!("bad_records '{other}' is not one of dlq, drop")));
                    }
                };
                let batch_size = o.parsed("batch_size")?.unwrap_or(1024);
                let properties = o.properties(defaults);
                SourceConnector::Kafka(KafkaSourceConfig {
                    bootstrap_servers,
                    topic,
                    group_id,
                    startup,
                    format,
                    bad_records,
                    batch_size,
                    properties,
                })
            }
            "generator" => {
                let config = GeneratorConfig {
                    count: o.parsed("count")?,
                    rows_per_second: o.parsed("rows_per_second")?,
                    min: o.parsed("min")?.unwrap_or(0),
                    max: o.parsed("max")?.unwrap_or(100),
                    seed: o.parsed("seed")?.unwrap_or(42),
                    batch_size: o.parsed("batch_size")?.unwrap_or(1024),
                };
                if config.min > config.max {
                    return Err(o.error("generator min must not exceed max"));
                }
                SourceConnector::Generator(config)
            }
            "nexmark" => SourceConnector::Nexmark(nexmark_config(&mut o, table)?),
            "file" => {
                SourceConnector::File(FileConfig { path: o.required("path")?.into(), format: o.format()? })
            }
            other => {
                return Err(o.error(format!(
                    "'{other}' is not a source connector (kafka, generator, nexmark, file)"
                )));
            }
        };
        o.finish()?;
        Ok(parsed)
    }
}

/// A `nexmark` table's options, with its columns checked against the event kind.
fn nexmark_config(o: &mut Options<'_>, table: &ConnectorTable) -> Result<NexmarkConfig, ConnectorError> {
    let kind_name = o.required("event_type")?;
    let kind = EventKind::parse(&kind_name)
        .ok_or_else(|| o.error(format!("event_type '{kind_name}' is not one of person, auction, bid")))?;
    // One base time for every instance: the wall clock when the job is configured.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut config = NexmarkConfig::new(kind, o.parsed("base_time_ms")?.unwrap_or(now));
    config.events = o.parsed("events")?;
    config.events_per_second = o.parsed::<f64>("events_per_second")?.filter(|r| *r > 0.0);
    if let Some(rate) = o.parsed::<u64>("first_event_rate")? {
        if rate == 0 {
            return Err(o.error("first_event_rate must be at least 1"));
        }
        config.first_event_rate = rate;
    }
    if let Some(size) = o.parsed::<u64>("out_of_order_group_size")? {
        if size == 0 {
            return Err(o.error("out_of_order_group_size must be at least 1"));
        }
        config.out_of_order_group_size = size;
    }
    config.seed = o.parsed("seed")?.unwrap_or(0);
    if let Some(size) = o.parsed::<usize>("batch_size")? {
        if size == 0 {
            return Err(o.error("batch_size must be at least 1"));
        }
        config.batch_size = size;
    }
    model::map_columns(kind, &table.schema, &table.metadata).map_err(|message| o.error(message))?;
    Ok(config)
}

impl SinkConnector {
    /// Reads a sink table's options; `defaults` fill what a Kafka table leaves out.
    pub fn from_table(table: &ConnectorTable, defaults: &KafkaDefaults) -> Result<Self, ConnectorError> {
        let mut o = Options::new(table);
        let connector = o.required("connector")?;
        let parsed = match connector.as_str() {
            "kafka" => {
                let delivery = o.delivery_guarantee(defaults)?;
                SinkConnector::Kafka(KafkaSinkConfig {
                    topic: o.required("topic")?,
                    bootstrap_servers: o.bootstrap(defaults)?,
                    format: o.format()?,
                    key_columns: o.key_columns(table)?,
                    upsert: false,
                    properties: o.sink_properties(&delivery, defaults)?,
                    delivery,
                    restored: None,
                })
            }
            "upsert-kafka" => {
                if table.primary_key.is_empty() {
                    return Err(o.error("connector 'upsert-kafka' needs PRIMARY KEY (…) NOT ENFORCED"));
                }
                let delivery = o.delivery_guarantee(defaults)?;
                SinkConnector::Kafka(KafkaSinkConfig {
                    topic: o.required("topic")?,
                    bootstrap_servers: o.bootstrap(defaults)?,
                    format: o.format()?,
                    key_columns: table.primary_key.clone(),
                    upsert: true,
                    properties: o.sink_properties(&delivery, defaults)?,
                    delivery,
                    restored: None,
                })
            }
            "stdout" => SinkConnector::Stdout(o.format()?),
            "file" => {
                SinkConnector::File(FileConfig { path: o.required("path")?.into(), format: o.format()? })
            }
            other => {
                return Err(o.error(format!(
                    "'{other}' is not a sink connector (kafka, upsert-kafka, stdout, file)"
                )));
            }
        };
        o.finish()?;
        Ok(parsed)
    }

    /// This sink in a job restored from `checkpoint` (after [`crate::recover_sink`]): an
    /// exactly-once Kafka sink's first transaction is then epoch `checkpoint + 1`.
    pub fn restored_from(mut self, checkpoint: CheckpointId) -> Self {
        if let SinkConnector::Kafka(config) = &mut self {
            config.restored = Some(checkpoint);
        }
        self
    }

    /// A sink that collects into `sink`.
    pub fn memory(sink: MemorySink) -> Self {
        SinkConnector::Memory(sink)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn table(options: &[(&str, &str)]) -> ConnectorTable {
        ConnectorTable {
            name: "input".into(),
            schema: Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)])),
            metadata: Vec::new(),
            primary_key: Vec::new(),
            options: options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn kafka_source_options_are_typed_and_strict() {
        let t = table(&[
            ("connector", "kafka"),
            ("topic", "in"),
            ("dlq_topic", "dlq"),
            ("scan_startup_mode", "earliest"),
        ]);
        let SourceConnector::Kafka(k) =
            SourceConnector::from_table(&t, &KafkaDefaults::with_bootstrap("localhost:9092")).expect("valid")
        else {
            panic!("not kafka")
        };
        assert_eq!(k.bad_records, BadRecordPolicy::DeadLetterTopic("dlq".into()));
        assert_eq!(k.startup, StartupMode::Earliest);
        assert_eq!(k.group_id, "millrace-input");
        let typo = table(&[("connector", "kafka"), ("topic", "in"), ("fromat", "raw")]);
        let err = SourceConnector::from_table(&typo, &KafkaDefaults::with_bootstrap("b")).expect_err("typo");
        assert!(err.to_string().contains("unknown option 'fromat'"), "{err}");
        let no_bootstrap = table(&[("connector", "kafka"), ("topic", "in")]);
        assert!(SourceConnector::from_table(&no_bootstrap, &KafkaDefaults::default()).is_err());
    }

    #[test]
    fn nexmark_options_are_typed_and_columns_checked() {
        let t = table(&[("connector", "nexmark"), ("event_type", "bid"), ("events", "100"), ("seed", "3")]);
        let err =
            SourceConnector::from_table(&t, &KafkaDefaults::default()).expect_err("'v' is no bid column");
        assert!(err.to_string().contains("column 'v' is not a bid column"), "{err}");
        let mut bid = t.clone();
        bid.schema = Arc::new(Schema::new(vec![Field::new("price", DataType::Int64, true)]));
        let SourceConnector::Nexmark(c) =
            SourceConnector::from_table(&bid, &KafkaDefaults::default()).expect("valid")
        else {
            panic!("not nexmark")
        };
        assert_eq!((c.events, c.seed, c.out_of_order_group_size), (Some(100), 3, 1));
        bid.options.insert("event_type".into(), "bids".into());
        let err = SourceConnector::from_table(&bid, &KafkaDefaults::default()).expect_err("unknown kind");
        assert!(err.to_string().contains("'bids' is not one of person, auction, bid"), "{err}");
        bid.options.insert("event_type".into(), "bid".into());
        bid.options.insert("events_per_secnd".into(), "5".into());
        let err = SourceConnector::from_table(&bid, &KafkaDefaults::default()).expect_err("typo");
        assert!(err.to_string().contains("unknown option 'events_per_secnd'"), "{err}");
    }

    #[test]
    fn kafka_sink_key_columns_name_columns_of_the_table() {
        let keyed = table(&[("connector", "kafka"), ("topic", "out"), ("key_columns", "v")]);
        let SinkConnector::Kafka(k) =
            SinkConnector::from_table(&keyed, &KafkaDefaults::with_bootstrap("b")).expect("valid")
        else {
            panic!("not kafka")
        };
        assert_eq!(k.key_columns, vec![0]);
        let unkeyed = table(&[("connector", "kafka"), ("topic", "out")]);
        let SinkConnector::Kafka(k) =
            SinkConnector::from_table(&unkeyed, &KafkaDefaults::with_bootstrap("b")).expect("valid")
        else {
            panic!("not kafka")
        };
        assert!(k.key_columns.is_empty());
        let wrong = table(&[("connector", "kafka"), ("topic", "out"), ("key_columns", "k")]);
        let err = SinkConnector::from_table(&wrong, &KafkaDefaults::with_bootstrap("b"))
            .expect_err("unknown column");
        assert!(err.to_string().contains("'k', which is not a column"), "{err}");
    }

    #[test]
    fn upsert_kafka_keys_records_by_the_primary_key() {
        let mut upsert = table(&[("connector", "upsert-kafka"), ("topic", "out"), ("format", "json")]);
        let err = SinkConnector::from_table(&upsert, &KafkaDefaults::with_bootstrap("b"))
            .expect_err("no primary key");
        assert!(err.to_string().contains("PRIMARY KEY"), "{err}");
        upsert.primary_key = vec![0];
        let SinkConnector::Kafka(k) =
            SinkConnector::from_table(&upsert, &KafkaDefaults::with_bootstrap("b")).expect("valid")
        else {
            panic!("not kafka")
        };
        assert_eq!((k.key_columns, k.upsert), (vec![0], true));
        upsert.options.insert("key_columns".into(), "v".into());
        assert!(
            SinkConnector::from_table(&upsert, &KafkaDefaults::with_bootstrap("b")).is_err(),
            "the key is the primary key"
        );
    }

    fn kafka_sink(options: &[(&str, &str)]) -> Result<KafkaSinkConfig, ConnectorError> {
        let mut all = vec![("connector", "kafka"), ("topic", "out")];
        all.extend_from_slice(options);
        match SinkConnector::from_table(&table(&all), &KafkaDefaults::with_bootstrap("b"))? {
            SinkConnector::Kafka(k) => Ok(k),
            other => panic!("not kafka: {other:?}"),
        }
    }

    #[test]
    fn kafka_sink_delivery_guarantee_defaults_to_at_least_once() {
        assert_eq!(kafka_sink(&[]).expect("valid").delivery, DeliveryGuarantee::AtLeastOnce);
        let none = kafka_sink(&[("sink.delivery-guarantee", "none")]).expect("valid");
        assert_eq!(none.delivery, DeliveryGuarantee::None);
        let at_least = kafka_sink(&[("sink.delivery-guarantee", "at-least-once")]).expect("valid");
        assert_eq!(at_least.delivery, DeliveryGuarantee::AtLeastOnce);
        let exactly = kafka_sink(&[
            ("sink.delivery-guarantee", "exactly-once"),
            ("sink.transactional-id-prefix", "job-7-out"),
        ])
        .expect("valid");
        assert_eq!(
            exactly.delivery,
            DeliveryGuarantee::ExactlyOnce { transactional_id_prefix: "job-7-out".into() }
        );
        let err = kafka_sink(&[("sink.delivery-guarantee", "exactly_once")]).expect_err("unknown value");
        assert!(err.to_string().contains("not one of exactly-once, at-least-once, none"), "{err}");
    }

    #[test]
    fn exactly_once_needs_a_transactional_id_prefix_and_owns_transactional_id() {
        let err = kafka_sink(&[("sink.delivery-guarantee", "exactly-once")]).expect_err("no prefix");
        assert!(err.to_string().contains("needs option 'sink.transactional-id-prefix'"), "{err}");
        let err =
            kafka_sink(&[("sink.transactional-id-prefix", "p")]).expect_err("prefix without exactly-once");
        assert!(
            err.to_string().contains("applies only to sink.delivery-guarantee = 'exactly-once'"),
            "{err}"
        );
        let err = kafka_sink(&[
            ("sink.delivery-guarantee", "exactly-once"),
            ("sink.transactional-id-prefix", "p"),
            ("properties.transactional.id", "mine"),
        ])
        .expect_err("transactional.id is the sink's");
        assert!(err.to_string().contains("'properties.transactional.id' cannot be set"), "{err}");
        let mut upsert = table(&[
            ("connector", "upsert-kafka"),
            ("topic", "out"),
            ("sink.delivery-guarantee", "exactly-once"),
            ("sink.transactional-id-prefix", "p"),
        ]);
        upsert.primary_key = vec![0];
        let SinkConnector::Kafka(k) =
            SinkConnector::from_table(&upsert, &KafkaDefaults::with_bootstrap("b")).expect("valid")
        else {
            panic!("not kafka")
        };
        assert!(matches!(k.delivery, DeliveryGuarantee::ExactlyOnce { .. }));
    }
}
