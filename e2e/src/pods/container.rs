//! One container's life inside a Pod: resolve and launch it, follow its probes, report its
//! state, and restart it per the restart policy with exponential back-off (kubelet's
//! CrashLoopBackOff) until it is done or the Pod stops it.
//!
//! Owns the container's [`ContainerStatus`]; the Pod task aggregates those into the Pod
//! status. Never talks to the API server except through [`launch::prepare`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::{mpsc, watch};

use super::launch::{self, LaunchError};
use super::probes::{self, ProbeEvent, ProbeTarget};
use super::process::{self, ExitInfo};
use super::runtime::{PodRuntime, RestartPolicy};
use crate::backoff::Backoff;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKind {
    Init,
    App,
}

/// A new status for one container.
#[derive(Debug, Clone)]
pub struct ContainerUpdate {
    pub kind: ContainerKind,
    pub status: ContainerStatus,
}

/// Asks containers to stop: SIGTERM now (after the preStop hook when `pre_stop`), SIGKILL at `deadline`.
#[derive(Debug, Clone, Copy)]
pub struct StopRequest {
    pub deadline: Instant,
    pub pre_stop: bool,
}

/// How a supervisor ended.
#[derive(Debug, Clone)]
pub struct ContainerOutcome {
    pub name: String,
    pub kind: ContainerKind,
    pub succeeded: bool,
}

pub struct ContainerSupervisor {
    rt: Arc<PodRuntime>,
    spec: Arc<Container>,
    kind: ContainerKind,
    status: ContainerStatus,
    updates: mpsc::UnboundedSender<ContainerUpdate>,
    stop: watch::Receiver<Option<StopRequest>>,
    crash_backoff: Backoff,
    retry_backoff: Backoff,
    image_failures: u32,
    /// A process ran before (in this runner or the previous one): the next start is a restart.
    has_run: bool,
    /// The container finished for good before a runner restart: report it, do not rerun it.
    finished_before: Option<bool>,
}

/// A waiting state with `reason` and `message`.
pub fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting { reason: Some(reason.into()), message }),
        ..Default::default()
    }
}

impl ContainerSupervisor {
    pub fn new(
        rt: Arc<PodRuntime>,
        spec: Arc<Container>,
        kind: ContainerKind,
        previous: Option<&ContainerStatus>,
        updates: mpsc::UnboundedSender<ContainerUpdate>,
        stop: watch::Receiver<Option<StopRequest>>,
    ) -> Self {
        let settings = &rt.ctx.settings;
        let mut status = ContainerStatus {
            name: spec.name.clone(),
            image: spec.image.clone().unwrap_or_default(),
            state: Some(waiting("ContainerCreating", None)),
            ..Default::default()
        };
        let mut has_run = false;
        let mut finished_before = None;
        if let Some(previous) = previous {
            status.restart_count = previous.restart_count;
            status.last_state = previous.last_state.clone();
            status.image_id = previous.image_id.clone();
            let state = previous.state.clone().unwrap_or_default();
            if let Some(terminated) = state.terminated {
                has_run = true;
                let succeeded = terminated.exit_code == 0;
                let done = match (kind, rt.restart_policy) {
                    (ContainerKind::Init, _) => succeeded,
                    (ContainerKind::App, RestartPolicy::Never) => true,
                    (ContainerKind::App, RestartPolicy::OnFailure) => succeeded,
                    (ContainerKind::App, RestartPolicy::Always) => false,
                };
                if done {
                    finished_before = Some(succeeded);
                    status.state = previous.state.clone();
                    status.ready = kind == ContainerKind::Init && succeeded;
                } else {
                    status.last_state =
                        Some(ContainerState { terminated: Some(terminated), ..Default::default() });
                }
            } else if let Some(running) = state.running {
                // It was running when the previous runner stopped, which killed it.
                has_run = true;
                let killed = ContainerStateTerminated {
                    exit_code: 137,
                    signal: Some(9),
                    reason: Some("Error".into()),
                    message: Some("killed when the pod runner restarted".into()),
                    started_at: running.started_at,
                    finished_at: Some(Time(Timestamp::now())),
                    container_id: previous.container_id.clone(),
                };
                if kind == ContainerKind::App && rt.restart_policy == RestartPolicy::Never {
                    finished_before = Some(false);
                    status.state = Some(ContainerState { terminated: Some(killed), ..Default::default() });
                } else {
                    status.last_state =
                        Some(ContainerState { terminated: Some(killed), ..Default::default() });
                }
            }
        }
        Self {
            crash_backoff: Backoff::new(settings.restart_backoff_base, settings.restart_backoff_cap),
            retry_backoff: Backoff::new(settings.restart_backoff_base, settings.restart_backoff_cap),
            rt,
            spec,
            kind,
            status,
            updates,
            stop,
            image_failures: 0,
            has_run,
            finished_before,
        }
    }

