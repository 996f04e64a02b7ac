//! Recovery of the exactly-once Kafka sink's transactions (see [`crate::kafka_sink`]): what
//! a sink instance acknowledges a checkpoint with ([`SinkState`], JSON), and
//! [`recover_sink`], which a restored job runs before it starts its sinks. A crash may come
//! after a checkpoint completed but before its commit reached every sink, so recovery
//! commits every transaction the restored checkpoint's states name, and aborts every later
//! transaction of those subtasks (left open, they would hold back `read_committed` readers
//! until the transaction timeout). Transactions of other producers are ended at the
//! protocol level ([`crate::kafka_txn`]).

use std::time::{Duration, Instant};

use millrace_types::CheckpointId;
use serde::{Deserialize, Serialize};

use crate::ConnectorError;
use crate::kafka_txn::{TxnClient, TxnState};
use crate::options::{DeliveryGuarantee, SinkConnector};

/// How long recovery keeps retrying one transaction (coordinators loading, markers being
/// written).
const RECOVERY_DEADLINE: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(100);

/// The transactional id of a sink instance's epoch.
pub(crate) fn transactional_id(prefix: &str, subtask: usize, epoch: u64) -> String {
    format!("{prefix}-{subtask}-{epoch}")
}

/// A pre-committed transaction: epoch `epoch`'s, covering checkpoint `checkpoint`. Epochs
/// count a run's barriers from its first epoch, so an epoch equals its checkpoint's id
/// unless the job skipped checkpoint ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PendingTransaction {
    pub checkpoint: u64,
    pub epoch: u64,
}

/// An exactly-once sink instance's acknowledged state: its transactional id prefix, its
/// subtask, and every transaction it has pre-committed and not yet committed (the
/// acknowledged checkpoint's included), oldest first. As JSON:
/// `{"prefix":"p","subtask":0,"pending":[{"checkpoint":1,"epoch":1}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SinkState {
    pub prefix: String,
    pub subtask: usize,
    pub pending: Vec<PendingTransaction>,
}

impl SinkState {
    pub fn to_bytes(&self) -> Result<Vec<u8>, ConnectorError> {
        serde_json::to_vec(self)
            .map_err(|e| ConnectorError::Delivery(format!("encoding the Kafka sink's checkpoint state: {e}")))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ConnectorError> {
        serde_json::from_slice(bytes).map_err(|e| {
            ConnectorError::Delivery(format!("the checkpoint's Kafka sink state is not valid: {e}"))
        })
    }
}

/// What [`recover_sink`] did: the transactional ids it committed and aborted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub committed: Vec<String>,
    pub aborted: Vec<String>,
}

/// Settles the transactions of a sink before a job restored from checkpoint `restored`
/// starts it: `states` are the states every sink instance of the old run acknowledged
/// `restored` with. Commits every transaction they name (the crash may have come before
/// their commit), then, per old subtask, aborts every transaction of a later epoch (probing
/// ids upward until one the broker does not know). Does nothing for sinks without two-phase
/// commit (they acknowledge without state). Fails when a transaction that must be committed
/// was aborted (its output is lost, e.g. the job was down past the transaction timeout).
/// Blocks on the network: call it from a blocking thread.
pub fn recover_sink(
    connector: &SinkConnector,
    states: &[Vec<u8>],
    restored: CheckpointId,
) -> Result<RecoveryReport, ConnectorError> {
    let mut report = RecoveryReport::default();
    let SinkConnector::Kafka(config) = connector else {
        return Ok(report);
    };
    if states.is_empty() {
        return Ok(report);
    }
    if let DeliveryGuarantee::ExactlyOnce { transactional_id_prefix } = &config.delivery {
        tracing::debug!(prefix = %transactional_id_prefix, "recovering exactly-once Kafka sink");
    }
    check_plaintext(&config.properties)?;
    let mut client = TxnClient::new(&config.bootstrap_servers, RECOVERY_DEADLINE);
    let mut states = states.iter().map(|s| SinkState::from_bytes(s)).collect::<Result<Vec<_>, _>>()?;
    states.sort_by_key(|s| s.subtask);
    for state in &states {
        for pending in &state.pending {
            let id = transactional_id(&state.prefix, state.subtask, pending.epoch);
            if pending.checkpoint > restored.0 {
                // Not covered by the restored checkpoint: its rows are replayed.
                if finish(&mut client, &id, false)? {
                    report.aborted.push(id);
                }
            } else if finish(&mut client, &id, true)? {
                report.committed.push(id);
            }
        }
    }
    for state in &states {
        let from = state.pending.iter().map(|p| p.epoch + 1).max().unwrap_or(restored.0 + 1);
        report.aborted.extend(abort_from(&mut client, &state.prefix, state.subtask, from)?);
    }
    tracing::info!(%restored, committed = ?report.committed, aborted = ?report.aborted, "recovered Kafka sink transactions");
    Ok(report)
}

