//! Delivery: order, dedup, stream selection, independent consumers, stream heads,
//! waking and backlogs.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{
    BACKLOG, Feed, PROMPT, Subscriber, assert_delivery, assert_each_stream_in_order, describe, spec, within,
};
use crate::bus::{Bus, DeadLetterFilter};

/// Messages of several streams, published in batches, reach a consumer of those streams
/// once each and, per stream, in publish order.
pub async fn each_stream_is_delivered_in_publish_order(bus: Arc<dyn Bus>) {
    let mut feed = Feed::new(&bus);
    let mut published = Vec::new();
    for batch in 0..3 {
        let messages: Vec<_> = (0..8)
            .map(|i| {
                let stream = if i % 2 == 0 { "orders" } else { "customers" };
                feed.message(stream, &format!("k-{}", (batch + i) % 3))
            })
            .collect();
        feed.publish(&messages).await;
        published.extend(messages);
    }
    let mut subscriber = Subscriber::attach(&bus, spec("reader", &["orders", "customers"])).await;
    let mut delivered = Vec::new();
    while delivered.len() < published.len() {
        let deliveries = subscriber.fetch(5).await;
        subscriber.ack(&deliveries.iter().collect::<Vec<_>>()).await;
        delivered.extend(deliveries);
    }
    assert_each_stream_in_order(&delivered, &published);
    let marker = feed.marker("orders").await;
    subscriber.assert_nothing_before(&marker).await;
}

/// A message published twice, in one batch or in two, is on the bus once.
pub async fn a_message_published_twice_is_delivered_once(bus: Arc<dyn Bus>) {
    let mut feed = Feed::new(&bus);
    let (a, b, c) =
        (feed.message("orders", "k-a"), feed.message("orders", "k-b"), feed.message("orders", "k-c"));
    feed.publish(&[a.clone(), b.clone()]).await;
    feed.publish(std::slice::from_ref(&a)).await;
    feed.publish(&[b.clone(), c.clone(), c.clone()]).await;
    let mut subscriber = Subscriber::attach(&bus, spec("reader", &["orders"])).await;
    let delivered = subscriber.collect(3).await;
    for (delivery, message) in delivered.iter().zip([&a, &b, &c]) {
        assert_delivery(delivery, message, 1);
    }
    subscriber.ack(&delivered.iter().collect::<Vec<_>>()).await;
    let marker = feed.marker("orders").await;
    subscriber.assert_nothing_before(&marker).await;
}

/// Publishing a message again after a consumer acknowledged it (a relay resending after
/// a crash) does not deliver it again.
pub async fn a_message_published_again_after_its_ack_is_not_delivered_again(bus: Arc<dyn Bus>) {
    let mut feed = Feed::new(&bus);
    let mut subscriber = Subscriber::attach(&bus, spec("reader", &["orders"])).await;
    let message = feed.send("orders", "k").await;
    let delivery = subscriber.next().await;
    assert_delivery(&delivery, &message, 1);
    subscriber.ack(&[&delivery]).await;
    feed.publish(std::slice::from_ref(&message)).await;
    let marker = feed.marker("orders").await;
    subscriber.assert_nothing_before(&marker).await;
}

/// A consumer gets the messages of its streams, each stream in publish order, and none
/// of the others. Streams are independent logs (one per producing service), so no order
/// holds between two of them.
pub async fn a_consumer_receives_only_the_streams_it_subscribed_to(bus: Arc<dyn Bus>) {
    let mut feed = Feed::new(&bus);
    let mut wanted = Vec::new();
    for stream in ["orders", "customers", "payments", "customers", "orders"] {
        let message = feed.send(stream, "k").await;
        if stream != "customers" {
            wanted.push(message);
        }
    }
    let mut subscriber = Subscriber::attach(&bus, spec("reader", &["orders", "payments"])).await;
    let delivered = subscriber.collect(wanted.len()).await;
    assert_each_stream_in_order(&delivered, &wanted);
    subscriber.ack(&delivered.iter().collect::<Vec<_>>()).await;
    let marker = feed.marker("payments").await;
    subscriber.assert_nothing_before(&marker).await;
}

