//! One attachment of a durable consumer: pulling, parking per key, and settling
//! deliveries with ack, nak-with-delay and term.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer, stream};
use async_trait::async_trait;
use futures_util::TryStreamExt;
use tracing::{debug, warn};

use super::dead_letters::Record;
use super::holds::Admission;
use super::streams::{self, PULL_EXPIRES};
use super::{NatsBus, REQUEST_TIMEOUT, bounded, unavailable};
use crate::bus::{
    BusError, ConsumerSpec, Delivery, DeliveryTag, Disposition, Message, Ordering, Subscription,
};

/// A delivery handed out and not yet settled, by its position in the consumer's stream.
struct InFlight {
    js: jetstream::Message,
    message: Message,
    attempt: u32,
    seq: u64,
}

pub(super) struct NatsSubscription {
    bus: NatsBus,
    spec: ConsumerSpec,
    consumer: PullConsumer,
    inflight: HashMap<u64, InFlight>,
}

impl NatsSubscription {
    pub fn new(bus: NatsBus, spec: ConsumerSpec, _stream: stream::Stream, consumer: PullConsumer) -> Self {
        Self { bus, spec, consumer, inflight: HashMap::new() }
    }

    /// Pulls up to `max` messages: what is due now, or, with `wait`, one message as soon
    /// as the server has one (a pull request for exactly one, so none is left pending).
    async fn pull(&self, max: usize, wait: bool) -> Result<Vec<jetstream::Message>, BusError> {
        let pulled = async {
            let batch = if wait {
                self.consumer.batch().max_messages(1).expires(PULL_EXPIRES).messages().await
            } else {
                self.consumer.fetch().max_messages(max).messages().await
            };
            batch.map_err(unavailable)?.try_collect().await.map_err(unavailable)
        };
        // A pull request sent while the connection was down is never answered.
        bounded("a pull", PULL_EXPIRES + REQUEST_TIMEOUT, pulled).await?
    }

    /// Turns pulled messages into deliveries: parks or drops what a per-key consumer must
    /// not deliver yet, and dead-letters what ran out of attempts on ack waits.
    async fn take(&mut self, pulled: Vec<jetstream::Message>) -> Result<Vec<Delivery>, BusError> {
        let mut deliveries = Vec::with_capacity(pulled.len());
        for js in pulled {
            let info = js.info().map_err(unavailable)?;
            let (seq, delivered) = (info.stream_sequence, u32::try_from(info.delivered).unwrap_or(u32::MAX));
            let Some(message) = streams::message(js.headers.as_ref(), &js.payload) else {
                warn!(consumer = %self.spec.name, seq, "terminating a message without capshop headers");
                js.ack_with(AckKind::Term).await.map_err(unavailable)?;
                continue;
            };
            if self.spec.ordering == Ordering::PerKey {
                let admission = self.bus.admit(&self.spec.name, &message.key, &message.id, seq).await?;
                if admission != Admission::Deliver {
                    js.ack().await.map_err(unavailable)?;
                    continue;
                }
            }
            let taken = InFlight { js, message, attempt: delivered, seq };
            if delivered > self.spec.max_attempts {
                let attempts = delivered - 1;
                self.dead_letter(taken, attempts, &format!("not acknowledged after {attempts} deliveries"))
                    .await?;
                continue;
            }
            deliveries.push(Delivery {
                tag: DeliveryTag(seq),
                attempt: delivered,
                message: taken.message.clone(),
            });
            self.inflight.insert(seq, taken);
        }
        Ok(deliveries)
    }

    /// Stores the dead letter, then terminates the message on the consumer.
    async fn dead_letter(&self, taken: InFlight, attempts: u32, error: &str) -> Result<(), BusError> {
        let record = Record::new(&self.spec.name, &taken.message, attempts, error);
        let letter_id = format!("{}:{}:{}", self.spec.name, taken.seq, taken.message.id);
        self.bus.store_dead_letter(&record, &letter_id).await?;
        taken.js.ack_with(AckKind::Term).await.map_err(unavailable)?;
        debug!(consumer = %self.spec.name, event = %taken.message.id, attempts, "dead-lettered");
        Ok(())
    }

    /// Makes sure the acks, naks and terms sent so far reached the server.
    async fn flush(&self) -> Result<(), BusError> {
        let client = self.bus.js.client();
        bounded("a flush", REQUEST_TIMEOUT, client.flush()).await?.map_err(unavailable)
    }
}

#[async_trait]
impl Subscription for NatsSubscription {
    async fn fetch(&mut self, max: usize) -> Result<Vec<Delivery>, BusError> {
        let max = max.max(1);
        let mut wait = false;
        loop {
            let pulled = self.pull(max, wait).await?;
            let found = !pulled.is_empty();
            let mut deliveries = self.take(pulled).await?;
            if wait && !deliveries.is_empty() && deliveries.len() < max {
                let more = self.pull(max - deliveries.len(), false).await?;
                deliveries.extend(self.take(more).await?);
            }
            if !deliveries.is_empty() {
                self.flush().await?;
                return Ok(deliveries);
            }
            // Nothing due: wait for the server, unless what was pulled was parked or known,
            // in which case more may be due at once.
            wait = !found;
        }
    }

    async fn ack(&mut self, tags: &[DeliveryTag]) -> Result<(), BusError> {
        for tag in tags {
            let Some(taken) = self.inflight.remove(&tag.0) else { continue };
            if self.spec.ordering == Ordering::PerKey {
                self.bus.release(&self.spec.name, &taken.message.key, &taken.message.id).await?;
            }
            taken.js.ack().await.map_err(unavailable)?;
        }
        self.flush().await
    }

    async fn retry(
        &mut self,
        tag: DeliveryTag,
        delay: Duration,
        error: &str,
    ) -> Result<Disposition, BusError> {
        let Some(taken) = self.inflight.remove(&tag.0) else { return Ok(Disposition::Retrying) };
        let disposition = if taken.attempt >= self.spec.max_attempts {
            let attempts = taken.attempt;
            self.dead_letter(taken, attempts, error).await?;
            Disposition::DeadLettered
        } else {
            taken.js.ack_with(AckKind::Nak(Some(delay))).await.map_err(unavailable)?;
            Disposition::Retrying
        };
        self.flush().await?;
        Ok(disposition)
    }

    async fn reject(&mut self, tag: DeliveryTag, error: &str) -> Result<(), BusError> {
        let Some(taken) = self.inflight.remove(&tag.0) else { return Ok(()) };
        let attempts = taken.attempt;
        self.dead_letter(taken, attempts, error).await?;
        self.flush().await
    }
}
