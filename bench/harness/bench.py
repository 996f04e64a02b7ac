"""Runs every contender on every workload against the local broker and writes the report.

Per workload: fresh input topic, input produced once, reference computed here. Per
contender: fresh output topic and consumer group, the contender started as a process group,
its output topic's high watermarks and its process tree's CPU (/proc/<pid>/stat utime+stime)
and peak RSS (VmHWM) sampled every 50 ms until the output is complete, output stalls, or the
contender's time budget runs out. Then it is stopped, its output read back (read_committed)
and checked against the reference. A wrong output is reported as WRONG, never as a speed.

Throughput is measured in the steady part of the run: from the moment 10% of the expected
output is in the topic to the moment all of it is, scaled to input records. Startup (JVM,
MiniCluster, group join) is reported apart as "time to done".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).parent))
from workloads import WORKLOADS, Input, Verdict, Workload, passthrough_check  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("MILLRACE_CACHE", Path.home() / ".cache/millrace"))
BENCH_CACHE = CACHE / "bench"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", CACHE / "target"))
TICK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
SAMPLE_S = 0.05
LOW_FRACTION = 0.10


# ---------------------------------------------------------------- contenders


@dataclass
class Launch:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


@dataclass
class Contender:
    name: str
    label: str
    workloads: tuple[str, ...]
    launch: Callable[["Ctx"], Launch | str]  # a str is the reason it is not available
    transactional: bool = False
    startup_budget_s: float = 90.0


@dataclass
class Ctx:
    workload: str
    bootstrap: str
    input_topic: str
    output_topic: str
    group: str
    parallelism: int
    run_dir: Path
    rust_profile: str


def java_cp(build: str, jar: str) -> str:
    base = BENCH_CACHE / "build" / build
    return f"{base / jar}:{base / 'lib'}/*"


def passthrough(c: Ctx) -> Launch | str:
    exe = TARGET / c.rust_profile / "bench-passthrough"
    if not exe.exists():
        return f"{exe} is not built"
    return Launch([str(exe), "--bootstrap", c.bootstrap, "--input", c.input_topic, "--output", c.output_topic, "--group", c.group])


def kafka_streams(eos: bool) -> Callable[[Ctx], Launch | str]:
    def launch(c: Ctx) -> Launch | str:
        cp = java_cp("kafka-streams-peer", "kafka-streams-peer-0.1.0.jar")
        if not (BENCH_CACHE / "build/kafka-streams-peer/kafka-streams-peer-0.1.0.jar").exists():
            return "kafka-streams-peer jar is not built"
        state = c.run_dir / f"ks-state-{c.group}"
        return Launch(
            ["java", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", cp, "io.millrace.bench.streams.BenchStreams", c.workload, c.bootstrap,
             c.input_topic, c.output_topic, c.group, str(eos).lower(), str(c.parallelism), str(state)]
        )

    return launch


FLINK_OPENS = [
    f"--add-opens=java.base/{p}=ALL-UNNAMED"
    for p in ("java.lang", "java.util", "java.util.concurrent", "java.lang.reflect", "java.net", "java.io", "java.nio", "java.time", "java.text", "sun.nio.ch")
]


def flink(c: Ctx) -> Launch | str:
    if not (BENCH_CACHE / "build/flink-peer/flink-peer-0.1.0.jar").exists():
        return "flink-peer jar is not built"
    sql = ROOT / "bench/peers/flink" / f"{c.workload}.sql"
    props = [f"-Dbench.{k}={v}" for k, v in (("bootstrap", c.bootstrap), ("input", c.input_topic), ("output", c.output_topic), ("group", c.group))]
    return Launch(["java", *FLINK_OPENS, *props, "-cp", java_cp("flink-peer", "flink-peer-0.1.0.jar"),
                   "io.millrace.bench.flink.BenchFlinkSql", str(sql), str(c.parallelism)])


def quix(c: Ctx) -> Launch | str:
    py = BENCH_CACHE / "quix/bin/python"
    if not py.exists():
        return "the quix venv is not installed"
    return Launch([str(py), str(ROOT / "bench/peers/quix/app.py"), "--workload", c.workload, "--bootstrap", c.bootstrap,
                   "--input", c.input_topic, "--output", c.output_topic, "--group", c.group,
                   "--state-dir", str(c.run_dir / f"quix-state-{c.group}")])


def seed_python(c: Ctx) -> Launch | str:
    py = BENCH_CACHE / "seedpy/bin/python"
    if not py.exists():
        return "the seedpy venv is not installed"
    return Launch([str(py), str(ROOT / "bench/peers/seed-python/consumer.py"), "--bootstrap", c.bootstrap,
                   "--input", c.input_topic, "--output", c.output_topic, "--group", c.group])


MILLRACE_SQL = {
    # BENCH_MILLRACE_SEED_SQL: try a variant of the seed job (e.g. with tuned client properties).
    "seed": Path(os.environ.get("BENCH_MILLRACE_SEED_SQL", ROOT / "examples/seed/seed-a-rolling-average.sql")),
    "keyed": ROOT / "bench/peers/millrace/keyed.sql",
    "window": ROOT / "bench/peers/millrace/window.sql",
    "seed-fetch16m": ROOT / "bench/peers/millrace/seed-fetch16m.sql",
}


def millrace(c: Ctx, variant: str = "") -> Launch | str:
    exe = TARGET / c.rust_profile / "millrace-worker"
    # run-peers.sh writes why the engine could not be built; a stale binary is not used then.
    note = BENCH_CACHE / "millrace-build.txt"
    if note.exists() and note.read_text().strip():
        return note.read_text().strip().splitlines()[-1]
    if not exe.exists():
        return f"{exe} is not built"
    src = MILLRACE_SQL[f"{c.workload}-{variant}" if variant else c.workload]
    if not src.exists():
        return f"{src.relative_to(ROOT)} does not exist"
    sql = src.read_text()
    # The seed example names its topics and group; the bench gives each run its own.
    for old, new in (("'input-topic-dlq'", f"'{c.input_topic}-dlq-{c.group}'"), ("'input-topic'", f"'{c.input_topic}'"),
                     ("'output-topic'", f"'{c.output_topic}'"), ("'millrace-seed-a'", f"'{c.group}'"),
                     ("${input}", c.input_topic), ("${output}", c.output_topic), ("${group}", c.group), ("${bootstrap}", c.bootstrap)):
        sql = sql.replace(old, new)
    job = c.run_dir / f"millrace-{c.workload}-{c.group}.sql"
    job.write_text(sql)
    argv = [str(exe), "--ops-addr", "127.0.0.1:0", "run", "-f", str(job), "--parallelism", str(c.parallelism), "--kafka-bootstrap", c.bootstrap]
    explain = subprocess.run([*argv, "--explain"], capture_output=True, text=True, timeout=60)
    if explain.returncode != 0:
        lines = [ln for ln in (explain.stderr + explain.stdout).strip().splitlines() if ln.strip()]
        return "the engine refuses the job: " + (lines[-1] if lines else f"exit {explain.returncode}")
    return Launch(argv, env={"RUST_LOG": "warn"})


CONTENDERS: dict[str, Contender] = {
    c.name: c
    for c in [
        Contender("passthrough", "passthrough (rdkafka, no processing)", ("seed", "keyed", "window"), passthrough, startup_budget_s=30),
        Contender("millrace", "Millrace (millrace-worker run)", ("seed", "keyed", "window"), millrace, startup_budget_s=60),
        Contender("millrace-fetch16m", "Millrace, source fetch 16 MB/partition (experiment)", ("seed",),
                  lambda c: millrace(c, "fetch16m"), startup_budget_s=60),
        Contender("kafka-streams", "Kafka Streams 4.4 (at-least-once)", ("seed", "keyed", "window"), kafka_streams(False)),
        Contender("kafka-streams-eos", "Kafka Streams 4.4 (exactly-once v2)", ("seed", "keyed", "window"), kafka_streams(True), transactional=True),
        Contender("flink", "Flink 2.2 SQL (MiniCluster)", ("seed", "keyed", "window"), flink, startup_budget_s=120),
        Contender("quix", "Quix Streams 3.28", ("seed", "keyed", "window"), quix),
        Contender("seed-python", "seed article loop (kafka-python + pandas)", ("seed",), seed_python),
    ]
}


# ---------------------------------------------------------------- Kafka


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    client = admin(bootstrap)  # kept referenced: a collected client cancels its futures
    futures = client.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)], operation_timeout=30)
    futures[name].result(timeout=60)
    # Metadata propagates asynchronously: wait until a client sees every partition's leader.
    deadline = time.monotonic() + 30
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-probe"})
    try:
        while time.monotonic() < deadline:
            md = probe.list_topics(name, timeout=5).topics.get(name)
            if md and md.error is None and len(md.partitions) == partitions and all(p.leader >= 0 for p in md.partitions.values()):
                return
            time.sleep(0.1)
    finally:
        probe.close()
    raise RuntimeError(f"topic {name} did not become ready")


def delete_topics(bootstrap: str, prefix: str) -> None:
    a = admin(bootstrap)
    # Includes the contenders' internal topics (Kafka Streams changelogs, Quix changelogs).
    names = [t for t in a.list_topics(timeout=15).topics if prefix in t]
    if not names:
        return
    for f in a.delete_topics(names, operation_timeout=30).values():
        try:
            f.result(timeout=60)
        except KafkaException:
            pass


def produce(bootstrap: str, topic: str, inp: Input) -> float:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000,
                  "queue.buffering.max.messages": 2_000_000, "partitioner": "murmur2_random",
                  "enable.idempotence": True})
    start = time.monotonic()
    for key, value, partition in inp.records:
        while True:
            try:
                if partition is None:
                    p.produce(topic, value=value, key=key)
                else:
                    p.produce(topic, value=value, key=key, partition=partition)
                break
            except BufferError:
                p.poll(0.05)
    if p.flush(120) != 0:
        raise RuntimeError("input not fully produced")
    return time.monotonic() - start


class OutputReader:
    """Follows a topic: high watermarks for progress, a read_committed consumer for content."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.topic, self.partitions = topic, partitions
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-reader-{uuid.uuid4().hex[:8]}",
                                  "isolation.level": "read_committed", "enable.auto.commit": False,
                                  "fetch.max.bytes": 52_428_800})
        self.tps = [TopicPartition(topic, p, 0) for p in range(partitions)]
        self.consumer.assign(self.tps)
        self.records: list[tuple[int, bytes | None, bytes]] = []
        self.last_highs = [0] * partitions

    def high_watermarks(self) -> list[int]:
        """The partitions' high watermarks; the last known one where the broker cannot say now
        (a new topic's leadership still settling answers NOT_LEADER for a moment)."""
        for p in range(self.partitions):
            try:
                self.last_highs[p] = self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=5, cached=False)[1]
            except KafkaException:
                pass
        return list(self.last_highs)

    def drain(self, deadline_s: float = 3.0) -> None:
        """Reads everything committed so far (stops at the high watermarks seen on entry)."""
        highs = self.high_watermarks()
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            for m in self.consumer.consume(num_messages=10_000, timeout=0.1):
                if m.error() is None:
                    self.records.append((m.partition(), m.key(), m.value() or b""))
            positions = self.consumer.position(self.tps)
            if all(tp.offset >= h or (tp.offset < 0 and h == 0) for tp, h in zip(positions, highs)):
                return

    def close(self) -> None:
        self.consumer.close()


