//! ServiceAccount identity for Pods: tokens from the TokenRequest API (bound to the Pod,
//! refreshed at 80% of their lifetime) and the per-Pod kubeconfig that carries one, so a
//! process in a Pod talks to the API server as its ServiceAccount and RBAC applies.
//!
//! Owns token caching and the kubeconfig format. It never hands out the runner's own
//! (admin) credentials: only the cluster entry (server + CA) is copied from them.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::PostParams;
use kube::config::Kubeconfig;
use kube::{Api, Client};

use crate::fsutil::write_if_changed;
use crate::services::env::ApiServerAddress;

/// Lifetime asked for the kubeconfig token.
const KUBECONFIG_TOKEN_SECONDS: i64 = 3600;
/// kubelet refreshes projected tokens at 80% of their lifetime or after 24h, whichever is first.
const MAX_REFRESH: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the runner's kubeconfig has no current context with a cluster")]
    NoCluster,
    #[error("the runner's kubeconfig server {0:?} is not an https://host:port URL")]
    Server(String),
    #[error("requesting a token for ServiceAccount {namespace}/{service_account}: {source}")]
    TokenRequest { namespace: String, service_account: String, source: kube::Error },
    #[error("the TokenRequest for ServiceAccount {0} returned no token")]
    EmptyToken(String),
    #[error("writing {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

/// How Pods reach the API server: the cluster entry of the runner's kubeconfig.
#[derive(Debug, Clone)]
pub struct ApiServerAccess {
    cluster: serde_json::Value,
    pub address: ApiServerAddress,
}

impl ApiServerAccess {
    pub fn from_kubeconfig(config: &Kubeconfig) -> Result<Self, IdentityError> {
        let context_name = config.current_context.as_deref().ok_or(IdentityError::NoCluster)?;
        let context = config
            .contexts
            .iter()
            .find(|c| c.name == context_name)
            .and_then(|c| c.context.as_ref())
            .ok_or(IdentityError::NoCluster)?;
        let cluster = config
            .clusters
            .iter()
            .find(|c| c.name == context.cluster)
            .and_then(|c| c.cluster.as_ref())
            .ok_or(IdentityError::NoCluster)?;
        let server = cluster.server.clone().ok_or(IdentityError::NoCluster)?;
        let address = parse_server(&server).ok_or_else(|| IdentityError::Server(server.clone()))?;
        let mut entry = serde_json::json!({"server": server});
        if let Some(ca) = &cluster.certificate_authority {
            entry["certificate-authority"] = ca.clone().into();
        }
        if let Some(ca) = &cluster.certificate_authority_data {
            entry["certificate-authority-data"] = ca.clone().into();
        }
        if let Some(insecure) = cluster.insecure_skip_tls_verify {
            entry["insecure-skip-tls-verify"] = insecure.into();
        }
        if let Some(name) = &cluster.tls_server_name {
            entry["tls-server-name"] = name.clone().into();
        }
        Ok(Self { cluster: entry, address })
    }

    /// A kubeconfig (JSON, which every YAML reader accepts) for `user` with `token`,
    /// defaulting to `namespace` like an in-cluster client.
    pub fn kubeconfig(&self, user: &str, namespace: &str, token: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "millrace-local", "cluster": self.cluster}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "millrace-local", "context": {"cluster": "millrace-local", "user": user, "namespace": namespace}}],
            "current-context": "millrace-local",
        })
    }
}

fn parse_server(server: &str) -> Option<ApiServerAddress> {
    let rest = server.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
            (host, port.parse().ok()?)
        }
        _ => (authority, 443),
    };
    Some(ApiServerAddress { host: host.trim_matches(['[', ']']).to_string(), port })
}

/// What a token is for: an audience (`None`: the API server's own) and a lifetime.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    pub audience: Option<String>,
    pub expiration_seconds: i64,
}

#[derive(Debug)]
struct CachedToken {
    token: String,
    refresh_at: Instant,
}

/// The tokens of one Pod.
#[derive(Debug)]
pub struct PodIdentity {
    namespace: String,
    pod_name: String,
    pod_uid: String,
    service_account: String,
    tokens: HashMap<TokenKey, CachedToken>,
}

impl PodIdentity {
    pub fn new(pod: &Pod) -> Self {
        Self {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            pod_name: pod.metadata.name.clone().unwrap_or_default(),
            pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
            service_account: service_account_name(pod),
            tokens: HashMap::new(),
        }
    }

