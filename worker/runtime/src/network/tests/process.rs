//! A peer in another process killed with SIGKILL mid-stream: the kernel closes its socket,
//! and the surviving end reports a lost connection. The child processes are this test binary
//! run again on one of the `child_*` entry points below, told what to do by environment.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use millrace_types::StreamMessage;
use tokio::sync::mpsc;

use super::*;

const CHILD_ENV: &str = "MILLRACE_NET_CHILD_ADDR";

fn spawn_child(entry: &str, addr: &str) -> Child {
    let exe = std::env::current_exe().expect("the test binary");
    Command::new(exe)
        .args(["--exact", &format!("network::tests::process::{entry}"), "--ignored", "--nocapture"])
        .env(CHILD_ENV, addr)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child process")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_sender_process_breaks_the_channel() {
    let server = server().await;
    let channel = ChannelId::new(0, 0, 0);
    let (tx, mut rx) = mpsc::channel(4);
    let inbound = server.expect(channel, tx).expect("expect");
    let mut child = spawn_child("child_sender", &server.local_addr().to_string());
    let drain = tokio::spawn(async move {
        let mut ended = false;
        while let Some((_, message)) = rx.recv().await {
            ended |= matches!(message, StreamMessage::EndOfStream);
        }
        ended
    });
    eventually("the child is mid-stream", || inbound.received() >= 20).await;
    child.kill().expect("SIGKILL the sender");
    child.wait().expect("reap");
    let err = within("the channel to break", inbound.finished()).await.expect_err("lost");
    assert!(err.is_connection_lost(), "{err}");
    assert!(!within("the input to close", drain).await.expect("join"), "no EndOfStream was delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_receiver_process_fails_the_sender() {
    let mut child = spawn_child("child_receiver", "");
    let stdout = child.stdout.take().expect("stdout");
    let addr = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("LISTENING ").map(str::to_owned))
    });
    let addr = within("the child to listen", addr).await.expect("join").expect("the child's address");
    let mut sender =
        RemoteSender::connect(&addr, JOB, ChannelId::new(0, 0, 0), int_schema(), &sender_options())
            .await
            .expect("connect");
    for i in 0..20 {
        sender.send(StreamMessage::Batch(int_batch(i))).await.expect("send before the kill");
    }
    child.kill().expect("SIGKILL the receiver");
    child.wait().expect("reap");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let err = loop {
        match within("a send", sender.send(StreamMessage::Batch(int_batch(0)))).await {
            Ok(()) => assert!(tokio::time::Instant::now() < deadline, "sends kept succeeding"),
            Err(err) => break err,
        }
    };
    assert!(err.is_connection_lost(), "{err}");
}

/// Child entry point (run only by `a_killed_sender_process_breaks_the_channel`): sends
/// batches to the address in the environment until it is killed.
#[tokio::test]
#[ignore = "a child process of another test"]
async fn child_sender() {
    let Ok(addr) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut sender =
        RemoteSender::connect(&addr, JOB, ChannelId::new(0, 0, 0), int_schema(), &sender_options())
            .await
            .expect("connect");
    for i in 0.. {
        sender.send(StreamMessage::Batch(int_batch(i))).await.expect("send");
    }
}

/// Child entry point (run only by `a_killed_receiver_process_fails_the_sender`): listens,
/// prints its address, and drains until it is killed.
#[tokio::test]
#[ignore = "a child process of another test"]
async fn child_receiver() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    let server = server().await;
    let (tx, mut rx) = mpsc::channel(4);
    let _inbound = server.expect(ChannelId::new(0, 0, 0), tx).expect("expect");
    println!("LISTENING {}", server.local_addr());
    while rx.recv().await.is_some() {}
}
