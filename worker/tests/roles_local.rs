//! Jobs over processes without Kafka. A keyed updating aggregate over the generator into a
//! file sink, at parallelism 4 on a coordinator and two workers × 2 slots, stopped with a
//! savepoint through the coordinator's control API (which keeps serving, FINISHED, with the
//! savepoint's location), then resumed from the savepoint by a new coordinator on four
//! workers × 1 slot: the final table equals the one `millrace-worker run` computes without
//! interruption. A job whose sink fails on a worker is restarted, then FAILED with the
//! reason once it failed more often than `--restart-attempts` allows. A worker that hangs
//! (SIGSTOP) is found by its missing heartbeats and replaced; when it wakes up it registers
//! again. A join (two generators) over two workers gives what one process gives.

#[path = "support/roles.rs"]
mod roles_support;

use std::collections::BTreeMap;
use std::path::Path;

use roles_support::{RoleProcess, free_port, last_checkpoint, phase, stop_with_savepoint};

fn job_sql(output: &Path) -> String {
    format!(
        "CREATE TABLE input (v BIGINT) WITH (connector = 'generator', count = '12000', min = '0',
           max = '999', seed = '7', batch_size = '200', rows_per_second = '3000');
         CREATE TABLE output (k BIGINT, n BIGINT, s BIGINT, PRIMARY KEY (k) NOT ENFORCED)
           WITH (connector = 'file', path = '{}', format = 'json');
         INSERT INTO output SELECT v % 17 AS k, COUNT(*) AS n, SUM(v) AS s FROM input GROUP BY v % 17;",
        output.display()
    )
}

/// The upserted table a file sink's changelog lines leave: the last row per key.
fn final_table(path: &Path) -> BTreeMap<i64, (i64, i64)> {
    let text = std::fs::read_to_string(path).expect("sink output");
    let mut table = BTreeMap::new();
    for line in text.lines() {
        let row: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        let k = row["k"].as_i64().expect("k");
        table.insert(k, (row["n"].as_i64().expect("n"), row["s"].as_i64().expect("s")));
    }
    table
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

#[test]
fn a_savepoint_stops_the_job_over_processes_and_it_resumes_on_another_layout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();

    // The uninterrupted run, in one process.
    let reference = d.join("reference.jsonl");
    std::fs::write(d.join("reference.sql"), job_sql(&reference)).expect("job");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_millrace-worker"))
        .args(["--ops-addr", &format!("127.0.0.1:{}", free_port()), "run", "-f"])
        .arg(d.join("reference.sql"))
        .args(["--parallelism", "4"])
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run");
    assert!(status.success());
    let expected = final_table(&reference);
    assert_eq!(expected.len(), 17);

    let output = d.join("output.jsonl");
    let job = d.join("job.sql");
    std::fs::write(&job, job_sql(&output)).expect("job");
    let job = job.display().to_string();
    let savepoint = format!("file://{}/savepoint", d.display());
    let start = |name: &str, checkpoints: &str, restore: Option<&str>, workers: usize, slots: &str| {
        let rpc = format!("127.0.0.1:{}", free_port());
        let checkpoints = format!("file://{}/{checkpoints}", d.display());
        let mut args = owned(&[
            "coordinator",
            "-f",
            &job,
            "--parallelism",
            "4",
            "--listen",
            &rpc,
            "--checkpoint-dir",
            &checkpoints,
            "--checkpoint-interval",
            "200ms",
        ]);
        if let Some(restore) = restore {
            args.extend(owned(&["--restore-from", restore]));
        }
        let coordinator = RoleProcess::start(&format!("{name}-coordinator"), d, &args, &[]);
        let worker_args = owned(&["worker", "--coordinator", &rpc, "--slots", slots]);
        let workers: Vec<RoleProcess> = (0..workers)
            .map(|i| RoleProcess::start(&format!("{name}-worker-{i}"), d, &worker_args, &[]))
            .collect();
        (coordinator, workers)
    };

    // Two workers × 2 slots; stop with a savepoint once a checkpoint completed.
    let (mut coordinator, mut workers) = start("first", "chk-a", None, 2, "2");
    coordinator.wait_for_job("a checkpoint", |job| phase(job) == "RUNNING" && last_checkpoint(job) > 0);
    let location = stop_with_savepoint(&mut coordinator, &savepoint);
    let stopped_at = final_table(&output);
    assert!(
        stopped_at.values().map(|(n, _)| n).sum::<i64>() < expected.values().map(|(n, _)| n).sum::<i64>(),
        "the stop came after the input ended; nothing is left to resume"
    );
    assert!(coordinator.terminate().success(), "exit 0 on SIGTERM\n{}", coordinator.logs());
    for worker in &mut workers {
        assert!(worker.terminate().success(), "{}", worker.logs());
    }

    // Four workers × 1 slot, from the savepoint.
    let (mut coordinator, _workers) = start("second", "chk-b", Some(&location), 4, "1");
    let finished = coordinator.wait_for_job("the resumed job to finish", |job| phase(job) == "FINISHED");
    assert!(finished["restoredFrom"].as_str().is_some_and(|from| from.contains("savepoint")), "{finished}");
    assert_eq!(finished["workers"], 4, "{finished}");
    assert_eq!(
        final_table(&output),
        expected,
        "stop + resume over processes differs from the uninterrupted run"
    );
    assert!(coordinator.terminate().success(), "{}", coordinator.logs());
}

