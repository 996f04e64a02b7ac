"""Turns a bench results file into docs/benchmarks.md and a PNG plot (or a terminal summary).

Ratios are taken within the one run the file holds: the machine is shared and noisy, so
numbers from different runs are not compared.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from workloads import FLOAT_TOLERANCE, WORKLOADS  # noqa: E402

# (peer, metric, target ratio Millrace/peer, what the issue asks)
TARGETS = [
    ("passthrough", "records_per_s", 0.9, "≥ 90% of passthrough (records/s)"),
    ("kafka-streams", "records_per_s_per_core", 3.0, "≥ 3× Kafka Streams per core"),
    ("kafka-streams-eos", "records_per_s_per_core", 3.0, "≥ 3× Kafka Streams (exactly-once) per core"),
    ("quix", "records_per_s", 20.0, "≥ 20× Quix Streams (records/s)"),
    ("flink", "records_per_s_per_core", 1.0, "ahead of Flink per core"),
    ("seed-python", "records_per_s", None, "(no target)"),
]


def sh(cmd: str) -> str:
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30).stdout.strip()
    except subprocess.TimeoutExpired:
        return "?"


def machine() -> list[str]:
    lscpu = sh("lscpu")
    model = re.search(r"Model name:\s*(.+)", lscpu)
    mem = sh("free -g | awk '/^Mem:/ {print $2}'")
    return [
        f"- CPU: {sh('nproc')} cores, {model.group(1) if model else '?'} ({sh('uname -m')}, {'KVM guest' if 'KVM' in lscpu else 'host'})",
        f"- Memory: {mem} GiB; kernel {sh('uname -r')}",
        "- Broker: Apache Kafka 4.4.0 (KRaft, one node) at 127.0.0.1:9092, on the same 2 cores as the contenders",
    ]


def versions(bench_cache: Path) -> list[str]:
    java = sh("java -version 2>&1 | head -1")
    rustc = sh("rustc --version")
    quix = sh(f"{bench_cache}/quix/bin/python -c 'import quixstreams; print(quixstreams.__version__)'")
    kp = sh(f"{bench_cache}/seedpy/bin/python -c 'import kafka, pandas; print(kafka.__version__, pandas.__version__)'").split()
    py = sh("python3 --version")
    return [
        f"- Rust contenders: {rustc}, release profile; rdkafka 0.39 (bundled librdkafka 2.12.1)",
        f"- JVM contenders: {java}; Kafka Streams 4.4.0; Flink 2.2.0 + flink-connector-kafka 5.0.0-2.2 (local MiniCluster)",
        f"- Python contenders: {py}; Quix Streams {quix or '?'}; kafka-python {kp[0] if kp else '?'} + pandas {kp[1] if len(kp) > 1 else '?'}",
    ]


def fmt(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def result_rows(results: list[dict[str, Any]], workload: str) -> list[str]:
    rows = [
        "| contender | result | records/s | CPU-s per 1M records | records/s per core | cores used | peak RSS (MB) | time to done (s) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        if r["workload"] != workload:
            continue
        shown_speed = r["status"] in ("ok", "incomplete")
        status = r["status"] if r["status"] != "ok" else "ok"
        detail = r["detail"]
        if r["status"] == "incomplete":
            status = f"partial ({100 * (r['completed_fraction'] or 0):.0f}% in budget, output correct so far)"
        elif r["status"] != "ok":
            status = f"**{r['status']}**: {detail}"
        rows.append(
            f"| {r['label']} | {status} | {fmt(r['records_per_s']) if shown_speed else '–'} | "
            f"{fmt(r['cpu_s_per_million'], 2) if shown_speed else '–'} | {fmt(r['records_per_s_per_core']) if shown_speed else '–'} | "
            f"{fmt(r['cores_used'], 2) if shown_speed else '–'} | {fmt(r['peak_rss_mb'])} | {fmt(r['time_to_done_s'], 1) if shown_speed else '–'} |"
        )
    return rows


def ratio_rows(results: list[dict[str, Any]], workload: str) -> list[str]:
    by = {r["contender"]: r for r in results if r["workload"] == workload}
    mr = by.get("millrace")
    rows = ["| Millrace / … | metric | ratio | target | met |", "| --- | --- | ---: | --- | --- |"]
    for peer, metric, target, text in TARGETS:
        p = by.get(peer)
        if p is None:
            continue
        name = p["label"]
        if mr is None or mr["status"] not in ("ok",) or not mr.get(metric):
            why = f"Millrace {mr['status']}" if mr else "Millrace not run"
            rows.append(f"| {name} | {metric.replace('_', ' ')} | n/a ({why}) | {text} | – |")
            continue
        if p["status"] not in ("ok", "incomplete") or not p.get(metric):
            rows.append(f"| {name} | {metric.replace('_', ' ')} | n/a ({p['status']}) | {text} | – |")
            continue
        ratio = mr[metric] / p[metric]
        if peer == "passthrough" and workload == "window":
            # The passthrough writes every input record; the window job writes 1 in 100.
            target, text = None, "(not a bound here: the passthrough writes 100× more records)"
        met = "–" if target is None else ("yes" if ratio >= target else "**no**")
        rows.append(f"| {name} | {metric.replace('_', ' ')} | {ratio:.2f}× | {text} | {met} |")
    return rows


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = data["results"]
    workloads = [w for w in WORKLOADS if any(r["workload"] == w for r in results)]
    fig, axes = plt.subplots(len(workloads), 2, figsize=(13, 3.2 * len(workloads)), squeeze=False)
    for row, w in enumerate(workloads):
        rs = [r for r in results if r["workload"] == w]
        for col, (metric, title) in enumerate((("records_per_s", "records/s"), ("records_per_s_per_core", "records/s per core"))):
            ax = axes[row][col]
            names = [r["contender"] for r in rs]
            vals = [r[metric] if r["status"] in ("ok", "incomplete") and r[metric] else 0.0 for r in rs]
            palette = {"millrace": "#d62728", "millrace-fetch16m": "#ff9896", "passthrough": "#7f7f7f"}
            colors = [palette.get(r["contender"], "#1f77b4") for r in rs]
            ax.barh(names, vals, color=colors)
            for i, r in enumerate(rs):
                if r["status"] not in ("ok", "incomplete") or not r[metric]:
                    ax.text(1000, i, f"  {r['status']}", va="center", fontsize=8, color="#d62728")
                else:
                    ax.text(vals[i], i, f" {vals[i]:,.0f}" + (" (partial)" if r["status"] == "incomplete" else ""), va="center", fontsize=8)
            ax.set_xscale("log")
            ax.set_xlim(left=1000)
            ax.invert_yaxis()
            ax.set_title(f"{WORKLOADS[w].title} — {title}", fontsize=9)
            ax.tick_params(labelsize=8)
    fig.suptitle(f"Millrace bench-peers, {data['records']:,} records, {data['started']} (log scale; one run, same broker)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(data: dict[str, Any], command: str, bench_cache: Path, plot_name: str | None) -> str:
    results = data["results"]
    out = [
        "# Benchmarks: Millrace beside its peers",
        "",
        "Generated by `make bench-peers` (bench/run-peers.sh → bench/harness/). Do not edit by hand:",
        "rerun the command below to regenerate this page and the plot.",
        "",
        f"- Date: {data['started']}",
        f"- Command: `{command}`",
        f"- Input: {data['records']:,} records per workload, produced once per run to a fresh topic and "
        f"shared by every contender; each contender gets a fresh output topic and consumer group.",
        f"- Parallelism: 1 for the one-partition seed workload; {data['parallelism']} (= cores) for the 8-partition workloads "
        "(Kafka Streams threads, Flink parallelism, Millrace --parallelism; Quix and the seed loop are one process).",
        "",
        "## Machine and versions",
        "",
        *machine(),
        *([f"- Load average (1/5/15 min) at the start of the run: {' / '.join(f'{x:.2f}' for x in data['loadavg_start'])}, at the end: "
           f"{' / '.join(f'{x:.2f}' for x in data['loadavg_end'])} — the machine is shared with other builds; compare ratios within this run only"]
          if data.get("loadavg_start") else []),
        *versions(bench_cache),
        "",
        "## How it is measured",
        "",
        "- **records/s** are input records per second in the steady part of the run: from the moment 10% of the",
        "  expected output is in the output topic until all of it is (output high watermarks sampled every 50 ms),",
        "  scaled to input records. Start-up (JVM, MiniCluster, group join) is excluded here and shown as",
        "  **time to done** (process start → last output record).",
        "- **CPU-s per 1M records**: utime+stime of the contender's process tree (/proc/<pid>/stat) over the same",
        "  interval, per million input records. **records/s per core** = records / CPU-seconds (the reciprocal),",
        "  **cores used** = CPU-seconds / wall seconds. **peak RSS**: VmHWM summed over the process tree.",
        "- The broker and the harness share the 2 cores with the contender, so no contender can use 2 full cores.",
        f"- Each contender has a time budget of {data['budget_s']:.0f} s of steady running (after its first output).",
        "  One that is not done by then is stopped and shown as *partial*: its output so far is checked (a correct",
        "  prefix) and its speed measured on the part done.",
        "- **Correctness**: the harness computes the reference output itself and reads back each output topic",
        "  (read_committed). Seed: the float texts in order; keyed: per key, the averages in order; window: the set",
        f"  of (key, window start) → (count, avg), no duplicates. Floats match within {FLOAT_TOLERANCE:g} × max(1, |x|).",
        "  A run with wrong output is reported as **WRONG** with the first difference, never as a speed.",
        "  The passthrough must copy every input record exactly once.",
        "",
        "## Workloads",
        "",
        "1. **seed** — integers as UTF-8 text on one partition; drop values < 50; mean of the last 3 kept values",
        "   (emitted from the 3rd kept value on, as the seed article's loop does), as float text.",
        "2. **keyed** — JSON `{\"key\", \"value\"}` over 8 partitions (1,000 keys, partitioned by murmur2 of the key);",
        "   the same per key: output JSON `{\"key\", \"avg\"}`.",
        "3. **window** — JSON `{\"key\", \"value\", \"ts\"}` over 8 partitions (100 keys, event time `ts` 1 ms apart),",
        "   10-second tumbling event-time windows, count and mean per key, emitted once when the window closes:",
        "   output JSON `{\"key\", \"window_start\", \"count\", \"avg\"}`. A last record per partition, 60 s later,",
        "   closes the final windows.",
        "",
    ]
    for w, wl in WORKLOADS.items():
        if not any(r["workload"] == w for r in results):
            continue
        out += [f"## Workload {wl.title}", "", *result_rows(results, w), "", "Ratios in this run:", "", *ratio_rows(results, w), ""]
    if data.get("latency"):
        out += [
            f"## End-to-end latency, seed workload at a fixed {data['latency_rate']:,} records/s",
            "",
            f"Each contender alone, input produced live at {data['latency_rate']:,} records/s for {data['latency_s']:.0f} s after",
            "a 200-record warm-up that waits for the first output. Latency: from the harness producing an input record",
            "(linger 0) to the harness reading the output record it caused (read_committed, fetch wait 5 ms); both",
            "clocks are the harness's. The rate is fixed rather than half of Millrace's maximum: a Python harness",
            "cannot pace and timestamp hundreds of thousands of records per second without becoming the bottleneck.",
            "",
            "| contender | result | outputs | p50 (ms) | p99 (ms) | max (ms) | last output after last input (s) |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in data["latency"]:
            status = r["status"] if r["status"] == "ok" else f"**{r['status']}**: {r['detail']}"
            out.append(f"| {r['label']} | {status} | {r['outputs']:,} | {fmt(r['p50_ms'], 1)} | {fmt(r['p99_ms'], 1)} | {fmt(r['max_ms'], 1)} | {fmt(r.get('behind_s'), 2)} |")
        out.append("")
    if plot_name:
        out += [f"![records/s and records/s per core per contender]({plot_name})", ""]
    out += [
        "## The contenders (bench/peers/)",
        "",
        "- **passthrough** (`bench/passthrough`): rdkafka consume → produce of the same bytes to the same partition;",
        "  no decoding, no state; librdkafka tuned for throughput (16 MB per-partition fetch, 100,000-message",
        "  batches, linger 10 ms). The physical limit of a Kafka → Kafka job that writes as much as it reads:",
        "  it bounds the seed and keyed workloads (about one output per two inputs), not the window workload,",
        "  where the engines write 1 record per 100 inputs while the passthrough still copies every one.",
        "- **Millrace, source fetch 16 MB/partition (experiment)**: the seed example with one added source",
        "  option, `\"properties.max.partition.fetch.bytes\" = '16777216'` (`bench/peers/millrace/seed-fetch16m.sql`):",
        "  with librdkafka's 1 MB default the engine waits on fetches from the single partition. Not used for ratios.",
        "- **Millrace**: `millrace-worker run -f <job.sql>` (release build); the seed job is",
        "  `examples/seed/seed-a-rolling-average.sql` with the run's topics filled in; keyed and window are",
        "  `bench/peers/millrace/*.sql`.",
        "- **Kafka Streams 4.4** (`bench/peers/kafka-streams`): the DSL plus a FixedKeyProcessor with a changelogged",
        "  RocksDB store for the last-3 average; windowed aggregate + suppress(untilWindowCloses) for the window",
        "  workload. Run twice: at-least-once (default) and exactly_once_v2.",
        "- **Flink 2.2 SQL** (`bench/peers/flink`): the same SQL in Flink's dialect (OVER ROWS windows, TUMBLE TVF),",
        "  in a local MiniCluster, checkpoints every 10 s, Kafka sink at-least-once.",
        "- **Quix Streams 3.28** (`bench/peers/quix`): a StreamingDataFrame app with a stateful apply (RocksDB +",
        "  changelog) and its tumbling window (`final(closing_strategy=\"partition\")`).",
        "- **seed article loop** (`bench/peers/seed-python`): kafka-python consumer, a Python list and pandas",
        "  `rolling(3).mean()`, as the seed article describes it (seed workload only).",
        "",
        "Not measured yet: Millrace through the operator (Kubernetes). Engine-only Nexmark (no Kafka, no peers) and checkpoints (size, recovery, rescale) are the sections below, written by `bash bench/nexmark.sh` and `bash bench/checkpoints.sh`.",
        "",
    ]
    return "\n".join(out)


def summary(data: dict[str, Any]) -> None:
    for r in data["results"]:
        speed = f"{r['records_per_s']:,.0f} rec/s" if r.get("records_per_s") else ""
        print(f"  {r['workload']:7} {r['contender']:18} {r['status']:13} {speed:>14}  {r['detail'][:110]}")
    for r in data.get("latency", []):
        print(f"  latency {r['contender']:18} {r['status']:13} p50 {fmt(r['p50_ms'], 1)} ms, p99 {fmt(r['p99_ms'], 1)} ms  {r['detail'][:100]}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--markdown", type=Path)
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--command", default="bash bench/run-peers.sh")
    ap.add_argument("--summary-only", action="store_true")
    ap.add_argument("--bench-cache", type=Path, default=Path.home() / ".cache/millrace/bench")
    args = ap.parse_args()
    data = json.loads(args.results.read_text())
    summary(data)
    if args.summary_only:
        return 0
    if args.plot:
        plot(data, args.plot)
    if args.markdown:
        page = markdown(data, args.command, args.bench_cache, args.plot.name if args.plot else None)
        args.markdown.write_text(page + preserved_sections(args.markdown))
    return 0


# Sections other benchmarks write into the same page (bench/nexmark.sh, bench/checkpoints.sh),
# kept across reruns.
PRESERVED = [("<!-- nexmark:begin -->", "<!-- nexmark:end -->"),
             ("<!-- checkpoints:begin -->", "<!-- checkpoints:end -->")]


def preserved_sections(path: Path) -> str:
    """The marked blocks of the current page, to append to the regenerated one."""
    if not path.exists():
        return ""
    text = path.read_text()
    kept = []
    for begin, end in PRESERVED:
        start = text.find(begin)
        stop = text.find(end, start + len(begin)) if start >= 0 else -1
        if start >= 0 and stop >= 0:
            kept.append(text[start:stop + len(end)])
    return "".join("\n" + block + "\n" for block in kept)


if __name__ == "__main__":
    sys.exit(main())
