//! Incremental checkpoints, in one process: a keyed updating aggregate over 20,000 keys whose
//! later rows touch only 3 keys writes, at each checkpoint after the keys are in, a small
//! fraction of the state it references; a later checkpoint references files of checkpoints
//! retention has already removed (retained 2), and those files are still there; a stop at
//! such a checkpoint and a restore at another parallelism gives the uninterrupted run's
//! table; and a savepoint taken after incremental checkpoints restores with the checkpoint
//! folder deleted.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use golden_case::{rows_as_json, upserted_table};
use millrace_checkpoint::CheckpointStorage;
use millrace_connectors::{Format, MemoryRecord, MemorySink, SinkConnector, SourceConnector, StopSignal};
use millrace_worker::{CheckpointSettings, Job, JobControl, JobMetrics, JobOptions, JobOverrides};
use prometheus_client::registry::Registry;
use serde_json::Value;

#[path = "support/golden_case.rs"]
mod golden_case;

const TOTALS: &str = "
CREATE TABLE clicks (k BIGINT, v BIGINT) WITH (connector = 'kafka', topic = 'clicks', format = 'json');
CREATE TABLE totals (k BIGINT, n BIGINT, total BIGINT, PRIMARY KEY (k) NOT ENFORCED)
  WITH (connector = 'upsert-kafka', topic = 'totals', format = 'json');
INSERT INTO totals SELECT k, COUNT(*) AS n, SUM(v) AS total FROM clicks GROUP BY k;
";

const KEYS: i64 = 20_000;
const HOT_KEYS: i64 = 3;
const HOT_ROWS: i64 = 100_000;
/// At most: the keys are in after a second and the hot rows take 5 s more (a debug build on
/// a busy machine reads slower, which only makes the hot phase longer).
const RATE: f64 = 20_000.0;

/// Every key once, then rows on 5 keys only.
fn input() -> Vec<MemoryRecord> {
    (0..KEYS + HOT_ROWS)
        .map(|i| {
            let k = if i < KEYS { i } else { i % HOT_KEYS };
            MemoryRecord {
                partition: (i % 4) as i32,
                timestamp_ms: None,
                value: Some(format!(r#"{{"k": {k}, "v": {i}}}"#).into_bytes()),
            }
        })
        .collect()
}

/// The records the job's sources decoded (every instance's `source_records_total`).
fn records_read(registry: &Registry) -> u64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("metrics encode");
    let total = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next().is_some_and(|name| name.ends_with("source_records_total")))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum::<f64>();
    total as u64
}

struct Run {
    options: JobOptions,
    sink: MemorySink,
    job: Job,
}

fn prepare(parallelism: usize, checkpoints: Option<&Path>, restore_from: Option<String>, paced: bool) -> Run {
    let sink = if checkpoints.is_some() { MemorySink::transactional() } else { MemorySink::default() };
    let mut overrides = JobOverrides::default();
    let source = if paced {
        SourceConnector::paced_memory(input(), Format::Json, 500, RATE)
    } else {
        SourceConnector::memory(input(), Format::Json, 500)
    };
    overrides.sources.insert("clicks".into(), source);
    overrides.sinks.insert("totals".into(), SinkConnector::memory(sink.clone()));
    let options = JobOptions {
        parallelism,
        slots: parallelism,
        checkpointing: checkpoints.map(|dir| CheckpointSettings {
            storage_url: format!("file://{}", dir.display()),
            interval: Duration::from_millis(50),
            retained: 2,
            timeout: Duration::from_secs(20),
            crash_after_checkpoint: None,
        }),
        restore_from,
        ..JobOptions::default()
    };
    let job = Job::prepare(TOTALS, &options, overrides).expect("the job plans");
    Run { options, sink, job }
}

fn table(sink: &MemorySink) -> Vec<Value> {
    upserted_table(&rows_as_json(&sink.batches()), &["k".to_string()])
}

/// What each completed checkpoint referenced and wrote, by id.
type Sizes = BTreeMap<u64, (u64, u64)>;

