//! The bus: durable append, named durable consumers, at-least-once delivery with ack,
//! redelivery after a timeout or a crash, delayed retry and dead letters.
//!
//! One trait with one semantics; implementations are chosen by URL scheme
//! (`embedded:PATH`, `nats://HOST:PORT`) and proven by the one conformance suite in
//! `conformance` (test support, behind the `test-support` feature). The bus moves opaque
//! messages: it never parses an envelope, so a malformed one still reaches its consumer
//! and goes to dead letters.
//!
//! Words: a delivery is *settled* when its subscription is told its outcome (ack, retry,
//! release or dead letter); a message of a per-key consumer that waits behind an earlier pending
//! one of its key is *parked*.

#[cfg(any(test, feature = "test-support"))]
pub mod conformance;
mod embedded;
pub mod nats;

use std::time::Duration;

use async_trait::async_trait;
use prometheus_client::metrics::counter::Counter;

use crate::envelope::Envelope;
use crate::store::StoreError;

pub use embedded::{EmbeddedBus, Retention, copy as embedded_copy};
pub use nats::NatsBus;

/// A message on the bus: an event's identity, position and serialized envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The event id, the dedup key of `publish`.
    pub id: String,
    pub stream: String,
    pub seq: u64,
    /// The ordering key: per-key consumers never see two messages of one key at once.
    pub key: String,
    pub body: Vec<u8>,
}

impl From<&Envelope> for Message {
    fn from(envelope: &Envelope) -> Self {
        Self {
            id: envelope.id.to_string(),
            stream: envelope.stream.to_string(),
            seq: envelope.seq,
            key: envelope.key.clone(),
            body: envelope.to_json(),
        }
    }
}

/// Whether a consumer needs the events of one key in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ordering {
    /// Events of one key are delivered one at a time, in publish order; while one is
    /// retried or dead, the later ones of its key are parked.
    PerKey,
    /// Events flow regardless of key: for version-gated replicas, where order is
    /// restored by the gate and a dead letter must not stop newer versions.
    Unordered,
}

/// A named durable consumer and how it wants to be served.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub name: String,
    pub streams: Vec<String>,
    pub ordering: Ordering,
    /// Deliveries before a message goes to dead letters (a timeout counts as one).
    pub max_attempts: u32,
    /// How long a delivery may stay unacknowledged before it is redelivered.
    pub ack_wait: Duration,
}

impl ConsumerSpec {
    pub fn new(name: impl Into<String>, streams: &[&str]) -> Self {
        Self {
            name: name.into(),
            streams: streams.iter().map(|s| s.to_string()).collect(),
            ordering: Ordering::Unordered,
            max_attempts: 3,
            ack_wait: Duration::from_secs(30),
        }
    }

    pub fn ordering(mut self, ordering: Ordering) -> Self {
        self.ordering = ordering;
        self
    }

    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }

    /// Refuses a consumer without a name or without streams.
    pub fn validate(&self) -> Result<(), BusError> {
        if self.name.is_empty() || self.streams.is_empty() {
            return Err(BusError::InvalidConsumer {
                name: self.name.clone(),
                reason: "a consumer needs a name and at least one stream".into(),
            });
        }
        Ok(())
    }
}

/// Identifies one delivery for `ack`, `retry` and `reject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeliveryTag(pub(crate) u64);

/// One delivery of a message to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub tag: DeliveryTag,
    /// 1 on first delivery; durable across restarts.
    pub attempt: u32,
    pub message: Message,
}

/// What became of a failed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// It will be delivered again after the delay.
    Retrying,
    /// Its attempts are used up (or it was rejected): it is a dead letter now.
    DeadLettered,
    /// The delivery was no longer pending with this attachment (already acknowledged, dead,
    /// or taken over by another attachment after its ack wait): nothing was scheduled.
    NotPending,
}

/// Selects dead letters; empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterFilter {
    pub consumer: Option<String>,
    pub event_id: Option<String>,
    pub stream: Option<String>,
    pub key: Option<String>,
}

impl DeadLetterFilter {
    pub fn all() -> Self {
        Self::default()
    }

    pub fn consumer(mut self, consumer: impl Into<String>) -> Self {
        self.consumer = Some(consumer.into());
        self
    }

    pub fn event(mut self, event_id: impl Into<String>) -> Self {
        self.event_id = Some(event_id.into());
        self
    }

    pub fn stream(mut self, stream: impl Into<String>) -> Self {
        self.stream = Some(stream.into());
        self
    }

    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }
}

/// A message a consumer gave up on, with why and how often it tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub consumer: String,
    pub message: Message,
    pub attempts: u32,
    pub error: String,
    pub failed_at_ms: u64,
    /// Later messages of the same key parked behind this one (per-key consumers).
    pub parked: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("the bus is unreachable: {0}")]
    Unavailable(String),
    #[error("bus storage failed: {0}")]
    Storage(#[from] StoreError),
    #[error("invalid consumer {name:?}: {reason}")]
    InvalidConsumer { name: String, reason: String },
    #[error(
        "unsupported bus url {0:?}: expected embedded:PATH[?max_age=SECONDS&max_mb=MIB] or nats://HOST:PORT"
    )]
    UnsupportedUrl(String),
}

