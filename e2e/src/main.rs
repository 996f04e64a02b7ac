//! `millrace-pod-runner`: the local platform's kubelet, kube-scheduler and kube-proxy
//! stand-in (docs/pod-runner.md). This entry point owns wiring and lifecycle only: flags,
//! tracing, the ops endpoints, registering the Node, starting the watchers, and a clean
//! shutdown on SIGTERM (containers stopped, Pod objects left for the next start).

mod backoff;
mod context;
mod fsutil;
mod identity;
mod images;
mod ipam;
mod metrics;
mod node;
mod pods;
mod scheduler;
mod services;
mod settings;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Config};
use millrace_telemetry::{OpsState, init_tracing, ops_router, serve_ops, shutdown_signal};
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;

use context::RunnerContext;
use identity::ApiServerAccess;
use images::ImageTable;
use ipam::AddressPool;
use metrics::RunnerMetrics;
use node::NodeAgent;
use services::ServiceNetwork;
use services::hosts::HostsFiles;
use settings::{Args, Settings};

/// How long the logs of a deleted Pod stay in its folder (pruned when the runner starts).
const DELETED_POD_LOGS_KEPT: Duration = Duration::from_secs(24 * 3600);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing("info,kube=warn,hyper=warn,tower=warn");
    let settings = Settings::from_args(args)?;
    tracing::info!(?settings, "starting");

    std::fs::create_dir_all(&settings.pods_dir)
        .with_context(|| format!("creating {}", settings.pods_dir.display()))?;
    let lock_path = settings.pods_dir.join(".runner.lock");
    let lock =
        std::fs::File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    lock.try_lock()
        .map_err(|_| anyhow::anyhow!("another pod runner is using {}", settings.pods_dir.display()))?;

    let mut registry = Registry::with_prefix("millrace_pod_runner");
    let metrics = RunnerMetrics::register(&mut registry);
    let ops = OpsState::new(registry);
    let ops_task = tokio::spawn(serve_ops(settings.ops_addr, ops_router(ops.clone())));

    let kubeconfig = Kubeconfig::read_from(&settings.kubeconfig)
        .with_context(|| format!("reading kubeconfig {}", settings.kubeconfig.display()))?;
    let access = ApiServerAccess::from_kubeconfig(&kubeconfig)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let client = Client::try_from(config)?;

    let pods_dir = settings.pods_dir.clone();
    let (killed, pruned) = tokio::task::spawn_blocking(move || {
        let killed = pods::process::kill_leftovers(&pods_dir, Duration::from_secs(5));
        (killed, pods::layout::prune_deleted(&pods_dir, DELETED_POD_LOGS_KEPT))
    })
    .await?;
    if killed > 0 || pruned > 0 {
        tracing::info!(
            killed,
            pruned,
            "stopped containers left by a previous runner, removed old folders of deleted Pods"
        );
    }
    let images = ImageTable::load(&settings.images, &settings.bin_dir)?;

    let capacity = node::machine_capacity();
    let kubelet_version = wait_for_apiserver(&client).await;
    let agent = NodeAgent::new(
        client.clone(),
        &settings.node_name,
        capacity,
        settings.max_pods,
        kubelet_version,
        settings.ops_addr.port(),
    );
    while let Err(err) = agent.register().await {
        tracing::warn!(%err, "registering the Node failed (retrying)");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    tokio::spawn(agent.run());

    let (service_store, service_writer) = reflector::store::<Service>();
    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let network = Arc::new(ServiceNetwork::new(
        client.clone(),
        service_store.clone(),
        pod_store,
        AddressPool::new(settings.service_cidr),
        HostsFiles::new(&settings.pods_dir, &settings.cluster_domain),
        access.address.clone(),
        metrics.clone(),
    ));
    let service_watch = {
        let network = network.clone();
        let stream = watcher(Api::<Service>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .reflect(service_writer);
        async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                if let Err(err) = event {
                    tracing::warn!(%err, "watching Services");
                }
                network.mark_dirty();
            }
        }
    };
    tokio::spawn(service_watch);
    service_store.wait_until_ready().await.context("the Service watch ended before its first list")?;
    network.reconcile().await;
    tokio::spawn(network.clone().run());

    let ctx = Arc::new(RunnerContext::new(
        client.clone(),
        settings.clone(),
        images,
        AddressPool::new(settings.pod_cidr),
        network,
        access,
        metrics.clone(),
        capacity,
    ));
    let (stop_pods, pods_stopped) = oneshot::channel();
    let pods_task = tokio::spawn(pods::run(ctx, pod_writer, pods_stopped));
    tokio::spawn(scheduler::run(client, settings.node_name.clone(), metrics));

    ops.set_ready(true);
    tracing::info!(node = %settings.node_name, "pod runner ready");
    shutdown_signal().await;
    ops.set_ready(false);
    tracing::info!("SIGTERM: stopping containers");
    let _ = stop_pods.send(());
    pods_task.await?;
    ops_task.abort();
    tracing::info!("stopped");
    Ok(())
}

/// The API server's version (reported as the Node's kubelet version), once it answers.
async fn wait_for_apiserver(client: &Client) -> String {
    let mut logged = false;
    loop {
        match client.apiserver_version().await {
            Ok(info) => return info.git_version,
            Err(err) => {
                if !logged {
                    tracing::warn!(%err, "the API server does not answer yet (retrying)");
                    logged = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
