//! `Idempotency-Key` on POST: the first response to a (credential, key) pair is stored and
//! replayed for every retry with the same method, path and body (`Idempotency-Replayed:
//! true`); the same key with a different request is 422, and a retry while the first is
//! still running is 409 (for at most five minutes: a record its request never completed is
//! taken over after that). Server errors (5xx) are not stored, so they can be retried.
//! Records are scoped by a hash of the Authorization header, so keys of different callers
//! never collide, and kept for a day (pruned by the resync loop).

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::ApiError;
use crate::http::BODY_LIMIT;

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotency-replayed");
/// Response headers stored with the body and replayed.
const KEPT_HEADERS: [HeaderName; 3] = [header::CONTENT_TYPE, header::ETAG, header::LOCATION];

#[derive(sqlx::FromRow)]
struct Stored {
    fingerprint: Vec<u8>,
    status: Option<i32>,
    headers: Option<serde_json::Value>,
    body: Option<Vec<u8>>,
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Middleware over `/v1`.
pub async fn middleware(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST || !request.headers().contains_key(&IDEMPOTENCY_KEY) {
        return next.run(request).await;
    }
    match handle(&state, request, next).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn handle(state: &AppState, request: Request, next: Next) -> Result<Response, ApiError> {
    let key = request
        .headers()
        .get(&IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| (1..=255).contains(&k.len()))
        .ok_or_else(|| ApiError::bad_request("Idempotency-Key", "1-255 visible ASCII characters"))?
        .to_owned();
    let Some(authorization) = request.headers().get(header::AUTHORIZATION).cloned() else {
        // Unauthenticated: the handler refuses it; nothing to remember.
        return Ok(next.run(request).await);
    };
    let scope = to_hex(&Sha256::digest(authorization.as_bytes()));
    let (parts, body) = request.into_parts();
    let bytes =
        to_bytes(body, BODY_LIMIT).await.map_err(|_| ApiError::PayloadTooLarge { limit: BODY_LIMIT })?;
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str());
    hasher.update([0]);
    hasher.update(parts.uri.path());
    hasher.update([0]);
    hasher.update(&bytes);
    let fingerprint = hasher.finalize().to_vec();

    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (scope, key, fingerprint) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(&scope)
    .bind(&key)
    .bind(&fingerprint)
    .execute(&state.db)
    .await?
    .rows_affected()
        == 1;
    // A first request that never finished (the process died mid-way) must not block its key
    // for a day: after five minutes the next request takes the record over.
    let owned = inserted
        || sqlx::query(
            "UPDATE idempotency_keys SET fingerprint = $3, created_at = now() WHERE scope = $1 AND key = $2 \
             AND status IS NULL AND created_at < now() - interval '5 minutes'",
        )
        .bind(&scope)
        .bind(&key)
        .bind(&fingerprint)
        .execute(&state.db)
        .await?
        .rows_affected()
            == 1;
    if !owned {
        let stored: Stored = sqlx::query_as(
            "SELECT fingerprint, status, headers, body FROM idempotency_keys WHERE scope = $1 AND key = $2",
        )
        .bind(&scope)
        .bind(&key)
        .fetch_one(&state.db)
        .await?;
        if stored.fingerprint != fingerprint {
            return Err(ApiError::IdempotencyKeyReused);
        }
        return replay(stored).ok_or(ApiError::IdempotencyKeyInProgress);
    }

    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    let (parts, body) = response.into_parts();
    let bytes = match to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(err) => {
            forget(state, &scope, &key).await;
            return Err(ApiError::Internal(format!("buffering the response: {err}")));
        }
    };
    if parts.status.is_server_error() {
        forget(state, &scope, &key).await;
    } else {
        let headers: serde_json::Map<String, serde_json::Value> = KEPT_HEADERS
            .iter()
            .filter_map(|name| {
                let value = parts.headers.get(name)?.to_str().ok()?;
                Some((name.to_string(), value.into()))
            })
            .collect();
        sqlx::query(
            "UPDATE idempotency_keys SET status = $3, headers = $4, body = $5 WHERE scope = $1 AND key = $2",
        )
        .bind(&scope)
        .bind(&key)
        .bind(i32::from(parts.status.as_u16()))
        .bind(serde_json::Value::Object(headers))
        .bind(bytes.as_ref())
        .execute(&state.db)
        .await?;
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// The stored response, or `None` while the first request is still running.
fn replay(stored: Stored) -> Option<Response> {
    let status = StatusCode::from_u16(u16::try_from(stored.status?).ok()?).ok()?;
    let mut response = Response::new(Body::from(stored.body.unwrap_or_default()));
    *response.status_mut() = status;
    if let Some(serde_json::Value::Object(headers)) = stored.headers {
        for (name, value) in headers {
            if let (Ok(name), Some(Ok(value))) =
                (HeaderName::try_from(name), value.as_str().map(HeaderValue::from_str))
            {
                response.headers_mut().insert(name, value);
            }
        }
    }
    response.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
    Some(response)
}

async fn forget(state: &AppState, scope: &str, key: &str) {
    if let Err(err) = sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2")
        .bind(scope)
        .bind(key)
        .execute(&state.db)
        .await
    {
        tracing::warn!(error = %err, "forgetting a failed idempotent request");
    }
}
