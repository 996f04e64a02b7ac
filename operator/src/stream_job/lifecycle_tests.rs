//! Unit tests of [`super::decide`] from YAML fixtures (operator/tests/fixtures/stream_job/).

use super::*;

fn job(yaml: &str) -> StreamJob {
    serde_saphyr::from_str(yaml).expect("fixture parses")
}

fn running_job() -> StreamJob {
    job(include_str!("../../tests/fixtures/stream_job/running.yaml"))
}

fn now() -> Timestamp {
    "2026-12-02T00:10:00Z".parse().expect("timestamp")
}

fn running_view() -> JobView {
    JobView { phase: "RUNNING".into(), parallelism: Some(3), ..JobView::default() }
}

fn observed_running() -> Observed {
    Observed { deployed: true, job: Some(running_view()), has_storage: true, ..Observed::default() }
}

fn with_pending(mut job: StreamJob, trigger: SavepointTrigger, stop: bool) -> StreamJob {
    job.status.get_or_insert_default().pending_savepoint =
        Some(PendingSavepoint { request_id: 2, trigger, stop, requested_at: "2026-12-02T00:09:30Z".into() });
    job
}

fn completed(location: &str) -> PendingLookup {
    PendingLookup::Found(SavepointRequest {
        id: 2,
        status: "COMPLETED".into(),
        location: Some(location.into()),
        error: None,
    })
}

#[test]
fn a_new_job_is_deployed_from_its_initial_savepoint() {
    let mut j = job(include_str!("../../tests/fixtures/stream_job/seed.yaml"));
    j.spec.initial_savepoint = Some("file:///sp/sp-1".into());
    let d = decide(&j, &Observed::default(), now());
    let Step::Deploy { record, reason } = d.step else { panic!("expected a deployment, got {d:?}") };
    assert_eq!(reason, DeployReason::Initial);
    assert_eq!(record.number, 1);
    assert_eq!(record.restore_from.as_deref(), Some("file:///sp/sp-1"));
    assert_eq!(record.started_at, "2026-12-02T00:10:00Z");
}

#[test]
fn a_steady_job_is_left_alone() {
    let d = decide(&running_job(), &observed_running(), now());
    assert_eq!(d.step, Step::Wait);
    assert_eq!(d.outcome, None);
}

#[test]
fn a_spec_change_in_savepoint_mode_stops_with_a_savepoint_then_redeploys_from_it() {
    let mut j = running_job();
    j.spec.sql = "INSERT INTO output SELECT v FROM input WHERE v > 60".into();
    let d = decide(&j, &observed_running(), now());
    assert_eq!(d.step, Step::TriggerSavepoint { trigger: SavepointTrigger::Upgrade, stop: true });

    let j = with_pending(j, SavepointTrigger::Upgrade, true);
    let in_progress = Observed {
        pending: PendingLookup::Found(SavepointRequest {
            id: 2,
            status: "IN_PROGRESS".into(),
            location: None,
            error: None,
        }),
        ..observed_running()
    };
    assert_eq!(decide(&j, &in_progress, now()).step, Step::Wait);

    let done = Observed { pending: completed("file:///sp/sp-8"), ..observed_running() };
    let d = decide(&j, &done, now());
    let Step::Deploy { record, reason } = &d.step else { panic!("expected a redeploy, got {d:?}") };
    assert_eq!((*reason, record.number), (DeployReason::Upgrade, 2));
    assert_eq!(record.restore_from.as_deref(), Some("file:///sp/sp-8"));
    let Some(SavepointOutcome::Completed(info)) = &d.outcome else { panic!("outcome {d:?}") };
    assert_eq!((info.trigger, info.parallelism), (SavepointTrigger::Upgrade, 3));
}

