//! A container's environment, built the way kubelet builds it: `envFrom`, then `env` in
//! order (with `valueFrom` and `$(VAR)` expansion over what is defined so far plus the
//! Service variables), then the Service variables not yet defined. The runner's own
//! variables (POD_IP, KUBECONFIG, MILLRACE_HOSTS_FILE, …) come first so a container can
//! override them.
//!
//! Pure: the ConfigMaps and Secrets it reads are fetched by the caller
//! ([`referenced_objects`] says which).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVarSource, Pod, Secret};

use super::downward::{self, DownwardError, NodeCapacity};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("configmap {0:?} not found")]
    ConfigMapNotFound(String),
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKey { namespace: String, name: String, key: String },
    #[error("secret {0:?} not found")]
    SecretNotFound(String),
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKey { namespace: String, name: String, key: String },
    #[error("env {var}: {source}")]
    Downward { var: String, source: DownwardError },
    #[error("env {0}: valueFrom sets no source the pod runner supports (fileKeyRef is not supported)")]
    UnsupportedSource(String),
}

/// Everything [`build_env`] reads.
pub struct EnvInputs<'a> {
    pub pod: &'a Pod,
    pub container: &'a Container,
    pub pod_ip: Ipv4Addr,
    pub node: NodeCapacity,
    /// The runner's variables; containers may override them.
    pub base: &'a [(String, String)],
    /// `<SVC>_SERVICE_HOST` and friends for the Pod's namespace.
    pub service_env: &'a [(String, String)],
    /// Fetched by name; a name missing here does not exist in the namespace.
    pub config_maps: &'a BTreeMap<String, ConfigMap>,
    pub secrets: &'a BTreeMap<String, Secret>,
}

