//! `StreamJob` (short name `sj`): one streaming SQL job declared as a Kubernetes resource.
//!
//! This module owns the shape of the resource, its admission-time schema rules (ranges, the
//! CEL rule `parallelism <= maxParallelism`, the immutable `maxParallelism`), the scale
//! subresource that maps `kubectl scale` to `spec.parallelism`, and the status a person reads
//! to act on a job. Semantic checks that need no cluster live in [`super::validation`]; the
//! SQL itself is checked by the engine's planner, not here.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, KafkaConnection};

/// Key groups of a job unless `spec.maxParallelism` says otherwise (Flink's default too).
pub const DEFAULT_MAX_PARALLELISM: i32 = 128;

/// A streaming SQL job run by Millrace: a coordinator and `ceil(parallelism / slotsPerWorker)`
/// worker Pods, upgraded and rescaled through savepoints.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "millrace.io",
    version = "v1alpha1",
    kind = "StreamJob",
    plural = "streamjobs",
    singular = "streamjob",
    shortname = "sj",
    namespaced,
    status = "StreamJobStatus",
    derive = "PartialEq",
    doc = "A streaming SQL job run by Millrace.",
    scale(
        spec_replicas_path = ".spec.parallelism",
        status_replicas_path = ".status.parallelism",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Parallelism", type_ = "integer", json_path = ".spec.parallelism"),
    printcolumn(name = "Workers", type_ = "string", json_path = ".status.workers"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Last Checkpoint", type_ = "date", json_path = ".status.lastCheckpoint.completedAt"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        priority = 1,
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Job", type_ = "string", priority = 1, json_path = ".status.jobId"),
    printcolumn(
        name = "Last Savepoint",
        type_ = "date",
        priority = 1,
        json_path = ".status.lastSavepoint.completedAt"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = ::kube::core::Rule::new(
        "self.spec.parallelism <= (has(self.spec.maxParallelism) ? self.spec.maxParallelism : 128)"
    )
    .message("spec.parallelism must not exceed spec.maxParallelism (default 128): key groups cannot be split further"),
    validation = ::kube::core::Rule::new(
        "(has(self.spec.maxParallelism) ? self.spec.maxParallelism : 128) == \
         (has(oldSelf.spec.maxParallelism) ? oldSelf.spec.maxParallelism : 128)"
    )
    .message("spec.maxParallelism is immutable: state is partitioned into that many key groups; start a new job from a savepoint instead")
)]
#[serde(rename_all = "camelCase")]
pub struct StreamJobSpec {
    /// The job: `CREATE TABLE` statements for sources and sinks and one `INSERT INTO … SELECT …`.
    #[schemars(length(min = 1))]
    pub sql: String,

    /// Parallel instances of the job's operator chain. `kubectl scale` sets this.
    #[schemars(range(min = 1))]
    pub parallelism: i32,

    /// Key groups: the upper bound of `parallelism` for the job's lifetime (state is split
    /// into this many groups). Default 128. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32768))]
    pub max_parallelism: Option<i32>,

    /// Slots per worker Pod: how many parallel instances one worker runs. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub slots_per_worker: Option<i32>,

    /// The millrace-worker image. Defaults to the operator's configured image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Resources of each worker Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_resources: Option<Resources>,

    /// Resources of the coordinator Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator_resources: Option<Resources>,

    /// Desired state: `running`, or `suspended` (savepoint taken, workers removed).
    #[serde(default)]
    pub state: JobState,

    /// How a spec change reaches a running job.
    #[serde(default)]
    pub upgrade_mode: UpgradeMode,

    /// Periodic checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpointing: Option<Checkpointing>,

    /// Periodic savepoints and their retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoints: Option<SavepointPolicy>,

    /// Change this value to trigger one savepoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoint_trigger_nonce: Option<i64>,

    /// Change this value to restart the job (following `upgradeMode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_nonce: Option<i64>,

    /// Start the first deployment from this savepoint (a path or URL in checkpoint storage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_savepoint: Option<String>,

    /// Start even when savepoint state belongs to operators the new plan no longer has.
    #[serde(default)]
    pub allow_non_restored_state: bool,

    /// The Kafka cluster of tables that name no `bootstrap_servers`. Omit it for the
    /// operator's default cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaConnection>,

    /// Where records that cannot be decoded go, for source tables that set no `dlq_topic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetterPolicy>,

    /// What the job's Pods get beyond the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_overrides: Option<PodOverrides>,

    /// How many failures the job survives: restarts of its tasks by the coordinator and
    /// crashes of its Pods, each at most `attempts` within `windowMs`; one more and the job is
    /// Failed with the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<RestartPolicy>,

    /// Return a failed upgrade to the last spec that ran (`status.lastStableSpec`), as the
    /// Flink Kubernetes Operator's rollback does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackPolicy>,
}

/// Restarts survived before a job is Failed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestartPolicy {
    /// Restarts allowed within the window. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub attempts: Option<i32>,

    /// The window, in milliseconds. Default 300000 (5 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1000))]
    pub window_ms: Option<i64>,
}

