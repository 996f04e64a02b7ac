//! `millrace-worker worker`: a process of S slots that registers with the job's coordinator,
//! heartbeats, and runs the parts of job attempts the coordinator deploys to it (see
//! `deployed`). Its exchange server listens for the whole life of the process, on one port
//! advertised at registration; each attempt begins its own job id on it.
//!
//! It never exits because the coordinator is away: it retries the connection with backoff
//! (1 s doubling to 5 s), and when a registered connection drops it cancels the attempt it
//! runs and registers again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use millrace_runtime::network::ExchangeServer;
use millrace_telemetry::OpsState;
use millrace_types::{CheckpointId, SinkMessage};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::deployed::{Command, receiver_options, run_deployment};
use super::resolve::resolve;
use super::rpc::{HEARTBEAT_INTERVAL, RpcError, ToCoordinator, ToWorker, read_message, write_message};
use crate::job::JobMetrics;

/// How a worker process runs.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// `host:port` of the coordinator's RPC listener.
    pub coordinator: String,
    pub slots: usize,
    /// Where the exchange server listens (port 0: any free port).
    pub data_addr: String,
    /// Replaces the coordinator's Kafka bootstrap servers in deployments.
    pub kafka_bootstrap: Option<String>,
    /// This process's Kafka client properties (never sent by the coordinator).
    pub kafka_properties: Vec<(String, String)>,
    /// The limit on the operator state this process holds (`--state-max-bytes`); wins over
    /// the job's `SET 'state.max-bytes'`.
    pub state_max_bytes: Option<u64>,
}

/// The default exchange listener: `$POD_IP:0`, else `127.0.0.1:0`.
pub fn default_data_addr() -> String {
    format!("{}:0", std::env::var("POD_IP").unwrap_or_else(|_| "127.0.0.1".into()))
}

