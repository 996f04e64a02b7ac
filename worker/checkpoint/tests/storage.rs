//! Checkpoint storage on a real local filesystem (object_store's LocalFileSystem in a temp
//! folder): completion only with every referenced file present, incremental references,
//! retention and cleanup, self-contained savepoints, and malformed storage reported.

use bytes::Bytes;
use millrace_checkpoint::{
    CheckpointError, CheckpointStorage, KeyGroupRange, OperatorState, SnapshotKind, SnapshotMetadata,
    StateFile, StateScope, TableState,
};

fn storage() -> (tempfile::TempDir, CheckpointStorage) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("file://{}/job", dir.path().display());
    let storage = CheckpointStorage::open(&url).expect("opens");
    (dir, storage)
}

fn keyed(path: &str, first: u32, last: u32, bytes: usize) -> StateFile {
    StateFile {
        path: path.into(),
        key_groups: Some(KeyGroupRange { first, last }),
        subtask: None,
        bytes: bytes as u64,
        content_hash: None,
    }
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

async fn put(s: &CheckpointStorage, id: u64, name: &str) -> (String, usize) {
    let body = format!("state {name} of chk {id}");
    let path = s.put_state_file(id, "s1.agg", "acc", name, Bytes::from(body.clone())).await.expect("written");
    (path, body.len())
}

#[tokio::test]
async fn a_checkpoint_completes_only_when_every_file_it_names_is_there() {
    let (_dir, s) = storage();
    assert_eq!(s.latest_checkpoint().await.expect("empty storage lists"), None);
    let (a, a_len) = put(&s, 1, "a").await;
    let missing = checkpoint(1, vec![keyed(&a, 0, 1, a_len), keyed("shared/chk-1/s1.agg/acc/b", 2, 3, 5)]);
    match s.complete_checkpoint(&missing).await {
        Err(CheckpointError::BrokenReference { path, why, .. }) => {
            assert_eq!(path, "shared/chk-1/s1.agg/acc/b");
            assert_eq!(why, "is missing");
        }
        other => panic!("expected a broken reference, got {other:?}"),
    }
    assert!(s.completed_checkpoints().await.expect("lists").is_empty(), "no metadata was written");

    let wrong_size = checkpoint(1, vec![keyed(&a, 0, 3, a_len + 1)]);
    assert!(matches!(s.complete_checkpoint(&wrong_size).await, Err(CheckpointError::BrokenReference { .. })));

    let good = checkpoint(1, vec![keyed(&a, 0, 3, a_len)]);
    let location = s.complete_checkpoint(&good).await.expect("completes");
    assert!(location.ends_with("/job/chk-1/_metadata"), "{location}");
    assert_eq!(s.completed_checkpoints().await.expect("lists"), vec![1]);
    assert_eq!(s.latest_checkpoint().await.expect("loads"), Some(good));
    assert_eq!(s.read(&a).await.expect("reads"), Bytes::from("state a of chk 1"));
}

#[tokio::test]
async fn retention_keeps_what_kept_checkpoints_reference_and_cleans_up_the_rest() {
    let (dir, s) = storage();
    let (a1, a1n) = put(&s, 1, "a").await;
    let (b1, b1n) = put(&s, 1, "b").await;
    s.complete_checkpoint(&checkpoint(1, vec![keyed(&a1, 0, 1, a1n), keyed(&b1, 2, 3, b1n)]))
        .await
        .expect("chk 1");
    // Checkpoint 2 is incremental: key groups 0-1 did not change, so it reuses chk 1's file.
    let (b2, b2n) = put(&s, 2, "b").await;
    s.complete_checkpoint(&checkpoint(2, vec![keyed(&a1, 0, 1, a1n), keyed(&b2, 2, 3, b2n)]))
        .await
        .expect("chk 2");
    // Checkpoint 3 failed: its file was written, its metadata never was.
    put(&s, 3, "c").await;
    let (d4, d4n) = put(&s, 4, "d").await;
    s.complete_checkpoint(&checkpoint(4, vec![keyed(&a1, 0, 1, a1n), keyed(&d4, 2, 3, d4n)]))
        .await
        .expect("chk 4");
    // Checkpoint 5 is in progress.
    let (e5, _) = put(&s, 5, "e").await;

    let retention = s.retain(2).await.expect("retention runs");
    assert_eq!(retention.removed_checkpoints, vec![1]);
    assert_eq!(s.completed_checkpoints().await.expect("lists"), vec![2, 4]);
    // chk-1/_metadata, chk 1's b (unreferenced) and chk 3's c (failed).
    assert_eq!(retention.removed_objects, 3);
    let exists = |rel: &str| dir.path().join("job").join(rel).exists();
    assert!(exists(&a1), "still referenced by checkpoints 2 and 4");
    assert!(!exists(&b1), "referenced by nothing kept");
    assert!(!exists("shared/chk-3/s1.agg/acc/c"), "a failed checkpoint's file");
    assert!(exists(&b2) && exists(&d4));
    assert!(exists(&e5), "a checkpoint in progress keeps its files");
    for id in [2, 4] {
        s.load_checkpoint(id).await.expect("kept checkpoints still load");
    }
    assert_eq!(s.retain(2).await.expect("idempotent"), Default::default());
}

#[tokio::test]
async fn a_savepoint_is_self_contained_and_never_overwritten() {
    let (dir, s) = storage();
    let (a, an) = put(&s, 1, "a").await;
    let (b, bn) = put(&s, 1, "b").await;
    let chk = checkpoint(1, vec![keyed(&a, 0, 1, an), keyed(&b, 2, 3, bn)]);
    s.complete_checkpoint(&chk).await.expect("chk 1");

    let root = CheckpointStorage::open(&format!("file://{}", dir.path().display())).expect("opens");
    let target = root.child("savepoints/sp-1").expect("savepoint folder");
    let savepoint = s.write_savepoint(&chk, &target, 42).await.expect("savepoint written");
    assert_eq!(savepoint.kind, SnapshotKind::Savepoint);
    assert!(savepoint.files().all(|f| f.path.starts_with("state/s1.agg/acc/")));

    // Removing the job's checkpoints does not touch the savepoint.
    std::fs::remove_dir_all(dir.path().join("job")).expect("job storage removed");
    let reopened = root.child("savepoints/sp-1").expect("reopens");
    let loaded = reopened.load_savepoint().await.expect("loads on its own");
    assert_eq!(loaded, savepoint);
    let first = &loaded.files().next().expect("a file").path;
    assert_eq!(reopened.read(first).await.expect("reads"), Bytes::from("state a of chk 1"));

    let again = s.write_savepoint(&chk, &reopened, 43).await;
    assert!(again.expect_err("refused").to_string().contains("never overwritten"));

    std::fs::remove_file(dir.path().join("savepoints/sp-1").join(first)).expect("file removed");
    assert!(matches!(reopened.load_savepoint().await, Err(CheckpointError::BrokenReference { .. })));
}

#[tokio::test]
async fn disposing_of_a_job_root_removes_its_checkpoints_and_savepoints_and_nothing_beside_it() {
    let (dir, s) = storage();
    let (a, an) = put(&s, 1, "a").await;
    let chk = checkpoint(1, vec![keyed(&a, 0, 3, an)]);
    s.complete_checkpoint(&chk).await.expect("chk 1");
    let savepoints = s.child("savepoints/sp-1").expect("savepoint folder");
    s.write_savepoint(&chk, &savepoints, 7).await.expect("savepoint written");
    let neighbour =
        CheckpointStorage::open(&format!("file://{}/other-job", dir.path().display())).expect("opens");
    let (b, bn) = put(&neighbour, 1, "b").await;
    neighbour.complete_checkpoint(&checkpoint(1, vec![keyed(&b, 0, 3, bn)])).await.expect("other chk 1");

    let deleted = s.dispose().await.expect("disposed");
    assert_eq!(deleted, 4, "chk-1/_metadata, its state file, the savepoint's _metadata and state file");
    assert!(!dir.path().join("job").exists(), "the emptied folder is gone");
    assert_eq!(
        neighbour.completed_checkpoints().await.expect("lists"),
        vec![1],
        "the neighbour is untouched"
    );
    let again = CheckpointStorage::open(&format!("file://{}/job", dir.path().display())).expect("reopens");
    assert_eq!(again.dispose().await.expect("nothing left is fine"), 0);
}

#[tokio::test]
async fn malformed_or_misplaced_metadata_is_an_error_not_a_panic() {
    let (dir, s) = storage();
    std::fs::create_dir_all(dir.path().join("job/chk-7")).expect("folder");
    std::fs::write(dir.path().join("job/chk-7/_metadata"), b"\x00\x01garbage").expect("written");
    assert_eq!(s.completed_checkpoints().await.expect("lists"), vec![7]);
    let err = s.latest_checkpoint().await.expect_err("malformed");
    assert!(matches!(err, CheckpointError::MalformedMetadata { .. }), "{err:?}");
    assert!(err.to_string().contains("chk-7/_metadata is not valid checkpoint metadata"), "{err}");

    // A checkpoint's folder is not a savepoint.
    let (a, an) = put(&s, 8, "a").await;
    s.complete_checkpoint(&checkpoint(8, vec![keyed(&a, 0, 3, an)])).await.expect("chk 8");
    let as_savepoint = s.child("chk-8").expect("opens").load_savepoint().await.expect_err("wrong kind");
    assert!(as_savepoint.to_string().contains("not a Savepoint"), "{as_savepoint}");

    let nothing =
        s.child("savepoints/none").expect("opens").load_savepoint().await.expect_err("nothing there");
    assert!(matches!(nothing, CheckpointError::NotFound(_)), "{nothing:?}");
}

#[test]
fn unsupported_storage_urls_are_refused_with_the_reason() {
    let no_bucket = CheckpointStorage::open("s3:///prefix").expect_err("no bucket");
    assert!(no_bucket.to_string().contains("no bucket"), "{no_bucket}");
    assert!(CheckpointStorage::open("hdfs://nn/x").is_err());
    assert!(CheckpointStorage::open("relative/dir").is_err());
}
