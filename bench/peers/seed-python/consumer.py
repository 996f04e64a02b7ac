"""The seed article's first program, written here from its description (../../shared/SEED.md):
a plain kafka-python consumer loop that keeps values >= 50 in a Python list, emits the pandas
rolling mean (window 3) of the list once it holds 3 values, and drops the oldest. State lives
in the list and is lost on a crash — the article's point. Seed workload only.
"""

from __future__ import annotations

import argparse

import pandas as pd
from kafka import KafkaConsumer, KafkaProducer

THRESHOLD = 50


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--group", required=True)
    args = ap.parse_args()

    consumer = KafkaConsumer(args.input, bootstrap_servers=args.bootstrap, group_id=args.group, auto_offset_reset="earliest")
    producer = KafkaProducer(bootstrap_servers=args.bootstrap)
    values: list[int] = []
    for message in consumer:
        value = int(message.value.decode("utf-8"))
        if value < THRESHOLD:
            continue
        values.append(value)
        if len(values) == 3:
            mean = pd.Series(values).rolling(window=3).mean().iloc[-1]
            producer.send(args.output, str(mean).encode("utf-8"))
            values.pop(0)


if __name__ == "__main__":
    main()
