//! The build phase (pure): the Kubernetes objects one deployment of a StreamJob consists of,
//! as the roles contract fixes them (docs/operator.md, "StreamJob children"): the plan
//! ConfigMap, the coordinator Deployment and Service, the worker Deployment with
//! `ceil(parallelism / slotsPerWorker)` replicas, the workers' ServiceAccount and a
//! PodDisruptionBudget. Every object carries a controller owner reference to the StreamJob,
//! so Kubernetes garbage-collects them with it.
//!
//! Objects are built as server-side-apply bodies (JSON with apiVersion and kind); this module
//! performs no I/O and knows nothing about the job's lifecycle beyond the deployment record.

use millrace_crds::v1alpha1::{
    DeliveryGuarantee, DeploymentRecord, EnvVar, PodOverrides, Resources, StreamJob, StreamJobSpec,
};
use serde_json::{Value, json};

use super::validate::ValidJob;

/// Where the plan ConfigMap is mounted in the coordinator.
pub const PLAN_MOUNT: &str = "/etc/millrace/job";
/// Where `spec.kafka.secretRef` (librdkafka client properties, one key per property) is
/// mounted in the coordinator and the workers.
pub const KAFKA_PROPERTIES_MOUNT: &str = "/etc/millrace/kafka";
/// Port workers register on.
pub const RPC_PORT: u16 = 6123;
/// Ops port (`/readyz`, `/metrics`, the control API) of coordinator and workers.
pub const HTTP_PORT: u16 = super::control::HTTP_PORT;
/// Pod template annotation naming the deployment, so every redeploy starts new Pods.
pub const DEPLOYMENT_ANNOTATION: &str = "millrace.io/deployment";

/// Operator-wide defaults a spec may leave out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    /// Image of jobs without `spec.image`.
    pub image: String,
    /// Kafka of jobs without `spec.kafka`.
    pub kafka_bootstrap: String,
    /// Checkpoint storage of jobs without `spec.checkpointing.storage` (none: no checkpoints).
    pub checkpoint_storage: Option<String>,
}

/// The objects of one deployment, in the order they are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    pub service_account: Value,
    pub config_map: Value,
    pub service: Value,
    pub pod_disruption_budget: Value,
    pub coordinator: Value,
    pub worker: Value,
}

pub fn coordinator_name(job: &str) -> String {
    format!("{job}-coordinator")
}

pub fn worker_name(job: &str) -> String {
    format!("{job}-worker")
}

pub fn plan_name(job: &str) -> String {
    format!("{job}-plan")
}

/// Label selector of the job's worker Pods (the scale subresource's `selector`).
pub fn worker_selector(job: &str) -> String {
    format!("app.kubernetes.io/name=millrace-worker,app.kubernetes.io/instance={job},millrace.io/role=worker")
}

fn selector_labels(job: &str, role: &str) -> Value {
    json!({
        "app.kubernetes.io/name": "millrace-worker",
        "app.kubernetes.io/instance": job,
        "millrace.io/role": role,
    })
}

fn labels(job: &str, role: &str) -> Value {
    let mut labels = selector_labels(job, role);
    labels["app.kubernetes.io/managed-by"] = json!("millrace-operator");
    labels
}

/// The job's storage folder: `<storage>/<namespace>/<name>`, if the job has storage.
pub fn job_storage(spec: &StreamJobSpec, namespace: &str, name: &str, defaults: &Defaults) -> Option<String> {
    let base = spec
        .checkpointing
        .as_ref()
        .and_then(|c| c.storage.clone())
        .or_else(|| defaults.checkpoint_storage.clone())?;
    Some(format!("{}/{namespace}/{name}", base.trim_end_matches('/')))
}

