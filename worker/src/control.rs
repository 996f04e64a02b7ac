//! The job's control API, served beside `/metrics` by the process that coordinates the job:
//!
//! - `GET /v1/job`: phase, parallelism, the last completed checkpoint, restore origin;
//! - `GET /v1/checkpoints`: the completed checkpoints in storage;
//! - `POST /v1/savepoints` `{"targetDirectory"?: url, "stop"?: bool}` → `202` with a request
//!   id; `GET /v1/savepoints/{id}` polls it (`IN_PROGRESS`, `COMPLETED` with the location,
//!   `FAILED` with the reason); `GET /v1/savepoints` lists this run's requests.
//!
//! Errors are `application/problem+json` naming the field at fault. [`JobControl`] is the
//! handle the HTTP layer and the running job share.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use millrace_checkpoint::CheckpointStorage;
use millrace_connectors::StopSignal;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::coordinator::{CheckpointStatus, Control, JobStatusView};

/// Where the job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobPhase {
    Starting,
    Running,
    /// A job spread over workers: it failed and waits to start again from its newest
    /// checkpoint (for the backoff, and for enough workers' slots).
    Restarting,
    Stopping,
    Finished,
    Failed,
}

/// One savepoint request of this run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SavepointRequest {
    pub id: u64,
    pub status: SavepointState,
    pub target_directory: String,
    pub stop: bool,
    pub requested_at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SavepointState {
    InProgress,
    Completed,
    Failed,
}

#[derive(Debug, Default)]
struct Shared {
    coordinator: Option<mpsc::Sender<Control>>,
    phase: Option<JobPhase>,
    savepoints: BTreeMap<u64, SavepointRequest>,
    parallelism: usize,
    max_parallelism: u32,
    checkpoint_url: Option<String>,
    last_error: Option<String>,
    /// Registered workers and their slots (a coordinator; zero for `run`).
    workers: usize,
    slots: usize,
    /// The state this process's operators hold and its limit (`run`; a coordinator runs no
    /// operators, its workers report theirs in their `/metrics`).
    state: Option<(Gauge, Gauge)>,
}

/// The handle shared by a running job and its control API.
#[derive(Debug, Clone)]
pub struct JobControl {
    pub stop: StopSignal,
    pub status: JobStatusView,
    /// Default folder (URL) under which savepoints are written.
    savepoint_dir: Option<String>,
    shared: Arc<Mutex<Shared>>,
    next_request: Arc<AtomicU64>,
}