impl RestartPolicy {
    pub const DEFAULT_ATTEMPTS: i32 = 3;
    pub const DEFAULT_WINDOW_MS: i64 = 300_000;

    pub fn effective_attempts(policy: Option<&Self>) -> i32 {
        policy.and_then(|p| p.attempts).unwrap_or(Self::DEFAULT_ATTEMPTS)
    }

    pub fn effective_window_ms(policy: Option<&Self>) -> i64 {
        policy.and_then(|p| p.window_ms).unwrap_or(Self::DEFAULT_WINDOW_MS)
    }
}

/// When an upgrade is rolled back.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackPolicy {
    /// Roll back an upgrade that fails (the job Failed, or its Pods crash beyond
    /// `restarts`) or is not Running within `readinessTimeoutMs`. Default false.
    #[serde(default)]
    pub enabled: bool,

    /// How long an upgraded job may take to reach Running, in milliseconds. Default 300000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1000))]
    pub readiness_timeout_ms: Option<i64>,
}

impl RollbackPolicy {
    pub const DEFAULT_READINESS_TIMEOUT_MS: i64 = 300_000;
}

/// The state a job should be in.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum JobState {
    #[default]
    Running,
    /// Savepoint taken, coordinator and workers removed; `running` again restores from it.
    Suspended,
}

/// How a spec change is applied to a running job (as the Flink Kubernetes Operator does).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpgradeMode {
    /// Stop without state and start fresh.
    Stateless,
    /// Take a savepoint and stop, redeploy, restore from that savepoint.
    #[default]
    Savepoint,
    /// Stop, redeploy, restore from the latest completed checkpoint.
    LastState,
}

/// CPU and memory of one Pod, as Kubernetes quantities (`500m`, `1Gi`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// Delivery guarantee of Kafka sinks.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryGuarantee {
    /// Sinks write in Kafka transactions committed when a checkpoint completes.
    #[default]
    ExactlyOnce,
    /// Sinks write as they go; after a failure some records may be written again.
    AtLeastOnce,
}

/// Periodic checkpoints.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Checkpointing {
    /// Time between checkpoints, in milliseconds. Default 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100))]
    pub interval_ms: Option<i64>,

    /// Where checkpoints and savepoints are stored: `file:///path` or `s3://bucket/prefix`.
    /// Defaults to the operator's configured storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,

    /// Completed checkpoints kept. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub retained: Option<i32>,

    /// Delivery guarantee of the job's Kafka sinks that set no `sink.delivery-guarantee`.
    /// Both guarantees are kept at checkpoints: without checkpoint storage, sinks write as
    /// they go.
    #[serde(default)]
    pub delivery: DeliveryGuarantee,

    /// Names the exactly-once transactions of sinks that set no `sink.transactional-id-prefix`:
    /// `<this>.<sink table>-<subtask>-<epoch>`. Unique per job in the Kafka cluster, and kept
    /// across the job's deployments. Default `<namespace>.<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200))]
    pub transactional_id_prefix: Option<String>,
}

/// Periodic savepoints and what happens to savepoints over time.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SavepointPolicy {
    /// Take a savepoint this often (milliseconds). Omit it for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1000))]
    pub interval_ms: Option<i64>,

    /// Savepoints kept in the status history (older periodic ones are disposed of). Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub history_size: Option<i32>,

    /// Delete the job's savepoints from storage when the StreamJob is deleted.
    #[serde(default)]
    pub dispose_on_delete: bool,
}

/// What happens to records that cannot be decoded, for tables that do not say.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterPolicy {
    /// A Kafka topic for undecodable records (payload unchanged, the error in a header).
    /// Omit it to drop them (they are counted either way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249), regex(pattern = r"^[a-zA-Z0-9._-]+$"))]
    pub topic: Option<String>,
}

/// Additions to the Pods of a job (coordinator and workers).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A Pod toleration, as in `core/v1`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Toleration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `Exists` or `Equal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

/// An environment variable: a literal value or a key of a Secret or ConfigMap.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    #[schemars(length(min = 1))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeyReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeyReference>,
}

/// One key of a Secret or ConfigMap in the job's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct KeyReference {
    #[schemars(length(min = 1))]
    pub name: String,
    #[schemars(length(min = 1))]
    pub key: String,
}

/// Where a job is in its lifecycle.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum JobPhase {
    /// Accepted, nothing deployed yet.
    #[default]
    Pending,
    /// Children applied, waiting for the coordinator and workers.
    Deploying,
    Running,
    /// Moving to a new spec according to `upgradeMode`.
    Upgrading,
    /// A savepoint is in progress.
    Savepointing,
    Suspended,
    /// Stopped after repeated failures or an invalid spec; the last error says why.
    Failed,
}

