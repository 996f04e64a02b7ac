//! Fixtures of the KafkaTopic platform tests: Millrace installed once per test run by its
//! Helm chart (the operator a Pod of the pod runner), one namespace per test, polling with deadlines, and a Kafka admin
//! client to check every outcome in Kafka itself.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use millrace_crds::v1alpha1::{ConditionStatus, KafkaTopic};
use rdkafka::ClientConfig;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::OnceCell;

/// How long the operator may take for anything the tests wait on (Kafka timeouts are 15 s).
pub const DEADLINE: Duration = Duration::from_secs(90);
const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);
const OPERATOR_NAMESPACE: &str = "millrace-system";
const OPERATOR_LABEL: &str = "app.kubernetes.io/name=millrace-operator";
pub const FIELD_MANAGER: &str = "millrace-e2e";

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run `make up` and `set -a; source .local/env` (make test does both)")
    })
}

pub fn bootstrap() -> String {
    required_env("KAFKA_BOOTSTRAP")
}

pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_nanos();
    format!("{prefix}-{}", nanos % 1_000_000_000_000)
}

/// A Kubernetes client from `KUBECONFIG` (the admin's, from `.local/env`).
pub async fn client() -> Client {
    required_env("KUBECONFIG");
    Client::try_default().await.expect("a client from KUBECONFIG")
}

static OPERATOR: OnceCell<()> = OnceCell::const_new();

/// Makes sure Millrace runs as a user installs it: `helm upgrade --install` of the chart
/// (charts/millrace, through `e2e/platform/millrace.sh up`), so the operator and the API server
/// run under the chart's own ServiceAccounts and RBAC; then restarts the operator's Pod so that
/// it runs the binary just built and waits for it to be Ready. Done once per run.
///
/// `MILLRACE_E2E_OPERATOR=external` skips this (loudly) for an operator started by hand,
/// e.g. under a debugger; nothing else turns it off.
pub async fn ensure_operator() {
    OPERATOR
        .get_or_init(|| async {
            if std::env::var("MILLRACE_E2E_OPERATOR").is_ok_and(|v| v == "external") {
                eprintln!("MILLRACE_E2E_OPERATOR=external: using an operator started outside the tests");
                return;
            }
            install_chart().await;
            let client = client().await;
            let what = "a Ready millrace-operator Pod in millrace-system (see .local/pods/millrace-system/)";
            replace_pods_and_wait_ready(&client, OPERATOR_NAMESPACE, OPERATOR_LABEL, what).await;
            let deployments: Api<Deployment> = Api::namespaced(client, OPERATOR_NAMESPACE);
            deployments.get("millrace-operator").await.expect("the operator Deployment exists");
        })
        .await;
}

/// Runs the operator from another image than the chart's, e.g. one the pod runner maps to
/// another build of the binary (`MILLRACE_E2E_OPERATOR_IMAGE=wt-x/millrace-operator:dev`).
pub const OPERATOR_IMAGE_ENV: &str = "MILLRACE_E2E_OPERATOR_IMAGE";

