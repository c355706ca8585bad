//! Publishing to NATS when the server refuses part of a batch, and a republish past the
//! JetStream duplicate window: real nats-servers (skipped loudly when none is on PATH,
//! failing in CI), the real relay, consumer and inbox.

use std::sync::Arc;
use std::time::Duration;

use kit::bus::{Bus, ConsumerSpec, Message, Ordering};
use kit::consumer::{Consumer, ConsumerConfig, Handler, HandlerError};
use kit::envelope::{Envelope, NewEvent, StreamName};
use kit::outbox::{self, Outbox};
use kit::relay::Relay;
use kit::store::{Migrations, Store, StoreError, Tx};
use kit::testserver::NatsServer;
use serde_json::json;

/// Real time after which a test still waiting for its consumer fails.
const PATIENCE: Duration = Duration::from_secs(60);

const APPLIED: Migrations = Migrations {
    component: "applied",
    sqlite: &[
        "CREATE TABLE applied (n INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, version INTEGER NOT NULL)",
    ],
    postgres: &[],
};

/// Records every application in order, so a second effect or a reordering shows.
struct Recorder;

impl Handler for Recorder {
    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        tx.execute(
            "INSERT INTO applied (key, version) VALUES ($1, $2)",
            &[event.key.as_str().into(), event.version.into()],
        )?;
        Ok(())
    }
}