/// Aborts the open transactions of `subtask` from epoch `from` on (until an epoch the
/// broker does not know): what a sink instance runs before its first transaction.
pub(crate) fn abort_lingering(
    bootstrap: &str,
    prefix: &str,
    subtask: usize,
    from: u64,
) -> Result<Vec<String>, ConnectorError> {
    let mut client = TxnClient::new(bootstrap, RECOVERY_DEADLINE);
    abort_from(&mut client, prefix, subtask, from)
}

fn abort_from(
    client: &mut TxnClient,
    prefix: &str,
    subtask: usize,
    from: u64,
) -> Result<Vec<String>, ConnectorError> {
    let mut aborted = Vec::new();
    for epoch in from.. {
        let id = transactional_id(prefix, subtask, epoch);
        if client.describe(&id)? == TxnState::Unknown {
            break;
        }
        if finish(client, &id, false)? {
            aborted.push(id);
        }
    }
    Ok(aborted)
}

/// Commits (`commit`) or aborts `id`'s transaction and waits until the coordinator has
/// completed it. `true` if this call ended it, `false` if there was nothing to end.
fn finish(client: &mut TxnClient, id: &str, commit: bool) -> Result<bool, ConnectorError> {
    let started = Instant::now();
    let mut ended = false;
    loop {
        match client.describe(id)? {
            TxnState::Unknown | TxnState::Empty => {
                if commit && !ended {
                    tracing::debug!(transactional_id = id, "nothing to commit (the epoch wrote no records)");
                }
                return Ok(ended);
            }
            TxnState::CompleteCommit => {
                if !commit && !ended {
                    tracing::warn!(transactional_id = id, "a transaction to abort was already committed");
                }
                return Ok(ended);
            }
            TxnState::CompleteAbort if commit => {
                return Err(ConnectorError::Transaction {
                    transactional_id: id.to_string(),
                    message: "the broker aborted this pre-committed transaction (transaction.timeout.ms \
                              passed, or another producer fenced it): the records of its checkpoint \
                              are lost"
                        .into(),
                });
            }
            TxnState::CompleteAbort => return Ok(ended),
            TxnState::Ongoing { producer_id, producer_epoch } => {
                client.end(id, producer_id, producer_epoch, commit)?;
                ended = true;
            }
            TxnState::Preparing => {}
        }
        if started.elapsed() >= RECOVERY_DEADLINE {
            return Err(ConnectorError::Transaction {
                transactional_id: id.to_string(),
                message: format!("did not complete within {RECOVERY_DEADLINE:?}"),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// The recovery client speaks plaintext only: refuse other security protocols clearly.
fn check_plaintext(properties: &[(String, String)]) -> Result<(), ConnectorError> {
    match properties.iter().find(|(k, _)| k == "security.protocol") {
        Some((_, protocol)) if !protocol.eq_ignore_ascii_case("plaintext") => Err(ConnectorError::Protocol {
            context: "recovering Kafka transactions".into(),
            message: format!("security.protocol '{protocol}' is not supported (plaintext only)"),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_state_is_json_naming_every_pending_transaction() {
        let state = SinkState {
            prefix: "job-out".into(),
            subtask: 2,
            pending: vec![
                PendingTransaction { checkpoint: 4, epoch: 4 },
                PendingTransaction { checkpoint: 6, epoch: 5 },
            ],
        };
        let bytes = state.to_bytes().expect("encodes");
        assert_eq!(
            String::from_utf8(bytes.clone()).expect("utf8"),
            r#"{"prefix":"job-out","subtask":2,"pending":[{"checkpoint":4,"epoch":4},{"checkpoint":6,"epoch":5}]}"#
        );
        assert_eq!(SinkState::from_bytes(&bytes).expect("decodes"), state);
        let err = SinkState::from_bytes(b"{\"prefix\":1}").expect_err("not a state");
        assert!(err.to_string().contains("not valid"), "{err}");
        assert_eq!(transactional_id("job-out", 2, 5), "job-out-2-5");
    }

    #[test]
    fn sinks_without_state_need_no_recovery() {
        let report = recover_sink(&SinkConnector::Stdout(crate::options::Format::Raw), &[], CheckpointId(3))
            .expect("nothing to do");
        assert_eq!(report, RecoveryReport::default());
    }

    #[test]
    fn only_plaintext_listeners_are_supported() {
        assert!(check_plaintext(&[("security.protocol".into(), "PLAINTEXT".into())]).is_ok());
        let err = check_plaintext(&[("security.protocol".into(), "SASL_SSL".into())]).expect_err("sasl");
        assert!(err.to_string().contains("plaintext only"), "{err}");
    }
}
