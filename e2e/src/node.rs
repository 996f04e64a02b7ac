//! The Node `local` (kubelet's registration and heartbeat): created Ready with the machine's
//! capacity, its Lease in `kube-node-lease` renewed every 10s and its status refreshed every
//! minute, so the real node-lifecycle controller neither taints nor evicts it.
//!
//! Owns the Node and its Lease; never touches Pods.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

use crate::pods::downward::NodeCapacity;

pub const FIELD_MANAGER: &str = "millrace-pod-runner";
const LEASE_NAMESPACE: &str = "kube-node-lease";
const LEASE_DURATION_SECONDS: i32 = 40;
const LEASE_RENEW: Duration = Duration::from_secs(10);
const STATUS_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("creating Node {name}: {source}")]
    Create { name: String, source: kube::Error },
    #[error("updating the status of Node {name}: {source}")]
    Status { name: String, source: kube::Error },
    #[error("renewing the Lease of Node {name}: {source}")]
    Lease { name: String, source: kube::Error },
}

pub struct NodeAgent {
    client: Client,
    name: String,
    capacity: NodeCapacity,
    max_pods: u32,
    kubelet_version: String,
    ops_port: u16,
    registered_at: Timestamp,
    /// The Node's uid, for the Lease's owner reference (garbage-collected with the Node).
    node_uid: std::sync::Mutex<Option<String>>,
}

impl NodeAgent {
    pub fn new(
        client: Client,
        name: &str,
        capacity: NodeCapacity,
        max_pods: u32,
        kubelet_version: String,
        ops_port: u16,
    ) -> Self {
        Self {
            client,
            name: name.to_string(),
            capacity,
            max_pods,
            kubelet_version,
            ops_port,
            registered_at: Timestamp::now(),
            node_uid: std::sync::Mutex::new(None),
        }
    }

    /// Creates the Node (if missing) and reports it Ready.
    pub async fn register(&self) -> Result<(), NodeError> {
        let api: Api<Node> = Api::all(self.client.clone());
        let node = Node {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(self.labels()),
                ..Default::default()
            },
            status: Some(self.status()),
            ..Default::default()
        };
        let uid = match api
            .create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, &node)
            .await
        {
            Ok(created) => {
                tracing::info!(node = %self.name, "Node registered");
                created.metadata.uid
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tracing::info!(node = %self.name, "Node exists; taking it over");
                api.get_opt(&self.name).await.ok().flatten().and_then(|n| n.metadata.uid)
            }
            Err(source) => return Err(NodeError::Create { name: self.name.clone(), source }),
        };
        if let Ok(mut guard) = self.node_uid.lock() {
            *guard = uid;
        }
        self.patch_status().await?;
        self.renew_lease().await
    }

    /// Heartbeats until the process ends; a deleted Node is registered again.
    pub async fn run(self) {
        let mut lease = tokio::time::interval(LEASE_RENEW);
        let mut status = tokio::time::interval(STATUS_EVERY);
        lease.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = lease.tick() => {
                    if let Err(err) = self.renew_lease().await {
                        tracing::warn!(%err, "Node heartbeat failed");
                    }
                }
                _ = status.tick() => {
                    let result = match self.patch_status().await {
                        Err(NodeError::Status { source: kube::Error::Api(s), .. }) if s.code == 404 => self.register().await,
                        other => other,
                    };
                    if let Err(err) = result {
                        tracing::warn!(%err, "Node status update failed");
                    }
                }
            }
        }
    }

    fn labels(&self) -> BTreeMap<String, String> {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        [
            ("kubernetes.io/hostname", self.name.as_str()),
            ("kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", arch),
            ("millrace.io/pod-runner", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn status(&self) -> NodeStatus {
        let now = Time(Timestamp::now());
        let since = Time(self.registered_at);
        let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_heartbeat_time: Some(now.clone()),
            last_transition_time: Some(since.clone()),
        };
        let resources: BTreeMap<String, Quantity> = [
            ("cpu", self.capacity.cpus.to_string()),
            ("memory", format!("{}Ki", self.capacity.memory_bytes / 1024)),
            ("pods", self.max_pods.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Quantity(v)))
        .collect();
        NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            conditions: Some(vec![
                condition(
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "pod runner has sufficient memory available",
                ),
                condition(
                    "DiskPressure",
                    "False",
                    "KubeletHasNoDiskPressure",
                    "pod runner has no disk pressure",
                ),
                condition(
                    "PIDPressure",
                    "False",
                    "KubeletHasSufficientPID",
                    "pod runner has sufficient PID available",
                ),
                condition("Ready", "True", "KubeletReady", "millrace-pod-runner is posting ready status"),
            ]),
            addresses: Some(vec![
                NodeAddress { type_: "InternalIP".into(), address: "127.0.0.1".into() },
                NodeAddress { type_: "Hostname".into(), address: self.name.clone() },
            ]),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint { port: i32::from(self.ops_port) }),
            }),
            node_info: Some(self.system_info()),
            ..Default::default()
        }
    }

    fn system_info(&self) -> NodeSystemInfo {
        let read =
            |path: &str| std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default();
        let os_image = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string()))
            .unwrap_or_else(|| "Linux".into());
        NodeSystemInfo {
            architecture: self.labels().get("kubernetes.io/arch").cloned().unwrap_or_default(),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            container_runtime_version: format!("millrace-pod-runner://{}", env!("CARGO_PKG_VERSION")),
            kernel_version: read("/proc/sys/kernel/osrelease"),
            kube_proxy_version: self.kubelet_version.clone(),
            kubelet_version: self.kubelet_version.clone(),
            machine_id: read("/etc/machine-id"),
            operating_system: "linux".into(),
            os_image,
            system_uuid: read("/etc/machine-id"),
            swap: None,
        }
    }

    async fn patch_status(&self) -> Result<(), NodeError> {
        let api: Api<Node> = Api::all(self.client.clone());
        let patch = serde_json::json!({"status": self.status()});
        api.patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|source| NodeError::Status { name: self.name.clone(), source })
    }

    async fn renew_lease(&self) -> Result<(), NodeError> {
        let uid = self.node_uid.lock().ok().and_then(|guard| guard.clone());
        let owner = uid.map(|uid| {
            vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: self.name.clone(),
                uid,
                ..Default::default()
            }]
        });
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                owner_references: owner,
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.name.clone()),
                lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..Default::default()
            }),
        };
        let api: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        api.patch(&self.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&lease))
            .await
            .map(|_| ())
            .map_err(|source| NodeError::Lease { name: self.name.clone(), source })
    }
}

/// CPUs and memory of this machine.
pub fn machine_capacity() -> NodeCapacity {
    let cpus = std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1);
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(1024 * 1024);
    NodeCapacity { cpus, memory_bytes: memory_kib * 1024 }
}
