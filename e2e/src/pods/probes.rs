//! Probes (startup, readiness, liveness) and lifecycle hooks (preStop), as kubelet runs
//! them: httpGet (HTTP/1.1 GET, 200–399 is success), tcpSocket (a connect), exec (the
//! command with the container's environment, exit 0 is success). gRPC and HTTPS probes are
//! checked as TCP connects (no TLS or gRPC client in the runner).
//!
//! Owns probe timing and thresholds; reports transitions as [`ProbeEvent`]s and leaves
//! killing and status to the container supervisor.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, ExecAction, HTTPGetAction, LifecycleHandler, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::volumes::MountRewriter;
use crate::metrics::{ProbeLabels, RunnerMetrics};

/// A probe result that changes the container's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeEvent {
    /// The startup probe passed (or there is none): liveness and readiness begin.
    Started,
    Ready(bool),
    /// Liveness or startup failed `failureThreshold` times: the container must be restarted.
    Unhealthy(String),
}

/// How to run an exec probe or hook "inside" the container.
#[derive(Debug, Clone)]
pub struct ExecContext {
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub rewriter: MountRewriter,
    /// The image's binary: `(name, path)`, used when command[0] names it.
    pub image_binary: Option<(String, PathBuf)>,
    pub path_var: String,
}

/// What probes run against.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    pub pod_ip: Ipv4Addr,
    pub container: Arc<Container>,
    pub exec: Arc<ExecContext>,
}

/// Aborts the probe task when the container run ends.
pub struct ProbeTask(JoinHandle<()>);

impl Drop for ProbeTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub fn spawn(
    target: ProbeTarget,
    events: mpsc::UnboundedSender<ProbeEvent>,
    metrics: RunnerMetrics,
) -> ProbeTask {
    ProbeTask(tokio::spawn(run_probes(target, events, metrics)))
}

#[derive(Debug, Clone, Copy)]
struct Timing {
    initial_delay: Duration,
    period: Duration,
    timeout: Duration,
    success_threshold: u32,
    failure_threshold: u32,
}

fn timing(probe: &Probe) -> Timing {
    let secs = |v: Option<i32>, default: i32| {
        Duration::from_secs(u64::try_from(v.unwrap_or(default).max(0)).unwrap_or(0))
    };
    let count = |v: Option<i32>, default: i32| u32::try_from(v.unwrap_or(default).max(1)).unwrap_or(1);
    Timing {
        initial_delay: secs(probe.initial_delay_seconds, 0),
        period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
        timeout: secs(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
        success_threshold: count(probe.success_threshold, 1),
        failure_threshold: count(probe.failure_threshold, 3),
    }
}

async fn run_probes(target: ProbeTarget, events: mpsc::UnboundedSender<ProbeEvent>, metrics: RunnerMetrics) {
    let container = target.container.clone();
    let started_at = Instant::now();
    if let Some(probe) = &container.startup_probe {
        let t = timing(probe);
        tokio::time::sleep(t.initial_delay).await;
        let mut failures = 0;
        loop {
            match check(probe, &target, t.timeout).await {
                Ok(()) => break,
                Err(message) => {
                    metrics.probe_failures.get_or_create(&ProbeLabels { probe: "startup" }).inc();
                    failures += 1;
                    if failures >= t.failure_threshold {
                        let _ =
                            events.send(ProbeEvent::Unhealthy(format!("Startup probe failed: {message}")));
                        return;
                    }
                }
            }
            tokio::time::sleep(t.period).await;
        }
    }
    let _ = events.send(ProbeEvent::Started);

    let readiness = async {
        let Some(probe) = &container.readiness_probe else {
            let _ = events.send(ProbeEvent::Ready(true));
            return;
        };
        let t = timing(probe);
        tokio::time::sleep_until((started_at + t.initial_delay).into()).await;
        let (mut ready, mut successes, mut failures) = (false, 0, 0);
        loop {
            match check(probe, &target, t.timeout).await {
                Ok(()) => {
                    successes += 1;
                    failures = 0;
                    if !ready && successes >= t.success_threshold {
                        ready = true;
                        let _ = events.send(ProbeEvent::Ready(true));
                    }
                }
                Err(message) => {
                    metrics.probe_failures.get_or_create(&ProbeLabels { probe: "readiness" }).inc();
                    tracing::debug!(container = %container.name, %message, "readiness probe failed");
                    failures += 1;
                    successes = 0;
                    if ready && failures >= t.failure_threshold {
                        ready = false;
                        let _ = events.send(ProbeEvent::Ready(false));
                    }
                }
            }
            tokio::time::sleep(t.period).await;
        }
    };
    let liveness = async {
        let Some(probe) = &container.liveness_probe else {
            return std::future::pending::<()>().await;
        };
        let t = timing(probe);
        tokio::time::sleep_until((started_at + t.initial_delay).into()).await;
        let mut failures = 0;
        loop {
            match check(probe, &target, t.timeout).await {
                Ok(()) => failures = 0,
                Err(message) => {
                    metrics.probe_failures.get_or_create(&ProbeLabels { probe: "liveness" }).inc();
                    failures += 1;
                    if failures >= t.failure_threshold {
                        let _ =
                            events.send(ProbeEvent::Unhealthy(format!("Liveness probe failed: {message}")));
                        return;
                    }
                }
            }
            tokio::time::sleep(t.period).await;
        }
    };
    tokio::join!(readiness, liveness);
}

/// Runs one probe once.
pub async fn check(probe: &Probe, target: &ProbeTarget, timeout: Duration) -> Result<(), String> {
    if let Some(http) = &probe.http_get {
        return http_get(http, target, timeout).await;
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = resolve_port(&tcp.port, &target.container)?;
        let host = tcp.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| target.pod_ip.to_string());
        return tcp_connect(&host, port, timeout).await;
    }
    if let Some(exec) = &probe.exec {
        return run_exec(exec, &target.exec, timeout).await;
    }
    if let Some(grpc) = &probe.grpc {
        let port = u16::try_from(grpc.port).map_err(|_| format!("invalid gRPC port {}", grpc.port))?;
        return tcp_connect(&target.pod_ip.to_string(), port, timeout).await;
    }
    Err("probe has no handler".into())
}

