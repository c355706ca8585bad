use std::sync::Arc;

use super::*;
use crate::bus::{ConsumerSpec, DeadLetterFilter, EmbeddedBus, Message, Retention};
use crate::consumer::{Consumer, ConsumerConfig};
use crate::testkit::{Producer, TALLY, Tally, TestDb, event, failing_event, memory_bus, tally};

/// Prunes every row the floor has passed, however young.
fn at_once() -> InboxRetention {
    InboxRetention { keep_for: Duration::ZERO, ..InboxRetention::default() }
}

async fn inbox_rows(store: &Store) -> u64 {
    store.transact(|tx| tx.query_one("SELECT count(*) FROM kit_inbox", &[])?.get(0)).await.unwrap()
}

/// Fetches what is due for `consumer` on `bus` and applies it in one batch.
async fn apply_due(consumer: &Consumer<Tally>, bus: &Arc<dyn Bus>, spec: &ConsumerSpec) {
    let mut subscription = bus.subscribe(spec).await.unwrap();
    let deliveries = subscription.fetch(100).await.unwrap();
    consumer.apply_batch(subscription.as_mut(), deliveries).await.unwrap();
}

async fn a_pruned_inbox_still_absorbs_every_redelivery_the_bus_can_make(db: TestDb) {
    let bus = memory_bus().await;
    let producer = Producer::new("orders", bus.clone()).await;
    let envelopes = producer.emit((1..=20).map(|v| event(&format!("o-{}", v % 5), v)).collect()).await;
    let store = db.open(&[&crate::outbox::MIGRATIONS, &TALLY]).await;
    let spec = ConsumerSpec::new("tally", &["orders"]);
    let consumer = Consumer::new(store.clone(), bus.clone(), Tally, ConsumerConfig::new(spec.clone()));
    let mut subscription = bus.subscribe(&spec).await.unwrap();
    let deliveries = subscription.fetch(100).await.unwrap();
    consumer.apply_batch(subscription.as_mut(), deliveries.clone()).await.unwrap();

    prune(&store, bus.as_ref(), "tally", &["orders".into()], &at_once()).await.unwrap();
    assert_eq!(inbox_rows(&store).await, 0, "events applied in order leave no id: the floor passed them");

    // A lost ack: the same deliveries again.
    consumer.apply_batch(subscription.as_mut(), deliveries).await.unwrap();
    // A republish the bus no longer recognises (past the NATS duplicate window): the same
    // events as new messages of a bus that never saw them.
    let forgetful = memory_bus().await;
    let copies: Vec<Message> = envelopes.iter().map(Message::from).collect();
    forgetful.publish(&copies).await.unwrap();
    apply_due(&consumer, &forgetful, &spec).await;

    let rows = tally(&store).await;
    assert!(rows.iter().all(|(_, applied, _)| *applied == 4), "an event was applied twice: {rows:?}");
    assert_eq!(consumer.counters_handle().duplicates.get(), 40, "both redeliveries were skipped whole");
    assert_eq!(inbox_rows(&store).await, 0, "a copy skipped by its seq leaves no row behind");
}

async fn a_dead_event_holds_the_floor_below_it_until_the_bus_settles_it(db: TestDb) {
    let log = EmbeddedBus::open(":memory:").await.unwrap();
    let bus: Arc<dyn Bus> = Arc::new(log.clone());
    let producer = Producer::new("orders", bus.clone()).await;
    let mut events: Vec<_> = (1..=3).map(|v| event("o-1", v)).collect();
    events.push(failing_event("o-2", 1, false));
    events.extend((4..=5).map(|v| event("o-1", v)));
    producer.emit(events).await;
    let store = db.open(&[&crate::outbox::MIGRATIONS, &TALLY]).await;
    let spec = ConsumerSpec::new("tally", &["orders"]);
    let consumer = Consumer::new(store.clone(), bus.clone(), Tally, ConsumerConfig::new(spec.clone()));
    apply_due(&consumer, &bus, &spec).await;

    let streams = ["orders".to_owned()];
    prune(&store, bus.as_ref(), "tally", &streams, &at_once()).await.unwrap();
    assert_eq!(inbox_rows(&store).await, 2, "the ids above the dead letter (seqs 5 and 6) are kept");
    let lag = &crate::lag::measure(&store, bus.as_ref(), "tally", &streams).await.unwrap()[0];
    assert_eq!((lag.applied_seq, lag.contiguous_seq, lag.published_seq), (6, 3, 6));
    assert_eq!(lag.events_behind(), 3, "the lag counts from the dead letter, not from the newest event");

    // Discarded, then pruned from the log: every consumer has settled seq 4.
    bus.discard(&DeadLetterFilter::all()).await.unwrap();
    log.prune(&Retention { max_age: Duration::ZERO, ..Retention::default() }).await.unwrap();
    prune(&store, bus.as_ref(), "tally", &streams, &at_once()).await.unwrap();
    assert_eq!(inbox_rows(&store).await, 0);
    let lag = &crate::lag::measure(&store, bus.as_ref(), "tally", &streams).await.unwrap()[0];
    assert_eq!((lag.contiguous_seq, lag.events_behind()), (6, 0));
}

async fn ids_stay_in_the_inbox_for_their_retention_after_the_floor_passed_them(db: TestDb) {
    let log = EmbeddedBus::open(":memory:").await.unwrap();
    let bus: Arc<dyn Bus> = Arc::new(log.clone());
    let producer = Producer::new("orders", bus.clone()).await;
    let mut events = vec![failing_event("o-2", 1, false)];
    events.extend((1..=3).map(|v| event("o-1", v)));
    producer.emit(events).await;
    let store = db.open(&[&crate::outbox::MIGRATIONS, &TALLY]).await;
    let spec = ConsumerSpec::new("tally", &["orders"]);
    let consumer = Consumer::new(store.clone(), bus.clone(), Tally, ConsumerConfig::new(spec.clone()));
    apply_due(&consumer, &bus, &spec).await;
    assert_eq!(inbox_rows(&store).await, 3, "the events above the dead letter are recorded by id");

    // Settled by the bus: the floor jumps past every seq, and the ids stay their hour.
    bus.discard(&DeadLetterFilter::all()).await.unwrap();
    log.prune(&Retention { max_age: Duration::ZERO, ..Retention::default() }).await.unwrap();
    let streams = ["orders".to_owned()];
    let pruned = prune(&store, bus.as_ref(), "tally", &streams, &InboxRetention::default()).await.unwrap();
    assert_eq!(pruned, 0, "an hour's retention keeps ids applied just now");
    assert_eq!(inbox_rows(&store).await, 3);
    let lag = &crate::lag::measure(&store, bus.as_ref(), "tally", &streams).await.unwrap()[0];
    assert_eq!(lag.contiguous_seq, 4, "the floor passed them");
}

crate::testkit::on_both_backends!(
    a_pruned_inbox_still_absorbs_every_redelivery_the_bus_can_make,
    a_dead_event_holds_the_floor_below_it_until_the_bus_settles_it,
    ids_stay_in_the_inbox_for_their_retention_after_the_floor_passed_them,
);