impl JobControl {
    pub fn new(stop: StopSignal, savepoint_dir: Option<String>) -> Self {
        Self {
            stop,
            status: JobStatusView::default(),
            savepoint_dir,
            shared: Arc::default(),
            next_request: Arc::new(AtomicU64::new(1)),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> Option<T> {
        self.shared.lock().ok().map(|mut shared| f(&mut shared))
    }

    /// Called by the job when its coordinator runs.
    pub(crate) fn attach(
        &self,
        coordinator: mpsc::Sender<Control>,
        parallelism: usize,
        max_parallelism: u32,
        checkpoint_url: &str,
    ) {
        self.with(|s| {
            s.coordinator = Some(coordinator);
            s.parallelism = parallelism;
            s.max_parallelism = max_parallelism;
            s.checkpoint_url = Some(checkpoint_url.to_owned());
        });
    }

    /// Shows `metrics`' state bytes and limit in `GET /v1/job` (`run`).
    pub fn watch_state(&self, metrics: &millrace_runtime::RuntimeMetrics) {
        self.with(|s| s.state = Some((metrics.process_state_bytes.clone(), metrics.state_max_bytes.clone())));
    }

    /// The coordinator role's registered workers and their slots in total.
    pub(crate) fn set_workers(&self, workers: usize, slots: usize) {
        self.with(|s| {
            s.workers = workers;
            s.slots = slots;
        });
    }

    /// Sets parallelism, maxParallelism and the checkpoint storage shown while no attempt
    /// runs (a coordinator waiting for workers).
    pub(crate) fn describe(&self, parallelism: usize, max_parallelism: u32, checkpoint_url: Option<&str>) {
        self.with(|s| {
            s.parallelism = parallelism;
            s.max_parallelism = max_parallelism;
            s.checkpoint_url = checkpoint_url.map(str::to_owned);
        });
    }

    /// Called by the job before its coordinator ends: no more requests reach it.
    pub(crate) fn detach(&self) {
        self.with(|s| s.coordinator = None);
    }

    pub(crate) fn set_phase(&self, phase: JobPhase, error: Option<String>) {
        self.with(|s| {
            s.phase = Some(phase);
            if error.is_some() {
                s.last_error = error;
            }
            if matches!(phase, JobPhase::Finished | JobPhase::Failed) {
                s.coordinator = None;
            }
        });
    }

    pub fn phase(&self) -> JobPhase {
        self.with(|s| s.phase).flatten().unwrap_or(JobPhase::Starting)
    }

    /// Asks for a savepoint into `target` (the default folder when `None`); returns the
    /// request, to be polled with [`JobControl::savepoint`].
    pub fn request_savepoint(&self, target: Option<String>, stop: bool) -> Result<SavepointRequest, Problem> {
        let coordinator = self
            .with(|s| s.coordinator.clone())
            .flatten()
            .ok_or_else(|| Problem::conflict("the job takes no checkpoints, or is not running"))?;
        let id = self.next_request.fetch_add(1, Ordering::SeqCst);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        let target = match target {
            Some(target) => target,
            None => match &self.savepoint_dir {
                Some(dir) => format!("{}/savepoint-{now}-{id}", dir.trim_end_matches('/')),
                None => {
                    return Err(Problem::invalid(
                        "targetDirectory",
                        "no default savepoint directory is configured (--savepoint-dir); name one",
                    ));
                }
            },
        };
        CheckpointStorage::open(&target).map_err(|e| Problem::invalid("targetDirectory", &e.to_string()))?;
        let request = SavepointRequest {
            id,
            status: SavepointState::InProgress,
            target_directory: target.clone(),
            stop,
            requested_at_ms: now,
            checkpoint_id: None,
            location: None,
            error: None,
        };
        self.with(|s| s.savepoints.insert(id, request.clone()));
        let control = self.clone();
        tokio::spawn(async move {
            let (reply, answer) = oneshot::channel();
            let sent = coordinator.send(Control::Savepoint { target, stop, reply }).await;
            let outcome = match sent {
                Err(_) => Err("the job stopped before the savepoint was taken".to_string()),
                Ok(()) => answer
                    .await
                    .unwrap_or_else(|_| Err("the job stopped before the savepoint was taken".into())),
            };
            control.with(|s| {
                if let Some(request) = s.savepoints.get_mut(&id) {
                    match &outcome {
                        Ok(written) => {
                            request.status = SavepointState::Completed;
                            request.checkpoint_id = Some(written.checkpoint_id);
                            request.location = Some(written.location.clone());
                        }
                        Err(why) => {
                            request.status = SavepointState::Failed;
                            request.error = Some(why.clone());
                        }
                    }
                }
            });
            if outcome.is_ok() && stop {
                control.stop.stop();
            }
        });
        Ok(request)
    }

    pub fn savepoint(&self, id: u64) -> Option<SavepointRequest> {
        self.with(|s| s.savepoints.get(&id).cloned()).flatten()
    }

    pub fn savepoints(&self) -> Vec<SavepointRequest> {
        self.with(|s| s.savepoints.values().cloned().collect()).unwrap_or_default()
    }
}

/// An `application/problem+json` error.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
}

impl Problem {
    fn invalid(field: &'static str, detail: &str) -> Self {
        Self {
            kind: "about:blank",
            title: "Invalid request",
            status: 400,
            detail: detail.to_owned(),
            field: Some(field),
        }
    }

    fn conflict(detail: &str) -> Self {
        Self { kind: "about:blank", title: "Conflict", status: 409, detail: detail.to_owned(), field: None }
    }

