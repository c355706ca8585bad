//! The bare event path as `capshop lab pipeline` builds it — a producer's outbox, the
//! relay, the bus, one consumer applying to a replica, on the run's backends (SQLite and
//! the embedded log, or PostgreSQL and NATS JetStream) — instrumented per event:
//! the moment the producer's transaction committed and the moment the replica's
//! transaction that applied it committed, both taken on the database threads right after
//! their commits, so lag is measured per event id and independently of either side.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use kit::bus::{Bus, ConsumerSpec};
use kit::consumer::{Consumer, ConsumerConfig, Handler, HandlerError};
use kit::envelope::{Envelope, NewEvent, StreamName};
use kit::link::{Link, LinkedBus};
use kit::outbox::{self, Outbox};
use kit::relay::Relay;
use kit::store::{Migrations, Store, StoreError, Tx};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Spread;
use super::backends::Backends;

/// Events per producer transaction when committing as fast as possible.
const PER_COMMIT: u64 = 100;

/// The replica records every application as a row, so the effect is a real write.
const REPLICA: Migrations = Migrations {
    component: "bench-replica",
    sqlite: &["CREATE TABLE bench_applied (n INTEGER NOT NULL)"],
    postgres: &["CREATE TABLE bench_applied (n BIGINT NOT NULL)"],
};

/// Per event n (1-based): when it committed and when it was applied, in nanoseconds
/// since `origin` plus one (0 = not yet).
pub struct Stamps {
    origin: std::time::Instant,
    committed: Vec<AtomicU64>,
    applied: Vec<AtomicU64>,
    applied_count: AtomicU64,
}

impl Stamps {
    fn new(events: u64) -> Self {
        let slots = || (0..=events).map(|_| AtomicU64::new(0)).collect();
        Self {
            origin: std::time::Instant::now(),
            committed: slots(),
            applied: slots(),
            applied_count: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64 + 1
    }

    fn mark(slots: &[AtomicU64], n: u64, at: u64) -> bool {
        slots
            .get(n as usize)
            .is_some_and(|slot| slot.compare_exchange(0, at, Ordering::AcqRel, Ordering::Acquire).is_ok())
    }

    /// Lag of each event in `1..=events` that was applied, in microseconds.
    fn lags_us(&self, events: u64) -> Vec<u64> {
        (1..=events as usize)
            .filter_map(|n| {
                let (c, a) =
                    (self.committed[n].load(Ordering::Acquire), self.applied[n].load(Ordering::Acquire));
                (c > 0 && a > 0).then(|| a.saturating_sub(c) / 1000)
            })
            .collect()
    }

    /// The latest apply among `1..=events`, as time since `origin`.
    fn last_applied(&self, events: u64) -> Duration {
        let last = (1..=events as usize).map(|n| self.applied[n].load(Ordering::Acquire)).max().unwrap_or(0);
        Duration::from_nanos(last.saturating_sub(1))
    }
}

struct Recorder {
    stamps: Arc<Stamps>,
}

impl Handler for Recorder {
    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        let n = event.payload["n"].as_u64().ok_or_else(|| HandlerError::permanent("payload without n"))?;
        tx.execute("INSERT INTO bench_applied (n) VALUES ($1)", &[n.into()])?;
        let stamps = self.stamps.clone();
        tx.after_commit(move || {
            if Stamps::mark(&stamps.applied, n, stamps.now()) {
                stamps.applied_count.fetch_add(1, Ordering::AcqRel);
            }
        });
        Ok(())
    }
}

