//! The lifecycle phase (pure): from the StreamJob (spec and last status) and what the
//! reconcile observed (the two Deployments, the coordinator's control API), decides the one
//! next step: deploy, trigger a savepoint, remove the job's Pods, or leave things as they are.
//! The status phase then describes where that leaves the job.
//!
//! The rules, as the Flink Kubernetes Operator has them:
//! - a spec change (the "deployment fingerprint": everything but the savepoint trigger, the
//!   desired state, the upgrade mode and the savepoint schedule) reaches a running job per `upgradeMode`:
//!   `savepoint` takes a savepoint with stop, then redeploys restoring from it; `last-state`
//!   redeploys at once restoring from the latest checkpoint; `stateless` redeploys fresh;
//! - a change of `parallelism` alone (`kubectl scale`) always goes through a savepoint unless
//!   the mode is `stateless`;
//! - `state: suspended` takes a savepoint with stop, then removes coordinator and workers;
//!   `running` again restores from that savepoint;
//! - `savepointTriggerNonce` and `savepoints.intervalMs` take savepoints without stopping;
//! - a savepoint that cannot be taken (no storage, coordinator not running) falls back to the
//!   latest checkpoint, and the decision says so;
//! - a deployment whose Pods crash more than `spec.restarts` allows is stopped (Failed); with
//!   `spec.rollback.enabled`, an upgrade that fails that way, is reported FAILED by its
//!   coordinator or is not Running within the readiness timeout is rolled back to
//!   `status.lastStableSpec`; either way the failed spec is not deployed again until it changes.

use k8s_openapi::jiff::Timestamp;
use millrace_crds::v1alpha1::{
    DeploymentRecord, JobState, PendingSavepoint, PodRestarts, RollbackPolicy, SavepointInfo,
    SavepointTrigger, StreamJob, StreamJobSpec, StreamJobStatus, UpgradeMode,
};
use serde_json::Value;

use super::control::{JobView, SavepointRequest};
use super::restarts::{self, PodHealth};

/// A savepoint request that has not finished after this long is given up (the coordinator
/// lost it, e.g. because it restarted without the operator seeing the 404).
pub const SAVEPOINT_TIMEOUT_SECONDS: i64 = 600;

/// What the reconcile saw before deciding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// The coordinator Deployment exists.
    pub deployed: bool,
    /// The coordinator's `GET /v1/job`, if it answered.
    pub job: Option<JobView>,
    /// The pending savepoint request as the coordinator reports it now.
    pub pending: PendingLookup,
    /// The job has checkpoint storage (savepoints are possible).
    pub has_storage: bool,
    /// Restarts of the current deployment's Pods (none when nothing is deployed).
    pub pods: Option<PodHealth>,
}

/// What became of the request in `status.pendingSavepoint`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PendingLookup {
    /// Nothing pending, or the coordinator did not answer.
    #[default]
    Unknown,
    /// The coordinator no longer knows the request.
    Lost,
    Found(SavepointRequest),
}

/// The one step the reconcile takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Step {
    /// Apply the children for this (new) deployment.
    Deploy { record: DeploymentRecord, reason: DeployReason },
    /// Ask the coordinator for a savepoint.
    TriggerSavepoint { trigger: SavepointTrigger, stop: bool },
    /// Delete the coordinator and worker Deployments (suspend).
    Remove,
    /// Nothing to change: wait for the job or for a savepoint.
    #[default]
    Wait,
}

/// Why a deployment starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployReason {
    /// The first deployment of the job.
    Initial,
    /// A spec change (upgrade, rescale, restart nonce).
    Upgrade,
    /// `state` went back to running, or the job's Deployments were gone.
    Resume,
    /// The upgraded spec failed: back to `status.lastStableSpec`.
    Rollback,
}

impl DeployReason {
    pub fn event_reason(self) -> &'static str {
        match self {
            DeployReason::Initial => "Deployed",
            DeployReason::Upgrade => "Upgraded",
            DeployReason::Resume => "Resumed",
            DeployReason::Rollback => "RolledBack",
        }
    }
}

/// What happened to the pending savepoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SavepointOutcome {
    Completed(SavepointInfo),
    Failed { trigger: SavepointTrigger, error: String },
}

/// The decision of one reconcile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub step: Step,
    /// The pending savepoint finished (either way) during this reconcile.
    pub outcome: Option<SavepointOutcome>,
    /// A note for a person: why a fallback was taken. Becomes a Warning Event.
    pub warning: Option<String>,
    /// The current deployment failed (crash loop, FAILED, readiness timeout), and why: the
    /// status records its spec as `failedSpec`.
    pub failure: Option<String>,
    /// The Pods' restart count after this look.
    pub restarts: Option<PodRestarts>,
}