#[test]
fn last_state_redeploys_at_once_and_stateless_starts_fresh() {
    let mut j = running_job();
    j.spec.restart_nonce = Some(1);
    j.spec.upgrade_mode = UpgradeMode::LastState;
    let d = decide(&j, &observed_running(), now());
    let Step::Deploy { record, .. } = d.step else { panic!("{d:?}") };
    assert_eq!((record.number, record.checkpoint_folder), (2, Some(1)), "continues folder 1");
    assert_eq!(record.restore_from, None);

    j.spec.upgrade_mode = UpgradeMode::Stateless;
    let d = decide(&j, &observed_running(), now());
    let Step::Deploy { record, .. } = d.step else { panic!("{d:?}") };
    assert_eq!((record.restore_from, record.checkpoint_folder), (None, None), "a new folder, fresh");
}

#[test]
fn a_rescale_goes_through_a_savepoint_even_in_last_state_mode() {
    let mut j = running_job();
    j.spec.upgrade_mode = UpgradeMode::LastState;
    j.spec.parallelism = 4;
    let d = decide(&j, &observed_running(), now());
    assert_eq!(d.step, Step::TriggerSavepoint { trigger: SavepointTrigger::Upgrade, stop: true });
}

#[test]
fn an_upgrade_of_a_job_that_is_not_running_falls_back_to_the_latest_checkpoint() {
    let mut j = running_job();
    j.spec.parallelism = 4;
    let crashed = Observed { job: None, ..observed_running() };
    let d = decide(&j, &crashed, now());
    let Step::Deploy { record, .. } = d.step else { panic!("{d:?}") };
    assert_eq!(record.checkpoint_folder, Some(1), "continues from the latest checkpoint of folder 1");
    assert!(d.warning.is_some_and(|w| w.contains("without a savepoint")));
}

#[test]
fn suspend_takes_a_savepoint_removes_the_pods_and_resume_restores_it() {
    let mut j = running_job();
    j.spec.state = JobState::Suspended;
    assert_eq!(
        decide(&j, &observed_running(), now()).step,
        Step::TriggerSavepoint { trigger: SavepointTrigger::Suspend, stop: true }
    );
    let pending = with_pending(j.clone(), SavepointTrigger::Suspend, true);
    let done = Observed { pending: completed("file:///sp/sp-9"), ..observed_running() };
    let d = decide(&pending, &done, now());
    assert_eq!(d.step, Step::Remove);

    // Suspended and removed: nothing more to do.
    let mut suspended = j.clone();
    let status = suspended.status.get_or_insert_default();
    status.phase = millrace_crds::v1alpha1::JobPhase::Suspended;
    let Some(SavepointOutcome::Completed(info)) = d.outcome else { panic!("outcome") };
    status.last_savepoint = Some(info);
    let gone = Observed { deployed: false, job: None, ..observed_running() };
    assert_eq!(decide(&suspended, &gone, now()).step, Step::Wait);

    suspended.spec.state = JobState::Running;
    let d = decide(&suspended, &gone, now());
    let Step::Deploy { record, reason } = d.step else { panic!("{d:?}") };
    assert_eq!(reason, DeployReason::Resume);
    assert_eq!(record.restore_from.as_deref(), Some("file:///sp/sp-9"));
    assert_eq!((record.number, record.checkpoint_folder), (2, None));
}

#[test]
fn a_job_without_storage_is_suspended_without_a_savepoint() {
    let mut j = running_job();
    j.spec.state = JobState::Suspended;
    let no_storage = Observed { has_storage: false, ..observed_running() };
    let d = decide(&j, &no_storage, now());
    assert_eq!(d.step, Step::Remove);
    assert!(d.warning.is_some());
}