/// How the paced run ends once enough incremental checkpoints completed.
enum End {
    Stop,
    Savepoint(String),
}

/// Runs paced with checkpoints until the keys are in and 3 more checkpoints completed after
/// that, then ends as `end` says. Returns the committed table, the checkpoint sizes seen,
/// and the first checkpoint id taken after all keys were read.
async fn run_until_incremental(parallelism: usize, dir: &Path, end: End) -> (Vec<Value>, Sizes, u64) {
    let run = prepare(parallelism, Some(dir), None, true);
    let mut registry = Registry::default();
    let metrics = JobMetrics::register(&mut registry);
    let stop = StopSignal::default();
    let control = JobControl::new(stop.clone(), None);
    let watch = async {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut sizes = Sizes::new();
        let mut after_keys: Option<u64> = None;
        loop {
            assert!(Instant::now() < deadline, "not enough checkpoints within 120 s: {sizes:?}");
            let status = control.status.get();
            if let (Some(id), Some(bytes), Some(written)) = (
                status.last_checkpoint_id,
                status.last_checkpoint_bytes,
                status.last_checkpoint_bytes_written,
            ) {
                sizes.insert(id, (bytes, written));
                // The keys are in once they were all read and the state stopped growing:
                // from then on only the hot keys change.
                let same_as_before = id > 1 && sizes.get(&(id - 1)).is_some_and(|(b, _)| *b == bytes);
                if after_keys.is_none() && same_as_before && records_read(&registry) >= KEYS as u64 {
                    after_keys = Some(id);
                }
                if after_keys.is_some_and(|first| id >= first + 3) {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let savepoint = match end {
            End::Stop => {
                stop.stop();
                None
            }
            End::Savepoint(target) => {
                let request =
                    control.request_savepoint(Some(target), true).expect("the savepoint is accepted");
                // The savepoint has its own deadline: the wait for the checkpoints above may
                // have used most of theirs on a loaded machine.
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    let status = control.savepoint(request.id).expect("the request is known");
                    if let Some(location) = status.location {
                        break Some(location);
                    }
                    assert!(status.error.is_none(), "savepoint failed: {status:?}");
                    assert!(Instant::now() < deadline, "the savepoint did not complete");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        (sizes, after_keys.unwrap_or_default(), savepoint)
    };
    let (ran, (sizes, after_keys, _)) =
        tokio::join!(run.job.run_with_control(&run.options, &metrics, &control), watch);
    ran.expect("the job stops at its checkpoint");
    assert!(
        records_read(&registry) < (KEYS + HOT_ROWS) as u64,
        "the paced run read all its input before it stopped; the test proves nothing"
    );
    (table(&run.sink), sizes, after_keys)
}

/// Checkpoints after the keys are in write a small part of what they reference.
fn assert_incremental(sizes: &Sizes, after_keys: u64) {
    let (first_bytes, first_written) = sizes.values().next().copied().unwrap_or_default();
    assert_eq!(first_bytes, first_written, "the first checkpoint writes everything it references");
    let later: Vec<_> = sizes.range(after_keys..).collect();
    assert!(later.len() >= 3, "expected 3 checkpoints after the keys: {sizes:?}");
    for (id, (bytes, written)) in later {
        assert!(*bytes > 200_000, "checkpoint {id} references the state of 20,000 keys: {bytes} bytes");
        assert!(
            *written * 5 < *bytes,
            "checkpoint {id} wrote {written} of {bytes} bytes; 3 hot keys touch at most 3 of the 32 chunks"
        );
    }
}

async fn uninterrupted() -> Vec<Value> {
    let run = prepare(1, None, None, false);
    let metrics = JobMetrics::register(&mut Registry::default());
    run.job.run(&run.options, &metrics, &StopSignal::default()).await.expect("the job runs");
    table(&run.sink)
}

/// Merges the committed tables of a stopped and a resumed run (later rows win by key).
fn merged(before: Vec<Value>, after: Vec<Value>) -> Vec<Value> {
    let mut by_key: BTreeMap<String, Value> = BTreeMap::new();
    for row in before.into_iter().chain(after) {
        by_key.insert(row["k"].to_string(), row);
    }
    let mut rows: Vec<Value> = by_key.into_values().collect();
    rows.sort_by_key(Value::to_string);
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_incremental_checkpoint_writes_little_and_restores_at_another_parallelism() {
    if std::env::var("RUST_LOG").is_ok() {
        millrace_telemetry::init_tracing("info");
    }
    let expected = uninterrupted().await;
    assert_eq!(expected.len(), KEYS as usize);
    let dir = tempfile::tempdir().expect("temp dir");
    let (before, sizes, after_keys) = run_until_incremental(2, dir.path(), End::Stop).await;
    assert_incremental(&sizes, after_keys);

    // Retention kept 2 checkpoints; the newest still references files of older ones, which
    // are there.
    let storage = CheckpointStorage::open(&format!("file://{}", dir.path().display())).expect("opens");
    let kept = storage.completed_checkpoints().await.expect("lists");
    assert_eq!(kept.len(), 2, "{kept:?}");
    let latest = storage.load_checkpoint(kept[1]).await.expect("loads");
    let older: Vec<&str> = latest
        .files()
        .map(|f| f.path.as_str())
        .filter(|p| {
            let owner = p.split('/').nth(1).and_then(|c| c.strip_prefix("chk-")?.parse::<u64>().ok());
            owner.is_some_and(|id| id < kept[0])
        })
        .collect();
    assert!(!older.is_empty(), "checkpoint {} references no file older than checkpoint {}", kept[1], kept[0]);
    for path in older {
        assert!(
            dir.path().join(path).exists(),
            "{path} was deleted while checkpoint {} references it",
            kept[1]
        );
    }

    // Restore at parallelism 1 from the incremental checkpoint, to the end of the input.
    let resumed = prepare(1, Some(dir.path()), None, false);
    let metrics = JobMetrics::register(&mut Registry::default());
    resumed.job.run(&resumed.options, &metrics, &StopSignal::default()).await.expect("the job resumes");
    assert!(
        merged(before, table(&resumed.sink)) == expected,
        "stop + restore 2 -> 1 differs from an uninterrupted run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_savepoint_after_incremental_checkpoints_restores_without_the_checkpoint_folder() {
    let expected = uninterrupted().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let checkpoints = dir.path().join("checkpoints");
    let target = format!("file://{}", dir.path().join("sp").display());
    let (before, sizes, after_keys) =
        run_until_incremental(1, &checkpoints, End::Savepoint(target.clone())).await;
    assert_incremental(&sizes, after_keys);
    std::fs::remove_dir_all(&checkpoints).expect("the checkpoint folder is removed");

    // Resume at parallelism 2 from the savepoint alone; its first checkpoints go to a new
    // folder.
    let resumed = prepare(2, Some(&dir.path().join("checkpoints-b")), Some(target), false);
    let metrics = JobMetrics::register(&mut Registry::default());
    resumed.job.run(&resumed.options, &metrics, &StopSignal::default()).await.expect("the job resumes");
    assert!(
        merged(before, table(&resumed.sink)) == expected,
        "savepoint + restore 1 -> 2 differs from an uninterrupted run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_restored_from_its_own_checkpoint_references_its_unchanged_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, _, _) = run_until_incremental(2, dir.path(), End::Stop).await;
    let storage = CheckpointStorage::open(&format!("file://{}", dir.path().display())).expect("opens");
    let restored = *storage.completed_checkpoints().await.expect("lists").last().expect("a checkpoint");
    // At parallelism 1 the chunk grid (4 key groups) still cuts where parallelism 2 did.
    let (_, sizes, _) = run_until_incremental(1, dir.path(), End::Stop).await;
    let (bytes, written) =
        sizes.range(restored + 1..).next().map(|(_, s)| *s).expect("a checkpoint after the restore");
    assert!(written * 5 < bytes, "the first checkpoint after the restore wrote {written} of {bytes} bytes");
}
