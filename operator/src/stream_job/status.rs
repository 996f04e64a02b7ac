//! The status phase: computes a StreamJob's next status from the decision of a reconcile and
//! what it observed (pure, unit-tested), and writes it with server-side apply. Only the
//! operator writes status, so it always sends the whole status under one field manager.

use kube::Api;
use kube::api::{Patch, PatchParams};
use millrace_crds::v1alpha1::{
    CheckpointInfo, Condition, ConditionStatus, JobPhase, JobState, PendingSavepoint, READY,
    SavepointTrigger, StreamJob, StreamJobStatus,
};

use super::children::worker_selector;
use super::error::Error;
use super::lifecycle::{
    Decision, DeployReason, Observed, SavepointOutcome, Step, is_failed_spec, spec_to_deploy,
};
use crate::kafka_topic::status::FIELD_MANAGER;

/// Condition: the job processes records.
pub const RUNNING: &str = "Running";
/// Condition: the engine's planner accepts the job's SQL.
pub const SQL_VALID: &str = "SqlValid";
/// Savepoints kept in the history unless `savepoints.historySize` says otherwise.
pub const DEFAULT_HISTORY_SIZE: usize = 10;

/// What the reconcile did and saw, beyond the decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// Worker Pods ready and desired, from the worker Deployment.
    pub workers: Option<(i32, i32)>,
    /// The latest completed checkpoint as the coordinator reported it.
    pub checkpoint: Option<CheckpointInfo>,
    /// The savepoint this reconcile asked for.
    pub triggered: Option<PendingSavepoint>,
}

