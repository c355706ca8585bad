//! Acknowledgement and redelivery: ack, ack timeouts, dead subscriptions, delayed retry,
//! releases that use no attempt, and the dead letters that attempts running out or a
//! rejection make.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{ACK_WAIT, Feed, RETRY_DELAY, Subscriber, assert_delivery, assert_waited, spec};
use crate::bus::{Bus, DeadLetterFilter, Disposition, Ordering};

/// An acknowledged message stays acknowledged, also once its ack wait has long passed.
pub async fn an_acknowledged_message_is_not_delivered_again(bus: Arc<dyn Bus>) {
    let mut feed = Feed::new(&bus);
    let mut subscriber = Subscriber::attach(&bus, spec("acker", &["orders"]).ack_wait(ACK_WAIT)).await;
    let published = [feed.send("orders", "k-1").await, feed.send("orders", "k-2").await];
    let delivered = subscriber.collect(2).await;
    for (delivery, message) in delivered.iter().zip(&published) {
        assert_delivery(delivery, message, 1);
    }
    subscriber.ack(&delivered.iter().collect::<Vec<_>>()).await;
    tokio::time::sleep(ACK_WAIT * 2).await;
    let marker = feed.marker("orders").await;
    subscriber.assert_nothing_before(&marker).await;
}

/// A delivery not acknowledged within the ack wait is delivered again, as attempt 2, and
/// not before the ack wait has passed.
pub async fn redelivers_after_ack_timeout(bus: Arc<dyn Bus>) {
    let mut feed = Feed::new(&bus);
    let mut subscriber = Subscriber::attach(&bus, spec("forgetful", &["orders"]).ack_wait(ACK_WAIT)).await;
    let message = feed.send("orders", "k").await;
    let start = Instant::now();
    let first = subscriber.next().await;
    assert_delivery(&first, &message, 1);
    let second = subscriber.next().await;
    assert_waited(start, ACK_WAIT, "the redelivery");
    assert_delivery(&second, &message, 2);
    subscriber.ack(&[&second]).await;
    tokio::time::sleep(ACK_WAIT * 2).await;
    let marker = feed.marker("orders").await;
    subscriber.assert_nothing_before(&marker).await;
}

/// What a subscription had taken and not acknowledged when it went away (its consumer died) is
/// delivered to the next subscription of the same name, and the attempts count on: the
/// third attachment's retry is the last one.
pub async fn a_message_left_unacked_by_a_dropped_subscription_goes_to_the_next(bus: Arc<dyn Bus>) {
    let mut feed = Feed::new(&bus);
    let consumer = spec("crashy", &["orders"]).ack_wait(ACK_WAIT).max_attempts(3);
    let message = feed.send("orders", "k").await;
    for attempt in 1..=2 {
        let mut subscriber = Subscriber::attach(&bus, consumer.clone()).await;
        assert_delivery(&subscriber.next().await, &message, attempt);
    }
    let mut subscriber = Subscriber::attach(&bus, consumer.clone()).await;
    let last = subscriber.next().await;
    assert_delivery(&last, &message, 3);
    let disposition = subscriber.retry(&last, Duration::from_millis(10), "still failing").await;
    assert_eq!(disposition, Disposition::DeadLettered, "attempts were not counted across attachments");
    let letters = super::dead_letters(&bus, DeadLetterFilter::all().consumer("crashy")).await;
    assert_eq!(letters.len(), 1, "expected one dead letter, got {letters:?}");
    assert_eq!(letters[0].attempts, 3);
}

