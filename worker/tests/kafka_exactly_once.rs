//! Exactly-once end to end on the local platform's Kafka, with faults: a keyed event-time
//! window aggregate reads a 4-partition topic (produced while the job runs) and writes an
//! exactly-once Kafka sink; `millrace-worker run` (parallelism 2, checkpoints every 300 ms)
//! is killed with SIGKILL at random moments five times, and once aborts itself between a
//! checkpoint's completion and its commit; each time it is restarted on the same checkpoint
//! folder. The `read_committed` output must equal the expected windows exactly: nothing
//! lost, nothing twice. And a savepoint asked for over the job's HTTP API stops the job; a
//! run at parallelism 4 resumes from it, with the same exactly-once output. Gated by the `platform` feature; fails (never skips) without Kafka.
#![cfg(feature = "platform")]

#[path = "support/kafka.rs"]
mod kafka_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kafka_support::{DEADLINE, RunningJob, bootstrap, create_topics, produce, unique};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

const PARTITIONS: i32 = 4;
const PER_PARTITION: i64 = 1500;
const KEYS: i64 = 7;
/// Event time of record `i` of a partition: 20 ms apart, so a 1 s window holds 50 of them.
const STEP_MS: i64 = 20;
/// Event time of the first record: the test's start, to the second. Record timestamps must be
/// recent: the broker deletes segments older than its retention (7 days) at any moment,
/// which a fixed date in the past would make this test's input.
fn base_ms() -> i64 {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        now - now.rem_euclid(1000)
    })
}

fn job_sql(input: &str, output: &str, prefix: &str) -> String {
    format!(
        "CREATE TABLE clicks (
           k BIGINT,
           v BIGINT,
           ts TIMESTAMP(3) METADATA FROM 'timestamp',
           WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
         ) WITH (connector = 'kafka', topic = '{input}', format = 'json', group_id = '{input}-job',
                 scan_startup_mode = 'earliest');
         CREATE TABLE totals (k BIGINT, window_start TIMESTAMP(3), n BIGINT, total BIGINT)
           WITH (connector = 'kafka', topic = '{output}', format = 'json',
                 'sink.delivery-guarantee' = 'exactly-once', 'sink.transactional-id-prefix' = '{prefix}');
         INSERT INTO totals
         SELECT k, tumble(ts, INTERVAL '1' SECOND) AS window_start, COUNT(*) AS n, SUM(v) AS total
         FROM clicks
         GROUP BY k, tumble(ts, INTERVAL '1' SECOND);"
    )
}

/// Record `i` of `partition`: (key, value, event time).
fn record(partition: i32, i: i64) -> (i64, i64, i64) {
    ((i * 3 + partition as i64) % KEYS, i * 10 + partition as i64, base_ms() + i * STEP_MS)
}

/// The windows the input must produce: (k, window start ms) → (count, sum).
fn expected() -> BTreeMap<(i64, i64), (i64, i64)> {
    let mut windows = BTreeMap::new();
    for p in 0..PARTITIONS {
        for i in 0..PER_PARTITION {
            let (k, v, ts) = record(p, i);
            let entry = windows.entry((k, ts - ts.rem_euclid(1000))).or_insert((0, 0));
            entry.0 += 1;
            entry.1 += v;
        }
    }
    windows
}

/// Produces the input in event-time order across partitions, paced so the job is still
/// reading while it is killed; then one record per partition far ahead (key -1), so that
/// the watermark passes every real window.
fn produce_input(topic: String) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let chunk = 50;
        for start in (0..PER_PARTITION).step_by(chunk) {
            let mut records = Vec::new();
            for i in start..(start + chunk as i64).min(PER_PARTITION) {
                for p in 0..PARTITIONS {
                    let (k, v, ts) = record(p, i);
                    records.push((p, Some(ts), format!(r#"{{"k": {k}, "v": {v}}}"#)));
                }
            }
            produce(&topic, &records);
            // Pacing of the input, not a wait for a condition: ~15 s of input in all.
            std::thread::sleep(Duration::from_millis(500));
        }
        let flush: Vec<_> = (0..PARTITIONS)
            .map(|p| {
                (p, Some(base_ms() + (PER_PARTITION + 500) * STEP_MS), r#"{"k": -1, "v": 0}"#.to_string())
            })
            .collect();
        produce(&topic, &flush);
    })
}

/// A `read_committed` reader of the whole output topic.
struct CommittedReader {
    consumer: BaseConsumer,
    topic: String,
    rows: Vec<serde_json::Value>,
}

impl CommittedReader {
    fn new(topic: &str) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("group.id", unique("eos-reader"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .expect("consumer");
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(topic, 0, Offset::Beginning).expect("assignment");
        consumer.assign(&assignment).expect("assign");
        Self { consumer, topic: topic.to_owned(), rows: Vec::new() }
    }

    /// Reads what is committed now.
    fn poll(&mut self) {
        while let Some(message) = self.consumer.poll(Duration::from_millis(200)) {
            let message = message.expect("read");
            let value = message.payload().expect("a window row has a value");
            self.rows.push(serde_json::from_slice(value).expect("JSON rows"));
        }
    }

    /// Reads until the position reaches the end of the log (every transaction decided).
    fn read_to_end(&mut self) {
        let started = Instant::now();
        loop {
            self.poll();
            let (_, high) =
                self.consumer.fetch_watermarks(&self.topic, 0, Duration::from_secs(5)).expect("watermarks");
            let position = self
                .consumer
                .position()
                .ok()
                .and_then(|p| p.find_partition(&self.topic, 0).map(|e| e.offset()))
                .and_then(|o| o.to_raw())
                .unwrap_or(0);
            if position >= high {
                return;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "the output did not settle: position {position}, end {high}"
            );
        }
    }

    /// The real windows read so far: (k, window start ms) → every (count, sum) seen.
    fn windows(&self) -> BTreeMap<(i64, i64), Vec<(i64, i64)>> {
        let mut windows: BTreeMap<(i64, i64), Vec<(i64, i64)>> = BTreeMap::new();
        for row in &self.rows {
            let k = row["k"].as_i64().expect("k");
            if k < 0 {
                continue;
            }
            let start = row["window_start"].as_str().expect("window_start");
            let start = chrono_ms(start);
            windows
                .entry((k, start))
                .or_default()
                .push((row["n"].as_i64().expect("n"), row["total"].as_i64().expect("total")));
        }
        windows
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.mmm]` (UTC) as ms since the epoch.
fn chrono_ms(text: &str) -> i64 {
    let (date, time) = text.split_once('T').expect("a timestamp");
    let d: Vec<i64> = date.split('-').map(|x| x.parse().expect("date")).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().expect("time")).collect();
    let ms: i64 = format!("{frac:0<3}")[..3].parse().expect("millis");
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 { (d[0] - 1, d[1] + 9) } else { (d[0], d[1] - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + t[0]) * 60 + t[1]) * 60_000 + t[2] * 1000 + ms
}

fn last_checkpoint(job: &RunningJob) -> i64 {
    job.metrics()
        .lines()
        .find_map(|l| l.strip_prefix("millrace_worker_last_checkpoint_id "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as i64)
}

/// A small deterministic generator for kill moments (the seed is printed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
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
