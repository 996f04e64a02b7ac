//! Per-tenant quotas: the limits (topics, total partitions, jobs, slots of running jobs), the
//! usage derived from the catalog, and the checks that refuse a
//! change before anything is created. Checks run with the tenant's quota row locked
//! (`FOR UPDATE`), so two concurrent creations cannot both slip under a limit.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Json, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
use crate::audit::{self, Change};
use crate::auth::{Admin, Tenant};
use crate::error::{ApiError, Problem};
use crate::http::{ApiJson, check_if_match, etag};

/// A tenant's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaLimits {
    /// Topics the tenant may have.
    #[schema(minimum = 0, maximum = 1000000)]
    pub max_topics: i32,
    /// Partitions summed over all its topics.
    #[schema(minimum = 0, maximum = 1000000)]
    pub max_partitions: i32,
    /// StreamJobs (enforced once the job API exists).
    #[schema(minimum = 0, maximum = 1000000)]
    pub max_jobs: i32,
    /// Worker slots over all jobs (enforced once the job API exists).
    #[schema(minimum = 0, maximum = 1000000)]
    pub max_slots: i32,
}

impl Default for QuotaLimits {
    fn default() -> Self {
        Self { max_topics: 20, max_partitions: 120, max_jobs: 10, max_slots: 32 }
    }
}

impl QuotaLimits {
    pub fn validate(&self, prefix: &str) -> Result<(), ApiError> {
        for (name, value) in [
            ("maxTopics", self.max_topics),
            ("maxPartitions", self.max_partitions),
            ("maxJobs", self.max_jobs),
            ("maxSlots", self.max_slots),
        ] {
            if !(0..=1_000_000).contains(&value) {
                return Err(ApiError::validation(format!("{prefix}{name}"), "must be between 0 and 1000000"));
            }
        }
        Ok(())
    }
}

/// What a tenant uses now.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct QuotaUsage {
    pub topics: i64,
    pub partitions: i64,
    pub jobs: i64,
    pub slots: i64,
}

/// Limits, usage and the version the ETag is made from.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaView {
    pub limits: QuotaLimits,
    pub usage: QuotaUsage,
    pub version: i64,
}

#[derive(sqlx::FromRow)]
struct QuotaRow {
    #[sqlx(flatten)]
    limits: QuotaLimits,
    version: i64,
}

/// Locks the tenant's quota row for the rest of the transaction and returns its limits.
pub async fn lock(tx: &mut sqlx::PgConnection, tenant_id: Uuid) -> Result<QuotaLimits, ApiError> {
    let row: QuotaRow = sqlx::query_as(
        "SELECT max_topics, max_partitions, max_jobs, max_slots, version FROM quotas WHERE tenant_id = $1 FOR UPDATE",
    )
    .bind(tenant_id)
    .fetch_one(&mut *tx)
    .await?;
    Ok(row.limits)
}

/// Current usage from the catalog; `excluding` leaves one topic out (the one being updated).
pub async fn usage(
    db: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    excluding: Option<Uuid>,
) -> Result<QuotaUsage, ApiError> {
    let usage: QuotaUsage = sqlx::query_as(
        "SELECT t.topics, t.partitions, j.jobs, j.slots FROM \
           (SELECT count(*) AS topics, COALESCE(sum(partitions), 0)::bigint AS partitions \
              FROM topics WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id <> $2)) t, \
           (SELECT count(*) AS jobs, \
                   COALESCE(sum(parallelism) FILTER (WHERE state = 'running'), 0)::bigint AS slots \
              FROM jobs WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id <> $2)) j",
    )
    .bind(tenant_id)
    .bind(excluding)
    .fetch_one(&mut *db)
    .await?;
    Ok(usage)
}

/// Refuses a topic set of `topics` topics with `partitions` partitions in total.
pub fn check_topics(limits: &QuotaLimits, topics: i64, partitions: i64) -> Result<(), ApiError> {
    if topics > i64::from(limits.max_topics) {
        return Err(ApiError::QuotaExceeded {
            quota: "maxTopics",
            detail: format!("the tenant may have {} topics and this would make {topics}", limits.max_topics),
        });
    }
    if partitions > i64::from(limits.max_partitions) {
        return Err(ApiError::QuotaExceeded {
            quota: "maxPartitions",
            detail: format!(
                "the tenant may have {} partitions over all its topics and this would make {partitions}",
                limits.max_partitions
            ),
        });
    }
    Ok(())
}

/// Refuses a change that would take the tenant over its jobs or slots limit. Slots are the
/// parallelism of its running jobs (a suspended job holds none).
pub fn check_jobs(limits: &QuotaLimits, jobs: i64, slots: i64) -> Result<(), ApiError> {
    if jobs > i64::from(limits.max_jobs) {
        return Err(ApiError::QuotaExceeded {
            quota: "maxJobs",
            detail: format!("the tenant may have {} jobs and this would make {jobs}", limits.max_jobs),
        });
    }
    if slots > i64::from(limits.max_slots) {
        return Err(ApiError::QuotaExceeded {
            quota: "maxSlots",
            detail: format!(
                "the tenant may use {} slots over its running jobs and this would make {slots}; \
                 lower the parallelism or suspend another job",
                limits.max_slots
            ),
        });
    }
    Ok(())
}

