//! Which Pods back a Service, and on which port: the part of kube-proxy's and the
//! EndpointSlice controller's work the runner needs, computed from Pods directly because
//! the API server refuses loopback addresses in Endpoints/EndpointSlices. Pure.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// A Pod that may receive a Service's traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct Backend<'a> {
    pub pod: &'a Pod,
    pub name: String,
    pub ip: Ipv4Addr,
}

/// Whether `pod` is Ready (its Ready condition is True) and not terminating.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conds| conds.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn pod_ip(pod: &Pod) -> Option<Ipv4Addr> {
    pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()
}

/// Pods of `namespace` whose labels match `selector` and that have an address, sorted by
/// name (so round-robin walks them in a stable order). Not-ready Pods are included only
/// with `include_not_ready` (`publishNotReadyAddresses`).
pub fn backends<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    namespace: &str,
    selector: &BTreeMap<String, String>,
    include_not_ready: bool,
) -> Vec<Backend<'a>> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<Backend<'a>> = pods
        .into_iter()
        .filter(|pod| pod.metadata.namespace.as_deref() == Some(namespace))
        .filter(|pod| {
            let labels = pod.metadata.labels.as_ref();
            selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })
        .filter(|pod| {
            if include_not_ready {
                pod.metadata.deletion_timestamp.is_none()
                    && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            } else {
                pod_ready(pod)
            }
        })
        .filter_map(|pod| Some(Backend { pod, name: pod.metadata.name.clone()?, ip: pod_ip(pod)? }))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The Pod port a Service port forwards to: `targetPort` as a number, or the container port
/// with that name, or the Service port itself when `targetPort` is unset.
pub fn target_port(pod: &Pod, target: Option<&IntOrString>, service_port: i32) -> Option<u16> {
    let number = match target {
        None => service_port,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(name)) => match name.parse::<i32>() {
            Ok(n) => n,
            Err(_) => named_port(pod, name)?,
        },
    };
    u16::try_from(number).ok().filter(|&p| p != 0)
}

/// The number of the container port called `name` in any of the Pod's containers.
pub fn named_port(pod: &Pod, name: &str) -> Option<i32> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(name))
        .map(|p| p.container_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, labels: serde_json::Value, ip: Option<&str>, ready: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "labels": labels},
            "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {
                "phase": "Running",
                "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
            }
        }))
        .expect("valid pod")
    }

    #[test]
    fn selects_ready_matching_pods_in_name_order() {
        let pods = [
            pod("b", serde_json::json!({"app": "web"}), Some("127.10.0.2"), true),
            pod("a", serde_json::json!({"app": "web", "x": "y"}), Some("127.10.0.1"), true),
            pod("c", serde_json::json!({"app": "web"}), Some("127.10.0.3"), false),
            pod("d", serde_json::json!({"app": "db"}), Some("127.10.0.4"), true),
            pod("e", serde_json::json!({"app": "web"}), None, true),
        ];
        let selector: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let names = |v: Vec<Backend<'_>>| v.into_iter().map(|b| b.name).collect::<Vec<_>>();
        assert_eq!(names(backends(&pods, "ns", &selector, false)), vec!["a", "b"]);
        assert_eq!(names(backends(&pods, "ns", &selector, true)), vec!["a", "b", "c"]);
        assert!(backends(&pods, "other", &selector, false).is_empty());
        assert!(
            backends(&pods, "ns", &BTreeMap::new(), false).is_empty(),
            "selectorless Services have no Pods"
        );
    }

    #[test]
    fn target_ports_resolve_by_number_or_name() {
        let p = pod("a", serde_json::json!({}), Some("127.10.0.1"), true);
        assert_eq!(target_port(&p, None, 80), Some(80));
        assert_eq!(target_port(&p, Some(&IntOrString::Int(9000)), 80), Some(9000));
        assert_eq!(target_port(&p, Some(&IntOrString::String("http".into())), 80), Some(8080));
        assert_eq!(target_port(&p, Some(&IntOrString::String("8081".into())), 80), Some(8081));
        assert_eq!(target_port(&p, Some(&IntOrString::String("nope".into())), 80), None);
    }
}
