//! End-to-end tests of the seed jobs against the local platform's Kafka: produce input to
//! fresh topics, run `millrace-worker run` on the example SQL, read the output topic and
//! compare it with a reference computed here. Gated by the `platform` feature; they fail
//! (never skip) when `KAFKA_BOOTSTRAP` is unset.
#![cfg(feature = "platform")]

#[path = "support/kafka.rs"]
mod kafka_support;

use std::path::Path;
use std::time::{Duration, Instant};

use kafka_support::{DEADLINE, RunningJob, bootstrap, create_topics, now_ms, produce, unique};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// Reads partition 0.. of `topic` from the beginning until `done` says so or the deadline.
fn consume_until(
    topic: &str,
    partitions: i32,
    mut done: impl FnMut(&[(String, Vec<(String, String)>)]) -> bool,
) -> Vec<(String, Vec<(String, String)>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning).expect("partition");
    }
    consumer.assign(&assignment).expect("assign");
    let mut seen = Vec::new();
    let started = Instant::now();
    while !done(&seen) {
        assert!(
            started.elapsed() < DEADLINE,
            "timed out reading {topic}; got {} records: {seen:?}",
            seen.len()
        );
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.expect("consume");
            let value = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
            let headers = message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            seen.push((value, headers));
        }
    }
    seen
}

fn example(name: &str, input: &str, output: &str, dlq: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/seed").join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .replace("'input-topic-dlq'", &format!("'{dlq}'"))
        .replace("'input-topic'", &format!("'{input}'"))
        .replace("'output-topic'", &format!("'{output}'"))
        .replace("group_id = 'millrace-", &format!("group_id = '{}-", unique("g")))
}

/// Deterministic pseudo-random integers in 0..100 (the article's input).
fn values(n: usize, seed: u64) -> Vec<i64> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 33) % 100) as i64
        })
        .collect()
}

/// The article's consumer loop: keep values >= 50, emit the mean of the last 3 kept values.
fn rolling_reference(input: &[i64]) -> Vec<f64> {
    let kept: Vec<i64> = input.iter().copied().filter(|v| *v >= 50).collect();
    kept.windows(3).map(|w| w.iter().sum::<i64>() as f64 / 3.0).collect()
}

fn parse_floats(records: &[(String, Vec<(String, String)>)]) -> Vec<f64> {
    records
        .iter()
        .map(|(v, _)| v.parse::<f64>().unwrap_or_else(|e| panic!("output {v:?} is not a float: {e}")))
        .collect()
}

fn assert_close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "got {got:?}\nwant {want:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() < 1e-9, "output {i}: got {g}, want {w}\ngot {got:?}\nwant {want:?}");
    }
}

#[test]
fn seed_a_rolling_average_end_to_end() {
    let (input, output, dlq) = (unique("seed-a-in"), unique("seed-a-out"), unique("seed-a-dlq"));
    create_topics(&[(&input, 1), (&output, 1), (&dlq, 1)]);
    let data = values(300, 7);
    produce(&input, &data.iter().map(|v| (0, None, v.to_string())).collect::<Vec<_>>());
    let want = rolling_reference(&data);
    let mut job = RunningJob::start(&example("seed-a-rolling-average.sql", &input, &output, &dlq), 2);
    let got = consume_until(&output, 1, |seen| {
        job.assert_running();
        seen.len() >= want.len()
    });
    assert_close(&parse_floats(&got), &want);
    assert!(got.iter().all(|(v, _)| v.contains('.')), "floats are written as float text: {got:?}");
}

/// The 3 s windows of event-time records, as the reference computes them.
fn tumbling_reference(records: &[(i32, Option<i64>, String)], before: i64) -> Vec<f64> {
    let mut windows: std::collections::BTreeMap<i64, (i64, i64)> = Default::default();
    for (_, ts, v) in records {
        let (Some(ts), Ok(v)) = (ts, v.parse::<i64>()) else { continue };
        if v >= 50 && *ts < before {
            let w = windows.entry(ts - ts.rem_euclid(3000)).or_default();
            w.0 += v;
            w.1 += 1;
        }
    }
    windows.values().map(|(sum, n)| *sum as f64 / *n as f64).collect()
}

