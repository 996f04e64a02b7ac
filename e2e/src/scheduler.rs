//! The kube-scheduler stand-in: binds every Pending Pod that has no node yet (and asks for
//! the default scheduler) to the runner's Node through the `pods/binding` subresource.
//! There is one Node, so there is nothing to score; taints, affinity and resource requests
//! are not evaluated.

use std::collections::HashSet;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use crate::metrics::RunnerMetrics;

/// Whether the stand-in should bind `pod`.
pub fn wants_binding(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else { return false };
    let scheduler_ok = matches!(spec.scheduler_name.as_deref(), None | Some("") | Some("default-scheduler"));
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    spec.node_name.as_deref().unwrap_or("").is_empty()
        && scheduler_ok
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// Watches unscheduled Pods and binds them until the process ends.
pub async fn run(client: Client, node_name: String, metrics: RunnerMetrics) {
    let api: Api<Pod> = Api::all(client.clone());
    let stream = watcher(api, watcher::Config::default().fields("spec.nodeName=")).default_backoff();
    futures::pin_mut!(stream);
    // A Pod is bound once; a stale event for it afterwards must not produce a second POST.
    let mut bound: HashSet<String> = HashSet::new();
    while let Some(event) = stream.next().await {
        let pods = match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => vec![pod],
            Ok(watcher::Event::Delete(pod)) => {
                if let Some(uid) = pod.uid() {
                    bound.remove(&uid);
                }
                Vec::new()
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => Vec::new(),
            Err(err) => {
                tracing::warn!(%err, "watching unscheduled Pods");
                Vec::new()
            }
        };
        for pod in pods {
            let Some(uid) = pod.uid() else { continue };
            if !wants_binding(&pod) || bound.contains(&uid) {
                continue;
            }
            match bind(&client, &pod, &node_name).await {
                Ok(()) => {
                    metrics.bindings.inc();
                    bound.insert(uid);
                }
                Err(err) => {
                    tracing::warn!(pod = %format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()), %err, "binding failed")
                }
            }
        }
        if bound.len() > 10_000 {
            bound.clear();
        }
    }
}

async fn bind(client: &Client, pod: &Pod, node_name: &str) -> Result<(), kube::Error> {
    let namespace = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(pod.name_any()),
            namespace: Some(namespace.clone()),
            uid: pod.uid(),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node_name.to_string()),
            ..Default::default()
        },
    };
    match api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &pod.name_any(),
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => {
            tracing::info!(pod = %format!("{namespace}/{}", pod.name_any()), node = node_name, "bound");
            Ok(())
        }
        // Already bound (another event raced us) or gone: nothing to do.
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(()),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": spec}),
        )
        .expect("valid pod")
    }

    #[test]
    fn binds_only_unscheduled_default_scheduler_pods() {
        assert!(wants_binding(&pod(serde_json::json!({"containers": []}))));
        assert!(wants_binding(&pod(
            serde_json::json!({"containers": [], "schedulerName": "default-scheduler"})
        )));
        assert!(!wants_binding(&pod(serde_json::json!({"containers": [], "schedulerName": "volcano"}))));
        assert!(!wants_binding(&pod(serde_json::json!({"containers": [], "nodeName": "local"}))));
    }
}
