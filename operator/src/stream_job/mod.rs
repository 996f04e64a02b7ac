//! The StreamJob controller: runs a streaming SQL job as its `StreamJob` resource says, as a
//! coordinator Deployment and a worker Deployment (the contract is in docs/operator.md).
//!
//! Each reconcile goes read → validate → decide → build → apply → status:
//! - validate the spec and compile the SQL with the engine's planner ([`validate`], pure);
//! - read the Deployments and the coordinator's control API ([`observe`]);
//! - decide the one next step of the lifecycle ([`lifecycle`], pure);
//! - build the children of a new deployment ([`children`], pure) and apply them, trigger a
//!   savepoint ([`control`]) or remove the Pods ([`apply`]);
//! - write the status and the Events ([`status`]).
//!
//! The children carry owner references and are garbage-collected with the StreamJob;
//! savepoints stay in storage and are recorded in a ConfigMap that outlives the job, unless
//! `disposeOnDelete`, whose finalizer deletes them first ([`savepoints`]). This module wires
//! the phases to the kube-runtime `Controller`; it must not grow lifecycle or status logic of
//! its own.

pub mod apply;
pub mod children;
pub mod control;
pub mod error;
pub mod lifecycle;
pub mod observe;
pub mod resolve;
pub mod restarts;
pub mod savepoints;
pub mod status;
pub mod validate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::core::error_boundary::{DeserializeGuard, InvalidObject};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use millrace_crds::v1alpha1::{ConditionStatus, JobPhase, PendingSavepoint, StreamJob, StreamJobStatus};
use tracing::{Instrument, info, info_span, warn};

use self::children::Defaults;
use self::control::CoordinatorClient;
pub use self::error::Error;
use self::error::Retry;
use self::lifecycle::{Decision, SavepointOutcome, Step, now_text};
use self::status::Seen;
use crate::kafka_topic::error::backoff;
use crate::metrics::Metrics;

/// The controller's name in metrics and logs.
pub const CONTROLLER: &str = "streamjob";

/// How the controller behaves; from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    pub defaults: Defaults,
    /// How often a running job's coordinator is asked for news (checkpoints, failures).
    pub poll: Duration,
    /// How long to wait before looking again at a job whose spec must change.
    pub wait_for_change: Duration,
    /// Cap of the exponential backoff after transient failures.
    pub max_backoff: Duration,
    /// Reconciles running at once.
    pub concurrency: u16,
    /// Reported in Events (`reportingInstance`), e.g. the Pod name.
    pub instance: Option<String>,
}

/// Shared by every reconcile.
pub struct Context {
    client: Client,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    settings: Settings,
    coordinator: CoordinatorClient,
    /// Consecutive transient failures per object, for the backoff.
    failures: Mutex<HashMap<String, u32>>,
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let api = Api::<DeserializeGuard<StreamJob>>::all(client.clone());
    // Deployment status changes (Pods ready, gone) wake the job up at once.
    let controller = Controller::new(api, watcher::Config::default()).owns(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default().labels("app.kubernetes.io/managed-by=millrace-operator"),
    );
    let reporter = Reporter { controller: "millrace-operator".into(), instance: settings.instance.clone() };
    let concurrency = settings.concurrency;
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        metrics,
        settings,
        coordinator: CoordinatorClient::new()?,
        failures: Mutex::default(),
    });
    info!("StreamJob controller started");
    controller
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(%err, "reconcile did not complete");
            }
        })
        .await;
    info!("StreamJob controller stopped");
    Ok(())
}

fn object_key(guard: &DeserializeGuard<StreamJob>) -> String {
    format!("{}/{}", guard.namespace().unwrap_or_default(), guard.name_any())
}

async fn reconcile(guard: Arc<DeserializeGuard<StreamJob>>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = object_key(&guard);
    let started = Instant::now();
    let result = async {
        match &guard.0 {
            Ok(job) => match latest(job, &ctx).await {
                Ok(Some(job)) => reconcile_job(&job, &ctx).await,
                Ok(None) => Ok(Action::await_change()),
                Err(err) => Err(err),
            },
            Err(invalid) => report_malformed(invalid, &ctx).await,
        }
    }
    .instrument(info_span!("reconcile", controller = CONTROLLER, object = %key))
    .await;
    ctx.metrics.reconciled(CONTROLLER, started.elapsed(), result.as_ref().err().map(Error::reason));
    if result.is_ok() {
        ctx.failures.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
    }
    result
}

