//! Tenants (admin token only): create (with its namespace and quota), list, get, delete, and
//! the tenant's first API keys. A tenant owns the Kubernetes namespace `tenant-<name>`,
//! created and labelled here; deleting a tenant that still owns jobs or topics is refused
//! unless `?force=true`, which deletes them with the namespace.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
use crate::api_keys::{self, CreateApiKey, CreatedApiKey};
use crate::audit::{self, Change};
use crate::auth::Admin;
use crate::error::{ApiError, Problem};
use crate::http::{ApiJson, ApiQuery, Keyset, Page, PageParams};
use crate::kubernetes;
use crate::quotas::{self, QuotaLimits, QuotaView};

/// A tenant as the admin sees it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantView {
    pub id: Uuid,
    pub name: String,
    pub display_name: String,
    /// The Kubernetes namespace holding the tenant's resources.
    pub namespace: String,
    pub created_at: DateTime<Utc>,
    pub quota: QuotaView,
}

/// `POST /v1/tenants`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTenant {
    /// 3-40 characters: lowercase letters, digits and `-`, starting with a letter. Immutable;
    /// it names the namespace (`tenant-<name>`) and prefixes the tenant's Kafka topics.
    #[schema(pattern = "^[a-z][a-z0-9-]{1,38}[a-z0-9]$")]
    pub name: String,
    /// Free text for people, at most 200 characters, no control characters.
    #[serde(default)]
    #[schema(max_length = 200)]
    pub display_name: String,
    /// Limits; defaults apply when absent.
    #[serde(default)]
    pub quota: Option<QuotaLimits>,
}

#[derive(Debug, sqlx::FromRow)]
struct TenantRow {
    id: Uuid,
    name: String,
    display_name: String,
    namespace: String,
    created_at: DateTime<Utc>,
}

/// `?force=` of `DELETE /v1/tenants/{tenant}`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteParams {
    /// Delete the tenant's topics (and their data in Kafka) with it.
    #[serde(default)]
    pub force: bool,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_tenant, list_tenants))
        .routes(routes!(get_tenant, delete_tenant))
        .routes(routes!(create_tenant_key))
}

/// Checks a tenant name (the database repeats the check as constraint `tenants_name_format`).
pub fn validate_name(name: &str) -> Result<(), ApiError> {
    let bytes = name.as_bytes();
    let ok = (3..=40).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.last() != Some(&b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(
            "name",
            "3-40 characters: lowercase letters, digits and '-', starting with a letter, not ending with '-'",
        ))
    }
}

async fn find(db: &mut sqlx::PgConnection, name: &str, lock: bool) -> Result<TenantRow, ApiError> {
    let sql = if lock {
        "SELECT id, name, display_name, namespace, created_at FROM tenants WHERE name = $1 FOR UPDATE"
    } else {
        "SELECT id, name, display_name, namespace, created_at FROM tenants WHERE name = $1"
    };
    let row: Option<TenantRow> = sqlx::query_as(sql).bind(name).fetch_optional(&mut *db).await?;
    row.ok_or_else(|| ApiError::not_found("tenant", name))
}

async fn to_view(db: &mut sqlx::PgConnection, row: TenantRow) -> Result<TenantView, ApiError> {
    let quota = quotas::view(db, row.id).await?;
    Ok(TenantView {
        id: row.id,
        name: row.name,
        display_name: row.display_name,
        namespace: row.namespace,
        created_at: row.created_at,
        quota,
    })
}

/// Creates a tenant, its quota and its namespace.
#[utoipa::path(
    post, path = "/v1/tenants", tag = "tenants", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated key")),
    request_body = CreateTenant,
    responses(
        (status = 201, body = TenantView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_tenant(
    State(state): State<AppState>,
    _: Admin,
    ApiJson(request): ApiJson<CreateTenant>,
) -> Result<Response, ApiError> {
    validate_name(&request.name)?;
    if request.display_name.chars().count() > 200 || request.display_name.chars().any(char::is_control) {
        return Err(ApiError::validation("displayName", "at most 200 characters, no control characters"));
    }
    let limits = request.quota.unwrap_or_default();
    limits.validate("quota.")?;
    let namespace = kubernetes::namespace_for(&request.name);
    let id = Uuid::new_v4();
    let mut tx = state.db.begin().await?;
    sqlx::query("INSERT INTO tenants (id, name, display_name, namespace) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(&request.name)
        .bind(&request.display_name)
        .bind(&namespace)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO quotas (tenant_id, max_topics, max_partitions, max_jobs, max_slots) VALUES ($1, $2, $3, $4, $5)",
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
        action: "tenant.create",
        resource_type: "tenant",
        resource_name: &request.name,
        details: json!({ "namespace": namespace, "quota": limits }),
    };
    audit::record(&mut *tx, change).await?;
    // The namespace exists before the tenant is committed; a failure here rolls the tenant back.
    kubernetes::apply_namespace(&state.kube, &request.name).await?;
    let row = find(&mut tx, &request.name, false).await?;
    let view = to_view(&mut tx, row).await?;
    tx.commit().await?;
    let location = format!("/v1/tenants/{}", view.name);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(view)).into_response())
}

