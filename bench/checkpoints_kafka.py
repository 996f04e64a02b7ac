"""Kafka side of bench/checkpoints.sh: topics and input records (confluent-kafka, the harness venv).

    checkpoints_kafka.py create BOOTSTRAP TOPIC PARTITIONS
    checkpoints_kafka.py produce BOOTSTRAP TOPIC FIRST COUNT KEYS
    checkpoints_kafka.py delete BOOTSTRAP PREFIX

`produce` writes records FIRST .. FIRST+COUNT-1 as JSON `{"k": i * 7919 mod KEYS, "v": i}`
without a key (spread over the partitions), waits until every one is acknowledged and fails
if any delivery failed. Every call ends within its own deadline.
"""

from __future__ import annotations

import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic


def create(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)],
                                  operation_timeout=30)
    futures[topic].result(timeout=60)
    # Metadata propagates asynchronously: wait until a client sees every partition's leader.
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-checkpoints-probe"})
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            md = probe.list_topics(topic, timeout=5).topics.get(topic)
            if md and md.error is None and len(md.partitions) == partitions \
                    and all(p.leader >= 0 for p in md.partitions.values()):
                return
            time.sleep(0.1)
    finally:
        probe.close()
    raise RuntimeError(f"topic {topic} did not become ready within 30 s")


def produce(bootstrap: str, topic: str, first: int, count: int, keys: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000,
                         "queue.buffering.max.messages": 1_000_000, "enable.idempotence": True})
    failed: list[str] = []

    def delivered(err, _msg) -> None:
        if err is not None:
            failed.append(str(err))

    for i in range(first, first + count):
        value = b'{"k":%d,"v":%d}' % (i * 7919 % keys, i)
        while True:
            try:
                producer.produce(topic, value, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    left = producer.flush(120)
    if left:
        raise RuntimeError(f"{left} records still unacknowledged after 120 s")
    if failed:
        raise RuntimeError(f"{len(failed)} deliveries failed, first: {failed[0]}")


def delete(bootstrap: str, prefix: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [t for t in admin.list_topics(timeout=15).topics if t.startswith(prefix)]
    if not names:
        return
    for future in admin.delete_topics(names, operation_timeout=30).values():
        try:
            future.result(timeout=60)
        except KafkaException:
            pass


def main(argv: list[str]) -> None:
    command, bootstrap, rest = argv[0], argv[1], argv[2:]
    if command == "create":
        create(bootstrap, rest[0], int(rest[1]))
    elif command == "produce":
        produce(bootstrap, rest[0], int(rest[1]), int(rest[2]), int(rest[3]))
    elif command == "delete":
        delete(bootstrap, rest[0])
    else:
        raise SystemExit(f"unknown command {command} (see {__file__})")


if __name__ == "__main__":
    main(sys.argv[1:])