/// A retried message is delivered again as the next attempt after its delay, not before,
/// and meanwhile the consumer gets newer messages.
pub async fn a_retried_message_comes_back_after_its_delay_and_not_before(bus: Arc<dyn Bus>) {
    let mut feed = Feed::new(&bus);
    let mut subscriber = Subscriber::attach(&bus, spec("retrier", &["orders"])).await;
    let message = feed.send("orders", "k").await;
    let first = subscriber.next().await;
    assert_delivery(&first, &message, 1);
    let retried_at = Instant::now();
    let disposition = subscriber.retry(&first, RETRY_DELAY, "the warehouse is busy").await;
    assert_eq!(disposition, Disposition::Retrying);
    let marker = feed.marker("orders").await;
    subscriber.assert_nothing_before(&marker).await;
    let again = subscriber.next().await;
    assert_waited(retried_at, RETRY_DELAY, "the retried message");
    assert_delivery(&again, &message, 2);
    subscriber.ack(&[&again]).await;
}

/// With `max_attempts` 3, the third retry dead-letters the message: the dead letter has
/// the last error, the attempts and the original message, and the consumer moves on.
pub async fn a_message_retried_until_its_attempts_run_out_becomes_a_dead_letter(bus: Arc<dyn Bus>) {
    let mut feed = Feed::new(&bus);
    let mut subscriber = Subscriber::attach(&bus, spec("doomed", &["orders"]).max_attempts(3)).await;
    let message = feed.send("orders", "k").await;
    for attempt in 1..=3 {
        let delivery = subscriber.next().await;
        assert_delivery(&delivery, &message, attempt);
        let disposition =
            subscriber.retry(&delivery, Duration::from_millis(10), &format!("failure {attempt}")).await;
        let expected = if attempt < 3 { Disposition::Retrying } else { Disposition::DeadLettered };
        assert_eq!(disposition, expected, "the retry of attempt {attempt}");
    }
    let marker = feed.marker("orders").await;
    subscriber.assert_nothing_before(&marker).await;
    let letters = super::dead_letters(&bus, DeadLetterFilter::all().consumer("doomed")).await;
    assert_eq!(letters.len(), 1, "expected one dead letter, got {letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.consumer, "doomed");
    assert_eq!(letter.message, message, "the dead letter lost the original message");
    assert_eq!(letter.attempts, 3);
    assert!(letter.error.contains("failure 3"), "the dead letter's error is {:?}", letter.error);
    assert_eq!(letter.parked, 0);
}

/// Deliveries that time out count as attempts: a message never acknowledged becomes a
/// dead letter once its attempts are used up.
pub async fn a_message_never_acked_becomes_a_dead_letter_when_its_attempts_run_out(bus: Arc<dyn Bus>) {
    let mut feed = Feed::new(&bus);
    let consumer = spec("silent", &["orders"]).ack_wait(ACK_WAIT).max_attempts(2);
    let mut subscriber = Subscriber::attach(&bus, consumer).await;
    let message = feed.send("orders", "k").await;
    assert_delivery(&subscriber.next().await, &message, 1);
    assert_delivery(&subscriber.next().await, &message, 2);
    tokio::time::sleep(ACK_WAIT + ACK_WAIT / 2).await;
    let marker = feed.marker("orders").await;
    subscriber.assert_nothing_before(&marker).await;
    let letters = super::dead_letters(&bus, DeadLetterFilter::all().consumer("silent")).await;
    assert_eq!(letters.len(), 1, "expected one dead letter, got {letters:?}");
    assert_eq!(letters[0].message, message);
    assert_eq!(letters[0].attempts, 2);
    assert!(!letters[0].error.is_empty(), "a dead letter says why it is one");
}

/// A rejected message is a dead letter at once, with its error, whatever attempts remain.
pub async fn a_rejected_message_becomes_a_dead_letter_at_once(bus: Arc<dyn Bus>) {
    let mut feed = Feed::new(&bus);
    let mut subscriber = Subscriber::attach(&bus, spec("strict", &["orders"]).max_attempts(5)).await;
    let message = feed.send("orders", "k").await;
    let delivery = subscriber.next().await;
    subscriber.reject(&delivery, "cannot parse the payload").await;
    let letters = super::dead_letters(&bus, DeadLetterFilter::all().consumer("strict")).await;
    assert_eq!(letters.len(), 1, "expected one dead letter, got {letters:?}");
    assert_eq!(letters[0].message, message);
    assert_eq!(letters[0].attempts, 1);
    assert_eq!(letters[0].error, "cannot parse the payload");
    let marker = feed.marker("orders").await;
    subscriber.assert_nothing_before(&marker).await;
}

/// A retry of a delivery that is no longer pending (here: already acknowledged) schedules
/// nothing and says so, instead of answering that it is retrying.
pub async fn retrying_a_delivery_that_is_no_longer_pending_answers_not_pending(bus: Arc<dyn Bus>) {
    let mut feed = Feed::new(&bus);
    let mut subscriber = Subscriber::attach(&bus, spec("late", &["orders"])).await;
    let message = feed.send("orders", "k").await;
    let delivery = subscriber.next().await;
    assert_delivery(&delivery, &message, 1);
    subscriber.ack(&[&delivery]).await;
    let disposition = subscriber.retry(&delivery, Duration::from_millis(10), "too late").await;
    assert_eq!(disposition, Disposition::NotPending, "a settled delivery was reported as retrying");
    let marker = feed.marker("orders").await;
    subscriber.assert_nothing_before(&marker).await;
    let letters = super::dead_letters(&bus, DeadLetterFilter::all().consumer("late")).await;
    assert!(letters.is_empty(), "a settled delivery became a dead letter: {letters:?}");
}

/// A message whose ack waits run out `max_attempts` times is a dead letter that the bus
/// made on its own: the attachment counts it, so the consumer's metrics show it.
pub async fn a_message_exhausted_by_ack_timeouts_is_counted_as_a_dead_letter(bus: Arc<dyn Bus>) {
    let mut feed = Feed::new(&bus);
    let consumer = spec("counted", &["orders"]).ack_wait(ACK_WAIT).max_attempts(2);
    let mut subscriber = Subscriber::attach(&bus, consumer).await;
    let exhausted = prometheus_client::metrics::counter::Counter::<u64>::default();
    subscriber.subscription.count_exhausted(exhausted.clone());
    let message = feed.send("orders", "k").await;
    assert_delivery(&subscriber.next().await, &message, 1);
    assert_delivery(&subscriber.next().await, &message, 2);
    tokio::time::sleep(ACK_WAIT + ACK_WAIT / 2).await;
    let marker = feed.marker("orders").await;
    subscriber.assert_nothing_before(&marker).await;
    let letters = super::dead_letters(&bus, DeadLetterFilter::all().consumer("counted")).await;
    assert_eq!(letters.len(), 1, "expected one dead letter, got {letters:?}");
    assert_eq!(exhausted.get(), 1, "the dead letter made by ack timeouts was not counted");
}

/// A released delivery comes back at once as the same attempt: releasing (the consumer's
/// own store failed) uses no attempt, while a retry still does, up to the dead letter.
pub async fn a_released_delivery_comes_back_without_using_an_attempt(bus: Arc<dyn Bus>) {
    let mut feed = Feed::new(&bus);
    let mut subscriber = Subscriber::attach(&bus, spec("patient", &["orders"]).max_attempts(2)).await;
    let message = feed.send("orders", "k").await;
    let mut delivery = subscriber.next().await;
    assert_delivery(&delivery, &message, 1);
    for _ in 0..3 {
        subscriber.release(&[&delivery]).await;
        delivery = subscriber.next().await;
        assert_delivery(&delivery, &message, 1);
    }
    let disposition = subscriber.retry(&delivery, Duration::from_millis(10), "the handler failed").await;
    assert_eq!(disposition, Disposition::Retrying, "the first retry");
    let failed = subscriber.next().await;
    assert_delivery(&failed, &message, 2);
    subscriber.release(&[&failed]).await;
    let last = subscriber.next().await;
    assert_delivery(&last, &message, 2);
    let disposition = subscriber.retry(&last, Duration::from_millis(10), "the handler failed").await;
    assert_eq!(disposition, Disposition::DeadLettered, "releases must not count, retries must");
    let letters = super::dead_letters(&bus, DeadLetterFilter::all().consumer("patient")).await;
    assert_eq!(letters.len(), 1, "expected one dead letter, got {letters:?}");
    assert_eq!(letters[0].attempts, 2);
    let marker = feed.marker("orders").await;
    subscriber.assert_nothing_before(&marker).await;
}

/// A per-key consumer's released message is still its key's head: the later message of
/// the key waits until the released one comes back and is acknowledged.
pub async fn a_per_key_consumer_keeps_a_released_message_ahead_of_its_key(bus: Arc<dyn Bus>) {
    let mut feed = Feed::new(&bus);
    let consumer = spec("ordered-release", &["orders"]).ordering(Ordering::PerKey);
    let mut subscriber = Subscriber::attach(&bus, consumer).await;
    let (first, second) = (feed.send("orders", "k").await, feed.send("orders", "k").await);
    let delivered = subscriber.next().await;
    assert_delivery(&delivered, &first, 1);
    subscriber.release(&[&delivered]).await;
    let again = subscriber.next().await;
    assert_delivery(&again, &first, 1);
    subscriber.ack(&[&again]).await;
    let next = subscriber.next().await;
    assert_delivery(&next, &second, 1);
    subscriber.ack(&[&next]).await;
    let marker = feed.marker("orders").await;
    subscriber.assert_nothing_before(&marker).await;
}

/// A fetch cancelled while it takes deliveries (polled once, then dropped, as a wrapper
/// racing the bus against a timer does) loses none of them: the same attachment gets each
/// message it may have taken again, even when its later fetches and acks come first, and a
/// per-key consumer's message parked meanwhile behind an outstanding one follows its ack.
pub async fn a_fetch_cancelled_while_it_takes_loses_no_message(bus: Arc<dyn Bus>) {
    let mut feed = Feed::new(&bus);
    let spec = spec("cancelled", &["orders"]).ack_wait(ACK_WAIT).ordering(Ordering::PerKey);
    let mut subscriber = Subscriber::attach(&bus, spec).await;
    let first = feed.send("orders", "k-1").await;
    let outstanding = subscriber.next().await;
    assert_delivery(&outstanding, &first, 1);
    let behind = feed.send("orders", "k-1").await;
    let mut missing: Vec<String> = vec![feed.send("orders", "k-2").await.id];
    subscriber.cancel_a_fetch(10).await;
    missing.push(feed.send("orders", "k-3").await.id);
    subscriber.ack(&[&outstanding]).await;
    missing.push(behind.id.clone());
    while !missing.is_empty() {
        let delivered = subscriber.fetch(10).await;
        missing.retain(|id| !delivered.iter().any(|d| &d.message.id == id));
        subscriber.ack(&delivered.iter().collect::<Vec<_>>()).await;
    }
    let marker = feed.marker("orders").await;
    subscriber.assert_nothing_before(&marker).await;
}

/// A delivery handed out late, after its ack wait ran out and the message went out again,
/// is still the message's: acknowledging the first delivery and then the second settles
/// the message once, and it is not delivered a third time.
pub async fn a_late_ack_of_a_redelivered_messages_first_delivery_settles_it(bus: Arc<dyn Bus>) {
    let mut feed = Feed::new(&bus);
    let mut subscriber = Subscriber::attach(&bus, spec("late", &["orders"]).ack_wait(ACK_WAIT)).await;
    let message = feed.send("orders", "k").await;
    let first = subscriber.next().await;
    let second = subscriber.next().await;
    assert_delivery(&first, &message, 1);
    assert_delivery(&second, &message, 2);
    subscriber.ack(&[&first]).await;
    subscriber.ack(&[&second]).await;
    tokio::time::sleep(ACK_WAIT * 2).await;
    let marker = feed.marker("orders").await;
    subscriber.assert_nothing_before(&marker).await;
}
