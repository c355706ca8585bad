//! The consumer runtime: applies each event exactly once.
//!
//! A batch of deliveries is applied in ONE store transaction, each event in its own
//! savepoint: the event passes the inbox first (a copy of an applied one is a duplicate,
//! by its position in its stream or by its id, and is skipped), then the handler writes its
//! effects. Effects and the inbox's record of them (the moved floor, or a row by id) commit
//! together, so a redelivery after a crash has no second effect. Only then are the
//! deliveries acknowledged. A failing event is retried with backoff and jitter by the bus,
//! durably, and becomes a dead letter when its attempts are used up; a malformed envelope
//! or unknown schema version is a dead letter at once. Neither stops the consumer.
//!
//! A failing store is not the event's fault: when the batch transaction fails with a
//! retryable store error (the database refused, lost or did not answer, a failed COMMIT),
//! the deliveries are released without using an attempt and the consumer backs off until
//! the store answers again.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use crate::backoff::Backoff;
use crate::bus::{Bus, BusError, ConsumerSpec, Delivery, DeliveryTag, Disposition, Subscription};
use crate::clock;
use crate::crashpoint;
use crate::envelope::Envelope;
use crate::inbox::{Floors, InboxRetention, Passage, Pruner};
use crate::metrics::ConsumerCounters;
use crate::pause::Pause;
use crate::schema::Schemas;
use crate::store::{Store, StoreError, Tx, panic_text};

/// Applies the events of one consumer inside the store transaction it is given.
///
/// It must do all of its work through `tx` (no network calls, no other stores) so that
/// its effects commit or roll back together with the inbox row.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError>;
}

/// Why a handler could not apply an event, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    message: String,
    retryable: bool,
}

impl HandlerError {
    /// A failure that may pass on a later attempt (a busy database, a missing dependency).
    pub fn retryable(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: true }
    }

    /// A failure no retry can fix (an invalid payload): the event is dead-lettered at once.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: false }
    }

    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

impl From<StoreError> for HandlerError {
    fn from(e: StoreError) -> Self {
        Self::retryable(e.to_string())
    }
}

/// An event that cannot be read as its handler expects will never apply: a dead letter.
impl From<crate::envelope::EnvelopeError> for HandlerError {
    fn from(e: crate::envelope::EnvelopeError) -> Self {
        Self::permanent(e.to_string())
    }
}

impl From<serde_json::Error> for HandlerError {
    fn from(e: serde_json::Error) -> Self {
        Self::permanent(format!("invalid payload: {e}"))
    }
}

/// An ack wait for consumers run by [`Consumer`], which keeps each batch in progress while
/// it is applied: short, so what a crashed process held comes back within seconds.
pub const KEPT_ALIVE_ACK_WAIT: Duration = Duration::from_secs(5);

/// How a consumer is served and how it retries.
pub struct ConsumerConfig {
    pub spec: ConsumerSpec,
    /// Deliveries applied per transaction.
    pub batch: usize,
    /// The delay before each retry of a failed event.
    pub retry: Backoff,
    /// The wait before trying again after the bus or the consumer's own store failed;
    /// it grows with each failure in a row and starts over after a batch succeeds.
    pub outage: Backoff,
    pub schemas: Schemas,
    /// How long applied event ids stay in the inbox once dedup no longer needs them.
    pub inbox: InboxRetention,
}

impl ConsumerConfig {
    pub fn new(spec: ConsumerSpec) -> Self {
        Self {
            spec,
            batch: 500,
            retry: Backoff::default(),
            outage: Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
            schemas: Schemas::new(),
            inbox: InboxRetention::default(),
        }
    }

    pub fn inbox(mut self, inbox: InboxRetention) -> Self {
        self.inbox = inbox;
        self
    }

    pub fn outage(mut self, outage: Backoff) -> Self {
        self.outage = outage;
        self
    }

    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    pub fn retry(mut self, retry: Backoff) -> Self {
        self.retry = retry;
        self
    }

    pub fn schemas(mut self, schemas: Schemas) -> Self {
        self.schemas = schemas;
        self
    }
}

/// Why a batch could not be settled as applied.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// The bus failed; the consumer attaches again.
    #[error("{0}")]
    Bus(#[from] BusError),
    /// The consumer's own store failed; the batch's deliveries were released without
    /// using an attempt.
    #[error("{0}")]
    Store(StoreError),
}

