use std::time::Duration;

use serde_json::json;

use super::*;
use crate::bus::{ConsumerSpec, DeadLetterFilter, Message, Ordering};
use crate::envelope::NewEvent;
use crate::testkit::{Producer, TALLY, Tally, TestDb, event, failing_event, memory_bus, memory_store, tally};

fn config(name: &str) -> ConsumerConfig {
    ConsumerConfig::new(ConsumerSpec::new(name, &["orders"]))
        .retry(Backoff::new(Duration::from_millis(100), Duration::from_secs(2)))
}

/// Runs the consumer until `done` holds for its store, then stops it.
async fn consume_until<F>(consumer: Consumer<Tally>, store: &Store, done: F)
where
    F: Fn(&[(String, u64, u64)]) -> bool,
{
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(consumer.run(async {
        let _ = stopped.await;
    }));
    while !done(&tally(store).await) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stop.send(());
    running.await.unwrap();
}

async fn applies_every_relayed_event_once(db: TestDb) {
    let bus = memory_bus().await;
    let producer = Producer::new("orders", bus.clone()).await;
    producer.emit((1..=50).map(|v| event(&format!("o-{}", v % 5), v)).collect()).await;
    let store = consumer_store(&db).await;
    let consumer = Consumer::new(store.clone(), bus.clone(), Tally, config("tally"));
    consume_until(consumer, &store, |t| t.iter().map(|r| r.1).sum::<u64>() == 50).await;
    let rows = tally(&store).await;
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|(_, applied, _)| *applied == 10), "each key applied 10 times: {rows:?}");
}

async fn a_redelivered_event_has_no_second_effect(db: TestDb) {
    let bus = memory_bus().await;
    let producer = Producer::new("orders", bus.clone()).await;
    producer.emit(vec![event("o-1", 1), event("o-2", 1)]).await;
    let store = consumer_store(&db).await;
    let consumer = Consumer::new(store.clone(), bus.clone(), Tally, config("tally"));
    let mut subscription = bus.subscribe(&consumer.config.spec).await.unwrap();
    let deliveries = subscription.fetch(10).await.unwrap();
    consumer.apply_batch(subscription.as_mut(), deliveries.clone()).await.unwrap();
    consumer.apply_batch(subscription.as_mut(), deliveries).await.unwrap();
    assert_eq!(tally(&store).await, [("o-1".into(), 1, 1), ("o-2".into(), 1, 1)]);
    assert_eq!(consumer.counters.duplicates.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failing_event_is_retried_then_dead_lettered_while_others_flow() {
    let bus = memory_bus().await;
    let producer = Producer::new("orders", bus.clone()).await;
    let poison = producer.emit(vec![failing_event("o-1", 1, true), event("o-2", 1)]).await;
    producer.emit(vec![event("o-1", 2), event("o-3", 1)]).await;
    let store = memory_store().await;
    let consumer = Consumer::new(store.clone(), bus.clone(), Tally, config("tally"));
    let counters = consumer.counters.clone();
    let started = tokio::time::Instant::now();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(consumer.run(async {
        let _ = stopped.await;
    }));
    // Done when the consumer has counted the dead letter (after the bus recorded it) and
    // applied everything else; stopping at the bus's record alone races the counter.
    while counters.dead_lettered.get() == 0 || tally(&store).await.len() < 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(());
    running.await.unwrap();
    let letters = bus.dead_letters(&DeadLetterFilter::all()).await.unwrap();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.message.id, poison[0].id.to_string());
    assert_eq!(letter.attempts, 3);
    assert_eq!(letter.error, "o-1 v1 is poison");
    assert_eq!(letter.message.body, poison[0].to_json(), "the original envelope is kept");
    assert_eq!(counters.retried.get(), 2);
    assert_eq!(counters.dead_lettered.get(), 1);
    // Two backoff waits of at least 50 ms and 100 ms (half of 100 ms and 200 ms steps).
    assert!(started.elapsed() >= Duration::from_millis(150), "retries wait: {:?}", started.elapsed());
    let rows = tally(&store).await;
    assert_eq!(rows, [("o-1".into(), 1, 2), ("o-2".into(), 1, 1), ("o-3".into(), 1, 1)]);
}

async fn a_permanent_failure_is_dead_lettered_at_once(db: TestDb) {
    let bus = memory_bus().await;
    let producer = Producer::new("orders", bus.clone()).await;
    producer.emit(vec![failing_event("o-1", 1, false), event("o-2", 1)]).await;
    let store = consumer_store(&db).await;
    let consumer = Consumer::new(store.clone(), bus.clone(), Tally, config("tally"));
    consume_until(consumer, &store, |t| t.len() == 1).await;
    let letters = bus.dead_letters(&DeadLetterFilter::all()).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].attempts, 1);
}

