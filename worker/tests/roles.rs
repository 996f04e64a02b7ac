//! Exactly-once over processes on the local platform's Kafka: `millrace-worker coordinator`
//! and two `millrace-worker worker` processes × 2 slots run the keyed window job of
//! kafka_exactly_once.rs at parallelism 4 (so rows cross between the workers through the
//! network exchange), reading a 4-partition topic produced while it runs, into an
//! exactly-once Kafka sink. A random worker is killed with SIGKILL at a random moment five
//! times, and the coordinator once, each restarted like a Deployment would (same
//! arguments); every kill comes after the running attempt has completed a checkpoint of its
//! own; then the coordinator aborts itself between a checkpoint's completion and its commit.
//! The `read_committed` output must equal the expected windows exactly, and once the input
//! is in, checkpoints reference the workers' unchanged state files. And a savepoint
//! with stop at parallelism 4 on two workers resumes at parallelism 2 on one worker, exactly
//! once. Gated by the `platform` feature; fails (never skips) without Kafka.
#![cfg(feature = "platform")]

#[path = "support/exactly_once.rs"]
mod exactly_once;
#[path = "support/kafka.rs"]
mod kafka_support;
#[path = "support/roles.rs"]
mod roles_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use exactly_once::{CommittedReader, Lcg, PARTITIONS, expected, job_sql, produce_input, produce_input_paced};
use kafka_support::{bootstrap, create_topics, unique};
use roles_support::{
    DEADLINE, RoleProcess, free_port, last_checkpoint, latest_on_disk, phase, stop_with_savepoint,
};

#[test]
fn workers_and_the_coordinator_killed_at_random_moments_the_output_is_exactly_once() {
    let input = unique("roles-in");
    let output = unique("roles-out");
    create_topics(&[(&input, PARTITIONS), (&output, 1)]);
    let dir = tempfile::tempdir().expect("tempdir");
    let job = dir.path().join("job.sql");
    std::fs::write(&job, job_sql(&input, &output, &unique("roles-txn"))).expect("job file");
    let checkpoint_folder = dir.path().join("checkpoints");
    let checkpoints = format!("file://{}", checkpoint_folder.display());
    let rpc = format!("127.0.0.1:{}", free_port());
    let owned = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let job = job.display().to_string();
    let coordinator_args = owned(&[
        "coordinator",
        "-f",
        &job,
        "--parallelism",
        "4",
        "--slots-per-worker",
        "2",
        "--listen",
        &rpc,
        "--checkpoint-dir",
        &checkpoints,
        "--checkpoint-interval",
        "300ms",
        "--restart-attempts",
        "20",
        "--kafka-bootstrap",
        &bootstrap(),
    ]);
    let worker_args =
        owned(&["worker", "--coordinator", &rpc, "--slots", "2", "--kafka-bootstrap", &bootstrap()]);
    let mut coordinator = RoleProcess::start("coordinator", dir.path(), &coordinator_args, &[]);
    let mut workers = [
        RoleProcess::start("worker-a", dir.path(), &worker_args, &[]),
        RoleProcess::start("worker-b", dir.path(), &worker_args, &[]),
    ];
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(7);
    eprintln!("kill schedule seed: {seed}");
    let mut random = Lcg(seed);
    let producer = produce_input_paced(input.clone(), Duration::from_millis(1000));
    let coordinator_round = random.next(6);
    let mut newest = 0;
    for round in 0..6 {
        let running = coordinator.wait_for_job("a checkpoint of the running attempt", |job| {
            phase(job) == "RUNNING" && last_checkpoint(job) > newest
        });
        assert_eq!(running["workers"], 2, "{running}");
        assert_eq!(running["slots"], 4, "{running}");
        newest = last_checkpoint(&running);
        // The moment of the kill, chosen at random (not a wait for anything).
        std::thread::sleep(Duration::from_millis(random.next(600)));
        if round == coordinator_round {
            coordinator.kill();
            eprintln!("round {round}: killed the coordinator after checkpoint {newest}");
            coordinator.restart();
        } else {
            let victim = random.next(2) as usize;
            workers[victim].kill();
            eprintln!("round {round}: killed worker {victim} after checkpoint {newest}");
            workers[victim].restart();
            // The coordinator notices (the connection closes) and restarts the job.
            let restarting = coordinator.wait_for_job("the restart", |job| phase(job) != "RUNNING");
            newest = newest.max(last_checkpoint(&restarting));
        }
    }

    // Crash between "checkpoint complete" and "commit done", on the coordinator.
    coordinator.kill();
    let crash_at = (latest_on_disk(&checkpoint_folder) + 3).to_string();
    coordinator.restart_with(&[("MILLRACE_FAULT_CRASH_AFTER_CHECKPOINT", &crash_at)]);
    let status = coordinator.wait_exit();
    assert!(!status.success(), "the fault-injected coordinator must abort itself");
    assert!(coordinator.logs().contains("fault injection"), "{}", coordinator.logs());
    eprintln!("the coordinator aborted after completing checkpoint {crash_at}, before its commit");
    coordinator.restart();

    producer.join().expect("the producer finishes");
    assert_exactly_once(&output, &mut coordinator, &workers);
}

