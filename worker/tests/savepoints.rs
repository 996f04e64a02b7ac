//! Savepoints through the job's control handle, in one process: stop with a savepoint and
//! resume from it at another parallelism (2 → 4, 4 → 1) with output identical to an
//! uninterrupted run; a changed plan is refused, naming the state that no longer maps,
//! unless non-restored state is allowed; malformed metadata and state files are errors.

use std::path::Path;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use millrace_connectors::{Format, MemoryRecord, MemorySink, SinkConnector, SourceConnector, StopSignal};
use millrace_worker::{CheckpointSettings, Job, JobControl, JobMetrics, JobOptions, JobOverrides};
use prometheus_client::registry::Registry;

const KEYED_WINDOWS: &str = "
CREATE TABLE clicks (k BIGINT, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
  WITH (connector = 'kafka', topic = 'clicks', format = 'json');
CREATE TABLE totals (k BIGINT, n BIGINT, total BIGINT, window_start TIMESTAMP(3))
  WITH (connector = 'kafka', topic = 'totals', format = 'json');
INSERT INTO totals
SELECT k, COUNT(*) AS n, SUM(v) AS total, tumble(ts, INTERVAL '2' SECOND) AS window_start
FROM clicks
GROUP BY k, tumble(ts, INTERVAL '2' SECOND);
";

/// The same job with another aggregate: its window operator's state no longer maps.
const CHANGED_AGGREGATE: &str = "
CREATE TABLE clicks (k BIGINT, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
  WITH (connector = 'kafka', topic = 'clicks', format = 'json');
CREATE TABLE totals (k BIGINT, n BIGINT, total BIGINT, window_start TIMESTAMP(3))
  WITH (connector = 'kafka', topic = 'totals', format = 'json');
INSERT INTO totals
SELECT k, COUNT(*) AS n, MAX(v) AS total, tumble(ts, INTERVAL '2' SECOND) AS window_start
FROM clicks
GROUP BY k, tumble(ts, INTERVAL '2' SECOND);
";

/// 4 partitions of keyed records in event-time order per partition.
fn input() -> Vec<MemoryRecord> {
    (0..400i64)
        .map(|i| MemoryRecord {
            partition: (i % 4) as i32,
            timestamp_ms: None,
            value: Some(
                format!(r#"{{"k": {}, "v": {}, "ts": "{}"}}"#, (i * 7) % 13, i, timestamp(i * 100))
                    .into_bytes(),
            ),
        })
        .collect()
}

/// `ms` since the epoch as the JSON decoder's timestamp text.
fn timestamp(ms: i64) -> String {
    format!("1970-01-01T{:02}:{:02}:{:02}.{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

fn rows(batches: &[RecordBatch]) -> Vec<(i64, i64, i64)> {
    let mut rows: Vec<(i64, i64, i64)> = batches
        .iter()
        .flat_map(|b| {
            let (k, n, t) = (
                b.column(0).as_primitive::<Int64Type>().clone(),
                b.column(1).as_primitive::<Int64Type>().clone(),
                b.column(2).as_primitive::<Int64Type>().clone(),
            );
            (0..b.num_rows()).map(move |i| (k.value(i), n.value(i), t.value(i))).collect::<Vec<_>>()
        })
        .collect();
    rows.sort_unstable();
    rows
}

struct Run {
    options: JobOptions,
    sink: MemorySink,
    job: Job,
}

fn prepare(
    sql: &str,
    parallelism: usize,
    checkpoints: Option<String>,
    restore_from: Option<String>,
    rate: Option<f64>,
) -> Run {
    // Two-phase commit needs checkpoints; the reference run writes directly.
    let sink = if checkpoints.is_some() { MemorySink::transactional() } else { MemorySink::default() };
    let mut overrides = JobOverrides::default();
    let source = match rate {
        Some(rate) => SourceConnector::paced_memory(input(), Format::Json, 5, rate),
        None => SourceConnector::memory(input(), Format::Json, 5),
    };
    overrides.sources.insert("clicks".into(), source);
    overrides.sinks.insert("totals".into(), SinkConnector::memory(sink.clone()));
    let options = JobOptions {
        parallelism,
        slots: parallelism,
        checkpointing: checkpoints.map(|storage_url| CheckpointSettings {
            storage_url,
            interval: Duration::from_millis(100),
            retained: 2,
            timeout: Duration::from_secs(20),
            crash_after_checkpoint: None,
        }),
        restore_from,
        ..JobOptions::default()
    };
    let job = Job::prepare(sql, &options, overrides).expect("the job plans");
    Run { options, sink, job }
}

/// Runs until the input ends (no checkpoints: the reference output).
async fn uninterrupted(parallelism: usize) -> Vec<(i64, i64, i64)> {
    let run = prepare(KEYED_WINDOWS, parallelism, None, None, None);
    let metrics = JobMetrics::register(&mut Registry::default());
    run.job.run(&run.options, &metrics, &StopSignal::default()).await.expect("the job runs");
    rows(&MemorySink::batches(&run.sink))
}

/// Runs paced, takes a savepoint with stop once a checkpoint has completed, and returns
/// the committed rows and the savepoint's location.
async fn stop_with_savepoint(
    sql: &str,
    parallelism: usize,
    dir: String,
    target: String,
) -> (Vec<(i64, i64, i64)>, String) {
    let run = prepare(sql, parallelism, Some(dir), None, Some(50.0));
    let metrics = JobMetrics::register(&mut Registry::default());
    let control = JobControl::new(StopSignal::default(), None);
    let trigger = async {
        let deadline = Instant::now() + Duration::from_secs(20);
        while control.status.get().last_checkpoint_id.is_none() {
            assert!(Instant::now() < deadline, "no checkpoint within 20 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let request =
            control.request_savepoint(Some(target.clone()), true).expect("the savepoint request is accepted");
        loop {
            let status = control.savepoint(request.id).expect("the request is known");
            if let Some(location) = status.location {
                return location;
            }
            assert!(status.error.is_none(), "savepoint failed: {status:?}");
            assert!(Instant::now() < deadline, "the savepoint did not complete within 20 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let (ran, location) = tokio::join!(run.job.run_with_control(&run.options, &metrics, &control), trigger);
    ran.expect("the job stops cleanly at its savepoint");
    (rows(&run.sink.batches()), location)
}

/// A fresh folder URL under a temp dir (kept alive by the returned guard).
fn file_root() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("file://{}", dir.path().display());
    (dir, url)
}

async fn rescale(from: usize, to: usize, root: &str) {
    if std::env::var("RUST_LOG").is_ok() {
        millrace_telemetry::init_tracing("info");
    }
    let expected = uninterrupted(from).await;
    assert!(!expected.is_empty());
    let (mut before, savepoint) =
        stop_with_savepoint(KEYED_WINDOWS, from, format!("{root}/chk-a"), format!("{root}/sp")).await;
    assert!(before.len() < expected.len(), "the first run must stop before its input ends");
    let resumed = prepare(KEYED_WINDOWS, to, Some(format!("{root}/chk-b")), Some(savepoint), None);
    let metrics = JobMetrics::register(&mut Registry::default());
    resumed.job.run(&resumed.options, &metrics, &StopSignal::default()).await.expect("the job resumes");
    before.extend(rows(&resumed.sink.batches()));
    before.sort_unstable();
    assert_eq!(before, expected, "stop at a savepoint + resume at {to} differs from an uninterrupted run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_savepoint_taken_at_parallelism_2_resumes_at_4_with_identical_output() {
    let (_dir, root) = file_root();
    rescale(2, 4, &root).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_savepoint_taken_at_parallelism_4_resumes_at_1_with_identical_output() {
    let (_dir, root) = file_root();
    rescale(4, 1, &root).await;
}

/// Checkpoints and the savepoint on the local platform's S3-compatible endpoint.
#[cfg(feature = "platform")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_s3_a_savepoint_taken_at_parallelism_2_resumes_at_3_with_identical_output() {
    let bucket = std::env::var("MILLRACE_S3_BUCKET")
        .expect("MILLRACE_S3_BUCKET is not set: this test needs the local platform's S3 endpoint (make up)");
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    rescale(2, 3, &format!("s3://{bucket}/savepoint-test-{nanos}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_changed_plan_is_refused_naming_the_unmapped_state_unless_allowed() {
    let (_dir, root) = file_root();
    let (_, savepoint) =
        stop_with_savepoint(KEYED_WINDOWS, 2, format!("{root}/chk-a"), format!("{root}/sp")).await;
    let changed = prepare(CHANGED_AGGREGATE, 2, Some(format!("{root}/chk-b")), Some(savepoint.clone()), None);
    let metrics = JobMetrics::register(&mut Registry::default());
    let refused = changed.job.run(&changed.options, &metrics, &StopSignal::default()).await;
    let message = refused.expect_err("the changed plan is refused").to_string();
    assert!(message.contains("does not map") && message.contains("window_aggregate"), "{message}");

    let mut allowed = prepare(CHANGED_AGGREGATE, 2, Some(format!("{root}/chk-c")), Some(savepoint), None);
    allowed.options.allow_non_restored_state = true;
    allowed.job.run(&allowed.options, &metrics, &StopSignal::default()).await.expect("allowed to drop state");
    assert!(!allowed.sink.batches().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_metadata_and_state_files_are_errors_not_panics() {
    let (dir, root) = file_root();
    // Garbage metadata.
    let garbage = dir.path().join("garbage");
    std::fs::create_dir_all(&garbage).expect("mkdir");
    std::fs::write(garbage.join("_metadata"), b"{ not json").expect("write");
    let run = prepare(
        KEYED_WINDOWS,
        1,
        Some(format!("{root}/chk-a")),
        Some(format!("file://{}", garbage.display())),
        None,
    );
    let metrics = JobMetrics::register(&mut Registry::default());
    let err =
        run.job.run(&run.options, &metrics, &StopSignal::default()).await.expect_err("garbage is refused");
    assert!(err.to_string().contains("not JSON"), "{err}");

    // A good savepoint whose state file is then cut short.
    let (_, savepoint) =
        stop_with_savepoint(KEYED_WINDOWS, 2, format!("{root}/chk-b"), format!("{root}/sp")).await;
    let state =
        walk(&dir.path().join("sp")).into_iter().find(|p| p.extension().is_some_and(|e| e == "arrow"));
    let state = state.expect("the savepoint holds window state");
    let bytes = std::fs::read(&state).expect("read");
    std::fs::write(&state, &bytes[..bytes.len() / 2]).expect("truncate");
    let run = prepare(KEYED_WINDOWS, 2, Some(format!("{root}/chk-c")), Some(savepoint), None);
    let err =
        run.job.run(&run.options, &metrics, &StopSignal::default()).await.expect_err("a cut file is refused");
    assert!(err.to_string().contains("bytes") || err.to_string().contains("Arrow"), "{err}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
