//! One attachment of a durable consumer: pulling, keeping a per-key consumer's keys one
//! at a time, and settling deliveries with ack, nak-with-delay and term.
//!
//! A per-key attachment keeps the messages it pulls behind a head it delivered itself in
//! memory, unacknowledged on the server, records them in the key's parking once per fetch,
//! and delivers the next one when the head is acknowledged: the common case parks and
//! copies nothing. Only when the head is retried or dies are they parked.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use std::pin::Pin;

use async_nats::jetstream::consumer::{PullConsumer, pull::Batch};
use async_nats::jetstream::{self, AckKind};
use async_trait::async_trait;
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use prometheus_client::metrics::counter::Counter;
use tracing::{debug, warn};

use super::dead_letters::Record;
use super::parking::{Admission, Position, Release, Seen};
use super::streams::{self, PULL_EXPIRES};
use super::{NatsBus, REQUEST_TIMEOUT, bounded, unavailable};
use crate::bus::{BusError, ConsumerSpec, Delivery, DeliveryTag, Disposition, Ordering, Subscription};

/// A message pulled and not yet settled, by its position in the consumer's stream.
struct Taken {
    js: jetstream::Message,
    message: crate::bus::Message,
    attempt: u32,
    seq: u64,
    /// Its key's parking as written when it became the head (per-key only).
    seen: Option<Seen>,
}

impl Taken {
    fn delivery(&self) -> Delivery {
        Delivery { tag: DeliveryTag(self.seq), attempt: self.attempt, message: self.message.clone() }
    }

    fn position(&self) -> Position {
        Position { id: self.message.id.clone(), seq: self.seq }
    }
}

pub(super) struct NatsSubscription {
    bus: NatsBus,
    spec: ConsumerSpec,
    /// The consumer of the messages sourced from the producing streams.
    sourced: PullConsumer,
    /// The consumer of the copies published on the consumer's own subject; pulled first.
    copies: PullConsumer,
    /// Wakes a waiting fetch when a copy is published.
    copied: async_nats::Subscriber,
    /// The pull request for one sourced message that a waiting fetch left open when a
    /// copy woke it: kept, so what the server sends to it is not lost.
    waiting: Option<Pin<Box<Batch>>>,
    inflight: HashMap<u64, Taken>,
    /// Keys whose head this attachment delivered and has not settled, with the head's
    /// position (per-key only).
    busy: HashMap<String, u64>,
    /// Messages of a key pulled behind its head, in stream order, unacknowledged on the
    /// server and recorded as kept in the key's parking.
    behind: HashMap<String, Vec<Taken>>,
    /// Deliveries due at once: heads that took over from an acknowledged one.
    ready: VecDeque<Delivery>,
    /// Parkings this attachment freed, as it wrote them, so taking the key again is one
    /// compare-and-set (a cache: forgetting costs one read).
    freed: HashMap<String, Seen>,
    /// Counts the messages this attachment dead-letters because their ack waits ran out.
    exhausted: Counter,
}

/// How many freed parkings an attachment remembers.
const FREED_REMEMBERED: usize = 4096;

impl NatsSubscription {
    pub fn new(
        bus: NatsBus,
        spec: ConsumerSpec,
        sourced: PullConsumer,
        copies: PullConsumer,
        copied: async_nats::Subscriber,
    ) -> Self {
        Self {
            bus,
            spec,
            sourced,
            copies,
            copied,
            waiting: None,
            inflight: HashMap::new(),
            busy: HashMap::new(),
            behind: HashMap::new(),
            ready: VecDeque::new(),
            freed: HashMap::new(),
            exhausted: Counter::default(),
        }
    }

    fn per_key(&self) -> bool {
        self.spec.ordering == Ordering::PerKey
    }

