//! The downward API: values of a Pod's own fields (`fieldRef`) and its containers'
//! resources (`resourceFieldRef`) as kubelet exposes them to env vars and volume files.
//!
//! Pure functions over the Pod object; the Pod's address comes from the runner (the status
//! in the API may lag behind the allocation).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceFieldSelector};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DownwardError {
    #[error("unsupported fieldRef fieldPath {0:?}")]
    UnsupportedField(String),
    #[error("unsupported resourceFieldRef resource {0:?}")]
    UnsupportedResource(String),
    #[error("resourceFieldRef names container {0:?}, which this Pod does not have")]
    UnknownContainer(String),
    #[error("invalid quantity {0:?}")]
    Quantity(String),
}

/// What the node offers, for resources a container does not limit.
#[derive(Debug, Clone, Copy)]
pub struct NodeCapacity {
    pub cpus: u64,
    pub memory_bytes: u64,
}

/// The value of `path` (e.g. `metadata.labels['app']`) for `pod`, whose address is `pod_ip`.
pub fn field_value(pod: &Pod, pod_ip: Ipv4Addr, path: &str) -> Result<String, DownwardError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    if let Some(key) = subscript(path, "metadata.labels") {
        return Ok(meta.labels.as_ref().and_then(|m| m.get(key)).cloned().unwrap_or_default());
    }
    if let Some(key) = subscript(path, "metadata.annotations") {
        return Ok(meta.annotations.as_ref().and_then(|m| m.get(key)).cloned().unwrap_or_default());
    }
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => "127.0.0.1".to_string(),
        other => return Err(DownwardError::UnsupportedField(other.to_string())),
    })
}

/// `metadata.labels['app']` → `app` for `prefix` `metadata.labels`.
fn subscript<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    let inner = rest.strip_prefix("['").or_else(|| rest.strip_prefix("[\""))?;
    inner.strip_suffix("']").or_else(|| inner.strip_suffix("\"]"))
}

/// The downward-API file format for a whole map: `key="value"` lines, sorted by key.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    let Some(map) = map else { return String::new() };
    map.iter().map(|(k, v)| format!("{k}={}\n", quote(v))).collect()
}

fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The value of a `resourceFieldRef` for `container` (or the one it names), divided by the
/// divisor and rounded up as kubelet does; limits fall back to the node's capacity.
pub fn resource_value(
    pod: &Pod,
    container: Option<&Container>,
    selector: &ResourceFieldSelector,
    node: NodeCapacity,
) -> Result<String, DownwardError> {
    let container = match &selector.container_name {
        Some(name) if !name.is_empty() => pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| &c.name == name))
            .ok_or_else(|| DownwardError::UnknownContainer(name.clone()))?,
        _ => container.ok_or_else(|| DownwardError::UnknownContainer(String::new()))?,
    };
    let (kind, resource) = selector
        .resource
        .split_once('.')
        .ok_or_else(|| DownwardError::UnsupportedResource(selector.resource.clone()))?;
    let resources = container.resources.as_ref();
    let declared = match kind {
        "limits" => resources.and_then(|r| r.limits.as_ref()).and_then(|m| m.get(resource)),
        "requests" => resources.and_then(|r| r.requests.as_ref()).and_then(|m| m.get(resource)),
        _ => return Err(DownwardError::UnsupportedResource(selector.resource.clone())),
    };
    let amount = match (declared, kind, resource) {
        (Some(q), _, _) => parse_quantity(&q.0)?,
        (None, "limits", "cpu") => node.cpus as f64,
        (None, "limits", "memory") => node.memory_bytes as f64,
        (None, "requests", "cpu" | "memory" | "ephemeral-storage") => 0.0,
        (None, _, _) => return Err(DownwardError::UnsupportedResource(selector.resource.clone())),
    };
    let divisor = match &selector.divisor {
        Some(q) => parse_quantity(&q.0)?,
        None => 1.0,
    };
    if divisor <= 0.0 {
        return Err(DownwardError::Quantity(format!("divisor {divisor}")));
    }
    Ok(format!("{}", (amount / divisor).ceil() as u64))
}

/// A Kubernetes quantity (`500m`, `2`, `1Gi`, `1e3`, `128974848`) as a number.
pub fn parse_quantity(text: &str) -> Result<f64, DownwardError> {
    let text = text.trim();
    let split =
        text.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| DownwardError::Quantity(text.to_string()))?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => {
            let power: i32 = exp[1..].parse().map_err(|_| DownwardError::Quantity(text.to_string()))?;
            10f64.powi(power)
        }
        _ => return Err(DownwardError::Quantity(text.to_string())),
    };
    Ok(value * factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"tier": "web", "a": "x\"y"}},
            "spec": {"nodeName": "local", "serviceAccountName": "sa", "containers": [
                {"name": "c", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}
            ]}
        }))
        .expect("valid pod")
    }

    #[test]
    fn field_paths_resolve() {
        let pod = pod();
        let ip = Ipv4Addr::new(127, 10, 0, 7);
        let value = |path| field_value(&pod, ip, path);
        assert_eq!(value("metadata.name"), Ok("p".into()));
        assert_eq!(value("metadata.namespace"), Ok("ns".into()));
        assert_eq!(value("metadata.uid"), Ok("u-1".into()));
        assert_eq!(value("metadata.labels['tier']"), Ok("web".into()));
        assert_eq!(value("metadata.labels['missing']"), Ok("".into()));
        assert_eq!(value("metadata.labels"), Ok("a=\"x\\\"y\"\ntier=\"web\"\n".into()));
        assert_eq!(value("spec.nodeName"), Ok("local".into()));
        assert_eq!(value("spec.serviceAccountName"), Ok("sa".into()));
        assert_eq!(value("status.podIP"), Ok("127.10.0.7".into()));
        assert!(matches!(value("spec.bogus"), Err(DownwardError::UnsupportedField(_))));
    }

    #[test]
    fn resources_round_up_and_fall_back_to_the_node() {
        let pod = pod();
        let container = pod.spec.as_ref().map(|s| &s.containers[0]);
        let node = NodeCapacity { cpus: 2, memory_bytes: 1 << 30 };
        let sel = |resource: &str, divisor: Option<&str>| ResourceFieldSelector {
            resource: resource.into(),
            divisor: divisor.map(|d| Quantity(d.into())),
            container_name: None,
        };
        assert_eq!(resource_value(&pod, container, &sel("limits.cpu", None), node), Ok("1".into()));
        assert_eq!(resource_value(&pod, container, &sel("limits.cpu", Some("1m")), node), Ok("500".into()));
        assert_eq!(
            resource_value(&pod, container, &sel("limits.memory", Some("1Mi")), node),
            Ok("64".into())
        );
        assert_eq!(resource_value(&pod, container, &sel("requests.cpu", None), node), Ok("0".into()));
        let mut bare = pod.clone();
        if let Some(spec) = bare.spec.as_mut() {
            spec.containers[0].resources = None;
        }
        let container = bare.spec.as_ref().map(|s| &s.containers[0]);
        assert_eq!(resource_value(&bare, container, &sel("limits.cpu", None), node), Ok("2".into()));
    }

    #[test]
    fn quantities_parse() {
        assert_eq!(parse_quantity("500m"), Ok(0.5));
        assert_eq!(parse_quantity("1Ki"), Ok(1024.0));
        assert_eq!(parse_quantity("1e3"), Ok(1000.0));
        assert_eq!(parse_quantity("2"), Ok(2.0));
        assert!(parse_quantity("lots").is_err());
    }
}