/// What became of one delivery inside the batch transaction.
pub(crate) enum Outcome {
    Applied,
    Duplicate,
    Failed(HandlerError),
    Undecodable(String),
}

/// A durable consumer applying events from the bus to its store.
pub struct Consumer<H> {
    store: Store,
    bus: Arc<dyn Bus>,
    handler: Arc<H>,
    config: Arc<ConsumerConfig>,
    counters: ConsumerCounters,
    pruner: Pruner,
    pause: Pause,
}

impl<H: Handler> Consumer<H> {
    pub fn new(store: Store, bus: Arc<dyn Bus>, handler: H, config: ConsumerConfig) -> Self {
        let counters = ConsumerCounters::detached(&config.spec.name);
        let pruner = Pruner::new();
        let pause = Pause::new();
        Self { store, bus, handler: Arc::new(handler), config: Arc::new(config), counters, pruner, pause }
    }

    /// Applies and settles each batch inside a passage of `pause`, so a consistent cut
    /// never finds a batch applied in the store but not yet settled with the bus.
    pub fn pause(mut self, pause: Pause) -> Self {
        self.pause = pause;
        self
    }

    /// Reports applied, retried and dead-lettered counts into these counters.
    pub fn counters(mut self, counters: ConsumerCounters) -> Self {
        self.counters = counters;
        self
    }

    /// The counters this consumer reports into, to read them while it runs.
    pub fn counters_handle(&self) -> ConsumerCounters {
        self.counters.clone()
    }

    pub fn name(&self) -> &str {
        &self.config.spec.name
    }