/// Two consumer names on one stream each get every message, and what one does with a
/// delivery (ack, reject) does not touch the other's.
pub async fn consumers_with_different_names_each_receive_every_message(bus: Arc<dyn Bus>) {
    let mut feed = Feed::new(&bus);
    let mut billing = Subscriber::attach(&bus, spec("billing", &["orders"])).await;
    let mut shipping = Subscriber::attach(&bus, spec("shipping", &["orders"])).await;
    let mut published = Vec::new();
    for key in ["k-1", "k-2", "k-3"] {
        published.push(feed.send("orders", key).await);
    }
    let billed = billing.collect(3).await;
    for (delivery, message) in billed.iter().zip(&published) {
        assert_delivery(delivery, message, 1);
    }
    billing.ack(&billed.iter().collect::<Vec<_>>()).await;
    let shipped = shipping.collect(3).await;
    for (delivery, message) in shipped.iter().zip(&published) {
        assert_delivery(delivery, message, 1);
    }
    shipping.reject(&shipped[0], "no address").await;
    shipping.ack(&[&shipped[1], &shipped[2]]).await;

    let billing_letters = super::dead_letters(&bus, DeadLetterFilter::all().consumer("billing")).await;
    assert!(billing_letters.is_empty(), "billing has dead letters it never made: {billing_letters:?}");
    let shipping_letters = super::dead_letters(&bus, DeadLetterFilter::all().consumer("shipping")).await;
    assert_eq!(shipping_letters.len(), 1, "shipping's rejected message is its dead letter");
    assert_eq!(shipping_letters[0].message, published[0]);
    let marker = feed.marker("orders").await;
    billing.assert_nothing_before(&marker).await;
    shipping.assert_nothing_before(&marker).await;
}

/// A durable consumer created after messages were published starts from the first
/// message of its streams, so a new service can build its state from history.
pub async fn a_consumer_attached_later_receives_the_messages_published_before(bus: Arc<dyn Bus>) {
    let mut feed = Feed::new(&bus);
    let earlier = [feed.send("orders", "k-1").await, feed.send("orders", "k-2").await];
    let mut subscriber = Subscriber::attach(&bus, spec("latecomer", &["orders"])).await;
    let delivered = subscriber.collect(2).await;
    for (delivery, message) in delivered.iter().zip(&earlier) {
        assert_delivery(delivery, message, 1);
    }
}

/// `stream_head` is the highest seq published on a stream, 0 before any, unmoved by
/// other streams and by duplicates.
pub async fn stream_head_reports_the_highest_published_seq(bus: Arc<dyn Bus>) {
    let head = |stream: &'static str| {
        let bus = bus.clone();
        async move {
            within("stream_head", bus.stream_head(stream))
                .await
                .unwrap_or_else(|e| panic!("stream_head({stream}) failed: {e}"))
        }
    };
    let mut feed = Feed::new(&bus);
    assert_eq!(head("orders").await, 0, "a stream without messages has head 0");
    let orders: Vec<_> = (0..3).map(|_| feed.message("orders", "k")).collect();
    feed.publish(&orders).await;
    assert_eq!(head("orders").await, 3);
    feed.send("customers", "k").await;
    assert_eq!(head("orders").await, 3, "another stream's message moved the head of orders");
    assert_eq!(head("customers").await, 1);
    feed.publish(&orders[1..2]).await;
    assert_eq!(head("orders").await, 3, "a duplicate moved the head");
}

