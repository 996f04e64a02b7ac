//! StreamJob behaviour end to end: the operator runs as a Pod of the pod runner under its
//! least-privilege ServiceAccount (the Helm chart's, charts/millrace), each test in its own
//! namespace; children, status and Events are read from the real API server, garbage
//! collection is the real controller-manager's. Needs `make up`.
//!
//! The job's Pods run `MILLRACE_E2E_JOB_IMAGE` (default `millrace/millrace-worker:dev`, the
//! checkout's own millrace-worker). Only [`the_seed_job_runs_as_coordinator_and_workers`] needs
//! that binary to have the `coordinator` and `worker` roles; the other tests check what the
//! operator does whether or not the job's Pods come up.
#![cfg(feature = "platform")]

#[allow(dead_code)] // shared with kafka_topic.rs, which uses the rest
#[path = "kafka_topic/support.rs"]
mod support;

#[allow(dead_code)] // shared with stream_job_failures.rs
mod jobs_support;

use jobs_support::{
    JOB_DEADLINE, Jobs, args, consume, filter_sql, flag, job_image, produce, ready, replicas,
    rolling_reference, seed_sql, storage,
};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use millrace_crds::v1alpha1::{ConditionStatus, JobPhase, SavepointTrigger, StreamJob};
use serde_json::json;
use support::{DEADLINE, Kafka, TestNamespace, unique, wait_until};

#[tokio::test]
async fn invalid_sql_is_refused_with_line_and_column_and_nothing_is_deployed() {
    let ns = TestNamespace::create("sj-invalid").await;
    let jobs = Jobs::new(&ns);
    let sql = "CREATE TABLE input (v BIGINT) WITH (connector = 'kafka', topic = 'in', format = 'raw');\n\
               CREATE TABLE output (v BIGINT) WITH (connector = 'kafka', topic = 'out', format = 'raw');\n\
               INSERT INTO output SELECT v FROM input WHERE v >= ;\n";
    jobs.apply("broken", json!({ "sql": sql, "parallelism": 1, "image": job_image() })).await;
    let job = jobs
        .wait("broken", "Ready=False InvalidSql", DEADLINE, |j| {
            ready(j).is_some_and(|(s, reason, _)| s == ConditionStatus::False && reason == "InvalidSql")
        })
        .await;
    let (_, _, message) = ready(&job).expect("Ready");
    assert!(message.contains("line 3, column"), "the planner's position is in the message: {message}");
    let status = job.status.clone().expect("status");
    assert_eq!(status.phase, JobPhase::Failed);
    assert!(status.conditions.iter().any(|c| c.type_ == "SqlValid" && c.status == ConditionStatus::False));

    wait_until("an InvalidSql Warning Event", DEADLINE, || async {
        jobs.events()
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some("InvalidSql") && e.type_.as_deref() == Some("Warning"))
            .then_some(())
    })
    .await;
    assert!(jobs.deployment("broken-coordinator").await.is_none(), "no coordinator deployed");
    assert!(jobs.deployment("broken-worker").await.is_none(), "no workers deployed");
    let config_maps: Api<ConfigMap> = Api::namespaced(ns.client.clone(), &ns.name);
    assert!(config_maps.get_opt("broken-plan").await.expect("read ConfigMap").is_none(), "no plan");

    // Fixing the SQL deploys the job.
    jobs.patch_spec("broken", json!({ "sql": filter_sql("in", "out") })).await;
    jobs.wait_deployment("broken-worker", "created once the SQL is fixed", |_| true).await;
    ns.delete().await;
}