    fn publish(&self) {
        let _ = self.updates.send(ContainerUpdate { kind: self.kind, status: self.status.clone() });
    }

    fn outcome(&self, succeeded: bool) -> ContainerOutcome {
        ContainerOutcome { name: self.spec.name.clone(), kind: self.kind, succeeded }
    }

    fn stop_requested(&self) -> Option<StopRequest> {
        *self.stop.borrow()
    }

    /// Sleeps for `delay`; returns true when a stop request arrives first.
    async fn sleep_or_stop(&mut self, delay: Duration) -> bool {
        if self.stop_requested().is_some() {
            return true;
        }
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return false,
                changed = self.stop.changed() => {
                    if changed.is_err() || self.stop_requested().is_some() {
                        return true;
                    }
                }
            }
        }
    }

    pub async fn run(mut self) -> ContainerOutcome {
        self.publish();
        if let Some(succeeded) = self.finished_before {
            return self.outcome(succeeded);
        }
        loop {
            if self.stop_requested().is_some() {
                return self.outcome(false);
            }
            let (failed, ran_for) = match launch::prepare(&self.rt, &self.spec).await {
                Ok(prepared) => {
                    self.image_failures = 0;
                    self.retry_backoff.reset();
                    self.count_start();
                    match process::spawn(&prepared.launch) {
                        Ok(process) => self.follow(process, prepared).await,
                        Err(err) => {
                            self.record_start_error(format!(
                                "starting {}: {err}",
                                prepared.launch.program.display()
                            ));
                            (true, Duration::ZERO)
                        }
                    }
                }
                // The runtime accepted the container but could not exec it: a terminated
                // StartError, then the normal restart rules (as containerd reports it).
                Err(LaunchError::Start(message)) => {
                    self.count_start();
                    self.record_start_error(message);
                    (true, Duration::ZERO)
                }
                Err(err) => {
                    let reason = match (&err, self.image_failures) {
                        (LaunchError::Image(_), 0) => "ErrImagePull",
                        (LaunchError::Image(_), _) => "ImagePullBackOff",
                        (other, _) => other.reason(),
                    };
                    if matches!(err, LaunchError::Image(_)) {
                        self.image_failures += 1;
                    }
                    let message = err.to_string();
                    let repeated = self
                        .status
                        .state
                        .as_ref()
                        .and_then(|s| s.waiting.as_ref())
                        .and_then(|w| w.message.as_deref())
                        == Some(message.as_str());
                    if repeated {
                        tracing::debug!(reason, %message, "container still cannot start");
                    } else {
                        tracing::warn!(reason, %message, "container cannot start");
                    }
                    self.status.state = Some(waiting(reason, Some(message)));
                    self.publish();
                    let delay = self.retry_backoff.next_delay();
                    if self.sleep_or_stop(delay).await {
                        return self.outcome(false);
                    }
                    continue;
                }
            };
            if self.stop_requested().is_some() {
                return self.outcome(!failed);
            }
            let restart = match (self.kind, self.rt.restart_policy) {
                (ContainerKind::Init, RestartPolicy::Never) => false,
                (ContainerKind::Init, _) => failed,
                (ContainerKind::App, RestartPolicy::Always) => true,
                (ContainerKind::App, RestartPolicy::OnFailure) => failed,
                (ContainerKind::App, RestartPolicy::Never) => false,
            };
            if !restart {
                if self.kind == ContainerKind::Init && !failed {
                    self.status.ready = true;
                    self.publish();
                }
                return self.outcome(!failed);
            }
            self.crash_backoff.reset_if_healthy_for(ran_for);
            let delay = self.crash_backoff.next_delay();
            let pod = format!("{}_{}({})", self.rt.name, self.rt.namespace, self.rt.uid);
            self.status.last_state = self.status.state.take();
            self.status.state = Some(waiting(
                "CrashLoopBackOff",
                Some(format!(
                    "back-off {:?} restarting failed container={} pod={pod}",
                    delay, self.spec.name
                )),
            ));
            self.publish();
            if self.sleep_or_stop(delay).await {
                return self.outcome(!failed);
            }
        }
    }

    /// A new process instance is about to start; every one after the first is a restart.
    fn count_start(&mut self) {
        if self.has_run {
            self.status.restart_count += 1;
            self.rt.ctx.metrics.container_restarts.inc();
        }
        self.has_run = true;
    }

    fn record_start_error(&mut self, message: String) {
        tracing::warn!(%message, "container failed to start");
        let now = Time(Timestamp::now());
        self.status.state = Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 128,
                reason: Some("StartError".into()),
                message: Some(message),
                started_at: Some(now.clone()),
                finished_at: Some(now),
                ..Default::default()
            }),
            ..Default::default()
        });
        self.status.ready = false;
        self.status.started = Some(false);
        self.publish();
    }

    fn record_exit(&mut self, exit: &ExitInfo, message: Option<String>) {
        let started_at =
            self.status.state.as_ref().and_then(|s| s.running.as_ref()).and_then(|r| r.started_at.clone());
        self.status.state = Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: exit.code,
                signal: exit.signal,
                reason: Some(if exit.code == 0 && message.is_none() { "Completed" } else { "Error" }.into()),
                message,
                started_at,
                finished_at: Some(Time(exit.finished_at)),
                container_id: self.status.container_id.clone(),
            }),
            ..Default::default()
        });
        self.status.ready = false;
        self.status.started = Some(false);
        self.publish();
    }

    /// Follows a started process to its end: probes, stop requests, exit. Returns whether
    /// the run failed and how long it lasted.
    async fn follow(
        &mut self,
        mut process: process::RunningProcess,
        prepared: launch::PreparedContainer,
    ) -> (bool, Duration) {
        self.rt.ctx.metrics.container_starts.inc();
        tracing::info!(
            pid = process.pid,
            program = %prepared.launch.program.display(),
            restarts = self.status.restart_count,
            "container started"
        );
        self.status.image_id = prepared.image_id.clone();
        self.status.container_id = Some(format!("millrace-pod-runner://{}", process.pid));
        self.status.state = Some(ContainerState {
            running: Some(ContainerStateRunning { started_at: Some(Time(process.started_at)) }),
            ..Default::default()
        });
        self.status.ready = false;
        self.status.started = Some(false);
        self.publish();

        let (probe_tx, mut probe_rx) = mpsc::unbounded_channel();
        let target =
            ProbeTarget { pod_ip: self.rt.ip, container: self.spec.clone(), exec: prepared.exec.clone() };
        let probe_task = probes::spawn(target.clone(), probe_tx, self.rt.ctx.metrics.clone());
        let mut stop = self.stop.clone();
        let (exit, message) = loop {
            tokio::select! {
                exit = process.wait() => break (exit, None),
                Some(event) = probe_rx.recv() => match event {
                    ProbeEvent::Started => {
                        self.status.started = Some(true);
                        self.publish();
                    }
                    ProbeEvent::Ready(ready) => {
                        self.status.ready = ready;
                        self.publish();
                    }
                    ProbeEvent::Unhealthy(message) => {
                        tracing::warn!(%message, "container unhealthy: restarting it");
                        let exit = process.terminate(Instant::now() + self.probe_grace()).await;
                        break (exit, Some(message));
                    }
                },
                changed = stop.changed() => {
                    let request = match changed {
                        Ok(()) => *stop.borrow(),
                        Err(_) => Some(StopRequest { deadline: Instant::now(), pre_stop: false }),
                    };
                    if let Some(request) = request {
                        if request.pre_stop
                            && let Some(hook) = self.spec.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref())
                        {
                            let hook_run = probes::run_hook(hook, &target, request.deadline);
                            match tokio::time::timeout_at(request.deadline.into(), hook_run).await {
                                Ok(Ok(())) => {}
                                Ok(Err(err)) => tracing::warn!(%err, "preStop hook failed"),
                                Err(_) => tracing::warn!("preStop hook ran out of grace period"),
                            }
                        }
                        tracing::info!(pid = process.pid, "stopping container");
                        let exit = process.terminate(request.deadline).await;
                        break (exit, None);
                    }
                }
            }
        };
        drop(probe_task);
        let ran_for = process.ran_for();
        tracing::info!(code = exit.code, "container exited");
        let failed = exit.code != 0 || message.is_some();
        self.record_exit(&exit, message);
        (failed, ran_for)
    }

    /// Grace period for a liveness kill: the probe's own, else the Pod's.
    fn probe_grace(&self) -> Duration {
        let probe_grace = [&self.spec.liveness_probe, &self.spec.startup_probe]
            .into_iter()
            .flatten()
            .find_map(|p| p.termination_grace_period_seconds);
        match probe_grace {
            Some(seconds) => Duration::from_secs(u64::try_from(seconds).unwrap_or(0)),
            None => self.rt.termination_grace(),
        }
    }
}