/// Checkpoints of one deployment, in a folder of its own (or, for `last-state`, the folder of
/// the deployment it continues): a coordinator restores the latest checkpoint of its folder,
/// so it never restores an older deployment's checkpoint after a savepoint or a fresh start.
///
/// The folder is named `<incarnation>-<deployment>`, the incarnation being the first 8
/// characters of the StreamJob's uid: a job deleted and created again under the same name
/// starts its deployment numbers at 1 again and must not restore the old job's checkpoints.
pub fn checkpoint_dir(storage: &str, job: &StreamJob, deployment: i64) -> String {
    let uid = job.metadata.uid.as_deref().unwrap_or("0");
    let incarnation: String = uid.chars().filter(|c| *c != '-').take(8).collect();
    format!("{storage}/checkpoints/{incarnation}-{deployment}")
}

/// Savepoints of every deployment of the job; kept when the StreamJob is deleted.
pub fn savepoint_dir(storage: &str) -> String {
    format!("{storage}/savepoints")
}

fn owner_reference(job: &StreamJob) -> Value {
    json!({
        "apiVersion": "millrace.io/v1alpha1",
        "kind": "StreamJob",
        "name": job.metadata.name,
        "uid": job.metadata.uid,
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

fn metadata(job: &StreamJob, name: String, role: &str) -> Value {
    json!({
        "name": name,
        "namespace": job.metadata.namespace,
        "labels": labels(job.metadata.name.as_deref().unwrap_or_default(), role),
        "ownerReferences": [owner_reference(job)],
    })
}

fn resources(resources: Option<&Resources>) -> Value {
    let Some(r) = resources else { return json!({}) };
    let mut requests = serde_json::Map::new();
    let mut limits = serde_json::Map::new();
    if let Some(cpu) = &r.cpu {
        requests.insert("cpu".into(), json!(cpu));
    }
    if let Some(memory) = &r.memory {
        requests.insert("memory".into(), json!(memory));
        // Memory is not compressible: a Pod above its request is the first to be killed,
        // so the limit equals the request. CPU is left unlimited (throttling hurts latency).
        limits.insert("memory".into(), json!(memory));
    }
    json!({ "requests": requests, "limits": limits })
}

fn env_var(var: &EnvVar) -> Value {
    if let Some(r) = &var.secret_key_ref {
        json!({ "name": var.name, "valueFrom": { "secretKeyRef": { "name": r.name, "key": r.key } } })
    } else if let Some(r) = &var.config_map_key_ref {
        json!({ "name": var.name, "valueFrom": { "configMapKeyRef": { "name": r.name, "key": r.key } } })
    } else {
        json!({ "name": var.name, "value": var.value.clone().unwrap_or_default() })
    }
}

fn environment(spec: &StreamJobSpec, defaults: &Defaults) -> Vec<Value> {
    let bootstrap =
        spec.kafka.as_ref().map_or(defaults.kafka_bootstrap.as_str(), |k| k.bootstrap_servers.as_str());
    let mut env = vec![
        json!({ "name": "POD_IP", "valueFrom": { "fieldRef": { "fieldPath": "status.podIP" } } }),
        json!({ "name": "KAFKA_BOOTSTRAP", "value": bootstrap }),
    ];
    if kafka_secret(spec).is_some() {
        env.push(json!({ "name": "MILLRACE_KAFKA_PROPERTIES_DIR", "value": KAFKA_PROPERTIES_MOUNT }));
    }
    if let Some(topic) = spec.dead_letter.as_ref().and_then(|d| d.topic.as_ref()) {
        env.push(json!({ "name": "MILLRACE_DEAD_LETTER_TOPIC", "value": topic }));
    }
    if let Some(overrides) = &spec.pod_overrides {
        env.extend(overrides.env.iter().map(env_var));
    }
    env
}

/// The Secret of `spec.kafka.secretRef`, if any.
fn kafka_secret(spec: &StreamJobSpec) -> Option<&str> {
    spec.kafka.as_ref()?.secret_ref.as_ref().map(|s| s.name.as_str())
}

/// The volume and mount of the Kafka client properties Secret, if the job names one.
fn kafka_properties_volume(spec: &StreamJobSpec) -> Option<(Value, Value)> {
    let secret = kafka_secret(spec)?;
    Some((
        json!({ "name": "kafka-properties", "secret": { "secretName": secret } }),
        json!({ "name": "kafka-properties", "mountPath": KAFKA_PROPERTIES_MOUNT, "readOnly": true }),
    ))
}

/// A Pod template with the overrides of the spec applied.
fn pod_template(
    job: &StreamJob,
    role: &str,
    record: &DeploymentRecord,
    container: Value,
    volumes: Vec<Value>,
) -> Value {
    let name = job.metadata.name.as_deref().unwrap_or_default();
    let none = PodOverrides::default();
    let overrides = job.spec.pod_overrides.as_ref().unwrap_or(&none);
    let mut pod_labels = labels(name, role);
    for (key, value) in &overrides.labels {
        // The selector's own labels cannot be overridden: the Deployment would lose its Pods.
        if pod_labels.get(key).is_none() {
            pod_labels[key] = json!(value);
        }
    }
    let mut annotations = serde_json::to_value(&overrides.annotations).unwrap_or_else(|_| json!({}));
    annotations[DEPLOYMENT_ANNOTATION] = json!(record.number.to_string());
    json!({
        "metadata": { "labels": pod_labels, "annotations": annotations },
        "spec": {
            "serviceAccountName": worker_name(name),
            // The engine calls no Kubernetes API.
            "automountServiceAccountToken": false,
            "nodeSelector": overrides.node_selector,
            "tolerations": overrides.tolerations,
            "containers": [container],
            "volumes": volumes,
        },
    })
}

fn readiness_probe() -> Value {
    json!({ "httpGet": { "path": "/readyz", "port": "http" }, "periodSeconds": 2, "failureThreshold": 3 })
}

/// The coordinator's arguments for this deployment.
pub fn coordinator_args(job: &StreamJob, record: &DeploymentRecord, defaults: &Defaults) -> Vec<String> {
    let spec = &job.spec;
    let mut args: Vec<String> = vec![
        "coordinator".into(),
        "-f".into(),
        format!("{PLAN_MOUNT}/job.sql"),
        "--parallelism".into(),
        spec.parallelism.to_string(),
        "--max-parallelism".into(),
        spec.effective_max_parallelism().to_string(),
        "--slots-per-worker".into(),
        spec.effective_slots_per_worker().to_string(),
    ];
    let namespace = job.metadata.namespace.as_deref().unwrap_or_default();
    let name = job.metadata.name.as_deref().unwrap_or_default();
    if let Some(storage) = job_storage(spec, namespace, name, defaults) {
        let checkpointing = spec.checkpointing.as_ref();
        let interval = checkpointing.and_then(|c| c.interval_ms).unwrap_or(10_000);
        let retained = checkpointing.and_then(|c| c.retained).unwrap_or(3);
        args.extend([
            "--checkpoint-dir".into(),
            checkpoint_dir(&storage, job, record.checkpoint_folder.unwrap_or(record.number)),
            "--checkpoint-interval".into(),
            format!("{interval}ms"),
            "--checkpoints-retained".into(),
            retained.to_string(),
            "--savepoint-dir".into(),
            savepoint_dir(&storage),
        ]);
    }
    if let Some(from) = &record.restore_from {
        args.extend(["--restore-from".into(), from.clone()]);
    }
    if spec.allow_non_restored_state {
        args.push("--allow-non-restored-state".into());
    }
    if let Some(restarts) = &spec.restarts {
        let attempts = millrace_crds::v1alpha1::RestartPolicy::effective_attempts(Some(restarts));
        let window = millrace_crds::v1alpha1::RestartPolicy::effective_window_ms(Some(restarts));
        args.extend([
            "--restart-attempts".into(),
            attempts.to_string(),
            "--restart-window".into(),
            format!("{window}ms"),
        ]);
    }
    args.extend(delivery_args(job, defaults));
    args
}

/// The delivery guarantee of sinks whose SQL does not choose one (`spec.checkpointing.delivery`,
/// exactly-once by default). Both guarantees are kept at checkpoints, so a job without
/// checkpoint storage gets none: its sinks write as they go (the engine's at-least-once
/// flushes need barriers). Exactly-once transactions are named `<prefix>.<sink table>…`
/// (`checkpointing.transactionalIdPrefix`, default `<namespace>.<job>`), stable across the
/// job's deployments so a restore settles the ones its checkpoint covers.
fn delivery_args(job: &StreamJob, defaults: &Defaults) -> Vec<String> {
    let namespace = job.metadata.namespace.as_deref().unwrap_or_default();
    let name = job.metadata.name.as_deref().unwrap_or_default();
    if job_storage(&job.spec, namespace, name, defaults).is_none() {
        return Vec::new();
    }
    let checkpointing = job.spec.checkpointing.as_ref();
    match checkpointing.map(|c| c.delivery).unwrap_or_default() {
        DeliveryGuarantee::ExactlyOnce => vec![
            "--sink-delivery".into(),
            "exactly-once".into(),
            "--transactional-id-base".into(),
            checkpointing
                .and_then(|c| c.transactional_id_prefix.clone())
                .unwrap_or_else(|| format!("{namespace}.{name}")),
        ],
        DeliveryGuarantee::AtLeastOnce => vec!["--sink-delivery".into(), "at-least-once".into()],
    }
}

fn image(spec: &StreamJobSpec, defaults: &Defaults) -> String {
    spec.image.clone().unwrap_or_else(|| defaults.image.clone())
}

fn coordinator(job: &StreamJob, record: &DeploymentRecord, defaults: &Defaults) -> Value {
    let name = job.metadata.name.as_deref().unwrap_or_default();
    let mut container = json!({
        "name": "coordinator",
        "image": image(&job.spec, defaults),
        "command": ["millrace-worker"],
        "args": coordinator_args(job, record, defaults),
        "env": environment(&job.spec, defaults),
        "ports": [
            { "name": "rpc", "containerPort": RPC_PORT },
            { "name": "http", "containerPort": HTTP_PORT },
        ],
        "readinessProbe": readiness_probe(),
        "resources": resources(job.spec.coordinator_resources.as_ref()),
    });
    let mut mounts = vec![json!({ "name": "plan", "mountPath": PLAN_MOUNT, "readOnly": true })];
    let mut volumes = vec![json!({ "name": "plan", "configMap": { "name": plan_name(name) } })];
    if let Some((volume, mount)) = kafka_properties_volume(&job.spec) {
        volumes.push(volume);
        mounts.push(mount);
    }
    container["volumeMounts"] = json!(mounts);
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(job, coordinator_name(name), "coordinator"),
        "spec": {
            "replicas": 1,
            // Never two coordinators of one job at once.
            "strategy": { "type": "Recreate" },
            "selector": { "matchLabels": selector_labels(name, "coordinator") },
            "template": pod_template(job, "coordinator", record, container, volumes),
        },
    })
}

fn worker(job: &StreamJob, record: &DeploymentRecord, defaults: &Defaults) -> Value {
    let name = job.metadata.name.as_deref().unwrap_or_default();
    let slots = job.spec.effective_slots_per_worker().to_string();
    let mut container = json!({
        "name": "worker",
        "image": image(&job.spec, defaults),
        "command": ["millrace-worker"],
        "args": ["worker", "--coordinator", format!("{}:{RPC_PORT}", coordinator_name(name)), "--slots", slots],
        "env": environment(&job.spec, defaults),
        "ports": [{ "name": "http", "containerPort": HTTP_PORT }],
        "readinessProbe": readiness_probe(),
        "resources": resources(job.spec.worker_resources.as_ref()),
    });
    let mut volumes = Vec::new();
    if let Some((volume, mount)) = kafka_properties_volume(&job.spec) {
        volumes.push(volume);
        container["volumeMounts"] = json!([mount]);
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(job, worker_name(name), "worker"),
        "spec": {
            "replicas": job.spec.worker_replicas(),
            // A deployment's workers register with its coordinator only.
            "strategy": { "type": "Recreate" },
            "selector": { "matchLabels": selector_labels(name, "worker") },
            "template": pod_template(job, "worker", record, container, volumes),
        },
    })
}

