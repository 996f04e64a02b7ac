//! What a job is, without a database or a cluster: the settings of a job version and their
//! checks (each error names its field), the StreamJob manifest built from a job's desired
//! state, and how an observed StreamJob spec differs from it (drift).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::kubernetes::{MANAGED_BY, TENANT_LABEL};
use millrace_crds::v1alpha1::{DEFAULT_MAX_PARALLELISM, StreamJobSpec};

/// Label carrying the catalog's job version on the StreamJob.
pub const JOB_VERSION_LABEL: &str = "millrace.io/job-version";
const MAX_SLOTS_PER_WORKER: i32 = 256;
const MAX_KEY_GROUPS: i32 = 32_768;

/// How a change reaches a running job (the StreamJob's `upgradeMode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpgradeMode {
    /// Stop without state and start fresh.
    Stateless,
    /// Savepoint, stop, redeploy, restore from the savepoint.
    #[default]
    Savepoint,
    /// Stop, redeploy, restore from the latest checkpoint.
    LastState,
}

/// Delivery guarantee of the job's Kafka sinks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    #[default]
    ExactlyOnce,
    AtLeastOnce,
}

/// Whether the job should run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    #[default]
    Running,
    /// A savepoint is taken and the job's Pods are removed; resume restores from it.
    Suspended,
}

impl DesiredState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Suspended => "suspended",
        }
    }

    pub fn parse(text: &str) -> Self {
        if text == "suspended" { Self::Suspended } else { Self::Running }
    }
}

/// What a job version runs with, besides its SQL. Stored as JSON in `job_versions.settings`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobSettings {
    /// Parallel instances (slots) the job uses.
    pub parallelism: i32,
    /// Key groups, the upper bound of parallelism for the job's lifetime. Immutable.
    pub max_parallelism: i32,
    /// Slots per worker Pod.
    pub slots_per_worker: i32,
    pub upgrade_mode: UpgradeMode,
    /// Time between checkpoints (ms); the operator's default (10 s) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_interval_ms: Option<i64>,
    pub delivery: Delivery,
    /// Periodic savepoints (ms); none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoint_interval_ms: Option<i64>,
    /// Savepoints kept in the job's status history (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoint_history_size: Option<i32>,
    /// Where undecodable records go, for source tables that name no `dlq_topic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    /// Start even when savepoint state maps to no operator of the new plan.
    #[serde(default)]
    pub allow_non_restored_state: bool,
    /// The first deployment starts from this savepoint (one of the tenant's, see
    /// `GET /v1/jobs/{job}/savepoints`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_savepoint: Option<String>,
}

impl JobSettings {
    /// Every setting in range; `prefix` is prepended to the field names in errors.
    pub fn validate(&self, tenant: &str) -> Result<(), ApiError> {
        if !(1..=MAX_KEY_GROUPS).contains(&self.max_parallelism) {
            return Err(ApiError::validation(
                "maxParallelism",
                format!("must be between 1 and {MAX_KEY_GROUPS}"),
            ));
        }
        if !(1..=self.max_parallelism).contains(&self.parallelism) {
            return Err(ApiError::validation(
                "parallelism",
                format!(
                    "must be between 1 and maxParallelism ({}): state is split into that many key groups",
                    self.max_parallelism
                ),
            ));
        }
        if !(1..=MAX_SLOTS_PER_WORKER).contains(&self.slots_per_worker) {
            return Err(ApiError::validation(
                "slotsPerWorker",
                format!("must be between 1 and {MAX_SLOTS_PER_WORKER}"),
            ));
        }
        if self.checkpoint_interval_ms.is_some_and(|ms| !(100..=86_400_000).contains(&ms)) {
            return Err(ApiError::validation("checkpointIntervalMs", "must be between 100 and 86400000"));
        }
        if self.savepoint_interval_ms.is_some_and(|ms| !(1000..=31_536_000_000).contains(&ms)) {
            return Err(ApiError::validation("savepointIntervalMs", "must be between 1000 and 31536000000"));
        }
        if self.savepoint_history_size.is_some_and(|n| !(1..=1000).contains(&n)) {
            return Err(ApiError::validation("savepointHistorySize", "must be between 1 and 1000"));
        }
        if let Some(topic) = &self.dead_letter_topic {
            let valid = (1..=249).contains(&topic.len())
                && topic.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !valid {
                return Err(ApiError::validation(
                    "deadLetterTopic",
                    "a Kafka topic name: 1-249 of letters, digits, '.', '_' and '-'",
                ));
            }
            if !topic.starts_with(&format!("{tenant}.")) {
                return Err(ApiError::validation(
                    "deadLetterTopic",
                    format!("must be one of the tenant's topics ('{tenant}.<name>')"),
                ));
            }
        }
        Ok(())
    }
}

