"""The bench workloads: how their input is made, what the right output is, and how a
contender's output is checked against it.

Every workload's input is a pure function of (workload, record count), so a run is
reproducible. The reference output is computed here, in plain Python, never by a contender.

Output formats the checker accepts (documented in bench/README.md):
  seed   value = the average as UTF-8 text, any float syntax Python's float() parses
         ("66.66666666666667", "100.0", "1.0E2"); one partition, order must match exactly.
  keyed  value = JSON {"key": str, "avg": number}; per key, the sequence must match in order.
  window value = JSON {"key": str, "window_start": epoch-ms int or ISO-8601 UTC text,
         "count": int, "avg": number}; compared as a set, a duplicate window is wrong.
A float matches when |got - want| <= 1e-6 * max(1, |want|).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterator

FLOAT_TOLERANCE = 1e-6
THRESHOLD = 50
KEYED_KEYS = 1000
WINDOW_KEYS = 100
WINDOW_MS = 10_000
EVENT_TIME_BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
FLUSH_KEY = "__flush__"


@dataclass
class Input:
    """Records to produce: (key or None, value bytes, partition or None for the partitioner)."""

    records: list[tuple[bytes | None, bytes, int | None]]
    partitions: int


@dataclass
class Verdict:
    ok: bool
    complete: bool
    detail: str
    matched: int = 0


@dataclass
class Workload:
    name: str
    title: str
    partitions: int
    make_input: Callable[[int], Input]
    reference: Callable[[int], list]
    check: Callable[[list, list[tuple[int, bytes | None, bytes]]], Verdict]
    expected_count: Callable[[list], int] = field(default=len)


def close(got: float, want: float) -> bool:
    return abs(got - want) <= FLOAT_TOLERANCE * max(1.0, abs(want))


# ---------------------------------------------------------------- workload 1: seed


def seed_values(n: int) -> list[int]:
    rng = random.Random(1)
    return [rng.randint(0, 99) for _ in range(n)]


def seed_input(n: int) -> Input:
    return Input([(None, str(v).encode(), 0) for v in seed_values(n)], 1)


def moving_average(values: Iterator[int]) -> Iterator[float]:
    last: deque[int] = deque(maxlen=3)
    for v in values:
        if v < THRESHOLD:
            continue
        last.append(v)
        if len(last) == 3:
            yield sum(last) / 3.0


def seed_triggers(values: list[int]) -> list[int]:
    """For each seed output, the index of the input record that produced it."""
    kept = 0
    out: list[int] = []
    for i, v in enumerate(values):
        if v >= THRESHOLD:
            kept += 1
            if kept >= 3:
                out.append(i)
    return out


def seed_reference(n: int) -> list[float]:
    return list(moving_average(iter(seed_values(n))))


def seed_check(reference: list[float], output: list[tuple[int, bytes | None, bytes]]) -> Verdict:
    got: list[float] = []
    for _, _, value in output:
        try:
            got.append(float(value.decode()))
        except (UnicodeDecodeError, ValueError):
            return Verdict(False, False, f"unparseable output value {value[:40]!r}")
    if len(got) > len(reference):
        return Verdict(False, False, f"{len(got)} output records, reference has {len(reference)}")
    for i, (g, w) in enumerate(zip(got, reference)):
        if not close(g, w):
            return Verdict(False, False, f"record {i}: got {g}, want {w}")
    complete = len(got) == len(reference)
    return Verdict(True, complete, "matches" if complete else f"correct prefix {len(got)}/{len(reference)}", len(got))


# ---------------------------------------------------------------- workload 2: keyed


def keyed_records(n: int) -> list[tuple[str, int]]:
    rng = random.Random(2)
    return [(f"k{rng.randrange(KEYED_KEYS)}", rng.randint(0, 99)) for _ in range(n)]


def keyed_input(n: int) -> Input:
    return Input(
        [(k.encode(), json.dumps({"key": k, "value": v}, separators=(",", ":")).encode(), None) for k, v in keyed_records(n)],
        8,
    )


def keyed_reference(n: int) -> list[tuple[str, float]]:
    per_key: dict[str, deque[int]] = defaultdict(lambda: deque(maxlen=3))
    out: list[tuple[str, float]] = []
    for k, v in keyed_records(n):
        if v < THRESHOLD:
            continue
        last = per_key[k]
        last.append(v)
        if len(last) == 3:
            out.append((k, sum(last) / 3.0))
    return out


def keyed_check(reference: list[tuple[str, float]], output: list[tuple[int, bytes | None, bytes]]) -> Verdict:
    want: dict[str, list[float]] = defaultdict(list)
    for k, avg in reference:
        want[k].append(avg)
    got: dict[str, list[float]] = defaultdict(list)
    for _, _, value in output:
        try:
            row = json.loads(value)
            got[str(row["key"])].append(float(row["avg"]))
        except (ValueError, KeyError, TypeError):
            return Verdict(False, False, f"unparseable output value {value[:60]!r}")
    matched = 0
    complete = True
    for k, seq in got.items():
        ref = want.get(k, [])
        if len(seq) > len(ref):
            return Verdict(False, False, f"key {k}: {len(seq)} averages, reference has {len(ref)}")
        for i, (g, w) in enumerate(zip(seq, ref)):
            if not close(g, w):
                detail = f"key {k} #{i}: got {g}, want {w}"
                if sorted(round(x, 6) for x in seq) == sorted(round(x, 6) for x in ref[: len(seq)]):
                    parts = sorted({p for p, _, v in output if json.loads(v).get("key") == k})
                    detail += f" (the key's values are right but out of order: spread over output partitions {parts})"
                return Verdict(False, False, detail)
        matched += len(seq)
    complete = matched == len(reference)
    return Verdict(True, complete, "matches" if complete else f"correct per-key prefixes {matched}/{len(reference)}", matched)


# ---------------------------------------------------------------- workload 3: window


def window_step_ms(n: int) -> int:
    # Records 1 ms of event time apart from 100,000 records on (10,000 per window, 100 per
    # key and window); at least ~10 windows for smaller runs.
    return max(1, 10 * WINDOW_MS // max(n, 1))


def window_records(n: int) -> list[tuple[str, int, int]]:
    rng = random.Random(3)
    step = window_step_ms(n)
    return [(f"k{rng.randrange(WINDOW_KEYS)}", rng.randint(0, 99), EVENT_TIME_BASE_MS + i * step) for i in range(n)]


def window_input(n: int) -> Input:
    records: list[tuple[bytes | None, bytes, int | None]] = [
        (k.encode(), json.dumps({"key": k, "value": v, "ts": ts}, separators=(",", ":")).encode(), None)
        for k, v, ts in window_records(n)
    ]
    # One late-enough record per partition moves every partition's event time past the last
    # window, so engines that close windows on a watermark (per partition, min over inputs) emit
    # them all. Its own window never closes, and the checker ignores its key.
    flush_ts = EVENT_TIME_BASE_MS + n * window_step_ms(n) + 6 * WINDOW_MS
    flush = json.dumps({"key": FLUSH_KEY, "value": 0, "ts": flush_ts}, separators=(",", ":")).encode()
    records += [(FLUSH_KEY.encode(), flush, p) for p in range(8)]
    return Input(records, 8)


def window_reference(n: int) -> list[tuple[str, int, int, float]]:
    acc: dict[tuple[str, int], list[int]] = {}
    for k, v, ts in window_records(n):
        start = ts - ts % WINDOW_MS
        a = acc.setdefault((k, start), [0, 0])
        a[0] += 1
        a[1] += v
    return [(k, start, c, s / c) for (k, start), (c, s) in sorted(acc.items())]


def parse_window_start(raw: object) -> int:
    if isinstance(raw, (int, float)):
        return int(raw)
    text = str(raw).replace(" ", "T")
    if text.endswith("Z"):
        text = text[:-1]
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def window_check(reference: list[tuple[str, int, int, float]], output: list[tuple[int, bytes | None, bytes]]) -> Verdict:
    want = {(k, s): (c, a) for k, s, c, a in reference}
    seen: set[tuple[str, int]] = set()
    for _, _, value in output:
        try:
            row = json.loads(value)
            key = (str(row["key"]), parse_window_start(row["window_start"]))
            count, avg = int(row["count"]), float(row["avg"])
        except (ValueError, KeyError, TypeError):
            return Verdict(False, False, f"unparseable output value {value[:80]!r}")
        if key[0] == FLUSH_KEY:
            continue
        if key in seen:
            return Verdict(False, False, f"window {key} emitted twice")
        seen.add(key)
        if key not in want:
            return Verdict(False, False, f"window {key} is not in the reference")
        c, a = want[key]
        if count != c or not close(avg, a):
            return Verdict(False, False, f"window {key}: got count {count} avg {avg}, want {c} {a}")
    complete = len(seen) == len(want)
    return Verdict(True, complete, "matches" if complete else f"correct windows {len(seen)}/{len(want)}", len(seen))


WORKLOADS: dict[str, Workload] = {
    "seed": Workload("seed", "1 seed: drop < 50, mean of last 3 (1 partition)", 1, seed_input, seed_reference, seed_check),
    "keyed": Workload("keyed", "2 keyed: per-key mean of last 3 (JSON, 8 partitions)", 8, keyed_input, keyed_reference, keyed_check),
    "window": Workload("window", "3 window: 10 s tumbling count+avg per key (event time)", 8, window_input, window_reference, window_check),
}


def passthrough_check(inp: Input) -> Callable[[list, list[tuple[int, bytes | None, bytes]]], Verdict]:
    """The passthrough must copy every input record once: compare as multisets of values."""

    def check(_: list, output: list[tuple[int, bytes | None, bytes]]) -> Verdict:
        from collections import Counter

        want = Counter(v for _, v, _ in inp.records)
        got = Counter(v for _, _, v in output)
        extra = got - want
        if extra:
            return Verdict(False, False, f"{sum(extra.values())} records not in the input")
        complete = got == want
        n = sum(got.values())
        return Verdict(True, complete, "copies the input" if complete else f"copied {n}/{len(inp.records)}", n)

    return check
