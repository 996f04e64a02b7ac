//! HTTP conventions shared by every feature module: JSON bodies and query strings whose
//! rejections become problems naming the field at fault, cursor pagination, and ETags.
//!
//! Handlers use [`ApiJson`] and [`ApiQuery`] instead of axum's `Json`/`Query` so that no
//! request can be refused with a plain-text body.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::error::Category;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::ApiError;

/// The largest request body accepted, in bytes.
pub const BODY_LIMIT: usize = 64 * 1024;
/// Page size when `limit` is not given, and the largest one allowed.
pub const DEFAULT_PAGE: i64 = 50;
pub const MAX_PAGE: i64 = 200;

/// A JSON request body. Refusals: 415 without a JSON content type, 413 above
/// [`BODY_LIMIT`], 400 for malformed JSON, 422 for a well-formed body of the wrong shape
/// (wrong type, missing or unknown field), naming the field.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge { limit: BODY_LIMIT }
            } else {
                ApiError::BadRequest { field: None, detail: rejection.body_text() }
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|value| {
        let mime = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
    })
}

/// Deserialises `bytes`, turning serde's error into a problem that names the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every body is an object; serde would also accept a struct written as an array.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(match serde_json::from_slice::<serde_json::Value>(bytes) {
            Err(err) => ApiError::BadRequest { field: None, detail: format!("malformed JSON: {err}") },
            Ok(_) => {
                ApiError::Validation { field: None, detail: "the request body must be a JSON object".into() }
            }
        });
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = inner.to_string();
        match inner.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::BadRequest { field: None, detail: format!("malformed JSON: {message}") }
            }
            Category::Data => {
                let named = ["unknown field `", "missing field `"]
                    .iter()
                    .find_map(|p| message.strip_prefix(p))
                    .and_then(|rest| rest.split('`').next());
                // serde_path_to_error already ends the path with an unknown field, not a missing one.
                let field = match (named, path.as_str()) {
                    (Some(name), ".") => Some(name.to_owned()),
                    (Some(name), path) if path == name || path.ends_with(&format!(".{name}")) => {
                        Some(path.to_owned())
                    }
                    (Some(name), parent) => Some(format!("{parent}.{name}")),
                    (None, ".") => None,
                    (None, path) => Some(path.to_owned()),
                };
                ApiError::Validation { field, detail: format!("invalid request body: {message}") }
            }
        }
    })?;
    deserializer
        .end()
        .map_err(|err| ApiError::BadRequest { field: None, detail: format!("malformed JSON: {err}") })?;
    Ok(value)
}

/// A query string; a refusal is a 400 problem.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state).await.map(|Query(value)| ApiQuery(value)).map_err(
            |rejection| ApiError::BadRequest { field: Some("query".into()), detail: rejection.body_text() },
        )
    }
}

/// `?limit=&cursor=` of every list endpoint.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1-200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageParams {
    /// The page size, checked. One more row than this is fetched to know if a next page exists.
    pub fn limit(&self) -> Result<i64, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_PAGE),
            Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::bad_request("limit", format!("limit must be between 1 and {MAX_PAGE}"))),
        }
    }
}

/// One page of a list, oldest first. `nextCursor` is absent on the last page.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from `limit + 1` fetched rows; `key` gives the cursor of the last item kept.
    pub fn from_rows(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> String) -> Self {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|last| URL_SAFE_NO_PAD.encode(key(last)))
        } else {
            None
        };
        Self { items: rows, next_cursor }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page { items: self.items.into_iter().map(f).collect(), next_cursor: self.next_cursor }
    }
}

/// The position after which a keyset page starts: `(created_at, id)` of the last item seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyset {
    pub at: DateTime<Utc>,
    pub id: Uuid,
}

impl Keyset {
    pub fn key(at: DateTime<Utc>, id: Uuid) -> String {
        format!("{}|{id}", at.timestamp_micros())
    }

    /// The first page (before every row: the catalog has nothing older than 1970) when
    /// `cursor` is absent; else the decoded position.
    pub fn decode(cursor: Option<&str>) -> Result<Self, ApiError> {
        let Some(cursor) = cursor else {
            return Ok(Self { at: DateTime::<Utc>::UNIX_EPOCH, id: Uuid::nil() });
        };
        let invalid = || ApiError::bad_request("cursor", "cursor is not one this server returned");
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?)
            .map_err(|_| invalid())?;
        let (micros, id) = text.split_once('|').ok_or_else(invalid)?;
        let at =
            DateTime::from_timestamp_micros(micros.parse().map_err(|_| invalid())?).ok_or_else(invalid)?;
        Ok(Self { at, id: id.parse().map_err(|_| invalid())? })
    }
}