impl BusError {
    pub fn is_retryable(&self) -> bool {
        match self {
            BusError::Unavailable(_) => true,
            BusError::Storage(e) => e.is_retryable(),
            BusError::InvalidConsumer { .. } | BusError::UnsupportedUrl(_) => false,
        }
    }
}

/// A durable message bus shared by every service.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Appends messages durably; a message whose id is already on the bus is skipped.
    async fn publish(&self, batch: &[Message]) -> Result<(), BusError>;

    /// Attaches to (creating if needed) the named durable consumer. Deliveries a previous
    /// attachment left unacknowledged are delivered again, at the latest when their ack
    /// wait runs out.
    async fn subscribe(&self, spec: &ConsumerSpec) -> Result<Box<dyn Subscription>, BusError>;

    /// The highest seq published on `stream` (0 when none).
    async fn stream_head(&self, stream: &str) -> Result<u64, BusError>;

    /// The lowest seq of `stream` the bus still keeps (1 when it never pruned): every
    /// consumer has settled everything below it, and a consumer created now starts there.
    async fn retained_from(&self, stream: &str) -> Result<u64, BusError>;

    /// The newest messages of `stream` the bus still keeps, at most `limit`, newest first:
    /// what an operator looks at to see events flow (the dashboard's event stream).
    async fn recent(&self, stream: &str, limit: usize) -> Result<Vec<Message>, BusError>;

    async fn dead_letters(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>, BusError>;

    /// Delivers the matching dead letters again with fresh attempts; returns how many.
    async fn replay(&self, filter: &DeadLetterFilter) -> Result<usize, BusError>;

    /// Drops the matching dead letters, releasing what was parked behind them.
    async fn discard(&self, filter: &DeadLetterFilter) -> Result<usize, BusError>;
}

/// One attachment of a durable consumer.
#[async_trait]
pub trait Subscription: Send {
    /// Waits until at least one delivery is due and returns up to `max` of them.
    ///
    /// A fetch cancelled while it talks to the bus may have taken deliveries it never
    /// returns; like any unacknowledged delivery they come back after the ack wait.
    async fn fetch(&mut self, max: usize) -> Result<Vec<Delivery>, BusError>;

    async fn ack(&mut self, tags: &[DeliveryTag]) -> Result<(), BusError>;

    /// Schedules another delivery after `delay`, or dead-letters the message when its
    /// attempts are used up.
    async fn retry(
        &mut self,
        tag: DeliveryTag,
        delay: Duration,
        error: &str,
    ) -> Result<Disposition, BusError>;

    /// Dead-letters the message at once (it can never succeed as it is).
    async fn reject(&mut self, tag: DeliveryTag, error: &str) -> Result<(), BusError>;

    /// Counts into `counter` every message this attachment dead-letters on its own, without
    /// a `retry` or `reject` from the consumer: one whose ack waits ran out `max_attempts`
    /// times.
    fn count_exhausted(&mut self, counter: Counter);

    /// Says the deliveries are still being handled, so their ack wait starts again: a live
    /// consumer keeps a slow batch from being redelivered while a short ack wait still
    /// brings back, soon, what a crashed one held. The embedded bus has one attachment per
    /// consumer in one process and ignores it.
    async fn in_progress(&mut self, _tags: &[DeliveryTag]) -> Result<(), BusError> {
        Ok(())
    }

    /// Gives deliveries back without using an attempt: each is delivered again, as the same
    /// attempt, for failures that are not the message's fault (the consumer's own store is
    /// down). A per-key consumer's later messages of the key stay parked behind it.
    async fn release(&mut self, tags: &[DeliveryTag]) -> Result<(), BusError>;
}

/// Opens the bus named by `url`.
pub async fn connect(url: &str) -> Result<std::sync::Arc<dyn Bus>, BusError> {
    if let Some(rest) = url.strip_prefix("embedded:") {
        let (path, retention) = embedded_url(url, rest)?;
        Ok(std::sync::Arc::new(EmbeddedBus::open_with(path, retention).await?))
    } else if url.starts_with("nats://") {
        Ok(std::sync::Arc::new(NatsBus::connect(url).await?))
    } else {
        Err(BusError::UnsupportedUrl(url.to_owned()))
    }
}

/// Splits `embedded:PATH[?max_age=SECONDS&max_mb=MIB]` into the path and its retention.
fn embedded_url<'a>(url: &str, rest: &'a str) -> Result<(&'a str, Retention), BusError> {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut retention = Retention::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let number = pair.split_once('=').and_then(|(name, value)| Some((name, value.parse::<u64>().ok()?)));
        match number {
            Some(("max_age", seconds)) => retention.max_age = Duration::from_secs(seconds),
            Some(("max_mb", mib)) => retention.max_bytes = mib << 20,
            _ => {
                return Err(BusError::UnsupportedUrl(format!("{url} (unknown or invalid setting {pair:?})")));
            }
        }
    }
    Ok((path, retention))
}
