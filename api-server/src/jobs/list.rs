//! `GET /v1/jobs` as one catalog query: each job's row, its current version and its latest
//! savepoint, joined (no query per job, no call to Kubernetes).
//!
//! The status in the rows is what the StreamJob watch ([`super::watch`]) and the resync loop
//! last reflected, so a list never waits on the Kubernetes API and costs the same whether
//! the tenant has one job or two hundred. This module reads; it writes nothing.

use chrono::{DateTime, Utc};
use sqlx::types::Json as SqlJson;
use uuid::Uuid;

use super::spec::JobSettings;
use super::{JobListParams, JobRow, JobView, VersionRow, actions::SavepointView, view};
use crate::error::ApiError;
use crate::http::{Keyset, Page, PageParams};

/// A job row with its current version and latest savepoint, as the list query returns it.
#[derive(sqlx::FromRow)]
struct ListedJob {
    #[sqlx(flatten)]
    job: JobRow,
    v_version: i32,
    v_sql: String,
    v_settings: SqlJson<JobSettings>,
    v_cause: String,
    v_created_by: String,
    v_created_at: DateTime<Utc>,
    sp_location: Option<String>,
    sp_trigger: Option<String>,
    sp_parallelism: Option<i32>,
    sp_completed_at: Option<DateTime<Utc>>,
}

impl ListedJob {
    fn into_view(self) -> JobView {
        let current = VersionRow {
            version: self.v_version,
            sql: self.v_sql,
            settings: self.v_settings,
            cause: self.v_cause,
            created_by: self.v_created_by,
            created_at: self.v_created_at,
        };
        let last_savepoint =
            match (self.sp_location, self.sp_trigger, self.sp_parallelism, self.sp_completed_at) {
                (Some(location), Some(trigger), Some(parallelism), Some(completed_at)) => {
                    Some(SavepointView { location, trigger, parallelism, completed_at })
                }
                _ => None,
            };
        view(self.job, current, last_savepoint)
    }
}

/// `j.*` is the jobs table (read by name into [`JobRow`]); the other columns are prefixed so
/// that none shadows a job column.
const LIST_SQL: &str = "SELECT j.*, \
       v.version AS v_version, v.sql AS v_sql, v.settings AS v_settings, v.cause AS v_cause, \
       v.created_by AS v_created_by, v.created_at AS v_created_at, \
       s.location AS sp_location, s.trigger AS sp_trigger, s.parallelism AS sp_parallelism, \
       s.completed_at AS sp_completed_at \
     FROM jobs j \
     JOIN job_versions v ON v.job_id = j.id AND v.version = j.current_version \
     LEFT JOIN LATERAL ( \
       SELECT location, trigger, parallelism, completed_at FROM savepoints \
       WHERE tenant_id = j.tenant_id AND job_name = j.name ORDER BY completed_at DESC, id LIMIT 1 \
     ) s ON true \
     WHERE j.tenant_id = $1 AND (j.created_at, j.id) > ($2, $3) \
       AND ($4::text IS NULL OR j.state = $4) AND ($5::text IS NULL OR j.phase = $5) \
     ORDER BY j.created_at, j.id LIMIT $6";

/// One page of the tenant's jobs, oldest first.
pub async fn page(
    db: &sqlx::PgPool,
    tenant_id: Uuid,
    params: &JobListParams,
) -> Result<Page<JobView>, ApiError> {
    let limit = PageParams { limit: params.limit, cursor: None }.limit()?;
    let after = Keyset::decode(params.cursor.as_deref())?;
    if let Some(s) = params.state.as_deref()
        && !["running", "suspended"].contains(&s)
    {
        return Err(ApiError::bad_request("state", "state is running or suspended"));
    }
    let rows: Vec<ListedJob> = sqlx::query_as(LIST_SQL)
        .bind(tenant_id)
        .bind(after.at)
        .bind(after.id)
        .bind(params.state.as_deref())
        .bind(params.phase.as_deref())
        .bind(limit + 1)
        .fetch_all(db)
        .await?;
    let page = Page::from_rows(rows, limit, |r| Keyset::key(r.job.created_at, r.job.id));
    Ok(page.map(ListedJob::into_view))
}
