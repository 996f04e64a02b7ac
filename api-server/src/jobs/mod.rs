//! A tenant's stream jobs: create (validated first), list with filters, get with live status,
//! update (a new version), delete. Each job is a catalog row (desired state) plus one
//! `job_versions` row per change of what it runs, applied as a StreamJob named like the job
//! in the tenant's namespace by server-side apply; the operator runs it and its status is
//! reflected back (see [`sync`]) as the StreamJob changes ([`watch`]). Lifecycle actions (suspend, resume, rescale, savepoints,
//! versions) are in [`actions`]; the pure parts (settings, manifest, drift) in [`spec`].
//!
//! As for topics, quotas are checked with the tenant's quota row locked and the StreamJob is
//! applied inside the catalog transaction: if Kubernetes refuses, nothing is committed.

pub mod actions;
mod list;
pub mod spec;
pub mod sync;
pub mod watch;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::types::Json as SqlJson;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
use crate::audit::{self, Change};
use crate::auth::Tenant;
use crate::error::{ApiError, Problem};
use crate::http::{ApiJson, ApiQuery, Page, check_if_match, etag};
use crate::kubernetes;
use crate::quotas;
use crate::sql::check_job_sql;
use crate::topics::validate_name;
use spec::{Delivery, DesiredJob, DesiredState, JobSettings, UpgradeMode};

/// Columns of [`JobRow`], for every query that returns one.
macro_rules! job_columns {
    () => {
        "id, tenant_id, name, current_version, state, parallelism, savepoint_nonce, version, created_at, \
         updated_at, phase, ready, ready_reason, ready_message, observed_parallelism, workers, \
         last_checkpoint, last_error, drift, drift_at, observed_at"
    };
}
pub(crate) use job_columns;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub current_version: i32,
    pub state: String,
    pub parallelism: i32,
    pub savepoint_nonce: i64,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub phase: Option<String>,
    pub ready: Option<String>,
    pub ready_reason: Option<String>,
    pub ready_message: Option<String>,
    pub observed_parallelism: Option<i32>,
    pub workers: Option<String>,
    pub last_checkpoint: Option<SqlJson<Value>>,
    pub last_error: Option<String>,
    pub drift: Option<String>,
    pub drift_at: Option<DateTime<Utc>>,
    pub observed_at: Option<DateTime<Utc>>,
}

/// One version of what a job runs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VersionRow {
    pub version: i32,
    pub sql: String,
    pub settings: SqlJson<JobSettings>,
    pub cause: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// A job: what was asked for, and what the operator last reported.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub name: String,
    pub state: DesiredState,
    /// The job version it runs (see `GET /v1/jobs/{job}/versions`).
    pub job_version: i32,
    pub sql: String,
    pub settings: JobSettings,
    /// Increases with every change; the ETag is this number in quotes.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub status: JobStatusView,
}

/// The StreamJob's status as last reflected into the catalog.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobStatusView {
    /// Pending, Deploying, Running, Upgrading, Savepointing, Suspended or Failed.
    pub phase: String,
    /// `True` when the job runs as specified, `False` with a reason, `Unknown` while pending.
    pub ready: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The parallelism it runs with now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<i32>,
    /// Worker Pods ready of desired, e.g. `2/2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<String>,
    /// `{id, location, completedAt}` of the latest completed checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_savepoint: Option<actions::SavepointView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<DateTime<Utc>>,
    /// The last drift found (the StreamJob deleted or edited outside the API) and repaired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_at: Option<DateTime<Utc>>,
}

