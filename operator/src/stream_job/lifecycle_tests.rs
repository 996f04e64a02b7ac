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
    Observed { deployed: true, job: Some(running_view()), pending: PendingLookup::Unknown, has_storage: true }
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