/// Builds every child of `job` for the deployment `record`.
pub fn build(job: &StreamJob, valid: &ValidJob, record: &DeploymentRecord, defaults: &Defaults) -> Children {
    let name = job.metadata.name.as_deref().unwrap_or_default();
    let service_account = json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(job, worker_name(name), "worker"),
        "automountServiceAccountToken": false,
    });
    let config_map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(job, plan_name(name), "coordinator"),
        "data": { "job.sql": job.spec.sql, "plan.txt": valid.explain },
    });
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(job, coordinator_name(name), "coordinator"),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(name, "coordinator"),
            "ports": [
                { "name": "rpc", "port": RPC_PORT, "targetPort": "rpc" },
                { "name": "http", "port": HTTP_PORT, "targetPort": "http" },
            ],
        },
    });
    let pod_disruption_budget = json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(job, worker_name(name), "worker"),
        // Losing any worker restarts the job from its last checkpoint: allow one at a time.
        "spec": { "maxUnavailable": 1, "selector": { "matchLabels": selector_labels(name, "worker") } },
    });
    Children {
        service_account,
        config_map,
        service,
        pod_disruption_budget,
        coordinator: coordinator(job, record, defaults),
        worker: worker(job, record, defaults),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{ConfigMap, Service};
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;

    use super::*;

    fn job(yaml: &str) -> StreamJob {
        serde_saphyr::from_str(yaml).expect("fixture parses")
    }

    fn defaults() -> Defaults {
        Defaults {
            image: "millrace/millrace-worker:0.1.0".into(),
            kafka_bootstrap: "kafka:9092".into(),
            checkpoint_storage: None,
        }
    }

    fn record(number: i64, restore_from: Option<&str>) -> DeploymentRecord {
        DeploymentRecord {
            number,
            restore_from: restore_from.map(str::to_owned),
            checkpoint_folder: None,
            started_at: "2026-12-02T00:00:00Z".into(),
        }
    }

    fn children() -> Children {
        let j = job(include_str!("../../tests/fixtures/stream_job/seed.yaml"));
        build(&j, &ValidJob { explain: "the plan".into() }, &record(4, Some("file:///tmp/sp-9")), &defaults())
    }

    fn container_of(deployment: &Deployment) -> k8s_openapi::api::core::v1::Container {
        let spec = deployment.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("pod spec");
        spec.containers[0].clone()
    }

    #[test]
    fn workers_are_sized_by_slots_and_talk_to_the_coordinator_service() {
        let c = children();
        let worker: Deployment = serde_json::from_value(c.worker).expect("a Deployment");
        let spec = worker.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, Some(2), "ceil(3 / 2)");
        let container = container_of(&worker);
        assert_eq!(container.command, Some(vec!["millrace-worker".to_owned()]));
        assert_eq!(
            container.args.expect("args"),
            ["worker", "--coordinator", "filter-coordinator:6123", "--slots", "2"]
        );
        assert_eq!(container.image.as_deref(), Some("wt-sjob/millrace-worker:dev"));
        let resources = container.resources.expect("resources");
        assert_eq!(resources.requests.expect("requests")["memory"].0, "1Gi");
        let template = &spec.template;
        let labels = template.metadata.as_ref().and_then(|m| m.labels.clone()).expect("labels");
        assert_eq!(labels["millrace.io/role"], "worker");
        assert_eq!(labels["team"], "analytics");
        let pod = template.spec.as_ref().expect("pod spec");
        assert_eq!(pod.service_account_name.as_deref(), Some("filter-worker"));
        assert_eq!(pod.node_selector.as_ref().expect("node selector")["pool"], "streaming");
        assert_eq!(pod.tolerations.as_ref().expect("tolerations")[0].key.as_deref(), Some("dedicated"));
        let env = container.env.expect("env");
        let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["POD_IP", "KAFKA_BOOTSTRAP", "RUST_LOG", "KAFKA_PASSWORD"]);
        assert_eq!(env[1].value.as_deref(), Some("kafka:9092"));
        assert!(env[3].value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()).is_some());
        assert_eq!(worker_selector("filter").split(',').count(), 3);
    }

    #[test]
    fn the_coordinator_restores_and_checkpoints_per_deployment() {
        let c = children();
        let coordinator: Deployment = serde_json::from_value(c.coordinator).expect("a Deployment");
        let spec = coordinator.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.strategy.as_ref().and_then(|s| s.type_.as_deref()), Some("Recreate"));
        let container = container_of(&coordinator);
        let args = container.args.clone().expect("args").join(" ");
        assert_eq!(
            args,
            "coordinator -f /etc/millrace/job/job.sql --parallelism 3 --max-parallelism 128 \
             --slots-per-worker 2 --checkpoint-dir file:///tmp/checkpoints/jobs/filter/checkpoints/6b1f7c4e-4 \
             --checkpoint-interval 2000ms --checkpoints-retained 2 \
             --savepoint-dir file:///tmp/checkpoints/jobs/filter/savepoints --restore-from file:///tmp/sp-9 \
             --sink-delivery exactly-once --transactional-id-base jobs.filter"
        );
        let ports: Vec<(String, i32)> = container
            .ports
            .expect("ports")
            .into_iter()
            .map(|p| (p.name.unwrap_or_default(), p.container_port))
            .collect();
        assert_eq!(ports, [("rpc".to_owned(), 6123), ("http".to_owned(), 9200)]);
        let probe = container.readiness_probe.and_then(|p| p.http_get).expect("httpGet readiness");
        assert_eq!(probe.path.as_deref(), Some("/readyz"));
        let meta = &coordinator.metadata;
        let owner = &meta.owner_references.as_ref().expect("owner")[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("StreamJob", "filter"));
        assert_eq!(owner.uid, "6b1f7c4e-0000-4000-8000-000000000001");
        assert_eq!(owner.controller, Some(true));
        let annotations =
            spec.template.metadata.as_ref().and_then(|m| m.annotations.clone()).expect("annotations");
        assert_eq!(annotations[DEPLOYMENT_ANNOTATION], "4");
    }

    #[test]
    fn a_last_state_deployment_continues_the_folder_before() {
        let j = job(include_str!("../../tests/fixtures/stream_job/seed.yaml"));
        let mut continued = record(5, None);
        continued.checkpoint_folder = Some(3);
        let args = coordinator_args(&j, &continued, &defaults());
        let at = args.iter().position(|a| a == "--checkpoint-dir").expect("checkpoint dir");
        assert_eq!(args[at + 1], "file:///tmp/checkpoints/jobs/filter/checkpoints/6b1f7c4e-3");
        assert!(!args.iter().any(|a| a == "--restore-from"));
    }

    #[test]
    fn a_job_without_storage_has_no_checkpoint_flags_and_the_default_image() {
        let mut j = job(include_str!("../../tests/fixtures/stream_job/seed.yaml"));
        j.spec.checkpointing = None;
        j.spec.image = None;
        let args = coordinator_args(&j, &record(1, None), &defaults());
        assert!(
            !args.iter().any(|a| a.starts_with("--checkpoint") || a.starts_with("--savepoint")),
            "{args:?}"
        );
        let c = build(&j, &ValidJob { explain: String::new() }, &record(1, None), &defaults());
        let coordinator: Deployment = serde_json::from_value(c.coordinator).expect("a Deployment");
        assert_eq!(container_of(&coordinator).image.as_deref(), Some("millrace/millrace-worker:0.1.0"));
    }

    #[test]
    fn kafka_credentials_dead_letters_and_delivery_reach_both_roles() {
        let mut j = job(include_str!("../../tests/fixtures/stream_job/seed.yaml"));
        j.spec.kafka = Some(millrace_crds::v1alpha1::KafkaConnection {
            bootstrap_servers: "broker-1:9093".into(),
            secret_ref: Some(millrace_crds::v1alpha1::SecretReference { name: "kafka-client".into() }),
        });
        j.spec.dead_letter =
            Some(millrace_crds::v1alpha1::DeadLetterPolicy { topic: Some("filter-dlq".into()) });
        if let Some(c) = j.spec.checkpointing.as_mut() {
            c.delivery = DeliveryGuarantee::AtLeastOnce;
        }
        let c = build(&j, &ValidJob { explain: String::new() }, &record(1, None), &defaults());
        for deployment in [c.coordinator, c.worker] {
            let deployment: Deployment = serde_json::from_value(deployment).expect("a Deployment");
            let pod = deployment.spec.as_ref().and_then(|s| s.template.spec.clone()).expect("pod spec");
            let secret = pod
                .volumes
                .expect("volumes")
                .into_iter()
                .find(|v| v.name == "kafka-properties")
                .and_then(|v| v.secret)
                .expect("the Secret as a volume");
            assert_eq!(secret.secret_name.as_deref(), Some("kafka-client"));
            let container = pod.containers[0].clone();
            let mount =
                container.volume_mounts.expect("mounts").into_iter().find(|m| m.name == "kafka-properties");
            assert_eq!(mount.map(|m| m.mount_path), Some(KAFKA_PROPERTIES_MOUNT.to_owned()));
            let env: Vec<(String, Option<String>)> =
                container.env.expect("env").into_iter().map(|e| (e.name, e.value)).collect();
            assert!(env.contains(&("KAFKA_BOOTSTRAP".into(), Some("broker-1:9093".into()))), "{env:?}");
            assert!(
                env.contains(&("MILLRACE_KAFKA_PROPERTIES_DIR".into(), Some(KAFKA_PROPERTIES_MOUNT.into())))
            );
            assert!(env.contains(&("MILLRACE_DEAD_LETTER_TOPIC".into(), Some("filter-dlq".into()))));
        }
        let args = coordinator_args(&j, &record(1, None), &defaults());
        assert!(args.ends_with(&["--sink-delivery".to_owned(), "at-least-once".to_owned()]), "{args:?}");
        j.spec.checkpointing = None;
        let args = coordinator_args(&j, &record(1, None), &defaults());
        assert!(!args.iter().any(|a| a == "--sink-delivery"), "no storage, no delivery default: {args:?}");
    }

    #[test]
    fn the_plan_service_and_budget_match_the_contract() {
        let c = children();
        let plan: ConfigMap = serde_json::from_value(c.config_map).expect("a ConfigMap");
        let data = plan.data.expect("data");
        assert!(data["job.sql"].contains("INSERT INTO output"));
        assert_eq!(data["plan.txt"], "the plan");
        let service: Service = serde_json::from_value(c.service).expect("a Service");
        let spec = service.spec.expect("spec");
        let ports: Vec<(Option<String>, i32)> =
            spec.ports.expect("ports").into_iter().map(|p| (p.name, p.port)).collect();
        assert_eq!(ports, [(Some("rpc".into()), 6123), (Some("http".into()), 9200)]);
        assert_eq!(spec.selector.expect("selector")["millrace.io/role"], "coordinator");
        let budget: PodDisruptionBudget = serde_json::from_value(c.pod_disruption_budget).expect("a PDB");
        let labels = budget.spec.and_then(|s| s.selector).and_then(|s| s.match_labels).expect("selector");
        assert_eq!(labels["millrace.io/role"], "worker");
    }
}
