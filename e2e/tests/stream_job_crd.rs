//! The StreamJob CustomResourceDefinition as the real kube-apiserver serves it: the schema's
//! defaults, the CEL rules (parallelism within maxParallelism, maxParallelism immutable), the
//! scale subresource that `kubectl scale` uses, and the examples' manifests being admitted.
//! The API surface only; what the controller does with a StreamJob is e2e/tests/stream_job.rs.
//! Needs `make up` (KUBECONFIG and the CRDs applied from charts/millrace/crds/).
#![cfg(feature = "platform")]

mod common;

use common::{TestNamespace, platform_client};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use millrace_crds::v1alpha1::{JobState, StreamJob, UpgradeMode};
use serde_json::json;

const SQL: &str = "CREATE TABLE s (v BIGINT) WITH (connector = 'generator');\n\
                   CREATE TABLE o (v BIGINT) WITH (connector = 'stdout');\n\
                   INSERT INTO o SELECT v FROM s;";

fn job(name: &str, spec: serde_json::Value) -> StreamJob {
    serde_json::from_value(json!({
        "apiVersion": "millrace.io/v1alpha1",
        "kind": "StreamJob",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .expect("a valid StreamJob")
}

fn refusal(err: kube::Error) -> String {
    match err {
        kube::Error::Api(status) => status.message,
        other => panic!("expected the API server to refuse, got {other}"),
    }
}

#[tokio::test]
async fn the_schema_fills_defaults_and_the_cel_rules_refuse_bad_parallelism() {
    let client = platform_client().await;
    let ns = TestNamespace::new(&client, "sj-crd").await;
    let jobs: Api<StreamJob> = ns.api();

    let created = jobs
        .create(&PostParams::default(), &job("minimal", json!({ "sql": SQL, "parallelism": 2 })))
        .await
        .expect("a minimal StreamJob is admitted");
    assert_eq!(created.spec.upgrade_mode, UpgradeMode::Savepoint, "schema default");
    assert_eq!(created.spec.state, JobState::Running, "schema default");

    let too_wide = jobs
        .create(
            &PostParams::default(),
            &job("too-wide", json!({ "sql": SQL, "parallelism": 9, "maxParallelism": 8 })),
        )
        .await
        .expect_err("parallelism above maxParallelism is refused");
    assert!(refusal(too_wide).contains("must not exceed spec.maxParallelism"));

    let default_max = jobs
        .create(&PostParams::default(), &job("above-default", json!({ "sql": SQL, "parallelism": 129 })))
        .await
        .expect_err("parallelism above the default 128 key groups is refused");
    assert!(refusal(default_max).contains("must not exceed spec.maxParallelism"));

    let zero = jobs
        .create(&PostParams::default(), &job("zero", json!({ "sql": SQL, "parallelism": 0 })))
        .await
        .expect_err("parallelism 0 is refused by the schema");
    assert!(refusal(zero).contains("spec.parallelism"));

    // An unknown enum value cannot be built with the typed client: send the raw object.
    let raw: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns.name, &ApiResource::erase::<StreamJob>(&()));
    let bad_state: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "millrace.io/v1alpha1", "kind": "StreamJob",
        "metadata": { "name": "bad-state" },
        "spec": { "sql": SQL, "parallelism": 1, "state": "paused" },
    }))
    .expect("a well-formed object");
    let bad_state =
        raw.create(&PostParams::default(), &bad_state).await.expect_err("an unknown state is refused");
    assert!(refusal(bad_state).contains("spec.state"));

    let change_max = jobs
        .patch(
            "minimal",
            &PatchParams::apply("millrace-e2e").force(),
            &Patch::Apply(json!({
                "apiVersion": "millrace.io/v1alpha1", "kind": "StreamJob",
                "metadata": { "name": "minimal" },
                "spec": { "sql": SQL, "parallelism": 2, "maxParallelism": 64 },
            })),
        )
        .await
        .expect_err("maxParallelism is immutable");
    assert!(refusal(change_max).contains("maxParallelism is immutable"));
}

#[tokio::test]
async fn the_scale_subresource_sets_parallelism() {
    let client = platform_client().await;
    let ns = TestNamespace::new(&client, "sj-scale").await;
    let jobs: Api<StreamJob> = ns.api();
    jobs.create(&PostParams::default(), &job("scaled", json!({ "sql": SQL, "parallelism": 2 })))
        .await
        .expect("created");

    let scale = jobs.get_scale("scaled").await.expect("the scale subresource is served");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(2));

    jobs.patch_scale("scaled", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "replicas": 4 } })))
        .await
        .expect("scaling through the subresource (what `kubectl scale` does)");
    let after = jobs.get("scaled").await.expect("read back");
    assert_eq!(after.spec.parallelism, 4);

    let too_far = jobs
        .patch_scale("scaled", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "replicas": 500 } })))
        .await;
    assert!(too_far.is_err(), "the CEL rule also guards scaling past maxParallelism");
    assert_eq!(jobs.get("scaled").await.expect("read back").spec.parallelism, 4);
}

#[tokio::test]
async fn the_example_manifests_are_admitted() {
    let client = platform_client().await;
    let ns = TestNamespace::new(&client, "sj-examples").await;
    let jobs: Api<StreamJob> = ns.api();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut seen = 0;
    for dir in ["examples/seed"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("examples exist") {
            let path = entry.expect("readable entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("readable example");
            let manifest: StreamJob = serde_saphyr::from_str(&text)
                .unwrap_or_else(|err| panic!("{} is not a StreamJob: {err}", path.display()));
            jobs.create(&PostParams { dry_run: true, ..Default::default() }, &manifest)
                .await
                .unwrap_or_else(|err| panic!("{} refused by the API server: {err}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 3, "the seed examples were found ({seen})");
}
