//! Exactly-once end to end on the local platform's Kafka, with faults: a keyed event-time
//! window aggregate reads a 4-partition topic (produced while the job runs) and writes an
//! exactly-once Kafka sink; `millrace-worker run` (parallelism 2, checkpoints every 300 ms)
//! is killed with SIGKILL at random moments five times, and once aborts itself between a
//! checkpoint's completion and its commit; each time it is restarted on the same checkpoint
//! folder. The `read_committed` output must equal the expected windows exactly: nothing
//! lost, nothing twice. And a savepoint asked for over the job's HTTP API stops the job; a
//! run at parallelism 4 resumes from it, with the same exactly-once output. Gated by the `platform` feature; fails (never skips) without Kafka.
#![cfg(feature = "platform")]

#[path = "support/exactly_once.rs"]
mod exactly_once;
#[path = "support/kafka.rs"]
mod kafka_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use exactly_once::{CommittedReader, Lcg, PARTITIONS, expected, job_sql, produce_input};
use kafka_support::{DEADLINE, RunningJob, create_topics, unique};

fn last_checkpoint(job: &RunningJob) -> i64 {
    job.metrics()
        .lines()
        .find_map(|l| l.strip_prefix("millrace_worker_last_checkpoint_id "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as i64)
}

#[test]
fn killed_five_times_and_crashed_before_a_commit_the_output_is_exactly_once() {
    let input = unique("eos-in");
    let output = unique("eos-out");
    create_topics(&[(&input, PARTITIONS), (&output, 1)]);
    let checkpoints = tempfile::tempdir().expect("tempdir");
    let checkpoint_dir = format!("file://{}", checkpoints.path().display());
    let sql = job_sql(&input, &output, &unique("eos-txn"));
    let args = ["--checkpoint-dir", checkpoint_dir.as_str(), "--checkpoint-interval", "300ms"];
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(7);
    eprintln!("kill schedule seed: {seed}");
    let mut random = Lcg(seed);
    let producer = produce_input(input.clone());

    for round in 0..5 {
        let mut job = RunningJob::start_with(&sql, 2, &args, &[]);
        // Kill once this run has completed a checkpoint of its own, at a random moment after.
        let started_at = last_checkpoint_after_start(&mut job);
        let deadline = Instant::now() + DEADLINE;
        while last_checkpoint(&job) <= started_at {
            job.assert_running();
            assert!(Instant::now() < deadline, "round {round}: no checkpoint\n{}", job.log());
            std::thread::park_timeout(Duration::from_millis(20));
        }
        // The moment of the kill, chosen at random (not a wait for anything).
        std::thread::sleep(Duration::from_millis(random.next(600)));
        job.kill();
        eprintln!("round {round}: killed; newest checkpoint on disk {}", latest_on_disk(checkpoints.path()));
    }

    // Crash between "checkpoint complete" and "commit done".
    {
        let crash_at = (latest_on_disk(checkpoints.path()) + 3).to_string();
        let mut job =
            RunningJob::start_with(&sql, 2, &args, &[("MILLRACE_FAULT_CRASH_AFTER_CHECKPOINT", &crash_at)]);
        let status = job.wait_exit();
        assert!(!status.success(), "the fault-injected run must abort itself");
        assert!(job.log().contains("fault injection"), "{}", job.log());
        eprintln!("aborted after completing checkpoint {crash_at}, before its commit");
    }

    producer.join().expect("the producer finishes");
    let expected = expected();
    let mut reader = CommittedReader::new(&output);
    let mut job = RunningJob::start_with(&sql, 2, &args, &[]);
    let deadline = Instant::now() + DEADLINE * 2;
    while reader.windows().len() < expected.len() {
        job.assert_running();
        assert!(
            Instant::now() < deadline,
            "only {} of {} windows arrived\n{}",
            reader.windows().len(),
            expected.len(),
            job.log()
        );
        reader.poll();
    }
    let status = job.terminate();
    assert!(status.success(), "a stop at a checkpoint exits cleanly\n{}", job.log());
    reader.read_to_end();

    let got = reader.windows();
    let duplicated: Vec<_> = got.iter().filter(|(_, rows)| rows.len() > 1).collect();
    assert!(duplicated.is_empty(), "windows written more than once: {duplicated:?}");
    let got: BTreeMap<(i64, i64), (i64, i64)> = got.into_iter().map(|(w, rows)| (w, rows[0])).collect();
    let missing: Vec<_> = expected.keys().filter(|w| !got.contains_key(w)).collect();
    assert!(missing.is_empty(), "windows lost: {missing:?}");
    assert_eq!(got, expected, "window contents differ");
}

#[test]
fn a_savepoint_through_the_api_stops_the_job_and_it_resumes_at_parallelism_4_exactly_once() {
    let input = unique("sp-in");
    let output = unique("sp-out");
    create_topics(&[(&input, PARTITIONS), (&output, 1)]);
    let dir = tempfile::tempdir().expect("tempdir");
    let first = format!("file://{}/chk-a", dir.path().display());
    let second = format!("file://{}/chk-b", dir.path().display());
    let target = format!("file://{}/savepoint", dir.path().display());
    let sql = job_sql(&input, &output, &unique("sp-txn"));
    let producer = produce_input(input.clone());

    let mut job =
        RunningJob::start_with(&sql, 2, &["--checkpoint-dir", &first, "--checkpoint-interval", "300ms"], &[]);
    let started_at = last_checkpoint_after_start(&mut job);
    let deadline = Instant::now() + DEADLINE;
    while last_checkpoint(&job) <= started_at {
        job.assert_running();
        assert!(Instant::now() < deadline, "no checkpoint\n{}", job.log());
        std::thread::park_timeout(Duration::from_millis(20));
    }
    let (status, body) = job.http(
        "POST",
        "/v1/savepoints",
        Some(&format!(r#"{{"targetDirectory": "{target}", "stop": true}}"#)),
    );
    assert_eq!(status, 202, "{body}");
    let id =
        serde_json::from_str::<serde_json::Value>(&body).expect("JSON")["id"].as_u64().expect("request id");
    let location = loop {
        let (status, body) = job.http("GET", &format!("/v1/savepoints/{id}"), None);
        assert_eq!(status, 200, "{body}");
        let request: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        match request["status"].as_str() {
            Some("COMPLETED") => break request["location"].as_str().expect("location").to_owned(),
            Some("IN_PROGRESS") => {}
            other => panic!("savepoint {other:?}: {body}"),
        }
        assert!(Instant::now() < deadline, "the savepoint did not complete");
        std::thread::park_timeout(Duration::from_millis(20));
    };
    assert!(job.wait_exit().success(), "a stop with a savepoint exits cleanly\n{}", job.log());
    let mut resumed = RunningJob::start_with(
        &sql,
        4,
        &["--checkpoint-dir", &second, "--checkpoint-interval", "300ms", "--restore-from", &location],
        &[],
    );
    let _ = last_checkpoint_after_start(&mut resumed);
    // A bad request names the field at fault.
    let (status, body) =
        resumed.http("POST", "/v1/savepoints", Some(r#"{"targetDirectory": "relative/path"}"#));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("targetDirectory"), "{body}");

    producer.join().expect("the producer finishes");
    let expected = expected();
    let mut reader = CommittedReader::new(&output);
    let deadline = Instant::now() + DEADLINE * 2;
    while reader.windows().len() < expected.len() {
        resumed.assert_running();
        assert!(
            Instant::now() < deadline,
            "only {} of {} windows\n{}",
            reader.windows().len(),
            expected.len(),
            resumed.log()
        );
        reader.poll();
    }
    assert!(resumed.terminate().success(), "{}", resumed.log());
    reader.read_to_end();
    let got = reader.windows();
    assert!(got.values().all(|rows| rows.len() == 1), "a window was written twice");
    let got: BTreeMap<(i64, i64), (i64, i64)> = got.into_iter().map(|(w, rows)| (w, rows[0])).collect();
    assert_eq!(got, expected, "stop with savepoint at 2 + resume at 4 differs from the expected windows");
}

/// The newest completed checkpoint in the folder (its `chk-N/_metadata`).
fn latest_on_disk(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("checkpoint folder")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("_metadata").exists())
        .filter_map(|e| {
            e.file_name().to_str().and_then(|n| n.strip_prefix("chk-")).and_then(|n| n.parse().ok())
        })
        .max()
        .unwrap_or(0)
}

/// The last completed checkpoint id once the job serves metrics (0 before any).
fn last_checkpoint_after_start(job: &mut RunningJob) -> i64 {
    let body = job.wait_for_metric("the job's metrics", |m| m.contains("millrace_worker_last_checkpoint_id"));
    body.lines()
        .find_map(|l| l.strip_prefix("millrace_worker_last_checkpoint_id "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as i64)
}