    /// The cached token for `key`, or a fresh one when it is due for refresh.
    pub async fn token(&mut self, client: &Client, key: &TokenKey) -> Result<String, IdentityError> {
        if let Some(cached) = self.tokens.get(key)
            && Instant::now() < cached.refresh_at
        {
            return Ok(cached.token.clone());
        }
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &self.namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: key.audience.clone().map(|a| vec![a]),
                expiration_seconds: Some(key.expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(self.pod_name.clone()),
                    uid: Some(self.pod_uid.clone()),
                }),
            }),
            ..Default::default()
        };
        let response = api
            .create_token_request(&self.service_account, &PostParams::default(), &request)
            .await
            .map_err(|source| IdentityError::TokenRequest {
                namespace: self.namespace.clone(),
                service_account: self.service_account.clone(),
                source,
            })?;
        let status = response.status.unwrap_or_default();
        let token = status.token.filter(|t| !t.is_empty()).ok_or_else(|| {
            IdentityError::EmptyToken(format!("{}/{}", self.namespace, self.service_account))
        })?;
        let lifetime = status
            .expiration_timestamp
            .and_then(|t| {
                let now = k8s_openapi::jiff::Timestamp::now();
                Duration::try_from(t.0.duration_since(now)).ok()
            })
            .unwrap_or(Duration::from_secs(key.expiration_seconds.unsigned_abs()));
        let refresh_at = Instant::now() + lifetime.mul_f64(0.8).min(MAX_REFRESH);
        tracing::debug!(audience = ?key.audience, ?lifetime, "ServiceAccount token issued");
        self.tokens.insert(key.clone(), CachedToken { token: token.clone(), refresh_at });
        Ok(token)
    }

    /// Writes (or refreshes) the Pod's kubeconfig at `path`.
    pub async fn write_kubeconfig(
        &mut self,
        client: &Client,
        access: &ApiServerAccess,
        path: &Path,
    ) -> Result<(), IdentityError> {
        let key = TokenKey { audience: None, expiration_seconds: KUBECONFIG_TOKEN_SECONDS };
        let token = self.token(client, &key).await?;
        let user = format!("system:serviceaccount:{}:{}", self.namespace, self.service_account);
        let config = access.kubeconfig(&user, &self.namespace, &token);
        let text = serde_json::to_string_pretty(&config).unwrap_or_default();
        write_if_changed(path, text.as_bytes(), 0o600)
            .map(|_| ())
            .map_err(|source| IdentityError::Write { path: path.display().to_string(), source })
    }
}

pub fn service_account_name(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// Whether the Pod gets API credentials: its own `automountServiceAccountToken`, else its
/// ServiceAccount's, else yes (as kubelet and the ServiceAccount admission plugin decide).
pub async fn automount_enabled(client: &Client, pod: &Pod) -> bool {
    if let Some(explicit) = pod.spec.as_ref().and_then(|s| s.automount_service_account_token) {
        return explicit;
    }
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    match api.get_opt(&service_account_name(pod)).await {
        Ok(Some(sa)) => sa.automount_service_account_token.unwrap_or(true),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_give_host_and_port() {
        let addr = parse_server("https://127.0.0.1:16443").expect("parses");
        assert_eq!((addr.host.as_str(), addr.port), ("127.0.0.1", 16443));
        let addr = parse_server("https://api.example/").expect("parses");
        assert_eq!((addr.host.as_str(), addr.port), ("api.example", 443));
        let addr = parse_server("https://[::1]:6443").expect("parses");
        assert_eq!((addr.host.as_str(), addr.port), ("::1", 6443));
        assert!(parse_server("http://127.0.0.1:8080").is_none());
    }

    #[test]
    fn kubeconfig_copies_the_cluster_but_not_the_admin_user() {
        let admin: Kubeconfig = serde_json::from_value(serde_json::json!({
            "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:16443", "certificate-authority": "/ca.crt"}}],
            "users": [{"name": "admin", "user": {"token": "ADMIN-SECRET"}}],
            "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "admin"}}],
            "current-context": "ctx"
        }))
        .expect("valid kubeconfig");
        let access = ApiServerAccess::from_kubeconfig(&admin).expect("has a cluster");
        let config = access.kubeconfig("system:serviceaccount:ns:sa", "ns", "POD-TOKEN");
        let text = config.to_string();
        assert!(!text.contains("ADMIN-SECRET"));
        assert_eq!(config["clusters"][0]["cluster"]["certificate-authority"], "/ca.crt");
        assert_eq!(config["users"][0]["user"]["token"], "POD-TOKEN");
        assert_eq!(config["contexts"][0]["context"]["namespace"], "ns");
        let parsed: Kubeconfig = serde_json::from_value(config).expect("kube-rs reads it back");
        assert_eq!(parsed.current_context.as_deref(), Some("millrace-local"));
    }
}
