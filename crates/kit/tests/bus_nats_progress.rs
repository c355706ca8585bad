//! In-progress acks on NATS JetStream: a delivery its attachment keeps in progress is not
//! redelivered while it is handled, however long past the ack wait, and once that
//! attachment is gone it comes back after one ack wait (not after a long one).

#![allow(clippy::print_stderr, reason = "the test reports the time to redelivery it measured")]

use std::sync::Arc;
use std::time::Duration;

use kit::bus::{Bus, ConsumerSpec, Message};
use kit::testserver::NatsServer;

const ACK_WAIT: Duration = Duration::from_secs(1);

fn message(seq: u64) -> Message {
    Message { id: format!("evt-{seq}"), stream: "orders".into(), seq, key: "k".into(), body: b"{}".to_vec() }
}

#[tokio::test]
async fn a_delivery_kept_in_progress_outlives_its_ack_wait_and_comes_back_once_its_holder_dies() {
    let Some(server) = NatsServer::start().await else { return };
    let bus: Arc<dyn Bus> = kit::bus::connect(&server.url()).await.expect("the nats bus connects");
    bus.publish(&[message(1)]).await.unwrap();
    let spec = ConsumerSpec::new("slow", &["orders"]).ack_wait(ACK_WAIT);
    let mut holder = bus.subscribe(&spec).await.unwrap();
    let taken = holder.fetch(10).await.unwrap();
    assert_eq!(taken.len(), 1);
    let tags: Vec<_> = taken.iter().map(|d| d.tag).collect();

    let mut other = bus.subscribe(&spec).await.unwrap();
    let waiting = tokio::spawn(async move {
        let redelivered = other.fetch(10).await.unwrap();
        (redelivered, tokio::time::Instant::now())
    });
    // Handled for three ack waits, said to be in progress all along.
    for _ in 0..9 {
        tokio::time::sleep(ACK_WAIT / 3).await;
        holder.in_progress(&tags).await.unwrap();
    }
    assert!(!waiting.is_finished(), "a delivery kept in progress went to another attachment");

    drop(holder); // the process holding it dies
    let died = tokio::time::Instant::now();
    let (redelivered, at) = waiting.await.unwrap();
    assert_eq!(redelivered.len(), 1);
    assert_eq!(redelivered[0].message.id, "evt-1");
    assert_eq!(redelivered[0].attempt, 2, "delivered once before, to the attachment that died");
    eprintln!(
        "redelivered {} ms after its holder died (ack wait {} ms)",
        (at - died).as_millis(),
        ACK_WAIT.as_millis()
    );
}