#[test]
fn a_task_failing_on_a_worker_restarts_the_job_then_fails_it_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // The sink's folder does not exist: every attempt's sink fails on the worker.
    let output = d.join("missing-folder").join("output.jsonl");
    let job = d.join("job.sql");
    std::fs::write(&job, job_sql(&output)).expect("job");
    let rpc = format!("127.0.0.1:{}", free_port());
    let checkpoints = format!("file://{}/checkpoints", d.display());
    let args = owned(&[
        "coordinator",
        "-f",
        &job.display().to_string(),
        "--parallelism",
        "2",
        "--listen",
        &rpc,
        "--checkpoint-dir",
        &checkpoints,
        "--restart-attempts",
        "1",
        "--restart-window",
        "10m",
    ]);
    let mut coordinator = RoleProcess::start("coordinator", d, &args, &[]);
    let _worker =
        RoleProcess::start("worker", d, &owned(&["worker", "--coordinator", &rpc, "--slots", "2"]), &[]);
    let failed = coordinator.wait_for_job("FAILED", |job| phase(job) == "FAILED");
    let error = failed["lastError"].as_str().unwrap_or_default();
    assert!(error.contains("missing-folder"), "the reason names the sink's path: {failed}");
    assert!(error.contains("2 failures within 600 s"), "{failed}");
    let log = coordinator.log();
    assert_eq!(log.matches("restarting from its newest checkpoint").count(), 1, "{log}");
    // FAILED is final, and the API keeps answering.
    assert_eq!(phase(&coordinator.job()), "FAILED");
    assert!(coordinator.terminate().success(), "{}", coordinator.logs());
}

