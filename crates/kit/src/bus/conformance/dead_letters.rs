//! Dead letters: listing by filter, replay, discard, and the keys a per-key consumer
//! parks behind them.

use std::sync::Arc;

use tokio::time::Instant;

use super::{Feed, RETRY_DELAY, Subscriber, assert_delivery, assert_waited, discard, replay, spec};
use crate::bus::{Bus, DeadLetterFilter, Delivery, Disposition, Message, Ordering};

/// Dead letters of two consumers, `billing` (orders and customers) and `shipping`
/// (orders): billing rejects `orders k-a`, `orders k-b` and `customers k-a`, shipping
/// rejects `orders k-a` and acks `orders k-b`.
struct Rejections {
    feed: Feed,
    billing: Subscriber,
    shipping: Subscriber,
    order_a: Message,
    order_b: Message,
    customer_a: Message,
}

impl Rejections {
    async fn new(bus: &Arc<dyn Bus>) -> Self {
        let mut feed = Feed::new(bus);
        let mut billing = Subscriber::attach(bus, spec("billing", &["orders", "customers"])).await;
        let mut shipping = Subscriber::attach(bus, spec("shipping", &["orders"])).await;
        let order_a = feed.send("orders", "k-a").await;
        let order_b = feed.send("orders", "k-b").await;
        let customer_a = feed.send("customers", "k-a").await;
        for delivery in billing.collect(3).await {
            billing.reject(&delivery, &format!("billing cannot use {}", delivery.message.id)).await;
        }
        let shipped = shipping.collect(2).await;
        assert_delivery(&shipped[0], &order_a, 1);
        shipping.reject(&shipped[0], "shipping cannot use it").await;
        shipping.ack(&[&shipped[1]]).await;
        Self { feed, billing, shipping, order_a, order_b, customer_a }
    }
}

/// Asserts which messages a set of dead letters holds, in any order.
#[track_caller]
fn assert_letters(letters: &[crate::bus::DeadLetter], expected: &[(&str, &Message)], filter: &str) {
    let mut got: Vec<_> = letters.iter().map(|l| (l.consumer.as_str(), l.message.id.as_str())).collect();
    let mut wanted: Vec<_> = expected.iter().map(|(c, m)| (*c, m.id.as_str())).collect();
    got.sort();
    wanted.sort();
    assert_eq!(got, wanted, "dead letters matching {filter}");
}

/// Every field of a dead-letter filter narrows the list; an empty filter lists all.
pub async fn dead_letters_are_listed_by_consumer_event_stream_and_key(bus: Arc<dyn Bus>) {
    let r = Rejections::new(&bus).await;
    let list = |filter: DeadLetterFilter| super::dead_letters(&bus, filter);
    let (a, b, c) = (&r.order_a, &r.order_b, &r.customer_a);
    let all = [("billing", a), ("billing", b), ("billing", c), ("shipping", a)];
    assert_letters(&list(DeadLetterFilter::all()).await, &all, "all");
    let billing = list(DeadLetterFilter::all().consumer("billing")).await;
    assert_letters(&billing, &all[..3], "consumer billing");
    let letter = billing.iter().find(|l| l.message.id == c.id).expect("billing's customers dead letter");
    assert_eq!(letter.message, *c, "the dead letter lost the original message");
    assert_eq!(letter.error, format!("billing cannot use {}", c.id));
    assert_eq!(letter.attempts, 1);
    let shipping = [("shipping", a)];
    assert_letters(&list(DeadLetterFilter::all().consumer("shipping")).await, &shipping, "consumer shipping");
    let by_event = [("billing", a), ("shipping", a)];
    assert_letters(&list(DeadLetterFilter::all().event(&a.id)).await, &by_event, "event orders k-a");
    assert_letters(
        &list(DeadLetterFilter::all().stream("customers")).await,
        &[("billing", c)],
        "stream customers",
    );
    let by_key = [("billing", a), ("billing", c), ("shipping", a)];
    assert_letters(&list(DeadLetterFilter::all().key("k-a")).await, &by_key, "key k-a");
    let narrow = DeadLetterFilter::all().consumer("billing").stream("orders").key("k-b");
    assert_letters(&list(narrow).await, &[("billing", b)], "billing, orders, k-b");
    let unknown = DeadLetterFilter::all().event("no-such-event");
    assert_letters(&list(unknown).await, &[], "an unknown event");
}