/// An ordered environment where a later definition replaces an earlier one in place.
#[derive(Debug, Default, Clone)]
pub struct EnvList {
    vars: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl EnvList {
    pub fn set(&mut self, name: &str, value: String) {
        match self.index.get(name) {
            Some(&at) => self.vars[at].1 = value,
            None => {
                self.index.insert(name.to_string(), self.vars.len());
                self.vars.push((name.to_string(), value));
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&at| self.vars[at].1.as_str())
    }

    pub fn into_vec(self) -> Vec<(String, String)> {
        self.vars
    }
}

/// The ConfigMap and Secret names a container's env refers to.
pub fn referenced_objects(container: &Container) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut config_maps = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    for source in container.env_from.iter().flatten() {
        if let Some(r) = &source.config_map_ref {
            config_maps.insert(r.name.clone());
        }
        if let Some(r) = &source.secret_ref {
            secrets.insert(r.name.clone());
        }
    }
    for var in container.env.iter().flatten() {
        if let Some(from) = &var.value_from {
            if let Some(r) = &from.config_map_key_ref {
                config_maps.insert(r.name.clone());
            }
            if let Some(r) = &from.secret_key_ref {
                secrets.insert(r.name.clone());
            }
        }
    }
    (config_maps, secrets)
}

pub fn build_env(inputs: &EnvInputs<'_>) -> Result<Vec<(String, String)>, EnvError> {
    let namespace = inputs.pod.metadata.namespace.clone().unwrap_or_default();
    let mut env = EnvList::default();
    for (name, value) in inputs.base {
        env.set(name, value.clone());
    }
    let services: HashMap<&str, &str> =
        inputs.service_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();

    for source in inputs.container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        if let Some(r) = &source.config_map_ref {
            match inputs.config_maps.get(&r.name) {
                Some(cm) => {
                    for (key, value) in cm.data.iter().flatten() {
                        set_if_valid(&mut env, &format!("{prefix}{key}"), value.clone());
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(EnvError::ConfigMapNotFound(r.name.clone())),
            }
        }
        if let Some(r) = &source.secret_ref {
            match inputs.secrets.get(&r.name) {
                Some(secret) => {
                    for (key, value) in secret.data.iter().flatten() {
                        set_if_valid(
                            &mut env,
                            &format!("{prefix}{key}"),
                            String::from_utf8_lossy(&value.0).into_owned(),
                        );
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(EnvError::SecretNotFound(r.name.clone())),
            }
        }
    }

    for var in inputs.container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (_, Some(from)) => match value_from(inputs, &namespace, &var.name, from)? {
                Some(value) => value,
                None => continue,
            },
            (Some(value), None) => expand(value, |name| {
                env.get(name).or_else(|| services.get(name).copied()).map(str::to_string)
            }),
            (None, None) => String::new(),
        };
        env.set(&var.name, value);
    }

    for (name, value) in inputs.service_env {
        if env.get(name).is_none() {
            env.set(name, value.clone());
        }
    }
    Ok(env.into_vec())
}

/// kubelet skips envFrom keys that are not valid variable names (and records an event).
fn set_if_valid(env: &mut EnvList, name: &str, value: String) {
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        env.set(name, value);
    } else {
        tracing::warn!(name, "skipping envFrom key that is not a valid environment variable name");
    }
}

/// The value of one `valueFrom`; `None` when an optional source is missing (the variable is
/// then left out, as kubelet does).
fn value_from(
    inputs: &EnvInputs<'_>,
    namespace: &str,
    var: &str,
    from: &EnvVarSource,
) -> Result<Option<String>, EnvError> {
    if let Some(field) = &from.field_ref {
        return downward::field_value(inputs.pod, inputs.pod_ip, &field.field_path)
            .map(Some)
            .map_err(|source| EnvError::Downward { var: var.to_string(), source });
    }
    if let Some(resource) = &from.resource_field_ref {
        return downward::resource_value(inputs.pod, Some(inputs.container), resource, inputs.node)
            .map(Some)
            .map_err(|source| EnvError::Downward { var: var.to_string(), source });
    }
    if let Some(r) = &from.config_map_key_ref {
        let optional = r.optional == Some(true);
        let Some(cm) = inputs.config_maps.get(&r.name) else {
            return if optional { Ok(None) } else { Err(EnvError::ConfigMapNotFound(r.name.clone())) };
        };
        let value = cm.data.as_ref().and_then(|d| d.get(&r.key)).cloned().or_else(|| {
            cm.binary_data
                .as_ref()
                .and_then(|d| d.get(&r.key))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        });
        return match value {
            Some(value) => Ok(Some(value)),
            None if optional => Ok(None),
            None => Err(EnvError::ConfigMapKey {
                namespace: namespace.to_string(),
                name: r.name.clone(),
                key: r.key.clone(),
            }),
        };
    }
    if let Some(r) = &from.secret_key_ref {
        let optional = r.optional == Some(true);
        let Some(secret) = inputs.secrets.get(&r.name) else {
            return if optional { Ok(None) } else { Err(EnvError::SecretNotFound(r.name.clone())) };
        };
        return match secret.data.as_ref().and_then(|d| d.get(&r.key)) {
            Some(value) => Ok(Some(String::from_utf8_lossy(&value.0).into_owned())),
            None if optional => Ok(None),
            None => Err(EnvError::SecretKey {
                namespace: namespace.to_string(),
                name: r.name.clone(),
                key: r.key.clone(),
            }),
        };
    }
    Err(EnvError::UnsupportedSource(var.to_string()))
}

/// kubelet's `$(VAR)` expansion: `$(NAME)` becomes the value of NAME when it is defined and
/// stays as written otherwise; `$$` is an escaped `$`; any other `$` is literal.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let advance = match bytes[cursor + 1] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match rest.find(')') {
                    Some(close) => {
                        let name = &rest[1..close];
                        match lookup(name) {
                            Some(value) => out.push_str(&value),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        close + 1
                    }
                    None => {
                        out.push_str("$(");
                        1
                    }
                },
                _ => {
                    // `$x`: both characters are kept; the next one is copied from the checkpoint.
                    out.push('$');
                    0
                }
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    out.push_str(&input[checkpoint.min(input.len())..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn lookup(name: &str) -> Option<String> {
        match name {
            "POD_IP" => Some("127.10.0.1".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expansion_follows_kubelet() {
        assert_eq!(expand("--bind=$(POD_IP)", lookup), "--bind=127.10.0.1");
        assert_eq!(expand("$(POD_IP):$(POD_IP)", lookup), "127.10.0.1:127.10.0.1");
        assert_eq!(expand("$(UNDEFINED)", lookup), "$(UNDEFINED)");
        assert_eq!(expand("$$(POD_IP)", lookup), "$(POD_IP)");
        assert_eq!(expand("cost: $5", lookup), "cost: $5");
        assert_eq!(expand("$HOME/x", lookup), "$HOME/x");
        assert_eq!(expand("tail$", lookup), "tail$");
        assert_eq!(expand("$(unclosed", lookup), "$(unclosed");
        assert_eq!(expand("a$(EMPTY)b", lookup), "ab");
        assert_eq!(expand("ünï$(POD_IP)cödé", lookup), "ünï127.10.0.1cödé");
        assert_eq!(expand("", lookup), "");
    }

    fn pod_and_container() -> (Pod, Container) {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"tier": "web"}},
            "spec": {"containers": [{
                "name": "c",
                "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}, {"secretRef": {"name": "gone", "optional": true}}],
                "env": [
                    {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "TIER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['tier']"}}},
                    {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                    {"name": "MAYBE", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nope", "optional": true}}},
                    {"name": "COMBINED", "value": "$(GREETING)-$(MY_NAME)-$(WEB_SERVICE_HOST)-$(LATER)"},
                    {"name": "LATER", "value": "x"},
                    {"name": "POD_NAME", "value": "overridden"}
                ]
            }]}
        }))
        .expect("valid pod");
        let container = pod.spec.as_ref().map(|s| s.containers[0].clone()).expect("one container");
        (pod, container)
    }

