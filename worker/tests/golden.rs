//! Golden-file tests of SQL semantics. Each directory under `tests/golden/` is a case:
//!
//! - `job.sql` (or `example`, naming a job file relative to the repository root),
//! - `inputs/<table>.json`: each source table's records (a join reads two),
//!   `[{"partition", "timestamp", "value"}]` (`value` is the raw text, or a JSON value that is
//!   serialized for `format = 'json'`),
//! - `expected.json`: `rows` (the sink's rows as JSON objects), `ordered`, `parallelism` (each
//!   is run), `dead_lettered` and `late_records` (counted in the job's metrics), and, for a
//!   source table with a late side output (`late_topic`/`late_path`), `late_rows`: the rows
//!   that reach it (compared unordered).
//! - `paced` (optional, `{"<table>": records_per_second}`): feeds that source at most so fast,
//!   for joins whose result depends on the other input having ended first (a row late at a
//!   join is late against the minimum of both inputs' watermarks) or on wall-clock state TTL.
//! - For an updating query (an upsert stream, see `millrace_types::changelog`), each sink row
//!   carries its row kind as an `"op"` field (`"+I"`, `"+U"`, `"-D"`), so `rows` asserts the
//!   changelog; `final_rows` asserts the upserted table instead or as well: the last row per
//!   upsert key, deleted keys removed, without `op` (compared unordered). A case with
//!   `final_rows` and no `rows` checks only the final table (for parallelisms at which the
//!   changelog's interleaving is not deterministic).
//!
//! The job runs for real (planning, runtime, decoders), with its Kafka source and sink
//! replaced by in-memory ones that feed one record per batch, so watermarks advance after
//! every record and results are deterministic.

use std::path::{Path, PathBuf};
use std::time::Duration;

use golden_case::{cases_dir, job_sql, read, records, rows_as_json, upserted_table};
use millrace_connectors::{Format, MemorySink, SinkConnector, SourceConnector, StopSignal};
use millrace_worker::{Job, JobMetrics, JobOptions, JobOverrides};
use prometheus_client::registry::Registry;
use serde_json::Value;

#[path = "support/golden_case.rs"]
mod golden_case;

/// Sums a counter over all its label sets in the registry's text encoding.
fn counter_total(registry: &Registry, name: &str) -> u64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("metrics encode");
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum::<f64>() as u64
}

async fn run_case(case: &Path, parallelism: usize) -> Result<(), String> {
    let sql = job_sql(case);
    let plan = millrace_sql::plan_job(&sql).map_err(|e| format!("planning: {e}"))?;
    let expected: Value =
        serde_json::from_str(&read(&case.join("expected.json"))).map_err(|e| e.to_string())?;
    let sink = MemorySink::default();
    let mut overrides = JobOverrides::default();
    for source in std::iter::once(&plan.source).chain(&plan.join_sources) {
        let format = match source.options.get("format").map(String::as_str) {
            Some("json") => Format::Json,
            _ => Format::Raw,
        };
        let input = records(&case.join("inputs").join(format!("{}.json", source.name)));
        let connector = match expected["paced"][&source.name].as_f64() {
            Some(per_second) => SourceConnector::paced_memory(input, format, 1, per_second),
            None => SourceConnector::memory(input, format, 1),
        };
        overrides.sources.insert(source.name.clone(), connector);
    }
    overrides.sinks.insert(plan.sink.name.clone(), SinkConnector::memory(sink.clone()));
    let late_sink = MemorySink::default();
    overrides.late = Some(SinkConnector::memory(late_sink.clone()));
    let options = JobOptions { parallelism, slots: parallelism, ..JobOptions::default() };
    let job = Job::prepare(&sql, &options, overrides).map_err(|e| format!("preparing: {e}"))?;
    let mut registry = Registry::default();
    let metrics = JobMetrics::register(&mut registry);
    tokio::time::timeout(Duration::from_secs(60), job.run(&options, &metrics, &StopSignal::default()))
        .await
        .map_err(|_| "the job did not finish within 60 s".to_string())?
        .map_err(|e| format!("running: {e}"))?;

    let mut want: Vec<Value> = expected["rows"].as_array().cloned().unwrap_or_default();
    let mut got = rows_as_json(&sink.batches());
    let mut problems = Vec::new();
    if let Some(final_rows) = expected["final_rows"].as_array() {
        let key: Vec<String> = match &plan.dataflow.changelog {
            Some(changelog) => {
                changelog.key.iter().map(|&i| plan.dataflow.output_schema.field(i).name().clone()).collect()
            }
            None => return Err("final_rows needs an updating query".into()),
        };
        let mut want_final = final_rows.clone();
        want_final.sort_by_key(Value::to_string);
        let got_final = upserted_table(&got, &key);
        if got_final != want_final {
            problems.push(format!(
                "final table differs\n  expected: {}\n  got:      {}",
                serde_json::to_string(&want_final).unwrap_or_default(),
                serde_json::to_string(&got_final).unwrap_or_default()
            ));
        }
    }
    if !expected["ordered"].as_bool().unwrap_or(true) {
        want.sort_by_key(Value::to_string);
        got.sort_by_key(Value::to_string);
    }
    let check_rows = expected.get("rows").is_some() || expected.get("final_rows").is_none();
    if check_rows && got != want {
        problems.push(format!(
            "rows differ\n  expected: {}\n  got:      {}",
            serde_json::to_string(&want).unwrap_or_default(),
            serde_json::to_string(&got).unwrap_or_default()
        ));
    }
    let mut want_late: Vec<Value> = expected["late_rows"].as_array().cloned().unwrap_or_default();
    let mut got_late = rows_as_json(&late_sink.batches());
    want_late.sort_by_key(Value::to_string);
    got_late.sort_by_key(Value::to_string);
    if got_late != want_late {
        problems.push(format!(
            "late side output differs\n  expected: {}\n  got:      {}",
            serde_json::to_string(&want_late).unwrap_or_default(),
            serde_json::to_string(&got_late).unwrap_or_default()
        ));
    }
    for (key, metric) in
        [("dead_lettered", "dead_lettered_records_total"), ("late_records", "late_records_total")]
    {
        let want = expected[key].as_u64().unwrap_or(0);
        let got = counter_total(&registry, metric);
        if got != want {
            problems.push(format!("{key}: expected {want}, counted {got}"));
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn golden_cases() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("tests/golden exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 5, "expected the golden cases, found {}", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let expected: Value = serde_json::from_str(&read(&case.join("expected.json")))
            .unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        let parallelisms: Vec<usize> = expected["parallelism"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).map(|p| p as usize).collect())
            .unwrap_or_else(|| vec![1]);
        for p in parallelisms {
            let name = format!(
                "{} (parallelism {p})",
                case.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
            );
            match run_case(case, p).await {
                Ok(()) => eprintln!("ok   {name}"),
                Err(problem) => failures.push(format!("FAIL {name}: {problem}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