/// Replaying one dead letter by its event id delivers it again as attempt 1 and leaves
/// the other dead letters alone.
pub async fn replaying_a_dead_letter_by_event_id_delivers_it_again_as_attempt_one(bus: Arc<dyn Bus>) {
    let mut feed = Feed::new(&bus);
    let mut subscriber = Subscriber::attach(&bus, spec("replayer", &["orders"]).max_attempts(3)).await;
    let (a, b) = (feed.send("orders", "k-a").await, feed.send("orders", "k-b").await);
    for delivery in subscriber.collect(2).await {
        subscriber.reject(&delivery, "poison").await;
    }
    assert_eq!(replay(&bus, DeadLetterFilter::all().event(&a.id)).await, 1);
    let again = subscriber.next().await;
    assert_delivery(&again, &a, 1);
    let left = super::dead_letters(&bus, DeadLetterFilter::all()).await;
    assert_letters(&left, &[("replayer", &b)], "all, after replaying one");
    subscriber.ack(&[&again]).await;
    let marker = feed.marker("orders").await;
    subscriber.assert_nothing_before(&marker).await;
}

/// Replaying by stream, by consumer or by key delivers exactly the matching dead letters,
/// each to its own consumer.
pub async fn replaying_by_stream_consumer_or_key_delivers_only_the_matching_dead_letters(bus: Arc<dyn Bus>) {
    let mut r = Rejections::new(&bus).await;
    assert_eq!(replay(&bus, DeadLetterFilter::all().stream("customers")).await, 1);
    let customer = r.billing.next().await;
    assert_delivery(&customer, &r.customer_a, 1);
    r.billing.ack(&[&customer]).await;

    assert_eq!(replay(&bus, DeadLetterFilter::all().consumer("shipping")).await, 1);
    let shipped = r.shipping.next().await;
    assert_delivery(&shipped, &r.order_a, 1);
    r.shipping.ack(&[&shipped]).await;

    assert_eq!(replay(&bus, DeadLetterFilter::all().key("k-b")).await, 1);
    let billed = r.billing.next().await;
    assert_delivery(&billed, &r.order_b, 1);
    r.billing.ack(&[&billed]).await;

    let left = super::dead_letters(&bus, DeadLetterFilter::all()).await;
    assert_letters(&left, &[("billing", &r.order_a)], "all, after the replays");
    let marker = r.feed.marker("orders").await;
    r.billing.assert_nothing_before(&marker).await;
    r.shipping.assert_nothing_before(&marker).await;
}

/// Replaying with an empty filter delivers every dead letter again as attempt 1.
pub async fn replaying_all_dead_letters_delivers_each_again(bus: Arc<dyn Bus>) {
    let mut feed = Feed::new(&bus);
    let mut subscriber = Subscriber::attach(&bus, spec("replayer", &["orders"])).await;
    let mut published = Vec::new();
    for key in ["k-1", "k-2", "k-3"] {
        published.push(feed.send("orders", key).await);
    }
    for delivery in subscriber.collect(3).await {
        subscriber.reject(&delivery, "poison").await;
    }
    assert_eq!(replay(&bus, DeadLetterFilter::all()).await, 3);
    let mut again = subscriber.collect(3).await;
    again.sort_by_key(|d| d.message.seq);
    for (delivery, message) in again.iter().zip(&published) {
        assert_delivery(delivery, message, 1);
    }
    let left = super::dead_letters(&bus, DeadLetterFilter::all()).await;
    assert!(left.is_empty(), "replayed dead letters are still listed: {left:?}");
    subscriber.ack(&again.iter().collect::<Vec<_>>()).await;
    let marker = feed.marker("orders").await;
    subscriber.assert_nothing_before(&marker).await;
}

