//! What every part of the runner shares: the API client, settings, the image table, the
//! Pod address pool, the Service network, how Pods reach the API server, metrics.

use std::sync::{Arc, Mutex, MutexGuard};

use kube::Client;

use crate::identity::ApiServerAccess;
use crate::images::ImageTable;
use crate::ipam::AddressPool;
use crate::metrics::RunnerMetrics;
use crate::pods::downward::NodeCapacity;
use crate::services::ServiceNetwork;
use crate::settings::Settings;

pub struct RunnerContext {
    pub client: Client,
    pub settings: Settings,
    pub images: ImageTable,
    pod_ips: Mutex<AddressPool>,
    pub network: Arc<ServiceNetwork>,
    pub access: ApiServerAccess,
    pub metrics: RunnerMetrics,
    pub node: NodeCapacity,
    /// The runner's PATH, given to containers and used to find host-mode commands.
    pub path_var: String,
    /// `--pass-env` variables present in the runner's environment.
    pub passed_env: Vec<(String, String)>,
}

impl RunnerContext {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        settings: Settings,
        images: ImageTable,
        pod_ips: AddressPool,
        network: Arc<ServiceNetwork>,
        access: ApiServerAccess,
        metrics: RunnerMetrics,
        node: NodeCapacity,
    ) -> Self {
        let path_var = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
        let passed_env = settings
            .pass_env
            .iter()
            .filter_map(|name| Some((name.clone(), std::env::var(name).ok()?)))
            .collect();
        Self {
            client,
            settings,
            images,
            pod_ips: Mutex::new(pod_ips),
            network,
            access,
            metrics,
            node,
            path_var,
            passed_env,
        }
    }

    pub fn pod_ips(&self) -> MutexGuard<'_, AddressPool> {
        match self.pod_ips.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}