/// The job as the API server has it now. The watch cache can lag behind the status this
/// controller just wrote, and the lifecycle must never act twice on one savepoint (a stale
/// `pendingSavepoint` would look lost and redeploy again).
async fn latest(job: &StreamJob, ctx: &Context) -> Result<Option<StreamJob>, Error> {
    let api: Api<StreamJob> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    Ok(api.get_opt(&job.name_any()).await?)
}

fn error_policy(guard: Arc<DeserializeGuard<StreamJob>>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = object_key(&guard);
    let settings = &ctx.settings;
    let after = match error.retry() {
        Retry::AfterChange => settings.wait_for_change,
        Retry::AtResync => settings.poll,
        Retry::WithBackoff => {
            let mut failures = ctx.failures.lock().unwrap_or_else(PoisonError::into_inner);
            let attempt = failures.entry(key.clone()).or_insert(0);
            *attempt += 1;
            backoff(*attempt, settings.max_backoff)
        }
    };
    warn!(object = %key, reason = error.reason(), retry_in = ?after, "{error}");
    Action::requeue(after)
}

/// How soon to look again at a job in `phase`: transitions are polled closely.
fn requeue_after(phase: JobPhase, poll: Duration) -> Duration {
    match phase {
        JobPhase::Pending | JobPhase::Deploying | JobPhase::Upgrading | JobPhase::Savepointing => {
            Duration::from_secs(2).min(poll)
        }
        JobPhase::Running | JobPhase::Failed => poll,
        JobPhase::Suspended => poll * 6,
    }
}

async fn reconcile_job(job: &StreamJob, ctx: &Context) -> Result<Action, Error> {
    if job.metadata.deletion_timestamp.is_some() {
        // Being deleted (alone or with its namespace): the garbage collector removes the
        // children; recreating a Deployment it just removed would only race it. A job that
        // disposes of its storage holds a finalizer until that is done.
        return dispose_of(job, ctx).await;
    }
    savepoints::sync_finalizer(&ctx.client, job).await?;
    let namespace = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let api: Api<StreamJob> = Api::namespaced(ctx.client.clone(), &namespace);
    let reference = job.object_ref(&());
    let now = Timestamp::now();
    let now_str = now_text(now);
    let defaults = &ctx.settings.defaults;

    let (observed, mut seen) = observe::observe(&ctx.client, &ctx.coordinator, job, defaults).await?;
    let valid = match validate::validate(job) {
        Ok(valid) => valid,
        Err(error) => {
            let next = status::after_error(job, &error, &observed, &now_str);
            publish_transition(ctx, &reference, job.status.as_ref(), &next).await;
            write_status(&api, &name, job, &next).await?;
            return Err(error);
        }
    };

    let decision = lifecycle::decide(job, &observed, now);
    if decision.step != Step::Wait {
        info!(step = ?decision.step, "lifecycle step");
    }
    let acted = act(job, &decision, &valid, ctx, &mut seen, &now_str).await;
    let next = match &acted {
        Ok(()) => status::after_step(job, &decision, &observed, &seen, &now_str),
        Err(error) => status::after_error(job, error, &observed, &now_str),
    };
    if acted.is_ok()
        && matches!(decision.outcome, Some(SavepointOutcome::Completed(_)))
        && let Err(err) = savepoints::write_record(&ctx.client, job, &next, &ctx.settings.defaults).await
    {
        warn!(%err, "could not record the savepoint in its ConfigMap");
    }
    publish_decision(ctx, &reference, &decision, acted.is_ok()).await;
    publish_transition(ctx, &reference, job.status.as_ref(), &next).await;
    let written = write_status(&api, &name, job, &next).await;
    acted?;
    written?;
    Ok(Action::requeue(requeue_after(next.phase, ctx.settings.poll)))
}

