//! The link layer: every interaction between a service and the bus (and, with the shop,
//! every call between services) passes a named [`Link`] that can be cut, slowed or made
//! lossy, so faults can be injected on purpose.
//!
//! A healthy link costs one uncontended lock per call. [`LinkedBus`] puts a link in front
//! of any [`Bus`]; a cut link makes the bus look unreachable to that service only. A bus
//! link also takes faults inside the bus, which a network fault cannot make: deliveries
//! handed to the consumer twice, acks reported done but never forwarded (the bus
//! redelivers after its ack wait), and deliveries held back behind later ones.

mod held;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;

use crate::bus::{
    Bus, BusError, ConsumerSpec, DeadLetter, DeadLetterFilter, Delivery, DeliveryTag, Disposition, Message,
    Subscription,
};

/// The faults currently set on a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Faults {
    /// Traffic from the link's owner to its peer fails.
    pub cut_out: bool,
    /// Traffic from the peer back to the owner fails.
    pub cut_in: bool,
    /// Added to every call.
    pub latency: Duration,
    /// The fraction of calls that fail, 0.0 to 1.0.
    pub loss: f64,
    /// On a bus link: the fraction of deliveries handed to the consumer a second time,
    /// after the first was settled.
    pub duplicate: f64,
    /// On a bus link: the fraction of acks reported done to the consumer but never
    /// forwarded, so the bus delivers the message again after its ack wait.
    pub lost_ack: f64,
    /// On a bus link: the fraction of deliveries held back (given back to the bus to come
    /// again after [`DELAY_HOLD`]) and handed out after the deliveries fetched meanwhile.
    pub delay: f64,
}

impl Faults {
    /// Whether any fault inside the bus is set.
    fn inside_the_bus(&self) -> bool {
        self.duplicate > 0.0 || self.lost_ack > 0.0 || self.delay > 0.0
    }
}

/// How long a delayed delivery is held back: well within the ack wait of the shop's
/// consumers.
pub const DELAY_HOLD: Duration = Duration::from_millis(1500);

/// Which way a call travels over a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the link's owner to its peer (a publish, a request).
    Out,
    /// From the peer to the owner (a fetch, a response).
    In,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinkError {
    #[error("link {0} is cut")]
    Cut(String),
    #[error("link {0} dropped the call")]
    Lost(String),
}

/// A named, shareable connection between a service and a peer.
#[derive(Debug, Clone)]
pub struct Link {
    name: Arc<str>,
    faults: Arc<Mutex<Faults>>,
}