/// The spec without the fields that never need a redeploy, as JSON.
pub fn fingerprint(spec: &StreamJobSpec) -> Value {
    let mut spec = spec.clone();
    spec.savepoint_trigger_nonce = None;
    spec.state = JobState::Running;
    spec.savepoints = None;
    spec.upgrade_mode = UpgradeMode::default();
    spec.rollback = None;
    serde_json::to_value(&spec).unwrap_or(Value::Null)
}

/// The spec the running deployment was started from, if the status records one.
pub fn deployed_spec(status: &StreamJobStatus) -> Option<StreamJobSpec> {
    serde_json::from_str(status.last_reconciled_spec.as_deref()?).ok()
}

/// The spec a rollback returns to, if the status records one.
pub fn stable_spec(status: &StreamJobStatus) -> Option<StreamJobSpec> {
    serde_json::from_str(status.last_stable_spec.as_deref()?).ok()
}

/// The spec a deployment for `reason` runs: the job's, or for a rollback the last stable one.
pub fn spec_to_deploy(job: &StreamJob, reason: DeployReason) -> StreamJobSpec {
    match reason {
        DeployReason::Rollback => {
            job.status.as_ref().and_then(stable_spec).unwrap_or_else(|| job.spec.clone())
        }
        _ => job.spec.clone(),
    }
}

/// The spec is one whose deployment failed (and has not changed since).
pub fn is_failed_spec(status: &StreamJobStatus, spec: &StreamJobSpec) -> bool {
    status
        .failed_spec
        .as_deref()
        .and_then(|s| serde_json::from_str::<StreamJobSpec>(s).ok())
        .is_some_and(|failed| fingerprint(&failed) == fingerprint(spec))
}

/// The running deployment is an upgrade that has not reached Running yet.
fn upgrade_unproven(status: &StreamJobStatus) -> bool {
    status.last_stable_spec.is_some() && status.last_stable_spec != status.last_reconciled_spec
}

/// Why the current deployment counts as failed, if it does (see the module doc).
fn deployment_failure(
    job: &StreamJob,
    status: &StreamJobStatus,
    observed: &Observed,
    restarts: Option<&PodRestarts>,
    now: Timestamp,
) -> Option<String> {
    if let Some(reason) = restarts.and_then(|r| restarts::crash_loop(r, &job.spec)) {
        return Some(reason);
    }
    let rollback = job.spec.rollback.as_ref().filter(|r| r.enabled)?;
    if !upgrade_unproven(status) {
        return None;
    }
    if let Some(view) = observed.job.as_ref().filter(|j| j.has_failed()) {
        return Some(
            view.last_error.clone().unwrap_or_else(|| "the coordinator reports the job failed".into()),
        );
    }
    let timeout_ms = rollback.readiness_timeout_ms.unwrap_or(RollbackPolicy::DEFAULT_READINESS_TIMEOUT_MS);
    let started = status.deployment.as_ref().and_then(|d| parse_time(&d.started_at))?;
    let running = observed.job.as_ref().is_some_and(JobView::is_running);
    (!running && now.as_millisecond() - started.as_millisecond() > timeout_ms).then(|| {
        format!("not Running {}s after the upgrade (spec.rollback.readinessTimeoutMs)", timeout_ms / 1000)
    })
}

/// Where a rollback starts: the savepoint the failed upgrade started from, else (a
/// `last-state` upgrade) where the deployments left off.
fn rollback_record(status: &StreamJobStatus, now: &str) -> DeploymentRecord {
    match status.deployment.as_ref().and_then(|d| d.restore_from.clone()) {
        Some(savepoint) => fresh_record(status, Some(savepoint), now),
        None => last_state_record(status, now),
    }
}

fn parse_time(text: &str) -> Option<Timestamp> {
    text.parse().ok()
}

/// The next deployment with a checkpoint folder of its own, starting from `restore_from`.
fn fresh_record(status: &StreamJobStatus, restore_from: Option<String>, now: &str) -> DeploymentRecord {
    DeploymentRecord {
        number: status.deployment.as_ref().map_or(1, |d| d.number + 1),
        restore_from,
        checkpoint_folder: None,
        started_at: now.to_owned(),
    }
}

/// The next deployment continuing the checkpoint folder of the one before: the coordinator
/// restores its latest checkpoint, else the savepoint the one before started from.
fn last_state_record(status: &StreamJobStatus, now: &str) -> DeploymentRecord {
    match &status.deployment {
        Some(previous) => DeploymentRecord {
            number: previous.number + 1,
            restore_from: previous.restore_from.clone(),
            checkpoint_folder: Some(previous.checkpoint_folder.unwrap_or(previous.number)),
            started_at: now.to_owned(),
        },
        None => fresh_record(status, None, now),
    }
}

