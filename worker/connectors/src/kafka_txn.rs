//! A minimal Kafka protocol client for ending other producers' transactions: the exactly-once
//! sink's recovery commits or aborts transactions that a previous run (a crashed process)
//! left open. librdkafka can only end its own producer's transaction, so this speaks the
//! protocol itself (the `kafka-protocol` crate's messages over a blocking TCP connection):
//! `ApiVersions` to negotiate versions, `FindCoordinator` (key type transaction) to find the
//! transactional id's coordinator, `DescribeTransactions` for the transaction's state,
//! producer id and epoch, and `EndTxn` to commit or abort it.
//!
//! Retriable broker answers (`CONCURRENT_TRANSACTIONS`, a coordinator loading or moving) are
//! retried with backoff until a deadline. Only plaintext listeners are supported.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, DescribeTransactionsRequest, EndTxnRequest, FindCoordinatorRequest,
    RequestHeader, TransactionalId,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

use crate::ConnectorError;

const CLIENT_ID: &str = "millrace-txn-recovery";
const IO_TIMEOUT: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// `FindCoordinator` key type of a transactional id.
const TRANSACTION_KEY: i8 = 1;

/// Where a transaction stands, as its coordinator reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TxnState {
    /// The coordinator does not know the transactional id (never used, or expired).
    Unknown,
    /// Known, with no transaction in progress or ending.
    Empty,
    /// Open: `EndTxn` with this producer id and epoch ends it.
    Ongoing {
        producer_id: i64,
        producer_epoch: i16,
    },
    /// Ending: the coordinator is writing the commit or abort markers.
    Preparing,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    fn from_broker(state: &TransactionState) -> Self {
        match state.transaction_state.as_str() {
            "Empty" => TxnState::Empty,
            "Ongoing" => {
                TxnState::Ongoing { producer_id: state.producer_id.0, producer_epoch: state.producer_epoch }
            }
            "CompleteCommit" => TxnState::CompleteCommit,
            "CompleteAbort" => TxnState::CompleteAbort,
            "Dead" => TxnState::Unknown,
            // PrepareCommit, PrepareAbort, PrepareEpochFence: markers are being written.
            _ => TxnState::Preparing,
        }
    }
}

fn protocol_error(context: impl Into<String>, message: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Protocol { context: context.into(), message: message.to_string() }
}

/// One broker connection with the API versions both sides support.
struct Connection {
    address: String,
    stream: TcpStream,
    correlation: i32,
    /// Per API key, the broker's supported (min, max) version.
    versions: HashMap<i16, (i16, i16)>,
}

impl Connection {
    fn open(address: &str) -> Result<Self, ConnectorError> {
        let io =
            |e: std::io::Error| ConnectorError::Io { context: format!("connecting to {address}"), source: e };
        let resolved = address.to_socket_addrs().map_err(io)?.next().ok_or_else(|| {
            io(std::io::Error::new(std::io::ErrorKind::NotFound, "the address resolves to nothing"))
        })?;
        let stream = TcpStream::connect_timeout(&resolved, IO_TIMEOUT).map_err(io)?;
        stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        let mut connection =
            Connection { address: address.to_string(), stream, correlation: 0, versions: HashMap::new() };
        // ApiVersions v3 is understood by every broker that has DescribeTransactions (2.8+).
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("millrace"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let response = connection.exchange(&request, 3)?;
        if let Some(err) = ResponseError::try_from_code(response.error_code) {
            return Err(protocol_error(format!("ApiVersions from {address}"), err));
        }
        connection.versions =
            response.api_keys.iter().map(|k| (k.api_key, (k.min_version, k.max_version))).collect();
        Ok(connection)
    }

    /// The highest version of `R` both this client and the broker speak.
    fn version<R: Request>(&self) -> Result<i16, ConnectorError> {
        let name = ApiKey::try_from(R::KEY).map(|k| format!("{k:?}")).unwrap_or_else(|_| R::KEY.to_string());
        let (min, max) = self.versions.get(&R::KEY).copied().ok_or_else(|| {
            protocol_error(format!("broker {}", self.address), format!("does not support {name}"))
        })?;
        let version = max.min(R::VERSIONS.max);
        if version < min.max(R::VERSIONS.min) {
            return Err(protocol_error(
                format!("broker {}", self.address),
                format!("speaks {name} v{min}-v{max}, this client v{}-v{}", R::VERSIONS.min, R::VERSIONS.max),
            ));
        }
        Ok(version)
    }

    fn call<R: Request>(&mut self, request: &R) -> Result<R::Response, ConnectorError> {
        let version = self.version::<R>()?;
        self.exchange(request, version)
    }

    /// Sends `request` at `version` and reads its response.
    fn exchange<R: Request>(&mut self, request: &R, version: i16) -> Result<R::Response, ConnectorError> {
        let context = format!("request {} v{version} to {}", R::KEY, self.address);
        let codec = |e: anyhow::Error| protocol_error(context.clone(), e);
        self.correlation = self.correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut body = BytesMut::new();
        header.encode(&mut body, R::header_version(version)).map_err(codec)?;
        request.encode(&mut body, version).map_err(codec)?;
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(&body);
        let io = |e: std::io::Error| ConnectorError::Io { context: context.clone(), source: e };
        self.stream.write_all(&frame).map_err(io)?;
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).map_err(io)?;
        let size = i32::from_be_bytes(size);
        let size =
            usize::try_from(size).map_err(|_| protocol_error(context.clone(), "negative frame size"))?;
        let mut payload = vec![0u8; size];
        self.stream.read_exact(&mut payload).map_err(io)?;
        let mut payload = Bytes::from(payload);
        let header_version = <R::Response as HeaderVersion>::header_version(version);
        let response_header =
            kafka_protocol::messages::ResponseHeader::decode(&mut payload, header_version).map_err(codec)?;
        if response_header.correlation_id != self.correlation {
            return Err(protocol_error(context, "the response answers another request"));
        }
        let response = R::Response::decode(&mut payload, version).map_err(codec)?;
        if payload.has_remaining() {
            tracing::debug!(%context, left = payload.remaining(), "response has unread bytes");
        }
        Ok(response)
    }
}

