//! Refused handshakes, lost peers on either side, and malformed frames: each is an error
//! that says what happened, and a lost connection is never taken for a clean end.

use millrace_types::{StreamMessage, Watermark};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::*;
use crate::network::frame::{Frame, read_frame, write_frame};
use crate::network::handshake::{self, Hello, PROTOCOL_VERSION};
use crate::network::ipc::BatchEncoder;
use crate::network::{DEFAULT_MAX_FRAME_BYTES, FrameError, NetworkError, RefusalReason};

async fn refused(server: &ExchangeServer, job: &str, channel: ChannelId) -> NetworkError {
    let addr = server.local_addr().to_string();
    match RemoteSender::connect(&addr, job, channel, int_schema(), &sender_options()).await {
        Ok(_) => panic!("connected, expected a refusal"),
        Err(err) => err,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_channel_is_refused_with_the_reason() {
    let server = server().await;
    let (tx, _rx) = mpsc::channel(1);
    let _inbound = server.expect(ChannelId::new(0, 0, 0), tx).expect("expect");
    let err = refused(&server, JOB, ChannelId::new(0, 0, 1)).await;
    assert!(matches!(err, NetworkError::Refused { reason: RefusalReason::UnknownChannel, .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "channel s0[0]→s1[1]: the receiver refused the connection (unknown channel): \
         the receiver expects no channel s0[0]→s1[1] of job \"job-net-test\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_job_is_refused() {
    let server = server().await;
    let channel = ChannelId::new(0, 0, 0);
    let (tx, _rx) = mpsc::channel(1);
    let _inbound = server.expect(channel, tx).expect("expect");
    let err = refused(&server, "other-job", channel).await;
    assert!(matches!(err, NetworkError::Refused { reason: RefusalReason::JobMismatch, .. }), "{err}");
    assert!(
        err.to_string()
            .contains("the receiver runs job \"job-net-test\", the sender belongs to job \"other-job\"")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_protocol_version_is_refused() {
    let server = server().await;
    let mut stream = TcpStream::connect(server.local_addr()).await.expect("connect");
    let hello = Frame::Hello { version: PROTOCOL_VERSION + 1, body: vec![0; 20] };
    write_frame(&mut stream, &hello, DEFAULT_MAX_FRAME_BYTES).await.expect("write");
    stream.flush().await.expect("flush");
    match within("the answer", read_frame(&mut stream, DEFAULT_MAX_FRAME_BYTES)).await.expect("read") {
        Some(Frame::Refuse { reason: RefusalReason::VersionMismatch, detail, .. }) => {
            assert_eq!(detail, "the receiver speaks protocol version 1, the sender 2");
        }
        other => panic!("expected a version refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_is_connected_and_expected_once() {
    let server = server().await;
    let channel = ChannelId::new(0, 0, 0);
    let (tx, _rx) = mpsc::channel(1);
    let _inbound = server.expect(channel, tx.clone()).expect("expect");
    assert!(matches!(server.expect(channel, tx), Err(NetworkError::AlreadyExpected { .. })));
    let _first = connect(&server, channel, int_schema()).await;
    let err = refused(&server, JOB, channel).await;
    assert!(matches!(err, NetworkError::Refused { reason: RefusalReason::AlreadyConnected, .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_that_disappears_mid_stream_breaks_the_channel() {
    let server = server().await;
    let channel = ChannelId::new(0, 0, 0);
    let (tx, mut rx) = mpsc::channel(8);
    let inbound = server.expect(channel, tx).expect("expect");
    let mut sender = connect(&server, channel, int_schema()).await;
    for i in 0..3 {
        sender.send(StreamMessage::Batch(int_batch(i))).await.expect("send");
    }
    // As if the sending process were killed: the socket closes without EndOfStream.
    drop(sender);
    let err = within("the channel to break", inbound.finished()).await.expect_err("lost, not clean");
    assert!(err.is_connection_lost(), "{err}");
    assert_eq!(
        err.to_string(),
        "channel s0[0]→s1[0]: connection lost: the sender closed the connection before EndOfStream"
    );
    // The local input may get some of what arrived, in order, but never a made-up
    // EndOfStream; the channel's sender is dropped.
    let mut next = 0;
    while let Some((_, message)) = within("the input to close", rx.recv()).await {
        assert_eq!(int_value(&message), Some(next), "{message:?}");
        next += 1;
    }
    assert!(next <= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_inside_a_frame_breaks_the_channel() {
    let server = server().await;
    let channel = ChannelId::new(0, 0, 0);
    let (tx, _rx) = mpsc::channel(8);
    let inbound = server.expect(channel, tx).expect("expect");
    let mut stream = raw_sender(&server, channel).await;
    // The length says 100 bytes; 3 follow, then the process "dies".
    stream.write_all(&[0, 0, 0, 100, 0x11, 1, 2]).await.expect("write");
    drop(stream);
    let err = within("the channel to break", inbound.finished()).await.expect_err("lost");
    assert!(err.is_connection_lost(), "{err}");
    assert!(err.to_string().contains("reading failed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_disappears_fails_a_sender_waiting_for_credit() {
    let server = server_with(ReceiverOptions { initial_credit: Some(1), ..receiver_options() }).await;
    let channel = ChannelId::new(0, 0, 0);
    let (tx, _rx) = mpsc::channel(1);
    let _inbound = server.expect(channel, tx).expect("expect");
    let mut sender = connect(&server, channel, int_schema()).await;
    let stats = sender.stats();
    let send = tokio::spawn(async move {
        for i in 0.. {
            sender.send(StreamMessage::Batch(int_batch(i))).await?;
        }
        Ok::<(), NetworkError>(())
    });
    // One fills the input, one is in flight on the credit: the sender waits.
    eventually("the sender waits for credit", || stats.sent() == 2 && stats.available_credit() == 0).await;
    // As if the receiving process were killed.
    drop(server);
    let err = within("the waiting send to fail", send).await.expect("join").expect_err("lost");
    assert!(err.is_connection_lost(), "{err}");
    assert!(matches!(err, NetworkError::ConnectionLost { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_disappears_fails_a_sender_with_credit_left() {
    let server = server().await;
    let channel = ChannelId::new(0, 0, 0);
    let (tx, mut rx) = mpsc::channel(16);
    let inbound = server.expect(channel, tx).expect("expect");
    let mut sender = connect(&server, channel, int_schema()).await;
    sender.send(StreamMessage::Watermark(Watermark(1))).await.expect("send");
    assert!(matches!(recv(&mut rx).await.1, StreamMessage::Watermark(Watermark(1))));
    // As if the receiving process were killed.
    drop(server);
    let verdict = within("the handle", inbound.finished()).await;
    assert!(matches!(verdict, Err(NetworkError::ServerStopped { .. })), "{verdict:?}");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let err = loop {
        match sender.send(StreamMessage::Watermark(Watermark(2))).await {
            Ok(()) => assert!(tokio::time::Instant::now() < deadline, "sends kept succeeding"),
            Err(err) => break err,
        }
        tokio::task::yield_now().await;
    };
    assert!(err.is_connection_lost(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_closes_its_input_fails_both_ends() {
    let server = server().await;
    let channel = ChannelId::new(0, 0, 0);
    let (tx, rx) = mpsc::channel(1);
    let inbound = server.expect(channel, tx).expect("expect");
    let mut sender = connect(&server, channel, int_schema()).await;
    drop(rx);
    sender.send(StreamMessage::Watermark(Watermark(1))).await.expect("first send has credit");
    let err = within("the channel", inbound.finished()).await.expect_err("input closed");
    assert!(matches!(err, NetworkError::LocalInputClosed { .. }), "{err}");
    let err = within("the sender to notice", sender.close()).await.expect_err("lost");
    assert!(err.is_connection_lost(), "{err}");
}

/// A hand-driven sender: handshake done, initial credit read.
async fn raw_sender(server: &ExchangeServer, channel: ChannelId) -> TcpStream {
    let mut stream = TcpStream::connect(server.local_addr()).await.expect("connect");
    let hello = Hello { job_id: JOB.into(), channel };
    handshake::offer(&mut stream, &hello, DEADLINE, DEFAULT_MAX_FRAME_BYTES).await.expect("accepted");
    match read_frame(&mut stream, DEFAULT_MAX_FRAME_BYTES).await.expect("credit") {
        Some(Frame::Credit(_)) => stream,
        other => panic!("expected the initial credit, got {other:?}"),
    }
}

async fn write_raw(stream: &mut TcpStream, frames: &[Frame]) {
    for frame in frames {
        write_frame(stream, frame, usize::MAX).await.expect("write");
    }
    stream.flush().await.expect("flush");
}

/// Sends `frames` on a fresh channel and returns how the receiver ended it.
async fn receiver_verdict(options: ReceiverOptions, raw: Vec<u8>, frames: Vec<Frame>) -> NetworkError {
    let server = server_with(options).await;
    let channel = ChannelId::new(0, 0, 0);
    let (tx, _rx) = mpsc::channel(1);
    let inbound = server.expect(channel, tx).expect("expect");
    let mut stream = raw_sender(&server, channel).await;
    write_raw(&mut stream, &frames).await;
    stream.write_all(&raw).await.expect("raw bytes");
    stream.flush().await.expect("flush");
    let verdict = within("the verdict", inbound.finished()).await.expect_err("a broken channel");
    drop(stream);
    verdict
}

fn schema_frame() -> Frame {
    let (_, schema) = BatchEncoder::new(ChannelId::new(0, 0, 0), int_schema()).expect("encoder");
    Frame::Schema(schema)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_from_a_sender_are_errors_naming_the_problem() {
    let small = ReceiverOptions { max_frame_bytes: 1024, ..receiver_options() };
    let err = receiver_verdict(small, vec![0, 0, 0x10, 0x01, 0x11], vec![schema_frame()]).await;
    assert!(
        matches!(err, NetworkError::Frame { source: FrameError::TooLarge { len: 4097, max: 1024 }, .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "channel s0[0]→s1[0]: frame of 4097 bytes exceeds the maximum frame size of 1024 bytes"
    );

    let err = receiver_verdict(receiver_options(), vec![0, 0, 0, 1, 0x55], vec![schema_frame()]).await;
    assert!(matches!(err, NetworkError::Frame { source: FrameError::UnknownKind(0x55), .. }), "{err}");

    let err = receiver_verdict(receiver_options(), vec![0, 0, 0, 3, 0x13, 1, 2], vec![schema_frame()]).await;
    assert_eq!(err.to_string(), "channel s0[0]→s1[0]: barrier frame: payload is 2 bytes, expected 8");

    let err = receiver_verdict(receiver_options(), Vec::new(), vec![Frame::Batch(vec![1, 2, 3])]).await;
    assert_eq!(
        err.to_string(),
        "channel s0[0]→s1[0]: protocol violation: a batch frame before the schema frame"
    );

    let err =
        receiver_verdict(receiver_options(), Vec::new(), vec![schema_frame(), Frame::Batch(vec![0xff; 64])])
            .await;
    assert_eq!(
        err.to_string(),
        "channel s0[0]→s1[0]: protocol violation: IPC metadata length -1 at byte 0 overruns the frame"
    );

    let err = receiver_verdict(receiver_options(), Vec::new(), vec![Frame::Schema(vec![1, 2, 3])]).await;
    assert!(matches!(err, NetworkError::Ipc { .. }), "{err}");

    let frames = vec![schema_frame(), Frame::EndOfStream, Frame::Watermark(3)];
    let err = receiver_verdict(receiver_options(), Vec::new(), frames).await;
    assert_eq!(
        err.to_string(),
        "channel s0[0]→s1[0]: protocol violation: a watermark frame after EndOfStream"
    );

    let err = receiver_verdict(receiver_options(), Vec::new(), vec![schema_frame(), Frame::Credit(1)]).await;
    assert_eq!(err.to_string(), "channel s0[0]→s1[0]: protocol violation: a credit frame from the sender");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_exceeding_its_credit_breaks_the_channel() {
    let options = ReceiverOptions { initial_credit: Some(2), ..receiver_options() };
    let server = server_with(options).await;
    let channel = ChannelId::new(0, 0, 0);
    // A full input that nobody drains: no credit comes back.
    let (tx, _rx) = mpsc::channel(1);
    tx.send((9, StreamMessage::EndOfStream)).await.expect("fill");
    let inbound = server.expect(channel, tx).expect("expect");
    let mut stream = raw_sender(&server, channel).await;
    let frames: Vec<Frame> = std::iter::once(schema_frame()).chain((0..3).map(Frame::Watermark)).collect();
    write_raw(&mut stream, &frames).await;
    let err = within("the verdict", inbound.finished()).await.expect_err("over credit");
    assert_eq!(
        err.to_string(),
        "channel s0[0]→s1[0]: protocol violation: the sender exceeded its credit: 3 messages received, 2 granted"
    );
}

/// A hand-driven receiver that accepts, grants `credit`, then writes `frames`.
async fn raw_receiver(credit: u32, frames: Vec<Frame>) -> (String, tokio::task::JoinHandle<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let hello = read_frame(&mut stream, DEFAULT_MAX_FRAME_BYTES).await.expect("hello");
        assert!(matches!(hello, Some(Frame::Hello { .. })), "{hello:?}");
        let mut all = vec![Frame::Accept { version: PROTOCOL_VERSION }, Frame::Credit(credit)];
        all.extend(frames);
        write_raw(&mut stream, &all).await;
        stream
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_from_a_receiver_fail_the_sender() {
    let (addr, receiver) = raw_receiver(1, vec![Frame::Watermark(5)]).await;
    let mut sender =
        RemoteSender::connect(&addr, JOB, ChannelId::new(0, 0, 0), int_schema(), &sender_options())
            .await
            .expect("connect");
    let _stream = within("the receiver", receiver).await.expect("join");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let err = loop {
        match sender.send(StreamMessage::Watermark(Watermark(1))).await {
            Ok(()) => assert!(tokio::time::Instant::now() < deadline, "sends kept succeeding"),
            Err(err) => break err,
        }
    };
    assert_eq!(
        err.to_string(),
        "channel s0[0]→s1[0]: protocol violation: expected a credit frame from the receiver, got a watermark frame"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_the_frame_limit_is_refused_before_any_byte_is_written() {
    let server = server().await;
    let channel = ChannelId::new(0, 0, 0);
    let (tx, _rx) = mpsc::channel(4);
    let _inbound = server.expect(channel, tx).expect("expect");
    let options = SenderOptions { max_frame_bytes: 4096, ..sender_options() };
    let mut sender =
        RemoteSender::connect(&server.local_addr().to_string(), JOB, channel, mixed_schema(), &options)
            .await
            .expect("connect");
    let stats = sender.stats();
    eventually("the initial credit arrives", || stats.available_credit() == 4).await;
    let err = sender.send(StreamMessage::Batch(mixed_batch(0, 1000))).await.expect_err("too large");
    assert!(
        matches!(err, NetworkError::Frame { source: FrameError::TooLarge { max: 4096, .. }, .. }),
        "{err}"
    );
    // The credit was given back, and the channel is broken: the task must fail.
    assert_eq!((stats.sent(), stats.available_credit()), (0, 4));
    let err = sender.send(StreamMessage::Batch(mixed_batch(0, 2))).await.expect_err("broken");
    assert!(
        err.to_string().contains("unusable after an earlier failure: channel s0[0]→s1[0]: frame of"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_fails_when_the_receiver_never_confirms_the_end() {
    let (addr, receiver) = raw_receiver(4, Vec::new()).await;
    let sender = RemoteSender::connect(&addr, JOB, ChannelId::new(0, 0, 0), int_schema(), &sender_options())
        .await
        .expect("connect");
    // The receiver goes away after the handshake without ever sending Done.
    drop(within("the receiver", receiver).await.expect("join"));
    let err = within("close", sender.close()).await.expect_err("not confirmed");
    assert!(err.is_connection_lost(), "{err}");
}