/// Resolves the pending savepoint, if any, into an outcome.
fn settle_pending(
    pending: &PendingSavepoint,
    observed: &Observed,
    parallelism: i32,
    now: Timestamp,
) -> Option<SavepointOutcome> {
    let failed = |error: String| Some(SavepointOutcome::Failed { trigger: pending.trigger, error });
    match &observed.pending {
        PendingLookup::Found(request) => match request.status.as_str() {
            "COMPLETED" => match &request.location {
                Some(location) => Some(SavepointOutcome::Completed(SavepointInfo {
                    location: location.clone(),
                    trigger: pending.trigger,
                    completed_at: now_text(now),
                    parallelism,
                })),
                None => failed("the coordinator reported the savepoint complete without a location".into()),
            },
            "FAILED" => {
                failed(request.error.clone().unwrap_or_else(|| "the coordinator gave no reason".into()))
            }
            _ => None,
        },
        PendingLookup::Lost => failed(format!(
            "the coordinator no longer knows savepoint request {} (it restarted)",
            pending.request_id
        )),
        PendingLookup::Unknown => {
            let requested = parse_time(&pending.requested_at)?;
            (now.as_second() - requested.as_second() > SAVEPOINT_TIMEOUT_SECONDS).then(|| {
                SavepointOutcome::Failed {
                    trigger: pending.trigger,
                    error: format!("no answer about the savepoint for {SAVEPOINT_TIMEOUT_SECONDS}s"),
                }
            })
        }
    }
}

/// Seconds-precision RFC 3339.
pub fn now_text(now: Timestamp) -> String {
    Timestamp::from_second(now.as_second()).unwrap_or(now).to_string()
}

/// How a job that is not running starts again: from the savepoint that suspended it, else
/// (unless stateless) where it left off, else fresh; the very first start from the initial
/// savepoint.
fn resume_record(job: &StreamJob, now: &str) -> DeploymentRecord {
    let status = job.status.clone().unwrap_or_default();
    if status.deployment.is_none() {
        return fresh_record(&status, job.spec.initial_savepoint.clone(), now);
    }
    if let Some(savepoint) = &status.last_savepoint
        && savepoint.trigger == SavepointTrigger::Suspend
        && status.phase == millrace_crds::v1alpha1::JobPhase::Suspended
    {
        return fresh_record(&status, Some(savepoint.location.clone()), now);
    }
    if job.spec.upgrade_mode == UpgradeMode::Stateless {
        return fresh_record(&status, None, now);
    }
    last_state_record(&status, now)
}