#[tokio::test]
async fn children_follow_the_contract_and_kubectl_scale_resizes_the_workers() {
    let ns = TestNamespace::create("sj-children").await;
    let jobs = Jobs::new(&ns);
    let sql = filter_sql("in", "out");
    jobs.apply(
        "filter",
        json!({
            "sql": sql, "parallelism": 3, "slotsPerWorker": 2, "image": job_image(),
            "checkpointing": { "storage": storage(&ns.name), "intervalMs": 1000 },
        }),
    )
    .await;
    let job = jobs
        .wait("filter", "a first deployment", DEADLINE, |j| {
            j.status.as_ref().is_some_and(|s| s.deployment.is_some())
        })
        .await;
    let uid = job.uid().expect("uid");
    let status = job.status.clone().expect("status");
    assert_eq!(status.job_id.as_deref(), Some("filter-1"));
    assert_eq!(
        status.selector.as_deref(),
        Some(
            "app.kubernetes.io/name=millrace-worker,app.kubernetes.io/instance=filter,millrace.io/role=worker"
        )
    );
    assert!(status.last_reconciled_spec.is_some_and(|s| s.contains("\"parallelism\":3")));

    let owned_by_job = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == uid && o.kind == "StreamJob" && o.controller == Some(true))
    };
    let worker = jobs.wait_deployment("filter-worker", "exists", |_| true).await;
    assert_eq!(replicas(&worker), Some(2), "ceil(3 / 2) workers");
    assert_eq!(args(&worker), ["worker", "--coordinator", "filter-coordinator:6123", "--slots", "2"]);
    assert!(owned_by_job(&worker.metadata));
    let coordinator = jobs.deployment("filter-coordinator").await.expect("coordinator Deployment");
    let coordinator_args = args(&coordinator);
    assert_eq!(&coordinator_args[..3], ["coordinator", "-f", "/etc/millrace/job/job.sql"]);
    assert_eq!(flag(&coordinator_args, "--parallelism").as_deref(), Some("3"));
    assert_eq!(flag(&coordinator_args, "--slots-per-worker").as_deref(), Some("2"));
    let uid: String = job_uid(&jobs, "filter").await.chars().filter(|c| *c != '-').take(8).collect();
    assert_eq!(
        flag(&coordinator_args, "--checkpoint-dir"),
        Some(format!("{}/{}/filter/checkpoints/{uid}-1", storage(&ns.name), ns.name)),
        "a folder of this incarnation of the job (a re-created job never restores an old one's)"
    );
    assert_eq!(replicas(&coordinator), Some(1));
    assert!(owned_by_job(&coordinator.metadata));

    let plan =
        Api::<ConfigMap>::namespaced(ns.client.clone(), &ns.name).get("filter-plan").await.expect("plan");
    let data = plan.data.clone().expect("data");
    assert_eq!(data["job.sql"], sql);
    assert!(!data["plan.txt"].is_empty());
    assert!(owned_by_job(&plan.metadata));
    let service = Api::<Service>::namespaced(ns.client.clone(), &ns.name)
        .get("filter-coordinator")
        .await
        .expect("Service");
    let ports: Vec<i32> = service.spec.and_then(|s| s.ports).into_iter().flatten().map(|p| p.port).collect();
    assert_eq!(ports, [6123, 9200]);
    assert!(owned_by_job(&service.metadata));
    let account = Api::<ServiceAccount>::namespaced(ns.client.clone(), &ns.name)
        .get("filter-worker")
        .await
        .expect("SA");
    assert!(owned_by_job(&account.metadata));
    let budget = Api::<PodDisruptionBudget>::namespaced(ns.client.clone(), &ns.name)
        .get("filter-worker")
        .await
        .expect("PDB");
    assert!(owned_by_job(&budget.metadata));

    // `kubectl scale sj/filter --replicas=5` goes through the scale subresource.
    jobs.api()
        .patch_scale("filter", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "replicas": 5 } })))
        .await
        .expect("scale");
    jobs.wait_deployment("filter-worker", "3 replicas after scaling to 5", |d| replicas(d) == Some(3)).await;
    let coordinator = jobs.deployment("filter-coordinator").await.expect("coordinator Deployment");
    assert_eq!(flag(&args(&coordinator), "--parallelism").as_deref(), Some("5"));
    let job = jobs
        .wait("filter", "the second deployment", DEADLINE, |j| {
            j.status.as_ref().and_then(|s| s.deployment.as_ref()).is_some_and(|d| d.number == 2)
        })
        .await;
    assert_eq!(job.status.as_ref().and_then(|s| s.parallelism), Some(5));
    let scale = jobs.api().get_scale("filter").await.expect("scale subresource");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(5));
    assert_eq!(scale.status.and_then(|s| s.selector), job.status.and_then(|s| s.selector));
    ns.delete().await;
}

