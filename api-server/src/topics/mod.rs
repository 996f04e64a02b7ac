//! A tenant's Kafka topics: create, list, get, update (grow partitions, replace config),
//! delete. Each topic is a catalog row (the desired state) and a KafkaTopic resource named
//! like the topic in the tenant's namespace, applied by server-side apply; the operator
//! makes Kafka match it. The Kafka topic is `<tenant>.<name>` since Kafka's namespace is
//! shared by all tenants.
//!
//! Quotas are checked with the tenant's quota row locked, and the KafkaTopic is applied
//! inside the catalog transaction: if Kubernetes refuses, nothing is committed. Reads
//! reflect the KafkaTopic's status and repair drift (see [`sync`]).

pub mod sync;

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use chrono::{DateTime, Utc};
use millrace_crds::v1alpha1::validation::check_topic_name;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::types::Json as SqlJson;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
use crate::audit::{self, Change};
use crate::auth::Tenant;
use crate::error::{ApiError, Problem};
use crate::http::{ApiJson, ApiQuery, Keyset, Page, PageParams, check_if_match, etag};
use crate::kubernetes::{self, DesiredTopic};
use crate::quotas;

pub const MAX_PARTITIONS: i32 = 10_000;
const MAX_CONFIG_ENTRIES: usize = 100;

/// Columns of [`TopicRow`], for every query that returns one. A macro so that queries stay
/// `&'static str` (sqlx refuses SQL built at run time unless asserted safe).
macro_rules! topic_columns {
    () => {
        "id, tenant_id, name, kafka_topic, partitions, replicas, config, version, created_at, updated_at, \
         ready, ready_reason, ready_message, observed_partitions, drift, drift_at, observed_at"
    };
}
pub(crate) use topic_columns;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TopicRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub kafka_topic: String,
    pub partitions: i32,
    pub replicas: Option<i32>,
    pub config: SqlJson<BTreeMap<String, String>>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub ready: Option<String>,
    pub ready_reason: Option<String>,
    pub ready_message: Option<String>,
    pub observed_partitions: Option<i32>,
    pub drift: Option<String>,
    pub drift_at: Option<DateTime<Utc>>,
    pub observed_at: Option<DateTime<Utc>>,
}

impl TopicRow {
    pub fn desired(&self) -> DesiredTopic {
        DesiredTopic {
            name: self.name.clone(),
            kafka_topic: self.kafka_topic.clone(),
            partitions: self.partitions,
            replicas: self.replicas,
            config: self.config.0.clone(),
        }
    }
}

/// A topic: what was asked for, and what the operator last reported.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicView {
    pub name: String,
    /// The topic's name in Kafka: `<tenant>.<name>`.
    pub kafka_topic: String,
    pub partitions: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    pub config: BTreeMap<String, String>,
    /// Increases with every change; the ETag is this number in quotes.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub status: TopicStatus,
}

/// The KafkaTopic's status as last reflected into the catalog.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    /// `True` when Kafka matches this version, `False` with a reason when it cannot, `Unknown` while pending.
    pub ready: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Partitions observed in Kafka.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<DateTime<Utc>>,
    /// The last drift found (the KafkaTopic deleted or edited outside the API) and repaired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_at: Option<DateTime<Utc>>,
}

impl From<TopicRow> for TopicView {
    fn from(row: TopicRow) -> Self {
        Self {
            status: TopicStatus {
                ready: row.ready.unwrap_or_else(|| "Unknown".into()),
                reason: row.ready_reason,
                message: row.ready_message,
                partitions: row.observed_partitions,
                observed_at: row.observed_at,
                drift: row.drift,
                drift_at: row.drift_at,
            },
            name: row.name,
            kafka_topic: row.kafka_topic,
            partitions: row.partitions,
            replicas: row.replicas,
            config: row.config.0,
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// `POST /v1/topics`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTopic {
    /// 1-63 characters: lowercase letters, digits and `-`, starting and ending with a letter or digit.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// 1-10000; can grow later, never shrink.
    #[schema(minimum = 1, maximum = 10000)]
    pub partitions: i32,
    /// Replication factor; the cluster default when absent. Fixed at creation.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 32767)]
    pub replicas: Option<i32>,
    /// Topic-level Kafka configuration (e.g. `retention.ms`); values are strings.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

/// `PATCH /v1/topics/{topic}`: fields present are changed; `config` replaces the whole map.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateTopic {
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10000)]
    pub partitions: Option<i32>,
    #[serde(default)]
    pub config: Option<BTreeMap<String, String>>,
}