/// A running pipeline on stores and a bus of its own.
pub struct Pipeline {
    producer: Store,
    outbox: Outbox,
    pub stamps: Arc<Stamps>,
    /// Between the relay and consumer and the bus: cutting it is a broker outage.
    pub bus_link: Link,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Pipeline {
    /// Opens a fresh producer, bus and replica for the run `run` with room for `events` stamps.
    pub async fn start(backends: &Backends, run: &str, events: u64) -> anyhow::Result<Self> {
        let producer = Store::open(&backends.store(run, "producer").await?, &[&outbox::MIGRATIONS]).await?;
        let replica =
            Store::open(&backends.store(run, "replica").await?, &[&outbox::MIGRATIONS, &REPLICA]).await?;
        let bus = kit::bus::connect(&backends.bus_url(run)?).await?;
        let bus_link = Link::new("bench->bus");
        let bus: Arc<dyn Bus> = Arc::new(LinkedBus::new(bus, bus_link.clone()));
        let outbox = Outbox::new(StreamName::parse("bench")?);
        let stamps = Arc::new(Stamps::new(events));
        let stop = CancellationToken::new();
        let relay = Relay::new(producer.clone(), outbox.clone(), bus.clone());
        let consumer = Consumer::new(
            replica,
            bus,
            Recorder { stamps: stamps.clone() },
            ConsumerConfig::new(ConsumerSpec::new("bench-replica", &["bench"])),
        );
        let tasks = vec![
            tokio::spawn(relay.run(stop.clone().cancelled_owned())),
            tokio::spawn(consumer.run(stop.clone().cancelled_owned())),
        ];
        Ok(Self { producer, outbox, stamps, bus_link, stop, tasks })
    }

    /// Commits events `first..first + count` in one producer transaction.
    pub async fn commit(&self, first: u64, count: u64) -> anyhow::Result<()> {
        let (outbox, stamps) = (self.outbox.clone(), self.stamps.clone());
        self.producer
            .transact(move |tx| {
                let events = (first..first + count)
                    .map(|n| NewEvent::new("Counted", format!("k-{}", n % 64), n, json!({ "n": n })))
                    .collect();
                outbox.append(tx, events)?;
                tx.after_commit(move || {
                    let at = stamps.now();
                    for n in first..first + count {
                        Stamps::mark(&stamps.committed, n, at);
                    }
                });
                Ok::<_, StoreError>(())
            })
            .await?;
        Ok(())
    }

    /// Waits until `events` distinct events are applied, for at most `within`.
    pub async fn applied(&self, events: u64, within: Duration) -> anyhow::Result<()> {
        let started = tokio::time::Instant::now();
        while self.stamps.applied_count.load(Ordering::Acquire) < events {
            if started.elapsed() > within {
                bail!(
                    "only {} of {events} events were applied within {within:?}",
                    self.stamps.applied_count.load(Ordering::Acquire)
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    pub async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Commits `events` as fast as one producer can (in transactions of [`PER_COMMIT`]) and
/// answers events per second from the first commit to the last event applied.
pub async fn sustained(backends: &Backends, run: &str, events: u64) -> anyhow::Result<f64> {
    let pipeline = Pipeline::start(backends, run, events).await?;
    let started = pipeline.stamps.origin.elapsed();
    let mut next = 1;
    while next <= events {
        let count = PER_COMMIT.min(events + 1 - next);
        pipeline.commit(next, count).await?;
        next += count;
    }
    pipeline.applied(events, Duration::from_secs(300)).await?;
    let took = pipeline.stamps.last_applied(events).saturating_sub(started);
    pipeline.stop().await;
    Ok(events as f64 / took.as_secs_f64().max(1e-9))
}

/// Offers `rate` events per second for `span` (a commit every millisecond of `rate / 1000`
/// events) and answers the lag of every event.
pub async fn lag_at(backends: &Backends, run: &str, rate: u64, span: Duration) -> anyhow::Result<Spread> {
    let (committed, _) = offer(backends, run, rate, span, |_| {}).await?;
    Spread::of(&mut committed.stamps.lags_us(committed.events)).context("no event was applied")
}

/// What [`offer`] leaves behind: the pipeline's stamps and how many events it committed.
pub struct Offered {
    pub stamps: Arc<Stamps>,
    pub events: u64,
}

/// Offers `rate` events per second for `span` on a fresh pipeline, calling `at_tick(elapsed)`
/// before each commit (to inject faults), waits until all are applied and stops it; also
/// answers how long after the last commit the last event was applied.
pub async fn offer(
    backends: &Backends,
    run: &str,
    rate: u64,
    span: Duration,
    mut at_tick: impl FnMut(&Pipeline),
) -> anyhow::Result<(Offered, Duration)> {
    let per_tick = (rate / 1000).max(1);
    let events = rate * span.as_millis() as u64 / 1000;
    let pipeline = Pipeline::start(backends, run, events).await?;
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut next = 1;
    while next <= events {
        ticks.tick().await;
        at_tick(&pipeline);
        let count = per_tick.min(events + 1 - next);
        pipeline.commit(next, count).await?;
        next += count;
    }
    at_tick(&pipeline);
    let last_commit = pipeline.stamps.origin.elapsed();
    pipeline.applied(events, Duration::from_secs(300)).await?;
    let drained = pipeline.stamps.last_applied(events).saturating_sub(last_commit);
    let stamps = pipeline.stamps.clone();
    pipeline.stop().await;
    Ok((Offered { stamps, events }, drained))
}
