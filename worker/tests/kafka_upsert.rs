//! End-to-end test of an updating aggregate into an `upsert-kafka` sink against the local
//! platform's Kafka: a keyed `GROUP BY` with a `HAVING` that deletes keys, run by the real
//! `millrace-worker run`, read back from the output topic and compared with a reference
//! computed here. Gated by the `platform` feature; it fails (never skips) when
//! `KAFKA_BOOTSTRAP` is unset.
#![cfg(feature = "platform")]

#[path = "support/kafka.rs"]
mod kafka_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_support::{DEADLINE, RunningJob, bootstrap, create_topics, produce, unique};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

/// The HAVING limit: a key whose total passes it is deleted.
const LIMIT: i64 = 300;

/// One output record: its key and value (`None`: a tombstone).
#[derive(Debug, Clone, PartialEq)]
struct Upsert {
    key: Option<String>,
    value: Option<Value>,
}

/// Reads every partition of `topic` from the start, folding records into the latest record
/// per key, until `done` holds for it (or the deadline passes).
fn read_latest(
    topic: &str,
    partitions: i32,
    job: &mut RunningJob,
    done: impl Fn(&BTreeMap<String, Upsert>) -> bool,
) -> (BTreeMap<String, Upsert>, Vec<Upsert>) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("updating-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning).expect("partition");
    }
    consumer.assign(&assignment).expect("assign");
    let mut latest = BTreeMap::new();
    let mut all = Vec::new();
    let started = Instant::now();
    while !done(&latest) {
        job.assert_running();
        assert!(started.elapsed() < DEADLINE, "timed out reading {topic}; latest per key: {latest:#?}");
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = message.expect("consume");
        let record = Upsert {
            key: message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            value: message.payload().map(|v| serde_json::from_slice(v).expect("JSON values")),
        };
        latest.insert(record.key.clone().unwrap_or_default(), record.clone());
        all.push(record);
    }
    (latest, all)
}

/// Deterministic pseudo-random amounts in 0..50.
fn amounts(n: usize, seed: u64) -> Vec<i64> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 33) % 50) as i64
        })
        .collect()
}

fn click(user: &str, amount: i64) -> String {
    format!("{{\"user_id\":\"{user}\",\"amount\":{amount}}}")
}

/// The upserted table the job must leave: (count, total) per key whose total is within the
/// limit; `None` (a tombstone) for a key that went past it.
fn reference(clicks: &BTreeMap<String, Vec<i64>>) -> BTreeMap<String, Option<(i64, i64)>> {
    clicks
        .iter()
        .map(|(user, amounts)| {
            let total: i64 = amounts.iter().sum();
            (user.clone(), (total <= LIMIT).then_some((amounts.len() as i64, total)))
        })
        .collect()
}

fn matches(latest: &BTreeMap<String, Upsert>, want: &BTreeMap<String, Option<(i64, i64)>>) -> bool {
    latest.len() == want.len()
        && want.iter().all(|(user, want)| {
            let Some(got) = latest.get(user) else { return false };
            match (want, &got.value) {
                (None, None) => true,
                (Some((n, total)), Some(value)) => {
                    value["user_id"] == *user && value["clicks"] == *n && value["total"] == *total
                }
                _ => false,
            }
        })
}

#[test]
fn updating_aggregate_with_having_upserts_and_tombstones_keys_in_upsert_kafka() {
    let (input, output) = (unique("updating-in"), unique("updating-out"));
    create_topics(&[(&input, 2), (&output, 3)]);
    let sql = format!(
        "CREATE TABLE clicks (user_id STRING, amount BIGINT)
           WITH (connector = 'kafka', topic = '{input}', format = 'json', group_id = '{group}',
                 scan_startup_mode = 'earliest');
         CREATE TABLE totals (user_id STRING, clicks BIGINT, total BIGINT, PRIMARY KEY (user_id) NOT ENFORCED)
           WITH (connector = 'upsert-kafka', topic = '{output}', format = 'json');
         INSERT INTO totals
         SELECT user_id, COUNT(*) AS clicks, SUM(amount) AS total
         FROM clicks GROUP BY user_id HAVING SUM(amount) <= {LIMIT};",
        group = unique("updating-g")
    );
    let mut job = RunningJob::start(&sql, 2);
    let users: Vec<String> = (0..16).map(|k| format!("user-{k}")).collect();

    // Phase 1: every key stays within the limit, so every key is emitted.
    let mut clicks: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut records = Vec::new();
    for (k, user) in users.iter().enumerate() {
        for amount in amounts(3, k as u64) {
            clicks.entry(user.clone()).or_default().push(amount);
            records.push(((k % 2) as i32, None, click(user, amount)));
        }
    }
    produce(&input, &records);
    let want = reference(&clicks);
    assert!(want.values().all(Option::is_some), "phase 1 stays within the limit: {want:?}");
    read_latest(&output, 3, &mut job, |latest| matches(latest, &want));

    // Phase 2: even keys go past the limit (and must end deleted), odd keys get a little more.
    let mut records = Vec::new();
    for (k, user) in users.iter().enumerate() {
        let more = if k % 2 == 0 {
            vec![LIMIT, 1]
        } else {
            amounts(2, k as u64 + 100).iter().map(|a| a / 10).collect()
        };
        for amount in more {
            clicks.entry(user.clone()).or_default().push(amount);
            records.push(((k % 2) as i32, None, click(user, amount)));
        }
    }
    produce(&input, &records);
    let want = reference(&clicks);
    assert_eq!(want.values().filter(|w| w.is_none()).count(), 8, "half the keys end deleted: {want:?}");
    let (latest, all) = read_latest(&output, 3, &mut job, |latest| matches(latest, &want));

    for (user, want) in &want {
        let got = &latest[user];
        assert_eq!(got.key.as_deref(), Some(user.as_str()), "records are keyed by the group key");
        match want {
            None => assert_eq!(got.value, None, "{user} went past the limit: its last record is a tombstone"),
            Some(_) => assert!(got.value.is_some(), "{user} stays"),
        }
    }
    assert!(all.iter().all(|r| r.key.is_some()), "every record, tombstones included, has a key");
    // A key is deleted once: a tombstone is never followed by another for the same key.
    let mut deleted: BTreeMap<&str, bool> = BTreeMap::new();
    for record in &all {
        let key = record.key.as_deref().unwrap_or_default();
        let was_deleted = deleted.insert(key, record.value.is_none()).unwrap_or(false);
        assert!(!(was_deleted && record.value.is_none()), "{key} was deleted twice in a row");
    }
    job.assert_running();
}