/// The finalizer's half of a deletion (see [`savepoints`]).
async fn dispose_of(job: &StreamJob, ctx: &Context) -> Result<Action, Error> {
    let reference = job.object_ref(&());
    match savepoints::dispose(&ctx.client, job, &ctx.settings.defaults).await? {
        savepoints::Disposal::NotOurs => Ok(Action::await_change()),
        savepoints::Disposal::WaitingForPods => Ok(Action::requeue(Duration::from_secs(1))),
        savepoints::Disposal::Disposed { objects, storage } => {
            let note = match storage {
                Some(url) => format!("disposeOnDelete: {objects} objects deleted from {url}"),
                None => "disposeOnDelete: the job had no checkpoint storage".to_owned(),
            };
            info!("{note}");
            publish(ctx, &reference, EventType::Normal, "SavepointsDisposed", note).await;
            Ok(Action::await_change())
        }
        savepoints::Disposal::Skipped => {
            let note = format!("{} is set: storage left as it is", savepoints::SKIP_DISPOSAL_ANNOTATION);
            publish(ctx, &reference, EventType::Warning, "SavepointsKept", note).await;
            Ok(Action::await_change())
        }
    }
}

async fn write_status(
    api: &Api<StreamJob>,
    name: &str,
    job: &StreamJob,
    next: &StreamJobStatus,
) -> Result<(), Error> {
    if job.status.as_ref() == Some(next) {
        return Ok(());
    }
    match status::write(api, name, next).await {
        // Deleted while being reconciled (its Deployments' deletion woke it up): nothing to report to.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        written => Ok(written?),
    }
}

/// Carries out the decided step.
async fn act(
    job: &StreamJob,
    decision: &Decision,
    valid: &validate::ValidJob,
    ctx: &Context,
    seen: &mut Seen,
    now: &str,
) -> Result<(), Error> {
    let namespace = job.namespace().unwrap_or_default();
    let name = job.name_any();
    match &decision.step {
        Step::Deploy { record, reason: lifecycle::DeployReason::Rollback } => {
            // The last stable spec, compiled again: the plan ConfigMap carries its SQL.
            let mut stable = job.clone();
            stable.spec = lifecycle::spec_to_deploy(job, lifecycle::DeployReason::Rollback);
            let valid = validate::validate(&stable)?;
            let built = children::build(&stable, &valid, record, &ctx.settings.defaults);
            apply::apply_all(&ctx.client, &namespace, &built).await?;
        }
        Step::Deploy { record, .. } => {
            let built = children::build(job, valid, record, &ctx.settings.defaults);
            apply::apply_all(&ctx.client, &namespace, &built).await?;
        }
        Step::TriggerSavepoint { trigger, stop } => {
            let request = ctx.coordinator.trigger_savepoint(&namespace, &name, *stop).await?;
            seen.triggered = Some(PendingSavepoint {
                request_id: request.id,
                trigger: *trigger,
                stop: *stop,
                requested_at: now.to_owned(),
            });
        }
        Step::Remove => apply::remove_pods(&ctx.client, &namespace, &name).await?,
        Step::Wait => {}
    }
    Ok(())
}

/// Events for what this reconcile did.
async fn publish_decision(ctx: &Context, reference: &ObjectReference, decision: &Decision, done: bool) {
    match &decision.outcome {
        Some(SavepointOutcome::Completed(info)) => {
            let note = format!("{:?} savepoint completed at {}", info.trigger, info.location);
            publish(ctx, reference, EventType::Normal, "SavepointCompleted", note).await;
        }
        Some(SavepointOutcome::Failed { trigger, error }) => {
            let note = format!("{trigger:?} savepoint failed: {error}");
            publish(ctx, reference, EventType::Warning, "SavepointFailed", note).await;
        }
        None => {}
    }
    if let Some(warning) = &decision.warning {
        let reason = if decision.failure.is_some() { "DeploymentFailed" } else { "StateNotSaved" };
        publish(ctx, reference, EventType::Warning, reason, warning.clone()).await;
    }
    if !done {
        return;
    }
    let (reason, note) = match &decision.step {
        Step::Deploy { record, reason } => (
            reason.event_reason(),
            format!(
                "deployment {} applied{}",
                record.number,
                record
                    .restore_from
                    .as_ref()
                    .map(|r| format!(", restoring from {r}"))
                    .unwrap_or_else(|| ", starting fresh".into())
            ),
        ),
        Step::TriggerSavepoint { trigger, stop } => (
            "SavepointTriggered",
            format!(
                "{trigger:?} savepoint requested{}",
                if *stop { ", stopping the job after it" } else { "" }
            ),
        ),
        Step::Remove if decision.failure.is_some() => {
            ("JobStopped", "coordinator and worker Deployments removed after the failure".to_owned())
        }
        Step::Remove => ("PodsRemoved", "coordinator and worker Deployments removed".to_owned()),
        Step::Wait => return,
    };
    info!(reason, "{note}");
    publish(ctx, reference, EventType::Normal, reason, note).await;
}