    /// Consumes until `shutdown` completes. Bus or store failures are retried with
    /// backoff; nothing unacknowledged is lost, it is redelivered on the next attach.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let spec = &self.config.spec;
        let pruning = self.pruner.run(
            self.store.clone(),
            self.bus.clone(),
            spec.name.clone(),
            spec.streams.clone(),
            self.config.inbox.clone(),
        );
        tokio::pin!(pruning);
        let mut failures = 0;
        loop {
            let attached = tokio::select! {
                result = self.consume(&mut failures) => result,
                _ = &mut pruning => continue,
                _ = &mut shutdown => return,
            };
            let Err(e) = attached;
            failures += 1;
            let delay = self.config.outage.delay(failures);
            warn!(consumer = %self.name(), error = %e, retry_in_ms = delay.as_millis() as u64, "consumer detached");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = &mut pruning => {}
                _ = &mut shutdown => return,
            }
        }
    }

    /// Attaches and applies batches until the bus fails; while the store fails, waits
    /// with backoff between batches. `failures` counts failures in a row.
    async fn consume(&self, failures: &mut u32) -> Result<std::convert::Infallible, BusError> {
        let mut subscription = self.bus.subscribe(&self.config.spec).await?;
        subscription.count_exhausted(self.counters.dead_lettered.clone());
        loop {
            let deliveries = subscription.fetch(self.config.batch).await?;
            let passage = self.pause.enter().await;
            let applied = self.apply_batch(subscription.as_mut(), deliveries).await;
            drop(passage);
            match applied {
                Ok(()) => {
                    *failures = 0;
                    self.pruner.applied();
                }
                Err(ConsumeError::Bus(e)) => return Err(e),
                Err(ConsumeError::Store(e)) => {
                    *failures += 1;
                    let delay = self.config.outage.delay(*failures);
                    warn!(consumer = %self.name(), error = %e, retry_in_ms = delay.as_millis() as u64,
                        "the consumer's store failed; its deliveries were released without using an attempt");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Applies one batch of deliveries in one transaction and settles each with the bus.
    ///
    /// When the transaction fails with a retryable store error, nothing of the batch took
    /// effect and it is not the events' fault: the deliveries are released without using
    /// an attempt, and the error is returned as [`ConsumeError::Store`].
    pub async fn apply_batch(
        &self,
        subscription: &mut dyn Subscription,
        deliveries: Vec<Delivery>,
    ) -> Result<(), ConsumeError> {
        let decoded: Vec<_> = deliveries
            .iter()
            .map(|d| self.config.schemas.decode(&d.message.body).map_err(|e| e.to_string()))
            .collect();
        let (handler, name, now) = (self.handler.clone(), self.config.spec.name.clone(), clock::now_ms());
        let applying = self.store.transact(move |tx| apply(tx, &name, handler.as_ref(), decoded, now));
        let outcomes = self.kept_in_progress(subscription, &deliveries, applying).await;
        let outcomes = match outcomes {
            Ok(outcomes) => outcomes,
            Err(e) if e.is_retryable() => {
                let tags: Vec<DeliveryTag> = deliveries.iter().map(|d| d.tag).collect();
                subscription.release(&tags).await?;
                return Err(ConsumeError::Store(e));
            }
            Err(e) => {
                // The whole transaction failed for a reason a retry would not fix by itself
                // (a failed decode of the consumer's own rows, a panic outside a handler):
                // nothing of the batch took effect, and each delivery uses an attempt.
                let failure = HandlerError::from(e);
                deliveries.iter().map(|_| Outcome::Failed(failure.clone())).collect()
            }
        };
        crashpoint::reached("consumer.after_apply");
        Ok(self.settle(subscription, &deliveries, outcomes).await?)
    }

    /// Awaits `work` on `deliveries`, telling the bus every third of the ack wait that they
    /// are still in progress. A failed in-progress ack only risks a redelivery, which the
    /// inbox absorbs, so it does not stop the work.
    async fn kept_in_progress<F: Future>(
        &self,
        subscription: &mut dyn Subscription,
        deliveries: &[Delivery],
        work: F,
    ) -> F::Output {
        let every = (self.config.spec.ack_wait / 3).max(Duration::from_millis(10));
        // Most batches are applied long before the first tick: their tags are never needed.
        let mut tags: Option<Vec<DeliveryTag>> = None;
        tokio::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return done,
                _ = tokio::time::sleep(every) => {
                    let tags = tags.get_or_insert_with(|| deliveries.iter().map(|d| d.tag).collect());
                    if let Err(e) = subscription.in_progress(tags).await {
                        warn!(consumer = %self.name(), error = %e, "could not keep deliveries in progress");
                    }
                }
            }
        }
    }

    async fn settle(
        &self,
        subscription: &mut dyn Subscription,
        deliveries: &[Delivery],
        outcomes: Vec<Outcome>,
    ) -> Result<(), BusError> {
        let mut done: Vec<DeliveryTag> = Vec::with_capacity(deliveries.len());
        for (delivery, outcome) in deliveries.iter().zip(outcomes) {
            let id = &delivery.message.id;
            match outcome {
                Outcome::Applied => {
                    self.counters.applied.inc();
                    done.push(delivery.tag);
                }
                Outcome::Duplicate => {
                    self.counters.duplicates.inc();
                    done.push(delivery.tag);
                }
                Outcome::Failed(e) if e.is_retryable() => {
                    let delay = self.config.retry.delay(delivery.attempt);
                    match subscription.retry(delivery.tag, delay, &e.to_string()).await? {
                        Disposition::DeadLettered => {
                            self.counters.dead_lettered.inc();
                            warn!(consumer = %self.name(), event = %id, attempt = delivery.attempt, error = %e, "dead-lettered after its last attempt");
                        }
                        Disposition::Retrying => {
                            self.counters.retried.inc();
                            debug!(consumer = %self.name(), event = %id, attempt = delivery.attempt, error = %e, retry_in_ms = delay.as_millis() as u64, "retrying");
                        }
                        // Its ack wait ran out meanwhile: the bus delivers it again, as it counts.
                        Disposition::NotPending => {
                            debug!(consumer = %self.name(), event = %id, attempt = delivery.attempt, error = %e, "no longer pending, not retried");
                        }
                    }
                }
                Outcome::Failed(e) => self.dead_letter(subscription, delivery, &e.to_string()).await?,
                Outcome::Undecodable(e) => self.dead_letter(subscription, delivery, &e).await?,
            }
        }
        subscription.ack(&done).await
    }

    async fn dead_letter(
        &self,
        subscription: &mut dyn Subscription,
        delivery: &Delivery,
        error: &str,
    ) -> Result<(), BusError> {
        warn!(consumer = %self.name(), event = %delivery.message.id, error, "dead-lettered");
        self.counters.dead_lettered.inc();
        subscription.reject(delivery.tag, error).await
    }
}

/// Applies decoded events inside one transaction; returns one outcome per event.
///
/// The batch is tried first under a single savepoint; only when an event fails is it rolled
/// back and applied again with a savepoint per event, so the common case pays two
/// statements per batch instead of two per event.
pub(crate) fn apply(
    tx: &mut Tx<'_>,
    consumer: &str,
    handler: &dyn Handler,
    decoded: Vec<Result<Envelope, String>>,
    now_ms: u64,
) -> Result<Vec<Outcome>, StoreError> {
    let streams = decoded.iter().filter_map(|event| event.as_ref().ok()).map(|event| event.stream.as_str());
    let loaded = Floors::load(tx, consumer, streams)?;
    let mut floors = loaded.clone();
    let optimistic = tx.savepoint(|tx| {
        decoded
            .iter()
            .map(|event| match event {
                Err(e) => Ok(Outcome::Undecodable(e.clone())),
                Ok(event) => match apply_one(tx, consumer, handler, event, &mut floors, now_ms) {
                    Ok(true) => Ok(Outcome::Applied),
                    Ok(false) => Ok(Outcome::Duplicate),
                    Err(_) => Err(BatchFailed::Isolate),
                },
            })
            .collect::<Result<Vec<_>, BatchFailed>>()
    });
    let outcomes = match optimistic {
        Ok(outcomes) => outcomes,
        // The store itself failed (not an event): the transaction cannot commit.
        Err(_) if let Some(e) = tx.unavailable() => return Err(e),
        Err(_) => {
            // The optimistic pass was rolled back, and what it moved with it.
            floors = loaded;
            let mut outcomes = Vec::with_capacity(decoded.len());
            for event in &decoded {
                outcomes.push(match event {
                    Err(e) => Outcome::Undecodable(e.clone()),
                    Ok(event) => match tx
                        .savepoint(|tx| apply_one(tx, consumer, handler, event, &mut floors, now_ms))
                    {
                        Ok(true) => Outcome::Applied,
                        Ok(false) => Outcome::Duplicate,
                        Err(_) if let Some(e) = tx.unavailable() => return Err(e),
                        Err(e) => Outcome::Failed(e),
                    },
                });
            }
            outcomes
        }
    };
    floors.save(tx, consumer)?;
    record_positions(tx, consumer, &decoded, &outcomes)?;
    Ok(outcomes)
}

/// Why the optimistic pass over a batch was rolled back: an event failed, or a savepoint
/// statement did (the caller tells the store's failure from an event's by the transaction).
enum BatchFailed {
    Isolate,
    Store,
}

impl From<StoreError> for BatchFailed {
    fn from(_: StoreError) -> Self {
        BatchFailed::Store
    }
}

/// Lets the event pass the inbox and the handler apply it; returns `false` for a duplicate
/// (its seq at or below the inbox floor, or its id in the inbox), which is skipped.
fn apply_one(
    tx: &mut Tx<'_>,
    consumer: &str,
    handler: &dyn Handler,
    event: &Envelope,
    floors: &mut Floors,
    now_ms: u64,
) -> Result<bool, HandlerError> {
    let passage = floors.pass(tx, consumer, event, now_ms)?;
    #[cfg(feature = "canary")]
    if passage == Passage::Duplicate && crate::canary::armed("inbox-dedup-off") {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.handle(tx, event)))
            .unwrap_or(Ok(()))?;
        return Ok(false);
    }
    if passage == Passage::Duplicate {
        return Ok(false);
    }
    // A panicking handler fails its own event, not the whole batch.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.handle(tx, event))).unwrap_or_else(
        |panic| Err(HandlerError::retryable(format!("handler panicked: {}", panic_text(&panic)))),
    )?;
    if passage == Passage::Next {
        floors.applied(event);
    }
    Ok(true)
}

/// Advances the consumer's applied position per source stream to the newest applied event.
fn record_positions(
    tx: &mut Tx<'_>,
    consumer: &str,
    decoded: &[Result<Envelope, String>],
    outcomes: &[Outcome],
) -> Result<(), StoreError> {
    let mut newest: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (event, outcome) in decoded.iter().zip(outcomes) {
        if let (Ok(event), Outcome::Applied) = (event, outcome) {
            let position = newest.entry(event.stream.as_str()).or_default();
            if event.seq > position.0 {
                *position = (event.seq, event.occurred_at_ms());
            }
        }
    }
    for (stream, (seq, occurred_at_ms)) in newest {
        tx.execute(
            "INSERT INTO kit_applied (consumer, stream, seq, occurred_at_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (consumer, stream) DO UPDATE SET seq = excluded.seq, occurred_at_ms = excluded.occurred_at_ms \
             WHERE excluded.seq > kit_applied.seq",
            &[consumer.into(), stream.into(), seq.into(), occurred_at_ms.into()],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