/// Discarded dead letters are no longer listed, cannot be replayed and are not delivered.
pub async fn discarded_dead_letters_are_gone_for_good(bus: Arc<dyn Bus>) {
    let mut feed = Feed::new(&bus);
    let mut subscriber = Subscriber::attach(&bus, spec("discarder", &["orders"])).await;
    let (a, b) = (feed.send("orders", "k-a").await, feed.send("orders", "k-b").await);
    for delivery in subscriber.collect(2).await {
        subscriber.reject(&delivery, "poison").await;
    }
    assert_eq!(discard(&bus, DeadLetterFilter::all().event(&a.id)).await, 1);
    let left = super::dead_letters(&bus, DeadLetterFilter::all()).await;
    assert_letters(&left, &[("discarder", &b)], "all, after discarding one");
    assert_eq!(discard(&bus, DeadLetterFilter::all()).await, 1);
    let left = super::dead_letters(&bus, DeadLetterFilter::all()).await;
    assert!(left.is_empty(), "discarded dead letters are still listed: {left:?}");
    assert_eq!(replay(&bus, DeadLetterFilter::all()).await, 0, "a discarded dead letter was replayed");
    let marker = feed.marker("orders").await;
    subscriber.assert_nothing_before(&marker).await;
}

/// A per-key subscriber on `orders` with the first deliveries of `orders k` and
/// `orders x` taken, asserting that no later `k` message came with them.
async fn per_key(
    bus: &Arc<dyn Bus>,
    feed: &mut Feed,
    later_ks: usize,
) -> (Subscriber, Delivery, Vec<Message>) {
    let spec = spec("packer", &["orders"]).ordering(Ordering::PerKey).max_attempts(3);
    let mut subscriber = Subscriber::attach(bus, spec).await;
    let k1 = feed.send("orders", "k").await;
    let x1 = feed.send("orders", "x").await;
    let mut ks = vec![k1.clone()];
    for _ in 0..later_ks {
        ks.push(feed.send("orders", "k").await);
    }
    let mut first = subscriber.collect(2).await;
    first.sort_by_key(|d| d.message.seq);
    assert_delivery(&first[0], &k1, 1);
    assert_delivery(&first[1], &x1, 1);
    subscriber.ack(&[&first[1]]).await;
    (subscriber, first.remove(0), ks)
}

/// Delivers the parked messages `ks` one at a time, in order, acking each.
async fn assert_released_in_order(subscriber: &mut Subscriber, ks: &[Message]) {
    for message in ks {
        let delivery = subscriber.next().await;
        assert_delivery(&delivery, message, 1);
        subscriber.ack(&[&delivery]).await;
    }
}

/// While a per-key consumer retries a message, the later messages of its key wait and
/// other keys flow; after the retry succeeds they come one at a time, in order.
pub async fn a_per_key_consumer_parks_a_keys_later_messages_while_one_is_retried(bus: Arc<dyn Bus>) {
    let mut feed = Feed::new(&bus);
    let (mut subscriber, k1, ks) = per_key(&bus, &mut feed, 2).await;
    let retried_at = Instant::now();
    assert_eq!(subscriber.retry(&k1, RETRY_DELAY, "busy").await, Disposition::Retrying);
    let other_key = feed.send("orders", "y").await;
    subscriber.assert_nothing_before(&other_key).await;
    let again = subscriber.next().await;
    assert_waited(retried_at, RETRY_DELAY, "the retried message");
    assert_delivery(&again, &ks[0], 2);
    let marker = feed.marker("orders").await;
    subscriber.assert_nothing_before(&marker).await;
    subscriber.ack(&[&again]).await;
    assert_released_in_order(&mut subscriber, &ks[1..]).await;
    let marker = feed.marker("orders").await;
    subscriber.assert_nothing_before(&marker).await;
}

