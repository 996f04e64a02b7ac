//! One Pod's state machine: prepare (folder, address, hosts file, kubeconfig, volumes) →
//! init containers in order → app containers → done; and from any state, termination
//! (deletion with grace and finalisation, a vanished Pod killed at once, or runner
//! shutdown). It aggregates container statuses into the Pod status and patches it when it
//! changes.
//!
//! Each Pod has its own task, so a Pod that cannot be prepared or a container that hangs
//! never stalls another Pod.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, ResourceExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::container::{ContainerKind, ContainerOutcome, ContainerSupervisor, ContainerUpdate, StopRequest};
use super::layout::PodDirs;
use super::runtime::{PodRuntime, RestartPolicy, grace_period};
use super::status::{self, ConditionClock, Progress, StatusInputs};
use super::volumes::{self, VolumeContext, VolumeManager};
use crate::context::RunnerContext;
use crate::identity::{self, PodIdentity};
use crate::services::hosts::PodHostsIdentity;

/// Retry interval for a Pod whose setup failed.
const SETUP_RETRY: Duration = Duration::from_secs(2);
/// Bound on one setup attempt, so a hung API call cannot wedge the Pod.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// What the supervisor tells a Pod task.
#[derive(Debug, Clone)]
pub enum PodSignal {
    /// The latest Pod object.
    Update(Arc<Pod>),
    /// The Pod is gone from the API (force-deleted): kill everything now.
    Vanished,
    /// The runner is stopping: stop containers by `deadline`, keep the Pod for the next run.
    Shutdown { deadline: Instant },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopKind {
    Delete,
    Vanish,
    Shutdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Preparing,
    Initializing,
    Running,
    Completed,
    Terminating(StopKind),
    Finished,
}

pub struct PodTask {
    ctx: Arc<RunnerContext>,
    namespace: String,
    name: String,
    uid: String,
    span: tracing::Span,
    signals: watch::Receiver<PodSignal>,
    pod: Arc<Pod>,
    pod_tx: watch::Sender<Arc<Pod>>,
    dirs: PodDirs,
    ip: Option<Ipv4Addr>,
    stage: Stage,
    runtime: Option<Arc<PodRuntime>>,
    identity: PodIdentity,
    volumes: VolumeManager,
    kubeconfig: Option<std::path::PathBuf>,
    previous: HashMap<String, ContainerStatus>,
    init_statuses: BTreeMap<String, ContainerStatus>,
    app_statuses: BTreeMap<String, ContainerStatus>,
    next_init: usize,
    init_failed: bool,
    updates_tx: mpsc::UnboundedSender<ContainerUpdate>,
    updates_rx: mpsc::UnboundedReceiver<ContainerUpdate>,
    stop_tx: watch::Sender<Option<StopRequest>>,
    supervisors: JoinSet<ContainerOutcome>,
    clock: ConditionClock,
    start_time: Time,
    last_patched: Option<serde_json::Value>,
    setup_error: Option<String>,
    last_setup: Option<Instant>,
    last_sync: Instant,
    last_sync_error: Option<String>,
    last_patch_error: Option<String>,
    /// False for Pods that were already finished when this runner found them: their
    /// status is left as reported.
    owns_status: bool,
}

impl PodTask {
    pub fn new(ctx: Arc<RunnerContext>, pod: Arc<Pod>, signals: watch::Receiver<PodSignal>) -> Self {
        let namespace = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let uid = pod.uid().unwrap_or_default();
        let span = tracing::info_span!("pod", pod = %format!("{namespace}/{name}"));
        let dirs = PodDirs::new(&ctx.settings.pods_dir, &namespace, &name);
        let status = pod.status.clone().unwrap_or_default();
        let previous: HashMap<String, ContainerStatus> = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten())
            .map(|s| (s.name.clone(), s.clone()))
            .collect();
        let terminal = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
        let (updates_tx, updates_rx) = mpsc::unbounded_channel();
        let (pod_tx, _) = watch::channel(pod.clone());
        Self {
            identity: PodIdentity::new(&pod),
            volumes: VolumeManager::new(dirs.clone()),
            clock: ConditionClock::from_pod(&pod),
            start_time: status.start_time.clone().unwrap_or_else(|| Time(Timestamp::now())),
            stage: if terminal { Stage::Completed } else { Stage::Preparing },
            owns_status: !terminal,
            ctx,
            namespace,
            name,
            uid,
            span,
            signals,
            pod,
            pod_tx,
            dirs,
            ip: None,
            runtime: None,
            kubeconfig: None,
            previous,
            init_statuses: BTreeMap::new(),
            app_statuses: BTreeMap::new(),
            next_init: 0,
            init_failed: false,
            updates_tx,
            updates_rx,
            stop_tx: watch::channel(None).0,
            supervisors: JoinSet::new(),
            last_patched: None,
            setup_error: None,
            last_setup: None,
            last_sync: Instant::now(),
            last_sync_error: None,
            last_patch_error: None,
        }
    }

