//! The audit log: who did what, when. Feature modules call [`record`] inside the same
//! transaction as the change, so an event exists exactly when the change was committed.
//! `GET /v1/audit` lists a tenant's own events (the admin sees every tenant's).

use axum::extract::State;
use axum::response::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::{ApiQuery, Page, PageParams, decode_serial_cursor};
use crate::request_id;

/// One change, as recorded.
#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub id: i64,
    /// The tenant the change concerns (absent for none).
    pub tenant: Option<String>,
    /// `admin` or `key:<API key prefix>`.
    pub actor: String,
    /// e.g. `topic.create`, `tenant.delete`, `topic.drift-repaired`.
    pub action: String,
    pub resource_type: String,
    pub resource_name: String,
    pub details: serde_json::Value,
    pub request_id: Option<String>,
    pub at: DateTime<Utc>,
}

/// What happened, for [`record`].
pub struct Change<'a> {
    pub tenant_id: Option<Uuid>,
    pub actor: &'a str,
    pub action: &'a str,
    pub resource_type: &'a str,
    pub resource_name: &'a str,
    pub details: serde_json::Value,
}

/// Records `change` with the current request id.
pub async fn record(db: impl sqlx::PgExecutor<'_>, change: Change<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_events (tenant_id, actor, action, resource_type, resource_name, details, request_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(change.tenant_id)
    .bind(change.actor)
    .bind(change.action)
    .bind(change.resource_type)
    .bind(change.resource_name)
    .bind(change.details)
    .bind(request_id::current())
    .execute(db)
    .await?;
    Ok(())
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

/// Filters of `GET /v1/audit`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Items per page, 1-200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
    /// Admin only: one tenant's events.
    pub tenant: Option<String>,
    /// Only this action, e.g. `topic.create`.
    pub action: Option<String>,
}

/// Lists audit events, oldest first.
#[utoipa::path(
    get, path = "/v1/audit", tag = "audit", params(AuditParams),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Page<AuditEvent>),
        (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
async fn list_audit(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Json<Page<AuditEvent>>, ApiError> {
    let limit = PageParams { limit: params.limit, cursor: None }.limit()?;
    let after = decode_serial_cursor(params.cursor.as_deref())?;
    let tenant_id: Option<Uuid> = match (&principal, &params.tenant) {
        (Principal::Tenant(t), None) => Some(t.id),
        (Principal::Tenant(_), Some(_)) => {
            return Err(ApiError::bad_request("tenant", "only the admin may filter by tenant"));
        }
        (Principal::Admin, Some(name)) => {
            let id: Option<(Uuid,)> = sqlx::query_as("SELECT id FROM tenants WHERE name = $1")
                .bind(name)
                .fetch_optional(&state.db)
                .await?;
            Some(id.ok_or_else(|| ApiError::not_found("tenant", name))?.0)
        }
        (Principal::Admin, None) => None,
    };
    let admin_all = tenant_id.is_none();
    let rows: Vec<AuditEvent> = sqlx::query_as(
        "SELECT a.id, t.name AS tenant, a.actor, a.action, a.resource_type, a.resource_name, a.details, \
                a.request_id, a.at \
         FROM audit_events a LEFT JOIN tenants t ON t.id = a.tenant_id \
         WHERE a.id > $1 AND ($2 OR a.tenant_id = $3) AND ($4::text IS NULL OR a.action = $4) \
         ORDER BY a.id LIMIT $5",
    )
    .bind(after)
    .bind(admin_all)
    .bind(tenant_id)
    .bind(params.action.as_deref())
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(Page::from_rows(rows, limit, |e| e.id.to_string())))
}