/// Runs a lifecycle hook (preStop) until it finishes or `deadline` passes.
pub async fn run_hook(
    handler: &LifecycleHandler,
    target: &ProbeTarget,
    deadline: Instant,
) -> Result<(), String> {
    let budget = deadline.saturating_duration_since(Instant::now());
    if let Some(exec) = &handler.exec {
        return run_exec(exec, &target.exec, budget).await;
    }
    if let Some(http) = &handler.http_get {
        return http_get(http, target, budget).await;
    }
    if let Some(sleep) = &handler.sleep {
        let wanted = Duration::from_secs(u64::try_from(sleep.seconds).unwrap_or(0));
        tokio::time::sleep(wanted.min(budget)).await;
        return Ok(());
    }
    if let Some(tcp) = &handler.tcp_socket {
        let port = resolve_port(&tcp.port, &target.container)?;
        return tcp_connect(&target.pod_ip.to_string(), port, budget).await;
    }
    Ok(())
}

fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(n) => n,
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| format!("container has no port named {name:?}"))?,
        },
    };
    u16::try_from(number).map_err(|_| format!("invalid port {number}"))
}

async fn tcp_connect(host: &str, port: u16, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(format!("dial tcp {host}:{port}: {err}")),
        Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
    }
}

async fn http_get(action: &HTTPGetAction, target: &ProbeTarget, timeout: Duration) -> Result<(), String> {
    let host = action.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| target.pod_ip.to_string());
    let port = resolve_port(&action.port, &target.container)?;
    if action.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("HTTPS")) {
        return tcp_connect(&host, port, timeout).await;
    }
    let mut path = action.path.clone().unwrap_or_else(|| "/".into());
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let url = format!("http://{host}:{port}{path}");
    let request = async {
        let mut stream = TcpStream::connect((host.as_str(), port)).await?;
        let mut head = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.36\r\nAccept: */*\r\nConnection: close\r\n"
        );
        for header in action.http_headers.iter().flatten() {
            head.push_str(&format!("{}: {}\r\n", header.name, header.value));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        let mut response = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        while !response.windows(2).any(|w| w == b"\r\n") && response.len() < 4096 {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            response.extend_from_slice(&chunk[..n]);
        }
        Ok::<Vec<u8>, std::io::Error>(response)
    };
    let response = match tokio::time::timeout(timeout, request).await {
        Ok(Ok(response)) => response,
        Ok(Err(err)) => return Err(format!("Get {url:?}: {err}")),
        Err(_) => {
            return Err(format!("Get {url:?}: context deadline exceeded (timeout {}s)", timeout.as_secs()));
        }
    };
    let status_line = String::from_utf8_lossy(&response);
    let code = status_line.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok());
    match code {
        Some(code) if (200..400).contains(&code) => Ok(()),
        Some(code) => Err(format!("HTTP probe failed with statuscode: {code}")),
        None => Err(format!("Get {url:?}: malformed HTTP response")),
    }
}

/// Finds `name` on a PATH-style list of folders.
pub fn find_on_path(name: &str, path_var: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    path_var.split(':').filter(|d| !d.is_empty()).map(|dir| PathBuf::from(dir).join(name)).find(|candidate| {
        std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

async fn run_exec(action: &ExecAction, ctx: &ExecContext, timeout: Duration) -> Result<(), String> {
    let command: Vec<String> = action.command.iter().flatten().map(|a| ctx.rewriter.rewrite(a)).collect();
    let Some(first) = command.first() else { return Err("exec probe has no command".into()) };
    let program = match &ctx.image_binary {
        Some((name, path)) if first.rsplit('/').next() == Some(name.as_str()) => path.clone(),
        _ if first.contains('/') => PathBuf::from(first),
        _ => find_on_path(first, &ctx.path_var)
            .ok_or_else(|| format!("exec: {first:?}: executable file not found in $PATH"))?,
    };
    let mut child = tokio::process::Command::new(&program);
    child
        .args(&command[1..])
        .env_clear()
        .envs(ctx.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&ctx.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(timeout, child.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(err)) => return Err(format!("exec {first:?}: {err}")),
        Err(_) => return Err(format!("command {command:?} timed out")),
    };
    if output.status.success() {
        Ok(())
    } else {
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        let text: String = text.trim().chars().take(200).collect();
        Err(format!("command {command:?} exited with {}: {text}", output.status.code().unwrap_or(-1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn target(container: serde_json::Value) -> ProbeTarget {
        let container: Container = serde_json::from_value(container).expect("valid container");
        ProbeTarget {
            pod_ip: Ipv4Addr::LOCALHOST,
            container: Arc::new(container),
            exec: Arc::new(ExecContext {
                env: vec![("MARK".into(), "ok".into())],
                cwd: std::env::temp_dir(),
                rewriter: MountRewriter::new(std::path::Path::new("/nowhere"), Vec::new()),
                image_binary: None,
                path_var: "/usr/bin:/bin".into(),
            }),
        }
    }

    async fn http_server(status: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        port
    }

    fn probe(value: serde_json::Value) -> Probe {
        serde_json::from_value(value).expect("valid probe")
    }

    #[tokio::test]
    async fn http_probes_judge_the_status_code_and_resolve_named_ports() {
        let ok = http_server("200 OK").await;
        let missing = http_server("404 Not Found").await;
        let t = target(serde_json::json!({"name": "c", "ports": [{"name": "web", "containerPort": ok}]}));
        let second = Duration::from_secs(1);
        assert_eq!(
            check(&probe(serde_json::json!({"httpGet": {"port": "web", "path": "/healthz"}})), &t, second)
                .await,
            Ok(())
        );
        let err = check(&probe(serde_json::json!({"httpGet": {"port": missing}})), &t, second).await;
        assert_eq!(err, Err("HTTP probe failed with statuscode: 404".into()));
        let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr").port();
        assert!(check(&probe(serde_json::json!({"tcpSocket": {"port": closed}})), &t, second).await.is_err());
        assert_eq!(check(&probe(serde_json::json!({"tcpSocket": {"port": ok}})), &t, second).await, Ok(()));
    }

    #[tokio::test]
    async fn exec_probes_use_the_container_env() {
        let t = target(serde_json::json!({"name": "c"}));
        let second = Duration::from_secs(2);
        let pass = probe(serde_json::json!({"exec": {"command": ["sh", "-c", "test \"$MARK\" = ok"]}}));
        let fail = probe(serde_json::json!({"exec": {"command": ["sh", "-c", "echo nope; exit 4"]}}));
        assert_eq!(check(&pass, &t, second).await, Ok(()));
        let err = check(&fail, &t, second).await.expect_err("fails");
        assert!(err.contains("exited with 4") && err.contains("nope"), "{err}");
        let missing = probe(serde_json::json!({"exec": {"command": ["no-such-binary-here"]}}));
        assert!(check(&missing, &t, second).await.expect_err("not found").contains("not found in $PATH"));
    }

    #[tokio::test]
    async fn readiness_and_liveness_report_transitions() {
        let ok = http_server("200 OK").await;
        let t = target(serde_json::json!({
            "name": "c",
            "readinessProbe": {"httpGet": {"port": ok}, "periodSeconds": 1},
            "livenessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 2}
        }));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _task = spawn(t, tx, RunnerMetrics::default());
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let event =
                tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("event in time");
            seen.push(event.expect("channel open"));
        }
        assert_eq!(seen[0], ProbeEvent::Started);
        assert_eq!(seen[1], ProbeEvent::Ready(true));
        assert!(
            matches!(&seen[2], ProbeEvent::Unhealthy(m) if m.starts_with("Liveness probe failed")),
            "{seen:?}"
        );
    }
}