pub fn validate_name(name: &str) -> Result<(), ApiError> {
    let bytes = name.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let ok = (1..=63).contains(&bytes.len())
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum);
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(
            "name",
            "1-63 characters: lowercase letters, digits and '-', starting and ending with a letter or digit",
        ))
    }
}

fn validate_partitions(partitions: i32) -> Result<(), ApiError> {
    if (1..=MAX_PARTITIONS).contains(&partitions) {
        Ok(())
    } else {
        Err(ApiError::validation("partitions", format!("must be between 1 and {MAX_PARTITIONS}")))
    }
}

fn validate_config(config: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if config.len() > MAX_CONFIG_ENTRIES {
        return Err(ApiError::validation("config", format!("at most {MAX_CONFIG_ENTRIES} entries")));
    }
    for (key, value) in config {
        let valid_key = (1..=255).contains(&key.len())
            && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if !valid_key {
            return Err(ApiError::validation(
                format!("config.{key}"),
                "config keys are Kafka topic settings: lowercase letters, digits, '.', '_' and '-'",
            ));
        }
        if value.len() > 4096 || value.contains('\0') {
            return Err(ApiError::validation(
                format!("config.{key}"),
                "values are at most 4096 characters, without NUL",
            ));
        }
    }
    Ok(())
}

fn respond(status: StatusCode, row: TopicRow) -> Response {
    let view = TopicView::from(row);
    // Topic names are validated to [a-z0-9-], so the location is always a valid header value.
    let location = HeaderValue::from_str(&format!("/v1/topics/{}", view.name))
        .unwrap_or_else(|_| HeaderValue::from_static("/v1/topics"));
    (status, [(header::ETAG, etag(view.version)), (header::LOCATION, location)], Json(view)).into_response()
}

async fn find(
    db: &mut sqlx::PgConnection,
    tenant: &Tenant,
    name: &str,
    lock: bool,
) -> Result<TopicRow, ApiError> {
    let sql = if lock {
        concat!("SELECT ", topic_columns!(), " FROM topics WHERE tenant_id = $1 AND name = $2 FOR UPDATE")
    } else {
        concat!("SELECT ", topic_columns!(), " FROM topics WHERE tenant_id = $1 AND name = $2")
    };
    let row: Option<TopicRow> =
        sqlx::query_as(sql).bind(tenant.id).bind(name).fetch_optional(&mut *db).await?;
    row.ok_or_else(|| ApiError::not_found("topic", name))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_topic, list_topics)).routes(routes!(
        get_topic,
        update_topic,
        delete_topic
    ))
}

