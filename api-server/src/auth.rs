//! Who is calling: the admin (the token from the Secret) or a tenant (one of its API keys).
//!
//! API keys look like `mr_<10 chars>_<43 chars>`. The part up to the second `_` is the
//! visible prefix used to find the key; only SHA-256 of the whole key is stored, and the key
//! itself is shown once, in the response that creates it. Every tenant-scoped query takes
//! the tenant id from [`Tenant`], never from the request.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;

const KEY_PREFIX: &str = "mr_";
const PREFIX_LEN: usize = 10;

/// SHA-256 of a secret.
pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A new API key: (the full key, shown once; its lookup prefix; the hash to store).
pub fn generate_key() -> (String, String, [u8; 32]) {
    let mut rng = rand::rng();
    let visible: String = (&mut rng)
        .sample_iter(Alphanumeric)
        .take(PREFIX_LEN)
        .map(|c| char::from(c).to_ascii_lowercase())
        .collect();
    let secret: [u8; 32] = rng.random();
    let prefix = format!("{KEY_PREFIX}{visible}");
    let key = format!(
        "{prefix}_{}",
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, secret)
    );
    let hash = digest(&key);
    (key, prefix, hash)
}

/// The lookup prefix of a presented key, if it has the shape of one.
pub fn key_prefix(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (visible, secret) = rest.split_once('_')?;
    (visible.len() == PREFIX_LEN && !secret.is_empty()).then(|| &key[..KEY_PREFIX.len() + PREFIX_LEN])
}

/// The caller, once authenticated.
#[derive(Debug, Clone)]
pub enum Principal {
    Admin,
    Tenant(Tenant),
}

impl Principal {
    /// How the audit log names the caller.
    pub fn actor(&self) -> String {
        match self {
            Self::Admin => "admin".into(),
            Self::Tenant(t) => format!("key:{}", t.key_prefix),
        }
    }
}

/// A tenant acting through one of its API keys.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    pub namespace: String,
    pub key_id: Uuid,
    pub key_prefix: String,
}

impl Tenant {
    pub fn actor(&self) -> String {
        format!("key:{}", self.key_prefix)
    }
}

/// The admin token's extractor: tenant keys are refused with 403.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

#[derive(sqlx::FromRow)]
struct KeyRow {
    key_id: Uuid,
    key_hash: Vec<u8>,
    last_used_at: Option<DateTime<Utc>>,
    tenant_id: Uuid,
    tenant_name: String,
    namespace: String,
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::Unauthorized("an Authorization: Bearer <API key> header is required".into())
    })?;
    let value =
        value.to_str().map_err(|_| ApiError::Unauthorized("the Authorization header is not ASCII".into()))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Ok(token.trim())
        }
        _ => Err(ApiError::Unauthorized("the Authorization header must be `Bearer <API key>`".into())),
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        // Comparing digests keeps the comparison's timing independent of the token's bytes.
        if digest(token) == *state.admin_token_hash {
            return Ok(Self::Admin);
        }
        let invalid = || ApiError::Unauthorized("the API key is invalid or revoked".into());
        let prefix = key_prefix(token).ok_or_else(invalid)?;
        let row: Option<KeyRow> = sqlx::query_as(
            "SELECT k.id AS key_id, k.key_hash, k.last_used_at, t.id AS tenant_id, t.name AS tenant_name, t.namespace \
             FROM api_keys k JOIN tenants t ON t.id = k.tenant_id \
             WHERE k.prefix = $1 AND k.revoked_at IS NULL",
        )
        .bind(prefix)
        .fetch_optional(&state.db)
        .await?;
        let row = row.filter(|r| r.key_hash.as_slice() == digest(token)).ok_or_else(invalid)?;
        // At most one write a minute per key, so that reads stay reads (and cost one query).
        // The database's clock decides; this one only skips the statement when it cannot match.
        let stale = row.last_used_at.is_none_or(|at| Utc::now() - at >= TimeDelta::seconds(55));
        if stale {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = now() WHERE id = $1 \
             AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
            )
            .bind(row.key_id)
            .execute(&state.db)
            .await?;
        }
        Ok(Self::Tenant(Tenant {
            id: row.tenant_id,
            name: row.tenant_name,
            namespace: row.namespace,
            key_id: row.key_id,
            key_prefix: prefix.to_owned(),
        }))
    }
}

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Principal::from_request_parts(parts, state).await? {
            Principal::Tenant(tenant) => Ok(tenant),
            Principal::Admin => Err(ApiError::Forbidden(
                "the admin token manages tenants; tenant resources need one of the tenant's API keys".into(),
            )),
        }
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Principal::from_request_parts(parts, state).await? {
            Principal::Admin => Ok(Admin),
            Principal::Tenant(_) => Err(ApiError::Forbidden("this endpoint needs the admin token".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_a_lookup_prefix_and_verify_by_hash() {
        let (key, prefix, hash) = generate_key();
        assert_eq!(key_prefix(&key), Some(prefix.as_str()));
        assert!(key.len() > 50, "high entropy: {key}");
        assert_eq!(digest(&key), hash);
        let (other, _, _) = generate_key();
        assert_ne!(key, other);
        assert_eq!(key_prefix("mr_short_x"), None);
        assert_eq!(key_prefix("not-a-key"), None);
    }
}