#[tokio::test]
async fn suspend_removes_coordinator_and_workers_and_resume_brings_them_back() {
    let ns = TestNamespace::create("sj-suspend").await;
    let jobs = Jobs::new(&ns);
    let spec = json!({ "sql": filter_sql("in", "out"), "parallelism": 2, "image": job_image() });
    jobs.apply("pausable", spec).await;
    jobs.wait_deployment("pausable-worker", "2 workers", |d| replicas(d) == Some(2)).await;

    jobs.patch_spec("pausable", json!({ "state": "suspended" })).await;
    let job = jobs
        .wait("pausable", "Suspended and Ready", DEADLINE, |j| {
            j.status.as_ref().is_some_and(|s| s.phase == JobPhase::Suspended)
                && ready(j).is_some_and(|(s, reason, _)| s == ConditionStatus::True && reason == "Suspended")
        })
        .await;
    jobs.wait_gone("pausable-worker").await;
    jobs.wait_gone("pausable-coordinator").await;
    assert!(job.status.as_ref().is_some_and(|s| s.workers.is_none()));
    // The plan and the Service stay for the resume.
    Api::<ConfigMap>::namespaced(ns.client.clone(), &ns.name).get("pausable-plan").await.expect("plan kept");

    jobs.patch_spec("pausable", json!({ "state": "running" })).await;
    jobs.wait_deployment("pausable-worker", "back after resume", |d| replicas(d) == Some(2)).await;
    jobs.wait("pausable", "a new deployment", DEADLINE, |j| {
        j.status.as_ref().and_then(|s| s.deployment.as_ref()).is_some_and(|d| d.number == 2)
    })
    .await;
    ns.delete().await;
}

#[tokio::test]
async fn deleting_a_job_garbage_collects_its_children() {
    let ns = TestNamespace::create("sj-delete").await;
    let jobs = Jobs::new(&ns);
    jobs.apply("doomed", json!({ "sql": filter_sql("in", "out"), "parallelism": 1, "image": job_image() }))
        .await;
    jobs.wait_deployment("doomed-worker", "exists", |_| true).await;
    jobs.api().delete("doomed", &DeleteParams::default()).await.expect("delete StreamJob");

    jobs.wait_gone("doomed-worker").await;
    jobs.wait_gone("doomed-coordinator").await;
    let client = ns.client.clone();
    let namespace = ns.name.clone();
    wait_until("the plan, Service, ServiceAccount and PDB to be garbage-collected", DEADLINE, || async {
        let plan =
            Api::<ConfigMap>::namespaced(client.clone(), &namespace).get_opt("doomed-plan").await.ok()?;
        let service = Api::<Service>::namespaced(client.clone(), &namespace)
            .get_opt("doomed-coordinator")
            .await
            .ok()?;
        let account = Api::<ServiceAccount>::namespaced(client.clone(), &namespace)
            .get_opt("doomed-worker")
            .await
            .ok()?;
        let budget = Api::<PodDisruptionBudget>::namespaced(client.clone(), &namespace)
            .get_opt("doomed-worker")
            .await
            .ok()?;
        (plan.is_none() && service.is_none() && account.is_none() && budget.is_none()).then_some(())
    })
    .await;
    ns.delete().await;
}

