//! What outlives a StreamJob: its savepoints. Every completed savepoint is recorded in a
//! ConfigMap `<job>-savepoints` that the job does not own (so it survives the job's deletion
//! and a recreated job can start from `data.latest` through `spec.initialSavepoint`).
//!
//! With `spec.savepoints.disposeOnDelete` the job carries the finalizer [`FINALIZER`]; deleting
//! it then stops its Pods, deletes its storage folder (checkpoints and savepoints) and that
//! ConfigMap, and only then lets the resource go. The annotation [`SKIP_DISPOSAL_ANNOTATION`]
//! lets the finalizer go without touching storage (e.g. storage unreachable for good), so a
//! namespace never hangs in Terminating.

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use millrace_crds::v1alpha1::{StreamJob, StreamJobStatus};
use serde_json::json;

use super::apply::remove_pods;
use super::children::{Defaults, job_storage};
use super::error::Error;
use crate::kafka_topic::status::FIELD_MANAGER;

/// Held by jobs that dispose of their storage when deleted.
pub const FINALIZER: &str = "millrace.io/dispose-savepoints";
/// `"true"` on a StreamJob: let the finalizer go without deleting storage.
pub const SKIP_DISPOSAL_ANNOTATION: &str = "millrace.io/skip-savepoint-disposal";

/// The ConfigMap that records a job's savepoints.
pub fn record_name(job: &str) -> String {
    format!("{job}-savepoints")
}

/// The record's body (pure): the newest savepoint, the history newest first, and the job's
/// storage folder.
pub fn record(job: &StreamJob, status: &StreamJobStatus, storage: Option<&str>) -> Option<serde_json::Value> {
    let latest = status.last_savepoint.as_ref()?;
    let name = job.name_any();
    let history: Vec<&str> = status.savepoint_history.iter().map(|s| s.location.as_str()).collect();
    let mut data = json!({
        "latest": latest.location,
        "latestCompletedAt": latest.completed_at,
        "history": history.join("\n"),
    });
    if let Some(storage) = storage {
        data["storage"] = json!(storage);
    }
    Some(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": record_name(&name),
            "namespace": job.namespace(),
            "labels": {
                "app.kubernetes.io/managed-by": "millrace-operator",
                "millrace.io/savepoints-of": name,
            },
        },
        "data": data,
    }))
}

/// Writes the record after a savepoint completed.
pub async fn write_record(
    client: &Client,
    job: &StreamJob,
    status: &StreamJobStatus,
    defaults: &Defaults,
) -> Result<(), kube::Error> {
    let namespace = job.namespace().unwrap_or_default();
    let storage = job_storage(&job.spec, &namespace, &job.name_any(), defaults);
    let Some(body) = record(job, status, storage.as_deref()) else { return Ok(()) };
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    api.patch(
        &record_name(&job.name_any()),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

fn holds_finalizer(job: &StreamJob) -> bool {
    job.finalizers().iter().any(|f| f == FINALIZER)
}

fn wants_disposal(job: &StreamJob) -> bool {
    job.spec.savepoints.as_ref().is_some_and(|s| s.dispose_on_delete)
}

/// Sets the finalizer list to `finalizers`, guarded by the resource version the job was read at.
async fn set_finalizers(
    client: &Client,
    job: &StreamJob,
    finalizers: Vec<String>,
) -> Result<(), kube::Error> {
    let api: Api<StreamJob> = Api::namespaced(client.clone(), &job.namespace().unwrap_or_default());
    let patch = json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": job.resource_version() }
    });
    match api.patch(&job.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        patched => patched.map(|_| ()),
    }
}

/// Adds or removes the finalizer to match `disposeOnDelete` on a live job.
pub async fn sync_finalizer(client: &Client, job: &StreamJob) -> Result<(), kube::Error> {
    let mut finalizers: Vec<String> = job.finalizers().to_vec();
    match (wants_disposal(job), holds_finalizer(job)) {
        (true, false) => finalizers.push(FINALIZER.to_owned()),
        (false, true) => finalizers.retain(|f| f != FINALIZER),
        _ => return Ok(()),
    }
    set_finalizers(client, job, finalizers).await
}

