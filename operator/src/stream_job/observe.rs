//! The read phase: what a StreamJob's Deployments and its coordinator's control API say
//! now. A coordinator that does not answer is an observation (`job: None`), not an error:
//! it may be starting, restarting or gone, and the lifecycle decides what that means.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, Client};
use millrace_crds::v1alpha1::{CheckpointInfo, StreamJob};
use tracing::debug;

use super::children::{DEPLOYMENT_ANNOTATION, Defaults, coordinator_name, job_storage, worker_name};
use super::control::{CoordinatorClient, JobView};
use super::lifecycle::{Observed, PendingLookup, now_text};
use super::restarts::PodHealth;
use super::status::Seen;

/// Reads everything [`super::lifecycle::decide`] and the status need.
pub async fn observe(
    client: &Client,
    coordinator: &CoordinatorClient,
    job: &StreamJob,
    defaults: &Defaults,
) -> Result<(Observed, Seen), kube::Error> {
    let namespace = job.metadata.namespace.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let coordinator_deployment = deployments.get_opt(&coordinator_name(&name)).await?;
    let worker_deployment = deployments.get_opt(&worker_name(&name)).await?;
    let status = job.status.clone().unwrap_or_default();

    let deployed = coordinator_deployment.is_some_and(|d| d.metadata.deletion_timestamp.is_none());
    let job_view = if deployed {
        match coordinator.job(&namespace, &name).await {
            Ok(view) => Some(view),
            Err(err) => {
                debug!(%err, "coordinator not answering");
                None
            }
        }
    } else {
        None
    };
    let pending = match (&status.pending_savepoint, &job_view) {
        (Some(p), Some(_)) => match coordinator.savepoint(&namespace, &name, p.request_id).await {
            Ok(Some(request)) => PendingLookup::Found(request),
            Ok(None) => PendingLookup::Lost,
            Err(err) => {
                debug!(%err, "savepoint request not readable");
                PendingLookup::Unknown
            }
        },
        // The coordinator that was asked is gone with its Deployment: so is the request.
        (Some(_), None) if !deployed => PendingLookup::Lost,
        _ => PendingLookup::Unknown,
    };
    let checkpoint = match &job_view {
        Some(view) => latest_checkpoint(coordinator, &namespace, &name, view).await,
        None => None,
    };
    let workers = worker_deployment.map(|d| {
        let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let ready = d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
        (ready, desired)
    });
    let pods = match (&status.deployment, deployed) {
        (Some(record), true) => Some(pod_health(client, &namespace, &name, record.number).await?),
        _ => None,
    };
    let observed = Observed {
        deployed,
        job: job_view,
        pending,
        has_storage: job_storage(&job.spec, &namespace, &name, defaults).is_some(),
        pods,
    };
    Ok((observed, Seen { workers, checkpoint, triggered: None }))
}

/// The latest completed checkpoint: its id from `/v1/job`, its location from there or, for
/// coordinators that do not report it, from `/v1/checkpoints`.
async fn latest_checkpoint(
    coordinator: &CoordinatorClient,
    namespace: &str,
    name: &str,
    view: &JobView,
) -> Option<CheckpointInfo> {
    let checkpoints = view.checkpoints.as_ref()?;
    let id = checkpoints.last_checkpoint_id?;
    let location = match &checkpoints.last_checkpoint_location {
        Some(location) => location.clone(),
        None => {
            coordinator.checkpoints(namespace, name).await.ok()?.into_iter().find(|c| c.id == id)?.location
        }
    };
    let completed_at = checkpoints
        .last_checkpoint_completed_at_ms
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .map(now_text)
        .unwrap_or_default();
    Some(CheckpointInfo { id, location, completed_at })
}

/// Container restarts of the Pods of deployment `number` (coordinator and workers), and the
/// latest crash among them.
async fn pod_health(
    client: &Client,
    namespace: &str,
    name: &str,
    number: i64,
) -> Result<PodHealth, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("app.kubernetes.io/name=millrace-worker,app.kubernetes.io/instance={name}");
    let list = pods.list(&ListParams::default().labels(&selector)).await?;
    let number = number.to_string();
    let mut health = PodHealth::default();
    let mut latest: Option<String> = None;
    for pod in list.items {
        let of_this_deployment = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DEPLOYMENT_ANNOTATION))
            .is_some_and(|n| *n == number);
        if !of_this_deployment {
            continue;
        }
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        for container in pod.status.and_then(|s| s.container_statuses).unwrap_or_default() {
            health.restarts += container.restart_count;
            let Some(terminated) = container.last_state.and_then(|s| s.terminated) else { continue };
            let finished = terminated.finished_at.map(|t| t.0.to_string()).unwrap_or_default();
            if latest.as_ref().is_some_and(|l| *l >= finished) {
                continue;
            }
            let mut crash = format!("{pod_name}/{}: exit code {}", container.name, terminated.exit_code);
            if let Some(reason) = terminated.reason {
                crash.push_str(&format!(" ({reason})"));
            }
            if let Some(message) = terminated.message.filter(|m| !m.trim().is_empty()) {
                crash.push_str(&format!(": {}", message.trim()));
            }
            latest = Some(finished);
            health.last_crash = Some(crash);
        }
    }
    Ok(health)
}