/// Decides the next step for `job`.
pub fn decide(job: &StreamJob, observed: &Observed, now: Timestamp) -> Decision {
    let status = job.status.clone().unwrap_or_default();
    let now_str = now_text(now);
    let running = observed.job.as_ref().is_some_and(JobView::is_running);
    let deployed_spec = deployed_spec(&status);
    let running_parallelism = observed
        .job
        .as_ref()
        .and_then(|j| j.parallelism)
        .and_then(|p| i32::try_from(p).ok())
        .or(deployed_spec.as_ref().map(|s| s.parallelism))
        .unwrap_or(job.spec.parallelism);
    let restarts = match (&observed.pods, &status.deployment) {
        (Some(health), Some(record)) => {
            Some(restarts::tally(status.pod_restarts.as_ref(), record.number, health, &job.spec, now))
        }
        _ => None,
    };
    let decision = |step, outcome, warning| Decision {
        step,
        outcome,
        warning,
        failure: None,
        restarts: restarts.clone(),
    };

    let outcome =
        status.pending_savepoint.as_ref().and_then(|p| settle_pending(p, observed, running_parallelism, now));
    if status.pending_savepoint.is_some() && outcome.is_none() {
        return decision(Step::Wait, None, None);
    }
    match &outcome {
        Some(SavepointOutcome::Completed(info)) if info.trigger == SavepointTrigger::Upgrade => {
            let step = Step::Deploy {
                record: fresh_record(&status, Some(info.location.clone()), &now_str),
                reason: DeployReason::Upgrade,
            };
            return decision(step, outcome, None);
        }
        Some(SavepointOutcome::Completed(info)) if info.trigger == SavepointTrigger::Suspend => {
            return decision(Step::Remove, outcome, None);
        }
        Some(SavepointOutcome::Failed { trigger: SavepointTrigger::Upgrade, error }) => {
            let warning =
                format!("the upgrade savepoint failed ({error}); redeploying from the latest checkpoint");
            let record = last_state_record(&status, &now_str);
            return decision(Step::Deploy { record, reason: DeployReason::Upgrade }, outcome, Some(warning));
        }
        Some(SavepointOutcome::Failed { trigger: SavepointTrigger::Suspend, error }) => {
            let warning = format!(
                "the suspend savepoint failed ({error}); suspending anyway, resume restores the latest checkpoint"
            );
            return decision(Step::Remove, outcome, Some(warning));
        }
        _ => {}
    }

    let savepoints_possible = observed.has_storage && running;
    if job.spec.state == JobState::Suspended {
        if !observed.deployed {
            return decision(Step::Wait, outcome, None);
        }
        if savepoints_possible && job.spec.upgrade_mode != UpgradeMode::Stateless {
            return decision(
                Step::TriggerSavepoint { trigger: SavepointTrigger::Suspend, stop: true },
                outcome,
                None,
            );
        }
        let warning = (job.spec.upgrade_mode != UpgradeMode::Stateless).then(|| {
            "suspending without a savepoint: the job has no checkpoint storage or its coordinator is not running"
                .to_owned()
        });
        return decision(Step::Remove, outcome, warning);
    }

    let failed_spec = is_failed_spec(&status, &job.spec);
    if observed.deployed
        && !failed_spec
        && let Some(failure) = deployment_failure(job, &status, observed, restarts.as_ref(), now)
    {
        let rollback = job.spec.rollback.as_ref().is_some_and(|r| r.enabled)
            && upgrade_unproven(&status)
            && stable_spec(&status).is_some();
        let (step, note) = if rollback {
            let record = rollback_record(&status, &now_str);
            (Step::Deploy { record, reason: DeployReason::Rollback }, "rolling back to the last stable spec")
        } else {
            (Step::Remove, "stopping the job")
        };
        let warning = format!("{failure}; {note}");
        return Decision { failure: Some(failure), ..decision(step, outcome, Some(warning)) };
    }
    if failed_spec && (!observed.deployed || status.deployment.is_none()) {
        // Stopped after a failure: only a spec change (or restartNonce) starts it again.
        return decision(Step::Wait, outcome, None);
    }

    if !observed.deployed || status.deployment.is_none() || deployed_spec.is_none() {
        let reason = if status.deployment.is_none() { DeployReason::Initial } else { DeployReason::Resume };
        let record = resume_record(job, &now_str);
        return decision(Step::Deploy { record, reason }, outcome, None);
    }
    let deployed = deployed_spec.unwrap_or_else(|| job.spec.clone());

    if fingerprint(&deployed) != fingerprint(&job.spec) && !failed_spec {
        let rescale_only = {
            let mut same = deployed.clone();
            same.parallelism = job.spec.parallelism;
            fingerprint(&same) == fingerprint(&job.spec)
        };
        let mode = match job.spec.upgrade_mode {
            UpgradeMode::LastState if rescale_only => UpgradeMode::Savepoint,
            mode => mode,
        };
        let upgrade = |record| Step::Deploy { record, reason: DeployReason::Upgrade };
        return match mode {
            UpgradeMode::Stateless => decision(upgrade(fresh_record(&status, None, &now_str)), outcome, None),
            UpgradeMode::LastState => decision(upgrade(last_state_record(&status, &now_str)), outcome, None),
            UpgradeMode::Savepoint if savepoints_possible => decision(
                Step::TriggerSavepoint { trigger: SavepointTrigger::Upgrade, stop: true },
                outcome,
                None,
            ),
            UpgradeMode::Savepoint => {
                let warning = "upgrading without a savepoint: the job has no checkpoint storage or its \
                               coordinator is not running; continuing from its latest checkpoint instead"
                    .to_owned();
                decision(upgrade(last_state_record(&status, &now_str)), outcome, Some(warning))
            }
        };
    }

    if job.spec.savepoint_trigger_nonce.is_some()
        && job.spec.savepoint_trigger_nonce != status.observed_savepoint_trigger_nonce
        && savepoints_possible
    {
        return decision(
            Step::TriggerSavepoint { trigger: SavepointTrigger::Manual, stop: false },
            outcome,
            None,
        );
    }
    if savepoints_possible && periodic_due(job, &status, now) {
        return decision(
            Step::TriggerSavepoint { trigger: SavepointTrigger::Periodic, stop: false },
            outcome,
            None,
        );
    }
    decision(Step::Wait, outcome, None)
}

/// A periodic savepoint is due when `savepoints.intervalMs` has passed since the last one
/// (or since the deployment started).
fn periodic_due(job: &StreamJob, status: &StreamJobStatus, now: Timestamp) -> bool {
    let Some(interval) = job.spec.savepoints.as_ref().and_then(|s| s.interval_ms) else { return false };
    let last = status
        .savepoint_history
        .iter()
        .find(|s| s.trigger == SavepointTrigger::Periodic)
        .map(|s| s.completed_at.as_str())
        .into_iter()
        .chain(status.deployment.as_ref().map(|d| d.started_at.as_str()))
        .filter_map(parse_time)
        .max();
    last.is_none_or(|last| (now.as_millisecond() - last.as_millisecond()) >= interval)
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