/// A per-key consumer's dead letter parks the later messages of its key (and counts
/// them) while other keys flow; replayed and acknowledged, it releases them in order.
pub async fn a_per_key_consumer_parks_a_key_behind_its_dead_letter_until_replayed(bus: Arc<dyn Bus>) {
    let mut feed = Feed::new(&bus);
    let (mut subscriber, k1, ks) = per_key(&bus, &mut feed, 2).await;
    subscriber.reject(&k1, "poison").await;
    let other_key = feed.send("orders", "y").await;
    subscriber.assert_nothing_before(&other_key).await;
    let letters = super::dead_letters(&bus, DeadLetterFilter::all().consumer("packer")).await;
    assert_letters(&letters, &[("packer", &ks[0])], "consumer packer");
    assert_eq!(letters[0].parked, 2, "the later messages of key k are parked behind the dead letter");

    assert_eq!(replay(&bus, DeadLetterFilter::all().event(&ks[0].id)).await, 1);
    let again = subscriber.next().await;
    assert_delivery(&again, &ks[0], 1);
    let marker = feed.marker("orders").await;
    subscriber.assert_nothing_before(&marker).await;
    subscriber.ack(&[&again]).await;
    assert_released_in_order(&mut subscriber, &ks[1..]).await;
    let left = super::dead_letters(&bus, DeadLetterFilter::all()).await;
    assert!(left.is_empty(), "dead letters left after the replay: {left:?}");
}

/// Discarding a per-key consumer's dead letter releases the messages parked behind it,
/// in order.
pub async fn discarding_a_per_key_dead_letter_releases_the_messages_parked_behind_it(bus: Arc<dyn Bus>) {
    let mut feed = Feed::new(&bus);
    let (mut subscriber, k1, ks) = per_key(&bus, &mut feed, 2).await;
    subscriber.reject(&k1, "poison").await;
    let marker = feed.marker("orders").await;
    subscriber.assert_nothing_before(&marker).await;
    let letters = super::dead_letters(&bus, DeadLetterFilter::all()).await;
    assert_eq!(letters.len(), 1, "expected one dead letter, got {letters:?}");
    assert_eq!(letters[0].parked, 2);
    assert_eq!(discard(&bus, DeadLetterFilter::all().key("k")).await, 1);
    assert_released_in_order(&mut subscriber, &ks[1..]).await;
    let marker = feed.marker("orders").await;
    subscriber.assert_nothing_before(&marker).await;
}

/// An unordered consumer gets the messages of a key regardless of one another: a dead
/// letter keeps nothing back and parks nothing.
pub async fn an_unordered_consumer_parks_nothing_behind_its_dead_letter(bus: Arc<dyn Bus>) {
    let mut feed = Feed::new(&bus);
    let spec = spec("replica", &["orders"]).ordering(Ordering::Unordered);
    let mut subscriber = Subscriber::attach(&bus, spec).await;
    let (k1, k2) = (feed.send("orders", "k").await, feed.send("orders", "k").await);
    let both = subscriber.collect(2).await;
    assert_delivery(&both[0], &k1, 1);
    assert_delivery(&both[1], &k2, 1);
    subscriber.reject(&both[0], "poison").await;
    subscriber.ack(&[&both[1]]).await;
    let k3 = feed.send("orders", "k").await;
    let delivery = subscriber.next().await;
    assert_delivery(&delivery, &k3, 1);
    subscriber.ack(&[&delivery]).await;
    let letters = super::dead_letters(&bus, DeadLetterFilter::all()).await;
    assert_letters(&letters, &[("replica", &k1)], "all");
    assert_eq!(letters[0].parked, 0, "an unordered consumer parks nothing");
}
