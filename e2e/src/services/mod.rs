//! The kube-proxy stand-in: every Service with a selector gets a loopback address from
//! `--service-cidr` (recorded in the Service's `millrace.io/local-address` annotation, so
//! it survives runner restarts), a TCP listener per port forwarding to ready Pods, names in
//! the hosts files, and kubelet-style env vars for Pods started after it.
//!
//! Owns address allocation for Services and the reconcile loop tying store → entries →
//! proxy listeners + hosts files. It never changes a Service's spec.

pub mod backends;
pub mod env;
pub mod hosts;
pub mod proxy;

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use tokio::sync::Notify;

use crate::ipam::AddressPool;
use crate::metrics::RunnerMetrics;
use env::ApiServerAddress;
use hosts::HostsFiles;
use proxy::ServiceProxy;

/// Annotation holding a Service's loopback address on the local platform.
pub const ADDRESS_ANNOTATION: &str = "millrace.io/local-address";

/// What the runner knows about one Service, rebuilt on every reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceEntry {
    pub namespace: String,
    pub name: String,
    /// The loopback address (Services with a selector and a cluster IP); `None` when headless.
    pub address: Option<Ipv4Addr>,
    pub ports: Vec<ServicePort>,
    pub selector: BTreeMap<String, String>,
    /// For headless Services: the Pods their name resolves to.
    pub headless_backends: Vec<HeadlessBackend>,
    /// `(nodePort, service port)` pairs of NodePort/LoadBalancer Services, served on 127.0.0.1.
    pub node_ports: Vec<(u16, i32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadlessBackend {
    pub ip: Ipv4Addr,
    /// `spec.hostname` of a Pod whose `spec.subdomain` is this Service.
    pub hostname: Option<String>,
}

pub struct ServiceNetwork {
    client: Client,
    services: Store<Service>,
    pods: Store<Pod>,
    pool: Mutex<AddressPool>,
    entries: RwLock<Arc<Vec<ServiceEntry>>>,
    hosts: HostsFiles,
    proxy: tokio::sync::Mutex<ServiceProxy>,
    dirty: Notify,
    apiserver: ApiServerAddress,
    annotate_failures: Mutex<HashSet<String>>,
}

impl ServiceNetwork {
    pub fn new(
        client: Client,
        services: Store<Service>,
        pods: Store<Pod>,
        pool: AddressPool,
        hosts: HostsFiles,
        apiserver: ApiServerAddress,
        metrics: RunnerMetrics,
    ) -> Self {
        let proxy = ServiceProxy::new(services.clone(), pods.clone(), metrics);
        Self {
            client,
            services,
            pods,
            pool: Mutex::new(pool),
            entries: RwLock::new(Arc::new(Vec::new())),
            hosts,
            proxy: tokio::sync::Mutex::new(proxy),
            dirty: Notify::new(),
            apiserver,
            annotate_failures: Mutex::new(HashSet::new()),
        }
    }

    pub fn hosts(&self) -> &HostsFiles {
        &self.hosts
    }

    /// Asks the reconcile loop to run soon (a Service or a Pod changed).
    pub fn mark_dirty(&self) {
        self.dirty.notify_one();
    }

    pub fn entries(&self) -> Arc<Vec<ServiceEntry>> {
        match self.entries.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The Service env vars for a container starting now in `namespace`.
    pub fn service_env(&self, namespace: &str, enable_links: bool) -> Vec<(String, String)> {
        env::service_env(&self.entries(), namespace, enable_links, &self.apiserver)
    }

    /// Reconciles on every change (debounced) and every few seconds (to retry failed binds).
    pub async fn run(self: Arc<Self>) {
        loop {
            tokio::select! {
                () = self.dirty.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.reconcile().await;
        }
    }

    pub async fn reconcile(&self) {
        let services = self.services.state();
        let pods = self.pods.state();
        let mut entries = Vec::new();
        let mut to_annotate = Vec::new();
        {
            let mut pool = match self.pool.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            let proxied: Vec<&Arc<Service>> = services.iter().filter(|s| is_proxied(s)).collect();
            let wanted: HashSet<String> = proxied.iter().map(|s| key(s)).collect();
            let stale: Vec<String> =
                pool.owners().filter(|o| !wanted.contains(*o)).map(str::to_string).collect();
            for owner in stale {
                pool.release(&owner);
            }
            // Recorded addresses first, so a restart never hands one Service's address to another.
            for svc in &proxied {
                let recorded =
                    svc.annotations().get(ADDRESS_ANNOTATION).and_then(|a| a.parse::<Ipv4Addr>().ok());
                if let (None, Some(ip)) = (pool.get(&key(svc)), recorded)
                    && let Err(err) = pool.claim(&key(svc), ip)
                {
                    tracing::info!(service = %key(svc), %err, "not reusing the recorded address");
                }
            }
            for svc in &services {
                let address = if is_proxied(svc) {
                    match pool.allocate(&key(svc)) {
                        Ok(ip) => Some(ip),
                        Err(err) => {
                            tracing::error!(service = %key(svc), %err, "no address for Service");
                            None
                        }
                    }
                } else {
                    None
                };
                if let Some(ip) = address
                    && svc.annotations().get(ADDRESS_ANNOTATION) != Some(&ip.to_string())
                {
                    to_annotate.push((svc.namespace().unwrap_or_default(), svc.name_any(), ip));
                }
                if let Some(entry) = entry_for(svc, address, &pods) {
                    entries.push(entry);
                }
            }
        }
        entries.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let entries = Arc::new(entries);
        match self.entries.write() {
            Ok(mut guard) => *guard = entries.clone(),
            Err(poisoned) => *poisoned.into_inner() = entries.clone(),
        }
        self.proxy.lock().await.sync(&entries);
        self.hosts.update(hosts::records(&entries));
        for (namespace, name, ip) in to_annotate {
            self.annotate(&namespace, &name, ip).await;
        }
    }

    async fn annotate(&self, namespace: &str, name: &str, ip: Ipv4Addr) {
        let api: Api<Service> = Api::namespaced(self.client.clone(), namespace);
        let patch = serde_json::json!({"metadata": {"annotations": {ADDRESS_ANNOTATION: ip.to_string()}}});
        let service = format!("{namespace}/{name}");
        let result = api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await;
        let mut failures = match self.annotate_failures.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        match result {
            Ok(_) => {
                tracing::info!(%service, address = %ip, "Service address assigned");
                failures.remove(&service);
            }
            // Logged once per Service: the reconcile loop retries every few seconds.
            Err(err) if failures.insert(service.clone()) => {
                tracing::warn!(%service, %err, "annotating the Service with its address failed");
            }
            Err(_) => {}
        }
    }
}

fn key(svc: &Service) -> String {
    format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any())
}

fn selector(svc: &Service) -> BTreeMap<String, String> {
    svc.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default()
}

fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// Services that get an address and listeners: a selector, a cluster IP, not ExternalName.
fn is_proxied(svc: &Service) -> bool {
    let kind = svc.spec.as_ref().and_then(|s| s.type_.as_deref()).unwrap_or("ClusterIP");
    svc.metadata.deletion_timestamp.is_none()
        && kind != "ExternalName"
        && !is_headless(svc)
        && !selector(svc).is_empty()
}

fn entry_for(svc: &Service, address: Option<Ipv4Addr>, pods: &[Arc<Pod>]) -> Option<ServiceEntry> {
    let spec = svc.spec.as_ref()?;
    let selector = selector(svc);
    let namespace = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let headless_backends = if is_headless(svc) {
        let publish = spec.publish_not_ready_addresses == Some(true);
        backends::backends(pods.iter().map(|p| p.as_ref()), &namespace, &selector, publish)
            .into_iter()
            .map(|b| {
                let pod_spec = b.pod.spec.as_ref();
                let hostname = pod_spec
                    .filter(|s| s.subdomain.as_deref() == Some(name.as_str()))
                    .and_then(|s| s.hostname.clone());
                HeadlessBackend { ip: b.ip, hostname }
            })
            .collect()
    } else {
        Vec::new()
    };
    let node_ports = if address.is_some() {
        spec.ports
            .iter()
            .flatten()
            .filter_map(|p| Some((u16::try_from(p.node_port?).ok()?, p.port)))
            .collect()
    } else {
        Vec::new()
    };
    if address.is_none() && headless_backends.is_empty() {
        return None;
    }
    Some(ServiceEntry {
        namespace,
        name,
        address,
        ports: spec.ports.clone().unwrap_or_default(),
        selector,
        headless_backends,
        node_ports,
    })
}