fn seed_b_event_time(parallelism: usize) {
    let (input, output, dlq) = (unique("seed-b-et-in"), unique("seed-b-et-out"), unique("seed-b-et-dlq"));
    create_topics(&[(&input, 4), (&output, 1), (&dlq, 1)]);
    // 40 s of data, about 25 records per second spread over 4 partitions, each record up to
    // 900 ms behind its partition's newest (within the table's 1 s out-of-orderness).
    let base = now_ms() - now_ms().rem_euclid(3000) - 120_000;
    let data = values(1000, 11);
    let mut records: Vec<(i32, Option<i64>, String)> = data
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let jitter = v * 37 % 900;
            ((i % 4) as i32, Some(base + i as i64 * 40 - jitter), v.to_string())
        })
        .collect();
    let end = base + 40_000 + 3_000;
    // One record per partition far ahead moves every partition's watermark past `end`.
    let want = tumbling_reference(&records, end);
    records.extend((0..4).map(|p| (p, Some(end + 5_000), "99".to_string())));
    produce(&input, &records);
    let mut job = RunningJob::start(
        &example("seed-b-tumbling-average-event-time.sql", &input, &output, &dlq),
        parallelism,
    );
    let got = consume_until(&output, 1, |seen| {
        job.assert_running();
        seen.len() >= want.len()
    });
    assert_close(&parse_floats(&got), &want);
}

#[test]
fn seed_b_event_time_tumbling_average_end_to_end() {
    seed_b_event_time(1);
}

#[test]
fn seed_b_event_time_parallelism_4_on_4_partitions_matches_the_reference() {
    seed_b_event_time(4);
}

/// Whether `outputs` are the means of consecutive non-empty chunks covering all of `kept`.
fn explains_all(kept: &[i64], outputs: &[f64]) -> bool {
    // reachable[i]: the first i values are explained by some prefix of the outputs.
    let mut reachable = vec![false; kept.len() + 1];
    reachable[0] = true;
    let mut prefix = vec![0i64; kept.len() + 1];
    for (i, v) in kept.iter().enumerate() {
        prefix[i + 1] = prefix[i] + v;
    }
    for out in outputs {
        let mut next = vec![false; kept.len() + 1];
        for start in (0..kept.len()).filter(|s| reachable[*s]) {
            for end in start + 1..=kept.len() {
                let mean = (prefix[end] - prefix[start]) as f64 / (end - start) as f64;
                if (mean - out).abs() < 1e-9 {
                    next[end] = true;
                }
            }
        }
        reachable = next;
    }
    reachable[kept.len()]
}

#[test]
fn seed_b_processing_time_tumbling_average_end_to_end() {
    let (input, output, dlq) = (unique("seed-b-pt-in"), unique("seed-b-pt-out"), unique("seed-b-pt-dlq"));
    create_topics(&[(&input, 1), (&output, 1), (&dlq, 1)]);
    let data = values(500, 3);
    produce(&input, &data.iter().map(|v| (0, None, v.to_string())).collect::<Vec<_>>());
    let kept: Vec<i64> = data.iter().copied().filter(|v| *v >= 50).collect();
    let mut job = RunningJob::start(&example("seed-b-tumbling-average.sql", &input, &output, &dlq), 1);
    // Which records share a processing-time window depends on when they arrive; whatever the
    // split, the outputs must be the real means of consecutive groups covering every record.
    let got = consume_until(&output, 1, |seen| {
        job.assert_running();
        !seen.is_empty() && explains_all(&kept, &parse_floats(seen))
    });
    assert!(!got.is_empty());
}