# ---------------------------------------------------------------- processes


def tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


class Meter:
    """CPU seconds and peak RSS of a process tree; exited children are remembered."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu: dict[int, float] = {}
        self.hwm_kb: dict[int, int] = {}

    def sample(self) -> tuple[float, int]:
        for p in tree(self.pid):
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                self.cpu[p] = (int(fields[11]) + int(fields[12])) / TICK
                with open(f"/proc/{p}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            self.hwm_kb[p] = max(self.hwm_kb.get(p, 0), int(line.split()[1]))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                pass
        return sum(self.cpu.values()), sum(self.hwm_kb.values())


def stop(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)


# ---------------------------------------------------------------- one run


@dataclass
class Result:
    workload: str
    contender: str
    label: str
    status: str  # ok | WRONG | incomplete | not available | failed
    detail: str = ""
    records: int = 0
    records_per_s: float | None = None
    cpu_s_per_million: float | None = None
    records_per_s_per_core: float | None = None
    cores_used: float | None = None
    peak_rss_mb: float | None = None
    time_to_done_s: float | None = None
    completed_fraction: float | None = None
    log: str = ""


def run_one(args: argparse.Namespace, wl: Workload, contender: Contender, inp: Input, reference: list,
            input_topic: str, run_id: str, run_dir: Path) -> Result:
    tag = f"{wl.name}-{contender.name}"
    out_topic = f"bench-{run_id}-{tag}-out"
    group = f"bench-{run_id}-{tag}"
    parallelism = 1 if wl.partitions == 1 else args.parallelism
    res = Result(wl.name, contender.name, contender.label, "failed", records=len(inp.records))
    ctx = Ctx(wl.name, args.bootstrap, input_topic, out_topic, group, parallelism, run_dir, args.rust_profile)
    try:
        launch = contender.launch(ctx)
    except Exception as e:  # a contender that cannot even be prepared is reported, not fatal
        launch = f"{type(e).__name__}: {e}"
    if isinstance(launch, str):
        res.status, res.detail = "not available", launch
        return res
    create_topic(args.bootstrap, out_topic, wl.partitions)
    is_passthrough = contender.name == "passthrough"
    expected = len(inp.records) if is_passthrough else wl.expected_count(reference)
    check = passthrough_check(inp) if is_passthrough else wl.check
    reader = OutputReader(args.bootstrap, out_topic, wl.partitions)
    log_path = run_dir / f"{tag}.log"
    res.log = str(log_path)
    env = {**os.environ, **launch.env}
    info(f"{tag}: {' '.join(launch.argv)[:160]}")
    with open(log_path, "w") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(launch.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=launch.cwd or run_dir, start_new_session=True)
    meter = Meter(proc.pid)
    samples: list[tuple[float, int, float]] = []  # (t, output offsets, cpu seconds)
    peak_kb = 0
    last_progress_t, last_out = t0, -1
    budget = args.budget_s
    reason = ""
    confirmed = 0
    first_out_t: float | None = None
    try:
        while True:
            time.sleep(SAMPLE_S)
            now = time.monotonic()
            cpu, hwm = meter.sample()
            peak_kb = max(peak_kb, hwm)
            out = sum(reader.high_watermarks())
            samples.append((now - t0, out, cpu))
            if out != last_out:
                last_out, last_progress_t = out, now
                if first_out_t is None and out > 0:
                    first_out_t = now
            if out >= expected:
                reader.drain()
                confirmed = len(reader.records)
                if confirmed >= expected:
                    reason = "done"
                    break
            if proc.poll() is not None:
                reason = f"exited with code {proc.returncode}"
                break
            stalled_for = now - last_progress_t
            if (out <= 0 and stalled_for > contender.startup_budget_s) or (out > 0 and stalled_for > args.stall_s):
                reason = f"no output progress for {stalled_for:.0f}s"
                break
            if first_out_t is not None and now - first_out_t > budget:
                reason = f"time budget {budget:.0f}s used up"
                break
    finally:
        stop(proc)
        for state in run_dir.glob(f"*-state-{group}"):
            shutil.rmtree(state, ignore_errors=True)
    reader.drain(deadline_s=10.0)
    reader.close()
    verdict: Verdict = check(reference, reader.records)
    res.peak_rss_mb = round(peak_kb / 1024, 1)
    res.completed_fraction = verdict.matched / expected if expected else 1.0
    if not verdict.ok:
        res.status, res.detail = "WRONG", verdict.detail
        return res
    if not samples or samples[-1][1] <= 0:
        tail = log_tail(log_path)
        res.status, res.detail = ("not available" if contender.name == "millrace" else "failed"), f"{reason}; {tail}"
        return res
    # Transaction markers take offsets too: shift the target by the markers seen at the end.
    markers = max(0, samples[-1][1] - len(reader.records)) if contender.transactional else 0
    final_out = min(verdict.matched, expected)
    hi_target = markers + final_out
    lo_target = LOW_FRACTION * expected
    lo = next((s for s in samples if s[1] >= lo_target), None)
    hi = next((s for s in samples if s[1] >= hi_target), samples[-1])
    if lo is None or hi[0] <= lo[0]:
        if verdict.complete:
            res.status, res.detail = "ok", f"{verdict.detail}; too fast to time at this size"
        else:
            res.status, res.detail = "incomplete", f"{reason}; too little output to time ({final_out}/{expected})"
        return res
    in_records = (min(hi[1] - markers, final_out) - lo[1]) / expected * len(inp.records)
    secs, cpu = hi[0] - lo[0], hi[2] - lo[2]
    res.records_per_s = in_records / secs
    res.cpu_s_per_million = cpu / in_records * 1e6 if in_records > 0 else None
    res.cores_used = cpu / secs
    res.records_per_s_per_core = in_records / cpu if cpu > 0 else None
    res.time_to_done_s = hi[0]
    if verdict.complete:
        res.status, res.detail = "ok", verdict.detail
    else:
        res.status, res.detail = "incomplete", f"{reason}; {verdict.detail} (speed measured on the part done)"
    return res


def log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except FileNotFoundError:
        return "no log"
    return " | ".join(text[-lines:])[-400:] or "empty log"


def info(msg: str) -> None:
    print(f"    {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- latency


@dataclass
class Latency:
    contender: str
    label: str
    status: str
    detail: str = ""
    rate: int = 0
    outputs: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    behind_s: float | None = None


def run_latency(args: argparse.Namespace, contender: Contender, run_id: str, run_dir: Path) -> Latency:
    """The seed workload at a fixed input rate: the time from producing an input record to the
    harness reading the output record it causes. Input is produced while the contender runs."""
    import threading

    from workloads import moving_average, seed_triggers, seed_values

    rate, secs, warm = args.latency_rate, args.latency_s, 200
    total = warm + int(rate * secs)
    values = seed_values(total)
    triggers = seed_triggers(values)
    reference = list(moving_average(iter(values)))
    tag = f"latency-{contender.name}"
    in_topic, out_topic, group = f"bench-{run_id}-{tag}-in", f"bench-{run_id}-{tag}-out", f"bench-{run_id}-{tag}"
    res = Latency(contender.name, contender.label, "failed", rate=rate)
    launch = contender.launch(Ctx("seed", args.bootstrap, in_topic, out_topic, group, 1, run_dir, args.rust_profile))
    if isinstance(launch, str):
        res.status, res.detail = "not available", launch
        return res
    create_topic(args.bootstrap, in_topic, 1)
    create_topic(args.bootstrap, out_topic, 1)
    recv: list[tuple[float, bytes]] = []
    done = threading.Event()

    def follow() -> None:
        c = Consumer({"bootstrap.servers": args.bootstrap, "group.id": f"{group}-reader", "fetch.wait.max.ms": 5,
                      "isolation.level": "read_committed", "enable.auto.commit": False})
        c.assign([TopicPartition(out_topic, 0, 0)])
        while not done.is_set():
            for m in c.consume(num_messages=1000, timeout=0.01):
                if m.error() is None:
                    recv.append((time.perf_counter(), m.value() or b""))
        c.close()

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 0, "enable.idempotence": True})
    sent = [0.0] * total
    log_path = run_dir / f"{tag}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(launch.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **launch.env}, cwd=run_dir, start_new_session=True)
    try:
        for i in range(warm):
            producer.produce(in_topic, value=str(values[i]).encode())
            sent[i] = time.perf_counter()
        producer.flush(30)
        deadline = time.monotonic() + contender.startup_budget_s
        while not recv and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        if not recv:
            res.detail = f"no output within {contender.startup_budget_s:.0f}s; {log_tail(log_path)}"
            return res
        start = time.perf_counter()
        for i in range(warm, total):
            due = start + (i - warm) / rate
            while (now := time.perf_counter()) < due:
                time.sleep(min(due - now, 0.001))
            producer.produce(in_topic, value=str(values[i]).encode())
            sent[i] = time.perf_counter()
            producer.poll(0)
        producer.flush(30)
        deadline = time.monotonic() + 30
        while len(recv) < len(triggers) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
    finally:
        done.set()
        stop(proc)
        reader.join(timeout=10)
    got = [float(v) for _, v in recv]
    res.outputs = len(got)
    bad = next((j for j, (g, w) in enumerate(zip(got, reference)) if abs(g - w) > 1e-6 * max(1.0, abs(w))), None)
    if bad is not None or len(got) > len(reference):
        res.status, res.detail = "WRONG", f"output {bad}: got {got[bad] if bad is not None else '?'}"
        return res
    lat = sorted((recv[j][0] - sent[triggers[j]]) * 1000 for j in range(len(recv)) if triggers[j] >= warm)
    if len(recv) < len(triggers):
        res.status, res.detail = "incomplete", f"{len(recv)}/{len(triggers)} outputs 30 s after the input ended: cannot keep up with {rate}/s"
    else:
        # How long after the last input the last output came: a contender slower than the rate
        # builds a backlog, and its latency then measures the backlog, not the engine.
        res.behind_s = recv[-1][0] - sent[triggers[-1]]
        res.status = "ok" if res.behind_s < 1.0 else "fell behind"
        if res.status != "ok":
            res.detail = f"slower than {rate}/s: the last output came {res.behind_s:.1f} s after the last input"
    if lat:
        res.p50_ms, res.p99_ms, res.max_ms = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))], lat[-1]
    return res


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--workloads", default="seed,keyed,window")
    ap.add_argument("--contenders", default=",".join(CONTENDERS))
    ap.add_argument("--parallelism", type=int, default=2, help="for the 8-partition workloads (1 partition → 1)")
    ap.add_argument("--budget-s", type=float, default=60.0, help="steady-state time a contender gets per workload")
    ap.add_argument("--stall-s", type=float, default=30.0)
    ap.add_argument("--results", type=Path, required=True, help="JSON results file")
    ap.add_argument("--latency-rate", type=int, default=0, help="also measure seed latency at this input rate (records/s); 0: skip")
    ap.add_argument("--latency-s", type=float, default=10.0)
    ap.add_argument("--rust-profile", default="release", choices=["release", "debug"], help="which build of the Rust contenders")
    ap.add_argument("--smoke", action="store_true", help="fail (exit 1) if any contender that ran is WRONG or failed")
    args = ap.parse_args()

    run_id = time.strftime("%m%d%H%M%S") + uuid.uuid4().hex[:4]
    run_dir = BENCH_CACHE / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    loadavg_start = os.getloadavg()
    try:
        for wname in args.workloads.split(","):
            wl = WORKLOADS[wname]
            info(f"workload {wname}: {args.records} records")
            inp = wl.make_input(args.records)
            reference = wl.reference(args.records)
            input_topic = f"bench-{run_id}-{wname}-in"
            create_topic(args.bootstrap, input_topic, wl.partitions)
            secs = produce(args.bootstrap, input_topic, inp)
            info(f"produced {len(inp.records)} records to {input_topic} in {secs:.1f}s; reference has {len(reference)} outputs")
            for cname in args.contenders.split(","):
                contender = CONTENDERS[cname]
                if wname not in contender.workloads:
                    continue
                r = run_one(args, wl, contender, inp, reference, input_topic, run_id, run_dir)
                rate = f"{r.records_per_s:,.0f} rec/s, {r.cpu_s_per_million:.2f} CPU-s/M" if r.records_per_s and r.cpu_s_per_million else ""
                info(f"  {wname}/{cname}: {r.status} {rate} {r.detail}"[:300])
                results.append(r)
        latencies: list[Latency] = []
        if args.latency_rate > 0:
            info(f"latency: seed workload at {args.latency_rate} records/s for {args.latency_s:.0f}s per contender")
            for cname in args.contenders.split(","):
                if cname in ("passthrough", "millrace-fetch16m") or "seed" not in CONTENDERS[cname].workloads:
                    continue
                lr = run_latency(args, CONTENDERS[cname], run_id, run_dir)
                info(f"  latency/{cname}: {lr.status} p50 {lr.p50_ms} ms p99 {lr.p99_ms} ms {lr.detail}"[:300])
                latencies.append(lr)
    finally:
        delete_topics(args.bootstrap, f"bench-{run_id}")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({
        "started": started, "run_id": run_id, "records": args.records, "parallelism": args.parallelism,
        "budget_s": args.budget_s, "python": platform.python_version(), "results": [asdict(r) for r in results],
        "loadavg_start": loadavg_start, "loadavg_end": os.getloadavg(),
        "latency_rate": args.latency_rate, "latency_s": args.latency_s, "latency": [asdict(r) for r in latencies],
    }, indent=2))
    bad = [r for r in results if r.status in ("WRONG", "failed")]
    if args.smoke:
        bad += [r for r in results if r.status == "incomplete"]
    for r in bad:
        info(f"{r.workload}/{r.contender}: {r.status}: {r.detail}")
    return 1 if bad and args.smoke else 0


if __name__ == "__main__":
    sys.exit(main())