async fn applied(store: &Store) -> Vec<(String, u64)> {
    store
        .transact(|tx| {
            tx.query("SELECT key, version FROM applied ORDER BY n", &[])?
                .into_iter()
                .map(|mut r| Ok((r.take(0)?, r.get(1)?)))
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .await
        .unwrap()
}

async fn memory_store(migrations: &[&Migrations]) -> Store {
    Store::open("sqlite::memory:", migrations).await.expect("an in-memory store opens")
}

/// Runs `consumer` until `done` holds for what it applied, or fails after [`PATIENCE`].
async fn consume_until(consumer: Consumer<Recorder>, store: &Store, done: impl Fn(&[(String, u64)]) -> bool) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(consumer.run(async {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let rows = applied(store).await;
        if done(&rows) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the consumer did not get there; it applied {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    running.await.unwrap();
}

/// Sets the largest message the server's stream of `orders` accepts (`-1`: no limit).
async fn limit_message_size(server: &NatsServer, bytes: i32) {
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("capshop_S_orders").await.expect("the bus created the orders stream");
    let mut config = stream.info().await.unwrap().config.clone();
    config.max_message_size = bytes;
    js.update_stream(config).await.expect("the stream takes the new limit");
}

async fn messages_on_orders(server: &NatsServer) -> u64 {
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("capshop_S_orders").await.unwrap();
    stream.info().await.unwrap().state.messages
}

/// The server refuses one message of a relayed batch (too large for the stream) and
/// stores others: the relay fails the batch, and once the limit is lifted and it relays
/// again, a per-key consumer applies the key's events in seq order. With the batch
/// pipelined whole, the refused event landed after the later events of its key.
#[tokio::test]
async fn a_partly_refused_batch_keeps_each_keys_order_once_it_is_relayed_again() {
    let Some(server) = NatsServer::start().await else { return };
    let bus = kit::bus::connect(&server.url()).await.unwrap();
    let producer = memory_store(&[&outbox::MIGRATIONS]).await;
    let outbox = Outbox::new(StreamName::parse("orders").unwrap());
    let relay = Relay::new(producer.clone(), outbox.clone(), bus.clone());
    let commit = |events: Vec<NewEvent>| {
        let outbox = outbox.clone();
        producer.transact(move |tx| outbox.append(tx, events))
    };
    commit(vec![NewEvent::new("Counted", "k", 1, json!({}))]).await.unwrap();
    relay.relay_batch().await.expect("the first event is relayed");

    limit_message_size(&server, 2048).await;
    let big = json!({ "padding": "x".repeat(4096) });
    commit(vec![
        NewEvent::new("Counted", "k", 2, json!({})),
        NewEvent::new("Counted", "k", 3, big),
        NewEvent::new("Counted", "k", 4, json!({})),
        NewEvent::new("Counted", "j", 1, json!({})),
    ])
    .await
    .unwrap();
    relay.relay_batch().await.expect_err("the server refuses the large event");
    limit_message_size(&server, -1).await;
    assert_eq!(relay.relay_batch().await.expect("the batch is relayed again"), 4);

    let replica = memory_store(&[&outbox::MIGRATIONS, &APPLIED]).await;
    let spec = ConsumerSpec::new("ordered", &["orders"]).ordering(Ordering::PerKey);
    let consumer = Consumer::new(replica.clone(), bus.clone(), Recorder, ConsumerConfig::new(spec));
    consume_until(consumer, &replica, |rows| rows.len() >= 5).await;
    let rows = applied(&replica).await;
    let k: Vec<u64> = rows.iter().filter(|(key, _)| key == "k").map(|(_, v)| *v).collect();
    assert_eq!(k, [1, 2, 3, 4], "the events of key k were applied out of order: {rows:?}");
    assert_eq!(rows.len(), 5, "an event was applied twice: {rows:?}");
}

/// With a duplicate window of one second, an event relayed again after it (a relay that
/// crashed between publishing and marking) reaches the stream a second time; the
/// consumer's inbox skips it: one effect.
#[tokio::test]
async fn a_republish_past_the_duplicate_window_has_no_second_effect() {
    let Some(server) = NatsServer::start().await else { return };
    let bus: Arc<dyn Bus> = kit::bus::connect(&format!("{}?dedup_window=1", server.url())).await.unwrap();
    let producer = memory_store(&[&outbox::MIGRATIONS]).await;
    let outbox = Outbox::new(StreamName::parse("orders").unwrap());
    let appended = {
        let outbox = outbox.clone();
        producer
            .transact(move |tx| outbox.append(tx, vec![NewEvent::new("Counted", "k", 1, json!({}))]))
            .await
    };
    let message = Message::from(&appended.unwrap()[0]);
    Relay::new(producer.clone(), outbox, bus.clone()).relay_batch().await.unwrap();

    let replica = memory_store(&[&outbox::MIGRATIONS, &APPLIED]).await;
    let spec = ConsumerSpec::new("once", &["orders"]);
    let consumer = Consumer::new(replica.clone(), bus.clone(), Recorder, ConsumerConfig::new(spec.clone()));
    let counters = consumer.counters_handle();
    consume_until(consumer, &replica, |rows| rows.len() == 1).await;

    tokio::time::sleep(Duration::from_millis(1500)).await; // past the duplicate window
    bus.publish(std::slice::from_ref(&message)).await.unwrap();
    assert_eq!(messages_on_orders(&server).await, 2, "the server still knew the id: the window did not pass");

    let consumer = Consumer::new(replica.clone(), bus.clone(), Recorder, ConsumerConfig::new(spec))
        .counters(counters.clone());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(consumer.run(async {
        let _ = stopped.await;
    }));
    while counters.duplicates.get() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the copy never reached the consumer");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    running.await.unwrap();
    assert_eq!(applied(&replica).await.len(), 1, "the republished event had a second effect");
}

/// What publishing in waves costs: batches of 1,000 with 1, 10, 100 and 1,000 keys, on one
/// server. Ignored (it measures, it asserts nothing about time); run with
/// `cargo test -p capshop-kit --test bus_nats_publish -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement; run it with --ignored --nocapture"]
async fn publishing_in_waves_measured() {
    let Some(server) = NatsServer::start().await else { return };
    let bus = kit::bus::connect(&server.url()).await.unwrap();
    let mut seq = 0;
    for keys in [1, 10, 100, 1000] {
        let started = std::time::Instant::now();
        for _ in 0..10 {
            let batch: Vec<Message> = (0..1000)
                .map(|n| {
                    seq += 1;
                    Message {
                        id: uuid::Uuid::now_v7().to_string(),
                        stream: "orders".into(),
                        seq,
                        key: format!("k-{}", n % keys),
                        body: vec![b'x'; 400],
                    }
                })
                .collect();
            bus.publish(&batch).await.unwrap();
        }
        let rate = 10_000.0 / started.elapsed().as_secs_f64();
        #[allow(clippy::print_stderr, reason = "the measurement reports what it measured")]
        {
            eprintln!("{keys:>5} keys per batch of 1,000: {rate:>8.0} msg/s");
        }
    }
}
