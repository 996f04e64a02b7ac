//! An orders/payments interval join end to end on the local platform's Kafka, exactly once
//! through worker kills: `millrace-worker run` (parallelism 2, checkpoints every 300 ms)
//! reads two 2-partition topics produced while it runs, joins each payment with its order
//! when it came within 5 s after it, and writes an exactly-once Kafka sink. It is killed with
//! SIGKILL at random moments three times and restarted on the same checkpoint folder, so
//! orders held in the join's state at a checkpoint must meet payments read after the
//! restore, and each source must resume from its own positions. The `read_committed` output
//! must hold every expected pair exactly once. Gated by the `platform` feature; fails (never
//! skips) without Kafka. Also: a temporal join (`FOR SYSTEM_TIME AS OF`) of sales with a
//! rates topic, killed twice: every sale priced exactly once, at the rate valid at its time.
#![cfg(feature = "platform")]

#[path = "support/kafka.rs"]
mod kafka_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kafka_support::{DEADLINE, RunningJob, bootstrap, create_topics, now_ms, produce, unique};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

const PARTITIONS: i32 = 2;
const ORDERS: i64 = 1200;
/// Event time of order `i`: 20 ms apart.
const STEP_MS: i64 = 20;

fn job_sql(orders: &str, payments: &str, output: &str, prefix: &str) -> String {
    format!(
        "CREATE TABLE orders (
           id BIGINT, amount BIGINT,
           ts TIMESTAMP(3) METADATA FROM 'timestamp',
           WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
         ) WITH (connector = 'kafka', topic = '{orders}', format = 'json', group_id = '{orders}-job',
                 scan_startup_mode = 'earliest');
         CREATE TABLE payments (
           order_id BIGINT, paid BIGINT,
           pts TIMESTAMP(3) METADATA FROM 'timestamp',
           WATERMARK FOR pts AS pts - INTERVAL '1' SECOND
         ) WITH (connector = 'kafka', topic = '{payments}', format = 'json', group_id = '{payments}-job',
                 scan_startup_mode = 'earliest');
         CREATE TABLE paid (id BIGINT, amount BIGINT, paid BIGINT)
           WITH (connector = 'kafka', topic = '{output}', format = 'json',
                 'sink.delivery-guarantee' = 'exactly-once', 'sink.transactional-id-prefix' = '{prefix}');
         INSERT INTO paid
         SELECT o.id, o.amount, p.paid
         FROM orders o JOIN payments p
           ON o.id = p.order_id AND p.pts BETWEEN o.ts AND o.ts + INTERVAL '5' SECOND;"
    )
}

