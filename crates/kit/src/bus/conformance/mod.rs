//! The bus conformance suite: what every [`Bus`] implementation must do, written once
//! against the trait and run against each backend.
//!
//! Each behaviour is one `pub async fn` taking a fresh, empty bus and panicking with a
//! message that names what went wrong. A backend runs the whole suite with the
//! [`bus_conformance_tests!`](crate::bus_conformance_tests) macro, which generates one
//! `#[tokio::test]` per behaviour, named after it:
//!
//! ```ignore
//! // crates/kit/tests/bus_embedded.rs: the embedded bus, under paused time.
//! kit::bus_conformance_tests!(paused_time: async {
//!     kit::bus::connect("embedded::memory:").await.expect("an in-memory bus opens")
//! });
//!
//! // A networked backend runs in real time (a paused clock would jump while it waits on
//! // the network), on a fresh server or namespace per test; crates/kit/tests/bus_nats.rs
//! // gives `None` when no nats-server is installed, which skips (loudly; fails in CI).
//! kit::bus_conformance_tests!(real_time_or_skip: served_bus());
//! ```
//!
//! The expression is evaluated once per test and must give an `Arc<dyn Bus>`; the calling
//! crate needs `tokio` with the `macros` and `rt` features (and `test-util` for
//! `paused_time`). Put the macro in a module of its own if its test names could clash.
//!
//! # Time
//!
//! Waits come from `tokio::time` only, and the spans are short ([`ACK_WAIT`],
//! [`RETRY_DELAY`]), so the suite runs in a few seconds per test in real time and at once
//! under paused time. It holds under paused time even though a paused clock jumps to the
//! next timer whenever the runtime waits on something outside it (such as a database
//! thread): no test arms a tokio timer while it waits on the bus, except the bus's own.
//! That is why the suite never wraps a bus call in `tokio::time::timeout`:
//! - "not before" is checked by measuring: the test waits for the delivery and asserts
//!   how much time passed, and
//! - "not at all" is checked with a marker: the test publishes a fresh message and
//!   asserts it is the only delivery (a backend delivers what is due no later than a
//!   newer message).
//!
//! A test that hangs is caught by a watchdog on a thread of its own, in real time
//! ([`PATIENCE`]).

mod dead_letters;
mod delivery;
mod redelivery;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use tokio::time::Instant;

pub use dead_letters::*;
pub use delivery::*;
pub use redelivery::*;

use super::{Bus, ConsumerSpec, DeadLetter, DeadLetterFilter, Delivery, Disposition, Message, Subscription};

/// The ack wait of the tests about ack timeouts.
pub const ACK_WAIT: Duration = Duration::from_secs(2);

/// The ack wait of every other test: long enough that no step of theirs lets a
/// delivery expire, also when a paused clock jumps.
pub const PATIENT_ACK_WAIT: Duration = Duration::from_secs(120);

/// The delay of the tests about delayed retries.
pub const RETRY_DELAY: Duration = Duration::from_secs(1);

/// How soon a waiting fetch must return once a message is published.
pub const PROMPT: Duration = Duration::from_secs(1);

/// How many messages of another stream the backlog test publishes.
pub const BACKLOG: usize = 20_000;

/// Real time after which a bus call is taken to hang and the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Leeway for a backend that rounds its deadlines to milliseconds.
const CLOCK_SLACK: Duration = Duration::from_millis(20);

/// Awaits `work`, failing the test when it has not finished after [`PATIENCE`].
///
/// The watchdog is a thread sleeping in real time, not a tokio timer: under a paused
/// clock a timer would be what the clock jumps to while the bus waits on its database.
async fn within<F: Future>(what: &str, work: F) -> F::Output {
    let (expire, expired) = tokio::sync::oneshot::channel::<()>();
    let (_finished, finish) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if finish.recv_timeout(PATIENCE) == Err(RecvTimeoutError::Timeout) {
            let _ = expire.send(());
        }
    });
    tokio::select! {
        biased;
        output = work => output,
        Ok(()) = expired => panic!("{what} did not finish within {PATIENCE:?} of real time"),
    }
}

/// A consumer spec with the patient ack wait.
fn spec(name: &str, streams: &[&str]) -> ConsumerSpec {
    ConsumerSpec::new(name, streams).ack_wait(PATIENT_ACK_WAIT)
}