#[test]
fn a_hung_worker_is_found_by_its_heartbeats_and_replaced_and_registers_again_when_it_wakes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let output = d.join("output.jsonl");
    let job = d.join("job.sql");
    // Unbounded input: the job runs until the test ends it.
    let sql = job_sql(&output).replace("count = '12000', ", "");
    std::fs::write(&job, sql).expect("job");
    let rpc = format!("127.0.0.1:{}", free_port());
    let checkpoints = format!("file://{}/checkpoints", d.display());
    let args = owned(&[
        "coordinator",
        "-f",
        &job.display().to_string(),
        "--parallelism",
        "2",
        "--listen",
        &rpc,
        "--checkpoint-dir",
        &checkpoints,
        "--checkpoint-interval",
        "200ms",
    ]);
    let mut coordinator = RoleProcess::start("coordinator", d, &args, &[]);
    let worker_args = owned(&["worker", "--coordinator", &rpc, "--slots", "1"]);
    let hung = RoleProcess::start("worker-a", d, &worker_args, &[]);
    let _other = RoleProcess::start("worker-b", d, &worker_args, &[]);
    let running =
        coordinator.wait_for_job("a checkpoint", |job| phase(job) == "RUNNING" && last_checkpoint(job) > 0);
    hung.signal("STOP");
    let stopped_at = std::time::Instant::now();
    let _replacement = RoleProcess::start("worker-c", d, &worker_args, &[]);
    let restarting = coordinator.wait_for_job("the hung worker's loss", |job| phase(job) == "RESTARTING");
    assert!(
        stopped_at.elapsed() >= std::time::Duration::from_secs(9),
        "noticed before the heartbeat timeout"
    );
    let error = restarting["lastError"].as_str().unwrap_or_default();
    assert!(error.contains("no message for 10 s"), "{restarting}");
    coordinator.wait_for_job("the job running again on the replacement", |job| {
        phase(job) == "RUNNING" && last_checkpoint(job) > last_checkpoint(&running)
    });
    hung.signal("CONT");
    coordinator.wait_for_job("the woken worker registering again", |job| job["workers"] == 3);
    assert_eq!(phase(&coordinator.job()), "RUNNING", "a spare worker registering does not disturb the job");
    assert!(coordinator.terminate().success(), "{}", coordinator.logs());
}

/// Two generators joined on a key, then counted per key: both join inputs cross processes
/// (hash exchanges from every source subtask into the join stage's subtasks).
fn join_sql(output: &Path) -> String {
    format!(
        "CREATE TABLE a (v BIGINT) WITH (connector = 'generator', count = '3000', min = '0',
           max = '49', seed = '3', batch_size = '100', rows_per_second = '3000');
         CREATE TABLE b (w BIGINT) WITH (connector = 'generator', count = '200', min = '0',
           max = '49', seed = '5', batch_size = '50', rows_per_second = '400');
         CREATE TABLE output (k BIGINT, n BIGINT, s BIGINT, PRIMARY KEY (k) NOT ENFORCED)
           WITH (connector = 'file', path = '{}', format = 'json');
         INSERT INTO output SELECT a.v AS k, COUNT(*) AS n, SUM(b.w) AS s FROM a JOIN b ON a.v = b.w GROUP BY a.v;",
        output.display()
    )
}

#[test]
fn a_join_runs_over_processes_like_in_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let reference = d.join("reference.jsonl");
    std::fs::write(d.join("reference.sql"), join_sql(&reference)).expect("job");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_millrace-worker"))
        .args(["--ops-addr", &format!("127.0.0.1:{}", free_port()), "run", "-f"])
        .arg(d.join("reference.sql"))
        .args(["--parallelism", "4"])
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run");
    assert!(status.success());
    let expected = final_table(&reference);
    assert!(expected.len() > 10, "the inputs share keys: {expected:?}");

    let output = d.join("output.jsonl");
    let job = d.join("job.sql");
    std::fs::write(&job, join_sql(&output)).expect("job");
    let rpc = format!("127.0.0.1:{}", free_port());
    let checkpoints = format!("file://{}/checkpoints", d.display());
    let args = owned(&[
        "coordinator",
        "-f",
        &job.display().to_string(),
        "--parallelism",
        "4",
        "--listen",
        &rpc,
        "--checkpoint-dir",
        &checkpoints,
        "--checkpoint-interval",
        "200ms",
    ]);
    let mut coordinator = RoleProcess::start("coordinator", d, &args, &[]);
    let worker_args = owned(&["worker", "--coordinator", &rpc, "--slots", "2"]);
    let _workers: Vec<RoleProcess> =
        (0..2).map(|i| RoleProcess::start(&format!("worker-{i}"), d, &worker_args, &[])).collect();
    let finished = coordinator.wait_for_job("the join to finish", |job| phase(job) == "FINISHED");
    assert_eq!(finished["workers"], 2, "{finished}");
    assert_eq!(final_table(&output), expected, "the join over processes differs from one process");
    assert!(coordinator.terminate().success(), "{}", coordinator.logs());
}
