//! The Helm chart as a user meets it, on the local platform: Millrace installed from
//! charts/millrace (`e2e/platform/millrace.sh`); `helm upgrade` with changed values rolls the
//! operator and leaves a running job's Pods alone; `helm uninstall` removes the operator and
//! keeps the CRDs, the StreamJob, the job's Pods (which keep checkpointing) and its checkpoints;
//! a reinstall picks the job up again. Needs `make up`.
#![cfg(feature = "platform")]

#[allow(dead_code)] // shared with kafka_topic.rs, which uses the rest
#[path = "kafka_topic/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use millrace_crds::v1alpha1::{JobPhase, StreamJob};
use serde_json::json;
use support::{FIELD_MANAGER, TestNamespace, ensure_operator, install_chart, wait_until};

const JOB_DEADLINE: Duration = Duration::from_secs(240);

/// `helm` (as built by e2e/platform/build-kube.sh) on the release, with the platform's kubeconfig.
fn helm(args: &str) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = format!(
        "source e2e/platform/lib.sh && export KUBECONFIG=\"$LOCAL/kubeconfig\" && \"$BIN/helm\" {args}"
    );
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&root)
        .output()
        .expect("run helm");
    assert!(
        output.status.success(),
        "helm {args} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Names and uids of the job's Pods.
async fn job_pods(client: &Client, namespace: &str, job: &str) -> BTreeMap<String, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("app.kubernetes.io/instance={job}");
    let list = pods.list(&ListParams::default().labels(&selector)).await.expect("list the job's Pods");
    list.items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect()
}

fn last_checkpoint(job: &StreamJob) -> i64 {
    job.status.as_ref().and_then(|s| s.last_checkpoint.as_ref()).map_or(0, |c| c.id)
}

/// The newest `chk-<n>` folder anywhere under `folder` (the job's deployments have their own
/// subfolders), 0 when there is none.
fn newest_checkpoint_on_disk(folder: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(folder) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            match name.strip_prefix("chk-").and_then(|n| n.parse().ok()) {
                Some(id) => id,
                None if entry.path().is_dir() => newest_checkpoint_on_disk(&entry.path()),
                None => 0,
            }
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn upgrades_keep_jobs_running_and_uninstall_keeps_jobs_and_their_state() {
    ensure_operator().await;
    let ns = TestNamespace::create("helm").await;
    let client = ns.client.clone();
    let jobs: Api<StreamJob> = Api::namespaced(client.clone(), &ns.name);
    let folder = PathBuf::from(format!("/tmp/millrace-e2e-checkpoints/{}", ns.name));
    let job = json!({
        "apiVersion": "millrace.io/v1alpha1",
        "kind": "StreamJob",
        "metadata": { "name": "gen", "namespace": ns.name },
        "spec": {
            "parallelism": 1,
            "sql": "CREATE TABLE input (v BIGINT) WITH (connector = 'generator', rows_per_second = '200');\n\
                    CREATE TABLE output (v BIGINT) WITH (connector = 'stdout', format = 'json');\n\
                    INSERT INTO output SELECT v FROM input WHERE v % 97 = 0;",
            "checkpointing": { "intervalMs": 500, "storage": format!("file://{}", folder.display()) },
        },
    });
    jobs.patch("gen", &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&job)).await.expect("apply");
    let checkpointing = |after: i64| {
        let jobs = jobs.clone();
        async move {
            let job = jobs.get("gen").await.ok()?;
            let running = job.status.as_ref().is_some_and(|s| s.phase == JobPhase::Running);
            (running && last_checkpoint(&job) > after).then_some(last_checkpoint(&job))
        }
    };
    let first = wait_until("the job to run and checkpoint", JOB_DEADLINE, || checkpointing(0)).await;
    let pods = job_pods(&client, &ns.name, "gen").await;
    assert_eq!(pods.len(), 2, "a coordinator and a worker: {pods:?}");

    // An upgrade with a changed value rolls the operator, not the job.
    let operators: Api<Deployment> = Api::namespaced(client.clone(), "millrace-system");
    let generation = operators.get("millrace-operator").await.expect("operator").metadata.generation;
    helm(
        "upgrade millrace charts/millrace -n millrace-system --reuse-values --set operator.resyncSeconds=11 --wait --timeout 180s",
    );
    let rolled = operators.get("millrace-operator").await.expect("operator");
    assert!(rolled.metadata.generation > generation, "the operator's Deployment changed");
    let args =
        rolled.spec.and_then(|s| s.template.spec).map(|s| s.containers[0].args.clone().unwrap_or_default());
    assert!(
        args.is_some_and(|a| a.contains(&"--resync-seconds=11".to_owned())),
        "the new value reached the operator"
    );
    let later =
        wait_until("checkpoints reported after the upgrade", JOB_DEADLINE, || checkpointing(first)).await;
    assert_eq!(job_pods(&client, &ns.name, "gen").await, pods, "the job's Pods were not restarted");

    // Uninstall: the operator goes; the CRDs, the job, its Pods and its checkpoints stay.
    helm("uninstall millrace -n millrace-system --wait --timeout 120s");
    assert!(operators.get_opt("millrace-operator").await.expect("read").is_none(), "the operator is gone");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in ["streamjobs.millrace.io", "kafkatopics.millrace.io"] {
        assert!(crds.get_opt(crd).await.expect("read CRD").is_some(), "{crd} is kept");
    }
    assert!(jobs.get_opt("gen").await.expect("read").is_some(), "the StreamJob is kept");
    let written = newest_checkpoint_on_disk(&folder);
    assert!(written > 0, "its checkpoints are kept in {}", folder.display());
    wait_until("the job to checkpoint on without an operator", JOB_DEADLINE, || async {
        (newest_checkpoint_on_disk(&folder) > written).then_some(())
    })
    .await;
    assert_eq!(job_pods(&client, &ns.name, "gen").await, pods, "the job's Pods keep running");

    // Reinstalled, the operator picks the job up where it is.
    install_chart().await;
    wait_until("checkpoints reported after the reinstall", JOB_DEADLINE, || checkpointing(later)).await;
    assert_eq!(job_pods(&client, &ns.name, "gen").await, pods, "the reinstall did not restart the job");
    ns.delete().await;
}
