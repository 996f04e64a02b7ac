//! What the StreamJob end-to-end tests share: a test namespace's StreamJobs (apply, patch,
//! wait on status, Deployments, Events), the job image, and the seed pipeline on its own
//! topics with its reference output.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use millrace_crds::v1alpha1::{ConditionStatus, StreamJob};
use serde_json::json;

use crate::support::{self, DEADLINE, FIELD_MANAGER, TestNamespace, unique, wait_until};

/// Running the seed job takes Pods starting, registering and checkpointing: more than the
/// operator's own deadline.
pub const JOB_DEADLINE: Duration = Duration::from_secs(240);

pub fn job_image() -> String {
    std::env::var("MILLRACE_E2E_JOB_IMAGE").unwrap_or_else(|_| "millrace/millrace-worker:dev".into())
}

/// A filter job on topics that need not exist (nothing here reads them).
pub fn filter_sql(input: &str, output: &str) -> String {
    format!(
        "CREATE TABLE input (v BIGINT) WITH (connector = 'kafka', topic = '{input}', format = 'raw');\n\
         CREATE TABLE output (v BIGINT) WITH (connector = 'kafka', topic = '{output}', format = 'raw');\n\
         INSERT INTO output SELECT v FROM input WHERE v >= 50;\n"
    )
}

pub fn storage(namespace: &str) -> String {
    format!("file:///tmp/millrace-e2e-checkpoints/{namespace}")
}

pub struct Jobs<'a> {
    ns: &'a TestNamespace,
}

impl<'a> Jobs<'a> {
    pub fn new(ns: &'a TestNamespace) -> Self {
        Self { ns }
    }

    pub fn client(&self) -> Client {
        self.ns.client.clone()
    }

    pub fn api(&self) -> Api<StreamJob> {
        Api::namespaced(self.client(), &self.ns.name)
    }

    pub fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client(), &self.ns.name)
    }

    pub async fn apply(&self, name: &str, spec: serde_json::Value) -> StreamJob {
        let object = json!({
            "apiVersion": "millrace.io/v1alpha1",
            "kind": "StreamJob",
            "metadata": { "name": name, "namespace": self.ns.name },
            "spec": spec,
        });
        self.api()
            .patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&object))
            .await
            .unwrap_or_else(|err| panic!("applying StreamJob {name}: {err}"))
    }

    /// Merges `spec` into the job's spec as another field manager would (`kubectl patch`).
    pub async fn patch_spec(&self, name: &str, spec: serde_json::Value) {
        self.api()
            .patch(name, &PatchParams::default(), &Patch::Merge(json!({ "spec": spec })))
            .await
            .unwrap_or_else(|err| panic!("patching StreamJob {name}: {err}"));
    }

    /// Waits until the job's status describes its current generation and `probe` holds.
    pub async fn wait(
        &self,
        name: &str,
        what: &str,
        deadline: Duration,
        probe: impl Fn(&StreamJob) -> bool,
    ) -> StreamJob {
        let api = self.api();
        let what = format!("StreamJob {}/{name}: {what}", self.ns.name);
        wait_until(&what, deadline, || async {
            let job = api.get(name).await.ok()?;
            let status = job.status.as_ref()?;
            (status.observed_generation == job.metadata.generation && probe(&job)).then_some(job)
        })
        .await
    }

    pub async fn deployment(&self, name: &str) -> Option<Deployment> {
        self.deployments().get_opt(name).await.expect("read Deployment")
    }

    pub async fn wait_deployment(
        &self,
        name: &str,
        what: &str,
        probe: impl Fn(&Deployment) -> bool,
    ) -> Deployment {
        let api = self.deployments();
        let what = format!("Deployment {}/{name}: {what}", self.ns.name);
        wait_until(&what, DEADLINE, || async { api.get_opt(name).await.ok()?.filter(|d| probe(d)) }).await
    }

    pub async fn wait_gone(&self, name: &str) {
        let api = self.deployments();
        let what = format!("Deployment {}/{name} to be deleted", self.ns.name);
        wait_until(&what, DEADLINE, || async { api.get_opt(name).await.ok()?.is_none().then_some(()) }).await;
    }

    pub async fn events(&self) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.client(), &self.ns.name);
        api.list(&ListParams::default()).await.expect("list Events").items
    }
}

pub fn args(deployment: &Deployment) -> Vec<String> {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .and_then(|c| c.args.clone())
        .unwrap_or_default()
}

pub fn replicas(deployment: &Deployment) -> Option<i32> {
    deployment.spec.as_ref().and_then(|s| s.replicas)
}

pub fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

pub fn ready(job: &StreamJob) -> Option<(ConditionStatus, String, String)> {
    job.ready_condition().map(|c| (c.status, c.reason.clone(), c.message.clone()))
}

/// The seed pipeline (a) of examples/seed on its own topics.
pub fn seed_sql(input: &str, output: &str, dlq: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/seed/seed-a-rolling-average.sql");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .replace("'input-topic-dlq'", &format!("'{dlq}'"))
        .replace("'input-topic'", &format!("'{input}'"))
        .replace("'output-topic'", &format!("'{output}'"))
        .replace("group_id = 'millrace-", &format!("group_id = '{}-", unique("g")))
}

pub fn produce(topic: &str, values: &[i64]) {
    support::produce_integers(topic, values);
}

/// Reads `topic` (one partition) from the beginning until `count` records or the deadline.
pub async fn consume(topic: &str, count: usize) -> Vec<f64> {
    support::consume_floats(topic, count, JOB_DEADLINE).await
}

/// The article's consumer loop: keep values >= 50, emit the mean of the last 3 kept values.
pub fn rolling_reference(input: &[i64]) -> Vec<f64> {
    let kept: Vec<i64> = input.iter().copied().filter(|v| *v >= 50).collect();
    kept.windows(3).map(|w| w.iter().sum::<i64>() as f64 / 3.0).collect()
}
