//! A client of one job coordinator's control API (`http://<job>-coordinator.<ns>.svc:9200`,
//! see notes in docs/operator.md): the job's phase, workers, slots and checkpoints, and
//! savepoint requests. It only reads and triggers; deciding what to do is [`super::lifecycle`]'s.
//!
//! Replies are read leniently (unknown fields ignored, most fields optional) so that a
//! coordinator of a newer or older release still reports what both know.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::resolve;

/// The coordinator's ops and control port.
pub const HTTP_PORT: u16 = 9200;
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{url} is unreachable: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("{url} answered {status}: {detail}")]
    Refused { url: String, status: u16, detail: String },
}

/// `GET /v1/job`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    /// `STARTING`, `RUNNING`, `RESTARTING`, `STOPPING`, `FINISHED` or `FAILED`.
    pub phase: String,
    #[serde(default)]
    pub parallelism: Option<i64>,
    #[serde(default)]
    pub workers: Option<i64>,
    #[serde(default)]
    pub slots: Option<i64>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub checkpoints: Option<CheckpointView>,
    #[serde(default)]
    pub restored_from: Option<String>,
}

/// The `checkpoints` object of `GET /v1/job`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointView {
    #[serde(default)]
    pub last_checkpoint_id: Option<i64>,
    #[serde(default)]
    pub last_checkpoint_completed_at_ms: Option<i64>,
    #[serde(default)]
    pub last_checkpoint_location: Option<String>,
    #[serde(default)]
    pub restored_from: Option<String>,
}

impl JobView {
    pub fn is_running(&self) -> bool {
        self.phase == "RUNNING"
    }

    pub fn has_failed(&self) -> bool {
        self.phase == "FAILED"
    }
}

/// One savepoint request (`POST /v1/savepoints`, `GET /v1/savepoints/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavepointRequest {
    pub id: i64,
    /// `IN_PROGRESS`, `COMPLETED` or `FAILED`.
    pub status: String,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CheckpointList {
    #[serde(default)]
    checkpoints: Vec<CheckpointEntry>,
}

/// One completed checkpoint in `GET /v1/checkpoints`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CheckpointEntry {
    pub id: i64,
    pub location: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SavepointBody {
    stop: bool,
}

/// Talks to coordinators; one per operator (the HTTP connection pool is shared).
#[derive(Clone)]
pub struct CoordinatorClient {
    http: reqwest::Client,
}

/// The Service name of a job's coordinator, in the form DNS and the pod runner's hosts file know.
pub fn coordinator_host(namespace: &str, job: &str) -> String {
    format!("{job}-coordinator.{namespace}.svc")
}

impl CoordinatorClient {
    pub fn new() -> Result<Self, reqwest::Error> {
        Ok(Self { http: reqwest::Client::builder().timeout(TIMEOUT).build()? })
    }

    async fn url(&self, namespace: &str, job: &str, path: &str) -> Result<String, ControlError> {
        let host = coordinator_host(namespace, job);
        let address = resolve::resolve(&host, HTTP_PORT).await.map_err(|detail| {
            ControlError::Unreachable { url: format!("http://{host}:{HTTP_PORT}{path}"), detail }
        })?;
        Ok(format!("http://{address}{path}"))
    }

    async fn send(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ControlError> {
        let response = request
            .send()
            .await
            .map_err(|err| ControlError::Unreachable { url: url.to_owned(), detail: err.to_string() })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let detail = response.text().await.unwrap_or_default();
        Err(ControlError::Refused { url: url.to_owned(), status: status.as_u16(), detail })
    }

    async fn get<T: for<'de> Deserialize<'de>>(
        &self,
        namespace: &str,
        job: &str,
        path: &str,
    ) -> Result<T, ControlError> {
        let url = self.url(namespace, job, path).await?;
        let response = self.send(&url, self.http.get(&url)).await?;
        response
            .json()
            .await
            .map_err(|err| ControlError::Unreachable { url, detail: format!("unreadable reply: {err}") })
    }

    pub async fn job(&self, namespace: &str, job: &str) -> Result<JobView, ControlError> {
        self.get(namespace, job, "/v1/job").await
    }

    /// The completed checkpoints, oldest first as the coordinator lists them.
    pub async fn checkpoints(
        &self,
        namespace: &str,
        job: &str,
    ) -> Result<Vec<CheckpointEntry>, ControlError> {
        Ok(self.get::<CheckpointList>(namespace, job, "/v1/checkpoints").await?.checkpoints)
    }

    /// The request, or `None` when this coordinator does not know it (it restarted since).
    pub async fn savepoint(
        &self,
        namespace: &str,
        job: &str,
        id: i64,
    ) -> Result<Option<SavepointRequest>, ControlError> {
        match self.get(namespace, job, &format!("/v1/savepoints/{id}")).await {
            Ok(request) => Ok(Some(request)),
            Err(ControlError::Refused { status: 404, .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Asks for a savepoint into the coordinator's savepoint folder.
    pub async fn trigger_savepoint(
        &self,
        namespace: &str,
        job: &str,
        stop: bool,
    ) -> Result<SavepointRequest, ControlError> {
        let url = self.url(namespace, job, "/v1/savepoints").await?;
        let response = self.send(&url, self.http.post(&url).json(&SavepointBody { stop })).await?;
        response
            .json()
            .await
            .map_err(|err| ControlError::Unreachable { url, detail: format!("unreadable reply: {err}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_job_view_of_todays_run_role_and_of_the_coordinator() {
        // `millrace-worker run` today: no workers/slots, checkpoints without a location.
        let run: JobView = serde_json::from_str(
            r#"{"phase":"RUNNING","parallelism":2,"maxParallelism":128,"checkpointStorage":"file:///c",
                "checkpoints":{"lastCheckpointId":4,"lastCheckpointCompletedAtMs":1764633600000,
                "checkpointsCompleted":4,"checkpointsFailed":0,"restoredFrom":null}}"#,
        )
        .expect("parses");
        assert!(run.is_running());
        assert_eq!(run.workers, None);
        assert_eq!(run.checkpoints.as_ref().and_then(|c| c.last_checkpoint_id), Some(4));
        let coordinator: JobView = serde_json::from_str(
            r#"{"phase":"FAILED","parallelism":4,"workers":2,"slots":4,"lastError":"boom","restoredFrom":"file:///s/sp-1",
                "checkpoints":{"lastCheckpointId":9,"lastCheckpointLocation":"file:///c/chk-9"}}"#,
        )
        .expect("parses");
        assert!(coordinator.has_failed());
        assert_eq!((coordinator.workers, coordinator.slots), (Some(2), Some(4)));
        assert_eq!(
            coordinator.checkpoints.and_then(|c| c.last_checkpoint_location).as_deref(),
            Some("file:///c/chk-9")
        );
    }

    #[test]
    fn reads_savepoint_requests() {
        let request: SavepointRequest = serde_json::from_str(
            r#"{"id":3,"status":"COMPLETED","targetDirectory":"file:///s","stop":true,"requestedAtMs":1,
                "checkpointId":7,"location":"file:///s/sp-7"}"#,
        )
        .expect("parses");
        assert_eq!(request.location.as_deref(), Some("file:///s/sp-7"));
        assert_eq!(coordinator_host("analytics", "clicks"), "clicks-coordinator.analytics.svc");
    }
}
