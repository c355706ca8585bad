//! A delivery held by a wrapper past its ack wait and handed to the consumer late (the
//! first design of the link's `delay`, commit 3fb1772): the bus redelivers the message
//! after its ack wait, that delivery replaces the held one, and the kit's consumer applies
//! every event once with nothing left unsettled in the bus. (What lost events under that
//! design's predecessor was a fetch cancelled while it took deliveries; the conformance
//! case `a_fetch_cancelled_while_it_takes_loses_no_message` holds every bus to it.)

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::EmbeddedBus;
use crate::bus::{Bus, BusError, ConsumerSpec, Delivery, DeliveryTag, Disposition, Ordering, Subscription};
use crate::consumer::{Consumer, ConsumerConfig};
use crate::store::StoreError;
use crate::testkit::{Producer, Tally, event, memory_store, tally};

/// Holds the first delivery of one message for `hold`, hands out everything else at once,
/// and gives the held one out with the first fetch after its hold, unless the bus
/// delivered the message again meanwhile (then the fresh delivery replaces it).
struct HoldOne {
    inner: Box<dyn Subscription>,
    seq: u64,
    hold: Duration,
    held: Option<(Instant, Delivery)>,
    holding_done: bool,
}

#[async_trait]
impl Subscription for HoldOne {
    async fn fetch(&mut self, max: usize) -> Result<Vec<Delivery>, BusError> {
        loop {
            if let Some((at, _)) = &self.held
                && *at <= Instant::now()
            {
                let (_, delivery) = self.held.take().expect("checked");
                return Ok(vec![delivery]);
            }
            let fetched = self.inner.fetch(max).await?;
            let tags: HashSet<DeliveryTag> = fetched.iter().map(|d| d.tag).collect();
            if self.held.as_ref().is_some_and(|(_, d)| tags.contains(&d.tag)) {
                self.held = None;
            }
            let mut out = Vec::new();
            for delivery in fetched {
                if !self.holding_done && delivery.message.seq == self.seq {
                    self.holding_done = true;
                    self.held = Some((Instant::now() + self.hold, delivery));
                } else {
                    out.push(delivery);
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
    }
    async fn ack(&mut self, tags: &[DeliveryTag]) -> Result<(), BusError> {
        self.inner.ack(tags).await
    }
    async fn retry(
        &mut self,
        tag: DeliveryTag,
        delay: Duration,
        error: &str,
    ) -> Result<Disposition, BusError> {
        self.inner.retry(tag, delay, error).await
    }
    async fn reject(&mut self, tag: DeliveryTag, error: &str) -> Result<(), BusError> {
        self.inner.reject(tag, error).await
    }
    fn count_exhausted(&mut self, counter: prometheus_client::metrics::counter::Counter) {
        self.inner.count_exhausted(counter);
    }
    async fn release(&mut self, tags: &[DeliveryTag]) -> Result<(), BusError> {
        self.inner.release(tags).await
    }
}

/// The consumer's positions and pending rows, as "acked A taken T rows [pos:state:attempts]".
async fn bus_state(bus: &EmbeddedBus) -> (u64, u64, Vec<String>) {
    bus.store
        .transact(|tx| {
            let c = tx.query_one("SELECT acked_pos, taken_pos FROM bus_consumer", &[])?;
            let rows = tx
                .query("SELECT pos, state, attempts FROM bus_pending ORDER BY pos", &[])?
                .into_iter()
                .map(|r| Ok(format!("{}:{}:{}", r.get::<u64>(0)?, r.get::<String>(1)?, r.get::<u64>(2)?)))
                .collect::<Result<_, StoreError>>()?;
            Ok::<_, StoreError>((c.get(0)?, c.get(1)?, rows))
        })
        .await
        .unwrap()
}

/// Runs the kit's consumer (apply in one transaction, then ack) behind [`HoldOne`], holding
/// the first delivery of seq 1 for twice the ack wait while events keep coming; checks
/// that every event is applied once and the bus holds nothing unsettled at the end.
async fn every_event_applies_once_with_one_held_past_its_ack_wait(ordering: Ordering) {
    const EVENTS: u64 = 40;
    let ack_wait = Duration::from_millis(500);
    let bus = EmbeddedBus::open(":memory:").await.unwrap();
    let shared: Arc<dyn Bus> = Arc::new(bus.clone());
    let producer = Producer::new("orders", shared.clone()).await;
    producer.emit((1..=10).map(|v| event(&format!("k-{}", v % 4), v)).collect()).await;
    let store = memory_store().await;
    let spec = ConsumerSpec { ack_wait, ..ConsumerSpec::new("c", &["orders"]) }.ordering(ordering);
    let consumer = Consumer::new(store.clone(), shared, Tally, ConsumerConfig::new(spec.clone()).batch(8));
    let inner = bus.subscribe(&spec).await.unwrap();
    let mut held = HoldOne { inner, seq: 1, hold: ack_wait * 2, held: None, holding_done: false };
    let (mut published, mut attempts_of_1) = (10u64, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "not every event applied: {:?}", bus_state(&bus).await);
        if published < EVENTS {
            published += 1;
            producer.emit(vec![event(&format!("k-{}", published % 4), published)]).await;
        }
        let Ok(deliveries) = tokio::time::timeout(Duration::from_millis(100), held.fetch(8)).await else {
            continue;
        };
        let deliveries = deliveries.unwrap();
        attempts_of_1.extend(deliveries.iter().filter(|d| d.message.seq == 1).map(|d| d.attempt));
        consumer.apply_batch(&mut held, deliveries).await.unwrap();
        let applied: u64 = tally(&store).await.iter().map(|r| r.1).sum();
        if applied == EVENTS && held.held.is_none() {
            break;
        }
    }
    assert_eq!(attempts_of_1, [2], "the held delivery was replaced by the bus's redelivery");
    let rows = tally(&store).await;
    assert!(rows.iter().all(|(_, applied, _)| *applied == EVENTS / 4), "each event applied once: {rows:?}");
    assert_eq!(bus_state(&bus).await, (EVENTS, EVENTS, vec![]), "everything settled, no row left");
}

#[tokio::test]
async fn an_unordered_consumer_applies_every_event_once_with_one_held_past_its_ack_wait() {
    every_event_applies_once_with_one_held_past_its_ack_wait(Ordering::Unordered).await
}

#[tokio::test]
async fn a_per_key_consumer_applies_every_event_once_with_one_held_past_its_ack_wait() {
    every_event_applies_once_with_one_held_past_its_ack_wait(Ordering::PerKey).await
}
