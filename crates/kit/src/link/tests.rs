//! The faults inside the bus never break a correct consumer: with each one on, on the
//! embedded bus and on NATS, every published event is applied exactly once (the inbox
//! absorbs the copies and redeliveries), a per-key consumer still sees each key in order,
//! and a version-gated replica ends at each key's newest version. Each test also shows the
//! fault happened (copies were absorbed, deliveries overtaken), so it cannot pass idle.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{Faults, Link, LinkedBus};
use crate::bus::{Bus, ConsumerSpec, Ordering};
use crate::consumer::{Consumer, ConsumerConfig, Handler, HandlerError};
use crate::envelope::{Envelope, NewEvent};
use crate::metrics::ConsumerCounters;
use crate::replica::VersionGate;
use crate::store::{Migrations, Store, StoreError, Tx};
use crate::testkit::Producer;
use crate::testserver::NatsServer;

const KEYS: u64 = 4;
const VERSIONS: u64 = 8;
const ACK_WAIT: Duration = Duration::from_secs(2);
/// Real time after which a test that still misses events is taken to have lost them.
const PATIENCE: Duration = Duration::from_secs(60);

const JOURNAL: Migrations = Migrations {
    component: "journal",
    sqlite: &[
        "CREATE TABLE journal (n INTEGER NOT NULL, seq INTEGER NOT NULL, key TEXT NOT NULL, version INTEGER NOT NULL)",
    ],
    postgres: &[
        "CREATE TABLE journal (n BIGINT NOT NULL, seq BIGINT NOT NULL, key TEXT NOT NULL, version BIGINT NOT NULL)",
    ],
};

/// Records every event it applies, in the order it applies them, and keeps a
/// version-gated replica of each key.
struct Journal {
    gate: VersionGate,
}

impl Handler for Journal {
    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        tx.execute(
            "INSERT INTO journal (n, seq, key, version) VALUES ((SELECT count(*) FROM journal), $1, $2, $3)",
            &[event.seq.into(), event.key.as_str().into(), event.version.into()],
        )?;
        self.gate.admit(tx, "journal", &event.key, event.version)?;
        Ok(())
    }
}