fn view(row: JobRow, current: VersionRow, last_savepoint: Option<actions::SavepointView>) -> JobView {
    JobView {
        status: JobStatusView {
            phase: row.phase.unwrap_or_else(|| "Pending".into()),
            ready: row.ready.unwrap_or_else(|| "Unknown".into()),
            reason: row.ready_reason,
            message: row.ready_message,
            parallelism: row.observed_parallelism,
            workers: row.workers,
            last_checkpoint: row.last_checkpoint.map(|j| j.0),
            last_savepoint,
            last_error: row.last_error,
            observed_at: row.observed_at,
            drift: row.drift,
            drift_at: row.drift_at,
        },
        name: row.name,
        state: DesiredState::parse(&row.state),
        job_version: row.current_version,
        sql: current.sql,
        settings: current.settings.0,
        version: row.version,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

/// `POST /v1/jobs`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateJob {
    /// 1-63 characters: lowercase letters, digits and `-`, starting and ending with a letter or digit.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// `CREATE TABLE` statements and one `INSERT INTO … SELECT …` over the tenant's topics.
    pub sql: String,
    /// Slots the job uses (counted against the tenant's `maxSlots`).
    #[schema(minimum = 1)]
    pub parallelism: i32,
    /// Key groups (default 128); immutable.
    #[serde(default)]
    pub max_parallelism: Option<i32>,
    /// Slots per worker Pod (default 1).
    #[serde(default)]
    pub slots_per_worker: Option<i32>,
    #[serde(default)]
    pub upgrade_mode: Option<UpgradeMode>,
    #[serde(default)]
    pub checkpoint_interval_ms: Option<i64>,
    #[serde(default)]
    pub delivery: Option<Delivery>,
    #[serde(default)]
    pub savepoint_interval_ms: Option<i64>,
    #[serde(default)]
    pub savepoint_history_size: Option<i32>,
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    #[serde(default)]
    pub allow_non_restored_state: bool,
    /// Start from one of the tenant's savepoints (a `location` from `GET /v1/jobs/{job}/savepoints`).
    #[serde(default)]
    pub initial_savepoint: Option<String>,
    /// Create it suspended (nothing runs until resumed). Default running.
    #[serde(default)]
    pub state: Option<DesiredState>,
}

/// `PATCH /v1/jobs/{job}`: fields present change; any change makes a new job version, which
/// reaches the running job per its `upgradeMode`. `maxParallelism` cannot change.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateJob {
    #[serde(default)]
    pub sql: Option<String>,
    #[serde(default)]
    pub parallelism: Option<i32>,
    #[serde(default)]
    pub slots_per_worker: Option<i32>,
    #[serde(default)]
    pub upgrade_mode: Option<UpgradeMode>,
    #[serde(default)]
    pub checkpoint_interval_ms: Option<i64>,
    #[serde(default)]
    pub delivery: Option<Delivery>,
    #[serde(default)]
    pub savepoint_interval_ms: Option<i64>,
    #[serde(default)]
    pub savepoint_history_size: Option<i32>,
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    #[serde(default)]
    pub allow_non_restored_state: Option<bool>,
}

impl UpdateJob {
    /// `current` with this request's changes.
    fn apply_to(&self, current: &JobSettings) -> JobSettings {
        let mut next = current.clone();
        if let Some(p) = self.parallelism {
            next.parallelism = p;
        }
        if let Some(s) = self.slots_per_worker {
            next.slots_per_worker = s;
        }
        if let Some(m) = self.upgrade_mode {
            next.upgrade_mode = m;
        }
        if self.checkpoint_interval_ms.is_some() {
            next.checkpoint_interval_ms = self.checkpoint_interval_ms;
        }
        if let Some(d) = self.delivery {
            next.delivery = d;
        }
        if self.savepoint_interval_ms.is_some() {
            next.savepoint_interval_ms = self.savepoint_interval_ms;
        }
        if self.savepoint_history_size.is_some() {
            next.savepoint_history_size = self.savepoint_history_size;
        }
        if self.dead_letter_topic.is_some() {
            next.dead_letter_topic.clone_from(&self.dead_letter_topic);
        }
        if let Some(a) = self.allow_non_restored_state {
            next.allow_non_restored_state = a;
        }
        // A savepoint to start from belongs to the first deployment only.
        next.initial_savepoint = None;
        next
    }
}

