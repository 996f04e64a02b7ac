//! The memory budget of operator state in one process: every operator instance the process
//! runs reports how many bytes its state holds ([`crate::Operator::state_bytes`]), the chain
//! adds the change to this process-wide total after every batch, watermark and restore, and
//! a total over the limit fails the operator that crossed it with
//! [`OperatorError::StateLimitExceeded`] — a job failure with a reason, instead of the kernel's
//! OOM kill. The limit is the job's `SET 'state.max-bytes'` or the process's
//! `--state-max-bytes` (env `MILLRACE_STATE_MAX_BYTES`); without one, state is only counted.
//!
//! It owns the count, not the state: what a byte of state is, is each operator's business
//! (docs/checkpoints.md, "State size and the memory limit", lists what each one counts).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::OperatorError;

/// The setting's key in a job's SQL.
pub const STATE_MAX_BYTES: &str = "state.max-bytes";

/// The process-wide count of operator state bytes and its limit.
#[derive(Debug, Default)]
pub struct StateBudget {
    limit: Option<u64>,
    total: AtomicU64,
}

impl StateBudget {
    /// A budget of `limit` bytes (`None`: unlimited, only counted).
    pub fn new(limit: Option<u64>) -> Self {
        Self { limit, total: AtomicU64::new(0) }
    }

    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// The bytes every operator instance of the process holds now.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// One operator instance's state went from `before` to `after` bytes. Fails when that
    /// leaves the process over the limit and the instance grew (an instance that shrinks or
    /// stays is never blamed for another's growth).
    pub fn change(&self, before: u64, after: u64) -> Result<(), OperatorError> {
        let total = if after >= before {
            self.total.fetch_add(after - before, Ordering::Relaxed) + (after - before)
        } else {
            let gone = before - after;
            // Never below zero, whatever the order of concurrent changes.
            let previous = self
                .total
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| Some(t.saturating_sub(gone)))
                .unwrap_or(0);
            previous.saturating_sub(gone)
        };
        match self.limit {
            Some(limit) if total > limit && after > before => {
                Err(OperatorError::StateLimitExceeded { operator_bytes: after, process_bytes: total, limit })
            }
            _ => Ok(()),
        }
    }
}

/// Flink's `MemorySize` syntax: a whole number and an optional unit, binary multiples
/// (`1048576`, `512 kb`, `64 mb`, `2 gb`, `1 tb`; `k`, `m`, `g`, `t`, `kib`… too).
pub fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" | "bytes" => 0,
        "k" | "kb" | "kib" | "kibibytes" => 10,
        "m" | "mb" | "mib" | "mebibytes" => 20,
        "g" | "gb" | "gib" | "gibibytes" => 30,
        "t" | "tb" | "tib" | "tebibytes" => 40,
        _ => return None,
    };
    number.checked_mul(1u64 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_flink_reads_them() {
        assert_eq!(parse_bytes("1048576"), Some(1 << 20));
        assert_eq!(parse_bytes("512 kb"), Some(512 << 10));
        assert_eq!(parse_bytes("64mb"), Some(64 << 20));
        assert_eq!(parse_bytes("2 GB"), Some(2 << 30));
        assert_eq!(parse_bytes("1 t"), Some(1 << 40));
        assert_eq!(parse_bytes("1.5 gb"), None);
        assert_eq!(parse_bytes("mb"), None);
        assert_eq!(parse_bytes("3 parsecs"), None);
    }

    #[test]
    fn the_instance_that_grows_past_the_limit_fails_not_one_that_shrinks() {
        let budget = StateBudget::new(Some(1000));
        budget.change(0, 600).expect("under the limit");
        budget.change(0, 300).expect("900 in all");
        let err = budget.change(300, 500).expect_err("1100 in all");
        assert!(
            matches!(
                err,
                OperatorError::StateLimitExceeded { operator_bytes: 500, process_bytes: 1100, limit: 1000 }
            ),
            "{err}"
        );
        // Over the limit still, but this instance shrank: not its fault.
        budget.change(600, 550).expect("shrinking is never refused");
        assert_eq!(budget.total(), 1050);
        budget.change(550, 0).expect("gone");
        budget.change(500, 0).expect("gone");
        assert_eq!(budget.total(), 0);
    }

    #[test]
    fn without_a_limit_state_is_only_counted() {
        let budget = StateBudget::new(None);
        budget.change(0, u64::MAX / 2).expect("no limit");
        assert_eq!(budget.total(), u64::MAX / 2);
    }
}
