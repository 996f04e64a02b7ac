//! The apply phase: writes a deployment's children with server-side apply (one field
//! manager, forced, so the operator's view always wins over edits made by hand) and removes
//! the coordinator and worker Deployments when a job is suspended.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::Value;

use super::children::{Children, coordinator_name, worker_name};
use crate::kafka_topic::status::FIELD_MANAGER;

async fn apply<K>(api: Api<K>, object: &Value) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(object)).await?;
    Ok(())
}

/// Applies every child: the supporting objects first, so the coordinator finds its plan and
/// the workers their ServiceAccount.
pub async fn apply_all(client: &Client, namespace: &str, children: &Children) -> Result<(), kube::Error> {
    apply(Api::<ServiceAccount>::namespaced(client.clone(), namespace), &children.service_account).await?;
    apply(Api::<ConfigMap>::namespaced(client.clone(), namespace), &children.config_map).await?;
    apply(Api::<Service>::namespaced(client.clone(), namespace), &children.service).await?;
    apply(Api::<PodDisruptionBudget>::namespaced(client.clone(), namespace), &children.pod_disruption_budget)
        .await?;
    apply(Api::<Deployment>::namespaced(client.clone(), namespace), &children.coordinator).await?;
    apply(Api::<Deployment>::namespaced(client.clone(), namespace), &children.worker).await?;
    Ok(())
}

/// Deletes the coordinator and worker Deployments (their Pods follow); "already gone" is fine.
pub async fn remove_pods(client: &Client, namespace: &str, job: &str) -> Result<(), kube::Error> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    for name in [worker_name(job), coordinator_name(job)] {
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}