/// `e2e/platform/millrace.sh up`: the chart installed or upgraded with the local values.
pub async fn install_chart() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut command = tokio::process::Command::new("bash");
    command.arg(root.join("e2e/platform/millrace.sh")).arg("up");
    if let Ok(image) = std::env::var(OPERATOR_IMAGE_ENV) {
        let (repository, tag) = image.rsplit_once(':').unwrap_or((image.as_str(), "latest"));
        eprintln!("{OPERATOR_IMAGE_ENV}: running the operator from image {image}");
        command.env(
            "MILLRACE_HELM_ARGS",
            format!("--set operator.image.repository={repository} --set operator.image.tag={tag} --set global.imageRegistry="),
        );
    }
    let output = command.output().await.expect("run e2e/platform/millrace.sh");
    assert!(
        output.status.success(),
        "e2e/platform/millrace.sh up failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Deletes the Pods labelled `label` in `namespace` so their Deployment starts fresh ones on
/// the binary just built, and waits until a new one is Ready.
pub async fn replace_pods_and_wait_ready(client: &Client, namespace: &str, label: &str, what: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let old: Vec<String> = pods
        .list(&ListParams::default().labels(label))
        .await
        .expect("list pods to replace")
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    for name in &old {
        let _ = pods.delete(name, &DeleteParams::default()).await;
    }
    wait_until(what, Duration::from_secs(120), || async {
        let list = pods.list(&ListParams::default().labels(label)).await.ok()?;
        list.items.into_iter().find(|p| {
            !old.contains(&p.name_any())
                && p.metadata.deletion_timestamp.is_none()
                && p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
    })
    .await
}

/// Polls `probe` every 200 ms until it yields a value; panics with `what` at the deadline.
pub async fn wait_until<T, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A namespace of its own for one test, deleted (and waited for) by [`TestNamespace::delete`].
pub struct TestNamespace {
    pub client: Client,
    pub name: String,
}

impl TestNamespace {
    pub async fn create(prefix: &str) -> Self {
        ensure_operator().await;
        let client = client().await;
        let name = unique(prefix);
        let namespace: Namespace =
            serde_json::from_value(serde_json::json!({ "metadata": { "name": name } })).expect("namespace");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .expect("create test namespace");
        Self { client, name }
    }

    pub fn topics(&self) -> Api<KafkaTopic> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Applies a KafkaTopic given as the `spec` (and optional `metadata` extras) in JSON.
    pub async fn apply(&self, name: &str, spec: serde_json::Value) -> KafkaTopic {
        let object = serde_json::json!({
            "apiVersion": "millrace.io/v1alpha1",
            "kind": "KafkaTopic",
            "metadata": { "name": name, "namespace": self.name },
            "spec": spec,
        });
        self.topics()
            .patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&object))
            .await
            .unwrap_or_else(|err| panic!("applying KafkaTopic {name}: {err}"))
    }

    /// Waits until the Ready condition of `name` describes the current generation and has
    /// `status` (and `reason`, if given); returns the object.
    pub async fn wait_ready(&self, name: &str, status: ConditionStatus, reason: Option<&str>) -> KafkaTopic {
        let api = self.topics();
        let what = format!("KafkaTopic {}/{name} Ready={status:?} reason={reason:?}", self.name);
        wait_until(&what, DEADLINE, || async {
            let topic = api.get(name).await.ok()?;
            let ready = topic.ready_condition()?;
            let current = ready.observed_generation == topic.metadata.generation;
            (current && ready.status == status && reason.is_none_or(|r| ready.reason == r)).then_some(topic)
        })
        .await
    }

    /// Deletes the namespace and waits until it is gone: a hanging finalizer fails the test.
    pub async fn delete(self) {
        let api = Api::<Namespace>::all(self.client.clone());
        api.delete(&self.name, &DeleteParams::default()).await.expect("delete test namespace");
        let what = format!("namespace {} to be deleted (KafkaTopic finalizers released)", self.name);
        wait_until(&what, DEADLINE, || async { api.get_opt(&self.name).await.ok()?.is_none().then_some(()) })
            .await;
    }
}

/// The message of the Ready condition.
pub fn ready_message(topic: &KafkaTopic) -> String {
    topic.ready_condition().map(|c| c.message.clone()).unwrap_or_default()
}

/// Direct access to Kafka, to check what the operator did and to change things behind its back.
pub struct Kafka {
    admin: AdminClient<DefaultClientContext>,
}

/// A topic as the tests see it in Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInKafka {
    pub partitions: usize,
    /// Topic-level overrides only (config source DYNAMIC_TOPIC_CONFIG).
    pub overrides: BTreeMap<String, String>,
}

impl Kafka {
    pub fn connect() -> Self {
        let admin = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("allow.auto.create.topics", "false")
            .create()
            .expect("Kafka admin client");
        Self { admin }
    }

    fn options() -> AdminOptions {
        AdminOptions::new().request_timeout(Some(KAFKA_TIMEOUT)).operation_timeout(Some(KAFKA_TIMEOUT))
    }

