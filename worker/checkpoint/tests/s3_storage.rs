//! Checkpoint storage on a real S3-compatible endpoint (the local platform's moto server,
//! `make up`; `AWS_ENDPOINT_URL`, credentials and `MILLRACE_S3_BUCKET` from .local/env):
//! completion only with every referenced file present, incremental references across
//! checkpoints, retention, and a savepoint that stays loadable once the job's checkpoints
//! are gone. Gated by the `platform` feature; fails (never skips) without the endpoint.
#![cfg(feature = "platform")]

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use millrace_checkpoint::{
    CheckpointError, CheckpointStorage, KeyGroupRange, OperatorState, SnapshotKind, SnapshotMetadata,
    StateFile, StateScope, TableState,
};

fn root() -> String {
    let bucket = std::env::var("MILLRACE_S3_BUCKET")
        .expect("MILLRACE_S3_BUCKET is not set: these tests need the local platform's S3 endpoint (make up, then source .local/env)");
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("s3://{bucket}/tests-{}-{nanos}", std::process::id())
}

fn checkpoint(id: u64, files: Vec<StateFile>) -> SnapshotMetadata {
    let mut m = SnapshotMetadata::new(SnapshotKind::Checkpoint, "job", id, 4, 2);
    m.completed_at_ms = 1_000 * id as i64;
    m.operators.push(OperatorState {
        operator_id: "s1.agg".into(),
        tables: vec![TableState { name: "acc".into(), scope: StateScope::KeyGroups, files }],
    });
    m
}

async fn put(s: &CheckpointStorage, id: u64, name: &str, first: u32, last: u32) -> StateFile {
    let body = format!("state {name} of chk {id}");
    let path = s.put_state_file(id, "s1.agg", "acc", name, Bytes::from(body.clone())).await.expect("written");
    StateFile {
        path,
        key_groups: Some(KeyGroupRange { first, last }),
        subtask: None,
        bytes: body.len() as u64,
        content_hash: None,
    }
}

#[tokio::test]
async fn checkpoints_retention_and_savepoints_work_on_s3() {
    let root = root();
    let s = CheckpointStorage::open(&format!("{root}/job")).expect("opens");
    assert_eq!(s.latest_checkpoint().await.expect("an empty prefix lists"), None);

    // A checkpoint naming a missing file is refused, and leaves no metadata.
    let a1 = put(&s, 1, "a", 0, 1).await;
    let mut missing = a1.clone();
    missing.path = "shared/chk-1/s1.agg/acc/none".into();
    missing.key_groups = Some(KeyGroupRange { first: 2, last: 3 });
    let refused = s.complete_checkpoint(&checkpoint(1, vec![a1.clone(), missing])).await;
    assert!(matches!(refused, Err(CheckpointError::BrokenReference { .. })), "{refused:?}");
    assert!(s.completed_checkpoints().await.expect("lists").is_empty());

    // Checkpoints 1..=3; the 'a' half of the state never changes after checkpoint 1.
    let b1 = put(&s, 1, "b", 2, 3).await;
    s.complete_checkpoint(&checkpoint(1, vec![a1.clone(), b1])).await.expect("chk 1");
    let b2 = put(&s, 2, "b", 2, 3).await;
    s.complete_checkpoint(&checkpoint(2, vec![a1.clone(), b2])).await.expect("chk 2");
    let b3 = put(&s, 3, "b", 2, 3).await;
    let chk3 = checkpoint(3, vec![a1.clone(), b3.clone()]);
    s.complete_checkpoint(&chk3).await.expect("chk 3");
    assert_eq!(s.completed_checkpoints().await.expect("lists"), vec![1, 2, 3]);

    let removed = s.retain(1).await.expect("retention");
    assert_eq!(removed.removed_checkpoints, vec![1, 2]);
    let latest = s.latest_checkpoint().await.expect("loads").expect("one is left");
    assert_eq!(latest.checkpoint_id, 3);
    assert_eq!(s.read(&a1.path).await.expect("still referenced"), Bytes::from("state a of chk 1"));
    assert_eq!(s.read(&b3.path).await.expect("kept"), Bytes::from("state b of chk 3"));

    // A savepoint on S3 is self-contained: every file it lists lives under its own prefix,
    // and loading it checks each one there.
    let target = CheckpointStorage::open(&format!("{root}/savepoints/sp-1")).expect("opens");
    let savepoint = s.write_savepoint(&chk3, &target, 7).await.expect("savepoint");
    assert!(savepoint.files().all(|f| f.path.starts_with("state/")));
    let loaded = target.load_savepoint().await.expect("loads on its own");
    assert_eq!(loaded, savepoint);
    let first = &loaded.files().next().expect("a file").path;
    assert_eq!(target.read(first).await.expect("reads"), Bytes::from("state a of chk 1"));
    let again = s.write_savepoint(&chk3, &target, 8).await.expect_err("never overwritten");
    assert!(again.to_string().contains("never overwritten"), "{again}");
}
