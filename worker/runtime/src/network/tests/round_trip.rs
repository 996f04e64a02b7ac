//! Every message kind crosses a real loopback connection with its data intact, in order,
//! on independent channels, and a sender finds a receiver that starts listening late.

use std::time::Duration;

use millrace_types::{CheckpointId, StreamMessage, Watermark};
use tokio::sync::mpsc;

use super::*;
use crate::network::InboundSummary;

fn same(sent: &StreamMessage, got: &StreamMessage) -> bool {
    match (sent, got) {
        (StreamMessage::Batch(a), StreamMessage::Batch(b)) => a == b,
        (StreamMessage::Watermark(a), StreamMessage::Watermark(b)) => a == b,
        (StreamMessage::Barrier(a), StreamMessage::Barrier(b)) => a == b,
        (StreamMessage::EndOfStream, StreamMessage::EndOfStream) => true,
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_kind_round_trips_intact() {
    let server = server().await;
    let channel = ChannelId::new(1, 3, 0);
    let (tx, mut rx) = mpsc::channel(4);
    let inbound = server.expect(channel, tx).expect("expect");
    let mut sender = connect(&server, channel, mixed_schema()).await;

    let whole = mixed_batch(0, 100);
    let messages = vec![
        StreamMessage::Batch(whole.clone()),
        StreamMessage::Watermark(Watermark::MIN),
        StreamMessage::Watermark(Watermark(-5)),
        StreamMessage::Batch(whole.slice(17, 40)),
        StreamMessage::Barrier(CheckpointId(1)),
        StreamMessage::Batch(mixed_batch(100, 0)),
        StreamMessage::Watermark(Watermark(1_700_000_000_123)),
        StreamMessage::Barrier(CheckpointId(u64::MAX)),
        StreamMessage::Watermark(Watermark::MAX),
        StreamMessage::EndOfStream,
    ];
    let expected = messages.clone();
    let send = tokio::spawn(async move {
        for message in messages {
            sender.send(message).await?;
        }
        sender.close().await
    });
    for want in &expected {
        let (index, got) = recv(&mut rx).await;
        assert_eq!(index, 3, "the envelope names the sending subtask");
        assert!(same(want, &got), "sent {want:?}, got {got:?}");
    }
    within("the sender to close", send).await.expect("join").expect("clean close");
    let summary = within("the channel to finish", inbound.finished()).await.expect("clean end");
    assert_eq!(summary, InboundSummary { messages: expected.len() as u64, rows: 140 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_round_trip() {
    let server = server().await;
    let channel = ChannelId::new(0, 0, 0);
    let (tx, mut rx) = mpsc::channel(2);
    let inbound = server.expect(channel, tx).expect("expect");
    let mut sender = connect(&server, channel, mixed_schema()).await;

    let batches: Vec<_> = (0..3).map(|i| mixed_batch(i * 100_000, 100_000)).collect();
    for batch in &batches {
        assert!(batch.get_array_memory_size() > 4 << 20, "{} bytes", batch.get_array_memory_size());
    }
    let to_send = batches.clone();
    let send = tokio::spawn(async move {
        for batch in to_send {
            sender.send(StreamMessage::Batch(batch)).await?;
        }
        sender.close().await
    });
    for want in &batches {
        match recv(&mut rx).await.1 {
            StreamMessage::Batch(got) => assert_eq!(&got, want),
            other => panic!("expected a batch, got {other:?}"),
        }
    }
    assert!(matches!(recv(&mut rx).await.1, StreamMessage::EndOfStream));
    within("the sender to close", send).await.expect("join").expect("clean close");
    assert_eq!(within("the channel", inbound.finished()).await.expect("clean").rows, 300_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_is_kept_through_many_credit_rounds() {
    // A credit of 3 makes the sender wait for credit hundreds of times.
    let server = server_with(ReceiverOptions { initial_credit: Some(3), ..receiver_options() }).await;
    let channel = ChannelId::new(0, 1, 0);
    let (tx, mut rx) = mpsc::channel(2);
    let inbound = server.expect(channel, tx).expect("expect");
    let mut sender = connect(&server, channel, int_schema()).await;

    let send = tokio::spawn(async move {
        for i in 0..1000 {
            sender.send(StreamMessage::Batch(int_batch(i))).await?;
            if i % 10 == 9 {
                sender.send(StreamMessage::Watermark(Watermark(i64::from(i)))).await?;
            }
        }
        sender.close().await
    });
    for i in 0..1000 {
        assert_eq!(int_value(&recv(&mut rx).await.1), Some(i));
        if i % 10 == 9 {
            match recv(&mut rx).await.1 {
                StreamMessage::Watermark(w) => assert_eq!(w, Watermark(i64::from(i))),
                other => panic!("expected watermark {i}, got {other:?}"),
            }
        }
    }
    assert!(matches!(recv(&mut rx).await.1, StreamMessage::EndOfStream));
    within("the sender", send).await.expect("join").expect("clean close");
    assert_eq!(within("the channel", inbound.finished()).await.expect("clean").messages, 1101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_channel_does_not_hold_up_another() {
    let server = server_with(ReceiverOptions { initial_credit: Some(2), ..receiver_options() }).await;
    let stalled = ChannelId::new(0, 0, 0);
    let flowing = ChannelId::new(0, 0, 1);
    // Never drained.
    let (stalled_tx, _stalled_rx) = mpsc::channel(1);
    let (flowing_tx, mut flowing_rx) = mpsc::channel(1);
    let stalled_in = server.expect(stalled, stalled_tx).expect("expect");
    let flowing_in = server.expect(flowing, flowing_tx).expect("expect");

    let mut stalled_sender = connect(&server, stalled, int_schema()).await;
    let stalled_stats = stalled_sender.stats();
    let stalled_send = tokio::spawn(async move {
        for i in 0..10 {
            stalled_sender.send(StreamMessage::Batch(int_batch(i))).await?;
        }
        stalled_sender.close().await
    });
    // Input capacity 1 plus credit 2: the third message is the last to leave.
    eventually("the stalled channel runs out of credit", || {
        stalled_stats.sent() == 3 && stalled_stats.available_credit() == 0
    })
    .await;

    let mut sender = connect(&server, flowing, int_schema()).await;
    let send = tokio::spawn(async move {
        for i in 0..50 {
            sender.send(StreamMessage::Batch(int_batch(i))).await?;
        }
        sender.close().await
    });
    for i in 0..50 {
        assert_eq!(int_value(&recv(&mut flowing_rx).await.1), Some(i));
    }
    assert!(matches!(recv(&mut flowing_rx).await.1, StreamMessage::EndOfStream));
    within("the flowing sender", send).await.expect("join").expect("clean close");
    within("the flowing channel", flowing_in.finished()).await.expect("clean");

    assert_eq!(stalled_stats.sent(), 3);
    assert_eq!(stalled_in.received(), 3);
    assert!(!stalled_send.is_finished());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_channels_share_one_local_input() {
    let server = server().await;
    let (tx, mut rx) = mpsc::channel(4);
    let a = ChannelId::new(0, 0, 0);
    let b = ChannelId::new(0, 1, 0);
    let a_in = server.expect(a, tx.clone()).expect("expect a");
    let b_in = server.expect(b, tx).expect("expect b");
    let mut sends = Vec::new();
    for (channel, base) in [(a, 0), (b, 1000)] {
        let mut sender = connect(&server, channel, int_schema()).await;
        sends.push(tokio::spawn(async move {
            for i in 0..100 {
                sender.send(StreamMessage::Batch(int_batch(base + i))).await?;
            }
            sender.close().await
        }));
    }
    let mut next = [0, 1000];
    let mut ended = [false, false];
    while !(ended[0] && ended[1]) {
        let (index, message) = recv(&mut rx).await;
        match message {
            StreamMessage::EndOfStream => ended[index] = true,
            other => {
                assert_eq!(int_value(&other), Some(next[index]), "channel from subtask {index} in order");
                next[index] += 1;
            }
        }
    }
    assert_eq!(next, [100, 1100]);
    for send in sends {
        within("a sender", send).await.expect("join").expect("clean close");
    }
    within("channel a", a_in.finished()).await.expect("clean");
    within("channel b", b_in.finished()).await.expect("clean");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_retries_until_the_receiver_listens_and_expects() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe port");
        probe.local_addr().expect("probe addr").port()
    };
    let addr = format!("127.0.0.1:{port}");
    let channel = ChannelId::new(2, 0, 5);
    let connect_addr = addr.clone();
    let connecting = tokio::spawn(async move {
        RemoteSender::connect(&connect_addr, JOB, channel, int_schema(), &sender_options()).await
    });
    // The receiver starts late: this pause is the scenario (several refused attempts), not
    // a wait for a condition; the test holds for any length of it.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!connecting.is_finished(), "the sender gave up while nothing listened");

    // The connection may arrive between bind and expect: it waits for the expect.
    let options = ReceiverOptions { pending_channel_wait: Duration::from_secs(10), ..receiver_options() };
    let server = ExchangeServer::bind(&addr, JOB, options).await.expect("bind the reserved port");
    let (tx, mut rx) = mpsc::channel(2);
    let inbound = server.expect(channel, tx).expect("expect");
    let sender = within("the connection", connecting).await.expect("join").expect("connected");
    within("close", sender.close()).await.expect("clean close");
    assert!(matches!(recv(&mut rx).await, (0, StreamMessage::EndOfStream)));
    within("the channel", inbound.finished()).await.expect("clean");
}
