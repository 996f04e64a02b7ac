//! Keeping the catalog and the tenant's StreamJobs in step, in both directions:
//!
//! - **status reflected back**: phase, the Ready condition (for the current generation),
//!   parallelism, workers, last checkpoint and last error are copied into the job's row, and
//!   every savepoint the operator reports is recorded (`savepoints`), so the catalog keeps
//!   them after the operator prunes its history or the job is deleted;
//! - **drift repaired**: a StreamJob deleted or edited outside the API (including
//!   `kubectl scale`) is re-applied from the catalog, and the repair is reported on the job
//!   (`status.drift`) and in the audit log (`job.drift-repaired`).
//!
//! Runs for every change the StreamJob watch reports ([`super::watch`]), on a read of one job
//! (`GET /v1/jobs/{job}` looks at its StreamJob live), and for every job in the API's resync
//! loop. Listing jobs does not run it: the list reads the rows this keeps current.

use chrono::{DateTime, Utc};
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use millrace_crds::v1alpha1::{ConditionStatus, SavepointTrigger, StreamJob};
use serde_json::{Value, json};
use sqlx::types::Json as SqlJson;
use uuid::Uuid;

use super::{JobRow, desired, job_columns, spec, version_of};
use crate::AppState;
use crate::audit::{self, Change};
use crate::error::ApiError;
use crate::kubernetes::{self, FIELD_MANAGER};

/// Who the audit log names for repairs the server makes on its own.
const SYSTEM_ACTOR: &str = "millrace-api";

/// What the StreamJob's status says.
struct Observed {
    phase: String,
    ready: &'static str,
    reason: String,
    message: String,
    parallelism: Option<i32>,
    workers: Option<String>,
    last_checkpoint: Option<Value>,
    last_error: Option<String>,
}

fn observe(job: &StreamJob) -> Observed {
    let status = job.status.clone().unwrap_or_default();
    let generation = job.metadata.generation;
    let (ready, reason, message) = match job.ready_condition() {
        Some(c) if c.observed_generation.is_some() && c.observed_generation == generation => (
            match c.status {
                ConditionStatus::True => "True",
                ConditionStatus::False => "False",
                ConditionStatus::Unknown => "Unknown",
            },
            c.reason.clone(),
            c.message.clone(),
        ),
        Some(_) => (
            "Unknown",
            "Reconciling".to_owned(),
            format!("the operator has not yet reconciled generation {}", generation.unwrap_or_default()),
        ),
        None => (
            "Unknown",
            "Pending".to_owned(),
            "waiting for the operator to reconcile the StreamJob".to_owned(),
        ),
    };
    Observed {
        phase: format!("{:?}", status.phase),
        ready,
        reason,
        message,
        parallelism: status.parallelism,
        workers: status.workers,
        last_checkpoint: status.last_checkpoint.map(|c| json!(c)),
        last_error: status.last_error,
    }
}

fn trigger_name(trigger: SavepointTrigger) -> &'static str {
    match trigger {
        SavepointTrigger::Manual => "manual",
        SavepointTrigger::Periodic => "periodic",
        SavepointTrigger::Upgrade => "upgrade",
        SavepointTrigger::Suspend => "suspend",
    }
}

/// Records every savepoint the StreamJob reports (already known ones are left alone).
async fn record_savepoints(
    db: &mut sqlx::PgConnection,
    row: &JobRow,
    job: &StreamJob,
) -> Result<(), ApiError> {
    let Some(status) = &job.status else { return Ok(()) };
    for savepoint in status.last_savepoint.iter().chain(status.savepoint_history.iter()) {
        let Ok(completed) = DateTime::parse_from_rfc3339(&savepoint.completed_at) else {
            tracing::warn!(job = %row.name, at = %savepoint.completed_at, "savepoint with an unreadable time; not recorded");
            continue;
        };
        sqlx::query(
            "INSERT INTO savepoints (id, tenant_id, job_name, location, trigger, parallelism, completed_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT ON CONSTRAINT savepoints_job_location_key DO NOTHING",
        )
        .bind(Uuid::new_v4())
        .bind(row.tenant_id)
        .bind(&row.name)
        .bind(&savepoint.location)
        .bind(trigger_name(savepoint.trigger))
        .bind(savepoint.parallelism)
        .bind(completed.with_timezone(&Utc))
        .execute(&mut *db)
        .await?;
    }
    Ok(())
}

/// Copies `job`'s status into the row (unless the row changed meanwhile) and returns the row.
async fn reflect(
    db: &mut sqlx::PgConnection,
    row: &JobRow,
    job: &StreamJob,
    drift: Option<&str>,
) -> Result<Option<JobRow>, ApiError> {
    record_savepoints(db, row, job).await?;
    let seen = observe(job);
    let sql = concat!(
        "UPDATE jobs SET phase = $3, ready = $4, ready_reason = $5, ready_message = $6, observed_parallelism = $7, \
         workers = $8, last_checkpoint = $9, last_error = $10, observed_at = now(), drift = COALESCE($11, drift), \
         drift_at = CASE WHEN $11::text IS NULL THEN drift_at ELSE now() END \
         WHERE id = $1 AND version = $2 RETURNING ",
        job_columns!()
    );
    Ok(sqlx::query_as(sql)
        .bind(row.id)
        .bind(row.version)
        .bind(&seen.phase)
        .bind(seen.ready)
        .bind(&seen.reason)
        .bind(&seen.message)
        .bind(seen.parallelism)
        .bind(&seen.workers)
        .bind(seen.last_checkpoint.map(SqlJson))
        .bind(&seen.last_error)
        .bind(drift)
        .fetch_optional(&mut *db)
        .await?)
}