#[test]
fn the_trigger_nonce_and_the_schedule_take_savepoints_without_stopping() {
    let mut j = running_job();
    j.spec.savepoint_trigger_nonce = Some(2);
    assert_eq!(
        decide(&j, &observed_running(), now()).step,
        Step::TriggerSavepoint { trigger: SavepointTrigger::Manual, stop: false }
    );
    // Not running: the trigger waits.
    let starting = Observed {
        job: Some(JobView { phase: "STARTING".into(), ..JobView::default() }),
        ..observed_running()
    };
    assert_eq!(decide(&j, &starting, now()).step, Step::Wait);

    let mut j = running_job();
    j.spec.savepoints =
        Some(millrace_crds::v1alpha1::SavepointPolicy { interval_ms: Some(600_000), ..Default::default() });
    // Deployed at 00:00, now 00:10: due.
    assert_eq!(
        decide(&j, &observed_running(), now()).step,
        Step::TriggerSavepoint { trigger: SavepointTrigger::Periodic, stop: false }
    );
    j.status.get_or_insert_default().savepoint_history.push(SavepointInfo {
        location: "file:///sp/sp-5".into(),
        trigger: SavepointTrigger::Periodic,
        completed_at: "2026-12-02T00:05:00Z".into(),
        parallelism: 3,
    });
    assert_eq!(decide(&j, &observed_running(), now()).step, Step::Wait, "the last one is 5 minutes old");
}

#[test]
fn a_lost_savepoint_request_fails_and_a_failed_upgrade_savepoint_falls_back() {
    let mut j = running_job();
    j.spec.parallelism = 6;
    let j = with_pending(j, SavepointTrigger::Upgrade, true);
    let lost = Observed { pending: PendingLookup::Lost, ..observed_running() };
    let d = decide(&j, &lost, now());
    assert!(matches!(d.outcome, Some(SavepointOutcome::Failed { trigger: SavepointTrigger::Upgrade, .. })));
    let Step::Deploy { record, .. } = d.step else { panic!("{d:?}") };
    assert_eq!(record.checkpoint_folder, Some(1));
    assert!(d.warning.is_some());
}

#[test]
fn the_fingerprint_ignores_triggers_state_and_schedule() {
    let j = running_job();
    let mut changed = j.spec.clone();
    changed.savepoint_trigger_nonce = Some(9);
    changed.state = JobState::Suspended;
    changed.savepoints = Some(Default::default());
    assert_eq!(fingerprint(&j.spec), fingerprint(&changed));
    assert_eq!(deployed_spec(j.status.as_ref().expect("status")).map(|s| s.parallelism), Some(3));
}

/// The running job upgraded (deployment 2, restored from the upgrade savepoint) to a spec
/// that has not reached Running; `lastStableSpec` is deployment 1's.
fn upgraded_job() -> StreamJob {
    let mut j = running_job();
    let status = j.status.get_or_insert_default();
    status.last_stable_spec = status.last_reconciled_spec.clone();
    j.spec.parallelism = 4;
    j.spec.restarts =
        Some(millrace_crds::v1alpha1::RestartPolicy { attempts: Some(1), window_ms: Some(60_000) });
    let status = j.status.get_or_insert_default();
    status.last_reconciled_spec = serde_json::to_string(&j.spec).ok();
    status.phase = millrace_crds::v1alpha1::JobPhase::Upgrading;
    status.deployment = Some(DeploymentRecord {
        number: 2,
        restore_from: Some("file:///sp/sp-8".into()),
        checkpoint_folder: None,
        started_at: "2026-12-02T00:09:00Z".into(),
    });
    j
}

fn crashing(restarts: i32) -> Observed {
    Observed {
        job: None,
        pods: Some(PodHealth { restarts, last_crash: Some("w-0/worker: exit code 2".into()) }),
        ..observed_running()
    }
}