impl Link {
    /// A healthy link, e.g. `order->bus`.
    pub fn new(name: &str) -> Self {
        Self { name: name.into(), faults: Arc::default() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn faults(&self) -> Faults {
        *self.lock()
    }

    pub fn set(&self, faults: Faults) {
        let fraction = |f: f64| f.clamp(0.0, 1.0);
        *self.lock() = Faults {
            loss: fraction(faults.loss),
            duplicate: fraction(faults.duplicate),
            lost_ack: fraction(faults.lost_ack),
            delay: fraction(faults.delay),
            ..faults
        };
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.set(Faults::default());
    }

    /// Lets one call through in `direction`, after the link's latency, or fails it.
    pub async fn pass(&self, direction: Direction) -> Result<(), LinkError> {
        let faults = self.faults();
        if faults.latency > Duration::ZERO {
            tokio::time::sleep(faults.latency).await;
        }
        let cut = match direction {
            Direction::Out => faults.cut_out,
            Direction::In => faults.cut_in,
        };
        if cut {
            return Err(LinkError::Cut(self.name.to_string()));
        }
        if faults.loss > 0.0 && rand::rng().random_bool(faults.loss) {
            return Err(LinkError::Lost(self.name.to_string()));
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl From<LinkError> for BusError {
    fn from(e: LinkError) -> Self {
        BusError::Unavailable(e.to_string())
    }
}

/// A bus seen through a link: publishing and settling travel out, fetching travels in.
pub struct LinkedBus {
    inner: Arc<dyn Bus>,
    link: Link,
}

impl LinkedBus {
    pub fn new(inner: Arc<dyn Bus>, link: Link) -> Self {
        Self { inner, link }
    }
}

#[async_trait]
impl Bus for LinkedBus {
    async fn publish(&self, batch: &[Message]) -> Result<(), BusError> {
        self.link.pass(Direction::Out).await?;
        self.inner.publish(batch).await
    }

    async fn subscribe(&self, spec: &ConsumerSpec) -> Result<Box<dyn Subscription>, BusError> {
        self.link.pass(Direction::Out).await?;
        let inner = self.inner.subscribe(spec).await?;
        Ok(Box::new(LinkedSubscription {
            inner,
            link: self.link.clone(),
            copies: held::Copies::default(),
            max_attempts: spec.max_attempts,
        }))
    }

    async fn stream_head(&self, stream: &str) -> Result<u64, BusError> {
        self.link.pass(Direction::In).await?;
        self.inner.stream_head(stream).await
    }

    async fn retained_from(&self, stream: &str) -> Result<u64, BusError> {
        self.link.pass(Direction::In).await?;
        self.inner.retained_from(stream).await
    }

    async fn recent(&self, stream: &str, limit: usize) -> Result<Vec<Message>, BusError> {
        self.link.pass(Direction::In).await?;
        self.inner.recent(stream, limit).await
    }

    async fn dead_letters(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>, BusError> {
        self.link.pass(Direction::In).await?;
        self.inner.dead_letters(filter).await
    }

    async fn replay(&self, filter: &DeadLetterFilter) -> Result<usize, BusError> {
        self.link.pass(Direction::Out).await?;
        self.inner.replay(filter).await
    }

    async fn discard(&self, filter: &DeadLetterFilter) -> Result<usize, BusError> {
        self.link.pass(Direction::Out).await?;
        self.inner.discard(filter).await
    }
}

struct LinkedSubscription {
    inner: Box<dyn Subscription>,
    link: Link,
    copies: held::Copies,
    max_attempts: u32,
}

impl LinkedSubscription {
    /// Holds back a `delay` fraction of `fetched`: each is given back to the bus as a retry
    /// after [`DELAY_HOLD`], so the bus itself keeps it (durably, within its own ordering:
    /// a per-key consumer's later messages of the key wait behind it) and deliveries fetched
    /// meanwhile overtake it. Only a delivery with two attempts left is held back, so a
    /// delay never turns a message into a dead letter. Queues a copy of a `duplicate`
    /// fraction of what is handed out. Answers what goes to the consumer now.
    async fn faulted(&mut self, fetched: Vec<Delivery>, faults: Faults) -> Result<Vec<Delivery>, BusError> {
        let mut out = Vec::with_capacity(fetched.len());
        for delivery in fetched {
            let delay = faults.delay > 0.0
                && delivery.attempt + 1 < self.max_attempts
                && rand::rng().random_bool(faults.delay);
            if delay {
                self.inner.retry(delivery.tag, DELAY_HOLD, "held back by a delay fault on the link").await?;
                continue;
            }
            if faults.duplicate > 0.0 && rand::rng().random_bool(faults.duplicate) {
                self.copies.queue(&delivery);
            }
            out.push(delivery);
        }
        Ok(out)
    }
}

#[async_trait]
impl Subscription for LinkedSubscription {
    async fn fetch(&mut self, max: usize) -> Result<Vec<Delivery>, BusError> {
        loop {
            let copies = self.copies.due(max.max(1));
            if !copies.is_empty() {
                return Ok(copies);
            }
            let fetched = self.inner.fetch(max).await?;
            // Deliveries lost on the way in stay unacknowledged and come back after ack_wait.
            self.link.pass(Direction::In).await?;
            let faults = self.link.faults();
            if !faults.inside_the_bus() {
                return Ok(fetched);
            }
            let out = self.faulted(fetched, faults).await?;
            if !out.is_empty() {
                return Ok(out);
            }
        }
    }

    async fn ack(&mut self, tags: &[DeliveryTag]) -> Result<(), BusError> {
        self.link.pass(Direction::Out).await?;
        let mut tags = self.copies.of_bus(tags);
        let lost_ack = self.link.faults().lost_ack;
        if lost_ack > 0.0 {
            let mut rng = rand::rng();
            tags.retain(|_| !rng.random_bool(lost_ack));
        }
        if tags.is_empty() {
            return Ok(());
        }
        self.inner.ack(&tags).await
    }

    async fn retry(
        &mut self,
        tag: DeliveryTag,
        delay: Duration,
        error: &str,
    ) -> Result<Disposition, BusError> {
        self.link.pass(Direction::Out).await?;
        if self.copies.settle(tag) {
            // The bus settles the message by its own delivery; a copy schedules nothing.
            return Ok(Disposition::NotPending);
        }
        self.inner.retry(tag, delay, error).await
    }

    async fn reject(&mut self, tag: DeliveryTag, error: &str) -> Result<(), BusError> {
        self.link.pass(Direction::Out).await?;
        if self.copies.settle(tag) {
            return Ok(());
        }
        self.inner.reject(tag, error).await
    }

    fn count_exhausted(&mut self, counter: prometheus_client::metrics::counter::Counter) {
        self.inner.count_exhausted(counter);
    }

    async fn in_progress(&mut self, tags: &[DeliveryTag]) -> Result<(), BusError> {
        self.link.pass(Direction::Out).await?;
        let tags = self.copies.bus_tags(tags);
        self.inner.in_progress(&tags).await
    }

    async fn release(&mut self, tags: &[DeliveryTag]) -> Result<(), BusError> {
        self.link.pass(Direction::Out).await?;
        let tags = self.copies.of_bus(tags);
        if tags.is_empty() {
            return Ok(());
        }
        self.inner.release(&tags).await
    }
}

#[cfg(test)]
mod tests;