/// What a deletion step did.
#[derive(Debug, PartialEq, Eq)]
pub enum Disposal {
    /// Nothing to do: the job holds no finalizer of ours.
    NotOurs,
    /// Pods are still stopping; look again.
    WaitingForPods,
    /// Storage (this many objects) and the record deleted, finalizer removed.
    Disposed { objects: usize, storage: Option<String> },
    /// The skip annotation let the finalizer go; storage untouched.
    Skipped,
}

/// The finalizer's work on a job being deleted: stop the Pods (a stopping coordinator may
/// still write a checkpoint), then delete storage and the record, then let the job go.
pub async fn dispose(client: &Client, job: &StreamJob, defaults: &Defaults) -> Result<Disposal, Error> {
    if !holds_finalizer(job) {
        return Ok(Disposal::NotOurs);
    }
    let remaining: Vec<String> = job.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    let skip =
        job.annotations().get(SKIP_DISPOSAL_ANNOTATION).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if skip {
        set_finalizers(client, job, remaining).await?;
        return Ok(Disposal::Skipped);
    }
    let namespace = job.namespace().unwrap_or_default();
    let name = job.name_any();
    remove_pods(client, &namespace, &name).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let selector = format!("app.kubernetes.io/name=millrace-worker,app.kubernetes.io/instance={name}");
    if !pods.list(&ListParams::default().labels(&selector)).await?.items.is_empty() {
        return Ok(Disposal::WaitingForPods);
    }
    let storage = job_storage(&job.spec, &namespace, &name, defaults);
    let mut objects = 0;
    if let Some(url) = &storage {
        let root =
            millrace_checkpoint::CheckpointStorage::open(url).map_err(|e| Error::Storage(e.to_string()))?;
        objects = root.dispose().await.map_err(|e| Error::Storage(e.to_string()))?;
    }
    let records: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    match records.delete(&record_name(&name), &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(err) => return Err(err.into()),
    }
    set_finalizers(client, job, remaining).await?;
    Ok(Disposal::Disposed { objects, storage })
}

#[cfg(test)]
mod tests {
    use millrace_crds::v1alpha1::{SavepointInfo, SavepointTrigger};

    use super::*;

    fn info(n: i32) -> SavepointInfo {
        SavepointInfo {
            location: format!("file:///s/jobs/filter/savepoints/sp-{n}"),
            trigger: SavepointTrigger::Manual,
            completed_at: format!("2026-12-02T00:0{n}:00Z"),
            parallelism: 3,
        }
    }

    #[test]
    fn the_record_names_the_latest_savepoint_and_survives_the_job() {
        let job: StreamJob =
            serde_saphyr::from_str(include_str!("../../tests/fixtures/stream_job/seed.yaml"))
                .expect("fixture");
        let status = StreamJobStatus {
            last_savepoint: Some(info(2)),
            savepoint_history: vec![info(2), info(1)],
            ..StreamJobStatus::default()
        };
        let body = record(&job, &status, Some("file:///s/jobs/filter")).expect("a record");
        assert_eq!(body["metadata"]["name"], "filter-savepoints");
        assert!(body["metadata"].get("ownerReferences").is_none(), "not garbage-collected with the job");
        assert_eq!(body["data"]["latest"], "file:///s/jobs/filter/savepoints/sp-2");
        assert_eq!(
            body["data"]["history"],
            "file:///s/jobs/filter/savepoints/sp-2\nfile:///s/jobs/filter/savepoints/sp-1"
        );
        assert_eq!(body["data"]["storage"], "file:///s/jobs/filter");
        assert_eq!(record(&job, &StreamJobStatus::default(), None), None, "no savepoint, no record");
    }
}