/// How `observed` differs from what the catalog wants; `None` when in step.
fn drift_of(want: &spec::DesiredJob, observed: Option<&StreamJob>) -> Option<String> {
    match observed {
        None => Some("the StreamJob was missing (deleted outside the API); it was re-created".into()),
        Some(job) if job.metadata.deletion_timestamp.is_some() => {
            Some("the StreamJob was being deleted outside the API; it will be re-created".into())
        }
        Some(job) => spec::spec_drift(want, &job.spec).map(|difference| {
            format!(
                "the StreamJob was edited outside the API ({difference}); the catalog's spec was re-applied"
            )
        }),
    }
}

/// Brings one job in step: repairs drift, reflects status, returns the up-to-date row.
pub async fn reconcile(
    state: &AppState,
    tenant: &str,
    namespace: &str,
    row: JobRow,
    observed: Option<StreamJob>,
) -> Result<JobRow, ApiError> {
    let current = version_of(&state.db, row.id, row.current_version).await?;
    let want = desired(state, tenant, &row, &current);
    if drift_of(&want, observed.as_ref()).is_none()
        && let Some(job) = &observed
    {
        let mut conn = state.db.acquire().await?;
        return Ok(reflect(&mut conn, &row, job, None).await?.unwrap_or(row));
    }
    // Drift: lock the row, then look again, so a change in flight is not mistaken for drift.
    let mut tx = state.db.begin().await?;
    let sql = concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1 FOR UPDATE");
    let locked: Option<JobRow> = sqlx::query_as(sql).bind(row.id).fetch_optional(&mut *tx).await?;
    let row = locked.ok_or_else(|| ApiError::not_found("job", &row.name))?;
    let current = version_of(&mut *tx, row.id, row.current_version).await?;
    let want = desired(state, tenant, &row, &current);
    let observed = kubernetes::get_job(&state.kube, namespace, &row.name).await?;
    let Some(drift) = drift_of(&want, observed.as_ref()) else {
        let job = observed.ok_or_else(|| ApiError::Internal("StreamJob vanished while checked".into()))?;
        let fresh = reflect(&mut tx, &row, &job, None).await?;
        tx.commit().await?;
        return Ok(fresh.unwrap_or(row));
    };
    if let Some(job) = observed.as_ref().filter(|j| j.metadata.deletion_timestamp.is_some()) {
        let fresh = reflect(&mut tx, &row, job, Some(&drift)).await?;
        tx.commit().await?;
        return Ok(fresh.unwrap_or(row));
    }
    tracing::warn!(tenant, job = %row.name, %drift, "repairing StreamJob drift");
    kubernetes::apply_namespace(&state.kube, tenant).await?;
    let manifest = spec::stream_job_manifest(tenant, namespace, &want);
    let mut applied = kubernetes::apply_job(&state.kube, namespace, &row.name, manifest).await?;
    if spec::spec_drift(&want, &applied.spec).is_some() {
        // Fields other managers added (an image, overrides) survive an apply: remove them.
        let patch = json!({ "spec": {
            "image": null, "workerResources": null, "coordinatorResources": null, "kafka": null,
            "podOverrides": null, "restartNonce": null,
            "initialSavepoint": want.settings.initial_savepoint,
        }});
        applied = kubernetes::stream_jobs(&state.kube, namespace)
            .patch(
                &row.name,
                &PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() },
                &Patch::Merge(patch),
            )
            .await?;
    }
    let change = Change {
        tenant_id: Some(row.tenant_id),
        actor: SYSTEM_ACTOR,
        action: "job.drift-repaired",
        resource_type: "job",
        resource_name: &row.name,
        details: json!({ "drift": drift }),
    };
    audit::record(&mut *tx, change).await?;
    let fresh = reflect(&mut tx, &row, &applied, Some(&drift)).await?;
    tx.commit().await?;
    Ok(fresh.unwrap_or(row))
}

/// One pass over every job of every tenant (part of the API's resync loop).
pub async fn resync_once(state: &AppState) -> Result<(), ApiError> {
    let tenants: Vec<(Uuid, String, String)> =
        sqlx::query_as("SELECT id, name, namespace FROM tenants ORDER BY created_at")
            .fetch_all(&state.db)
            .await?;
    for (tenant_id, tenant, namespace) in tenants {
        let sql = concat!("SELECT ", job_columns!(), " FROM jobs WHERE tenant_id = $1");
        let rows: Vec<JobRow> = sqlx::query_as(sql).bind(tenant_id).fetch_all(&state.db).await?;
        if rows.is_empty() {
            continue;
        }
        let mut observed = match kubernetes::list_jobs(&state.kube, &namespace).await {
            Ok(observed) => observed,
            Err(err) => {
                tracing::warn!(%tenant, error = %err, "listing StreamJobs failed");
                continue;
            }
        };
        for row in rows {
            let name = row.name.clone();
            let job = observed.remove(&name);
            match reconcile(state, &tenant, &namespace, row, job).await {
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(err) => tracing::warn!(%tenant, job = %name, error = %err, "reconciling job failed"),
            }
        }
        for unknown in observed.values() {
            tracing::warn!(%tenant, job = %unknown.name_any(), "StreamJob in a tenant namespace is not in the catalog; leaving it alone");
        }
    }
    Ok(())
}
