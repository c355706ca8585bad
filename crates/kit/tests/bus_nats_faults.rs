//! The NATS bus through broker faults: a server killed with SIGKILL and restarted, and a
//! node of a three-node JetStream cluster killed under load. Real nats-servers; skipped
//! loudly when none is on PATH, failing in CI.

#![allow(clippy::print_stderr, reason = "the load tests report what they measured")]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use kit::bus::{Bus, BusError, ConsumerSpec, DeadLetterFilter, Message, Ordering};
use kit::testserver::NatsServer;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Real time after which a test that still misses messages is taken to have lost them.
const PATIENCE: Duration = Duration::from_secs(120);

/// How many messages one publish carries, like a relay's batch.
const BATCH: usize = 20;

/// The pause between two batches: a steady load a consumer keeps up with, so the test
/// ends in a backlog it can drain rather than in one it cannot.
const PACE: Duration = Duration::from_millis(10);

fn message(n: usize) -> Message {
    Message {
        id: uuid::Uuid::now_v7().to_string(),
        stream: "orders".into(),
        seq: n as u64 + 1,
        key: format!("k-{}", n % 7),
        body: format!("order #{n}").into_bytes(),
    }
}

/// A per-key consumer with a short ack wait, so deliveries lost with a server come back
/// soon, and attempts enough that the redeliveries of an outage or a leader election do
/// not turn its messages into dead letters.
fn reader_spec() -> ConsumerSpec {
    ConsumerSpec::new("survivor", &["orders"])
        .ordering(Ordering::PerKey)
        .ack_wait(Duration::from_secs(2))
        .max_attempts(50)
}