/// An Event when the phase or the Ready condition changed.
async fn publish_transition(
    ctx: &Context,
    reference: &ObjectReference,
    previous: Option<&StreamJobStatus>,
    next: &StreamJobStatus,
) {
    let ready = |s: &StreamJobStatus| {
        s.conditions.iter().find(|c| c.type_ == millrace_crds::v1alpha1::READY).cloned()
    };
    let Some(now_ready) = ready(next) else { return };
    let before = previous.and_then(ready);
    let phase_changed = previous.is_none_or(|p| p.phase != next.phase);
    let ready_changed = before.is_none_or(|b| b.status != now_ready.status || b.reason != now_ready.reason);
    if !phase_changed && !ready_changed {
        return;
    }
    let kind = if now_ready.status == ConditionStatus::True
        || !matches!(next.phase, JobPhase::Failed) && !is_failure(&now_ready.reason)
    {
        EventType::Normal
    } else {
        EventType::Warning
    };
    let note = format!("phase {}: {}", status::phase_name(next.phase), now_ready.message);
    publish(ctx, reference, kind, &now_ready.reason, note).await;
}

fn is_failure(reason: &str) -> bool {
    matches!(
        reason,
        "InvalidSql"
            | "InvalidSpec"
            | "MalformedObject"
            | "CoordinatorUnavailable"
            | "KubernetesApiError"
            | "JobFailed"
            | "RolledBack"
    )
}

/// A StreamJob that does not deserialize: say so on the object and as an Event.
async fn report_malformed(invalid: &InvalidObject, ctx: &Context) -> Result<Action, Error> {
    let error = Error::MalformedObject(invalid.error.clone());
    let meta = &invalid.metadata;
    let (Some(name), Some(namespace)) = (meta.name.clone(), meta.namespace.clone()) else {
        return Err(error);
    };
    let api: Api<StreamJob> = Api::namespaced(ctx.client.clone(), &namespace);
    let condition = status::condition(
        &[],
        millrace_crds::v1alpha1::READY,
        ConditionStatus::False,
        error.reason(),
        error.to_string(),
        meta.generation,
        &now_text(Timestamp::now()),
    );
    let patch =
        serde_json::json!({ "status": { "observedGeneration": meta.generation, "conditions": [condition] } });
    if let Err(err) =
        api.patch_status(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await
    {
        warn!(%err, "could not record the malformed object in its status");
    }
    let reference = ObjectReference {
        api_version: Some(StreamJob::api_version(&()).into_owned()),
        kind: Some(StreamJob::kind(&()).into_owned()),
        name: Some(name),
        namespace: Some(namespace),
        uid: meta.uid.clone(),
        ..ObjectReference::default()
    };
    publish(ctx, &reference, EventType::Warning, error.reason(), error.to_string()).await;
    Err(error)
}

/// Publishes an Event; a failure to do so is logged, never fatal.
async fn publish(ctx: &Context, reference: &ObjectReference, type_: EventType, reason: &str, note: String) {
    let event = KubeEvent {
        type_,
        reason: reason.to_owned(),
        // The API server limits a note to 1 kB.
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    match ctx.recorder.publish(&event, reference).await {
        Ok(()) => {}
        Err(err) if err.to_string().contains("is being terminated") => {
            tracing::debug!(%err, reason, "Event not published: namespace terminating");
        }
        Err(err) => warn!(%err, reason, "could not publish an Event"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_are_polled_closely_and_suspended_jobs_rarely() {
        let poll = Duration::from_secs(10);
        assert_eq!(requeue_after(JobPhase::Savepointing, poll), Duration::from_secs(2));
        assert_eq!(requeue_after(JobPhase::Running, poll), poll);
        assert_eq!(requeue_after(JobPhase::Suspended, poll), Duration::from_secs(60));
    }
}
