//! The Pod status the runner reports: phase, conditions (with stable transition times),
//! addresses and container statuses, computed from the containers' own statuses. Pure; the
//! Pod task decides when to patch (only when the result changed).

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Container, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::container::waiting;

/// Remembers when each condition last changed, so an unchanged condition keeps its time
/// (and an unchanged status is not patched again).
#[derive(Debug, Default)]
pub struct ConditionClock {
    since: HashMap<String, (String, Time)>,
}

impl ConditionClock {
    /// Starts from the Pod's reported conditions (a runner restart keeps their times).
    pub fn from_pod(pod: &Pod) -> Self {
        let since = pod
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .filter_map(|c| Some((c.type_.clone(), (c.status.clone(), c.last_transition_time.clone()?))))
            .collect();
        Self { since }
    }

    fn condition(
        &mut self,
        type_: &str,
        ok: bool,
        reason: Option<&str>,
        message: Option<String>,
    ) -> PodCondition {
        let status = if ok { "True" } else { "False" };
        let entry = self
            .since
            .entry(type_.to_string())
            .or_insert_with(|| (status.to_string(), Time(Timestamp::now())));
        if entry.0 != status {
            *entry = (status.to_string(), Time(Timestamp::now()));
        }
        PodCondition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: if ok { None } else { reason.map(str::to_string) },
            message: if ok { None } else { message },
            last_transition_time: Some(entry.1.clone()),
            ..Default::default()
        }
    }
}

/// Where the Pod is in its life, as the Pod task sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Folder, address, credentials and volumes are being set up.
    Preparing,
    /// Init containers run.
    Initializing,
    /// App containers run.
    Running,
    /// Nothing will run again.
    Finished,
}

pub struct StatusInputs<'a> {
    pub pod: &'a Pod,
    pub ip: Option<Ipv4Addr>,
    pub start_time: &'a Time,
    pub progress: Progress,
    pub init_failed: bool,
    /// A pod-level setup problem, shown on containers that have not started.
    pub setup_error: Option<&'a str>,
    pub init_statuses: &'a BTreeMap<String, ContainerStatus>,
    pub app_statuses: &'a BTreeMap<String, ContainerStatus>,
}

pub fn build(inputs: &StatusInputs<'_>, clock: &mut ConditionClock) -> PodStatus {
    let spec = inputs.pod.spec.clone().unwrap_or_default();
    let init_specs = spec.init_containers.clone().unwrap_or_default();
    let default_reason = match inputs.progress {
        Progress::Preparing | Progress::Initializing if !init_specs.is_empty() => "PodInitializing",
        _ => "ContainerCreating",
    };
    let statuses = |specs: &[Container],
                    reported: &BTreeMap<String, ContainerStatus>,
                    reason: &str|
     -> Vec<ContainerStatus> {
        specs
            .iter()
            .map(|c| {
                reported.get(&c.name).cloned().unwrap_or_else(|| ContainerStatus {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    state: Some(waiting(reason, inputs.setup_error.map(str::to_string))),
                    ..Default::default()
                })
            })
            .collect()
    };
    let init = statuses(&init_specs, inputs.init_statuses, "PodInitializing");
    let app = statuses(&spec.containers, inputs.app_statuses, default_reason);
    let phase = phase(inputs, &app);
    let terminal = matches!(phase, "Succeeded" | "Failed");

    let initialized =
        init_specs.is_empty() || init.iter().all(is_done_ok) || matches!(inputs.progress, Progress::Running);
    let not_initialized: Vec<&str> =
        init.iter().filter(|s| !is_done_ok(s)).map(|s| s.name.as_str()).collect();
    let unready: Vec<&str> = app.iter().filter(|s| !s.ready).map(|s| s.name.as_str()).collect();
    let ready = unready.is_empty() && !terminal;
    let (ready_reason, ready_message) = if terminal {
        ("PodCompleted", None)
    } else {
        ("ContainersNotReady", Some(format!("containers with unready status: [{}]", unready.join(" "))))
    };
    let conditions = vec![
        clock.condition(
            "PodReadyToStartContainers",
            inputs.ip.is_some() && inputs.progress != Progress::Preparing,
            None,
            None,
        ),
        clock.condition(
            "Initialized",
            initialized,
            Some("ContainersNotInitialized"),
            Some(format!("containers with incomplete status: [{}]", not_initialized.join(" "))),
        ),
        clock.condition("Ready", ready, Some(ready_reason), ready_message.clone()),
        clock.condition("ContainersReady", ready, Some(ready_reason), ready_message),
        clock.condition("PodScheduled", true, None, None),
    ];
    let ip = inputs.ip.map(|ip| ip.to_string());
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(conditions),
        host_ip: Some("127.0.0.1".into()),
        host_ips: Some(vec![HostIP { ip: "127.0.0.1".into() }]),
        pod_ip: ip.clone(),
        pod_ips: ip.map(|ip| vec![PodIP { ip }]),
        start_time: Some(inputs.start_time.clone()),
        init_container_statuses: (!init.is_empty()).then_some(init),
        container_statuses: Some(app),
        observed_generation: inputs.pod.metadata.generation,
        ..Default::default()
    }
}

