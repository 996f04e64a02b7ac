//! What the exactly-once tests share (kafka_exactly_once.rs, roles.rs): the keyed window
//! job over a 4-partition topic, its input (produced paced while the job runs, with recent
//! timestamps), the windows it must produce, and a `read_committed` reader of the output.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::kafka_support::{DEADLINE, bootstrap, produce, unique};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

pub const PARTITIONS: i32 = 4;
pub const PER_PARTITION: i64 = 1500;
pub const KEYS: i64 = 7;
/// Event time of record `i` of a partition: 20 ms apart, so a 1 s window holds 50 of them.
pub const STEP_MS: i64 = 20;
/// Event time of the first record: the test's start, to the second. Record timestamps must be
/// recent: the broker deletes segments older than its retention (7 days) at any moment,
/// which a fixed date in the past would make this test's input.
pub fn base_ms() -> i64 {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        now - now.rem_euclid(1000)
    })
}

pub fn job_sql(input: &str, output: &str, prefix: &str) -> String {
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
pub fn record(partition: i32, i: i64) -> (i64, i64, i64) {
    ((i * 3 + partition as i64) % KEYS, i * 10 + partition as i64, base_ms() + i * STEP_MS)
}

/// The windows the input must produce: (k, window start ms) → (count, sum).
pub fn expected() -> BTreeMap<(i64, i64), (i64, i64)> {
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
pub fn produce_input(topic: String) -> std::thread::JoinHandle<()> {
    produce_input_paced(topic, Duration::from_millis(500))
}

/// [`produce_input`] with `pause` between chunks of 50 records per partition (30 chunks).
pub fn produce_input_paced(topic: String, pause: Duration) -> std::thread::JoinHandle<()> {
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
            // Pacing of the input, not a wait for a condition: 30 pauses in all.
            std::thread::sleep(pause);
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
pub struct CommittedReader {
    consumer: BaseConsumer,
    topic: String,
    rows: Vec<serde_json::Value>,
}

impl CommittedReader {
    pub fn new(topic: &str) -> Self {
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
    pub fn poll(&mut self) {
        while let Some(message) = self.consumer.poll(Duration::from_millis(200)) {
            let message = message.expect("read");
            let value = message.payload().expect("a window row has a value");
            self.rows.push(serde_json::from_slice(value).expect("JSON rows"));
        }
    }

    /// Reads until the position reaches the end of the log (every transaction decided).
    pub fn read_to_end(&mut self) {
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
    pub fn windows(&self) -> BTreeMap<(i64, i64), Vec<(i64, i64)>> {
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
pub fn chrono_ms(text: &str) -> i64 {
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

/// A small deterministic generator for kill moments (the seed is printed).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}
