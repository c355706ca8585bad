use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

use super::*;
use crate::breaker::{BreakerConfig, CircuitBreaker};
use crate::bus::{ConsumerSpec, DeadLetterFilter};
use crate::consumer::{Consumer, ConsumerConfig};
use crate::testkit::{Producer, Tally, event, failing_event, memory_bus, memory_store};

fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no metric {prefix} in:\n{text}"))
}

#[tokio::test]
async fn lag_backlog_dead_letters_and_breakers_are_exported_and_a_dead_letter_keeps_the_lag_up() {
    let mut registry = Registry::default();
    let metrics = KitMetrics::register(&mut registry);
    let bus = memory_bus().await;
    let producer = Producer::new("orders", bus.clone()).await;
    producer.emit(vec![event("o-1", 1), failing_event("o-2", 1, false), event("o-3", 1)]).await;
    let outbox = producer.outbox.clone();
    let store = producer.store.clone();
    store.transact(move |tx| outbox.append(tx, vec![event("o-4", 1)])).await.unwrap();
    metrics.watch_outbox(&producer.store, &producer.outbox);

    let replica = memory_store().await;
    let spec = ConsumerSpec::new("tally", &["orders"]);
    let consumer = Consumer::new(replica.clone(), bus.clone(), Tally, ConsumerConfig::new(spec.clone()))
        .counters(metrics.consumer_counters("tally"));
    let mut subscription = bus.subscribe(&spec).await.unwrap();
    let deliveries = subscription.fetch(10).await.unwrap();
    consumer.apply_batch(subscription.as_mut(), deliveries).await.unwrap();
    metrics.watch_consumer(&replica, "tally", &["orders".to_owned()]);
    let breaker = CircuitBreaker::new("catalog", BreakerConfig::default());
    metrics.watch_breaker(&breaker);

    metrics.refresh(bus.as_ref()).await.unwrap();
    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    let labels = "{consumer=\"tally\",stream=\"orders\"}";
    assert_eq!(
        line(&text, &format!("capshop_consumer_applied_seq{labels}")),
        format!("capshop_consumer_applied_seq{labels} 3")
    );
    assert_eq!(
        line(&text, &format!("capshop_source_published_seq{labels}")),
        format!("capshop_source_published_seq{labels} 3")
    );
    // Seq 2 is dead: 3 is applied, yet the consumer has not applied everything past 1.
    assert_eq!(
        line(&text, &format!("capshop_consumer_contiguous_seq{labels}")),
        format!("capshop_consumer_contiguous_seq{labels} 1")
    );
    assert_eq!(
        line(&text, &format!("capshop_consumer_lag_events{labels}")),
        format!("capshop_consumer_lag_events{labels} 2"),
        "the lag read as if the dead letter had been applied"
    );
    assert!(line(&text, "capshop_consumer_newest_applied_age_seconds").contains(labels));
    assert_eq!(
        line(&text, "capshop_outbox_backlog_events"),
        "capshop_outbox_backlog_events{stream=\"orders\"} 1"
    );
    assert_eq!(line(&text, "capshop_dead_letters{"), "capshop_dead_letters{consumer=\"tally\"} 1");
    assert_eq!(
        line(&text, "capshop_events_applied_total"),
        "capshop_events_applied_total{consumer=\"tally\"} 2"
    );
    assert_eq!(
        line(&text, "capshop_events_dead_lettered_total"),
        "capshop_events_dead_lettered_total{consumer=\"tally\"} 1"
    );
    assert_eq!(line(&text, "capshop_breaker_state"), "capshop_breaker_state{breaker=\"catalog\"} 0");
}

/// A message whose ack waits ran out until its attempts were used up is a dead letter the
/// bus made without the consumer's `retry`; the consumer's dead-letter counter shows it.
#[tokio::test(start_paused = true)]
async fn a_dead_letter_made_by_ack_timeouts_counts_in_the_consumers_dead_letters() {
    let mut registry = Registry::default();
    let metrics = KitMetrics::register(&mut registry);
    let bus = memory_bus().await;
    let producer = Producer::new("orders", bus.clone()).await;
    producer.emit(vec![event("o-1", 1)]).await;
    let spec =
        ConsumerSpec::new("tally", &["orders"]).ack_wait(std::time::Duration::from_secs(1)).max_attempts(2);
    // Taken twice by an attachment that never acknowledges (a consumer that hangs or dies).
    let mut hung = bus.subscribe(&spec).await.unwrap();
    for _ in 0..2 {
        assert_eq!(hung.fetch(10).await.unwrap().len(), 1);
    }
    drop(hung);
    producer.emit(vec![event("o-2", 1)]).await;

    let replica = memory_store().await;
    let counters = metrics.consumer_counters("tally");
    let consumer = Consumer::new(replica.clone(), bus.clone(), Tally, ConsumerConfig::new(spec))
        .counters(counters.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(consumer.run(async {
        let _ = stopped.await;
    }));
    while counters.applied.get() < 1 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let _ = stop.send(());
    running.await.unwrap();
    let letters = bus.dead_letters(&DeadLetterFilter::all()).await.unwrap();
    assert_eq!(letters.len(), 1, "o-1 ran out of attempts: {letters:?}");
    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    assert_eq!(
        line(&text, "capshop_events_dead_lettered_total"),
        "capshop_events_dead_lettered_total{consumer=\"tally\"} 1",
        "the dead letter made by ack timeouts was not counted"
    );
}