    #[test]
    fn env_is_built_in_kubelet_order() {
        let (pod, container) = pod_and_container();
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "cfg"}, "data": {"greeting": "hello", "mode": "fast", "bad key": "skipped"}
        }))
        .expect("valid configmap");
        let secret = Secret {
            data: Some([("password".to_string(), ByteString(b"s3cret".to_vec()))].into()),
            ..Default::default()
        };
        let config_maps = [("cfg".to_string(), cm)].into();
        let secrets = [("creds".to_string(), secret)].into();
        let base =
            vec![("POD_NAME".to_string(), "p".to_string()), ("POD_IP".to_string(), "127.10.0.9".to_string())];
        let service_env = vec![
            ("WEB_SERVICE_HOST".to_string(), "127.20.0.3".to_string()),
            ("MY_IP".to_string(), "not used: defined by the container".to_string()),
        ];
        let inputs = EnvInputs {
            pod: &pod,
            container: &container,
            pod_ip: "127.10.0.9".parse().expect("ip"),
            node: NodeCapacity { cpus: 2, memory_bytes: 1 << 30 },
            base: &base,
            service_env: &service_env,
            config_maps: &config_maps,
            secrets: &secrets,
        };
        let env: BTreeMap<String, String> = build_env(&inputs).expect("env builds").into_iter().collect();
        assert_eq!(env["MY_NAME"], "p");
        assert_eq!(env["MY_IP"], "127.10.0.9");
        assert_eq!(env["TIER"], "web");
        assert_eq!(env["GREETING"], "hello");
        assert_eq!(env["PASSWORD"], "s3cret");
        assert_eq!(env["CFG_mode"], "fast");
        assert!(!env.contains_key("CFG_bad key"));
        assert!(!env.contains_key("MAYBE"));
        assert_eq!(env["COMBINED"], "hello-p-127.20.0.3-$(LATER)");
        assert_eq!(env["POD_NAME"], "overridden");
        assert_eq!(env["WEB_SERVICE_HOST"], "127.20.0.3");
    }

    #[test]
    fn missing_required_sources_are_errors() {
        let (pod, container) = pod_and_container();
        let inputs = EnvInputs {
            pod: &pod,
            container: &container,
            pod_ip: "127.10.0.9".parse().expect("ip"),
            node: NodeCapacity { cpus: 2, memory_bytes: 1 << 30 },
            base: &[],
            service_env: &[],
            config_maps: &BTreeMap::new(),
            secrets: &BTreeMap::new(),
        };
        assert_eq!(build_env(&inputs), Err(EnvError::ConfigMapNotFound("cfg".into())));
        let (cms, secrets) = referenced_objects(&container);
        assert_eq!(cms.into_iter().collect::<Vec<_>>(), vec!["cfg"]);
        assert_eq!(secrets.into_iter().collect::<Vec<_>>(), vec!["creds", "gone"]);
    }
}