/// The joined test of the operator and the engine's coordinator/worker roles: `kubectl
/// apply` of the seed job → a coordinator Pod and worker Pods → correct output in Kafka;
/// then a savepoint triggered through the nonce shows in the status.
#[tokio::test]
async fn the_seed_job_runs_as_coordinator_and_workers() {
    let ns = TestNamespace::create("sj-seed").await;
    let jobs = Jobs::new(&ns);
    let kafka = Kafka::connect();
    let (input, output, dlq) = (unique("sj-seed-in"), unique("sj-seed-out"), unique("sj-seed-dlq"));
    for topic in [&input, &output, &dlq] {
        kafka.create(topic, 1, &[]).await;
    }
    let data: Vec<i64> = (0..60).map(|i| (i * 37) % 100).collect();
    produce(&input, &data);
    let want = rolling_reference(&data);

    jobs.apply(
        "seed-a",
        json!({
            "sql": seed_sql(&input, &output, &dlq), "parallelism": 1, "slotsPerWorker": 1, "image": job_image(),
            "checkpointing": { "storage": storage(&ns.name), "intervalMs": 1000 },
        }),
    )
    .await;
    let job = jobs
        .wait("seed-a", "Running with its worker ready", JOB_DEADLINE, |j| {
            j.status
                .as_ref()
                .is_some_and(|s| s.phase == JobPhase::Running && s.workers.as_deref() == Some("1/1"))
        })
        .await;
    assert!(job.status.as_ref().is_some_and(|s| s.last_stable_spec.is_some()));
    let got = consume(&output, want.len()).await;
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() < 1e-9, "output {i}: got {g}, want {w}\ngot {got:?}\nwant {want:?}");
    }

    jobs.patch_spec("seed-a", json!({ "savepointTriggerNonce": 1 })).await;
    let job = jobs
        .wait("seed-a", "a manual savepoint in the status", JOB_DEADLINE, |j| {
            j.status
                .as_ref()
                .and_then(|s| s.last_savepoint.as_ref())
                .is_some_and(|s| s.trigger == SavepointTrigger::Manual)
        })
        .await;
    let savepoint = job.status.and_then(|s| s.last_savepoint).expect("savepoint");
    assert!(savepoint.location.starts_with(&storage(&ns.name)), "{savepoint:?}");
    ns.delete().await;
}

async fn job_uid(jobs: &Jobs<'_>, name: &str) -> String {
    jobs.api().get(name).await.expect("the StreamJob").metadata.uid.expect("a uid")
}

/// Deterministic pseudo-random integers in 0..100.
fn values(n: usize, seed: u64) -> Vec<i64> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 33) % 100) as i64
        })
        .collect()
}

fn assert_prefix(got: &[f64], want: &[f64], when: &str) {
    assert_eq!(got.len(), want.len(), "{when}: got {got:?}\nwant {want:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() < 1e-9, "{when}: output {i}: got {g}, want {w}\ngot {got:?}\nwant {want:?}");
    }
}

