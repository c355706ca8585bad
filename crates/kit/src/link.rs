//! The link layer: every interaction between a service and the bus (and, with the shop,
//! every call between services) passes a named [`Link`] that can be cut, slowed or made
//! lossy, so faults can be injected on purpose.
//!
//! A healthy link costs one uncontended lock per call. [`LinkedBus`] puts a link in front
//! of any [`Bus`]; a cut link makes the bus look unreachable to that service only.

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
}

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
        *self.lock() = Faults { loss: faults.loss.clamp(0.0, 1.0), ..faults };
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
        Ok(Box::new(LinkedSubscription { inner, link: self.link.clone() }))
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
}

#[async_trait]
impl Subscription for LinkedSubscription {
    async fn fetch(&mut self, max: usize) -> Result<Vec<Delivery>, BusError> {
        let deliveries = self.inner.fetch(max).await?;
        // Deliveries lost on the way in stay unacknowledged and come back after ack_wait.
        self.link.pass(Direction::In).await?;
        Ok(deliveries)
    }

    async fn ack(&mut self, tags: &[DeliveryTag]) -> Result<(), BusError> {
        self.link.pass(Direction::Out).await?;
        self.inner.ack(tags).await
    }

    async fn retry(
        &mut self,
        tag: DeliveryTag,
        delay: Duration,
        error: &str,
    ) -> Result<Disposition, BusError> {
        self.link.pass(Direction::Out).await?;
        self.inner.retry(tag, delay, error).await
    }

    async fn reject(&mut self, tag: DeliveryTag, error: &str) -> Result<(), BusError> {
        self.link.pass(Direction::Out).await?;
        self.inner.reject(tag, error).await
    }

    fn count_exhausted(&mut self, counter: prometheus_client::metrics::counter::Counter) {
        self.inner.count_exhausted(counter);
    }

    async fn release(&mut self, tags: &[DeliveryTag]) -> Result<(), BusError> {
        self.link.pass(Direction::Out).await?;
        self.inner.release(tags).await
    }
}