    /// Waits until the server has a sourced message for this consumer, or a copy is
    /// published on its subject (then `None`).
    async fn wait(&mut self) -> Result<Option<jetstream::Message>, BusError> {
        let mut waiting = match self.waiting.take() {
            Some(waiting) => waiting,
            // One message at a time, so an answered request leaves nothing pending.
            None => Box::pin(
                self.sourced
                    .batch()
                    .max_messages(1)
                    .expires(PULL_EXPIRES)
                    .messages()
                    .await
                    .map_err(unavailable)?,
            ),
        };
        // The batch ends by itself once its expiry passes, also when its request was lost
        // with the connection.
        tokio::select! {
            pulled = waiting.next() => match pulled {
                Some(pulled) => pulled.map(Some).map_err(unavailable),
                None => Ok(None),
            },
            copied = self.copied.next() => {
                if copied.is_none() {
                    return Err(BusError::Unavailable("the connection to nats closed".into()));
                }
                self.waiting = Some(waiting);
                Ok(None)
            }
        }
    }

    /// Turns pulled messages into deliveries: keeps back or parks what a per-key consumer
    /// must not deliver yet, and dead-letters what ran out of attempts on ack waits.
    async fn take(&mut self, pulled: Vec<jetstream::Message>) -> Result<Vec<Delivery>, BusError> {
        let mut deliveries = Vec::with_capacity(pulled.len());
        let mut kept: HashMap<String, Vec<Position>> = HashMap::new();
        for js in pulled {
            let info = js.info().map_err(unavailable)?;
            let (seq, delivered) = (info.stream_sequence, u32::try_from(info.delivered).unwrap_or(u32::MAX));
            // A released copy goes on from the attempts its original had used.
            let delivered = delivered.saturating_add(streams::attempts_used(js.headers.as_ref()));
            let Some(message) = streams::message(js.headers.as_ref(), &js.payload) else {
                warn!(consumer = %self.spec.name, seq, "terminating a message without capshop headers");
                js.ack_with(AckKind::Term).await.map_err(unavailable)?;
                continue;
            };
            let mut taken = Taken { js, message, attempt: delivered, seq, seen: None };
            if self.per_key() {
                match self.admit(taken, &mut kept).await? {
                    Some(admitted) => taken = admitted,
                    None => continue,
                }
            }
            let earlier = self.inflight.remove(&seq);
            if delivered > self.spec.max_attempts {
                let attempts = delivered - 1;
                let error = format!("not acknowledged after {attempts} deliveries");
                self.give_up(taken, attempts, &error).await?;
                self.exhausted.inc();
                continue;
            }
            taken.seen = taken.seen.or(earlier.and_then(|e| e.seen));
            deliveries.push(taken.delivery());
            self.inflight.insert(seq, taken);
        }
        for (key, positions) in kept {
            self.record_kept(&key, &positions).await?;
        }
        Ok(deliveries)
    }

    /// Gives `taken` back when a per-key consumer delivers it now; else it is kept behind
    /// its key's head here (and noted in `kept`), or parked or dropped by the key's parking.
    async fn admit(
        &mut self,
        taken: Taken,
        kept: &mut HashMap<String, Vec<Position>>,
    ) -> Result<Option<Taken>, BusError> {
        let key = taken.message.key.clone();
        if let Some(&head) = self.busy.get(&key) {
            if head == taken.seq {
                return Ok(Some(taken)); // the head delivered here, redelivered after its ack wait
            }
            kept.entry(key.clone()).or_default().push(taken.position());
            let queue = self.behind.entry(key).or_default();
            queue.retain(|k| k.seq != taken.seq);
            let at = queue.partition_point(|k| k.seq < taken.seq);
            queue.insert(at, taken);
            return Ok(None);
        }
        if let Some(queue) = self.behind.get_mut(&key) {
            queue.retain(|k| k.seq != taken.seq); // a stale copy of one kept here before
        }
        let remembered = self.freed.remove(&key);
        match self.bus.admit(&self.spec.name, &key, &taken.message.id, taken.seq, remembered).await? {
            Admission::Deliver(seen) => {
                self.busy.insert(key, taken.seq);
                Ok(Some(Taken { seen: Some(seen), ..taken }))
            }
            Admission::Parked | Admission::Known => {
                taken.js.ack().await.map_err(unavailable)?;
                Ok(None)
            }
        }
    }