/// Everything the StreamJob of a job is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredJob {
    pub name: String,
    pub job_version: i32,
    pub sql: String,
    pub settings: JobSettings,
    pub state: DesiredState,
    pub savepoint_nonce: i64,
    /// `<base>/<tenant>/<job>` when the installation names a checkpoint storage base.
    pub checkpoint_storage: Option<String>,
    /// `<tenant>.<job>`: the job's exactly-once transactions carry the tenant's prefix, like
    /// every Kafka identity of the tenant.
    pub transactional_id_prefix: String,
}

/// Where a job's checkpoints go: under the installation's base, per tenant and job, so that
/// no tenant can name another's storage.
pub fn checkpoint_storage_for(base: Option<&str>, tenant: &str, job: &str) -> Option<String> {
    base.map(|base| format!("{}/{tenant}/{job}", base.trim_end_matches('/')))
}

fn spec_of(desired: &DesiredJob) -> Value {
    let s = &desired.settings;
    let mut spec = json!({
        "sql": desired.sql,
        "parallelism": s.parallelism,
        "maxParallelism": s.max_parallelism,
        "slotsPerWorker": s.slots_per_worker,
        "state": desired.state.as_str(),
        "upgradeMode": s.upgrade_mode,
        "allowNonRestoredState": s.allow_non_restored_state,
    });
    // Absent until the first trigger: the operator takes a savepoint whenever the nonce
    // differs from the last one it acted on, and at creation it has acted on none.
    if desired.savepoint_nonce > 0 {
        spec["savepointTriggerNonce"] = json!(desired.savepoint_nonce);
    }
    let mut checkpointing =
        json!({ "delivery": s.delivery, "transactionalIdPrefix": desired.transactional_id_prefix });
    if let Some(ms) = s.checkpoint_interval_ms {
        checkpointing["intervalMs"] = json!(ms);
    }
    if let Some(storage) = &desired.checkpoint_storage {
        checkpointing["storage"] = json!(storage);
    }
    spec["checkpointing"] = checkpointing;
    let mut savepoints = json!({});
    if let Some(ms) = s.savepoint_interval_ms {
        savepoints["intervalMs"] = json!(ms);
    }
    if let Some(size) = s.savepoint_history_size {
        savepoints["historySize"] = json!(size);
    }
    spec["savepoints"] = savepoints;
    if let Some(topic) = &s.dead_letter_topic {
        spec["deadLetter"] = json!({ "topic": topic });
    }
    if let Some(savepoint) = &s.initial_savepoint {
        spec["initialSavepoint"] = json!(savepoint);
    }
    spec
}

/// The StreamJob the api-server applies for `desired` in the tenant's namespace.
pub fn stream_job_manifest(tenant: &str, namespace: &str, desired: &DesiredJob) -> Value {
    json!({
        "apiVersion": "millrace.io/v1alpha1",
        "kind": "StreamJob",
        "metadata": {
            "name": desired.name,
            "namespace": namespace,
            "labels": {
                MANAGED_BY.0: MANAGED_BY.1,
                TENANT_LABEL: tenant,
                JOB_VERSION_LABEL: desired.job_version.to_string(),
            },
        },
        "spec": spec_of(desired),
    })
}

