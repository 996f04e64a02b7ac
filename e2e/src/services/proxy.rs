//! TCP forwarding from Service addresses to Pods: one listener per Service port (and per
//! node port on 127.0.0.1), each connection forwarded to the next ready backend
//! (round-robin, falling through to the next one when a backend refuses), bytes copied both
//! ways until either side closes. UDP and SCTP ports are not proxied.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::ServiceEntry;
use super::backends;
use crate::metrics::RunnerMetrics;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Which Service port a listener serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ServiceTarget {
    namespace: String,
    name: String,
    port: i32,
}

struct Listener {
    target: ServiceTarget,
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct ServiceProxy {
    listeners: HashMap<SocketAddr, Listener>,
    resolver: Arc<BackendResolver>,
    bind_failures: HashSet<SocketAddr>,
}

struct BackendResolver {
    services: Store<Service>,
    pods: Store<Pod>,
    next: Mutex<HashMap<ServiceTarget, usize>>,
    metrics: RunnerMetrics,
}

impl ServiceProxy {
    pub fn new(services: Store<Service>, pods: Store<Pod>, metrics: RunnerMetrics) -> Self {
        Self {
            listeners: HashMap::new(),
            resolver: Arc::new(BackendResolver { services, pods, next: Mutex::new(HashMap::new()), metrics }),
            bind_failures: HashSet::new(),
        }
    }

    /// Opens listeners for new Service ports and closes those of removed ones.
    pub fn sync(&mut self, entries: &[ServiceEntry]) {
        let mut desired: HashMap<SocketAddr, ServiceTarget> = HashMap::new();
        for entry in entries {
            let Some(address) = entry.address else { continue };
            for port in &entry.ports {
                if port.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                    continue;
                }
                let Ok(number) = u16::try_from(port.port) else { continue };
                let target = ServiceTarget {
                    namespace: entry.namespace.clone(),
                    name: entry.name.clone(),
                    port: port.port,
                };
                desired.insert(SocketAddr::new(IpAddr::V4(address), number), target);
            }
            for &(node_port, port) in &entry.node_ports {
                let target =
                    ServiceTarget { namespace: entry.namespace.clone(), name: entry.name.clone(), port };
                desired.insert(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), node_port), target);
            }
        }
        self.listeners.retain(|addr, listener| desired.get(addr) == Some(&listener.target));
        self.bind_failures.retain(|addr| desired.contains_key(addr));
        for (addr, target) in desired {
            if self.listeners.contains_key(&addr) {
                continue;
            }
            match bind(addr) {
                Ok(listener) => {
                    tracing::info!(%addr, service = %format!("{}/{}", target.namespace, target.name), port = target.port, "proxying Service port");
                    self.bind_failures.remove(&addr);
                    let task = tokio::spawn(serve(listener, target.clone(), self.resolver.clone()));
                    self.listeners.insert(addr, Listener { target, task });
                }
                Err(err) => {
                    if self.bind_failures.insert(addr) {
                        tracing::warn!(%addr, %err, "cannot listen for Service port (will retry)");
                    }
                }
            }
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

async fn serve(listener: TcpListener, target: ServiceTarget, resolver: Arc<BackendResolver>) {
    loop {
        match listener.accept().await {
            Ok((inbound, _)) => {
                tokio::spawn(forward(inbound, target.clone(), resolver.clone()));
            }
            Err(err) => {
                tracing::warn!(%err, "accepting a Service connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn forward(mut inbound: TcpStream, target: ServiceTarget, resolver: Arc<BackendResolver>) {
    let _ = inbound.set_nodelay(true);
    for backend in resolver.candidates(&target) {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend)).await {
            Ok(Ok(mut outbound)) => {
                resolver.metrics.proxy_connections.inc();
                let _ = outbound.set_nodelay(true);
                if let Err(err) = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await {
                    tracing::debug!(%backend, %err, "Service connection ended with an error");
                }
                return;
            }
            Ok(Err(err)) => tracing::debug!(%backend, %err, "backend refused, trying the next"),
            Err(_) => tracing::debug!(%backend, "backend connect timed out, trying the next"),
        }
    }
    resolver.metrics.proxy_connection_errors.inc();
    tracing::debug!(service = %format!("{}/{}", target.namespace, target.name), port = target.port, "no ready backend: closing");
}

impl BackendResolver {
    /// Backend addresses in the order to try them: round-robin start, then the rest.
    fn candidates(&self, target: &ServiceTarget) -> Vec<SocketAddr> {
        let Some(service) = self.services.get(&ObjectRef::new(&target.name).within(&target.namespace)) else {
            return Vec::new();
        };
        let Some(spec) = service.spec.as_ref() else { return Vec::new() };
        let Some(port) = spec.ports.iter().flatten().find(|p| p.port == target.port) else {
            return Vec::new();
        };
        let selector = spec.selector.clone().unwrap_or_default();
        let include_not_ready = spec.publish_not_ready_addresses == Some(true);
        let pods = self.pods.state();
        let addrs: Vec<SocketAddr> = backends::backends(
            pods.iter().map(|p| p.as_ref()),
            &target.namespace,
            &selector,
            include_not_ready,
        )
        .into_iter()
        .filter_map(|b| {
            let pod_port = backends::target_port(b.pod, port.target_port.as_ref(), port.port)?;
            Some(SocketAddr::new(IpAddr::V4(b.ip), pod_port))
        })
        .collect();
        if addrs.is_empty() {
            return addrs;
        }
        let start = {
            let mut next = match self.next.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            let counter = next.entry(target.clone()).or_insert(0);
            let start = *counter % addrs.len();
            *counter = counter.wrapping_add(1);
            start
        };
        addrs.iter().cycle().skip(start).take(addrs.len()).copied().collect()
    }
}
