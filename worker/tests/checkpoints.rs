//! Checkpoints, stop and restore, in one process: every golden case (see `tests/golden.rs`)
//! is run with checkpoints, stopped at a checkpoint part-way through its input, and resumed
//! from that checkpoint, at the same or another parallelism. With two-phase-commit memory
//! sinks (rows visible only once their checkpoint commits), the output of the two runs
//! together must be the uninterrupted run's expected output: nothing lost, nothing twice.
//! Also: a plan change that leaves state behind is refused, naming the state, and corrupt
//! checkpoint metadata is an error, not a panic.

use std::path::Path;
use std::time::{Duration, Instant};

use golden_case::{cases_dir, job_sql, read, records, rows_as_json, upserted_table};
use millrace_connectors::{Format, MemoryRecord, MemorySink, SinkConnector, SourceConnector, StopSignal};
use millrace_worker::{CheckpointSettings, Job, JobMetrics, JobOptions, JobOverrides};
use prometheus_client::registry::Registry;
use serde_json::Value;

#[path = "support/golden_case.rs"]
mod golden_case;

/// One run of a case: its committed output and whether it stopped before its input ended.
struct RunOutput {
    rows: Vec<Value>,
    late: Vec<Value>,
    read_all: bool,
}

fn counter_total(registry: &Registry, name: &str) -> u64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("metrics encode");
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum::<f64>() as u64
}

struct CaseRun<'a> {
    sql: &'a str,
    input: &'a [MemoryRecord],
    format: Format,
    /// The other sources of a join: table, records, format.
    join_inputs: Vec<(String, Vec<MemoryRecord>, Format)>,
    checkpoint_dir: &'a Path,
}

impl CaseRun<'_> {
    /// Runs at `parallelism`; with `stop_after` checkpoints completed, stops there.
    async fn run(&self, parallelism: usize, stop_after: Option<u64>) -> Result<RunOutput, String> {
        let plan = millrace_sql::plan_job(self.sql).map_err(|e| format!("planning: {e}"))?;
        // Paced so that checkpoints fall between records, not only at the ends.
        // A join's few records per input are paced slower still (its checkpoints align
        // barriers over two inputs).
        let floor = if self.join_inputs.is_empty() { 5.0 } else { 1.0 };
        // A run that stops holds each source instance after len / (2 × parallelism) records
        // (half the input at parallelism 1), so the stop's checkpoint always leaves input
        // unread, however slow the machine: at least one instance has more records than that.
        let source = |input: &[MemoryRecord], format: Format| {
            let rate = (input.len() as f64 / 4.0).max(floor);
            let paced = SourceConnector::paced_memory(input.to_vec(), format, 1, rate);
            match stop_after {
                Some(_) => paced.holding_after(input.len() / (2 * parallelism)),
                None => paced,
            }
        };
        let sink = MemorySink::transactional();
        let late_sink = MemorySink::transactional();
        let mut overrides = JobOverrides::default();
        overrides.sources.insert(plan.source.name.clone(), source(self.input, self.format));
        for (table, input, format) in &self.join_inputs {
            overrides.sources.insert(table.clone(), source(input, *format));
        }
        overrides.sinks.insert(plan.sink.name.clone(), SinkConnector::memory(sink.clone()));
        overrides.late = Some(SinkConnector::memory(late_sink.clone()));
        let options = JobOptions {
            parallelism,
            slots: parallelism,
            checkpointing: Some(CheckpointSettings {
                storage_url: format!("file://{}", self.checkpoint_dir.display()),
                interval: Duration::from_millis(50),
                retained: 2,
                timeout: Duration::from_secs(20),
                crash_after_checkpoint: None,
            }),
            ..JobOptions::default()
        };
        let job = Job::prepare(self.sql, &options, overrides).map_err(|e| format!("preparing: {e}"))?;
        let mut registry = Registry::default();
        let metrics = JobMetrics::register(&mut registry);
        let stop = StopSignal::default();
        let running = job.run(&options, &metrics, &stop);
        let stopper = async {
            let Some(after) = stop_after else { return std::future::pending().await };
            let deadline = Instant::now() + Duration::from_secs(20);
            while metrics.checkpoints.last_completed_id.get() < after as i64 {
                assert!(Instant::now() < deadline, "no checkpoint completed within 20 s");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            stop.stop();
            std::future::pending::<()>().await
        };
        let outcome = tokio::time::timeout(Duration::from_secs(60), async {
            tokio::select! {
                result = running => result,
                () = stopper => unreachable!("the stopper never resolves"),
            }
        })
        .await
        .map_err(|_| "the job did not finish within 60 s".to_string())?;
        outcome.map_err(|e| format!("running: {e}"))?;
        // Records read: decoded, plus those dropped or dead-lettered as undecodable.
        let read = counter_total(&registry, "source_records_total")
            + counter_total(&registry, "dead_lettered_records_total");
        Ok(RunOutput {
            rows: rows_as_json(&sink.batches()),
            late: rows_as_json(&late_sink.batches()),
            read_all: read as usize
                >= self.input.len() + self.join_inputs.iter().map(|(_, i, _)| i.len()).sum::<usize>(),
        })
    }
}

