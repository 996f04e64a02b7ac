"""The bench workloads as a Quix Streams application, written the way Quix's docs write them:
a StreamingDataFrame per input topic, a stateful function (RocksDB state, changelog topic)
for the "last 3 values" moving average, and the built-in tumbling window for workload 3.

Run: app.py --workload seed|keyed|window --bootstrap … --input … --output … --group …
"""

from __future__ import annotations

import argparse
from typing import Any

from quixstreams import Application, State
from quixstreams.dataframe.windows import Count, Mean

THRESHOLD = 50


def last3_average(value: int, state: State) -> float | None:
    """Keeps the last two kept values in state; returns the mean once three are known."""
    last: list[int] = state.get("last", [])
    last.append(value)
    if len(last) > 3:
        last.pop(0)
    state.set("last", last)
    return sum(last) / 3.0 if len(last) == 3 else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", required=True, choices=["seed", "keyed", "window"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--state-dir", required=True)
    args = ap.parse_args()

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        loglevel="WARNING",
    )

    if args.workload == "seed":
        # The seed topic has no keys; state is per message key, so all values share one.
        source = app.topic(args.input, value_deserializer="str", key_deserializer="bytes")
        sink = app.topic(args.output, value_serializer="str", key_serializer="bytes")
        sdf = app.dataframe(source)
        sdf = sdf.apply(int).filter(lambda v: v >= THRESHOLD)
        sdf = sdf.apply(last3_average, stateful=True).filter(lambda avg: avg is not None)
        sdf = sdf.apply(repr)
        sdf.to_topic(sink)
    elif args.workload == "keyed":
        source = app.topic(args.input, value_deserializer="json", key_deserializer="str")
        sink = app.topic(args.output, value_serializer="json", key_serializer="str")
        sdf = app.dataframe(source)
        sdf = sdf.filter(lambda row: row["value"] >= THRESHOLD)
        sdf = sdf.apply(lambda row, state: {"key": row["key"], "avg": last3_average(row["value"], state)}, stateful=True)
        sdf = sdf.filter(lambda row: row["avg"] is not None)
        sdf.to_topic(sink)
    else:

        def event_time(value: Any, headers: Any, timestamp: float, timestamp_type: Any) -> int:
            return int(value["ts"])

        source = app.topic(args.input, value_deserializer="json", key_deserializer="str", timestamp_extractor=event_time)
        sink = app.topic(args.output, value_serializer="json", key_serializer="str")
        sdf = app.dataframe(source)
        sdf = (
            sdf.apply(lambda row: row["value"])
            .tumbling_window(duration_ms=10_000, grace_ms=0)
            .agg(count=Count(), avg=Mean())
            # Close on the partition's event time (the default waits for the same key again).
            .final(closing_strategy="partition")
        )
        sdf = sdf.apply(
            lambda w, key, timestamp, headers: {"key": key, "window_start": w["start"], "count": w["count"], "avg": w["avg"]},
            metadata=True,
        )
        sdf.to_topic(sink)

    app.run()


if __name__ == "__main__":
    main()