    pub async fn run(self) {
        let span = self.span.clone();
        self.run_inner().instrument(span).await;
    }

    async fn run_inner(mut self) {
        tracing::info!(uid = %self.uid, "managing Pod");
        if self.pod.metadata.deletion_timestamp.is_some() {
            self.begin_stop(StopKind::Delete);
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.advance().await;
            if self.stage == Stage::Finished {
                break;
            }
            self.flush_status().await;
            tokio::select! {
                changed = self.signals.changed() => {
                    let signal = match changed {
                        Ok(()) => self.signals.borrow_and_update().clone(),
                        Err(_) => PodSignal::Shutdown { deadline: Instant::now() },
                    };
                    self.on_signal(signal);
                }
                Some(update) = self.updates_rx.recv() => {
                    self.apply(update);
                    self.drain_updates();
                }
                Some(joined) = self.supervisors.join_next(), if !self.supervisors.is_empty() => {
                    self.drain_updates();
                    self.on_outcome(joined);
                }
                _ = tick.tick() => self.periodic().await,
            }
        }
        tracing::info!("done with Pod");
    }

    fn on_signal(&mut self, signal: PodSignal) {
        match signal {
            PodSignal::Update(pod) => {
                self.pod = pod.clone();
                self.pod_tx.send_replace(pod);
                if self.pod.metadata.deletion_timestamp.is_some() {
                    self.begin_stop(StopKind::Delete);
                }
            }
            PodSignal::Vanished => self.begin_stop(StopKind::Vanish),
            PodSignal::Shutdown { deadline } => {
                let deadline = deadline.min(Instant::now() + grace_period(&self.pod));
                self.stop_containers(StopKind::Shutdown, deadline, false);
            }
        }
    }

    fn begin_stop(&mut self, kind: StopKind) {
        match kind {
            StopKind::Delete => self.stop_containers(kind, Instant::now() + grace_period(&self.pod), true),
            StopKind::Vanish | StopKind::Shutdown => self.stop_containers(kind, Instant::now(), false),
        }
    }

    fn stop_containers(&mut self, kind: StopKind, deadline: Instant, pre_stop: bool) {
        match self.stage {
            // A deletion already in progress only changes when the Pod vanishes or the runner stops.
            Stage::Terminating(current) if current == kind || kind == StopKind::Delete => return,
            Stage::Finished => return,
            _ => {}
        }
        // Whole milliseconds: the log should say 30s, not 29.999998577s.
        let grace = Duration::from_millis(
            u64::try_from(deadline.saturating_duration_since(Instant::now()).as_millis().div_ceil(10) * 10)
                .unwrap_or(0),
        );
        match kind {
            StopKind::Delete => tracing::info!(?grace, "Pod deleted: stopping containers"),
            StopKind::Vanish => tracing::info!("Pod vanished from the API: killing containers"),
            StopKind::Shutdown => tracing::info!(?grace, "runner stopping: stopping containers"),
        }
        let earlier = match *self.stop_tx.borrow() {
            Some(existing) => existing.deadline.min(deadline),
            None => deadline,
        };
        self.stop_tx.send_replace(Some(StopRequest { deadline: earlier, pre_stop }));
        self.stage = Stage::Terminating(kind);
    }

    fn apply(&mut self, update: ContainerUpdate) {
        let name = update.status.name.clone();
        match update.kind {
            ContainerKind::Init => self.init_statuses.insert(name, update.status),
            ContainerKind::App => self.app_statuses.insert(name, update.status),
        };
    }

    fn drain_updates(&mut self) {
        while let Ok(update) = self.updates_rx.try_recv() {
            self.apply(update);
        }
    }

    fn on_outcome(&mut self, joined: Result<ContainerOutcome, tokio::task::JoinError>) {
        match joined {
            Ok(outcome) => {
                tracing::debug!(container = %outcome.name, succeeded = outcome.succeeded, "container done");
                if outcome.kind == ContainerKind::Init && self.stage == Stage::Initializing {
                    if outcome.succeeded {
                        self.next_init += 1;
                    } else {
                        self.init_failed = true;
                        self.stage = Stage::Completed;
                    }
                }
            }
            Err(err) => {
                tracing::error!(%err, "a container supervisor failed; the container is no longer managed")
            }
        }
    }