/// Reads the output until every expected window is there, then stops the coordinator and
/// checks the windows: each exactly once, with the right contents.
fn assert_exactly_once(output: &str, coordinator: &mut RoleProcess, workers: &[RoleProcess]) {
    let logs = |coordinator: &RoleProcess| {
        let workers: Vec<String> = workers.iter().map(RoleProcess::logs).collect();
        format!("{}\n{}", coordinator.logs(), workers.join("\n"))
    };
    let expected = expected();
    let mut reader = CommittedReader::new(output);
    let deadline = Instant::now() + DEADLINE * 2;
    while reader.windows().len() < expected.len() {
        coordinator.assert_running();
        let got = reader.windows().len();
        assert!(
            Instant::now() < deadline,
            "only {got} of {} windows arrived\n{}",
            expected.len(),
            logs(coordinator)
        );
        reader.poll();
    }
    // The input is all in and its windows fired: later checkpoints find the workers' state
    // files unchanged and reference them instead of writing them again.
    let incremental = coordinator.wait_for_job("a checkpoint reusing unchanged state files", |job| {
        let bytes = job["checkpoints"]["lastCheckpointBytes"].as_u64().unwrap_or(0);
        let written = job["checkpoints"]["lastCheckpointBytesWritten"].as_u64().unwrap_or(u64::MAX);
        bytes > 0 && written < bytes
    });
    eprintln!("incremental checkpoint over processes: {}", incremental["checkpoints"]);
    let status = coordinator.terminate();
    assert!(status.success(), "the coordinator exits cleanly on SIGTERM\n{}", logs(coordinator));
    reader.read_to_end();
    let got = reader.windows();
    let duplicated: Vec<_> = got.iter().filter(|(_, rows)| rows.len() > 1).collect();
    assert!(duplicated.is_empty(), "windows written more than once: {duplicated:?}");
    let got: BTreeMap<(i64, i64), (i64, i64)> = got.into_iter().map(|(w, rows)| (w, rows[0])).collect();
    assert_eq!(got, expected, "window contents differ");
}

#[test]
fn a_savepoint_at_parallelism_4_on_two_workers_resumes_at_2_on_one_exactly_once() {
    let input = unique("roles-sp-in");
    let output = unique("roles-sp-out");
    create_topics(&[(&input, PARTITIONS), (&output, 1)]);
    let dir = tempfile::tempdir().expect("tempdir");
    let job = dir.path().join("job.sql");
    std::fs::write(&job, job_sql(&input, &output, &unique("roles-sp-txn"))).expect("job file");
    let job = job.display().to_string();
    let owned = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let start = |name: &str, parallelism: &str, workers: usize, slots: &str, extra: &[&str]| {
        let rpc = format!("127.0.0.1:{}", free_port());
        let checkpoints = format!("file://{}/{name}-checkpoints", dir.path().display());
        let mut args = owned(&[
            "coordinator",
            "-f",
            &job,
            "--parallelism",
            parallelism,
            "--listen",
            &rpc,
            "--checkpoint-dir",
            &checkpoints,
            "--checkpoint-interval",
            "300ms",
            "--kafka-bootstrap",
            &bootstrap(),
        ]);
        args.extend(owned(extra));
        let coordinator = RoleProcess::start(&format!("{name}-coordinator"), dir.path(), &args, &[]);
        let worker_args = owned(&["worker", "--coordinator", &rpc, "--slots", slots]);
        let workers: Vec<RoleProcess> = (0..workers)
            .map(|i| {
                RoleProcess::start(
                    &format!("{name}-worker-{i}"),
                    dir.path(),
                    &worker_args,
                    &[("KAFKA_BOOTSTRAP", &bootstrap())],
                )
            })
            .collect();
        (coordinator, workers)
    };
    let producer = produce_input(input.clone());
    let (mut coordinator, mut workers) = start("first", "4", 2, "2", &[]);
    coordinator.wait_for_job("a checkpoint", |job| phase(job) == "RUNNING" && last_checkpoint(job) > 0);
    let target = format!("file://{}/savepoint", dir.path().display());
    let location = stop_with_savepoint(&mut coordinator, &target);
    assert!(coordinator.terminate().success(), "{}", coordinator.logs());
    for worker in &mut workers {
        assert!(worker.terminate().success(), "{}", worker.logs());
    }

    let (mut coordinator, workers) = start("second", "2", 1, "2", &["--restore-from", &location]);
    let running = coordinator.wait_for_job("the resumed job", |job| phase(job) == "RUNNING");
    assert_eq!(running["parallelism"], 2, "{running}");
    producer.join().expect("the producer finishes");
    assert_exactly_once(&output, &mut coordinator, &workers);
}
