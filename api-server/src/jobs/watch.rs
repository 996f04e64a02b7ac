//! The StreamJob watch: one Kubernetes watch over every StreamJob the api-server manages
//! (label-selected, in all tenant namespaces), and each change it reports brought into the
//! catalog by [`sync::reconcile`]: the status is reflected into the job's row, a StreamJob
//! edited by hand is re-applied, one deleted by hand is re-created.
//!
//! This is what keeps the rows current, so that listing jobs is a catalog read. Events are
//! handled one at a time, in the order the API server sends them, so an older status never
//! overwrites a newer one. A StreamJob in a namespace that is no tenant's of this catalog
//! (another installation's) is left alone; one of a tenant's namespace that the catalog does
//! not have yet (its creating transaction had not committed when the event came) is looked at
//! again shortly after ([`RECHECK_AFTER`]).
//! A gap in the watch (a restart, a relist) is covered by the resync loop, which compares
//! every job with a fresh list.

use std::time::Duration;

use futures::StreamExt;
use kube::ResourceExt;
use kube::api::Api;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use millrace_crds::v1alpha1::StreamJob;
use uuid::Uuid;

use super::{JobRow, job_columns, sync};
use crate::AppState;
use crate::error::ApiError;
use crate::kubernetes::{self, MANAGED_BY};

/// What the watch saw of one StreamJob.
enum Seen {
    /// It exists (possibly being deleted) and reads as a StreamJob.
    Present(Box<StreamJob>),
    /// It was deleted.
    Deleted,
}

/// The label selector of every StreamJob the api-server applies.
pub fn selector() -> String {
    format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)
}

/// Watches the api-server's StreamJobs until the stream ends (it does not: the watcher
/// re-lists and re-watches with backoff after every error, which is logged).
pub async fn run(state: AppState) {
    let api: Api<DeserializeGuard<StreamJob>> = Api::all(state.kube.clone());
    let config = watcher::Config::default().labels(&selector());
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    tracing::info!(selector = %selector(), "watching StreamJobs");
    while let Some(event) = events.next().await {
        let (guard, seen) = match event {
            Ok(Event::Apply(guard) | Event::InitApply(guard)) => {
                let seen = match &guard.0 {
                    Ok(job) => Seen::Present(Box::new(job.clone())),
                    Err(invalid) => {
                        tracing::warn!(namespace = ?guard.namespace(), name = %guard.name_any(), error = %invalid.error,
                            "a StreamJob that does not read as one; the resync loop reports it");
                        continue;
                    }
                };
                (guard, seen)
            }
            Ok(Event::Delete(guard)) => (guard, Seen::Deleted),
            Ok(Event::Init | Event::InitDone) => continue,
            Err(err) => {
                tracing::warn!(error = %err, "the StreamJob watch failed; it restarts with backoff");
                continue;
            }
        };
        let Some(namespace) = guard.namespace() else { continue };
        let name = guard.name_any();
        if let Err(err) = handle(&state, &namespace, &name, seen).await {
            tracing::warn!(%namespace, job = %name, error = %err, "reflecting a StreamJob change failed; the resync loop retries");
        }
    }
}

/// Brings the catalog's job `namespace/name` in step with what was seen.
async fn handle(state: &AppState, namespace: &str, name: &str, seen: Seen) -> Result<(), ApiError> {
    let row = match find_job(&state.db, namespace, name).await? {
        Found::Job(tenant, row) => (tenant, *row),
        Found::NoTenant => return Ok(()),
        Found::NoJob => {
            if matches!(seen, Seen::Present(_)) {
                tokio::spawn(recheck(state.clone(), namespace.to_owned(), name.to_owned()));
            }
            return Ok(());
        }
    };
    let (tenant, row) = row;
    let observed = match seen {
        Seen::Present(job) => Some(*job),
        Seen::Deleted => None,
    };
    reconcile(state, &tenant, namespace, row, observed).await
}

async fn reconcile(
    state: &AppState,
    tenant: &str,
    namespace: &str,
    row: JobRow,
    observed: Option<StreamJob>,
) -> Result<(), ApiError> {
    match sync::reconcile(state, tenant, namespace, row, observed).await {
        // Deleted from the catalog meanwhile (the API deleted it): nothing to reflect.
        Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
        Err(err) => Err(err),
    }
}

/// How long after seeing a StreamJob of a tenant's namespace that the catalog does not (yet)
/// have to look again. A job's StreamJob is applied inside the transaction that creates its
/// row, so the operator's first status can arrive before that commit; the status of a job
/// that then does not change (a suspended one) would otherwise wait for the resync loop.
const RECHECK_AFTER: [Duration; 3] =
    [Duration::from_millis(200), Duration::from_secs(1), Duration::from_secs(5)];

/// Looks again (with a fresh read of the StreamJob) until the catalog has the job.
async fn recheck(state: AppState, namespace: String, name: String) {
    for delay in RECHECK_AFTER {
        tokio::time::sleep(delay).await;
        let result = async {
            let Found::Job(tenant, row) = find_job(&state.db, &namespace, &name).await? else {
                return Ok(false);
            };
            let observed = kubernetes::get_job(&state.kube, &namespace, &name).await?;
            reconcile(&state, &tenant, &namespace, *row, observed).await.map(|()| true)
        }
        .await;
        match result {
            Ok(true) => return,
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(%namespace, job = %name, error = %err, "re-checking a StreamJob failed")
            }
        }
    }
    tracing::debug!(%namespace, job = %name, "a StreamJob the catalog does not know; left alone");
}

/// What the catalog has behind a StreamJob.
enum Found {
    /// The tenant's name and the job's row.
    Job(String, Box<JobRow>),
    /// The namespace is a tenant's, the job is not (yet) in the catalog.
    NoJob,
    /// The namespace is no tenant's of this catalog.
    NoTenant,
}

async fn find_job(db: &sqlx::PgPool, namespace: &str, name: &str) -> Result<Found, ApiError> {
    let tenant: Option<(Uuid, String)> = sqlx::query_as("SELECT id, name FROM tenants WHERE namespace = $1")
        .bind(namespace)
        .fetch_optional(db)
        .await?;
    let Some((tenant_id, tenant)) = tenant else { return Ok(Found::NoTenant) };
    let sql = concat!("SELECT ", job_columns!(), " FROM jobs WHERE tenant_id = $1 AND name = $2");
    let row: Option<JobRow> = sqlx::query_as(sql).bind(tenant_id).bind(name).fetch_optional(db).await?;
    Ok(row.map_or(Found::NoJob, |row| Found::Job(tenant, Box::new(row))))
}