async fn a_malformed_envelope_is_dead_lettered_and_the_consumer_goes_on(db: TestDb) {
    let bus = memory_bus().await;
    let garbage = Message {
        id: "garbage-1".into(),
        stream: "orders".into(),
        seq: 1,
        key: "x".into(),
        body: b"{not json".to_vec(),
    };
    bus.publish(&[garbage]).await.unwrap();
    let producer = Producer::new("orders", bus.clone()).await;
    producer.emit(vec![event("o-1", 1)]).await;
    let store = consumer_store(&db).await;
    let consumer = Consumer::new(store.clone(), bus.clone(), Tally, config("tally"));
    consume_until(consumer, &store, |t| t.len() == 1).await;
    let letters = bus.dead_letters(&DeadLetterFilter::all().event("garbage-1")).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert!(letters[0].error.starts_with("malformed envelope:"), "clear error: {}", letters[0].error);
}

async fn an_unknown_schema_version_is_dead_lettered_with_a_clear_error(db: TestDb) {
    let bus = memory_bus().await;
    let producer = Producer::new("orders", bus.clone()).await;
    producer.emit(vec![event("o-1", 1).schema(9), event("o-2", 1)]).await;
    let store = consumer_store(&db).await;
    let config = config("tally").schemas(Schemas::new().current("Counted", 1));
    let consumer = Consumer::new(store.clone(), bus.clone(), Tally, config);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(consumer.run(async {
        let _ = stopped.await;
    }));
    // The dead letter is settled after the batch's effects commit: wait for both.
    let letters = loop {
        let letters = bus.dead_letters(&DeadLetterFilter::all()).await.unwrap();
        if !letters.is_empty() && tally(&store).await.len() == 1 {
            break letters;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let _ = stop.send(());
    running.await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0].error,
        "unknown schema version 9 for event kind \"Counted\" (this build reads up to 1)"
    );
}

async fn an_old_payload_is_upcast_before_the_handler_sees_it(db: TestDb) {
    let bus = memory_bus().await;
    let producer = Producer::new("orders", bus.clone()).await;
    // Schema 1 called the flag "broken"; schema 2 calls it "fail".
    producer.emit(vec![NewEvent::new("Counted", "o-1", 1, json!({ "broken": false })).schema(1)]).await;
    let store = consumer_store(&db).await;
    let schemas = Schemas::new().current("Counted", 2).upcast("Counted", 1, |mut payload| {
        let broken = payload.as_object_mut().and_then(|p| p.remove("broken")).ok_or("no broken flag")?;
        Ok(json!({ "fail": broken }))
    });
    let consumer = Consumer::new(store.clone(), bus.clone(), Tally, config("tally").schemas(schemas));
    consume_until(consumer, &store, |t| t.len() == 1).await;
    assert!(bus.dead_letters(&DeadLetterFilter::all()).await.unwrap().is_empty());
}

