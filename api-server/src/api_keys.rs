//! A tenant's API keys: create (the key is returned once, only its SHA-256 is kept), list
//! (prefixes and metadata, never secrets) and revoke. Scoped to the calling tenant: another
//! tenant's key id is 404.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
use crate::audit::{self, Change};
use crate::auth::{self, Tenant};
use crate::error::{ApiError, Problem};
use crate::http::{ApiJson, ApiQuery, Keyset, Page, PageParams};

/// `POST /v1/api-keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateApiKey {
    /// What the key is for, 1-100 characters, no control characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
}

/// An API key's metadata.
#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyView {
    pub id: Uuid,
    pub name: String,
    /// The visible start of the key (`mr_xxxxxxxxxx`), as in the audit log's actor.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A new key: `key` is shown here once and cannot be read again.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub meta: ApiKeyView,
    /// The secret: send it as `Authorization: Bearer <key>`.
    pub key: String,
}

/// Inserts a new key for `tenant_id` and records it; the caller commits.
pub async fn insert(
    tx: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    actor: &str,
    request: &CreateApiKey,
) -> Result<CreatedApiKey, ApiError> {
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::validation("name", "1-100 characters, no control characters"));
    }
    let (key, prefix, hash) = auth::generate_key();
    let meta: ApiKeyView = sqlx::query_as(
        "INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash) VALUES ($1, $2, $3, $4, $5) \
         RETURNING id, name, prefix, created_at, last_used_at, revoked_at",
    )
    .bind(Uuid::new_v4())
    .bind(tenant_id)
    .bind(name)
    .bind(&prefix)
    .bind(hash.as_slice())
    .fetch_one(&mut *tx)
    .await?;
    let change = Change {
        tenant_id: Some(tenant_id),
        actor,
        action: "api_key.create",
        resource_type: "api_key",
        resource_name: &prefix,
        details: json!({ "id": meta.id, "name": name }),
    };
    audit::record(&mut *tx, change).await?;
    Ok(CreatedApiKey { meta, key })
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_key, list_keys)).routes(routes!(revoke_key))
}

/// Creates an API key for the calling tenant.
#[utoipa::path(
    post, path = "/v1/api-keys", tag = "api-keys", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated key")),
    request_body = CreateApiKey,
    responses(
        (status = 201, body = CreatedApiKey),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_key(
    State(state): State<AppState>,
    tenant: Tenant,
    ApiJson(request): ApiJson<CreateApiKey>,
) -> Result<Response, ApiError> {
    let mut tx = state.db.begin().await?;
    let created = insert(&mut tx, tenant.id, &tenant.actor(), &request).await?;
    tx.commit().await?;
    let location = format!("/v1/api-keys/{}", created.meta.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(created)).into_response())
}

/// Lists the calling tenant's keys (revoked ones included), oldest first.
#[utoipa::path(
    get, path = "/v1/api-keys", tag = "api-keys", security(("bearer" = [])), params(PageParams),
    responses(
        (status = 200, body = Page<ApiKeyView>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_keys(
    State(state): State<AppState>,
    tenant: Tenant,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Page<ApiKeyView>>, ApiError> {
    let limit = page.limit()?;
    let after = Keyset::decode(page.cursor.as_deref())?;
    let rows: Vec<ApiKeyView> = sqlx::query_as(
        "SELECT id, name, prefix, created_at, last_used_at, revoked_at FROM api_keys \
         WHERE tenant_id = $1 AND (created_at, id) > ($2, $3) ORDER BY created_at, id LIMIT $4",
    )
    .bind(tenant.id)
    .bind(after.at)
    .bind(after.id)
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(Page::from_rows(rows, limit, |k| Keyset::key(k.created_at, k.id))))
}

/// Revokes one of the calling tenant's keys; it stops working at once. Revoking a revoked
/// key is a no-op.
#[utoipa::path(
    delete, path = "/v1/api-keys/{id}", tag = "api-keys", security(("bearer" = [])),
    params(("id" = String, Path, description = "Key id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn revoke_key(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    // A malformed id names no key of this tenant: 404 like any other unknown id.
    let key_id: Uuid = id.parse().map_err(|_| ApiError::not_found("API key", &id))?;
    let mut tx = state.db.begin().await?;
    let row: Option<(String,)> = sqlx::query_as(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1 AND tenant_id = $2 \
         RETURNING prefix",
    )
    .bind(key_id)
    .bind(tenant.id)
    .fetch_optional(&mut *tx)
    .await?;
    let (prefix,) = row.ok_or_else(|| ApiError::not_found("API key", &id))?;
    let change = Change {
        tenant_id: Some(tenant.id),
        actor: &tenant.actor(),
        action: "api_key.revoke",
        resource_type: "api_key",
        resource_name: &prefix,
        details: json!({ "id": key_id }),
    };
    audit::record(&mut *tx, change).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