    /// Records the messages just kept behind a key's head in its parking; if the head moved
    /// on meanwhile, forgets them (unacknowledged, they come back after the ack wait).
    async fn record_kept(&mut self, key: &str, positions: &[Position]) -> Result<(), BusError> {
        let Some(head) = self.busy.get(key).and_then(|seq| self.inflight.get_mut(seq)) else {
            return Ok(());
        };
        let seen = head.seen.take();
        let id = head.message.id.clone();
        match self.bus.keep(&self.spec.name, key, &id, positions, seen).await? {
            Some(seen) => {
                if let Some(head) = self.busy.get(key).and_then(|seq| self.inflight.get_mut(seq)) {
                    head.seen = Some(seen);
                }
            }
            None => {
                if let Some(queue) = self.behind.get_mut(key) {
                    queue.retain(|k| !positions.iter().any(|p| p.seq == k.seq));
                }
            }
        }
        Ok(())
    }

    /// Stores the dead letter, then terminates the message on the consumer.
    async fn dead_letter(&self, taken: &Taken, attempts: u32, error: &str) -> Result<(), BusError> {
        let record = Record::new(&self.spec.name, &taken.message, attempts, error);
        let letter_id = format!("{}:{}:{}", self.spec.name, taken.seq, taken.message.id);
        self.bus.store_dead_letter(&record, &letter_id).await?;
        taken.js.ack_with(AckKind::Term).await.map_err(unavailable)?;
        debug!(consumer = %self.spec.name, event = %taken.message.id, attempts, "dead-lettered");
        Ok(())
    }

    /// Dead-letters a head and parks what this attachment kept behind it.
    async fn give_up(&mut self, taken: Taken, attempts: u32, error: &str) -> Result<(), BusError> {
        self.dead_letter(&taken, attempts, error).await?;
        self.park_behind(&taken).await
    }

    /// The head `taken` is retrying or dead: the messages kept behind it here are parked
    /// in its key's parking and acknowledged, or, if the parking moved on, left to be redelivered.
    async fn park_behind(&mut self, taken: &Taken) -> Result<(), BusError> {
        if !self.per_key() {
            return Ok(());
        }
        let key = &taken.message.key;
        self.busy.remove(key);
        let Some(behind) = self.behind.remove(key) else { return Ok(()) };
        let positions: Vec<_> = behind.iter().map(Taken::position).collect();
        if self.bus.park_kept(&self.spec.name, key, &taken.message.id, &positions).await? {
            for kept in behind {
                kept.js.ack().await.map_err(unavailable)?;
            }
        }
        Ok(())
    }

    /// The head `taken` was acknowledged: the next message of its key takes over.
    async fn release(&mut self, taken: &mut Taken) -> Result<(), BusError> {
        let key = &taken.message.key;
        self.busy.remove(key);
        let seen = taken.seen.take();
        let here: Vec<u64> =
            self.behind.get(key).map(|q| q.iter().map(|k| k.seq).collect()).unwrap_or_default();
        match self.bus.release(&self.spec.name, key, &taken.message.id, &here, seen).await? {
            Release::Kept(next, seen) => {
                let queue = self.behind.get_mut(key);
                let here =
                    queue.and_then(|q| q.iter().position(|k| k.seq == next.seq).map(|at| q.remove(at)));
                if self.behind.get(key).is_some_and(Vec::is_empty) {
                    self.behind.remove(key);
                }
                if let Some(mut next) = here {
                    // Its ack wait started when it was pulled; it starts again now.
                    next.js.ack_with(AckKind::Progress).await.map_err(unavailable)?;
                    next.seen = Some(seen);
                    self.busy.insert(key.clone(), next.seq);
                    self.ready.push_back(next.delivery());
                    self.inflight.insert(next.seq, next);
                }
            }
            // The new head arrives as a copy; what is kept here waits for it.
            Release::Moved => {}
            Release::Ended(seen) => {
                if self.freed.len() >= FREED_REMEMBERED {
                    self.freed.clear();
                }
                self.freed.insert(key.clone(), seen);
            }
            // Left unacknowledged, they come back after the ack wait and are admitted then.
            Release::NotHead => {
                self.behind.remove(key);
            }
        }
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
        loop {
            if !self.ready.is_empty() {
                let n = max.min(self.ready.len());
                return Ok(self.ready.drain(..n).collect());
            }
            while let Some(Some(_)) = self.copied.next().now_or_never() {}
            // Copies first: a released key's next message must not wait behind the backlog.
            let copies = pull_now(&self.copies, max).await?;
            let mut found = !copies.is_empty();
            let mut deliveries = self.take(copies).await?;
            if deliveries.len() < max {
                let sourced = pull_now(&self.sourced, max - deliveries.len()).await?;
                found |= !sourced.is_empty();
                deliveries.extend(self.take(sourced).await?);
            }
            // What was pulled may all have been kept back, parked or known: look again.
            if deliveries.is_empty()
                && !found
                && let Some(pulled) = self.wait().await?
            {
                deliveries = self.take(vec![pulled]).await?;
            }
            if !deliveries.is_empty() {
                self.flush().await?;
                return Ok(deliveries);
            }
        }
    }

