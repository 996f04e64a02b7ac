//! Container processes: spawned in their own process group (so a signal reaches everything
//! the container started, like a container's PID namespace), output appended to the
//! container's log file, a pid file for cleanup after a runner crash, and stopping with
//! SIGTERM then SIGKILL.
//!
//! Owns OS-level process handling only; what to run and when is decided by the caller.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// Everything needed to start one container process.
#[derive(Debug, Clone)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub log: PathBuf,
    pub pid_file: PathBuf,
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    /// The exit code, or 128 + signal number for a killed process (as container runtimes report).
    pub code: i32,
    pub signal: Option<i32>,
    pub finished_at: Timestamp,
}

pub struct RunningProcess {
    child: Child,
    pub pid: i32,
    pub started_at: Timestamp,
    pub started: Instant,
    pid_file: PathBuf,
}

pub fn spawn(launch: &Launch) -> std::io::Result<RunningProcess> {
    if let Some(parent) = launch.log.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&launch.log)?;
    let mut command = Command::new(&launch.program);
    command
        .args(&launch.args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&launch.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .process_group(0)
        .kill_on_drop(false);
    let child = command.spawn()?;
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .ok_or_else(|| std::io::Error::other("spawned process has no pid"))?;
    if let Some(parent) = launch.pid_file.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let start_ticks = process_start_ticks(pid).unwrap_or_default();
    std::fs::write(&launch.pid_file, format!("{pid} {start_ticks}\n"))?;
    Ok(RunningProcess {
        child,
        pid,
        started_at: Timestamp::now(),
        started: Instant::now(),
        pid_file: launch.pid_file.clone(),
    })
}

impl RunningProcess {
    /// Waits for the process to exit, then kills whatever it left in its group (a container's
    /// processes die with its main process).
    pub async fn wait(&mut self) -> ExitInfo {
        let status = self.child.wait().await;
        self.reap_group();
        match status {
            Ok(status) => ExitInfo {
                code: status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
                signal: status.signal(),
                finished_at: Timestamp::now(),
            },
            Err(err) => {
                tracing::warn!(pid = self.pid, %err, "waiting for a container process failed");
                ExitInfo { code: 128, signal: None, finished_at: Timestamp::now() }
            }
        }
    }

    /// SIGTERM to the group, SIGKILL once `deadline` passes (at once if it already has).
    pub async fn terminate(&mut self, deadline: Instant) -> ExitInfo {
        if Instant::now() >= deadline {
            signal_group(self.pid, Signal::SIGKILL);
            return self.wait().await;
        }
        signal_group(self.pid, Signal::SIGTERM);
        match tokio::time::timeout_at(deadline.into(), self.child.wait()).await {
            Ok(_) => self.wait().await,
            Err(_) => {
                tracing::info!(pid = self.pid, "grace period over: SIGKILL");
                signal_group(self.pid, Signal::SIGKILL);
                self.wait().await
            }
        }
    }

    pub fn ran_for(&self) -> Duration {
        self.started.elapsed()
    }

    fn reap_group(&self) {
        // The group id is the leader's pid; Linux does not reuse a pid while a group of that
        // id still has members, so this reaches only the container's own leftovers.
        signal_group(self.pid, Signal::SIGKILL);
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

pub fn signal_group(pgid: i32, signal: Signal) {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(err) => tracing::warn!(pgid, ?signal, %err, "signalling a process group failed"),
    }
}

/// The start time (clock ticks since boot) of `pid`, from `/proc/<pid>/stat`.
fn process_start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; starttime is field 22 overall.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// Kills the process groups recorded in `<pods-dir>/*/*/run/*.pid` by an earlier runner
/// that did not stop them (it crashed or was killed). Returns how many groups were signalled.
pub fn kill_leftovers(pods_dir: &Path, grace: Duration) -> usize {
    let mut groups = Vec::new();
    for pid_file in pid_files(pods_dir) {
        let Ok(text) = std::fs::read_to_string(&pid_file) else { continue };
        let mut fields = text.split_whitespace();
        let (Some(Ok(pid)), recorded_start) =
            (fields.next().map(str::parse::<i32>), fields.next().and_then(|s| s.parse::<u64>().ok()))
        else {
            let _ = std::fs::remove_file(&pid_file);
            continue;
        };
        // A live pid with another start time was reused by an unrelated process; a pid
        // without a process may still name the group of the container's children.
        let same_process = match process_start_ticks(pid) {
            Some(now) => recorded_start == Some(now),
            None => true,
        };
        if same_process && pid > 1 {
            tracing::info!(pid, file = %pid_file.display(), "stopping a container left by a previous runner");
            signal_group(pid, Signal::SIGTERM);
            groups.push(pid);
        }
        let _ = std::fs::remove_file(&pid_file);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && groups.iter().any(|&g| killpg(Pid::from_raw(g), None).is_ok()) {
        std::thread::sleep(Duration::from_millis(100));
    }
    for &group in &groups {
        signal_group(group, Signal::SIGKILL);
    }
    groups.len()
}

fn pid_files(pods_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(namespaces) = std::fs::read_dir(pods_dir) else { return out };
    for ns in namespaces.flatten() {
        let Ok(pods) = std::fs::read_dir(ns.path()) else { continue };
        for pod in pods.flatten() {
            let Ok(files) = std::fs::read_dir(pod.path().join("run")) else { continue };
            out.extend(
                files.flatten().map(|f| f.path()).filter(|p| p.extension().is_some_and(|e| e == "pid")),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(dir: &Path, script: &str) -> Launch {
        Launch {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("GREETING".into(), "hi".into())],
            cwd: dir.to_path_buf(),
            log: dir.join("c.log"),
            pid_file: dir.join("run/c.pid"),
        }
    }

    #[tokio::test]
    async fn output_goes_to_the_log_and_the_exit_code_is_reported() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut process =
            spawn(&launch(dir.path(), "echo $GREETING; echo oops >&2; exit 3")).expect("spawns");
        assert!(dir.path().join("run/c.pid").exists());
        let exit = process.wait().await;
        assert_eq!(exit.code, 3);
        assert_eq!(std::fs::read_to_string(dir.path().join("c.log")).expect("log"), "hi\noops\n");
        assert!(!dir.path().join("run/c.pid").exists(), "the pid file goes with the process");
    }

    #[tokio::test]
    async fn terminate_sends_sigterm_then_sigkill() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut polite =
            spawn(&launch(dir.path(), "trap 'echo term; exit 0' TERM; while true; do sleep 0.05; done"))
                .expect("spawns");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let exit = polite.terminate(Instant::now() + Duration::from_secs(5)).await;
        assert_eq!(exit.code, 0);
        assert!(std::fs::read_to_string(dir.path().join("c.log")).expect("log").contains("term"));

        let mut stubborn =
            spawn(&launch(dir.path(), "trap '' TERM; while true; do sleep 0.05; done")).expect("spawns");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        let exit = stubborn.terminate(Instant::now() + Duration::from_millis(300)).await;
        assert_eq!(exit.code, 128 + 9);
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn leftovers_of_a_previous_runner_are_killed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pod = dir.path().join("ns/p");
        std::fs::create_dir_all(&pod).expect("pod dir");
        let mut launch = launch(&pod, "sleep 30");
        launch.pid_file = pod.join("run/c.pid");
        let mut process = spawn(&launch).expect("spawns");
        assert_eq!(kill_leftovers(dir.path(), Duration::from_secs(2)), 1);
        let exit = tokio::time::timeout(Duration::from_secs(5), process.wait()).await.expect("process died");
        assert_eq!(exit.signal, Some(15));
    }
}
