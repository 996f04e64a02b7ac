//! What a Pod's containers share while it runs: its address, folder, kubeconfig, the
//! latest Pod object, its restart policy and grace period, and the runner variables every
//! container gets (POD_IP, KUBECONFIG, MILLRACE_HOSTS_FILE, MILLRACE_MOUNT_PREFIX, …).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;

use super::layout::PodDirs;
use crate::context::RunnerContext;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn of(pod: &Pod) -> Self {
        match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
            Some("Never") => Self::Never,
            Some("OnFailure") => Self::OnFailure,
            _ => Self::Always,
        }
    }
}

/// The grace period a deleted Pod gets: what the deletion asked for, else the spec's, else 30s.
pub fn grace_period(pod: &Pod) -> Duration {
    let seconds = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

pub struct PodRuntime {
    pub ctx: Arc<RunnerContext>,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub ip: Ipv4Addr,
    pub dirs: PodDirs,
    pub kubeconfig: Option<PathBuf>,
    pub pod: watch::Receiver<Arc<Pod>>,
    pub restart_policy: RestartPolicy,
}

impl PodRuntime {
    pub fn pod(&self) -> Arc<Pod> {
        self.pod.borrow().clone()
    }

    /// The variables the runner sets in every container; the container's own env may override them.
    pub fn base_env(&self) -> Vec<(String, String)> {
        let root = self.dirs.root().display().to_string();
        let pod = self.pod();
        let hostname =
            pod.spec.as_ref().and_then(|s| s.hostname.clone()).unwrap_or_else(|| self.name.clone());
        let mut env = vec![
            ("PATH".to_string(), self.ctx.path_var.clone()),
            ("HOME".to_string(), root),
            ("HOSTNAME".to_string(), hostname),
            ("POD_IP".to_string(), self.ip.to_string()),
            ("POD_NAME".to_string(), self.name.clone()),
            ("POD_NAMESPACE".to_string(), self.namespace.clone()),
            ("MILLRACE_HOSTS_FILE".to_string(), self.dirs.hosts().display().to_string()),
            ("MILLRACE_MOUNT_PREFIX".to_string(), self.dirs.mounts().display().to_string()),
        ];
        if let Some(kubeconfig) = &self.kubeconfig {
            env.push(("KUBECONFIG".to_string(), kubeconfig.display().to_string()));
        }
        env.extend(self.ctx.passed_env.iter().cloned());
        env
    }

    pub fn termination_grace(&self) -> Duration {
        grace_period(&self.pod())
    }
}