/// A completed checkpoint, as the coordinator reported it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointInfo {
    pub id: i64,
    /// Where the checkpoint's metadata lives in checkpoint storage.
    pub location: String,
    /// RFC 3339.
    pub completed_at: String,
}

/// What triggered a savepoint.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SavepointTrigger {
    /// `savepointTriggerNonce` changed.
    Manual,
    /// `savepoints.intervalMs`.
    Periodic,
    /// An upgrade in `savepoint` mode.
    Upgrade,
    /// `state: suspended`.
    Suspend,
}

/// One savepoint of the job.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SavepointInfo {
    pub location: String,
    pub trigger: SavepointTrigger,
    /// RFC 3339.
    pub completed_at: String,
    /// The parallelism the job had when the savepoint was taken.
    pub parallelism: i32,
}

/// One deployment of a job: a coordinator and workers started from one spec. A new one
/// starts for every upgrade, restart or resume; its number names its checkpoint folder
/// unless it continues the folder of the one before.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRecord {
    /// 1 for the first deployment, one more for each after it.
    pub number: i64,
    /// The savepoint it starts from when its checkpoint folder holds no checkpoint yet
    /// (`--restore-from`); none for a fresh start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<String>,
    /// The number of the checkpoint folder it uses, when not its own: a `last-state`
    /// deployment keeps the folder of the one before, whose latest checkpoint the coordinator
    /// restores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_folder: Option<i64>,
    /// RFC 3339.
    pub started_at: String,
}

/// A savepoint requested through the coordinator's control API.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingSavepoint {
    /// The coordinator's id of the request (`GET /v1/savepoints/{id}`).
    pub request_id: i64,
    pub trigger: SavepointTrigger,
    /// The job stops once the savepoint is taken (upgrades and suspends).
    pub stop: bool,
    /// RFC 3339.
    pub requested_at: String,
}

/// What the operator last observed and did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamJobStatus {
    /// `Ready` (the job runs as specified), `Running` (it processes records), and specific
    /// ones such as `SqlValid`. When False, `reason` and `message` say why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    #[serde(default)]
    pub phase: JobPhase,

    /// The parallelism the job runs with now (the scale subresource's replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<i32>,

    /// Label selector of the job's worker Pods (the scale subresource's selector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// Worker Pods ready of desired, e.g. `2/2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<String>,

    /// Slots registered with the coordinator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<i32>,

    /// The coordinator's id of the running deployment of this job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<CheckpointInfo>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_savepoint: Option<SavepointInfo>,

    /// Savepoints kept, newest first (at most `savepoints.historySize`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub savepoint_history: Vec<SavepointInfo>,

    /// The last `savepointTriggerNonce` acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_savepoint_trigger_nonce: Option<i64>,

    /// The deployment of the job that runs now (or ran last): what the operator started it from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<DeploymentRecord>,

    /// A savepoint the operator asked the coordinator for and has not seen finish yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_savepoint: Option<PendingSavepoint>,

    /// The last failure, as a person should read it (e.g. the SQL error with line and column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,

    /// The spec (as JSON) the operator last deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reconciled_spec: Option<String>,

    /// The last deployed spec (as JSON) that reached `Running`: where a rollback goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_stable_spec: Option<String>,

    /// The spec (as JSON) whose deployment failed and was stopped or rolled back; it is not
    /// deployed again until the spec changes (or `restartNonce` does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_spec: Option<String>,

    /// Container restarts of the current deployment's Pods, as the operator counted them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_restarts: Option<PodRestarts>,
}

/// Container restarts the operator has seen in the current deployment's Pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodRestarts {
    /// The deployment the count belongs to (`deployment.number`).
    pub deployment: i64,
    /// The sum of the Pods' container restart counts at the last look.
    pub counted: i32,
    /// When new restarts were seen (RFC 3339), newest first; only those inside the window
    /// of `spec.restarts` are kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen_at: Vec<String>,
    /// The last crash, as the container reported it (exit code, reason, message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_crash: Option<String>,
}

impl StreamJobSpec {
    /// Key groups of the job.
    pub fn effective_max_parallelism(&self) -> i32 {
        self.max_parallelism.unwrap_or(DEFAULT_MAX_PARALLELISM)
    }

    /// Slots each worker offers.
    pub fn effective_slots_per_worker(&self) -> i32 {
        self.slots_per_worker.unwrap_or(1)
    }

    /// Worker Pods needed: `ceil(parallelism / slotsPerWorker)`.
    pub fn worker_replicas(&self) -> i32 {
        let slots = self.effective_slots_per_worker().max(1);
        (self.parallelism.max(1) + slots - 1) / slots
    }
}

impl StreamJob {
    /// The Ready condition, if any.
    pub fn ready_condition(&self) -> Option<&Condition> {
        self.status.as_ref()?.conditions.iter().find(|c| c.type_ == super::READY)
    }
}
