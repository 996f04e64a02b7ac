//! The kubelet stand-in: watches the Pods bound to the runner's Node and gives each its own
//! task ([`pod_task::PodTask`]) that runs its containers as local processes.
//!
//! This module owns the watch and the map of Pod tasks (keyed by uid): it starts a task for
//! a new Pod, forwards updates, tells a task when its Pod vanished, and stops them all on
//! shutdown. Everything about a single Pod lives in the submodules.

pub mod container;
pub mod downward;
pub mod env;
pub mod launch;
pub mod layout;
pub mod pod_task;
pub mod probes;
pub mod process;
pub mod runtime;
pub mod status;
pub mod volumes;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::context::RunnerContext;
use pod_task::{PodSignal, PodTask};

struct PodHandle {
    signals: watch::Sender<PodSignal>,
    task: JoinHandle<()>,
}

/// Runs until `shutdown` fires, then stops every container (SIGTERM, SIGKILL after the
/// grace) and returns once all Pod tasks have ended. Pod objects are left in the API.
pub async fn run(ctx: Arc<RunnerContext>, writer: Writer<Pod>, shutdown: oneshot::Receiver<()>) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.settings.node_name));
    let stream = watcher(api, config).default_backoff().reflect(writer);
    futures::pin_mut!(stream);
    futures::pin_mut!(shutdown);
    let mut pods: HashMap<String, PodHandle> = HashMap::new();
    let mut listing: Vec<Pod> = Vec::new();
    let mut first_list = true;
    loop {
        let event = tokio::select! {
            _ = &mut shutdown => break,
            event = stream.next() => match event {
                Some(event) => event,
                None => break,
            },
        };
        match event {
            Ok(watcher::Event::Init) => listing.clear(),
            Ok(watcher::Event::InitApply(pod)) => listing.push(pod),
            Ok(watcher::Event::InitDone) => {
                if first_list {
                    claim_recorded_addresses(&ctx, &listing);
                    first_list = false;
                }
                let present: HashSet<String> = listing.iter().filter_map(|p| p.uid()).collect();
                for (uid, handle) in &pods {
                    if !present.contains(uid) {
                        handle.signals.send_replace(PodSignal::Vanished);
                    }
                }
                for pod in listing.drain(..) {
                    upsert(&ctx, &mut pods, pod);
                }
            }
            Ok(watcher::Event::Apply(pod)) => upsert(&ctx, &mut pods, pod),
            Ok(watcher::Event::Delete(pod)) => {
                if let Some(handle) = pod.uid().and_then(|uid| pods.get(&uid)) {
                    handle.signals.send_replace(PodSignal::Vanished);
                }
            }
            Err(err) => tracing::warn!(%err, "watching Pods of the node"),
        }
        ctx.network.mark_dirty();
        // Forget tasks of Pods that are gone and finished; a finished task of a Pod that
        // still exists stays, so the Pod is not started a second time.
        pods.retain(|_, handle| {
            !(handle.task.is_finished() && matches!(*handle.signals.borrow(), PodSignal::Vanished))
        });
        ctx.metrics
            .pods
            .set(i64::try_from(pods.values().filter(|h| !h.task.is_finished()).count()).unwrap_or(0));
    }

    let deadline = Instant::now() + ctx.settings.shutdown_grace;
    tracing::info!(pods = pods.len(), grace = ?ctx.settings.shutdown_grace, "stopping all containers");
    for handle in pods.values() {
        handle.signals.send_replace(PodSignal::Shutdown { deadline });
    }
    let all = futures::future::join_all(pods.into_values().map(|h| h.task));
    if tokio::time::timeout(ctx.settings.shutdown_grace + Duration::from_secs(5), all).await.is_err() {
        tracing::warn!("some Pods did not stop in time");
    }
}

fn upsert(ctx: &Arc<RunnerContext>, pods: &mut HashMap<String, PodHandle>, pod: Pod) {
    let Some(uid) = pod.uid() else { return };
    let pod = Arc::new(pod);
    if let Some(handle) = pods.get(&uid) {
        if !matches!(*handle.signals.borrow(), PodSignal::Vanished) {
            handle.signals.send_replace(PodSignal::Update(pod));
        }
        return;
    }
    let (signals, receiver) = watch::channel(PodSignal::Update(pod.clone()));
    let task = PodTask::new(ctx.clone(), pod, receiver);
    let task = tokio::spawn(task.run().in_current_span());
    pods.insert(uid, PodHandle { signals, task });
}

/// After a restart, every Pod keeps the address its status records, before any new Pod
/// gets one.
fn claim_recorded_addresses(ctx: &RunnerContext, pods: &[Pod]) {
    let mut pool = ctx.pod_ips();
    for pod in pods {
        let (Some(uid), Some(ip)) = (pod.uid(), pod.status.as_ref().and_then(|s| s.pod_ip.as_ref())) else {
            continue;
        };
        match ip
            .parse::<Ipv4Addr>()
            .map_err(|e| e.to_string())
            .and_then(|ip| pool.claim(&uid, ip).map_err(|e| e.to_string()))
        {
            Ok(()) => {}
            Err(err) => tracing::info!(pod = %pod.name_any(), %err, "not reusing the recorded Pod address"),
        }
    }
}