/// The outcome of a retriable step: done, or retry (after backoff, with a fresh coordinator
/// when `moved`).
enum Step<T> {
    Done(T),
    Retry { moved: bool, why: String },
}

/// Ends transactions of a cluster's transactional ids.
pub(crate) struct TxnClient {
    bootstrap: Vec<String>,
    deadline: Duration,
    coordinators: HashMap<String, Connection>,
}

impl TxnClient {
    /// `bootstrap`: comma-separated `host:port`s; every operation retries until `deadline`.
    pub fn new(bootstrap: &str, deadline: Duration) -> Self {
        let bootstrap =
            bootstrap.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        Self { bootstrap, deadline, coordinators: HashMap::new() }
    }

    fn any_broker(&self) -> Result<Connection, ConnectorError> {
        let mut last = None;
        for address in &self.bootstrap {
            match Connection::open(address) {
                Ok(connection) => return Ok(connection),
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| protocol_error("bootstrap servers", "none given")))
    }

    /// The coordinator of `transactional_id` (connected, cached until it moves).
    fn coordinator(&mut self, transactional_id: &str) -> Result<Step<&mut Connection>, ConnectorError> {
        if !self.coordinators.contains_key(transactional_id) {
            let mut broker = self.any_broker()?;
            let version = broker.version::<FindCoordinatorRequest>()?;
            let mut request = FindCoordinatorRequest::default().with_key_type(TRANSACTION_KEY);
            request = if version >= 4 {
                request.with_coordinator_keys(vec![StrBytes::from_string(transactional_id.to_string())])
            } else {
                request.with_key(StrBytes::from_string(transactional_id.to_string()))
            };
            let response = broker.call(&request)?;
            let (error, host, port) = match response.coordinators.first() {
                Some(c) if version >= 4 => (c.error_code, c.host.to_string(), c.port),
                _ => (response.error_code, response.host.to_string(), response.port),
            };
            if let Some(err) = ResponseError::try_from_code(error) {
                return retry_or_fail(err, format!("finding the coordinator of {transactional_id}"));
            }
            let address = format!("{host}:{port}");
            let connection = if address == broker.address { broker } else { Connection::open(&address)? };
            self.coordinators.insert(transactional_id.to_string(), connection);
        }
        match self.coordinators.get_mut(transactional_id) {
            Some(connection) => Ok(Step::Done(connection)),
            None => Err(protocol_error("coordinator cache", "lost a connection it just stored")),
        }
    }

