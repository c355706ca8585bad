//! The kit's Prometheus metrics, all named `capshop_*`: consumer lag per source stream,
//! outbox backlog, dead letters, event counters and breaker states.
//!
//! Counters are updated as events flow; positions, lag, backlog and dead letters are read
//! from the stores and the bus by [`KitMetrics::refresh`] just before a scrape, so they
//! are exact at scrape time and cost nothing in between.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::breaker::CircuitBreaker;
use crate::bus::{Bus, DeadLetterFilter};
use crate::lag::{self, LagError};
use crate::outbox::Outbox;
use crate::store::Store;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerStream {
    consumer: String,
    stream: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabel {
    consumer: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabel {
    stream: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerLabel {
    breaker: String,
}

/// The counters one consumer updates as it settles deliveries.
#[derive(Debug, Clone, Default)]
pub struct ConsumerCounters {
    pub applied: Counter,
    pub duplicates: Counter,
    pub retried: Counter,
    pub dead_lettered: Counter,
}

impl ConsumerCounters {
    /// Counters that are not exported (for consumers outside any registry).
    pub fn detached(_consumer: &str) -> Self {
        Self::default()
    }
}

#[derive(Clone)]
enum Watched {
    Consumer { store: Store, name: String, streams: Vec<String> },
    Outbox { store: Store, outbox: Outbox },
}

/// The kit's metric families, registered once per registry.
pub struct KitMetrics {
    applied_seq: Family<ConsumerStream, Gauge>,
    contiguous_seq: Family<ConsumerStream, Gauge>,
    published_seq: Family<ConsumerStream, Gauge>,
    lag_events: Family<ConsumerStream, Gauge>,
    newest_age: Family<ConsumerStream, Gauge<f64, AtomicU64>>,
    dead_letters: Family<ConsumerLabel, Gauge>,
    applied: Family<ConsumerLabel, Counter>,
    duplicates: Family<ConsumerLabel, Counter>,
    retried: Family<ConsumerLabel, Counter>,
    dead_lettered: Family<ConsumerLabel, Counter>,
    outbox_backlog: Family<StreamLabel, Gauge>,
    relayed: Family<StreamLabel, Counter>,
    breaker_state: Family<BreakerLabel, Gauge>,
    watched: Mutex<Vec<Watched>>,
}

impl KitMetrics {
    /// Registers the kit's families in `registry`.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Self {
            applied_seq: Family::default(),
            contiguous_seq: Family::default(),
            published_seq: Family::default(),
            lag_events: Family::default(),
            newest_age: Family::default(),
            dead_letters: Family::default(),
            applied: Family::default(),
            duplicates: Family::default(),
            retried: Family::default(),
            dead_lettered: Family::default(),
            outbox_backlog: Family::default(),
            relayed: Family::default(),
            breaker_state: Family::default(),
            watched: Mutex::default(),
        };
        macro_rules! register {
            ($($field:ident: $name:literal, $help:literal;)*) => {
                $(registry.register($name, $help, metrics.$field.clone());)*
            };
        }
        register! {
            applied_seq: "capshop_consumer_applied_seq", "Highest source seq a consumer has applied";
            contiguous_seq: "capshop_consumer_contiguous_seq", "Source seq at or below which a consumer has applied every event";
            published_seq: "capshop_source_published_seq", "Highest seq the source stream has published";
            lag_events: "capshop_consumer_lag_events", "Events published past the contiguous applied seq";
            newest_age: "capshop_consumer_newest_applied_age_seconds", "Age of the newest applied event";
            dead_letters: "capshop_dead_letters", "Dead letters waiting for replay or discard";
            applied: "capshop_events_applied", "Events applied by a consumer";
            duplicates: "capshop_events_duplicate", "Redelivered events the inbox skipped";
            retried: "capshop_events_retried", "Failed deliveries scheduled for retry";
            dead_lettered: "capshop_events_dead_lettered", "Events moved to dead letters";
            outbox_backlog: "capshop_outbox_backlog_events", "Committed events the relay has not published yet";
            relayed: "capshop_events_relayed", "Events the relay has published";
            breaker_state: "capshop_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open";
        }
        Arc::new(metrics)
    }

    /// The exported counters of one consumer.
    pub fn consumer_counters(&self, consumer: &str) -> ConsumerCounters {
        let label = ConsumerLabel { consumer: consumer.to_owned() };
        ConsumerCounters {
            applied: self.applied.get_or_create(&label).clone(),
            duplicates: self.duplicates.get_or_create(&label).clone(),
            retried: self.retried.get_or_create(&label).clone(),
            dead_lettered: self.dead_lettered.get_or_create(&label).clone(),
        }
    }

    /// The exported counter of events relayed from one stream.
    pub fn relayed_counter(&self, stream: &str) -> Counter {
        self.relayed.get_or_create(&StreamLabel { stream: stream.to_owned() }).clone()
    }

    /// Reports `consumer`'s lag on `streams` and its dead letters at every refresh.
    pub fn watch_consumer(&self, store: &Store, consumer: &str, streams: &[String]) {
        self.watched().push(Watched::Consumer {
            store: store.clone(),
            name: consumer.to_owned(),
            streams: streams.to_vec(),
        });
    }

    /// Reports the backlog of `outbox` at every refresh.
    pub fn watch_outbox(&self, store: &Store, outbox: &Outbox) {
        self.watched().push(Watched::Outbox { store: store.clone(), outbox: outbox.clone() });
    }

    /// Follows the state of `breaker` as it changes.
    pub fn watch_breaker(&self, breaker: &CircuitBreaker) {
        let gauge =
            self.breaker_state.get_or_create(&BreakerLabel { breaker: breaker.name().to_owned() }).clone();
        gauge.set(breaker.state().as_gauge());
        breaker.on_transition(move |_, state| {
            gauge.set(state.as_gauge());
        });
    }

    /// Reads positions, lag, backlog and dead letters from the stores and the bus.
    pub async fn refresh(&self, bus: &dyn Bus) -> Result<(), LagError> {
        let watched = self.watched().clone();
        for w in watched {
            match w {
                Watched::Consumer { store, name, streams } => {
                    self.refresh_consumer(bus, &store, &name, &streams).await?
                }
                Watched::Outbox { store, outbox } => {
                    let backlog = {
                        let outbox = outbox.clone();
                        store.transact(move |tx| outbox.backlog(tx)).await?
                    };
                    let label = StreamLabel { stream: outbox.stream().to_string() };
                    self.outbox_backlog.get_or_create(&label).set(backlog as i64);
                }
            }
        }
        Ok(())
    }

    async fn refresh_consumer(
        &self,
        bus: &dyn Bus,
        store: &Store,
        name: &str,
        streams: &[String],
    ) -> Result<(), LagError> {
        for lag in lag::measure(store, bus, name, streams).await? {
            let label = ConsumerStream { consumer: name.to_owned(), stream: lag.stream.clone() };
            self.applied_seq.get_or_create(&label).set(lag.applied_seq as i64);
            self.contiguous_seq.get_or_create(&label).set(lag.contiguous_seq as i64);
            self.published_seq.get_or_create(&label).set(lag.published_seq as i64);
            self.lag_events.get_or_create(&label).set(lag.events_behind() as i64);
            let age = lag.newest_applied_age_ms.map_or(0.0, |ms| ms as f64 / 1000.0);
            self.newest_age.get_or_create(&label).set(age);
        }
        let dead = bus.dead_letters(&DeadLetterFilter::all().consumer(name)).await?.len();
        self.dead_letters.get_or_create(&ConsumerLabel { consumer: name.to_owned() }).set(dead as i64);
        Ok(())
    }

    fn watched(&self) -> std::sync::MutexGuard<'_, Vec<Watched>> {
        self.watched.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
