//! Crash loops (pure): counts the container restarts of a deployment's Pods over time and
//! says when they exceed `spec.restarts` (at most `attempts` within `windowMs`). The
//! coordinator counts the job's task restarts itself (and reports FAILED); this covers what it
//! cannot see: its own process, or a worker that crashes before it registers.

use k8s_openapi::jiff::Timestamp;
use millrace_crds::v1alpha1::{PodRestarts, RestartPolicy, StreamJobSpec};

/// What the Pods of the current deployment report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodHealth {
    /// The sum of their containers' restart counts.
    pub restarts: i32,
    /// The most recent crash, as a person should read it.
    pub last_crash: Option<String>,
}

/// The count after this look: new restarts (the sum grew) are stamped `now`; stamps older
/// than the window are dropped. A new deployment starts a new count; Pods that were replaced
/// (the sum shrank) start theirs again from what they report.
pub fn tally(
    previous: Option<&PodRestarts>,
    deployment: i64,
    health: &PodHealth,
    spec: &StreamJobSpec,
    now: Timestamp,
) -> PodRestarts {
    let window_ms = RestartPolicy::effective_window_ms(spec.restarts.as_ref());
    let mut tally = match previous {
        Some(p) if p.deployment == deployment => p.clone(),
        _ => PodRestarts { deployment, ..PodRestarts::default() },
    };
    let new = (health.restarts - tally.counted).max(0);
    let stamp = super::lifecycle::now_text(now);
    let cap = usize::try_from(RestartPolicy::effective_attempts(spec.restarts.as_ref())).unwrap_or(0) + 1;
    for _ in 0..new.min(i32::try_from(cap).unwrap_or(i32::MAX)) {
        tally.seen_at.insert(0, stamp.clone());
    }
    tally.counted = health.restarts;
    tally.seen_at.retain(|at| {
        at.parse::<Timestamp>().is_ok_and(|t| now.as_millisecond() - t.as_millisecond() <= window_ms)
    });
    tally.seen_at.truncate(cap);
    if health.last_crash.is_some() {
        tally.last_crash = health.last_crash.clone();
    }
    tally
}

/// Why the deployment counts as crash-looping, if it does.
pub fn crash_loop(tally: &PodRestarts, spec: &StreamJobSpec) -> Option<String> {
    let attempts = RestartPolicy::effective_attempts(spec.restarts.as_ref());
    let window_s = RestartPolicy::effective_window_ms(spec.restarts.as_ref()) / 1000;
    (i32::try_from(tally.seen_at.len()).unwrap_or(i32::MAX) > attempts).then(|| {
        let crash = tally.last_crash.as_deref().unwrap_or("no exit status reported");
        format!(
            "the job's Pods restarted more than {attempts} times within {window_s}s (spec.restarts); last crash: {crash}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(attempts: i32) -> StreamJobSpec {
        serde_json::from_value(serde_json::json!({
            "sql": "x", "parallelism": 1, "restarts": { "attempts": attempts, "windowMs": 60000 }
        }))
        .expect("spec")
    }

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    fn health(restarts: i32) -> PodHealth {
        PodHealth { restarts, last_crash: Some("coordinator: exit code 101 (Error)".into()) }
    }

    #[test]
    fn restarts_beyond_the_attempts_within_the_window_are_a_crash_loop() {
        let s = spec(2);
        let first = tally(None, 1, &health(1), &s, at("2026-12-02T00:00:00Z"));
        assert_eq!(first.seen_at.len(), 1);
        assert_eq!(crash_loop(&first, &s), None);
        let second = tally(Some(&first), 1, &health(3), &s, at("2026-12-02T00:00:20Z"));
        assert_eq!(second.seen_at.len(), 3, "two new restarts stamped");
        let reason = crash_loop(&second, &s).expect("3 > 2 restarts in 60 s");
        assert!(
            reason.contains("more than 2 times within 60s") && reason.contains("exit code 101"),
            "{reason}"
        );
    }

    #[test]
    fn restarts_outside_the_window_are_forgotten() {
        let s = spec(1);
        let first = tally(None, 1, &health(2), &s, at("2026-12-02T00:00:00Z"));
        assert!(crash_loop(&first, &s).is_some());
        let later = tally(Some(&first), 1, &health(2), &s, at("2026-12-02T00:05:00Z"));
        assert!(later.seen_at.is_empty());
        assert_eq!(crash_loop(&later, &s), None);
        assert_eq!(later.counted, 2, "old restarts are not counted again");
    }

    #[test]
    fn a_new_deployment_or_replaced_pods_start_a_new_count() {
        let s = spec(1);
        let first = tally(None, 1, &health(5), &s, at("2026-12-02T00:00:00Z"));
        let redeployed = tally(Some(&first), 2, &health(0), &s, at("2026-12-02T00:00:10Z"));
        assert_eq!((redeployed.deployment, redeployed.counted, redeployed.seen_at.len()), (2, 0, 0));
        let replaced = tally(Some(&first), 1, &health(1), &s, at("2026-12-02T00:00:10Z"));
        assert_eq!(replaced.counted, 1);
        assert_eq!(replaced.seen_at.len(), first.seen_at.len(), "a smaller sum adds no restart");
    }
}
