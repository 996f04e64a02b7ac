//! The one error type of the REST API and its wire form, RFC 9457 `application/problem+json`.
//!
//! Every handler returns [`ApiError`]; this module decides the status code, the problem `type`
//! and which field is at fault. Details of server-side failures (5xx) are logged with the
//! request id and never returned: the client gets the request id to quote instead.
//! Database constraint violations are mapped to 409/422 by constraint name, so the schema in
//! `migrations/` and [`constraint_problem`] must agree.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::request_id;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// A URI naming the kind of problem, e.g. `https://millrace.dev/problems/validation`.
    #[serde(rename = "type")]
    pub type_: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong in this request and, where possible, what to do about it.
    pub detail: String,
    /// The request field at fault: a JSON path into the body (`config.retention.ms`), a
    /// query parameter or a header name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The request id (also in the `x-request-id` header); quote it when reporting a 5xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Invalid SQL: the line (1-based) of the statement text where the error is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// Invalid SQL: the column (1-based) on that line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u64>,
    /// Invalid SQL: what to write instead, when the engine knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{detail}")]
    BadRequest { field: Option<String>, detail: String },
    #[error("{detail}")]
    Validation { field: Option<String>, detail: String },
    #[error("invalid SQL at line {line}, column {column}: {message}")]
    InvalidSql { field: String, message: String, line: u64, column: u64, hint: Option<String> },
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{detail}")]
    Conflict { field: Option<String>, detail: String },
    #[error("If-Match {given} does not match the current ETag {current}: read the resource again and retry")]
    PreconditionFailed { given: String, current: String },
    #[error("{detail}")]
    QuotaExceeded { quota: &'static str, detail: String },
    #[error("this Idempotency-Key was used with a different request (method, path or body)")]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is still being processed; retry later")]
    IdempotencyKeyInProgress,
    #[error("no route for {method} {path}")]
    NoRoute { method: String, path: String },
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("Kubernetes API: {0}")]
    Kubernetes(#[from] kube::Error),
    #[error("database: {0}")]
    Database(sqlx::Error),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn validation(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Validation { field: Some(field.into()), detail: detail.into() }
    }

    pub fn bad_request(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::BadRequest { field: Some(field.into()), detail: detail.into() }
    }

    pub fn not_found(kind: &'static str, name: impl Into<String>) -> Self {
        Self::NotFound { kind, name: name.into() }
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Validation { .. } | Self::InvalidSql { .. } | Self::IdempotencyKeyReused => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::QuotaExceeded { .. } => StatusCode::FORBIDDEN,
            Self::NotFound { .. } | Self::NoRoute { .. } => StatusCode::NOT_FOUND,
            Self::Conflict { .. } | Self::IdempotencyKeyInProgress => StatusCode::CONFLICT,
            Self::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Kubernetes(_) => StatusCode::BAD_GATEWAY,
            Self::Database(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The last segment of the problem `type` URI.
    fn slug(&self) -> &'static str {
        match self {
            Self::BadRequest { .. } => "bad-request",
            Self::Validation { .. } => "validation",
            Self::InvalidSql { .. } => "invalid-sql",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::PayloadTooLarge { .. } => "payload-too-large",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound { .. } => "not-found",
            Self::Conflict { .. } => "conflict",
            Self::PreconditionFailed { .. } => "precondition-failed",
            Self::QuotaExceeded { .. } => "quota-exceeded",
            Self::IdempotencyKeyReused => "idempotency-key-reused",
            Self::IdempotencyKeyInProgress => "idempotency-key-in-progress",
            Self::NoRoute { .. } => "no-route",
            Self::MethodNotAllowed { .. } => "method-not-allowed",
            Self::Kubernetes(_) => "kubernetes-unavailable",
            Self::Database(_) => "database-unavailable",
            Self::Internal(_) => "internal",
        }
    }

    fn field(&self) -> Option<String> {
        match self {
            Self::BadRequest { field, .. }
            | Self::Validation { field, .. }
            | Self::Conflict { field, .. } => field.clone(),
            Self::InvalidSql { field, .. } => Some(field.clone()),
            Self::QuotaExceeded { quota, .. } => Some(format!("quota.{quota}")),
            Self::PreconditionFailed { .. } => Some("If-Match".into()),
            Self::IdempotencyKeyReused | Self::IdempotencyKeyInProgress => Some("Idempotency-Key".into()),
            Self::Unauthorized(_) => Some("Authorization".into()),
            _ => None,
        }
    }

    /// The problem document for this error. 5xx details stay on the server.
    pub fn problem(&self) -> Problem {
        let status = self.status_code();
        let detail = if status.is_server_error() {
            match self {
                Self::Kubernetes(_) => {
                    "the Kubernetes API failed; the change was not made. Retry later".into()
                }
                Self::Database(_) => "the catalog database failed; retry later".into(),
                _ => "an internal error occurred; quote the request id when reporting it".into(),
            }
        } else {
            self.to_string()
        };
        let (line, column, hint) = match self {
            Self::InvalidSql { line, column, hint, .. } => (Some(*line), Some(*column), hint.clone()),
            _ => (None, None, None),
        };
        Problem {
            type_: format!("https://millrace.dev/problems/{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            field: self.field(),
            request_id: request_id::current(),
            line,
            column,
            hint,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        // 22021/22P05: text Postgres cannot store (a NUL character) came from the request.
        if let Some(db) = err.as_database_error()
            && db.code().is_some_and(|code| code == "22021" || code == "22P05")
        {
            return Self::BadRequest {
                field: None,
                detail: "the request contains text that cannot be stored (e.g. a NUL character)".into(),
            };
        }
        if let Some(db) = err.as_database_error()
            && let Some(constraint) = db.constraint()
            && let Some(mapped) = constraint_problem(constraint)
        {
            return mapped;
        }
        Self::Database(err)
    }
}

/// Maps a violated constraint (by its name in `migrations/`) to the client's mistake.
pub fn constraint_problem(constraint: &str) -> Option<ApiError> {
    let conflict =
        |field: &str, detail: &str| ApiError::Conflict { field: Some(field.into()), detail: detail.into() };
    Some(match constraint {
        "tenants_name_key" | "tenants_namespace_key" => {
            conflict("name", "a tenant with this name already exists")
        }
        "topics_tenant_name_key" => conflict("name", "a topic with this name already exists"),
        "topics_kafka_topic_key" => conflict("name", "the Kafka topic name this maps to is already taken"),
        "topics_tenant_fkey" => {
            conflict("force", "the tenant still owns topics: delete them or pass ?force=true")
        }
        "jobs_tenant_name_key" => conflict("name", "a job with this name already exists"),
        "jobs_tenant_fkey" => {
            conflict("force", "the tenant still owns jobs: delete them or pass ?force=true")
        }
        "tenants_name_format" => ApiError::validation(
            "name",
            "3-40 characters: lowercase letters, digits and '-', starting with a letter, not ending with '-'",
        ),
        _ => return None,
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        if self.status_code().is_server_error() {
            tracing::error!(error = %self, request_id = problem.request_id.as_deref(), "request failed");
        } else {
            tracing::debug!(error = %self, "request refused");
        }
        let mut response = problem_response(&problem);
        if matches!(self, Self::Unauthorized(_)) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Serialises a problem with its status and media type.
pub fn problem_response(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(problem).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_hide_their_details() {
        let problem = ApiError::Internal("secret connection string".into()).problem();
        assert_eq!(problem.status, 500);
        assert!(!problem.detail.contains("secret"));
    }

    #[test]
    fn known_constraints_become_client_errors_naming_the_field() {
        let problem = constraint_problem("topics_tenant_name_key").expect("mapped").problem();
        assert_eq!((problem.status, problem.field.as_deref()), (409, Some("name")));
        assert_eq!(constraint_problem("tenants_name_format").expect("mapped").status_code(), 422);
        assert!(constraint_problem("something_else").is_none());
    }
}