#[test]
fn malformed_records_go_to_the_dead_letter_topic_and_the_job_continues() {
    let (input, output, dlq) = (unique("dlq-in"), unique("dlq-out"), unique("dlq-dlq"));
    create_topics(&[(&input, 1), (&output, 1), (&dlq, 1)]);
    let mut job = RunningJob::start(&example("seed-a-rolling-average.sql", &input, &output, &dlq), 1);
    let before = ["60", "70", "80", "not-a-number", "90"];
    let after = ["12.5", "100", "55", "", "65"];
    let all: Vec<&str> = before.iter().chain(after.iter()).copied().collect();
    produce(&input, &all.iter().map(|v| (0, None, v.to_string())).collect::<Vec<_>>());
    let good: Vec<i64> = all.iter().filter_map(|v| v.parse().ok()).collect();
    let want = rolling_reference(&good);
    let got = consume_until(&output, 1, |seen| {
        job.assert_running();
        seen.len() >= want.len()
    });
    assert_close(&parse_floats(&got), &want);
    let dead = consume_until(&dlq, 1, |seen| seen.len() >= 3);
    let payloads: Vec<&str> = dead.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(payloads, vec!["not-a-number", "12.5", ""]);
    for (value, headers) in &dead {
        let error =
            headers.iter().find(|(k, _)| k == "millrace.error").map(|(_, v)| v.as_str()).unwrap_or_default();
        assert!(!error.is_empty(), "dead letter {value:?} carries its reason: {headers:?}");
    }
    job.wait_for_metric("the dead-letter counter", |m| {
        m.lines().any(|l| {
            l.starts_with("millrace_worker_dead_lettered_records_total{")
                && l.contains("outcome=\"dlq\"")
                && l.ends_with(" 3")
        })
    });
    // Everything was read: the source reports no lag (refreshed every few seconds).
    job.wait_for_metric("the consumer lag", |m| {
        m.lines().any(|l| l.starts_with("millrace_worker_consumer_lag_records{") && l.ends_with(" 0"))
    });
    job.assert_running();
}

fn late_job(input: &str, output: &str, late: &str) -> String {
    format!(
        "CREATE TABLE events (
           v BIGINT,
           ts TIMESTAMP(3),
           WATERMARK FOR ts AS ts - INTERVAL '0' SECOND
         ) WITH (connector = 'kafka', topic = '{input}', format = 'json', scan_startup_mode = 'earliest',
                 group_id = '{group}', late_topic = '{late}');
         CREATE TABLE counts (window_start TIMESTAMP(3), n BIGINT, total BIGINT)
           WITH (connector = 'kafka', topic = '{output}', format = 'json');
         INSERT INTO counts
         SELECT tumble(ts, INTERVAL '2' SECOND) AS window_start, COUNT(*) AS n, SUM(v) AS total
         FROM events GROUP BY tumble(ts, INTERVAL '2' SECOND);",
        group = unique("g")
    )
}

fn event(v: i64, ts: &str) -> (i32, Option<i64>, String) {
    (0, None, format!("{{\"v\": {v}, \"ts\": \"1970-01-01T00:00:{ts}\"}}"))
}