/// Filters of `GET /v1/jobs`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobListParams {
    /// Items per page, 1-200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
    /// Only jobs in this desired state: `running` or `suspended`.
    pub state: Option<String>,
    /// Only jobs whose last observed phase is this (e.g. `Running`, `Failed`).
    pub phase: Option<String>,
}

pub(crate) fn respond(status: StatusCode, view: JobView) -> Response {
    let location = HeaderValue::from_str(&format!("/v1/jobs/{}", view.name))
        .unwrap_or_else(|_| HeaderValue::from_static("/v1/jobs"));
    (status, [(header::ETAG, etag(view.version)), (header::LOCATION, location)], Json(view)).into_response()
}

pub(crate) async fn find(
    db: &mut sqlx::PgConnection,
    tenant: &Tenant,
    name: &str,
    lock: bool,
) -> Result<JobRow, ApiError> {
    let sql = if lock {
        concat!("SELECT ", job_columns!(), " FROM jobs WHERE tenant_id = $1 AND name = $2 FOR UPDATE")
    } else {
        concat!("SELECT ", job_columns!(), " FROM jobs WHERE tenant_id = $1 AND name = $2")
    };
    let row: Option<JobRow> = sqlx::query_as(sql).bind(tenant.id).bind(name).fetch_optional(&mut *db).await?;
    row.ok_or_else(|| ApiError::not_found("job", name))
}

pub(crate) async fn version_of(
    db: impl sqlx::PgExecutor<'_>,
    job_id: Uuid,
    version: i32,
) -> Result<VersionRow, ApiError> {
    let row: Option<VersionRow> = sqlx::query_as(
        "SELECT version, sql, settings, cause, created_by, created_at FROM job_versions WHERE job_id = $1 AND version = $2",
    )
    .bind(job_id)
    .bind(version)
    .fetch_optional(db)
    .await?;
    row.ok_or_else(|| ApiError::Internal(format!("job {job_id} has no version {version}")))
}

pub(crate) async fn insert_version(
    db: impl sqlx::PgExecutor<'_>,
    job_id: Uuid,
    version: i32,
    sql: &str,
    settings: &JobSettings,
    cause: &str,
    actor: &str,
) -> Result<VersionRow, ApiError> {
    Ok(sqlx::query_as(
        "INSERT INTO job_versions (job_id, version, sql, settings, cause, created_by) VALUES ($1, $2, $3, $4, $5, $6) \
         RETURNING version, sql, settings, cause, created_by, created_at",
    )
    .bind(job_id)
    .bind(version)
    .bind(sql)
    .bind(SqlJson(settings))
    .bind(cause)
    .bind(actor)
    .fetch_one(db)
    .await?)
}

/// What the StreamJob of `row` at `current` should be.
pub(crate) fn desired(state: &AppState, tenant: &str, row: &JobRow, current: &VersionRow) -> DesiredJob {
    DesiredJob {
        name: row.name.clone(),
        job_version: current.version,
        sql: current.sql.clone(),
        settings: current.settings.0.clone(),
        state: DesiredState::parse(&row.state),
        savepoint_nonce: row.savepoint_nonce,
        checkpoint_storage: spec::checkpoint_storage_for(
            state.checkpoint_storage.as_deref(),
            tenant,
            &row.name,
        ),
        transactional_id_prefix: format!("{tenant}.{}", row.name),
    }
}

/// Applies the StreamJob of `row` at `current`.
pub(crate) async fn apply(
    state: &AppState,
    tenant: &Tenant,
    row: &JobRow,
    current: &VersionRow,
) -> Result<(), ApiError> {
    let desired = desired(state, &tenant.name, row, current);
    let manifest = spec::stream_job_manifest(&tenant.name, &tenant.namespace, &desired);
    kubernetes::apply_job(&state.kube, &tenant.namespace, &row.name, manifest).await?;
    Ok(())
}