    /// Runs `step` until it is done or the deadline passes, backing off between tries.
    fn retrying<T>(
        &mut self,
        transactional_id: &str,
        what: &str,
        mut step: impl FnMut(&mut Connection) -> Result<Step<T>, ConnectorError>,
    ) -> Result<T, ConnectorError> {
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        loop {
            let outcome = match self.coordinator(transactional_id) {
                Ok(Step::Done(connection)) => step(connection),
                Ok(Step::Retry { moved, why }) => Ok(Step::Retry { moved, why }),
                Err(err) => Err(err),
            };
            let why = match outcome {
                Ok(Step::Done(value)) => return Ok(value),
                Ok(Step::Retry { moved, why }) => {
                    if moved {
                        self.coordinators.remove(transactional_id);
                    }
                    why
                }
                // A broken connection: reconnect (the coordinator may have moved).
                Err(ConnectorError::Io { context, source }) => {
                    self.coordinators.remove(transactional_id);
                    format!("{context}: {source}")
                }
                Err(err) => return Err(err),
            };
            if started.elapsed() >= self.deadline {
                return Err(ConnectorError::Transaction {
                    transactional_id: transactional_id.to_string(),
                    message: format!("{what} did not succeed within {:?}: {why}", self.deadline),
                });
            }
            tracing::debug!(transactional_id, what, why, "retrying");
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// The state of `transactional_id`'s transaction.
    pub fn describe(&mut self, transactional_id: &str) -> Result<TxnState, ConnectorError> {
        let id = transactional_id.to_string();
        self.retrying(transactional_id, "DescribeTransactions", |connection| {
            let request = DescribeTransactionsRequest::default()
                .with_transactional_ids(vec![TransactionalId(StrBytes::from_string(id.clone()))]);
            let response = connection.call(&request)?;
            let Some(state) = response.transaction_states.first() else {
                return Err(protocol_error("DescribeTransactions", "the response names no transaction"));
            };
            match ResponseError::try_from_code(state.error_code) {
                None => Ok(Step::Done(TxnState::from_broker(state))),
                Some(ResponseError::TransactionalIdNotFound) => Ok(Step::Done(TxnState::Unknown)),
                Some(err) => retry_or_fail(err, format!("describing transaction {id}")),
            }
        })
    }

    /// Commits (`commit`) or aborts the open transaction of `producer_id`/`producer_epoch`.
    pub fn end(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    ) -> Result<(), ConnectorError> {
        let id = transactional_id.to_string();
        self.retrying(transactional_id, "EndTxn", |connection| {
            let request = EndTxnRequest::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(id.clone())))
                .with_producer_id(kafka_protocol::messages::ProducerId(producer_id))
                .with_producer_epoch(producer_epoch)
                .with_committed(commit);
            let response = connection.call(&request)?;
            match ResponseError::try_from_code(response.error_code) {
                None => Ok(Step::Done(())),
                Some(err) => retry_or_fail(err, format!("ending transaction {id}")),
            }
        })
    }
}

/// Retries what the coordinator asks to retry; fails on anything else.
fn retry_or_fail<T>(err: ResponseError, context: String) -> Result<Step<T>, ConnectorError> {
    match err {
        ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable => {
            Ok(Step::Retry { moved: true, why: format!("{context}: {err}") })
        }
        ResponseError::CoordinatorLoadInProgress | ResponseError::ConcurrentTransactions => {
            Ok(Step::Retry { moved: false, why: format!("{context}: {err}") })
        }
        other if other.is_retriable() => Ok(Step::Retry { moved: false, why: format!("{context}: {other}") }),
        other => Err(protocol_error(context, format!("{other} (error code {})", other.code()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_state_names_map_to_what_recovery_acts_on() {
        let state = |name: &'static str| {
            TxnState::from_broker(
                &TransactionState::default()
                    .with_transaction_state(StrBytes::from_static_str(name))
                    .with_producer_id(kafka_protocol::messages::ProducerId(7))
                    .with_producer_epoch(3),
            )
        };
        assert_eq!(state("Ongoing"), TxnState::Ongoing { producer_id: 7, producer_epoch: 3 });
        assert_eq!(state("Empty"), TxnState::Empty);
        assert_eq!(state("PrepareCommit"), TxnState::Preparing);
        assert_eq!(state("PrepareAbort"), TxnState::Preparing);
        assert_eq!(state("CompleteCommit"), TxnState::CompleteCommit);
        assert_eq!(state("CompleteAbort"), TxnState::CompleteAbort);
        assert_eq!(state("Dead"), TxnState::Unknown);
    }

    #[test]
    fn coordinator_moves_and_concurrent_transactions_are_retried() {
        let retried = |err| matches!(retry_or_fail::<()>(err, "x".into()), Ok(Step::Retry { .. }));
        assert!(retried(ResponseError::ConcurrentTransactions));
        assert!(retried(ResponseError::NotCoordinator));
        assert!(retried(ResponseError::CoordinatorLoadInProgress));
        assert!(matches!(
            retry_or_fail::<()>(ResponseError::ProducerFenced, "x".into()),
            Err(ConnectorError::Protocol { .. })
        ));
    }
}