async fn a_panicking_handler_fails_only_its_own_event(db: TestDb) {
    let bus = memory_bus().await;
    let producer = Producer::new("orders", bus.clone()).await;
    let panicking = NewEvent::new("Counted", "o-1", 1, json!({ "fail": false, "panic": true }));
    producer.emit(vec![panicking, event("o-2", 1)]).await;
    let store = consumer_store(&db).await;
    let consumer = Consumer::new(store.clone(), bus.clone(), Tally, config("tally"));
    let mut subscription = bus.subscribe(&consumer.config.spec).await.unwrap();
    let deliveries = subscription.fetch(10).await.unwrap();
    assert_eq!(deliveries.len(), 2, "both events in one batch");
    consumer.apply_batch(subscription.as_mut(), deliveries).await.unwrap();
    assert_eq!(tally(&store).await, [("o-2".into(), 1, 1)]);
    assert_eq!(consumer.counters.retried.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn attempts_survive_a_consumer_restart() {
    let bus = memory_bus().await;
    let producer = Producer::new("orders", bus.clone()).await;
    producer.emit(vec![failing_event("o-1", 1, true)]).await;
    let store = memory_store().await;
    let spec = ConsumerSpec::new("tally", &["orders"]).ordering(Ordering::PerKey);
    for expected_attempt in 1..=2 {
        let consumer = Consumer::new(store.clone(), bus.clone(), Tally, ConsumerConfig::new(spec.clone()));
        let mut subscription = bus.subscribe(&spec).await.unwrap();
        let deliveries = subscription.fetch(10).await.unwrap();
        assert_eq!(deliveries[0].attempt, expected_attempt);
        consumer.apply_batch(subscription.as_mut(), deliveries).await.unwrap();
    }
    let consumer = Consumer::new(store.clone(), bus.clone(), Tally, ConsumerConfig::new(spec.clone()));
    let mut subscription = bus.subscribe(&spec).await.unwrap();
    let deliveries = subscription.fetch(10).await.unwrap();
    assert_eq!(deliveries[0].attempt, 3, "the count is durable, not reset by the restart");
    consumer.apply_batch(subscription.as_mut(), deliveries).await.unwrap();
    assert_eq!(bus.dead_letters(&DeadLetterFilter::all()).await.unwrap()[0].attempts, 3);
}

/// A store that cannot take the batch transaction (another process holds its write lock
/// past the busy timeout) releases the batch: with one attempt allowed, each event comes
/// back as attempt 1 instead of becoming a dead letter, and applies once the lock is gone.
#[tokio::test]
async fn a_failing_store_costs_no_attempt_and_the_batch_applies_once_it_is_back() {
    let bus = memory_bus().await;
    let producer = Producer::new("orders", bus.clone()).await;
    producer.emit(vec![event("o-1", 1), event("o-2", 1)]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("consumer.db");
    let store = Store::open(&format!("sqlite:{}", path.display()), &[&crate::outbox::MIGRATIONS, &TALLY])
        .await
        .unwrap();
    let spec = ConsumerSpec::new("tally", &["orders"]).max_attempts(1);
    let consumer = Consumer::new(store.clone(), bus.clone(), Tally, ConsumerConfig::new(spec.clone()));
    let mut subscription = bus.subscribe(&spec).await.unwrap();
    let deliveries = subscription.fetch(10).await.unwrap();
    assert_eq!(deliveries.len(), 2);

    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let failed = consumer.apply_batch(subscription.as_mut(), deliveries).await;
    assert!(matches!(&failed, Err(ConsumeError::Store(e)) if e.is_retryable()), "{failed:?}");
    blocker.execute_batch("ROLLBACK").unwrap();

    let again = subscription.fetch(10).await.unwrap();
    let attempts: Vec<u32> = again.iter().map(|d| d.attempt).collect();
    assert_eq!(attempts, [1, 1], "the store's failure used no attempt");
    consumer.apply_batch(subscription.as_mut(), again).await.unwrap();
    assert!(bus.dead_letters(&DeadLetterFilter::all()).await.unwrap().is_empty(), "no dead letter");
    assert_eq!(tally(&store).await, [("o-1".into(), 1, 1), ("o-2".into(), 1, 1)]);
    assert_eq!(consumer.counters.retried.get() + consumer.counters.dead_lettered.get(), 0);
}

/// The consumer's store on a fresh database of the backend under test; producers stay
/// in memory (the relay's own suite covers their backends).
async fn consumer_store(db: &TestDb) -> Store {
    db.open(&[&crate::outbox::MIGRATIONS, &TALLY]).await
}

crate::testkit::on_both_backends!(
    applies_every_relayed_event_once,
    a_redelivered_event_has_no_second_effect,
    a_permanent_failure_is_dead_lettered_at_once,
    a_malformed_envelope_is_dead_lettered_and_the_consumer_goes_on,
    an_unknown_schema_version_is_dead_lettered_with_a_clear_error,
    an_old_payload_is_upcast_before_the_handler_sees_it,
    a_panicking_handler_fails_only_its_own_event,
);