fn sorted(mut rows: Vec<Value>) -> Vec<Value> {
    rows.sort_by_key(Value::to_string);
    rows
}

/// Runs a case stopped at a checkpoint and resumed; checks the output. `Ok(true)` when the
/// first run stopped before reading all its input (the restore then had work to do).
async fn stop_and_resume(case: &Path, first: usize, second: usize) -> Result<bool, String> {
    let sql = job_sql(case);
    let plan = millrace_sql::plan_job(&sql).map_err(|e| format!("planning: {e}"))?;
    let format = match plan.source.options.get("format").map(String::as_str) {
        Some("json") => Format::Json,
        _ => Format::Raw,
    };
    let input = records(&case.join("inputs").join(format!("{}.json", plan.source.name)));
    let join_inputs = plan
        .join_sources
        .iter()
        .map(|t| {
            let format = if t.options.get("format").map(String::as_str) == Some("json") {
                Format::Json
            } else {
                Format::Raw
            };
            (t.name.clone(), records(&case.join("inputs").join(format!("{}.json", t.name))), format)
        })
        .collect();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let run = CaseRun { sql: &sql, input: &input, format, join_inputs, checkpoint_dir: dir.path() };
    let before = run.run(first, Some(1)).await?;
    let stopped_mid_input = !before.read_all;
    let after = run.run(second, None).await?;
    let rows: Vec<Value> = before.rows.into_iter().chain(after.rows).collect();
    let late: Vec<Value> = before.late.into_iter().chain(after.late).collect();

    let expected: Value =
        serde_json::from_str(&read(&case.join("expected.json"))).map_err(|e| e.to_string())?;
    let mut problems = Vec::new();
    if let Some(final_rows) = expected["final_rows"].as_array() {
        let key: Vec<String> = plan
            .dataflow
            .changelog
            .as_ref()
            .map(|c| c.key.iter().map(|&i| plan.dataflow.output_schema.field(i).name().clone()).collect())
            .unwrap_or_default();
        if upserted_table(&rows, &key) != sorted(final_rows.clone()) {
            problems.push(format!(
                "final table differs: got {}",
                serde_json::to_string(&upserted_table(&rows, &key)).unwrap_or_default()
            ));
        }
    }
    if let Some(want) = expected["rows"].as_array()
        && sorted(want.clone()) != sorted(rows.clone())
    {
        problems.push(format!(
            "rows differ\n  expected: {}\n  got:      {}",
            serde_json::to_string(&sorted(want.clone())).unwrap_or_default(),
            serde_json::to_string(&sorted(rows)).unwrap_or_default()
        ));
    }
    let want_late = sorted(expected["late_rows"].as_array().cloned().unwrap_or_default());
    if want_late != sorted(late.clone()) {
        problems.push(format!(
            "late rows differ: got {}",
            serde_json::to_string(&sorted(late)).unwrap_or_default()
        ));
    }
    if problems.is_empty() { Ok(stopped_mid_input) } else { Err(problems.join("\n")) }
}

