//! Credit-based flow control: a receiver whose local input is full stops its sender after
//! exactly the credit it granted, and draining the input resumes it.

use millrace_types::{StreamMessage, Watermark};
use tokio::sync::mpsc;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_local_input_stops_the_sender_after_exactly_its_credit() {
    const CREDIT: usize = 4;
    let server = server_with(ReceiverOptions { initial_credit: Some(CREDIT), ..receiver_options() }).await;
    let channel = ChannelId::new(0, 2, 0);
    let (tx, mut rx) = mpsc::channel(2);
    // A local sender fills the input first, and nobody drains it.
    for i in 0..2 {
        tx.send((99, StreamMessage::Watermark(Watermark(i)))).await.expect("local send");
    }
    let inbound = server.expect(channel, tx).expect("expect");
    let mut sender = connect(&server, channel, int_schema()).await;
    let stats = sender.stats();
    let send = tokio::spawn(async move {
        for i in 0..20 {
            sender.send(StreamMessage::Batch(int_batch(i))).await?;
        }
        sender.close().await
    });

    eventually("the receiver holds `CREDIT` messages", || inbound.received() == CREDIT as u64).await;
    eventually("the sender has spent its credit", || stats.available_credit() == 0).await;
    assert_eq!(stats.sent(), CREDIT as u64, "exactly the credit left the sender");
    assert_eq!(inbound.received(), CREDIT as u64);
    assert_eq!(inbound.forwarded(), 0, "the full input took nothing");
    assert!(!send.is_finished(), "the sender waits for credit");

    // Draining resumes it: everything arrives, in order, after the local messages.
    for i in 0..2 {
        assert!(matches!(recv(&mut rx).await, (99, StreamMessage::Watermark(w)) if w == Watermark(i)));
    }
    for i in 0..20 {
        let (index, message) = recv(&mut rx).await;
        assert_eq!((index, int_value(&message)), (2, Some(i)));
    }
    assert!(matches!(recv(&mut rx).await, (2, StreamMessage::EndOfStream)));
    within("the sender", send).await.expect("join").expect("clean close");
    assert_eq!(stats.sent(), 21);
    assert_eq!(within("the channel", inbound.finished()).await.expect("clean").messages, 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_credit_is_the_local_capacity_and_each_taken_message_frees_one() {
    const CAPACITY: usize = 3;
    let server = server().await;
    let channel = ChannelId::new(0, 0, 0);
    let (tx, mut rx) = mpsc::channel(CAPACITY);
    let inbound = server.expect(channel, tx).expect("expect");
    let mut sender = connect(&server, channel, int_schema()).await;
    let stats = sender.stats();
    let send = tokio::spawn(async move {
        for i in 0..10 {
            sender.send(StreamMessage::Batch(int_batch(i))).await?;
        }
        sender.close().await
    });

    // `CAPACITY` messages fill the input, `CAPACITY` more are in flight on credit.
    eventually("the sender stops", || stats.sent() == 2 * CAPACITY as u64 && stats.available_credit() == 0)
        .await;
    eventually("the input is full", || inbound.forwarded() == CAPACITY as u64).await;
    assert_eq!(inbound.received(), 2 * CAPACITY as u64);

    // Taking one message lets exactly one more through.
    assert_eq!(int_value(&recv(&mut rx).await.1), Some(0));
    eventually("one more is sent", || stats.sent() == 2 * CAPACITY as u64 + 1).await;
    eventually("and spent", || stats.available_credit() == 0 && inbound.received() == 7).await;
    assert_eq!(stats.sent(), 7);
    assert!(!send.is_finished());

    for i in 1..10 {
        assert_eq!(int_value(&recv(&mut rx).await.1), Some(i));
    }
    assert!(matches!(recv(&mut rx).await.1, StreamMessage::EndOfStream));
    within("the sender", send).await.expect("join").expect("clean close");
    within("the channel", inbound.finished()).await.expect("clean");
}