pub async fn view(db: &mut sqlx::PgConnection, tenant_id: Uuid) -> Result<QuotaView, ApiError> {
    let row: QuotaRow = sqlx::query_as(
        "SELECT max_topics, max_partitions, max_jobs, max_slots, version FROM quotas WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_one(&mut *db)
    .await?;
    let usage = usage(db, tenant_id, None).await?;
    Ok(QuotaView { limits: row.limits, usage, version: row.version })
}

fn with_etag(view: QuotaView) -> Response {
    ([(header::ETAG, etag(view.version))], Json(view)).into_response()
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(own_quota)).routes(routes!(get_tenant_quota, put_tenant_quota))
}

async fn tenant_id(db: &sqlx::PgPool, name: &str) -> Result<Uuid, ApiError> {
    let row: Option<(Uuid,)> =
        sqlx::query_as("SELECT id FROM tenants WHERE name = $1").bind(name).fetch_optional(db).await?;
    Ok(row.ok_or_else(|| ApiError::not_found("tenant", name))?.0)
}

/// The calling tenant's limits and usage.
#[utoipa::path(
    get, path = "/v1/quota", tag = "quotas", security(("bearer" = [])),
    responses((status = 200, body = QuotaView), (status = 401, body = Problem, content_type = "application/problem+json"))
)]
async fn own_quota(State(state): State<AppState>, tenant: Tenant) -> Result<Response, ApiError> {
    let mut conn = state.db.acquire().await?;
    Ok(with_etag(view(&mut conn, tenant.id).await?))
}

/// A tenant's limits and usage (admin).
#[utoipa::path(
    get, path = "/v1/tenants/{tenant}/quota", tag = "tenants", security(("bearer" = [])),
    params(("tenant" = String, Path, description = "Tenant name")),
    responses(
        (status = 200, body = QuotaView),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_tenant_quota(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let id = tenant_id(&state.db, &name).await?;
    let mut conn = state.db.acquire().await?;
    Ok(with_etag(view(&mut conn, id).await?))
}

/// Replaces a tenant's limits (admin). `If-Match` with the quota's ETag makes it conditional.
/// Lowering a limit below current usage is allowed: it only stops further growth.
#[utoipa::path(
    put, path = "/v1/tenants/{tenant}/quota", tag = "tenants", security(("bearer" = [])),
    params(
        ("tenant" = String, Path, description = "Tenant name"),
        ("If-Match" = Option<String>, Header, description = "ETag of the quota as last read"),
    ),
    request_body = QuotaLimits,
    responses(
        (status = 200, body = QuotaView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn put_tenant_quota(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
    headers: HeaderMap,
    ApiJson(limits): ApiJson<QuotaLimits>,
) -> Result<Response, ApiError> {
    limits.validate("")?;
    let id = tenant_id(&state.db, &name).await?;
    let mut tx = state.db.begin().await?;
    let (version,): (i64,) = sqlx::query_as("SELECT version FROM quotas WHERE tenant_id = $1 FOR UPDATE")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    check_if_match(&headers, version)?;
    sqlx::query(
        "UPDATE quotas SET max_topics = $2, max_partitions = $3, max_jobs = $4, max_slots = $5, version = version + 1 \
         WHERE tenant_id = $1",
    )
    .bind(id)
    .bind(limits.max_topics)
    .bind(limits.max_partitions)
    .bind(limits.max_jobs)
    .bind(limits.max_slots)
    .execute(&mut *tx)
    .await?;
    let change = Change {
        tenant_id: Some(id),
        actor: "admin",
        action: "quota.update",
        resource_type: "quota",
        resource_name: &name,
        details: json!(limits),
    };
    audit::record(&mut *tx, change).await?;
    let view = view(&mut tx, id).await?;
    tx.commit().await?;
    Ok(with_etag(view))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked_in_order_and_name_the_quota() {
        let limits = QuotaLimits { max_topics: 2, max_partitions: 10, ..QuotaLimits::default() };
        assert!(check_topics(&limits, 2, 10).is_ok());
        let problem = check_topics(&limits, 3, 3).expect_err("too many topics").problem();
        assert_eq!((problem.status, problem.field.as_deref()), (403, Some("quota.maxTopics")));
        let problem = check_topics(&limits, 1, 11).expect_err("too many partitions").problem();
        assert_eq!(problem.field.as_deref(), Some("quota.maxPartitions"));
        assert!(QuotaLimits { max_jobs: -1, ..limits }.validate("quota.").is_err());
    }
}