#[test]
fn late_rows_go_to_the_late_topic_and_the_job_continues() {
    let (input, output, late) = (unique("late-in"), unique("late-out"), unique("late-late"));
    create_topics(&[(&input, 1), (&output, 1), (&late, 1)]);
    let mut job = RunningJob::start(&late_job(&input, &output, &late), 1);
    // 04.5 moves the watermark past [0,2): the window fires.
    produce(&input, &[event(1, "00.500"), event(2, "02.500"), event(3, "04.500")]);
    let fired = consume_until(&output, 1, |seen| {
        job.assert_running();
        !seen.is_empty()
    });
    assert_eq!(fired[0].0, r#"{"window_start":"1970-01-01T00:00:00","n":1,"total":1}"#);
    // Only now (the watermark is known to be past it) the row for [0,2) is produced: late.
    produce(&input, &[event(99, "01.000")]);
    let late_rows = consume_until(&late, 1, |seen| {
        job.assert_running();
        !seen.is_empty()
    });
    assert_eq!(late_rows.len(), 1);
    assert_eq!(late_rows[0].0, r#"{"v":99,"ts":"1970-01-01T00:00:01"}"#);
    job.wait_for_metric("the late-rows counter", |m| {
        m.lines().any(|l| l.starts_with("millrace_worker_late_records_total{") && l.ends_with(" 1"))
    });
    // The job goes on: later rows still fire their windows, and the late row changed nothing.
    produce(&input, &[event(4, "06.500")]);
    let all = consume_until(&output, 1, |seen| {
        job.assert_running();
        seen.len() >= 3
    });
    let values: Vec<&str> = all.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(
        values,
        vec![
            r#"{"window_start":"1970-01-01T00:00:00","n":1,"total":1}"#,
            r#"{"window_start":"1970-01-01T00:00:02","n":1,"total":2}"#,
            r#"{"window_start":"1970-01-01T00:00:04","n":1,"total":3}"#,
        ]
    );
    job.assert_running();
}

/// The benchmark's keyed workload (bench/peers/millrace/keyed.sql) with `key_columns`.
fn keyed_job(input: &str, output: &str) -> String {
    format!(
        "CREATE TABLE input (\"key\" STRING, \"value\" BIGINT, pt AS PROCTIME())
           WITH (connector = 'kafka', topic = '{input}', format = 'json', group_id = '{group}',
                 scan_startup_mode = 'earliest');
         CREATE TABLE output (\"key\" STRING, \"avg\" DOUBLE)
           WITH (connector = 'kafka', topic = '{output}', format = 'json', key_columns = 'key');
         INSERT INTO output
         SELECT \"key\", avg_v FROM (
           SELECT \"key\",
             AVG(\"value\") OVER (PARTITION BY \"key\" ORDER BY pt ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS avg_v,
             COUNT(\"value\") OVER (PARTITION BY \"key\" ORDER BY pt ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS n
           FROM input WHERE \"value\" >= 50
         ) AS last_three WHERE n >= 3;",
        group = unique("g")
    )
}

#[test]
fn keyed_sink_puts_every_record_of_a_key_on_one_partition_in_order() {
    let (input, output) = (unique("keyed-in"), unique("keyed-out"));
    create_topics(&[(&input, 2), (&output, 4)]);
    let mut job = RunningJob::start(&keyed_job(&input, &output), 2);
    // Each key's input is on one input partition, so its arrival order is that partition's.
    let keys: Vec<String> = (0..12).map(|k| format!("user-{k}")).collect();
    let mut records = Vec::new();
    let mut want: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for (k, key) in keys.iter().enumerate() {
        let input_values = values(40, k as u64 + 7);
        want.insert(key.clone(), rolling_reference(&input_values));
        for v in input_values {
            records.push(((k % 2) as i32, None, format!("{{\"key\":\"{key}\",\"value\":{v}}}")));
        }
    }
    // Interleave the keys: rows of different keys alternate on each partition.
    records.sort_by_key(|(p, _, r)| (*p, r.len() % 3));
    produce(&input, &records);
    let total: usize = want.values().map(Vec::len).sum();

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..4 {
        assignment.add_partition_offset(&output, p, Offset::Beginning).expect("partition");
    }
    consumer.assign(&assignment).expect("assign");
    // key → (partitions seen, averages in partition order)
    let mut got: std::collections::BTreeMap<String, (Vec<i32>, Vec<f64>)> = Default::default();
    let mut seen = 0;
    let started = Instant::now();
    while seen < total {
        job.assert_running();
        assert!(started.elapsed() < DEADLINE, "timed out: {seen} of {total} records");
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = message.expect("consume");
        let value: serde_json::Value =
            serde_json::from_slice(message.payload().unwrap_or_default()).expect("json output");
        let key = value["key"].as_str().expect("key field").to_string();
        let record_key = String::from_utf8_lossy(message.key().expect("a record key")).into_owned();
        assert_eq!(record_key, key, "the record key is the key column's text");
        let avg = value
            .as_object()
            .and_then(|o| o.iter().find(|(k, _)| *k != "key"))
            .and_then(|(_, v)| v.as_f64())
            .expect("avg");
        let entry = got.entry(key).or_default();
        if !entry.0.contains(&message.partition()) {
            entry.0.push(message.partition());
        }
        entry.1.push(avg);
        seen += 1;
    }
    let mut partitions_used: Vec<i32> = Vec::new();
    for (key, want) in &want {
        let (partitions, averages) = got.get(key).cloned().unwrap_or_default();
        assert_eq!(partitions.len(), 1, "{key} landed on partitions {partitions:?}");
        partitions_used.extend(partitions);
        assert_close(&averages, want);
    }
    partitions_used.sort_unstable();
    partitions_used.dedup();
    assert!(partitions_used.len() > 1, "12 keys spread over partitions: {partitions_used:?}");
    job.assert_running();
}