/// `recent` gives a stream's newest messages, newest first, at most the limit asked,
/// without other streams' messages or duplicates; nothing for a stream never published on.
pub async fn recent_answers_the_newest_messages_of_a_stream_newest_first(bus: Arc<dyn Bus>) {
    let recent = |stream: &'static str, limit: usize| {
        let bus = bus.clone();
        async move {
            within("recent", bus.recent(stream, limit))
                .await
                .unwrap_or_else(|e| panic!("recent({stream}, {limit}) failed: {e}"))
        }
    };
    let mut feed = Feed::new(&bus);
    assert!(recent("orders", 10).await.is_empty(), "a stream without messages has no recent ones");
    let orders: Vec<_> = (0..4).map(|_| feed.message("orders", "k")).collect();
    feed.publish(&orders).await;
    feed.send("customers", "k").await;
    feed.publish(&orders[2..3]).await;
    let newest: Vec<_> = recent("orders", 3).await;
    let wanted: Vec<_> = orders[1..].iter().rev().cloned().collect();
    assert_eq!(newest, wanted, "the three newest of orders, newest first, each once");
    assert_eq!(recent("orders", 10).await.len(), 4, "a limit above the count gives every message");
    assert_eq!(recent("customers", 10).await.len(), 1, "only the stream asked for");
}

/// A fetch waiting on an empty consumer returns when a message is published, woken by
/// the publish rather than by a timer.
pub async fn a_waiting_fetch_returns_as_soon_as_a_message_is_published(bus: Arc<dyn Bus>) {
    let mut feed = Feed::new(&bus);
    let mut subscriber = Subscriber::attach(&bus, spec("waiter", &["orders"])).await;
    let waiting = tokio::spawn(async move {
        let deliveries = subscriber.fetch(10).await;
        (subscriber, deliveries)
    });
    // The fetch starts now and finds nothing: its first look at the bus is under way
    // before the publish below, whether the clock is paused (it jumps to the end of this
    // sleep) or not.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let message = feed.send("orders", "k").await;
    let published = Instant::now();
    let (_subscriber, deliveries) = within("the waiting fetch", waiting)
        .await
        .unwrap_or_else(|e| panic!("the waiting fetch failed: {e}"));
    let waited = published.elapsed();
    assert!(waited < PROMPT, "the waiting fetch took {waited:?} to see a published message");
    assert_eq!(
        deliveries.len(),
        1,
        "expected one delivery, got {:?}",
        describe(&deliveries.iter().collect::<Vec<_>>())
    );
    assert_delivery(&deliveries[0], &message, 1);
}

/// Messages of a consumer's stream before and after a long run of another stream's
/// messages all reach it.
pub async fn a_large_backlog_of_other_streams_does_not_hide_a_consumers_messages(bus: Arc<dyn Bus>) {
    let mut feed = Feed::new(&bus);
    let first = feed.send("orders", "k-1").await;
    for _ in 0..BACKLOG / 1000 {
        let noise: Vec<_> = (0..1000).map(|i| feed.message("audit", &format!("a-{i}"))).collect();
        feed.publish(&noise).await;
    }
    let last = feed.send("orders", "k-2").await;
    let mut subscriber = Subscriber::attach(&bus, spec("orders-only", &["orders"])).await;
    let delivered = subscriber.collect(2).await;
    let ids: HashSet<_> = delivered.iter().map(|d| d.message.id.as_str()).collect();
    assert_eq!(
        ids.len(),
        2,
        "expected two distinct messages, got {:?}",
        describe(&delivered.iter().collect::<Vec<_>>())
    );
    assert_delivery(&delivered[0], &first, 1);
    assert_delivery(&delivered[1], &last, 1);
}

/// A bus that never pruned keeps every stream from its first seq, published on or not.
pub async fn a_bus_that_never_pruned_retains_every_stream_from_seq_one(bus: Arc<dyn Bus>) {
    let mut feed = Feed::new(&bus);
    feed.send("orders", "k").await;
    for stream in ["orders", "never-published"] {
        let retained = within("retained_from", bus.retained_from(stream))
            .await
            .unwrap_or_else(|e| panic!("retained_from({stream}) failed: {e}"));
        assert_eq!(retained, 1, "{stream} is retained from {retained}, with nothing pruned");
    }
}