/// Order `i`: (partition, time, value).
fn order(base: i64, i: i64) -> (i32, i64, String) {
    ((i % 2) as i32, base + i * STEP_MS, format!(r#"{{"id": {i}, "amount": {}}}"#, i * 10))
}

/// The payments of order `i`: none for every third order; one within 0–4 s after the order;
/// for every seventh also one 8 s after it, which is outside the interval.
fn payments(base: i64, i: i64) -> Vec<(i32, i64, String)> {
    let at = base + i * STEP_MS;
    let mut out = Vec::new();
    if i % 3 != 0 {
        out.push((((i + 1) % 2) as i32, at + (i % 5) * 1000, format!(r#"{{"order_id": {i}, "paid": {i}}}"#)));
    }
    if i % 7 == 0 {
        out.push(((i % 2) as i32, at + 8000, format!(r#"{{"order_id": {i}, "paid": -1}}"#)));
    }
    out
}

/// Produces both topics in event-time order, paced (about 12 s in all) so that the job is
/// still reading while it is killed.
fn produce_input(orders: String, payments_topic: String, base: i64) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut all_payments: Vec<(i32, i64, String)> = (0..ORDERS).flat_map(|i| payments(base, i)).collect();
        all_payments.sort_by_key(|p| p.1);
        let chunk = 50;
        for start in (0..ORDERS).step_by(chunk) {
            let end = (start + chunk as i64).min(ORDERS);
            let records: Vec<_> =
                (start..end).map(|i| order(base, i)).map(|(p, t, v)| (p, Some(t), v)).collect();
            produce(&orders, &records);
            let until = base + end * STEP_MS;
            let due: Vec<_> = all_payments
                .iter()
                .filter(|p| p.1 < until)
                .map(|(p, t, v)| (*p, Some(*t), v.clone()))
                .collect();
            all_payments.retain(|p| p.1 >= until);
            produce(&payments_topic, &due);
            // Pacing of the input, not a wait for a condition.
            std::thread::sleep(Duration::from_millis(500));
        }
        let rest: Vec<_> = all_payments.into_iter().map(|(p, t, v)| (p, Some(t), v)).collect();
        produce(&payments_topic, &rest);
    })
}

fn expected() -> BTreeMap<i64, (i64, i64)> {
    (0..ORDERS).filter(|i| i % 3 != 0).map(|i| (i, (i * 10, i))).collect()
}

/// Every row a `read_committed` reader finds in the output topic, read to its end.
fn committed_rows(topic: &str, expected: usize, job: &mut RunningJob) -> Vec<serde_json::Value> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("join-reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning).expect("assignment");
    consumer.assign(&assignment).expect("assign");
    let mut rows = Vec::new();
    let deadline = Instant::now() + DEADLINE * 2;
    let poll = |rows: &mut Vec<serde_json::Value>| {
        while let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.expect("read");
            rows.push(serde_json::from_slice(message.payload().expect("a value")).expect("JSON rows"));
        }
    };
    while rows.len() < expected {
        job.assert_running();
        assert!(Instant::now() < deadline, "only {} of {expected} rows arrived\n{}", rows.len(), job.log());
        poll(&mut rows);
    }
    let status = job.terminate();
    assert!(status.success(), "a stop at a checkpoint exits cleanly\n{}", job.log());
    // Everything committed before the stop, to the end of the log.
    let started = Instant::now();
    loop {
        poll(&mut rows);
        let (_, high) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(5)).expect("watermarks");
        let position = consumer
            .position()
            .ok()
            .and_then(|p| p.find_partition(topic, 0).map(|e| e.offset()))
            .and_then(|o| o.to_raw())
            .unwrap_or(0);
        if position >= high {
            return rows;
        }
        assert!(started.elapsed() < DEADLINE, "the output did not settle: position {position}, end {high}");
    }
}

fn last_checkpoint(job: &RunningJob) -> i64 {
    checkpoint_in(&job.metrics())
}

fn checkpoint_in(metrics: &str) -> i64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("millrace_worker_last_checkpoint_id "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as i64)
}

#[test]
fn an_interval_join_killed_three_times_writes_every_pair_exactly_once() {
    let (orders, payments_topic, output) =
        (unique("join-orders"), unique("join-payments"), unique("join-out"));
    create_topics(&[(&orders, PARTITIONS), (&payments_topic, PARTITIONS), (&output, 1)]);
    let checkpoints = tempfile::tempdir().expect("tempdir");
    let checkpoint_dir = format!("file://{}", checkpoints.path().display());
    let sql = job_sql(&orders, &payments_topic, &output, &unique("join-txn"));
    let args = ["--checkpoint-dir", checkpoint_dir.as_str(), "--checkpoint-interval", "300ms"];
    // Recent timestamps: the broker's retention deletes old ones.
    let base = now_ms() - now_ms().rem_euclid(1000);
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(7);
    eprintln!("kill schedule seed: {seed}");
    let mut random = seed;
    let producer = produce_input(orders.clone(), payments_topic.clone(), base);

    for round in 0..3 {
        let mut job = RunningJob::start_with(&sql, 2, &args, &[]);
        let body =
            job.wait_for_metric("the job's metrics", |m| m.contains("millrace_worker_last_checkpoint_id"));
        let before = checkpoint_in(&body);
        let deadline = Instant::now() + DEADLINE;
        while last_checkpoint(&job) <= before.max(0) {
            job.assert_running();
            assert!(Instant::now() < deadline, "round {round}: no checkpoint\n{}", job.log());
            std::thread::park_timeout(Duration::from_millis(20));
        }
        random = random.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        // The moment of the kill, chosen at random (not a wait for anything).
        std::thread::sleep(Duration::from_millis((random >> 33) % 800));
        job.kill();
        eprintln!("round {round}: killed");
    }
    producer.join().expect("the producer finishes");

    let expected = expected();
    let mut job = RunningJob::start_with(&sql, 2, &args, &[]);
    let rows = committed_rows(&output, expected.len(), &mut job);
    let mut got: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
    for row in &rows {
        let id = row["id"].as_i64().expect("id");
        got.entry(id)
            .or_default()
            .push((row["amount"].as_i64().expect("amount"), row["paid"].as_i64().expect("paid")));
    }
    let twice: Vec<_> = got.iter().filter(|(_, pairs)| pairs.len() > 1).collect();
    assert!(twice.is_empty(), "pairs written more than once: {twice:?}");
    let got: BTreeMap<i64, (i64, i64)> = got.into_iter().map(|(id, pairs)| (id, pairs[0])).collect();
    let missing: Vec<_> = expected.keys().filter(|id| !got.contains_key(id)).collect();
    assert!(missing.is_empty(), "pairs lost: {missing:?}");
    assert_eq!(got, expected);
}

const CURRENCIES: i64 = 3;
const SALES: i64 = 900;
/// A new rate of every currency every 500 ms of event time.
const RATE_EVERY_MS: i64 = 500;

/// The rate version `n` of currency `c` (valid from `base + n * 500 ms`).
fn rate_value(n: i64, c: i64) -> i64 {
    n * 10 + c
}

fn temporal_sql(sales: &str, rates: &str, output: &str, prefix: &str) -> String {
    format!(
        "CREATE TABLE sales (
           id BIGINT, currency BIGINT,
           ts TIMESTAMP(3) METADATA FROM 'timestamp',
           WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
         ) WITH (connector = 'kafka', topic = '{sales}', format = 'json', group_id = '{sales}-job',
                 scan_startup_mode = 'earliest');
         CREATE TABLE rates (
           currency BIGINT, rate BIGINT,
           rts TIMESTAMP(3) METADATA FROM 'timestamp',
           PRIMARY KEY (currency) NOT ENFORCED,
           WATERMARK FOR rts AS rts - INTERVAL '1' SECOND
         ) WITH (connector = 'kafka', topic = '{rates}', format = 'json', group_id = '{rates}-job',
                 scan_startup_mode = 'earliest');
         CREATE TABLE priced (id BIGINT, rate BIGINT)
           WITH (connector = 'kafka', topic = '{output}', format = 'json',
                 'sink.delivery-guarantee' = 'exactly-once', 'sink.transactional-id-prefix' = '{prefix}');
         INSERT INTO priced
         SELECT s.id, r.rate
         FROM sales s JOIN rates FOR SYSTEM_TIME AS OF s.ts AS r ON s.currency = r.currency;"
    )
}

/// Produces sales (20 ms apart, on 2 partitions) and rates (one topic partition, every
/// currency every 500 ms) in event-time order, paced; then a sale and a rate far ahead on
/// every partition, so that the watermark passes every real sale.
fn produce_temporal(sales: String, rates: String, base: i64) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let chunk = 50;
        let mut next_rate = 0;
        for start in (0..SALES).step_by(chunk) {
            let end = (start + chunk as i64).min(SALES);
            let until = base + end * STEP_MS;
            let mut due = Vec::new();
            while base + next_rate * RATE_EVERY_MS < until {
                for c in 0..CURRENCIES {
                    let value = format!(r#"{{"currency": {c}, "rate": {}}}"#, rate_value(next_rate, c));
                    due.push((0, Some(base + next_rate * RATE_EVERY_MS), value));
                }
                next_rate += 1;
            }
            produce(&rates, &due);
            let records: Vec<_> = (start..end)
                .map(|i| {
                    (
                        (i % 2) as i32,
                        Some(base + i * STEP_MS),
                        format!(r#"{{"id": {i}, "currency": {}}}"#, i % CURRENCIES),
                    )
                })
                .collect();
            produce(&sales, &records);
            // Pacing of the input, not a wait for a condition.
            std::thread::sleep(Duration::from_millis(400));
        }
        let far = base + SALES * STEP_MS + 60_000;
        produce(&rates, &[(0, Some(far), r#"{"currency": -1, "rate": 0}"#.to_string())]);
        let flush: Vec<_> =
            (0..PARTITIONS).map(|p| (p, Some(far), r#"{"id": -1, "currency": -1}"#.to_string())).collect();
        produce(&sales, &flush);
    })
}

#[test]
fn a_temporal_join_killed_twice_prices_every_sale_exactly_once_at_its_rate() {
    let (sales, rates, output) = (unique("temporal-sales"), unique("temporal-rates"), unique("temporal-out"));
    create_topics(&[(&sales, PARTITIONS), (&rates, 1), (&output, 1)]);
    let checkpoints = tempfile::tempdir().expect("tempdir");
    let checkpoint_dir = format!("file://{}", checkpoints.path().display());
    let sql = temporal_sql(&sales, &rates, &output, &unique("temporal-txn"));
    let args = ["--checkpoint-dir", checkpoint_dir.as_str(), "--checkpoint-interval", "300ms"];
    let base = now_ms() - now_ms().rem_euclid(1000);
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(7);
    eprintln!("kill schedule seed: {seed}");
    let mut random = seed;
    let producer = produce_temporal(sales.clone(), rates.clone(), base);
    for round in 0..2 {
        let mut job = RunningJob::start_with(&sql, 2, &args, &[]);
        let body =
            job.wait_for_metric("the job's metrics", |m| m.contains("millrace_worker_last_checkpoint_id"));
        let before = checkpoint_in(&body);
        let deadline = Instant::now() + DEADLINE;
        while last_checkpoint(&job) <= before.max(0) {
            job.assert_running();
            assert!(Instant::now() < deadline, "round {round}: no checkpoint\n{}", job.log());
            std::thread::park_timeout(Duration::from_millis(20));
        }
        random = random.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        // The moment of the kill, chosen at random (not a wait for anything).
        std::thread::sleep(Duration::from_millis((random >> 33) % 800));
        job.kill();
    }
    producer.join().expect("the producer finishes");

    // Sale i at base + 20 i ms meets the version valid then: number floor(20 i / 500).
    let expected: BTreeMap<i64, i64> =
        (0..SALES).map(|i| (i, rate_value(i * STEP_MS / RATE_EVERY_MS, i % CURRENCIES))).collect();
    let mut job = RunningJob::start_with(&sql, 2, &args, &[]);
    let rows = committed_rows(&output, expected.len(), &mut job);
    let mut got: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for row in &rows {
        got.entry(row["id"].as_i64().expect("id")).or_default().push(row["rate"].as_i64().expect("rate"));
    }
    let twice: Vec<_> = got.iter().filter(|(_, rates)| rates.len() > 1).collect();
    assert!(twice.is_empty(), "sales written more than once: {twice:?}");
    let got: BTreeMap<i64, i64> = got.into_iter().map(|(id, rates)| (id, rates[0])).collect();
    assert_eq!(got, expected);
}
