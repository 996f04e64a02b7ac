//! The local Kafka broker is real: topics with partitions, transactions, and `read_committed`
//! isolation behave as in production. Needs `make up` (KAFKA_BOOTSTRAP).
#![cfg(feature = "platform")]

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

const PARTITIONS: i32 = 3;
const TIMEOUT: Duration = Duration::from_secs(30);

fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").expect(
        "KAFKA_BOOTSTRAP is not set: run `make up` and `set -a; source .local/env` (make test does both)",
    )
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_nanos();
    format!("{prefix}-{nanos}")
}

async fn create_topic(name: &str) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap()).create().expect("admin client");
    let topic = NewTopic::new(name, PARTITIONS, TopicReplication::Fixed(1));
    let results = admin
        .create_topics([&topic], &AdminOptions::new().operation_timeout(Some(TIMEOUT)))
        .await
        .expect("create_topics request");
    for result in results {
        result.expect("topic created");
    }
}

fn send_batch(producer: &ThreadedProducer<DefaultProducerContext>, topic: &str, values: &[String]) {
    for (i, value) in values.iter().enumerate() {
        let key = i.to_string();
        producer.send(BaseRecord::to(topic).key(&key).payload(value)).expect("record enqueued");
    }
}

/// Reads `topic` from the beginning until every partition's position reaches its high
/// watermark (which counts abort and commit markers too), so "nothing more" is a fact, not a guess.
fn read_all_committed(topic: &str) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("e2e-reader"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment.add_partition_offset(topic, partition, Offset::Beginning).expect("valid partition");
    }
    consumer.assign(&assignment).expect("assign");

    let high: Vec<i64> = (0..PARTITIONS)
        .map(|p| consumer.fetch_watermarks(topic, p, TIMEOUT).expect("watermarks").1)
        .collect();
    let deadline = Instant::now() + TIMEOUT;
    let mut seen = Vec::new();
    loop {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.expect("consume");
            seen.push(String::from_utf8(message.payload().expect("payload").to_vec()).expect("utf-8"));
        }
        let position = consumer.position().expect("position");
        let caught_up = (0..PARTITIONS).all(|p| {
            matches!(position.find_partition(topic, p).map(|e| e.offset()), Some(Offset::Offset(o)) if o >= high[p as usize])
        });
        if caught_up {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "consumer did not reach the high watermarks {high:?} in {TIMEOUT:?}"
        );
    }
}

#[tokio::test]
async fn read_committed_consumer_sees_only_the_committed_transaction() {
    let topic = unique("e2e-txn");
    create_topic(&topic).await;

    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("transactional.id", unique("e2e-txn-producer"))
        .create()
        .expect("transactional producer");
    producer.init_transactions(TIMEOUT).expect("init_transactions");

    let committed: Vec<String> = (0..30).map(|i| format!("committed-{i}")).collect();
    producer.begin_transaction().expect("begin");
    send_batch(&producer, &topic, &committed);
    producer.commit_transaction(TIMEOUT).expect("commit");

    let aborted: Vec<String> = (0..30).map(|i| format!("aborted-{i}")).collect();
    producer.begin_transaction().expect("begin");
    send_batch(&producer, &topic, &aborted);
    producer.flush(TIMEOUT).expect("aborted batch reached the broker before the abort");
    producer.abort_transaction(TIMEOUT).expect("abort");

    let seen = tokio::task::spawn_blocking(move || read_all_committed(&topic)).await.expect("reader thread");
    assert_eq!(seen.len(), committed.len(), "exactly the committed batch, once: {seen:?}");
    let seen: BTreeSet<_> = seen.into_iter().collect();
    let expected: BTreeSet<_> = committed.into_iter().collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_topic_gets_the_partitions_it_asked_for() {
    let topic = unique("e2e-partitions");
    create_topic(&topic).await;
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", bootstrap()).create().expect("metadata client");
    let metadata = tokio::task::spawn_blocking(move || {
        consumer.fetch_metadata(Some(&topic), TIMEOUT).expect("metadata")
    })
    .await
    .expect("metadata thread");
    let partitions = metadata.topics().first().expect("topic in metadata").partitions().len();
    assert_eq!(partitions, PARTITIONS as usize);
}