/// How an observed spec differs from the desired one, in words; `None` when it does not.
pub fn spec_drift(desired: &DesiredJob, observed: &StreamJobSpec) -> Option<String> {
    let want: StreamJobSpec = match serde_json::from_value(spec_of(desired)) {
        Ok(spec) => spec,
        Err(err) => return Some(format!("the desired spec does not parse: {err}")),
    };
    let mut differences = Vec::new();
    if observed.sql != want.sql {
        differences.push("sql".to_owned());
    }
    if observed.parallelism != want.parallelism {
        differences.push(format!("parallelism {} (want {})", observed.parallelism, want.parallelism));
    }
    let max = |spec: &StreamJobSpec| spec.max_parallelism.unwrap_or(DEFAULT_MAX_PARALLELISM);
    if max(observed) != max(&want) {
        differences.push(format!("maxParallelism {} (want {})", max(observed), max(&want)));
    }
    if observed.state != want.state {
        differences.push(format!("state {:?} (want {:?})", observed.state, want.state));
    }
    let rest = |spec: &StreamJobSpec| {
        (
            spec.slots_per_worker,
            spec.upgrade_mode,
            spec.checkpointing.clone(),
            spec.savepoints.clone(),
            spec.savepoint_trigger_nonce,
            spec.dead_letter.clone(),
            spec.allow_non_restored_state,
            spec.initial_savepoint.clone(),
            spec.image.clone(),
            spec.kafka.clone(),
            spec.pod_overrides.clone(),
        )
    };
    if rest(observed) != rest(&want) {
        differences
            .push("settings (slots, upgrade mode, checkpointing, savepoints, image or overrides)".into());
    }
    (!differences.is_empty()).then(|| differences.join(", "))
}

/// Fixtures shared by the jobs module's unit tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub(crate) fn settings() -> JobSettings {
        JobSettings {
            parallelism: 2,
            max_parallelism: 128,
            slots_per_worker: 2,
            upgrade_mode: UpgradeMode::Savepoint,
            checkpoint_interval_ms: Some(5000),
            delivery: Delivery::ExactlyOnce,
            savepoint_interval_ms: None,
            savepoint_history_size: Some(5),
            dead_letter_topic: Some("acme.dlq".into()),
            allow_non_restored_state: false,
            initial_savepoint: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use millrace_crds::v1alpha1::{JobState, StreamJob};

    use super::tests_support::settings;
    use super::*;

    fn desired() -> DesiredJob {
        DesiredJob {
            name: "avg".into(),
            job_version: 3,
            sql: "INSERT INTO o SELECT * FROM i".into(),
            settings: settings(),
            state: DesiredState::Suspended,
            savepoint_nonce: 4,
            checkpoint_storage: checkpoint_storage_for(Some("s3://ckpt/"), "acme", "avg"),
            transactional_id_prefix: "acme.avg".into(),
        }
    }

    #[test]
    fn the_manifest_is_a_stream_job_with_the_settings_and_the_tenant_storage() {
        let manifest = stream_job_manifest("acme", "tenant-acme", &desired());
        let job: StreamJob = serde_json::from_value(manifest.clone()).expect("a StreamJob");
        assert_eq!(job.spec.parallelism, 2);
        assert_eq!(job.spec.state, JobState::Suspended);
        assert_eq!(job.spec.savepoint_trigger_nonce, Some(4));
        assert_eq!(
            job.spec.checkpointing.as_ref().and_then(|c| c.storage.as_deref()),
            Some("s3://ckpt/acme/avg")
        );
        assert_eq!(
            job.spec.checkpointing.as_ref().and_then(|c| c.transactional_id_prefix.as_deref()),
            Some("acme.avg"),
            "exactly-once transactions carry the tenant's prefix"
        );
        assert_eq!(manifest["metadata"]["labels"][JOB_VERSION_LABEL], "3");
        assert_eq!(spec_drift(&desired(), &job.spec), None);
    }

    #[test]
    fn drift_names_what_differs() {
        let manifest = stream_job_manifest("acme", "tenant-acme", &desired());
        let mut job: StreamJob = serde_json::from_value(manifest).expect("a StreamJob");
        job.spec.parallelism = 7;
        job.spec.image = Some("evil".into());
        let drift = spec_drift(&desired(), &job.spec).expect("drift");
        assert!(drift.contains("parallelism 7 (want 2)") && drift.contains("settings"), "{drift}");
    }

    #[test]
    fn settings_out_of_range_name_their_field() {
        let field = |s: JobSettings| s.validate("acme").expect_err("invalid").problem().field;
        let mut s = settings();
        s.parallelism = 200;
        assert_eq!(field(s).as_deref(), Some("parallelism"));
        let mut s = settings();
        s.slots_per_worker = 0;
        assert_eq!(field(s).as_deref(), Some("slotsPerWorker"));
        let mut s = settings();
        s.dead_letter_topic = Some("other.dlq".into());
        assert_eq!(field(s).as_deref(), Some("deadLetterTopic"));
        assert!(settings().validate("acme").is_ok());
    }
}