/// Decodes the numeric cursor of append-only lists (audit events).
pub fn decode_serial_cursor(cursor: Option<&str>) -> Result<i64, ApiError> {
    let Some(cursor) = cursor else { return Ok(0) };
    let invalid = || ApiError::bad_request("cursor", "cursor is not one this server returned");
    let text =
        String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?).map_err(|_| invalid())?;
    text.parse().map_err(|_| invalid())
}

/// The strong ETag of a resource at `version`.
pub fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// Checks `If-Match` against the current version. Absent means unconditional.
pub fn check_if_match(headers: &HeaderMap, version: i64) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else { return Ok(()) };
    let given =
        value.to_str().ok().filter(|v| !v.trim().is_empty()).ok_or_else(|| {
            ApiError::bad_request("If-Match", "If-Match must be an ETag (\"<version>\") or *")
        })?;
    let current = format!("\"{version}\"");
    let matches =
        given.split(',').map(str::trim).any(|tag| tag == "*" || tag.trim_start_matches("W/") == current);
    if matches { Ok(()) } else { Err(ApiError::PreconditionFailed { given: given.to_owned(), current }) }
}

/// Fallback for unknown paths: a problem, not axum's empty 404.
pub async fn no_route(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::NoRoute { method: method.to_string(), path: uri.path().to_owned() }
}

/// Fallback for a known path with a method it does not serve.
pub async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::MethodNotAllowed { method: method.to_string(), path: uri.path().to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // fields are read by serde only
    struct Body {
        name: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        count: i32,
    }

    fn problem_of(json: &str) -> (u16, Option<String>) {
        let problem = parse_json::<Body>(json.as_bytes()).expect_err("refused").problem();
        (problem.status, problem.field)
    }

    #[test]
    fn body_errors_name_the_field() {
        assert_eq!(problem_of("{\"name\": 1}"), (422, Some("name".into())));
        assert_eq!(
            problem_of("{\"name\": \"a\", \"inner\": {\"count\": \"x\"}}"),
            (422, Some("inner.count".into()))
        );
        assert_eq!(problem_of("{\"name\": \"a\", \"bogus\": 1}"), (422, Some("bogus".into())));
        assert_eq!(
            problem_of("{\"name\": \"a\", \"inner\": {\"extra\": 1}}"),
            (422, Some("inner.extra".into()))
        );
        assert_eq!(problem_of("{}"), (422, Some("name".into())));
        assert_eq!(problem_of("{\"name\": "), (400, None));
        assert_eq!(problem_of("{\"name\": \"a\"} trailing"), (400, None));
        assert_eq!(problem_of("[]"), (422, None));
        assert_eq!(problem_of("[\"a\", null]"), (422, None));
        assert_eq!(problem_of("[1,"), (400, None));
    }

    #[test]
    fn keyset_cursors_round_trip_and_reject_garbage() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("valid time");
        let id = Uuid::new_v4();
        let page = Page::from_rows(vec![(at, id), (at, Uuid::nil())], 1, |(at, id)| Keyset::key(*at, *id));
        let cursor = page.next_cursor.expect("a next page");
        assert_eq!(Keyset::decode(Some(&cursor)).expect("decodes"), Keyset { at, id });
        assert!(Keyset::decode(Some("not a cursor")).is_err());
        assert!(Page::from_rows(vec![1, 2], 2, ToString::to_string).next_cursor.is_none());
    }

    #[test]
    fn if_match_compares_strong_and_weak_tags() {
        let mut headers = HeaderMap::new();
        assert!(check_if_match(&headers, 3).is_ok());
        headers.insert(header::IF_MATCH, HeaderValue::from_static("\"3\""));
        assert!(check_if_match(&headers, 3).is_ok());
        assert_eq!(check_if_match(&headers, 4).expect_err("stale").status_code(), 412);
        headers.insert(header::IF_MATCH, HeaderValue::from_static("W/\"4\", \"9\""));
        assert!(check_if_match(&headers, 4).is_ok());
        headers.insert(header::IF_MATCH, HeaderValue::from_static(""));
        assert_eq!(check_if_match(&headers, 4).expect_err("empty").status_code(), 400);
    }
}