    async fn ack(&mut self, tags: &[DeliveryTag]) -> Result<(), BusError> {
        for tag in tags {
            let Some(mut taken) = self.inflight.remove(&tag.0) else { continue };
            if self.per_key() {
                self.release(&mut taken).await?;
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
        let Some(taken) = self.inflight.remove(&tag.0) else { return Ok(Disposition::NotPending) };
        let disposition = if taken.attempt >= self.spec.max_attempts {
            let attempts = taken.attempt;
            self.give_up(taken, attempts, error).await?;
            Disposition::DeadLettered
        } else {
            self.park_behind(&taken).await?;
            taken.js.ack_with(AckKind::Nak(Some(delay))).await.map_err(unavailable)?;
            Disposition::Retrying
        };
        self.flush().await?;
        Ok(disposition)
    }

    async fn reject(&mut self, tag: DeliveryTag, error: &str) -> Result<(), BusError> {
        let Some(taken) = self.inflight.remove(&tag.0) else { return Ok(()) };
        let attempts = taken.attempt;
        self.give_up(taken, attempts, error).await?;
        self.flush().await
    }

    fn count_exhausted(&mut self, counter: Counter) {
        self.exhausted = counter;
    }

    /// Sends an in-progress ack for each delivery and for what is kept behind its key here
    /// (their ack waits run too, and a redelivery elsewhere would only park them).
    async fn in_progress(&mut self, tags: &[DeliveryTag]) -> Result<(), BusError> {
        for tag in tags {
            let Some(taken) = self.inflight.get(&tag.0) else { continue };
            taken.js.ack_with(AckKind::Progress).await.map_err(unavailable)?;
            for kept in self.behind.get(&taken.message.key).into_iter().flatten() {
                kept.js.ack_with(AckKind::Progress).await.map_err(unavailable)?;
            }
        }
        self.flush().await
    }

    /// The server's delivered count cannot be taken back, so a released message is
    /// published again as a copy that carries the attempts used so far, then acknowledged
    /// (a crash in between delivers it twice, which the consumer's inbox absorbs).
    async fn release(&mut self, tags: &[DeliveryTag]) -> Result<(), BusError> {
        for tag in tags {
            let Some(taken) = self.inflight.remove(&tag.0) else { continue };
            self.park_behind(&taken).await?;
            let used = taken.attempt.saturating_sub(1);
            let copy_id = format!("release-{}", taken.seq);
            self.bus.redeliver_released(&self.spec.name, &taken.message, used, &copy_id).await?;
            taken.js.ack().await.map_err(unavailable)?;
        }
        self.flush().await
    }
}

/// Pulls up to `max` messages that are due now, without waiting.
async fn pull_now(consumer: &PullConsumer, max: usize) -> Result<Vec<jetstream::Message>, BusError> {
    let pulled = async {
        let batch = consumer.fetch().max_messages(max).messages().await.map_err(unavailable)?;
        batch.try_collect().await.map_err(unavailable)
    };
    // A pull request sent while the connection was down is never answered.
    bounded("a pull", REQUEST_TIMEOUT, pulled).await?
}