/// Lists tenants, oldest first.
#[utoipa::path(
    get, path = "/v1/tenants", tag = "tenants", security(("bearer" = [])), params(PageParams),
    responses(
        (status = 200, body = Page<TenantView>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_tenants(
    State(state): State<AppState>,
    _: Admin,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Page<TenantView>>, ApiError> {
    let limit = page.limit()?;
    let after = Keyset::decode(page.cursor.as_deref())?;
    let mut conn = state.db.acquire().await?;
    let rows: Vec<TenantRow> = sqlx::query_as(
        "SELECT id, name, display_name, namespace, created_at FROM tenants \
         WHERE (created_at, id) > ($1, $2) ORDER BY created_at, id LIMIT $3",
    )
    .bind(after.at)
    .bind(after.id)
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    let page = Page::from_rows(rows, limit, |r| Keyset::key(r.created_at, r.id));
    let mut items = Vec::with_capacity(page.items.len());
    for row in page.items {
        items.push(to_view(&mut conn, row).await?);
    }
    Ok(Json(Page { items, next_cursor: page.next_cursor }))
}

/// One tenant with its quota and usage.
#[utoipa::path(
    get, path = "/v1/tenants/{tenant}", tag = "tenants", security(("bearer" = [])),
    params(("tenant" = String, Path, description = "Tenant name")),
    responses(
        (status = 200, body = TenantView),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_tenant(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
) -> Result<Json<TenantView>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let row = find(&mut conn, &name, false).await?;
    Ok(Json(to_view(&mut conn, row).await?))
}

/// Deletes a tenant, its API keys, quota and namespace. Refused (409) while it owns topics,
/// unless `force=true`, which deletes them too (their KafkaTopics go with the namespace, and
/// the operator deletes the topics in Kafka).
#[utoipa::path(
    delete, path = "/v1/tenants/{tenant}", tag = "tenants", security(("bearer" = [])),
    params(("tenant" = String, Path, description = "Tenant name"), DeleteParams),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_tenant(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
    ApiQuery(params): ApiQuery<DeleteParams>,
) -> Result<StatusCode, ApiError> {
    let mut tx = state.db.begin().await?;
    let row = find(&mut tx, &name, true).await?;
    let usage = quotas::usage(&mut tx, row.id, None).await?;
    if (usage.topics > 0 || usage.jobs > 0) && !params.force {
        return Err(ApiError::Conflict {
            field: Some("force".into()),
            detail: format!(
                "tenant {name:?} still owns {} job(s) and {} topic(s); delete them first or pass ?force=true \
                 to delete them too",
                usage.jobs, usage.topics
            ),
        });
    }
    let jobs: Vec<(String,)> = sqlx::query_as("DELETE FROM jobs WHERE tenant_id = $1 RETURNING name")
        .bind(row.id)
        .fetch_all(&mut *tx)
        .await?;
    let topics: Vec<(String,)> = sqlx::query_as("DELETE FROM topics WHERE tenant_id = $1 RETURNING name")
        .bind(row.id)
        .fetch_all(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM tenants WHERE id = $1").bind(row.id).execute(&mut *tx).await?;
    let deleted: Vec<String> = topics.into_iter().map(|(n,)| n).collect();
    let deleted_jobs: Vec<String> = jobs.into_iter().map(|(n,)| n).collect();
    let change = Change {
        tenant_id: Some(row.id),
        actor: "admin",
        action: "tenant.delete",
        resource_type: "tenant",
        resource_name: &name,
        details: json!({ "force": params.force, "jobsDeleted": deleted_jobs, "topicsDeleted": deleted, "namespace": row.namespace }),
    };
    audit::record(&mut *tx, change).await?;
    kubernetes::delete_namespace(&state.kube, &row.namespace).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Creates an API key for a tenant (admin): how a new tenant gets its first key. The key is
/// in this response only.
#[utoipa::path(
    post, path = "/v1/tenants/{tenant}/api-keys", tag = "tenants", security(("bearer" = [])),
    params(
        ("tenant" = String, Path, description = "Tenant name"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated key"),
    ),
    request_body = CreateApiKey,
    responses(
        (status = 201, body = CreatedApiKey),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_tenant_key(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<CreateApiKey>,
) -> Result<Response, ApiError> {
    let mut tx = state.db.begin().await?;
    let row = find(&mut tx, &name, false).await?;
    let created = api_keys::insert(&mut tx, row.id, "admin", &request).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_are_dns_labels_that_start_with_a_letter() {
        for good in ["acme", "team-42", "a1b"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["ab", "Acme", "1acme", "acme-", "ac_me", "a".repeat(41).as_str()] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