/// Publishes test messages with fresh ids and each stream's next seq.
struct Feed {
    bus: Arc<dyn Bus>,
    seqs: HashMap<String, u64>,
}

impl Feed {
    fn new(bus: &Arc<dyn Bus>) -> Self {
        Self { bus: bus.clone(), seqs: HashMap::new() }
    }

    /// A new message, not yet published; its body is not UTF-8, as a bus moves bytes.
    fn message(&mut self, stream: &str, key: &str) -> Message {
        let seq = self.seqs.entry(stream.to_owned()).or_default();
        *seq += 1;
        let mut body = format!("{stream} #{seq} of {key}").into_bytes();
        body.extend_from_slice(&[0x00, 0xff]);
        Message {
            id: uuid::Uuid::now_v7().to_string(),
            stream: stream.to_owned(),
            seq: *seq,
            key: key.to_owned(),
            body,
        }
    }

    async fn publish(&self, batch: &[Message]) {
        within("publish", self.bus.publish(batch))
            .await
            .unwrap_or_else(|e| panic!("publishing {} messages failed: {e}", batch.len()));
    }

    /// Publishes one new message and returns it.
    async fn send(&mut self, stream: &str, key: &str) -> Message {
        let message = self.message(stream, key);
        self.publish(std::slice::from_ref(&message)).await;
        message
    }

    /// Publishes a marker: a message that every consumer of `stream` must receive next,
    /// with nothing before it that the test does not expect.
    async fn marker(&mut self, stream: &str) -> Message {
        self.send(stream, "marker").await
    }
}

/// One attachment of a consumer under test; its calls fail the test with a clear message.
struct Subscriber {
    name: String,
    subscription: Box<dyn Subscription>,
}

impl Subscriber {
    async fn attach(bus: &Arc<dyn Bus>, spec: ConsumerSpec) -> Self {
        let subscription = within("subscribe", bus.subscribe(&spec))
            .await
            .unwrap_or_else(|e| panic!("subscribing {} failed: {e}", spec.name));
        Self { name: spec.name, subscription }
    }

    /// Waits for the next due deliveries, up to `max`.
    async fn fetch(&mut self, max: usize) -> Vec<Delivery> {
        let what = format!("a fetch of {}", self.name);
        let deliveries = within(&what, self.subscription.fetch(max))
            .await
            .unwrap_or_else(|e| panic!("{what} failed: {e}"));
        assert!(!deliveries.is_empty(), "{what} returned no delivery");
        assert!(deliveries.len() <= max, "{what} returned {} deliveries, more than {max}", deliveries.len());
        deliveries
    }

    /// Polls a fetch once, so it may start taking deliveries, then drops it unanswered.
    async fn cancel_a_fetch(&mut self, max: usize) {
        let fetch = self.subscription.fetch(max);
        tokio::select! {
            biased;
            fetched = fetch => drop(fetched),
            () = std::future::ready(()) => {}
        }
    }

    /// Fetches until exactly `count` deliveries have arrived.
    async fn collect(&mut self, count: usize) -> Vec<Delivery> {
        let mut collected = Vec::with_capacity(count);
        while collected.len() < count {
            let more = self.fetch(count - collected.len()).await;
            collected.extend(more);
        }
        collected
    }

    /// Fetches the next single delivery.
    async fn next(&mut self) -> Delivery {
        self.collect(1).await.remove(0)
    }

    async fn ack(&mut self, deliveries: &[&Delivery]) {
        let tags: Vec<_> = deliveries.iter().map(|d| d.tag).collect();
        within("ack", self.subscription.ack(&tags))
            .await
            .unwrap_or_else(|e| panic!("{} failed to ack {:?}: {e}", self.name, describe(deliveries)));
    }

    async fn retry(&mut self, delivery: &Delivery, delay: Duration, error: &str) -> Disposition {
        within("retry", self.subscription.retry(delivery.tag, delay, error))
            .await
            .unwrap_or_else(|e| panic!("{} failed to retry {:?}: {e}", self.name, describe(&[delivery])))
    }