/// Runs the worker until the process is stopped.
pub async fn run_worker(settings: WorkerSettings, ops: OpsState, metrics: JobMetrics) -> anyhow::Result<()> {
    let server = Arc::new(ExchangeServer::bind(&settings.data_addr, "", receiver_options()).await?);
    let advertised = advertised(server.local_addr());
    tracing::info!(data_addr = %advertised, slots = settings.slots, coordinator = %settings.coordinator, "worker starting");
    let mut backoff = Duration::from_secs(1);
    loop {
        match session(&settings, &server, &advertised, &ops, &metrics).await {
            Ok(()) => backoff = Duration::from_secs(1),
            Err(SessionError::NotConnected(why)) => {
                tracing::info!(coordinator = %settings.coordinator, %why, retry_in_ms = backoff.as_millis() as u64, "coordinator not reachable");
            }
            Err(SessionError::Lost(why)) => {
                tracing::warn!(%why, "lost the coordinator; tasks cancelled, registering again");
                backoff = Duration::from_secs(1);
            }
        }
        ops.set_ready(false);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The address other workers reach this one's exchange server at.
fn advertised(bound: SocketAddr) -> String {
    if bound.ip().is_unspecified() {
        let host = std::env::var("POD_IP").unwrap_or_else(|_| "127.0.0.1".into());
        format!("{host}:{}", bound.port())
    } else {
        bound.to_string()
    }
}

enum SessionError {
    NotConnected(String),
    Lost(String),
}

/// The attempt this worker runs.
struct Running {
    attempt: String,
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
}

impl Running {
    /// Cancels the attempt and waits until its connector threads are joined.
    async fn cancel(self) {
        let _ = self.commands.send(Command::Cancel);
        if let Err(err) = self.task.await {
            tracing::warn!(attempt = %self.attempt, %err, "the attempt's task panicked");
        }
    }
}

/// One registered connection to the coordinator, until it drops.
async fn session(
    settings: &WorkerSettings,
    server: &Arc<ExchangeServer>,
    advertised: &str,
    ops: &OpsState,
    metrics: &JobMetrics,
) -> Result<(), SessionError> {
    let addr = resolve(&settings.coordinator).await.map_err(SessionError::NotConnected)?;
    let stream = TcpStream::connect(&addr).await.map_err(|e| SessionError::NotConnected(e.to_string()))?;
    stream.set_nodelay(true).map_err(|e| SessionError::NotConnected(e.to_string()))?;
    let (mut reader, mut writer) = stream.into_split();
    let register = ToCoordinator::Register { slots: settings.slots, data_addr: advertised.to_owned() };
    write_message(&mut writer, &register).await.map_err(|e| SessionError::NotConnected(e.to_string()))?;
    match read_message::<ToWorker>(&mut reader).await {
        Ok(ToWorker::Registered { worker }) => {
            tracing::info!(worker, %addr, "registered with the coordinator")
        }
        Ok(other) => return Err(SessionError::NotConnected(format!("expected Registered, got {other:?}"))),
        Err(err) => return Err(SessionError::NotConnected(err.to_string())),
    }
    ops.set_ready(true);

    let (out, mut outgoing) = mpsc::unbounded_channel::<ToCoordinator>();
    let mut writing = tokio::spawn(async move {
        let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
        loop {
            let message = tokio::select! {
                message = outgoing.recv() => match message {
                    Some(message) => message,
                    None => return Ok::<(), RpcError>(()),
                },
                _ = heartbeat.tick() => ToCoordinator::Heartbeat,
            };
            write_message(&mut writer, &message).await?;
        }
    });
    let mut running: Option<Running> = None;
    let lost = loop {
        let message = tokio::select! {
            message = read_message::<ToWorker>(&mut reader) => message,
            written = &mut writing => break format!("writing to the coordinator: {written:?}"),
        };
        let message = match message {
            Ok(message) => message,
            Err(err) => break err.to_string(),
        };
        let current = running.as_ref().map(|r| r.attempt.as_str());
        match message {
            ToWorker::Heartbeat | ToWorker::Registered { .. } => {}
            ToWorker::Deploy(mut deployment) => {
                if let Some(bootstrap) = &settings.kafka_bootstrap {
                    deployment.kafka.bootstrap_servers = Some(bootstrap.clone());
                }
                deployment.kafka.properties = settings.kafka_properties.clone();
                if settings.state_max_bytes.is_some() {
                    deployment.state_max_bytes = settings.state_max_bytes;
                }
                if let Some(previous) = running.take() {
                    previous.cancel().await;
                }
                let (commands, received) = mpsc::unbounded_channel();
                let attempt = deployment.attempt.clone();
                let task = tokio::spawn(run_deployment(
                    *deployment,
                    server.clone(),
                    metrics.clone(),
                    received,
                    out.clone(),
                ));
                running = Some(Running { attempt, commands, task });
            }
            ToWorker::Barrier { attempt, checkpoint, previous } if current == Some(attempt.as_str()) => {
                if let Some(r) = &running {
                    let _ = r.commands.send(Command::Barrier { checkpoint, previous });
                }
            }
            ToWorker::Sink { attempt, side, instance, commit, checkpoint }
                if current == Some(attempt.as_str()) =>
            {
                let id = CheckpointId(checkpoint);
                let message = if commit { SinkMessage::Commit(id) } else { SinkMessage::Barrier(id) };
                if let Some(r) = &running {
                    let _ = r.commands.send(Command::Sink { side, instance, message });
                }
            }
            ToWorker::Cancel { attempt } if current == Some(attempt.as_str()) => {
                if let Some(r) = running.take() {
                    // run_deployment reports Cancelled itself once joined.
                    r.cancel().await;
                }
            }
            ToWorker::Cancel { attempt } => {
                let _ = out.send(ToCoordinator::Cancelled { attempt });
            }
            ToWorker::Barrier { .. } | ToWorker::Sink { .. } => {
                tracing::debug!("a message for an attempt this worker does not run");
            }
        }
    };
    ops.set_ready(false);
    if let Some(r) = running.take() {
        r.cancel().await;
    }
    writing.abort();
    Err(SessionError::Lost(lost))
}