    async fn advance(&mut self) {
        match self.stage {
            Stage::Preparing if self.last_setup.is_none_or(|at| at.elapsed() >= SETUP_RETRY) => {
                self.last_setup = Some(Instant::now());
                self.setup().await;
            }
            Stage::Initializing if self.supervisors.is_empty() => {
                let init: Vec<Container> =
                    self.pod.spec.as_ref().and_then(|s| s.init_containers.clone()).unwrap_or_default();
                match init.get(self.next_init) {
                    Some(container) => self.spawn_container(container, ContainerKind::Init),
                    None => {
                        let containers =
                            self.pod.spec.as_ref().map(|s| s.containers.clone()).unwrap_or_default();
                        for container in &containers {
                            self.spawn_container(container, ContainerKind::App);
                        }
                        self.stage = Stage::Running;
                    }
                }
            }
            Stage::Running if self.supervisors.is_empty() => {
                tracing::info!("all containers finished");
                self.stage = Stage::Completed;
            }
            Stage::Terminating(kind) if self.supervisors.is_empty() => self.finish(kind).await,
            _ => {}
        }
    }

    fn spawn_container(&mut self, container: &Container, kind: ContainerKind) {
        let Some(runtime) = self.runtime.clone() else { return };
        let supervisor = ContainerSupervisor::new(
            runtime,
            Arc::new(container.clone()),
            kind,
            self.previous.get(&container.name),
            self.updates_tx.clone(),
            self.stop_tx.subscribe(),
        );
        let span = tracing::info_span!(parent: &self.span, "container", container = %container.name);
        self.supervisors.spawn(supervisor.run().instrument(span));
    }

    /// One attempt at everything a Pod needs before its containers can start.
    async fn setup(&mut self) {
        let result = match tokio::time::timeout(SETUP_TIMEOUT, self.try_setup()).await {
            Ok(result) => result,
            Err(_) => Err(format!("Pod setup took longer than {SETUP_TIMEOUT:?}")),
        };
        match result {
            Ok(runtime) => {
                tracing::info!(ip = %runtime.ip, "Pod ready to start containers");
                self.runtime = Some(runtime);
                self.setup_error = None;
                self.last_sync = Instant::now();
                self.stage = Stage::Initializing;
            }
            Err(message) => {
                if self.setup_error.as_deref() != Some(message.as_str()) {
                    tracing::warn!(%message, "Pod setup failed (retrying)");
                }
                self.setup_error = Some(message);
            }
        }
    }

    async fn try_setup(&mut self) -> Result<Arc<PodRuntime>, String> {
        self.dirs
            .prepare(&self.uid)
            .map_err(|err| format!("creating {}: {err}", self.dirs.root().display()))?;
        let ip = match self.ip {
            Some(ip) => ip,
            None => {
                let ip = self.ctx.pod_ips().allocate(&self.uid).map_err(|err| err.to_string())?;
                self.ip = Some(ip);
                ip
            }
        };
        let spec = self.pod.spec.clone().unwrap_or_default();
        self.ctx
            .network
            .hosts()
            .register(
                self.dirs.hosts(),
                PodHostsIdentity {
                    namespace: self.namespace.clone(),
                    name: self.name.clone(),
                    ip,
                    hostname: spec.hostname.clone().unwrap_or_else(|| self.name.clone()),
                    subdomain: spec.subdomain.clone(),
                },
            )
            .map_err(|err| format!("writing {}: {err}", self.dirs.hosts().display()))?;
        self.ctx.network.mark_dirty();
        if identity::automount_enabled(&self.ctx.client, &self.pod).await {
            let path = self.dirs.kubeconfig();
            self.identity
                .write_kubeconfig(&self.ctx.client, &self.ctx.access, &path)
                .await
                .map_err(|e| e.to_string())?;
            self.kubeconfig = Some(path);
        } else {
            let _ = crate::fsutil::remove_path(&self.dirs.kubeconfig());
            self.kubeconfig = None;
        }
        let sources = volumes::fetch_sources(&self.ctx.client, &self.pod, &mut self.identity)
            .await
            .map_err(|e| e.to_string())?;
        let ctx = VolumeContext { pod: &self.pod, pod_ip: ip, node: self.ctx.node, sources: &sources };
        self.volumes.setup(&ctx).map_err(|e| e.to_string())?;
        Ok(Arc::new(PodRuntime {
            ctx: self.ctx.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            ip,
            dirs: self.dirs.clone(),
            kubeconfig: self.kubeconfig.clone(),
            pod: self.pod_tx.subscribe(),
            restart_policy: RestartPolicy::of(&self.pod),
        }))
    }

