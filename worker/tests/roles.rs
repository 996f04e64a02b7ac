//! Exactly-once over processes on the local platform's Kafka: `millrace-worker coordinator`
//! and two `millrace-worker worker` processes × 2 slots run the keyed window job of
//! kafka_exactly_once.rs at parallelism 4 (so rows cross between the workers through the
//! network exchange), reading a 4-partition topic produced while it runs, into an
//! exactly-once Kafka sink. A random worker is killed with SIGKILL at a random moment five
//! times, and the coordinator once, each restarted like a Deployment would (same
//! arguments); every kill comes after the running attempt has completed a checkpoint of its
//! own. The `read_committed` output must equal the expected windows exactly. Gated by the
//! `platform` feature; fails (never skips) without Kafka.
#![cfg(feature = "platform")]

#[path = "support/exactly_once.rs"]
mod exactly_once;
#[path = "support/kafka.rs"]
mod kafka_support;
#[path = "support/roles.rs"]
mod roles_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use exactly_once::{CommittedReader, Lcg, PARTITIONS, expected, job_sql, produce_input_paced};
use kafka_support::{bootstrap, create_topics, unique};
use roles_support::{DEADLINE, RoleProcess, free_port, last_checkpoint, phase};

#[test]
fn workers_and_the_coordinator_killed_at_random_moments_the_output_is_exactly_once() {
    let input = unique("roles-in");
    let output = unique("roles-out");
    create_topics(&[(&input, PARTITIONS), (&output, 1)]);
    let dir = tempfile::tempdir().expect("tempdir");
    let job = dir.path().join("job.sql");
    std::fs::write(&job, job_sql(&input, &output, &unique("roles-txn"))).expect("job file");
    let checkpoints = format!("file://{}/checkpoints", dir.path().display());
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
    let all_logs = |coordinator: &RoleProcess, workers: &[RoleProcess; 2]| {
        format!("{}\n{}\n{}", coordinator.logs(), workers[0].logs(), workers[1].logs())
    };
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

    producer.join().expect("the producer finishes");
    let expected = expected();
    let mut reader = CommittedReader::new(&output);
    let deadline = Instant::now() + DEADLINE * 2;
    while reader.windows().len() < expected.len() {
        coordinator.assert_running();
        assert!(
            Instant::now() < deadline,
            "only {} of {} windows arrived\n{}",
            reader.windows().len(),
            expected.len(),
            all_logs(&coordinator, &workers)
        );
        reader.poll();
    }
    let status = coordinator.terminate();
    assert!(status.success(), "the coordinator exits cleanly on SIGTERM\n{}", coordinator.logs());
    reader.read_to_end();

    let got = reader.windows();
    let duplicated: Vec<_> = got.iter().filter(|(_, rows)| rows.len() > 1).collect();
    assert!(duplicated.is_empty(), "windows written more than once: {duplicated:?}");
    let got: BTreeMap<(i64, i64), (i64, i64)> = got.into_iter().map(|(w, rows)| (w, rows[0])).collect();
    let missing: Vec<_> = expected.keys().filter(|w| !got.contains_key(w)).collect();
    assert!(missing.is_empty(), "windows lost: {missing:?}");
    assert_eq!(got, expected, "window contents differ");
}