/// Creates a topic: a catalog row and a KafkaTopic in the tenant's namespace.
#[utoipa::path(
    post, path = "/v1/topics", tag = "topics", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for a repeated key")),
    request_body = CreateTopic,
    responses(
        (status = 201, body = TopicView, headers(("ETag" = String))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, description = "Quota exceeded", content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_topic(
    State(state): State<AppState>,
    tenant: Tenant,
    ApiJson(request): ApiJson<CreateTopic>,
) -> Result<Response, ApiError> {
    validate_name(&request.name)?;
    validate_partitions(request.partitions)?;
    if let Some(replicas) = request.replicas
        && !(1..=i32::from(i16::MAX)).contains(&replicas)
    {
        return Err(ApiError::validation("replicas", "must be between 1 and 32767"));
    }
    validate_config(&request.config)?;
    let kafka_topic = kubernetes::kafka_topic_for(&tenant.name, &request.name);
    check_topic_name(&kafka_topic).map_err(|v| ApiError::validation("name", v.to_string()))?;

    let mut tx = state.db.begin().await?;
    let limits = quotas::lock(&mut tx, tenant.id).await?;
    let usage = quotas::usage(&mut tx, tenant.id, None).await?;
    quotas::check_topics(&limits, usage.topics + 1, usage.partitions + i64::from(request.partitions))?;
    let sql = concat!(
        "INSERT INTO topics (id, tenant_id, name, kafka_topic, partitions, replicas, config, ready, ready_reason) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'Unknown', 'Pending') RETURNING ",
        topic_columns!()
    );
    let row: TopicRow = sqlx::query_as(sql)
        .bind(Uuid::new_v4())
        .bind(tenant.id)
        .bind(&request.name)
        .bind(&kafka_topic)
        .bind(request.partitions)
        .bind(request.replicas)
        .bind(SqlJson(&request.config))
        .fetch_one(&mut *tx)
        .await?;
    let change = Change {
        tenant_id: Some(tenant.id),
        actor: &tenant.actor(),
        action: "topic.create",
        resource_type: "topic",
        resource_name: &row.name,
        details: json!({ "kafkaTopic": kafka_topic, "partitions": row.partitions, "replicas": row.replicas, "config": request.config }),
    };
    audit::record(&mut *tx, change).await?;
    kubernetes::apply_topic(&state.kube, &tenant.name, &tenant.namespace, &row.desired()).await?;
    tx.commit().await?;
    Ok(respond(StatusCode::CREATED, row))
}

/// Lists the tenant's topics, oldest first, each with its status reflected from Kubernetes.
#[utoipa::path(
    get, path = "/v1/topics", tag = "topics", security(("bearer" = [])), params(PageParams),
    responses(
        (status = 200, body = Page<TopicView>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_topics(
    State(state): State<AppState>,
    tenant: Tenant,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Page<TopicView>>, ApiError> {
    let limit = page.limit()?;
    let after = Keyset::decode(page.cursor.as_deref())?;
    let sql = concat!(
        "SELECT ",
        topic_columns!(),
        " FROM topics WHERE tenant_id = $1 AND (created_at, id) > ($2, $3) ORDER BY created_at, id LIMIT $4"
    );
    let rows: Vec<TopicRow> = sqlx::query_as(sql)
        .bind(tenant.id)
        .bind(after.at)
        .bind(after.id)
        .bind(limit + 1)
        .fetch_all(&state.db)
        .await?;
    let page = Page::from_rows(rows, limit, |r| Keyset::key(r.created_at, r.id));
    let mut observed = kubernetes::list_topics(&state.kube, &tenant.namespace).await?;
    let mut items = Vec::with_capacity(page.items.len());
    for row in page.items {
        let topic = observed.remove(&row.name);
        match sync::reconcile(&state, &tenant.name, &tenant.namespace, row, topic).await {
            Ok(row) => items.push(TopicView::from(row)),
            // Deleted while listing: it is simply not in the page.
            Err(ApiError::NotFound { .. }) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(Json(Page { items, next_cursor: page.next_cursor }))
}

/// One topic, with its status reflected from Kubernetes (and drift repaired).
#[utoipa::path(
    get, path = "/v1/topics/{topic}", tag = "topics", security(("bearer" = [])),
    params(("topic" = String, Path, description = "Topic name")),
    responses(
        (status = 200, body = TopicView, headers(("ETag" = String))),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_topic(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let mut conn = state.db.acquire().await?;
    let row = find(&mut conn, &tenant, &name, false).await?;
    drop(conn);
    let observed = kubernetes::get_topic(&state.kube, &tenant.namespace, &name).await?;
    let row = sync::reconcile(&state, &tenant.name, &tenant.namespace, row, observed).await?;
    Ok(respond(StatusCode::OK, row))
}

/// Grows partitions and/or replaces the config. `If-Match` with the ETag makes it
/// conditional (412 when the topic changed since it was read).
#[utoipa::path(
    patch, path = "/v1/topics/{topic}", tag = "topics", security(("bearer" = [])),
    params(
        ("topic" = String, Path, description = "Topic name"),
        ("If-Match" = Option<String>, Header, description = "ETag of the topic as last read"),
    ),
    request_body = UpdateTopic,
    responses(
        (status = 200, body = TopicView, headers(("ETag" = String))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, description = "Quota exceeded", content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn update_topic(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(name): Path<String>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<UpdateTopic>,
) -> Result<Response, ApiError> {
    // The request itself first (400/422), then the preconditions against the stored topic (412).
    if let Some(partitions) = request.partitions {
        validate_partitions(partitions)?;
    }
    if let Some(config) = &request.config {
        validate_config(config)?;
    }
    let mut tx = state.db.begin().await?;
    let current = find(&mut tx, &tenant, &name, true).await?;
    check_if_match(&headers, current.version)?;
    let partitions = request.partitions.unwrap_or(current.partitions);
    if partitions < current.partitions {
        return Err(ApiError::validation(
            "partitions",
            format!(
                "Kafka cannot remove partitions: the topic has {}; create a new topic instead",
                current.partitions
            ),
        ));
    }
    let config = request.config.unwrap_or_else(|| current.config.0.clone());
    if partitions == current.partitions && config == current.config.0 {
        tx.commit().await?;
        return Ok(respond(StatusCode::OK, current));
    }
    if partitions > current.partitions {
        let limits = quotas::lock(&mut tx, tenant.id).await?;
        let others = quotas::usage(&mut tx, tenant.id, Some(current.id)).await?;
        quotas::check_topics(&limits, others.topics + 1, others.partitions + i64::from(partitions))?;
    }
    let sql = concat!(
        "UPDATE topics SET partitions = $2, config = $3, version = version + 1, updated_at = now(), \
         ready = 'Unknown', ready_reason = 'Pending' WHERE id = $1 RETURNING ",
        topic_columns!()
    );
    let row: TopicRow = sqlx::query_as(sql)
        .bind(current.id)
        .bind(partitions)
        .bind(SqlJson(&config))
        .fetch_one(&mut *tx)
        .await?;
    let change = Change {
        tenant_id: Some(tenant.id),
        actor: &tenant.actor(),
        action: "topic.update",
        resource_type: "topic",
        resource_name: &name,
        details: json!({
            "partitions": { "from": current.partitions, "to": partitions },
            "config": { "from": current.config.0, "to": config },
        }),
    };
    audit::record(&mut *tx, change).await?;
    kubernetes::apply_topic(&state.kube, &tenant.name, &tenant.namespace, &row.desired()).await?;
    tx.commit().await?;
    Ok(respond(StatusCode::OK, row))
}

/// Deletes a topic: its KafkaTopic goes, and the operator deletes the topic (and its data)
/// in Kafka. `If-Match` is honoured.
#[utoipa::path(
    delete, path = "/v1/topics/{topic}", tag = "topics", security(("bearer" = [])),
    params(
        ("topic" = String, Path, description = "Topic name"),
        ("If-Match" = Option<String>, Header, description = "ETag of the topic as last read"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_topic(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let mut tx = state.db.begin().await?;
    let current = find(&mut tx, &tenant, &name, true).await?;
    check_if_match(&headers, current.version)?;
    sqlx::query("DELETE FROM topics WHERE id = $1").bind(current.id).execute(&mut *tx).await?;
    let change = Change {
        tenant_id: Some(tenant.id),
        actor: &tenant.actor(),
        action: "topic.delete",
        resource_type: "topic",
        resource_name: &name,
        details: json!({ "kafkaTopic": current.kafka_topic }),
    };
    audit::record(&mut *tx, change).await?;
    kubernetes::delete_topic(&state.kube, &tenant.namespace, &name).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_and_configs_are_checked_with_the_field_named() {
        assert!(validate_name("orders-2").is_ok());
        for bad in ["", "-x", "x-", "Orders", "a.b", "a_b"] {
            assert_eq!(validate_name(bad).expect_err(bad).problem().field.as_deref(), Some("name"));
        }
        let config = BTreeMap::from([("Retention MS".to_owned(), "1".to_owned())]);
        assert_eq!(
            validate_config(&config).expect_err("bad key").problem().field.as_deref(),
            Some("config.Retention MS")
        );
        assert!(validate_partitions(0).is_err() && validate_partitions(MAX_PARTITIONS + 1).is_err());
    }
}