    /// Keeps credentials and ConfigMap/Secret volumes fresh while containers may read them.
    async fn periodic(&mut self) {
        if !matches!(self.stage, Stage::Initializing | Stage::Running)
            || self.last_sync.elapsed() < self.ctx.settings.sync_period
        {
            return;
        }
        self.last_sync = Instant::now();
        let Some(ip) = self.ip else { return };
        let result: Result<(), String> = async {
            if let Some(path) = self.kubeconfig.clone() {
                self.identity
                    .write_kubeconfig(&self.ctx.client, &self.ctx.access, &path)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let sources = volumes::fetch_sources(&self.ctx.client, &self.pod, &mut self.identity)
                .await
                .map_err(|e| e.to_string())?;
            let ctx = VolumeContext { pod: &self.pod, pod_ip: ip, node: self.ctx.node, sources: &sources };
            self.volumes.sync(&ctx).map_err(|e| e.to_string())
        }
        .await;
        match result {
            Ok(()) => self.last_sync_error = None,
            Err(message) => {
                if self.last_sync_error.as_deref() != Some(message.as_str()) {
                    tracing::warn!(%message, "refreshing volumes or credentials failed (keeping the previous files)");
                }
                self.last_sync_error = Some(message);
            }
        }
    }

    fn progress(&self) -> Progress {
        match self.stage {
            Stage::Preparing => Progress::Preparing,
            Stage::Initializing => Progress::Initializing,
            Stage::Running => Progress::Running,
            Stage::Completed | Stage::Finished => Progress::Finished,
            // While stopping, nothing restarts: the containers' final states decide the phase.
            Stage::Terminating(_) if self.supervisors.is_empty() => Progress::Finished,
            Stage::Terminating(_) if self.runtime.is_none() => Progress::Preparing,
            Stage::Terminating(_) => Progress::Running,
        }
    }

    async fn flush_status(&mut self) {
        if !self.owns_status || matches!(self.stage, Stage::Finished | Stage::Terminating(StopKind::Vanish)) {
            return;
        }
        let inputs = StatusInputs {
            pod: &self.pod,
            ip: self.ip,
            start_time: &self.start_time,
            progress: self.progress(),
            init_failed: self.init_failed,
            setup_error: self.setup_error.as_deref(),
            init_statuses: &self.init_statuses,
            app_statuses: &self.app_statuses,
        };
        let status = status::build(&inputs, &mut self.clock);
        let Ok(value) = serde_json::to_value(&status) else { return };
        if self.last_patched.as_ref() == Some(&value) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let patch = serde_json::json!({"status": value});
        match api.patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                self.last_patch_error = None;
                self.ctx.metrics.status_patches.inc();
                tracing::debug!(phase = ?status.phase, "status patched");
                self.last_patched = Some(value);
            }
            // The Pod is gone; the watch will say so.
            Err(kube::Error::Api(s)) if s.code == 404 => self.last_patched = Some(value),
            Err(err) => {
                self.ctx.metrics.status_patch_errors.inc();
                let message = err.to_string();
                if self.last_patch_error.as_deref() != Some(message.as_str()) {
                    tracing::warn!(%message, "patching Pod status failed (will retry)");
                }
                self.last_patch_error = Some(message);
            }
        }
    }

    async fn finish(&mut self, kind: StopKind) {
        match kind {
            StopKind::Delete => {
                self.flush_status().await;
                let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
                let params = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: Some(self.uid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match api.delete(&self.name, &params).await {
                    Ok(_) => tracing::info!("Pod deletion finalised"),
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(err) => {
                        // Retry on the next tick rather than leave the Pod terminating forever.
                        tracing::warn!(%err, "finalising the Pod deletion failed (will retry)");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        return;
                    }
                }
                self.cleanup();
            }
            StopKind::Vanish => self.cleanup(),
            StopKind::Shutdown => {}
        }
        self.stage = Stage::Finished;
    }

    fn cleanup(&mut self) {
        self.ctx.network.hosts().unregister(&self.dirs.hosts());
        if let Err(err) = self.dirs.clean_after_delete() {
            tracing::warn!(%err, "cleaning the Pod folder failed");
        }
        self.ctx.pod_ips().release(&self.uid);
        self.ctx.network.mark_dirty();
    }
}