/// `(seq, key, version)` of every applied event, in the order applied.
async fn journal(store: &Store) -> Vec<(u64, String, u64)> {
    store
        .transact(|tx| {
            tx.query("SELECT seq, key, version FROM journal ORDER BY n", &[])?
                .into_iter()
                .map(|mut r| Ok((r.get(0)?, r.take(1)?, r.get(2)?)))
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .await
        .unwrap()
}

/// The newest version the replica admitted for each key.
async fn replica(store: &Store) -> Vec<Option<u64>> {
    store
        .transact(|tx| (0..KEYS).map(|k| VersionGate::version(tx, "journal", &format!("k-{k}"))).collect())
        .await
        .unwrap()
}

/// The bus a test runs on, kept alive (with its server) for the test.
struct TestBus {
    bus: Arc<dyn Bus>,
    _server: Option<NatsServer>,
}

async fn embedded() -> Option<TestBus> {
    Some(TestBus { bus: crate::testkit::memory_bus().await, _server: None })
}

async fn nats() -> Option<TestBus> {
    let server = NatsServer::start().await?;
    let bus = crate::bus::connect(&server.url()).await.expect("the nats bus connects");
    Some(TestBus { bus, _server: Some(server) })
}

/// What a run under one fault applied, and the consumer's counters.
struct Run {
    journal: Vec<(u64, String, u64)>,
    replica: Vec<Option<u64>>,
    counters: ConsumerCounters,
}

/// Publishes every version of every key, interleaved, and consumes them through a link
/// with `faults` until each was applied, then two ack waits more, so redeliveries and
/// copies have come (and were absorbed) before the journal is read.
async fn run_under(bus: Arc<dyn Bus>, faults: Faults, ordering: Ordering) -> Run {
    // The shop's three attempts where a delay is held back (at most once a message, then);
    // many where lost acks may use several.
    let attempts = if faults.delay > 0.0 { 3 } else { 50 };
    let producer = Producer::new("orders", bus.clone()).await;
    let events: Vec<NewEvent> = (1..=VERSIONS)
        .flat_map(|v| (0..KEYS).map(move |k| NewEvent::new("Journaled", format!("k-{k}"), v, json!({}))))
        .collect();
    producer.emit(events).await;
    let link = Link::new("journal->bus");
    link.set(faults);
    let linked: Arc<dyn Bus> = Arc::new(LinkedBus::new(bus, link));
    let store = Store::open("sqlite::memory:", &[&crate::outbox::MIGRATIONS, &JOURNAL]).await.unwrap();
    let spec = ConsumerSpec::new("journal", &["orders"])
        .ordering(ordering)
        .ack_wait(ACK_WAIT)
        .max_attempts(attempts);
    // Small batches, so a delayed delivery is overtaken by several later fetches.
    let config = ConsumerConfig::new(spec).batch(5);
    let consumer = Consumer::new(store.clone(), linked, Journal { gate: VersionGate::new() }, config);
    let counters = consumer.counters_handle();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(consumer.run(async {
        let _ = stopped.await;
    }));
    let started = tokio::time::Instant::now();
    while (journal(&store).await.len() as u64) < KEYS * VERSIONS {
        assert!(started.elapsed() < PATIENCE, "events are missing: {:?}", journal(&store).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(ACK_WAIT * 2).await;
    let _ = stop.send(());
    running.await.unwrap();
    Run { journal: journal(&store).await, replica: replica(&store).await, counters }
}

impl Run {
    /// Every published event applied exactly once, and each key's replica at its newest.
    fn assert_each_event_applied_once(&self) {
        let mut seqs: Vec<u64> = self.journal.iter().map(|(seq, ..)| *seq).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=KEYS * VERSIONS).collect::<Vec<_>>(), "each event once: {:?}", self.journal);
        assert_eq!(self.replica, vec![Some(VERSIONS); KEYS as usize], "each replica at its newest version");
    }

    /// Each key's events were applied in version order.
    fn assert_each_key_in_order(&self) {
        for k in 0..KEYS {
            let key = format!("k-{k}");
            let versions: Vec<u64> = self.journal.iter().filter(|e| e.1 == key).map(|e| e.2).collect();
            assert_eq!(versions, (1..=VERSIONS).collect::<Vec<_>>(), "{key} out of order");
        }
    }

    fn overtaken(&self) -> bool {
        self.journal.windows(2).any(|w| w[1].0 < w[0].0)
    }

    fn overtaken_within_a_key(&self) -> bool {
        (0..KEYS).any(|k| {
            let key = format!("k-{k}");
            let versions: Vec<u64> = self.journal.iter().filter(|e| e.1 == key).map(|e| e.2).collect();
            versions.windows(2).any(|w| w[1] < w[0])
        })
    }
}

async fn duplicated_deliveries_apply_once(bus: TestBus) {
    let run = run_under(bus.bus, Faults { duplicate: 0.5, ..Faults::default() }, Ordering::PerKey).await;
    run.assert_each_event_applied_once();
    run.assert_each_key_in_order();
    assert!(run.counters.duplicates.get() > 0, "the copies reached the consumer and were absorbed");
}

async fn lost_acks_are_redelivered_and_apply_once(bus: TestBus) {
    let run = run_under(bus.bus, Faults { lost_ack: 0.3, ..Faults::default() }, Ordering::PerKey).await;
    run.assert_each_event_applied_once();
    run.assert_each_key_in_order();
    assert!(run.counters.duplicates.get() > 0, "the bus redelivered what was not acked, and it was absorbed");
}

async fn delayed_deliveries_reorder_keys_but_not_a_per_key_consumers_key(bus: TestBus) {
    let run = run_under(bus.bus, Faults { delay: 0.5, ..Faults::default() }, Ordering::PerKey).await;
    run.assert_each_event_applied_once();
    run.assert_each_key_in_order();
    assert!(run.overtaken(), "later events overtook delayed ones: {:?}", run.journal);
}

async fn delayed_deliveries_overtaken_within_a_key_end_at_the_newest_version(bus: TestBus) {
    let run = run_under(bus.bus, Faults { delay: 0.5, ..Faults::default() }, Ordering::Unordered).await;
    run.assert_each_event_applied_once();
    assert!(run.overtaken_within_a_key(), "a key's later version overtook a delayed one: {:?}", run.journal);
}

/// One `#[tokio::test]` per named fn on each bus: `embedded` and `nats` (skipped loudly
/// without a nats-server, failing in CI).
macro_rules! on_both_buses {
    ($($name:ident),* $(,)?) => {
        mod embedded_bus {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(bus) = super::embedded().await {
                        super::$name(bus).await
                    }
                }
            )*
        }
        mod nats_bus {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(bus) = super::nats().await {
                        super::$name(bus).await
                    }
                }
            )*
        }
    };
}

on_both_buses!(
    duplicated_deliveries_apply_once,
    lost_acks_are_redelivered_and_apply_once,
    delayed_deliveries_reorder_keys_but_not_a_per_key_consumers_key,
    delayed_deliveries_overtaken_within_a_key_end_at_the_newest_version,
);
