//! What the worker's Kafka integration tests share: the broker address (failing loudly
//! when `KAFKA_BOOTSTRAP` is unset), unique names, topic creation, producing records, and a
//! real `millrace-worker run` process with its ops endpoint, killed when dropped.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

pub const DEADLINE: Duration = Duration::from_secs(90);

pub fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").expect(
        "KAFKA_BOOTSTRAP is not set: these platform tests need the local Kafka (make up, then source .local/env)",
    )
}

pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub fn create_topics(topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap()).create().expect("admin client");
    let new: Vec<NewTopic<'_>> =
        topics.iter().map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1))).collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let results = runtime
        .block_on(
            admin.create_topics(&new, &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))),
        )
        .expect("create_topics");
    for result in results {
        result.unwrap_or_else(|(topic, err)| panic!("creating topic {topic}: {err}"));
    }
}

/// Produces `(partition, timestamp, value)` records and waits until all are acknowledged.
pub fn produce(topic: &str, records: &[(i32, Option<i64>, String)]) {
    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", bootstrap()).create().expect("producer");
    for (partition, timestamp, value) in records {
        let mut record = BaseRecord::<(), [u8]>::to(topic).partition(*partition).payload(value.as_bytes());
        if let Some(ts) = timestamp {
            record = record.timestamp(*ts);
        }
        producer.send(record).map_err(|(e, _)| e).expect("enqueue");
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).expect("all input acknowledged");
}

/// A running `millrace-worker run`, killed when dropped.
pub struct RunningJob {
    child: Child,
    ops: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl RunningJob {
    pub fn start(sql: &str, parallelism: usize) -> Self {
        Self::start_with(sql, parallelism, &[], &[])
    }

    /// Starts the job with extra `run` arguments and environment variables.
    pub fn start_with(sql: &str, parallelism: usize, args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let job = dir.path().join("job.sql");
        std::fs::write(&job, sql).expect("write job");
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let ops = format!("127.0.0.1:{port}");
        let log = dir.path().join("job.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_millrace-worker"))
            .args(["run", "-f"])
            .arg(&job)
            .args([
                "--parallelism",
                &parallelism.to_string(),
                "--ops-addr",
                &ops,
                "--kafka-bootstrap",
                &bootstrap(),
            ])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start millrace-worker");
        Self { child, ops, log, _dir: dir }
    }

    /// Fails the test with the job's log if the job has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "the job exited with {status}:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }

    /// Kills the process with SIGKILL (no chance to clean up) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits (up to the deadline) for the process to exit; its status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        self.wait_exit()
    }

    /// Waits (up to the deadline) for the process to exit by itself; its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(started.elapsed() < DEADLINE, "the job did not exit:\n{}", self.log());
            std::thread::park_timeout(Duration::from_millis(50));
        }
    }

    /// The job's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An HTTP request to the job's ops port (`GET`/`POST` with a JSON body); the status
    /// code and the body.
    pub fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.ops).expect("ops endpoint");
        let body = body.unwrap_or("");
        let request = format!(
            "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).expect("request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response");
        let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        (status, body)
    }

    pub fn metrics(&self) -> String {
        let mut stream = TcpStream::connect(&self.ops).expect("ops endpoint");
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("request");
        let mut body = String::new();
        stream.read_to_string(&mut body).expect("response");
        body
    }

    /// Waits until the metrics satisfy `ready` (the job exports them once started).
    pub fn wait_for_metric(&mut self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            self.assert_running();
            let body = TcpStream::connect(&self.ops).map(|_| self.metrics()).unwrap_or_default();
            if ready(&body) {
                return body;
            }
            assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}; metrics:\n{body}");
            std::thread::park_timeout(Duration::from_millis(200));
        }
    }
}

impl Drop for RunningJob {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