fn is_done_ok(status: &ContainerStatus) -> bool {
    status.state.as_ref().and_then(|s| s.terminated.as_ref()).is_some_and(|t| t.exit_code == 0)
}

fn phase(inputs: &StatusInputs<'_>, app: &[ContainerStatus]) -> &'static str {
    if inputs.init_failed {
        return "Failed";
    }
    match inputs.progress {
        Progress::Preparing | Progress::Initializing => "Pending",
        Progress::Finished => {
            if app.iter().all(is_done_ok) {
                "Succeeded"
            } else {
                "Failed"
            }
        }
        Progress::Running => {
            let never_started = app.iter().any(|s| {
                s.restart_count == 0
                    && s.last_state.is_none()
                    && s.state.as_ref().is_none_or(|st| st.waiting.is_some())
            });
            if never_started { "Pending" } else { "Running" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateRunning, ContainerStateTerminated};

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "generation": 1},
            "spec": {"containers": [{"name": "a", "image": "millrace/host:latest"}, {"name": "b", "image": "millrace/host:latest"}]}
        }))
        .expect("valid pod")
    }

    fn running(name: &str, ready: bool) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            ready,
            state: Some(ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn terminated(name: &str, code: i32) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated { exit_code: code, ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn condition<'a>(status: &'a PodStatus, type_: &str) -> &'a PodCondition {
        status.conditions.iter().flatten().find(|c| c.type_ == type_).expect("condition present")
    }

    #[test]
    fn readiness_and_phase_follow_the_containers() {
        let pod = pod();
        let start = Time(Timestamp::now());
        let mut clock = ConditionClock::default();
        let empty = BTreeMap::new();
        let mut view = |progress: Progress, app: &[ContainerStatus]| {
            let app: BTreeMap<String, ContainerStatus> =
                app.iter().map(|s| (s.name.clone(), s.clone())).collect();
            let inputs = StatusInputs {
                pod: &pod,
                ip: Some(Ipv4Addr::new(127, 10, 0, 1)),
                start_time: &start,
                progress,
                init_failed: false,
                setup_error: None,
                init_statuses: &empty,
                app_statuses: &app,
            };
            build(&inputs, &mut clock)
        };
        let status = view(Progress::Running, &[]);
        assert_eq!(status.phase.as_deref(), Some("Pending"), "nothing started yet");
        assert_eq!(status.pod_ip.as_deref(), Some("127.10.0.1"));

        let status = view(Progress::Running, &[running("a", true), running("b", false)]);
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(condition(&status, "Ready").status, "False");
        assert_eq!(
            condition(&status, "Ready").message.as_deref(),
            Some("containers with unready status: [b]")
        );
        let first_change = condition(&status, "Ready").last_transition_time.clone();

        let status = view(Progress::Running, &[running("a", true), running("b", true)]);
        assert_eq!(condition(&status, "Ready").status, "True");
        assert_eq!(condition(&status, "ContainersReady").status, "True");
        let again = view(Progress::Running, &[running("a", true), running("b", true)]);
        assert_eq!(status, again, "an unchanged view gives an identical status");
        assert!(condition(&status, "Ready").last_transition_time >= first_change);

        let failed = view(Progress::Finished, &[terminated("a", 0), terminated("b", 1)]);
        assert_eq!(failed.phase.as_deref(), Some("Failed"));
        let succeeded = view(Progress::Finished, &[terminated("a", 0), terminated("b", 0)]);
        assert_eq!(succeeded.phase.as_deref(), Some("Succeeded"));
        assert_eq!(condition(&succeeded, "Ready").reason.as_deref(), Some("PodCompleted"));
    }

    #[test]
    fn setup_errors_show_on_waiting_containers() {
        let pod = pod();
        let start = Time(Timestamp::now());
        let empty = BTreeMap::new();
        let inputs = StatusInputs {
            pod: &pod,
            ip: None,
            start_time: &start,
            progress: Progress::Preparing,
            init_failed: false,
            setup_error: Some("configmap \"x\" not found"),
            init_statuses: &empty,
            app_statuses: &empty,
        };
        let status = build(&inputs, &mut ConditionClock::default());
        let waiting = status
            .container_statuses
            .as_ref()
            .and_then(|c| c[0].state.as_ref())
            .and_then(|s| s.waiting.clone());
        assert_eq!(waiting.as_ref().and_then(|w| w.reason.as_deref()), Some("ContainerCreating"));
        assert_eq!(waiting.and_then(|w| w.message), Some("configmap \"x\" not found".into()));
        assert_eq!(status.phase.as_deref(), Some("Pending"));
    }
}
