//! Processes of a job spread over the `coordinator` and `worker` roles, for the roles tests:
//! each a real `millrace-worker` child with its own ops port and log, restartable with the
//! same arguments (as a Deployment restarts its Pod), killed when dropped.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const DEADLINE: Duration = Duration::from_secs(120);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

/// One role process.
pub struct RoleProcess {
    name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    ops: String,
    log: PathBuf,
    child: Option<Child>,
    /// Earlier runs' logs, for failure messages.
    history: String,
}

impl RoleProcess {
    /// Starts `millrace-worker <args>` with its ops endpoint on a free port; logs go to
    /// `<dir>/<name>.log`.
    pub fn start(name: &str, dir: &Path, args: &[String], env: &[(&str, &str)]) -> Self {
        let ops = format!("127.0.0.1:{}", free_port());
        let mut process = Self {
            name: name.to_owned(),
            args: args.to_vec(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ops,
            log: dir.join(format!("{name}.log")),
            child: None,
            history: String::new(),
        };
        process.spawn();
        process
    }

    fn spawn(&mut self) {
        self.spawn_with(&[]);
    }

    fn spawn_with(&mut self, extra_env: &[(&str, &str)]) {
        let log = std::fs::File::create(&self.log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_millrace-worker"))
            .args(["--ops-addr", &self.ops])
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra_env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start millrace-worker");
        self.child = Some(child);
    }

    /// SIGKILL (no chance to clean up), reaped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.history.push_str(&format!("--- {} (killed) ---\n{}", self.name, self.log()));
    }

    /// Starts the process again with the same arguments.
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// Sends a signal (`STOP`, `CONT`, …) to the process.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("running");
        let sent = Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -{signal} {}", self.name);
    }

    /// Starts the process again with these environment variables added, for this run only.
    pub fn restart_with(&mut self, env: &[(&str, &str)]) {
        self.spawn_with(env);
    }

    /// SIGTERM, then waits for the exit; its status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("running");
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        self.wait_exit()
    }

    /// Waits for the process to exit by itself; its status (the run's log is kept).
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.as_mut().expect("running").try_wait() {
                self.child = None;
                self.history.push_str(&format!("--- {} (exited: {status}) ---\n{}", self.name, self.log()));
                return status;
            }
            assert!(started.elapsed() < DEADLINE, "{} did not exit:\n{}", self.name, self.log());
            std::thread::park_timeout(Duration::from_millis(50));
        }
    }

    /// Fails the test with the log if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!("{} exited with {status}:\n{}", self.name, self.log());
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every run's log.
    pub fn logs(&self) -> String {
        format!("{}--- {} (current) ---\n{}", self.history, self.name, self.log())
    }

    /// An HTTP request to the ops port; the status code and body (0 and empty when the
    /// process does not answer yet).
    pub fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let Ok(mut stream) = TcpStream::connect(&self.ops) else { return (0, String::new()) };
        let body = body.unwrap_or("");
        let request = format!(
            "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(request.as_bytes()).is_err() {
            return (0, String::new());
        }
        let mut response = String::new();
        if stream.read_to_string(&mut response).is_err() {
            return (0, String::new());
        }
        let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        (status, body)
    }

    /// The coordinator's `GET /v1/job`, `Null` while it does not answer.
    pub fn job(&self) -> serde_json::Value {
        let (status, body) = self.http("GET", "/v1/job", None);
        if status != 200 {
            return serde_json::Value::Null;
        }
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    }

    /// Waits until `GET /v1/job` satisfies `ready`; returns it.
    pub fn wait_for_job(
        &mut self,
        what: &str,
        ready: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let started = Instant::now();
        loop {
            self.assert_running();
            let job = self.job();
            if ready(&job) {
                return job;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "timed out waiting for {what}; job: {job}\n{}",
                self.logs()
            );
            std::thread::park_timeout(Duration::from_millis(100));
        }
    }
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last completed checkpoint id in a `/v1/job` answer (0 before any).
pub fn last_checkpoint(job: &serde_json::Value) -> u64 {
    job["checkpoints"]["lastCheckpointId"].as_u64().unwrap_or(0)
}

pub fn phase(job: &serde_json::Value) -> &str {
    job["phase"].as_str().unwrap_or("")
}

/// Asks the coordinator for a savepoint into `target` that stops the job, waits until it is
/// written and the job is FINISHED; the savepoint's location.
pub fn stop_with_savepoint(coordinator: &mut RoleProcess, target: &str) -> String {
    let (status, body) = coordinator.http(
        "POST",
        "/v1/savepoints",
        Some(&format!(r#"{{"targetDirectory": "{target}", "stop": true}}"#)),
    );
    assert_eq!(status, 202, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).expect("JSON")["id"].as_u64().expect("id");
    let deadline = Instant::now() + DEADLINE;
    let location = loop {
        let (status, body) = coordinator.http("GET", &format!("/v1/savepoints/{id}"), None);
        assert_eq!(status, 200, "{body}");
        let request: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        match request["status"].as_str() {
            Some("COMPLETED") => break request["location"].as_str().expect("location").to_owned(),
            Some("IN_PROGRESS") => {}
            other => panic!("savepoint {other:?}: {body}\n{}", coordinator.logs()),
        }
        assert!(Instant::now() < deadline, "the savepoint did not complete");
        std::thread::park_timeout(Duration::from_millis(20));
    };
    // The coordinator stays up, FINISHED, serving the savepoint's location.
    coordinator.wait_for_job("FINISHED", |job| phase(job) == "FINISHED");
    let (_, body) = coordinator.http("GET", &format!("/v1/savepoints/{id}"), None);
    assert!(body.contains(&location), "{body}");
    location
}

/// The newest completed checkpoint in a checkpoint folder (its `chk-N/_metadata`).
pub fn latest_on_disk(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.path().join("_metadata").exists())
                .filter_map(|e| {
                    e.file_name().to_str().and_then(|n| n.strip_prefix("chk-")).and_then(|n| n.parse().ok())
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}