/// A condition of `type_`, keeping `lastTransitionTime` when the status did not flip.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &str,
) -> Condition {
    let last_transition_time = match previous.iter().find(|c| c.type_ == type_) {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => now.to_owned(),
    };
    Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

fn set(conditions: &mut Vec<Condition>, condition: Condition) {
    conditions.retain(|c| c.type_ != condition.type_);
    conditions.push(condition);
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

pub fn phase_name(phase: JobPhase) -> &'static str {
    match phase {
        JobPhase::Pending => "Pending",
        JobPhase::Deploying => "Deploying",
        JobPhase::Running => "Running",
        JobPhase::Upgrading => "Upgrading",
        JobPhase::Savepointing => "Savepointing",
        JobPhase::Suspended => "Suspended",
        JobPhase::Failed => "Failed",
    }
}

/// The status after a reconcile that failed with `error` (nothing was changed).
pub fn after_error(job: &StreamJob, error: &Error, observed: &Observed, now: &str) -> StreamJobStatus {
    let mut status = job.status.clone().unwrap_or_default();
    let generation = job.metadata.generation;
    let previous = status.conditions.clone();
    status.observed_generation = generation;
    status.last_error = Some(error.to_string());
    if let Error::InvalidSql(_) = error {
        let c = condition(
            &previous,
            SQL_VALID,
            ConditionStatus::False,
            error.reason(),
            error.to_string(),
            generation,
            now,
        );
        set(&mut status.conditions, c);
    }
    if error.is_invalid_spec() && !observed.deployed {
        status.phase = JobPhase::Failed;
        let c = condition(
            &previous,
            RUNNING,
            ConditionStatus::False,
            error.reason(),
            "nothing is deployed".into(),
            generation,
            now,
        );
        set(&mut status.conditions, c);
    }
    let message = if error.is_invalid_spec() && observed.deployed {
        format!("{error}; the job keeps running as last deployed")
    } else {
        error.to_string()
    };
    set(
        &mut status.conditions,
        condition(&previous, READY, ConditionStatus::False, error.reason(), message, generation, now),
    );
    status
}

/// The status after a reconcile that took `decision`.
pub fn after_step(
    job: &StreamJob,
    decision: &Decision,
    observed: &Observed,
    seen: &Seen,
    now: &str,
) -> StreamJobStatus {
    let mut status = job.status.clone().unwrap_or_default();
    let generation = job.metadata.generation;
    let previous = status.conditions.clone();
    let name = job.metadata.name.clone().unwrap_or_default();
    status.observed_generation = generation;
    status.selector = Some(worker_selector(&name));

    match &decision.outcome {
        Some(SavepointOutcome::Completed(info)) => {
            let keep = job
                .spec
                .savepoints
                .as_ref()
                .and_then(|s| s.history_size)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(DEFAULT_HISTORY_SIZE);
            status.savepoint_history.insert(0, info.clone());
            status.savepoint_history.truncate(keep);
            status.last_savepoint = Some(info.clone());
            status.pending_savepoint = None;
        }
        Some(SavepointOutcome::Failed { error, .. }) => {
            status.pending_savepoint = None;
            status.last_error = Some(format!("savepoint failed: {error}"));
        }
        None => {}
    }
    if let Some(pending) = &seen.triggered {
        if pending.trigger == SavepointTrigger::Manual {
            status.observed_savepoint_trigger_nonce = job.spec.savepoint_trigger_nonce;
        }
        status.pending_savepoint = Some(pending.clone());
    }
    if let Some(checkpoint) = &seen.checkpoint {
        status.last_checkpoint = Some(checkpoint.clone());
    }
    if let Some(job_view) = &observed.job {
        status.slots = job_view.slots.and_then(|s| i32::try_from(s).ok());
        status.parallelism = job_view.parallelism.and_then(|p| i32::try_from(p).ok()).or(status.parallelism);
        if job_view.last_error.is_some() {
            status.last_error = job_view.last_error.clone();
        }
    }
    status.workers = seen.workers.map(|(ready, desired)| format!("{ready}/{desired}"));
    if let Some(warning) = &decision.warning {
        status.last_error = Some(warning.clone());
    }

    if decision.restarts.is_some() {
        status.pod_restarts = decision.restarts.clone();
    }
    if let Some(failure) = &decision.failure {
        status.failed_spec = status.last_reconciled_spec.clone();
        status.last_error = Some(failure.clone());
    }

    let running = observed.job.as_ref().is_some_and(|j| j.is_running());
    let workers_ready = seen.workers.is_some_and(|(ready, desired)| ready >= desired);
    status.phase = match &decision.step {
        Step::Deploy { record, reason } => {
            status.deployment = Some(record.clone());
            status.job_id = Some(format!("{name}-{}", record.number));
            status.last_reconciled_spec = serde_json::to_string(&spec_to_deploy(job, *reason)).ok();
            status.pod_restarts = None;
            if *reason != DeployReason::Rollback {
                status.failed_spec = None;
            }
            // The checkpoints of the deployment before belong to its own folder.
            status.last_checkpoint = None;
            status.parallelism = Some(job.spec.parallelism);
            status.slots = None;
            if *reason == DeployReason::Initial {
                status.observed_savepoint_trigger_nonce = job.spec.savepoint_trigger_nonce;
            }
            if *reason == DeployReason::Upgrade { JobPhase::Upgrading } else { JobPhase::Deploying }
        }
        Step::Remove => {
            status.parallelism = None;
            status.workers = None;
            status.slots = None;
            status.pod_restarts = None;
            if decision.failure.is_some() { JobPhase::Failed } else { JobPhase::Suspended }
        }
        _ if status.pending_savepoint.as_ref().is_some_and(|p| p.trigger == SavepointTrigger::Upgrade) => {
            JobPhase::Upgrading
        }
        _ if status.pending_savepoint.is_some() => JobPhase::Savepointing,
        Step::Wait if job.spec.state == JobState::Suspended && !observed.deployed => JobPhase::Suspended,
        Step::Wait if !observed.deployed && is_failed_spec(&status, &job.spec) => JobPhase::Failed,
        _ if observed.job.as_ref().is_some_and(|j| j.has_failed()) => JobPhase::Failed,
        _ if running && workers_ready => JobPhase::Running,
        _ if status.phase == JobPhase::Upgrading => JobPhase::Upgrading,
        _ => JobPhase::Deploying,
    };
    let rolled_back = is_failed_spec(&status, &job.spec);
    if status.phase == JobPhase::Running {
        status.last_stable_spec = status.last_reconciled_spec.clone();
        if !rolled_back
            && decision.warning.is_none()
            && observed.job.as_ref().is_some_and(|j| j.last_error.is_none())
        {
            status.last_error = None;
        }
    }

    let phase = phase_name(status.phase);
    let (ready, reason, message) = match status.phase {
        JobPhase::Running if rolled_back => (
            ConditionStatus::False,
            "RolledBack",
            format!(
                "the spec failed ({}) and was rolled back; running the last stable spec until the spec changes",
                status.last_error.as_deref().unwrap_or("see the DeploymentFailed Event")
            ),
        ),
        JobPhase::Running => (
            ConditionStatus::True,
            "Running",
            format!("running with parallelism {}", status.parallelism.unwrap_or(job.spec.parallelism)),
        ),
        JobPhase::Suspended if job.spec.state == JobState::Suspended => (
            ConditionStatus::True,
            "Suspended",
            "suspended as the spec says; coordinator and workers removed".to_owned(),
        ),
        JobPhase::Failed => (
            ConditionStatus::False,
            "JobFailed",
            status.last_error.clone().unwrap_or_else(|| "the coordinator reports the job failed".into()),
        ),
        _ => (
            ConditionStatus::False,
            phase,
            format!("{phase}; workers ready {}", status.workers.as_deref().unwrap_or("0/0")),
        ),
    };
    set(&mut status.conditions, condition(&previous, READY, ready, reason, message, generation, now));
    let (run, run_reason) =
        if running { (ConditionStatus::True, "Running") } else { (ConditionStatus::False, phase) };
    set(
        &mut status.conditions,
        condition(&previous, RUNNING, run, run_reason, String::new(), generation, now),
    );
    set(
        &mut status.conditions,
        condition(
            &previous,
            SQL_VALID,
            ConditionStatus::True,
            "SqlValid",
            "the planner accepts the SQL".into(),
            generation,
            now,
        ),
    );
    status
}

/// Writes `status` as the object's complete status.
pub async fn write(api: &Api<StreamJob>, name: &str, status: &StreamJobStatus) -> Result<(), kube::Error> {
    let patch = serde_json::json!({
        "apiVersion": "millrace.io/v1alpha1",
        "kind": "StreamJob",
        "status": status,
    });
    api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream_job::control::JobView;
    use millrace_crds::v1alpha1::{DeploymentRecord, SavepointInfo};
    use millrace_sql::SqlError;

    const NOW: &str = "2026-12-02T00:10:00Z";

    fn job(yaml: &str) -> StreamJob {
        serde_saphyr::from_str(yaml).expect("fixture parses")
    }

    fn ready(status: &StreamJobStatus) -> &Condition {
        status.conditions.iter().find(|c| c.type_ == READY).expect("Ready")
    }

    #[test]
    fn invalid_sql_fails_a_new_job_with_line_and_column() {
        let j = job(include_str!("../../tests/fixtures/stream_job/invalid-sql.yaml"));
        let error = Error::InvalidSql(SqlError {
            message: "Expected: an expression".into(),
            line: 6,
            column: 12,
            hint: None,
        });
        let status = after_error(&j, &error, &Observed::default(), NOW);
        assert_eq!(status.phase, JobPhase::Failed);
        let r = ready(&status);
        assert_eq!((r.status, r.reason.as_str()), (ConditionStatus::False, "InvalidSql"));
        assert!(r.message.contains("line 6, column 12"), "{}", r.message);
        let sql = status.conditions.iter().find(|c| c.type_ == SQL_VALID).expect("SqlValid");
        assert_eq!(sql.status, ConditionStatus::False);
        assert_eq!(status.observed_generation, Some(1));
    }

    #[test]
    fn a_deployment_records_the_spec_and_waits_for_the_pods() {
        let j = job(include_str!("../../tests/fixtures/stream_job/seed.yaml"));
        let record = DeploymentRecord {
            number: 1,
            restore_from: None,
            checkpoint_folder: None,
            started_at: NOW.into(),
        };
        let decision = Decision {
            step: Step::Deploy { record: record.clone(), reason: DeployReason::Initial },
            ..Decision::default()
        };
        let status = after_step(&j, &decision, &Observed::default(), &Seen::default(), NOW);
        assert_eq!(status.phase, JobPhase::Deploying);
        assert_eq!(status.deployment, Some(record));
        assert_eq!(status.job_id.as_deref(), Some("filter-1"));
        assert!(status.last_reconciled_spec.as_deref().is_some_and(|s| s.contains("\"parallelism\":3")));
        assert_eq!(status.last_stable_spec, None);
        assert_eq!(status.selector.as_deref(), Some(worker_selector("filter").as_str()));
        assert_eq!(ready(&status).status, ConditionStatus::False);
    }

    #[test]
    fn running_with_all_workers_ready_is_ready_and_stable() {
        let j = job(include_str!("../../tests/fixtures/stream_job/running.yaml"));
        let observed = Observed {
            deployed: true,
            job: Some(JobView {
                phase: "RUNNING".into(),
                parallelism: Some(3),
                slots: Some(4),
                ..JobView::default()
            }),
            ..Observed::default()
        };
        let seen = Seen { workers: Some((2, 2)), ..Seen::default() };
        let decision = Decision::default();
        let status = after_step(&j, &decision, &observed, &seen, NOW);
        assert_eq!(status.phase, JobPhase::Running);
        assert_eq!(status.workers.as_deref(), Some("2/2"));
        assert_eq!(status.slots, Some(4));
        assert_eq!(status.last_stable_spec, status.last_reconciled_spec);
        let r = ready(&status);
        assert_eq!(
            (r.status, r.last_transition_time.as_str()),
            (ConditionStatus::True, "2026-12-02T00:01:00Z")
        );

        let one_down = Seen { workers: Some((1, 2)), ..Seen::default() };
        assert_eq!(after_step(&j, &decision, &observed, &one_down, NOW).phase, JobPhase::Deploying);
    }

    #[test]
    fn completed_savepoints_are_kept_newest_first_up_to_the_history_size() {
        let mut j = job(include_str!("../../tests/fixtures/stream_job/running.yaml"));
        j.spec.savepoints =
            Some(millrace_crds::v1alpha1::SavepointPolicy { history_size: Some(2), ..Default::default() });
        let info = |n: i32| SavepointInfo {
            location: format!("file:///sp/sp-{n}"),
            trigger: SavepointTrigger::Periodic,
            completed_at: NOW.into(),
            parallelism: 3,
        };
        let status = j.status.get_or_insert_default();
        status.savepoint_history = vec![info(2), info(1)];
        status.pending_savepoint = Some(PendingSavepoint {
            request_id: 3,
            trigger: SavepointTrigger::Periodic,
            stop: false,
            requested_at: NOW.into(),
        });
        let decision = Decision {
            step: Step::Wait,
            outcome: Some(SavepointOutcome::Completed(info(3))),
            ..Decision::default()
        };
        let status = after_step(&j, &decision, &Observed::default(), &Seen::default(), NOW);
        let locations: Vec<&str> = status.savepoint_history.iter().map(|s| s.location.as_str()).collect();
        assert_eq!(locations, ["file:///sp/sp-3", "file:///sp/sp-2"]);
        assert_eq!(status.last_savepoint, Some(info(3)));
        assert_eq!(status.pending_savepoint, None);
    }

    #[test]
    fn a_triggered_savepoint_is_pending_and_marks_the_nonce_seen() {
        let mut j = job(include_str!("../../tests/fixtures/stream_job/running.yaml"));
        j.spec.savepoint_trigger_nonce = Some(2);
        let pending = PendingSavepoint {
            request_id: 1,
            trigger: SavepointTrigger::Manual,
            stop: false,
            requested_at: NOW.into(),
        };
        let seen = Seen { triggered: Some(pending.clone()), ..Seen::default() };
        let decision = Decision {
            step: Step::TriggerSavepoint { trigger: SavepointTrigger::Manual, stop: false },
            ..Decision::default()
        };
        let status =
            after_step(&j, &decision, &Observed { deployed: true, ..Observed::default() }, &seen, NOW);
        assert_eq!(status.phase, JobPhase::Savepointing);
        assert_eq!(status.observed_savepoint_trigger_nonce, Some(2));
        assert_eq!(status.pending_savepoint, Some(pending));
    }
}