    /// The topic's partitions and overrides, or `None` if Kafka does not know it.
    pub async fn describe(&self, topic: &str) -> Option<TopicInKafka> {
        let metadata = self.admin.inner().fetch_metadata(Some(topic), KAFKA_TIMEOUT).expect("metadata");
        let entry = metadata.topics().iter().find(|t| t.name() == topic)?;
        if entry.error().is_some() {
            return None;
        }
        let partitions = entry.partitions().len();
        let configs = self
            .admin
            .describe_configs([&ResourceSpecifier::Topic(topic)], &Self::options())
            .await
            .expect("describe_configs request");
        let mut overrides = BTreeMap::new();
        for resource in configs {
            let Ok(resource) = resource else { return None };
            for entry in resource.entries {
                if entry.source == ConfigSource::DynamicTopic {
                    overrides.insert(entry.name, entry.value.unwrap_or_default());
                }
            }
        }
        Some(TopicInKafka { partitions, overrides })
    }

    /// Waits until `probe` holds for the topic as Kafka describes it (None: absent).
    pub async fn wait_for(&self, what: &str, topic: &str, probe: impl Fn(Option<&TopicInKafka>) -> bool) {
        let what = format!("topic {topic:?} in Kafka: {what}");
        wait_until(&what, DEADLINE, || async { probe(self.describe(topic).await.as_ref()).then_some(()) })
            .await;
    }

    pub async fn create(&self, topic: &str, partitions: i32, config: &[(&str, &str)]) {
        let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        for (key, value) in config {
            new_topic = new_topic.set(key, value);
        }
        for result in self.admin.create_topics([&new_topic], &Self::options()).await.expect("create_topics") {
            result.expect("topic created");
        }
    }

    /// Replaces the topic's overrides behind the operator's back.
    pub async fn set_overrides(&self, topic: &str, config: &[(&str, &str)]) {
        let mut request = AlterConfig::new(ResourceSpecifier::Topic(topic));
        for (key, value) in config {
            request = request.set(key, value);
        }
        for result in self.admin.alter_configs([&request], &Self::options()).await.expect("alter_configs") {
            result.expect("configs altered");
        }
    }

    pub async fn delete(&self, topic: &str) {
        for result in self.admin.delete_topics(&[topic], &Self::options()).await.expect("delete_topics") {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((_, code)) => panic!("deleting {topic}: {code}"),
            }
        }
    }
}

/// Produces integers as UTF-8 text (the seed pipeline's input) and waits for the broker's
/// acknowledgement.
#[allow(dead_code)] // for the job tests (stream_job.rs, api.rs), not kafka_topic.rs
pub fn produce_integers(topic: &str, values: &[i64]) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", bootstrap()).create().expect("producer");
    for v in values {
        let text = v.to_string();
        producer.send(BaseRecord::<(), str>::to(topic).payload(&text)).map_err(|(e, _)| e).expect("enqueue");
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).expect("input acknowledged");
}

/// A `read_committed` consumer of `topic`'s partition 0 from its beginning, in a group of its own.
#[allow(dead_code)] // for the job tests, not kafka_topic.rs
pub fn committed_reader(topic: &str) -> rdkafka::consumer::StreamConsumer {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("e2e-reader"))
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning).expect("partition");
    consumer.assign(&assignment).expect("assign");
    consumer
}

/// Reads `topic` (one partition, `read_committed`) from the beginning until `count` records
/// (floats as text) or `deadline`; each read waits for the next record, up to what is left
/// of the deadline.
#[allow(dead_code)] // for the job tests (stream_job.rs, api.rs), not kafka_topic.rs
pub async fn consume_floats(topic: &str, count: usize, deadline: Duration) -> Vec<f64> {
    use rdkafka::message::Message;
    let consumer = committed_reader(topic);
    let mut seen = Vec::new();
    let end = Instant::now() + deadline;
    while seen.len() < count {
        let left = end.saturating_duration_since(Instant::now());
        let Ok(message) = tokio::time::timeout(left, consumer.recv()).await else {
            panic!("timed out reading {topic}: {} of {count}: {seen:?}", seen.len());
        };
        let message = message.expect("consume");
        let text = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
        seen.push(text.parse::<f64>().unwrap_or_else(|e| panic!("output {text:?}: {e}")));
    }
    seen
}