#[test]
fn pods_crashing_beyond_the_policy_stop_the_job_and_its_spec_is_not_deployed_again() {
    let j = upgraded_job();
    let once = decide(&j, &crashing(1), now());
    assert_eq!(once.step, Step::Wait, "one restart is within attempts 1");
    assert_eq!(once.restarts.as_ref().map(|r| r.seen_at.len()), Some(1));

    let mut j = j;
    j.status.get_or_insert_default().pod_restarts = once.restarts.clone();
    let d = decide(&j, &crashing(2), now());
    assert_eq!(d.step, Step::Remove, "no rollback configured: the job is stopped");
    let failure = d.failure.clone().expect("a failure");
    assert!(failure.contains("more than 1 times") && failure.contains("exit code 2"), "{failure}");

    // Stopped: the failed spec stays undeployed; a changed spec deploys again.
    let status = j.status.get_or_insert_default();
    status.failed_spec = status.last_reconciled_spec.clone();
    let gone = Observed { deployed: false, job: None, ..observed_running() };
    assert_eq!(decide(&j, &gone, now()).step, Step::Wait);
    j.spec.restart_nonce = Some(7);
    assert!(matches!(decide(&j, &gone, now()).step, Step::Deploy { reason: DeployReason::Resume, .. }));
}

#[test]
fn a_failed_upgrade_rolls_back_to_the_stable_spec_from_the_upgrade_savepoint() {
    let mut j = upgraded_job();
    j.spec.rollback =
        Some(millrace_crds::v1alpha1::RollbackPolicy { enabled: true, readiness_timeout_ms: None });
    j.status.get_or_insert_default().last_reconciled_spec = serde_json::to_string(&j.spec).ok();
    let failed = Observed {
        job: Some(JobView {
            phase: "FAILED".into(),
            last_error: Some("task 0 panicked".into()),
            ..running_view()
        }),
        ..observed_running()
    };
    let d = decide(&j, &failed, now());
    let Step::Deploy { record, reason } = &d.step else { panic!("expected a rollback, got {d:?}") };
    assert_eq!(*reason, DeployReason::Rollback);
    assert_eq!((record.number, record.restore_from.as_deref()), (3, Some("file:///sp/sp-8")));
    assert_eq!(d.failure.as_deref(), Some("task 0 panicked"));
    assert_eq!(spec_to_deploy(&j, DeployReason::Rollback).parallelism, 3, "the stable spec");

    // Rolled back and running the stable spec: the failed spec is not upgraded to again.
    let mut rolled = j.clone();
    let status = rolled.status.get_or_insert_default();
    status.failed_spec = status.last_reconciled_spec.clone();
    status.last_reconciled_spec = status.last_stable_spec.clone();
    status.deployment = Some(record.clone());
    assert_eq!(decide(&rolled, &observed_running(), now()).step, Step::Wait);
    rolled.spec.parallelism = 2;
    assert_eq!(
        decide(&rolled, &observed_running(), now()).step,
        Step::TriggerSavepoint { trigger: SavepointTrigger::Upgrade, stop: true },
        "a new spec upgrades again"
    );
}

#[test]
fn an_upgrade_not_running_within_the_readiness_timeout_is_rolled_back() {
    let mut j = upgraded_job();
    j.spec.rollback =
        Some(millrace_crds::v1alpha1::RollbackPolicy { enabled: true, readiness_timeout_ms: Some(120_000) });
    j.status.get_or_insert_default().last_reconciled_spec = serde_json::to_string(&j.spec).ok();
    let starting = Observed {
        job: Some(JobView { phase: "STARTING".into(), ..JobView::default() }),
        ..observed_running()
    };
    // Started at 00:09, now 00:10: within 2 minutes.
    assert_eq!(decide(&j, &starting, now()).step, Step::Wait);
    let later: Timestamp = "2026-12-02T00:11:30Z".parse().expect("timestamp");
    let d = decide(&j, &starting, later);
    assert!(matches!(d.step, Step::Deploy { reason: DeployReason::Rollback, .. }), "{d:?}");
    assert!(d.failure.is_some_and(|f| f.contains("not Running 120s after the upgrade")));
    // A job that was never stable has nothing to roll back to: it is left to run.
    let mut fresh = j.clone();
    fresh.status.get_or_insert_default().last_stable_spec = None;
    assert_eq!(decide(&fresh, &starting, later).step, Step::Wait);
}