/// Checks the slots and jobs quotas for the tenant with `job` (excluded from the usage) at
/// `parallelism` in `state`. Call with the quota row locked.
pub(crate) async fn check_quota(
    tx: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    job: Option<Uuid>,
    parallelism: i32,
    state: DesiredState,
) -> Result<(), ApiError> {
    let limits = quotas::lock(tx, tenant_id).await?;
    let others = quotas::usage(tx, tenant_id, job).await?;
    let slots = if state == DesiredState::Running { i64::from(parallelism) } else { 0 };
    quotas::check_jobs(&limits, others.jobs + 1, others.slots + slots)
}

/// The savepoint location must be one the catalog recorded for the tenant.
async fn check_savepoint_is_the_tenants(
    db: &sqlx::PgPool,
    tenant: &Tenant,
    location: &str,
) -> Result<(), ApiError> {
    let known: Option<(Uuid,)> =
        sqlx::query_as("SELECT id FROM savepoints WHERE tenant_id = $1 AND location = $2 LIMIT 1")
            .bind(tenant.id)
            .bind(location)
            .fetch_optional(db)
            .await?;
    known.map(|_| ()).ok_or_else(|| {
        ApiError::validation(
            "initialSavepoint",
            "not a savepoint of this tenant's jobs: use a location from GET /v1/jobs/{job}/savepoints",
        )
    })
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_job, list_jobs))
        .routes(routes!(get_job, update_job, delete_job))
        .merge(actions::router())
}

/// Creates a job after planning its SQL: a catalog row, version 1, and a StreamJob in the
/// tenant's namespace.
#[utoipa::path(
    post, path = "/v1/jobs", tag = "jobs", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated key")),
    request_body = CreateJob,
    responses(
        (status = 201, body = JobView, headers(("ETag" = String))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, description = "Quota exceeded", content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, description = "Invalid field or SQL (with line and column)", content_type = "application/problem+json"),
    )
)]
async fn create_job(
    State(state): State<AppState>,
    tenant: Tenant,
    ApiJson(request): ApiJson<CreateJob>,
) -> Result<Response, ApiError> {
    validate_name(&request.name)?;
    let settings = JobSettings {
        parallelism: request.parallelism,
        max_parallelism: request.max_parallelism.unwrap_or(millrace_crds::v1alpha1::DEFAULT_MAX_PARALLELISM),
        slots_per_worker: request.slots_per_worker.unwrap_or(1),
        upgrade_mode: request.upgrade_mode.unwrap_or_default(),
        checkpoint_interval_ms: request.checkpoint_interval_ms,
        delivery: request.delivery.unwrap_or_default(),
        savepoint_interval_ms: request.savepoint_interval_ms,
        savepoint_history_size: request.savepoint_history_size,
        dead_letter_topic: request.dead_letter_topic.clone(),
        allow_non_restored_state: request.allow_non_restored_state,
        initial_savepoint: request.initial_savepoint.clone(),
    };
    settings.validate(&tenant.name)?;
    check_job_sql(&tenant.name, &request.sql, "sql")?;
    if let Some(location) = &settings.initial_savepoint {
        check_savepoint_is_the_tenants(&state.db, &tenant, location).await?;
    }
    let desired_state = request.state.unwrap_or_default();

    let mut tx = state.db.begin().await?;
    check_quota(&mut tx, tenant.id, None, settings.parallelism, desired_state).await?;
    let sql = concat!(
        "INSERT INTO jobs (id, tenant_id, name, state, parallelism, phase, ready, ready_reason) \
         VALUES ($1, $2, $3, $4, $5, 'Pending', 'Unknown', 'Pending') RETURNING ",
        job_columns!()
    );
    let row: JobRow = sqlx::query_as(sql)
        .bind(Uuid::new_v4())
        .bind(tenant.id)
        .bind(&request.name)
        .bind(desired_state.as_str())
        .bind(settings.parallelism)
        .fetch_one(&mut *tx)
        .await?;
    let actor = tenant.actor();
    let current = insert_version(&mut *tx, row.id, 1, &request.sql, &settings, "create", &actor).await?;
    let change = Change {
        tenant_id: Some(tenant.id),
        actor: &actor,
        action: "job.create",
        resource_type: "job",
        resource_name: &row.name,
        details: json!({ "jobVersion": 1, "settings": settings, "state": desired_state }),
    };
    audit::record(&mut *tx, change).await?;
    kubernetes::apply_namespace(&state.kube, &tenant.name).await?;
    apply(&state, &tenant, &row, &current).await?;
    tx.commit().await?;
    Ok(respond(StatusCode::CREATED, view(row, current, None)))
}