    fn not_found(detail: String) -> Self {
        Self { kind: "about:blank", title: "Not found", status: 404, detail, field: None }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        (status, [(header::CONTENT_TYPE, "application/problem+json")], body).into_response()
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct JobView {
    phase: JobPhase,
    parallelism: usize,
    max_parallelism: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint_storage: Option<String>,
    /// The reason of the last failure (null while there was none).
    last_error: Option<String>,
    workers: usize,
    slots: usize,
    /// The checkpoint or savepoint the running attempt started from.
    restored_from: Option<String>,
    checkpoints: CheckpointStatus,
    /// Operator state held in this process (`run` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<StateView>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StateView {
    /// Bytes the operators' state holds in memory (docs/checkpoints.md, "State size").
    bytes: i64,
    /// The limit (`state.max-bytes`); null when there is none.
    max_bytes: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SavepointBody {
    target_directory: Option<String>,
    #[serde(default)]
    stop: bool,
}

/// The control API's routes (merge them into the ops router).
pub fn control_router(control: JobControl) -> Router {
    Router::new()
        .route("/v1/job", get(job))
        .route("/v1/checkpoints", get(checkpoints))
        .route("/v1/savepoints", get(list_savepoints).post(trigger_savepoint))
        .route("/v1/savepoints/{id}", get(get_savepoint))
        .with_state(control)
}

async fn job(State(control): State<JobControl>) -> Json<JobView> {
    let (parallelism, max_parallelism, checkpoint_storage, last_error, workers, slots, state) = control
        .with(|s| {
            (
                s.parallelism,
                s.max_parallelism,
                s.checkpoint_url.clone(),
                s.last_error.clone(),
                s.workers,
                s.slots,
                s.state.as_ref().map(|(bytes, limit)| StateView {
                    bytes: bytes.get(),
                    max_bytes: Some(limit.get()).filter(|l| *l > 0),
                }),
            )
        })
        .unwrap_or_default();
    let checkpoints = control.status.get();
    Json(JobView {
        phase: control.phase(),
        parallelism,
        max_parallelism,
        checkpoint_storage,
        last_error,
        workers,
        slots,
        restored_from: checkpoints.restored_from.clone(),
        checkpoints,
        state,
    })
}

async fn checkpoints(State(control): State<JobControl>) -> Result<Json<serde_json::Value>, Problem> {
    let url = control
        .with(|s| s.checkpoint_url.clone())
        .flatten()
        .ok_or_else(|| Problem::conflict("the job takes no checkpoints"))?;
    let storage = CheckpointStorage::open(&url).map_err(|e| Problem::conflict(&e.to_string()))?;
    let ids = storage.completed_checkpoints().await.map_err(|e| Problem::conflict(&e.to_string()))?;
    let listed: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| serde_json::json!({"id": id, "location": storage.location(&format!("chk-{id}"))}))
        .collect();
    Ok(Json(serde_json::json!({ "checkpoints": listed })))
}

async fn list_savepoints(State(control): State<JobControl>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "savepoints": control.savepoints() }))
}

async fn trigger_savepoint(
    State(control): State<JobControl>,
    body: Option<Json<serde_json::Value>>,
) -> Response {
    let body: SavepointBody = match body.map(|Json(v)| serde_json::from_value(v)) {
        None => SavepointBody::default(),
        Some(Ok(body)) => body,
        Some(Err(e)) => return Problem::invalid("body", &e.to_string()).into_response(),
    };
    match control.request_savepoint(body.target_directory, body.stop) {
        Ok(request) => (
            StatusCode::ACCEPTED,
            [(header::LOCATION, format!("/v1/savepoints/{}", request.id))],
            Json(request),
        )
            .into_response(),
        Err(problem) => problem.into_response(),
    }
}

async fn get_savepoint(
    State(control): State<JobControl>,
    Path(id): Path<u64>,
) -> Result<Json<SavepointRequest>, Problem> {
    control.savepoint(id).map(Json).ok_or_else(|| Problem::not_found(format!("no savepoint request {id}")))
}