    async fn release(&mut self, deliveries: &[&Delivery]) {
        let tags: Vec<_> = deliveries.iter().map(|d| d.tag).collect();
        within("release", self.subscription.release(&tags))
            .await
            .unwrap_or_else(|e| panic!("{} failed to release {:?}: {e}", self.name, describe(deliveries)));
    }

    async fn reject(&mut self, delivery: &Delivery, error: &str) {
        within("reject", self.subscription.reject(delivery.tag, error))
            .await
            .unwrap_or_else(|e| panic!("{} failed to reject {:?}: {e}", self.name, describe(&[delivery])))
    }

    /// Fetches until `marker` arrives and acks it, failing on anything delivered with it
    /// or before it.
    async fn assert_nothing_before(&mut self, marker: &Message) {
        let mut unexpected = Vec::new();
        loop {
            let deliveries = self.fetch(16).await;
            let (markers, others): (Vec<_>, Vec<_>) =
                deliveries.into_iter().partition(|d| d.message.id == marker.id);
            unexpected.extend(others);
            if let Some(found) = markers.first() {
                self.ack(&[found]).await;
                break;
            }
        }
        assert!(
            unexpected.is_empty(),
            "{} expected nothing but the marker {}#{}, and got {:?}",
            self.name,
            marker.stream,
            marker.seq,
            describe(&unexpected.iter().collect::<Vec<_>>())
        );
    }
}

/// Short descriptions of deliveries for assertion messages.
fn describe(deliveries: &[&Delivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| {
            format!("{}#{} key {} attempt {}", d.message.stream, d.message.seq, d.message.key, d.attempt)
        })
        .collect()
}

/// Asserts that `delivery` is `expected` (byte for byte) at attempt `attempt`.
#[track_caller]
fn assert_delivery(delivery: &Delivery, expected: &Message, attempt: u32) {
    let got = (&delivery.message.stream, delivery.message.seq, &delivery.message.key, delivery.attempt);
    let wanted = (&expected.stream, expected.seq, &expected.key, attempt);
    assert_eq!(got, wanted, "expected {}#{} attempt {attempt}", expected.stream, expected.seq);
    assert_eq!(&delivery.message, expected, "the delivered message differs from the published one");
}

/// Asserts that `delivered` are exactly `published`, each once as attempt 1, and each
/// stream's in publish order (streams are independent logs: no order holds between them).
#[track_caller]
fn assert_each_stream_in_order(delivered: &[Delivery], published: &[Message]) {
    assert_eq!(
        delivered.len(),
        published.len(),
        "expected {} deliveries, got {:?}",
        published.len(),
        describe(&delivered.iter().collect::<Vec<_>>())
    );
    let mut streams: Vec<&str> = published.iter().map(|m| m.stream.as_str()).collect();
    streams.sort();
    streams.dedup();
    for stream in streams {
        let expected: Vec<_> = published.iter().filter(|m| m.stream == stream).collect();
        let got: Vec<_> = delivered.iter().filter(|d| d.message.stream == stream).collect();
        assert_eq!(
            got.iter().map(|d| d.message.seq).collect::<Vec<_>>(),
            expected.iter().map(|m| m.seq).collect::<Vec<_>>(),
            "{stream} was not delivered in publish order"
        );
        for (delivery, message) in got.iter().zip(expected) {
            assert_delivery(delivery, message, 1);
        }
    }
}

/// Asserts that at least `span` passed since `since`: a delivery did not come early.
#[track_caller]
fn assert_waited(since: Instant, span: Duration, what: &str) {
    let waited = since.elapsed();
    assert!(waited + CLOCK_SLACK >= span, "{what} came after {waited:?}, before {span:?} had passed");
}

async fn dead_letters(bus: &Arc<dyn Bus>, filter: DeadLetterFilter) -> Vec<DeadLetter> {
    within("dead_letters", bus.dead_letters(&filter))
        .await
        .unwrap_or_else(|e| panic!("listing dead letters {filter:?} failed: {e}"))
}

async fn replay(bus: &Arc<dyn Bus>, filter: DeadLetterFilter) -> usize {
    within("replay", bus.replay(&filter)).await.unwrap_or_else(|e| panic!("replaying {filter:?} failed: {e}"))
}

async fn discard(bus: &Arc<dyn Bus>, filter: DeadLetterFilter) -> usize {
    within("discard", bus.discard(&filter))
        .await
        .unwrap_or_else(|e| panic!("discarding {filter:?} failed: {e}"))
}