/// Lists the tenant's jobs, oldest first, each with its status as last reflected from its
/// StreamJob (the api-server watches them; see `GET /v1/jobs/{job}` for a live read).
#[utoipa::path(
    get, path = "/v1/jobs", tag = "jobs", security(("bearer" = [])), params(JobListParams),
    responses(
        (status = 200, body = Page<JobView>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_jobs(
    State(state): State<AppState>,
    tenant: Tenant,
    ApiQuery(params): ApiQuery<JobListParams>,
) -> Result<Json<Page<JobView>>, ApiError> {
    Ok(Json(list::page(&state.db, tenant.id, &params).await?))
}

/// The view of `row`: its current version and its latest savepoint.
pub(crate) async fn load_view(state: &AppState, row: JobRow) -> Result<JobView, ApiError> {
    let current = version_of(&state.db, row.id, row.current_version).await?;
    let last = actions::latest_savepoint(&state.db, row.tenant_id, &row.name).await?;
    Ok(view(row, current, last))
}

/// One job with its live status (phase, parallelism, workers, last checkpoint and savepoint,
/// last error), reflected from its StreamJob (and drift repaired).
#[utoipa::path(
    get, path = "/v1/jobs/{job}", tag = "jobs", security(("bearer" = [])),
    params(("job" = String, Path, description = "Job name")),
    responses(
        (status = 200, body = JobView, headers(("ETag" = String))),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_job(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let mut conn = state.db.acquire().await?;
    let row = find(&mut conn, &tenant, &name, false).await?;
    drop(conn);
    let observed = kubernetes::get_job(&state.kube, &tenant.namespace, &name).await?;
    let row = sync::reconcile(&state, &tenant.name, &tenant.namespace, row, observed).await?;
    Ok(respond(StatusCode::OK, load_view(&state, row).await?))
}

/// Changes what the job runs: a new job version (SQL planned first), applied to the StreamJob,
/// which the operator rolls out per `upgradeMode`. `If-Match` makes it conditional.
#[utoipa::path(
    patch, path = "/v1/jobs/{job}", tag = "jobs", security(("bearer" = [])),
    params(
        ("job" = String, Path, description = "Job name"),
        ("If-Match" = Option<String>, Header, description = "ETag of the job as last read"),
    ),
    request_body = UpdateJob,
    responses(
        (status = 200, body = JobView, headers(("ETag" = String))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, description = "Quota exceeded", content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn update_job(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(name): Path<String>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<UpdateJob>,
) -> Result<Response, ApiError> {
    if let Some(sql) = &request.sql {
        check_job_sql(&tenant.name, sql, "sql")?;
    }
    let mut tx = state.db.begin().await?;
    let row = find(&mut tx, &tenant, &name, true).await?;
    check_if_match(&headers, row.version)?;
    let current = version_of(&mut *tx, row.id, row.current_version).await?;
    let settings = request.apply_to(&current.settings.0);
    settings.validate(&tenant.name)?;
    let sql = request.sql.clone().unwrap_or_else(|| current.sql.clone());
    let mut unchanged = current.settings.0.clone();
    unchanged.initial_savepoint = None;
    if sql == current.sql && settings == unchanged {
        tx.commit().await?;
        return Ok(respond(StatusCode::OK, load_view(&state, row).await?));
    }
    let cause = if sql == current.sql && settings.parallelism != unchanged.parallelism {
        "rescale"
    } else {
        "update"
    };
    let (row, next) = new_version(&mut tx, &tenant, row, &current, &sql, &settings, cause).await?;
    apply(&state, &tenant, &row, &next).await?;
    tx.commit().await?;
    Ok(respond(StatusCode::OK, load_view(&state, row).await?))
}

/// Stores version `row.current_version + 1` (quota checked) and points the job at it; audited.
pub(crate) async fn new_version(
    tx: &mut sqlx::PgConnection,
    tenant: &Tenant,
    row: JobRow,
    current: &VersionRow,
    sql: &str,
    settings: &JobSettings,
    cause: &str,
) -> Result<(JobRow, VersionRow), ApiError> {
    if settings.parallelism != row.parallelism {
        check_quota(tx, tenant.id, Some(row.id), settings.parallelism, DesiredState::parse(&row.state))
            .await?;
    }
    let actor = tenant.actor();
    let next_version = row.current_version + 1;
    let next = insert_version(&mut *tx, row.id, next_version, sql, settings, cause, &actor).await?;
    let update = concat!(
        "UPDATE jobs SET current_version = $2, parallelism = $3, version = version + 1, updated_at = now(), \
         ready = 'Unknown', ready_reason = 'Pending' WHERE id = $1 RETURNING ",
        job_columns!()
    );
    let updated: JobRow = sqlx::query_as(update)
        .bind(row.id)
        .bind(next_version)
        .bind(settings.parallelism)
        .fetch_one(&mut *tx)
        .await?;
    let change = Change {
        tenant_id: Some(tenant.id),
        actor: &actor,
        action: if cause == "rescale" { "job.rescale" } else { "job.update" },
        resource_type: "job",
        resource_name: &row.name,
        details: json!({
            "jobVersion": { "from": row.current_version, "to": next_version },
            "parallelism": { "from": row.parallelism, "to": settings.parallelism },
            "sqlChanged": sql != current.sql,
        }),
    };
    audit::record(&mut *tx, change).await?;
    Ok((updated, next))
}

/// Deletes a job: its StreamJob goes, and with it the coordinator and workers. The job's
/// savepoints stay recorded (and in storage), so a job created again under the same name
/// can start from one.
#[utoipa::path(
    delete, path = "/v1/jobs/{job}", tag = "jobs", security(("bearer" = [])),
    params(
        ("job" = String, Path, description = "Job name"),
        ("If-Match" = Option<String>, Header, description = "ETag of the job as last read"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_job(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let mut tx = state.db.begin().await?;
    let row = find(&mut tx, &tenant, &name, true).await?;
    check_if_match(&headers, row.version)?;
    sqlx::query("DELETE FROM jobs WHERE id = $1").bind(row.id).execute(&mut *tx).await?;
    let change = Change {
        tenant_id: Some(tenant.id),
        actor: &tenant.actor(),
        action: "job.delete",
        resource_type: "job",
        resource_name: &name,
        details: json!({ "jobVersion": row.current_version }),
    };
    audit::record(&mut *tx, change).await?;
    kubernetes::delete_job(&state.kube, &tenant.namespace, &name).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_changes_only_what_it_names_and_drops_the_initial_savepoint() {
        let mut current = spec::tests_support::settings();
        current.initial_savepoint = Some("s3://x/savepoint-1".into());
        let update = UpdateJob { parallelism: Some(4), ..UpdateJob::default() };
        let next = update.apply_to(&current);
        assert_eq!(next.parallelism, 4);
        assert_eq!(next.slots_per_worker, current.slots_per_worker);
        assert_eq!(next.initial_savepoint, None);
    }
}