/// Reads like a consumer does: fetch, ack, and re-attach after any bus error. Sends
/// the id of every delivery it acknowledged.
fn spawn_reader(bus: Arc<dyn Bus>, delivered: mpsc::UnboundedSender<String>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Ok(mut subscription) = bus.subscribe(&reader_spec()).await {
                while let Ok(deliveries) = subscription.fetch(100).await {
                    let tags: Vec<_> = deliveries.iter().map(|d| d.tag).collect();
                    if subscription.ack(&tags).await.is_err() {
                        break;
                    }
                    for delivery in deliveries {
                        let _ = delivered.send(delivery.message.id);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// Publishes batches like a relay does until `stop` says so: a batch that fails with a
/// retryable error is published again until the bus takes it. Returns every message the
/// bus confirmed and how many publishes failed as retryable.
fn spawn_publisher(bus: Arc<dyn Bus>, stop: watch::Receiver<bool>) -> JoinHandle<(Vec<Message>, usize)> {
    tokio::spawn(async move {
        let (mut confirmed, mut unavailable) = (Vec::new(), 0);
        while !*stop.borrow() {
            let batch: Vec<_> = (confirmed.len()..confirmed.len() + BATCH).map(message).collect();
            loop {
                match bus.publish(&batch).await {
                    Ok(()) => break,
                    Err(e) => {
                        assert!(e.is_retryable(), "a publish failed for good: {e}");
                        unavailable += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            confirmed.extend(batch);
            tokio::time::sleep(PACE).await;
        }
        (confirmed, unavailable)
    })
}

/// A relay-like publisher and a consumer-like reader running against one bus, and
/// what the reader delivered so far.
struct Load {
    bus: Arc<dyn Bus>,
    delivered: mpsc::UnboundedReceiver<String>,
    seen: HashSet<String>,
    reader: JoinHandle<()>,
    stop: watch::Sender<bool>,
    publisher: JoinHandle<(Vec<Message>, usize)>,
    started: Instant,
}

impl Load {
    fn start(bus: &Arc<dyn Bus>) -> Self {
        let (sender, delivered) = mpsc::unbounded_channel();
        let (stop, stopped) = watch::channel(false);
        Self {
            bus: bus.clone(),
            delivered,
            seen: HashSet::new(),
            reader: spawn_reader(bus.clone(), sender),
            stop,
            publisher: spawn_publisher(bus.clone(), stopped),
            started: Instant::now(),
        }
    }

    /// Waits until `more` further distinct messages were delivered.
    async fn wait_for(&mut self, more: usize) {
        let count = self.seen.len() + more;
        let waiting = async {
            while self.seen.len() < count {
                self.seen.insert(self.delivered.recv().await.expect("the reader runs"));
            }
        };
        if tokio::time::timeout(PATIENCE, waiting).await.is_err() {
            panic!("only {} of {count} messages were delivered within {PATIENCE:?}", self.seen.len());
        }
    }

    /// Stops publishing and asserts that every confirmed message is delivered.
    async fn finish(mut self) {
        self.stop.send(true).expect("the publisher listens");
        let (confirmed, unavailable) = self.publisher.await.expect("the publisher ran");
        let wanted: HashSet<_> = confirmed.iter().map(|m| m.id.clone()).collect();
        let waiting = async {
            while !wanted.is_subset(&self.seen) {
                self.seen.insert(self.delivered.recv().await.expect("the reader runs"));
            }
        };
        if tokio::time::timeout(PATIENCE, waiting).await.is_err() {
            let lost = wanted.difference(&self.seen).count();
            let letters = self.bus.dead_letters(&DeadLetterFilter::all()).await;
            panic!(
                "{lost} of {} confirmed messages were never delivered; dead letters: {letters:?}",
                wanted.len()
            );
        }
        self.reader.abort();
        let elapsed = self.started.elapsed();
        eprintln!(
            "{} messages confirmed and delivered in {elapsed:.1?} ({:.0}/s end to end), \
             {unavailable} publishes refused as unavailable",
            confirmed.len(),
            confirmed.len() as f64 / elapsed.as_secs_f64()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_killed_under_load_loses_no_message_and_publish_is_unavailable_meanwhile() {
    let Some(mut server) = NatsServer::start().await else { return };
    let bus = kit::bus::connect(&server.url()).await.expect("the nats bus connects");
    let mut load = Load::start(&bus);

    load.wait_for(10 * BATCH).await;
    server.kill();
    let while_down = message(usize::MAX / 2);
    match bus.publish(std::slice::from_ref(&while_down)).await {
        Err(e @ BusError::Unavailable(_)) => assert!(e.is_retryable()),
        other => panic!("a publish to a killed server answered {other:?}, not Unavailable"),
    }
    server.restart().await;
    load.wait_for(10 * BATCH).await;
    load.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_r3_cluster_keeps_publishing_and_consuming_with_one_node_killed_and_loses_nothing() {
    let Some(mut nodes) = NatsServer::cluster(3).await else { return };
    let servers: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())).collect();
    let bus = connect_when_ready(&format!("nats://{}?replicas=3", servers.join(","))).await;
    let mut load = Load::start(&bus);

    load.wait_for(10 * BATCH).await;
    // The node leading the consumer's stream: killing it forces an election under load.
    let leader = nodes[1].leader_of("capshop_C_survivor").await;
    let victim = nodes.iter().position(|n| Some(n.name()) == leader).unwrap_or(0);
    nodes[victim].kill();
    eprintln!("killed {} (leader of the consumer's stream: {leader:?})", nodes[victim].name());
    load.wait_for(20 * BATCH).await;
    load.finish().await;
}

/// Connects and creates the streams once the cluster can place R3 assets (a fresh
/// cluster may answer before every node has joined its meta group).
async fn connect_when_ready(url: &str) -> Arc<dyn Bus> {
    let ready = async {
        loop {
            if let Ok(bus) = kit::bus::connect(url).await
                && bus.stream_head("orders").await.is_ok()
            {
                return bus;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(PATIENCE, ready).await.expect("the cluster accepts R3 streams")
}

#[tokio::test]
async fn a_per_key_consumer_that_dies_with_a_keys_messages_kept_hands_them_on_in_order() {
    let Some(server) = NatsServer::start().await else { return };
    let bus = kit::bus::connect(&server.url()).await.expect("the nats bus connects");
    let spec =
        ConsumerSpec::new("packer", &["orders"]).ordering(Ordering::PerKey).ack_wait(Duration::from_secs(2));
    let mut published: Vec<_> = (0..3).map(|n| message(n * 7)).collect();
    bus.publish(&published).await.expect("publishing to a running server");

    // The first attachment takes the key's head (and pulls what follows it), then dies.
    let mut first = bus.subscribe(&spec).await.expect("attaching");
    let head = first.fetch(10).await.expect("fetching");
    assert_eq!(head[0].message, published[0], "the key's first message is its head");
    drop(first);

    // A later message of the key is published before the server gives the dead
    // attachment's messages back; it must still come after them.
    let later = message(3 * 7);
    bus.publish(std::slice::from_ref(&later)).await.expect("publishing to a running server");
    published.push(later);

    let mut second = bus.subscribe(&spec).await.expect("attaching again");
    let mut delivered = Vec::new();
    let reading = async {
        while delivered.len() < published.len() {
            let deliveries = second.fetch(10).await.expect("fetching");
            let tags: Vec<_> = deliveries.iter().map(|d| d.tag).collect();
            delivered.extend(deliveries.into_iter().map(|d| d.message));
            second.ack(&tags).await.expect("acking");
        }
    };
    tokio::time::timeout(PATIENCE, reading).await.expect("every message of the key is delivered");
    let seqs = |messages: &[Message]| messages.iter().map(|m| m.seq).collect::<Vec<_>>();
    assert_eq!(seqs(&delivered), seqs(&published), "the key's messages in publish order, each once");
}
