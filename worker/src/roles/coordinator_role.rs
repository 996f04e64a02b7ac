//! `millrace-worker coordinator`: one per job. It listens for workers (see `pool`), waits
//! until they offer enough slots for the job's parallelism, runs attempts of the job on them
//! (see `attempt`), and restarts a failed attempt from the newest completed checkpoint with
//! backoff (1 s doubling to 30 s) — at most `--restart-attempts` times within
//! `--restart-window`, then the job is FAILED with the reason. It keeps nothing but what is
//! in checkpoint storage, so a restarted coordinator resumes from there.
//!
//! After the job finished (bounded input, or a stop-with-savepoint) or failed, it keeps
//! serving the control API until it is terminated.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use millrace_connectors::StopSignal;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::attempt::{AttemptContext, JobSpec, Outcome, run_attempt};
use super::pool::{Pool, accept_workers};
use crate::control::{JobControl, JobPhase};
use crate::job::JobMetrics;

/// How failed attempts are restarted.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    pub attempts: u32,
    pub window: Duration,
}

/// Runs the coordinator until `terminate` is signalled. Returns once the job's last attempt
/// was cancelled on its workers.
pub async fn run_coordinator(
    listener: TcpListener,
    spec: JobSpec,
    restarts: RestartPolicy,
    metrics: JobMetrics,
    control: JobControl,
    terminate: StopSignal,
) {
    let (events_tx, events) = mpsc::unbounded_channel();
    let accepting = tokio::spawn(accept_workers(listener, events_tx));
    let mut pool = Pool { workers: BTreeMap::new(), events };
    let options = &spec.options;
    let storage = options.checkpointing.as_ref().map(|c| c.storage_url.as_str());
    control.describe(options.parallelism, options.max_parallelism, storage);
    let ctx = AttemptContext { spec: &spec, metrics: &metrics, control: &control, terminate: &terminate };
    // Unique per coordinator run, so a restarted coordinator's attempts never share a name
    // with the previous one's.
    let run = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let mut failures: Vec<Instant> = Vec::new();
    let mut backoff = Duration::from_secs(1);
    let mut number = 0u64;
    loop {
        let Some(assigned) = wait_for_slots(&mut pool, &control, options.parallelism, &terminate).await
        else {
            break;
        };
        number += 1;
        let attempt = format!("{run}-{number}");
        let outcome = run_attempt(&ctx, &mut pool, &attempt, &assigned).await;
        control.set_workers(pool.workers.len(), pool.slots());
        match outcome {
            Outcome::Finished | Outcome::Stopped => {
                tracing::info!(%attempt, ?outcome, "job finished");
                control.set_phase(JobPhase::Finished, None);
                break;
            }
            Outcome::Fatal(why) => {
                tracing::error!(%attempt, %why, "the job cannot run");
                control.set_phase(JobPhase::Failed, Some(why));
                break;
            }
            Outcome::Failed(why) => {
                if terminate.is_stopped() {
                    break;
                }
                if options.checkpointing.is_none() {
                    tracing::error!(%attempt, %why, "the job failed; without checkpoints it is not restarted");
                    control.set_phase(JobPhase::Failed, Some(why));
                    break;
                }
                let now = Instant::now();
                failures.retain(|at| now.duration_since(*at) < restarts.window);
                failures.push(now);
                if failures.len() as u32 > restarts.attempts {
                    tracing::error!(%why, failures = failures.len(), "the job failed too often; giving up");
                    let why =
                        format!("{why} ({} failures within {} s)", failures.len(), restarts.window.as_secs());
                    control.set_phase(JobPhase::Failed, Some(why));
                    break;
                }
                tracing::warn!(%attempt, %why, restart_in_ms = backoff.as_millis() as u64, "the job failed; restarting from its newest checkpoint");
                control.set_phase(JobPhase::Restarting, Some(why));
                idle(&mut pool, &control, &terminate, Some(backoff)).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    idle(&mut pool, &control, &terminate, None).await;
    accepting.abort();
}

/// Waits until the registered workers offer `parallelism` slots; `None` on terminate.
async fn wait_for_slots(
    pool: &mut Pool,
    control: &JobControl,
    parallelism: usize,
    terminate: &StopSignal,
) -> Option<BTreeMap<u64, Vec<usize>>> {
    let mut logged = false;
    loop {
        if terminate.is_stopped() {
            return None;
        }
        if let Some(assigned) = pool.assign(parallelism) {
            return Some(assigned);
        }
        if !logged {
            tracing::info!(slots = pool.slots(), needed = parallelism, "waiting for workers' slots");
            logged = true;
        }
        idle(pool, control, terminate, Some(Duration::from_millis(100))).await;
    }
}

/// Tracks workers joining and leaving for `time` (forever: until terminate).
async fn idle(pool: &mut Pool, control: &JobControl, terminate: &StopSignal, time: Option<Duration>) {
    let until = time.map(|t| tokio::time::Instant::now() + t);
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            event = pool.events.recv() => match event {
                Some(event) => {
                    pool.apply(event);
                    control.set_workers(pool.workers.len(), pool.slots());
                }
                None => return,
            },
            _ = poll.tick() => {
                if terminate.is_stopped() || until.is_some_and(|u| tokio::time::Instant::now() >= u) {
                    return;
                }
            }
        }
    }
}