/// Generates one `#[tokio::test]` per conformance behaviour, each on a fresh bus from
/// the given expression (an `async` block giving an `Arc<dyn Bus>`).
///
/// `paused_time:` runs the tests with tokio's clock paused, for in-process backends;
/// `real_time:` runs them on the real clock, for networked ones; `real_time_or_skip:`
/// takes an expression giving an `Option<Arc<dyn Bus>>`, for a backend whose server may
/// be missing: `None` skips the test (the expression says so loudly, and fails in CI).
#[macro_export]
macro_rules! bus_conformance_tests {
    (paused_time: $bus:expr $(,)?) => {
        $crate::bus_conformance_tests!(@required [tokio::test(start_paused = true)] $bus);
    };
    (real_time: $bus:expr $(,)?) => {
        $crate::bus_conformance_tests!(@required [tokio::test] $bus);
    };
    (real_time_or_skip: $bus:expr $(,)?) => {
        $crate::bus_conformance_tests!(@optional [tokio::test] $bus);
    };
    (@required [$test:meta] $bus:expr) => {
        $crate::bus_conformance_tests!(@optional [$test] async {
            let bus: ::std::sync::Arc<dyn $crate::bus::Bus> = $bus.await;
            Some(bus)
        });
    };
    (@optional [$test:meta] $bus:expr) => {
        $crate::bus_conformance_tests!(@each [$test] $bus;
            each_stream_is_delivered_in_publish_order,
            a_message_published_twice_is_delivered_once,
            a_message_published_again_after_its_ack_is_not_delivered_again,
            a_consumer_receives_only_the_streams_it_subscribed_to,
            consumers_with_different_names_each_receive_every_message,
            a_consumer_attached_later_receives_the_messages_published_before,
            stream_head_reports_the_highest_published_seq,
            recent_answers_the_newest_messages_of_a_stream_newest_first,
            a_bus_that_never_pruned_retains_every_stream_from_seq_one,
            a_waiting_fetch_returns_as_soon_as_a_message_is_published,
            a_large_backlog_of_other_streams_does_not_hide_a_consumers_messages,
            an_acknowledged_message_is_not_delivered_again,
            redelivers_after_ack_timeout,
            a_message_left_unacked_by_a_dropped_subscription_goes_to_the_next,
            a_retried_message_comes_back_after_its_delay_and_not_before,
            a_message_retried_until_its_attempts_run_out_becomes_a_dead_letter,
            a_message_never_acked_becomes_a_dead_letter_when_its_attempts_run_out,
            a_rejected_message_becomes_a_dead_letter_at_once,
            retrying_a_delivery_that_is_no_longer_pending_answers_not_pending,
            a_message_exhausted_by_ack_timeouts_is_counted_as_a_dead_letter,
            a_released_delivery_comes_back_without_using_an_attempt,
            a_per_key_consumer_keeps_a_released_message_ahead_of_its_key,
            a_fetch_cancelled_while_it_takes_loses_no_message,
            a_late_ack_of_a_redelivered_messages_first_delivery_settles_it,
            dead_letters_are_listed_by_consumer_event_stream_and_key,
            replaying_a_dead_letter_by_event_id_delivers_it_again_as_attempt_one,
            replaying_by_stream_consumer_or_key_delivers_only_the_matching_dead_letters,
            replaying_all_dead_letters_delivers_each_again,
            discarded_dead_letters_are_gone_for_good,
            a_per_key_consumer_parks_a_keys_later_messages_while_one_is_retried,
            a_per_key_consumer_parks_a_key_behind_its_dead_letter_until_replayed,
            discarding_a_per_key_dead_letter_releases_the_messages_parked_behind_it,
            an_unordered_consumer_parks_nothing_behind_its_dead_letter,
        );
    };
    (@each [$test:meta] $bus:expr; $($name:ident),* $(,)?) => {
        $(
            #[$test]
            async fn $name() {
                let bus: ::std::option::Option<::std::sync::Arc<dyn $crate::bus::Bus>> = $bus.await;
                if let Some(bus) = bus {
                    $crate::bus::conformance::$name(bus).await;
                }
            }
        )*
    };
}