/// Upgrade (threshold 50 → 60, savepoint mode), `kubectl scale` to 2, suspend and resume:
/// each goes through a savepoint, and the rolling average's state (the last kept values)
/// and the Kafka offsets carry over, so the output is that of one uninterrupted run whose
/// filter changed between two inputs. Needs the coordinator/worker roles.
#[tokio::test]
async fn upgrade_rescale_and_suspend_keep_the_state() {
    let ns = TestNamespace::create("sj-state").await;
    let jobs = Jobs::new(&ns);
    let kafka = Kafka::connect();
    let (input, output, dlq) = (unique("sj-state-in"), unique("sj-state-out"), unique("sj-state-dlq"));
    for topic in [&input, &output, &dlq] {
        kafka.create(topic, 1, &[]).await;
    }
    let sql_50 = seed_sql(&input, &output, &dlq);
    assert!(sql_50.contains("WHERE v >= 50"), "the seed job filters at 50");
    let sql_60 = sql_50.replace("WHERE v >= 50", "WHERE v >= 60");
    let spec = |sql: &str| {
        json!({
            "sql": sql, "parallelism": 1, "slotsPerWorker": 1, "image": job_image(),
            "checkpointing": { "storage": storage(&ns.name), "intervalMs": 1000 },
        })
    };
    let mut kept: Vec<i64> = Vec::new();
    let mut feed = |batch: &[i64], threshold: i64| {
        produce(&input, batch);
        kept.extend(batch.iter().copied().filter(|v| *v >= threshold));
        kept.windows(3).map(|w| w.iter().sum::<i64>() as f64 / 3.0).collect::<Vec<f64>>()
    };
    let deployment_running = |number: i64| {
        move |j: &StreamJob| {
            j.status.as_ref().is_some_and(|s| {
                s.phase == JobPhase::Running && s.deployment.as_ref().is_some_and(|d| d.number == number)
            })
        }
    };

    jobs.apply("seed-a", spec(&sql_50)).await;
    let want = feed(&values(40, 1), 50);
    jobs.wait("seed-a", "deployment 1 Running", JOB_DEADLINE, deployment_running(1)).await;
    assert_prefix(&consume(&output, want.len()).await, &want, "first deployment");

    jobs.apply("seed-a", spec(&sql_60)).await;
    let job =
        jobs.wait("seed-a", "deployment 2 (upgrade) Running", JOB_DEADLINE, deployment_running(2)).await;
    let status = job.status.clone().expect("status");
    let upgrade = status.savepoint_history.first().expect("the upgrade savepoint");
    assert_eq!(upgrade.trigger, SavepointTrigger::Upgrade);
    assert_eq!(status.deployment.and_then(|d| d.restore_from).as_deref(), Some(upgrade.location.as_str()));
    let want = feed(&values(40, 2), 60);
    assert_prefix(&consume(&output, want.len()).await, &want, "after the upgrade");

    jobs.api()
        .patch_scale("seed-a", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "replicas": 2 } })))
        .await
        .expect("scale");
    let job = jobs
        .wait("seed-a", "deployment 3 (rescale) Running on 2 workers", JOB_DEADLINE, |j| {
            deployment_running(3)(j) && j.status.as_ref().is_some_and(|s| s.workers.as_deref() == Some("2/2"))
        })
        .await;
    let rescale =
        job.status.as_ref().and_then(|s| s.savepoint_history.first()).expect("the rescale savepoint");
    assert_eq!((rescale.trigger, rescale.parallelism), (SavepointTrigger::Upgrade, 1));
    let want = feed(&values(40, 3), 60);
    assert_prefix(&consume(&output, want.len()).await, &want, "after rescaling to 2");

    jobs.patch_spec("seed-a", json!({ "state": "suspended" })).await;
    let job = jobs
        .wait("seed-a", "Suspended with a suspend savepoint", JOB_DEADLINE, |j| {
            j.status.as_ref().is_some_and(|s| {
                s.phase == JobPhase::Suspended
                    && s.last_savepoint.as_ref().is_some_and(|p| p.trigger == SavepointTrigger::Suspend)
            })
        })
        .await;
    jobs.wait_gone("seed-a-worker").await;
    jobs.wait_gone("seed-a-coordinator").await;
    let suspend_savepoint = job.status.and_then(|s| s.last_savepoint).expect("savepoint").location;
    let want = feed(&values(40, 4), 60);
    jobs.patch_spec("seed-a", json!({ "state": "running" })).await;
    let job = jobs.wait("seed-a", "deployment 4 (resume) Running", JOB_DEADLINE, deployment_running(4)).await;
    assert_eq!(job.status.and_then(|s| s.deployment).and_then(|d| d.restore_from), Some(suspend_savepoint));
    assert_prefix(&consume(&output, want.len()).await, &want, "after suspend and resume");
    ns.delete().await;
}
