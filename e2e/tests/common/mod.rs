//! Helpers shared by the end-to-end tests that run against the local platform
//! (`make up`): a client that fails loudly when the platform is missing, a fresh namespace
//! per test (deleted when the test ends, passed or failed), polling with a deadline, and
//! access to the pod runner's per-Pod folders.

#![allow(dead_code)] // each test binary uses a different subset

use std::fmt::Debug;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A client for the local platform. Panics with what to do when KUBECONFIG is unset, the
/// API server does not answer, or the pod runner's Node is not Ready: these tests never
/// skip silently.
pub async fn platform_client() -> Client {
    let Some(path) = std::env::var_os("KUBECONFIG") else {
        panic!(
            "KUBECONFIG is not set: these tests need the local platform. Run `make up` and \
             `source .local/env` (or export KUBECONFIG=$PWD/.local/kubeconfig)"
        );
    };
    let path = PathBuf::from(path);
    let kubeconfig = kube::config::Kubeconfig::read_from(&path)
        .unwrap_or_else(|err| panic!("cannot read KUBECONFIG={}: {err}", path.display()));
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap_or_else(|err| panic!("invalid KUBECONFIG={}: {err}", path.display()));
    let client = Client::try_from(config).unwrap_or_else(|err| panic!("cannot build a client: {err}"));
    match tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => panic!(
            "the Kubernetes API server from KUBECONFIG={} is unreachable: {err}. Start the platform with `make up`",
            path.display()
        ),
        Err(_) => panic!(
            "the Kubernetes API server from KUBECONFIG={} did not answer within 10s. Start the platform with `make up`",
            path.display()
        ),
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let ready = nodes.get_opt("local").await.ok().flatten().is_some_and(|node| {
        node.status
            .and_then(|s| s.conditions)
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    });
    assert!(
        ready,
        "Node `local` is not Ready: the pod runner is not running. Start it with `e2e/platform/pod-runner.sh up`"
    );
    client
}

/// Where the pod runner keeps Pod folders (`MILLRACE_PODS_DIR`, else `<repo>/.local/pods`).
pub fn pods_dir() -> PathBuf {
    match std::env::var_os("MILLRACE_PODS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.local/pods"),
    }
}

/// A container's log file as the pod runner writes it (empty while it does not exist).
pub fn container_log(namespace: &str, pod: &str, container: &str) -> String {
    std::fs::read_to_string(pods_dir().join(namespace).join(pod).join(format!("{container}.log")))
        .unwrap_or_default()
}

/// Polls `check` every 250ms until it returns `Ok`, panicking after `timeout` with what was
/// last observed (the `Err` text).
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(observed) => observed,
        };
        if started.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last observed: {last}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A namespace of its own for one test, deleted when dropped (also when the test panics).
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

impl TestNamespace {
    /// Creates `pods-<prefix>-<unique>` and waits for its default ServiceAccount (the
    /// ServiceAccount admission plugin refuses Pods until it exists).
    pub async fn new(client: &Client, prefix: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let name = format!("pods-{prefix}-{:x}", (nanos ^ u128::from(std::process::id())) & 0xff_ffff);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("valid namespace");
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|err| panic!("creating namespace {name}: {err}"));
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        wait_for("the namespace's default ServiceAccount", Duration::from_secs(60), || async {
            match accounts.get_opt("default").await {
                Ok(Some(_)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        Self { name, client: client.clone() }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Creates an object from its JSON manifest in this namespace.
    pub async fn create<K>(&self, manifest: serde_json::Value) -> K
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + Debug,
        K::DynamicType: Default,
    {
        let object: K =
            serde_json::from_value(manifest).unwrap_or_else(|err| panic!("invalid manifest: {err}"));
        self.api::<K>()
            .create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|err| panic!("creating {object:?}: {err}"))
    }

    pub fn log(&self, pod: &str, container: &str) -> String {
        container_log(&self.name, pod, container)
    }

    /// Waits until `container`'s log contains `needle`, and returns the log.
    pub async fn wait_for_log(&self, pod: &str, container: &str, needle: &str, timeout: Duration) -> String {
        wait_for(&format!("{needle:?} in the log of {}/{pod}/{container}", self.name), timeout, || async {
            let log = self.log(pod, container);
            if log.contains(needle) { Ok(log) } else { Err(format!("log so far: {log:?}")) }
        })
        .await
    }

    /// Waits until Pod `name` satisfies `check`, returning it.
    pub async fn wait_for_pod(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Pod) -> bool,
    ) -> Pod {
        let pods: Api<Pod> = self.api();
        wait_for(&format!("Pod {}/{name}: {what}", self.name), timeout, || async {
            match pods.get_opt(name).await {
                Ok(Some(pod)) if check(&pod) => Ok(pod),
                Ok(Some(pod)) => {
                    Err(format!("status: {}", serde_json::to_string(&pod.status).unwrap_or_default()))
                }
                Ok(None) => Err("no such Pod".into()),
                Err(err) => Err(err.to_string()),
            }
        })
        .await
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let name = self.name.clone();
        // The test's runtime may be shutting down: delete from a thread with its own.
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let config = kube::Config::infer().await.ok()?;
                let client = Client::try_from(config).ok()?;
                let namespaces: Api<Namespace> = Api::all(client);
                namespaces.delete(&name, &DeleteParams::default()).await.ok()
            })
        })
        .join();
        if !matches!(deleted, Ok(Some(_))) {
            eprintln!("warning: could not delete test namespace {}", self.name);
        }
    }
}

// --- Pod status accessors -------------------------------------------------------------------

pub fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

pub fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status.as_ref()?.pod_ip.clone()
}

pub fn condition(pod: &Pod, type_: &str) -> Option<String> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_).map(|c| c.status.clone())
}

pub fn is_ready(pod: &Pod) -> bool {
    condition(pod, "Ready").as_deref() == Some("True")
}

pub fn container_status<'a>(
    pod: &'a Pod,
    name: &str,
) -> Option<&'a k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status.as_ref()?.container_statuses.as_ref()?.iter().find(|c| c.name == name)
}

pub fn is_running(pod: &Pod, container: &str) -> bool {
    container_status(pod, container).and_then(|c| c.state.as_ref()).is_some_and(|s| s.running.is_some())
}

// --- A tiny HTTP/1.1 client (enough for python's http.server) --------------------------------

/// `GET http://{addr}{path}` → (status code, body).
pub async fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream =
            tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let code = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("bad response {text:?}"))?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        Ok((code, body))
    };
    tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .map_err(|_| format!("GET {addr}{path} timed out"))?
}