/// Cases whose results depend on the wall clock (processing time, state TTL) cannot be
/// replayed.
fn replayable(sql: &str) -> bool {
    let sql = sql.to_lowercase();
    !sql.contains("proctime") && !sql.contains("table.exec.state.ttl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_golden_case_survives_a_stop_at_a_checkpoint_and_a_restore() {
    let mut cases: Vec<_> = std::fs::read_dir(cases_dir())
        .expect("tests/golden exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && replayable(&job_sql(p)))
        // MILLRACE_CASE=<name> runs one case (debugging).
        .filter(|p| std::env::var("MILLRACE_CASE").map_or(true, |case| p.ends_with(case)))
        .collect();
    cases.sort();
    if std::env::var("RUST_LOG").is_ok() {
        millrace_telemetry::init_tracing("info");
    }
    assert!(!cases.is_empty(), "expected the golden cases");
    let runs = cases.iter().flat_map(|case| {
        let expected: Value = serde_json::from_str(&read(&case.join("expected.json"))).unwrap_or(Value::Null);
        let parallel =
            expected["parallelism"].as_array().is_some_and(|a| a.iter().any(|p| p.as_u64() == Some(2)));
        let pairs: &[(usize, usize)] = if parallel { &[(1, 2), (2, 1)] } else { &[(1, 1)] };
        pairs.iter().map(move |&(a, b)| (case.clone(), a, b))
    });
    let results = futures::future::join_all(runs.map(|(case, a, b)| async move {
        let name =
            format!("{} ({a} -> {b})", case.file_name().map(|n| n.to_string_lossy()).unwrap_or_default());
        (name, stop_and_resume(&case, a, b).await)
    }))
    .await;
    let mut failures = Vec::new();
    let (mut mid_input, mut runs) = (0, 0);
    for (name, result) in results {
        match result {
            Ok(stopped_mid_input) => {
                runs += 1;
                mid_input += usize::from(stopped_mid_input);
                let note = if stopped_mid_input { "" } else { " (its first run had read all its input)" };
                eprintln!("ok   {name}{note}");
            }
            Err(problem) => failures.push(format!("FAIL {name}: {problem}")),
        }
    }
    assert!(failures.is_empty(), "{} failed:\n{}", failures.len(), failures.join("\n\n"));
    // The first runs' sources hold part-way, so every stop leaves input for the restore.
    assert_eq!(mid_input, runs, "first runs that stopped before their input ended");
}

/// A source instance whose partitions end early must not be read again after a restore from
/// a checkpoint taken after it finished: its end positions are part of every later checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_source_instance_that_finished_early_is_not_read_again_after_a_restore() {
    let sql = "CREATE TABLE input (v BIGINT) WITH (connector = 'kafka', topic = 'in', format = 'raw');
               CREATE TABLE output (v BIGINT) WITH (connector = 'kafka', topic = 'out', format = 'raw');
               INSERT INTO output SELECT v FROM input;";
    // Partition 0 (instance 0 of 2) has two records; partition 1 has 300.
    let record = |partition: i32, v: i64| MemoryRecord {
        partition,
        timestamp_ms: None,
        value: Some(v.to_string().into_bytes()),
    };
    let mut input: Vec<MemoryRecord> = vec![record(0, -1), record(0, -2)];
    input.extend((0..300).map(|v| record(1, v)));
    let dir = tempfile::tempdir().expect("temp dir");
    let run = CaseRun {
        sql,
        input: &input,
        format: Format::Raw,
        join_inputs: Vec::new(),
        checkpoint_dir: dir.path(),
    };
    // Instance 0 reads its two records and ends; instance 1 holds after 75 of its 300.
    let before = run.run(2, Some(4)).await.expect("first run");
    assert!(!before.read_all, "the first run must stop before its input ends");
    let after = run.run(2, None).await.expect("resumed run");
    let mut values: Vec<i64> =
        before.rows.iter().chain(&after.rows).map(|r| r["v"].as_i64().expect("v")).collect();
    values.sort_unstable();
    let mut expected: Vec<i64> = vec![-2, -1];
    expected.extend(0..300);
    assert_eq!(values, expected, "every record exactly once across the stop");
}
