//! The limit on operator state (`SET 'state.max-bytes'`, `--state-max-bytes`): a job whose
//! keyed state outgrows it fails with a reason that names the operator, its size and the
//! limit — over processes (the coordinator's `lastError`, phase FAILED) and in one (`run`
//! exits non-zero saying so) — instead of growing until the kernel kills it. Under the limit
//! the state is counted: `GET /v1/job` shows `state.bytes` and `state.maxBytes`, `/metrics`
//! the bytes per operator.

#[path = "support/roles.rs"]
mod roles_support;

use std::path::Path;
use std::time::{Duration, Instant};

use roles_support::{DEADLINE, RoleProcess, free_port, phase};

/// A GROUP BY over a key range so wide that nearly every row is a new key; `input` the
/// generator's extra options.
fn growing_sql(output: &Path, limit: Option<&str>, input: &str) -> String {
    let set = limit.map(|l| format!("SET 'state.max-bytes' = '{l}';\n")).unwrap_or_default();
    format!(
        "{set}CREATE TABLE input (v BIGINT) WITH (connector = 'generator', {input}, min = '0',
           max = '1000000000000', seed = '3', batch_size = '500');
         CREATE TABLE output (k BIGINT, n BIGINT, PRIMARY KEY (k) NOT ENFORCED)
           WITH (connector = 'file', path = '{}', format = 'json');
         INSERT INTO output SELECT v AS k, COUNT(*) AS n FROM input GROUP BY v;",
        output.display()
    )
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

#[test]
fn state_over_the_sql_limit_fails_the_job_over_processes_naming_operator_size_and_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let job = d.join("job.sql");
    std::fs::write(&job, growing_sql(&d.join("out.jsonl"), Some("256 kb"), "count = '2000000'"))
        .expect("job");
    let rpc = format!("127.0.0.1:{}", free_port());
    let args =
        owned(&["coordinator", "-f", &job.display().to_string(), "--parallelism", "2", "--listen", &rpc]);
    let mut coordinator = RoleProcess::start("coordinator", d, &args, &[]);
    let _worker =
        RoleProcess::start("worker", d, &owned(&["worker", "--coordinator", &rpc, "--slots", "2"]), &[]);
    let failed = coordinator.wait_for_job("FAILED", |job| phase(job) == "FAILED");
    let error = failed["lastError"].as_str().unwrap_or_default();
    assert!(error.contains("s1.updating_aggregate"), "names the operator: {failed}");
    assert!(error.contains("state.max-bytes = 262144 bytes"), "names the limit: {failed}");
    let bytes = operator_bytes(error).unwrap_or_else(|| panic!("names the operator's size: {error}"));
    assert!(bytes > 0 && bytes <= 262_144 + 200_000, "{bytes} bytes: one batch past the limit at most");
    assert!(coordinator.terminate().success(), "{}", coordinator.logs());
}

/// The operator instance's bytes a state-limit message gives.
fn operator_bytes(error: &str) -> Option<u64> {
    let (_, rest) = error.split_once("this operator instance holds ")?;
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn the_process_flag_wins_over_the_sql_and_run_exits_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let job = d.join("job.sql");
    // The SQL allows 1 GiB; the process only 128 KiB.
    std::fs::write(&job, growing_sql(&d.join("out.jsonl"), Some("1 gb"), "count = '2000000'")).expect("job");
    let args = owned(&["run", "-f", &job.display().to_string(), "--state-max-bytes", "128kb"]);
    let mut run = RoleProcess::start("run", d, &args, &[]);
    let status = run.wait_exit();
    assert!(!status.success(), "{}", run.logs());
    let log = run.log();
    assert!(log.contains("s1.updating_aggregate"), "{log}");
    assert!(log.contains("state.max-bytes = 131072 bytes"), "{log}");
}

#[test]
fn state_under_the_limit_is_counted_in_the_status_and_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let job = d.join("job.sql");
    // Unbounded and slow: far under the limit while it is asked, until SIGTERM.
    std::fs::write(&job, growing_sql(&d.join("out.jsonl"), None, "rows_per_second = '5000'")).expect("job");
    let args = owned(&["run", "-f", &job.display().to_string(), "--state-max-bytes", "64mb"]);
    let mut run = RoleProcess::start("run", d, &args, &[]);
    let started = Instant::now();
    let view = loop {
        let job = run.job();
        let bytes = job["state"]["bytes"].as_i64().unwrap_or(0);
        if bytes > 0 && job["state"]["maxBytes"].as_i64() == Some(64 << 20) {
            break job;
        }
        if started.elapsed() > DEADLINE {
            panic!("no state bytes in /v1/job: {job}\n{}", run.logs());
        }
        run.assert_running();
        std::thread::park_timeout(Duration::from_millis(20));
    };
    let (status, metrics) = run.http("GET", "/metrics", None);
    assert_eq!(status, 200);
    let operator: i64 = metrics
        .lines()
        .find(|l| l.starts_with("millrace_worker_state_bytes{operator=\"s1.updating_aggregate\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no state_bytes for the aggregate:\n{metrics}"));
    assert!(operator > 0, "{metrics}");
    assert!(metrics.contains("millrace_worker_state_max_bytes 67108864"), "{metrics}");
    assert!(view["state"]["bytes"].as_i64().unwrap_or(0) > 0, "{view}");
    let _ = run.terminate();
}
