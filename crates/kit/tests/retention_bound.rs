//! Bounded storage, measured: a million events through the embedded event path (outbox,
//! relay, embedded bus, consumer with its inbox) in a data directory, whose size on disk
//! (sampled during the run and at its end) must stay under the bound docs/event-kit.md
//! states for these settings, with a backlog of at most 20,000 events.
//!
//! It takes minutes, so it is ignored by default; run it with
//! `cargo test -p capshop-kit --test retention_bound -- --ignored --nocapture`
//! (`CAPSHOP_RETENTION_EVENTS` sets another count).

#![allow(clippy::print_stderr, reason = "the measurement reports what it measured")]

use std::path::Path;
use std::time::Duration;

use kit::bus::{ConsumerSpec, EmbeddedBus, Retention};
use kit::consumer::{Consumer, ConsumerConfig, Handler, HandlerError};
use kit::envelope::{Envelope, NewEvent, StreamName};
use kit::inbox::InboxRetention;
use kit::outbox::{self, Outbox};
use kit::relay::Relay;
use kit::store::{Migrations, Store, StoreError, Tx};
use serde_json::json;

/// How long settled log messages and passed inbox ids are kept in this measurement.
const KEEP: Duration = Duration::from_secs(5);
/// The log's size bound in this measurement.
const LOG_BYTES: u64 = 32 << 20;
/// Events committed but not yet applied, at most: the producer waits beyond it.
const BACKLOG: u64 = 20_000;
/// What the data directory may hold after the run with these settings.
const BOUND_BYTES: u64 = 96 << 20;

const LATEST: Migrations = Migrations {
    component: "latest",
    sqlite: &["CREATE TABLE latest (key TEXT PRIMARY KEY, version INTEGER NOT NULL)"],
    postgres: &[],
};

/// Keeps the latest version per key: state bounded by the keys, so the directory's growth
/// is the kit's own.
struct Latest;

impl Handler for Latest {
    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        tx.execute(
            "INSERT INTO latest (key, version) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET version = max(latest.version, excluded.version)",
            &[event.key.as_str().into(), event.version.into()],
        )?;
        Ok(())
    }
}

fn size_of(dir: &Path) -> u64 {
    std::fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().metadata().unwrap().len()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a million events take minutes; run it with --ignored to measure the bound"]
async fn a_data_dir_stays_under_its_bound_after_a_million_events() {
    let events: u64 =
        std::env::var("CAPSHOP_RETENTION_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| format!("sqlite:{}", dir.path().join(name).display());
    let producer = Store::open(&path("producer.db"), &[&outbox::MIGRATIONS]).await.unwrap();
    let replica = Store::open(&path("replica.db"), &[&outbox::MIGRATIONS, &LATEST]).await.unwrap();
    let retention = Retention { max_age: KEEP, max_bytes: LOG_BYTES, ..Retention::default() };
    let log = dir.path().join("bus.db").display().to_string();
    let bus: std::sync::Arc<dyn kit::bus::Bus> =
        std::sync::Arc::new(EmbeddedBus::open_with(&log, retention).await.unwrap());
    let outbox = Outbox::new(StreamName::parse("lab").unwrap());

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let relaying = tokio::spawn(
        Relay::new(producer.clone(), outbox.clone(), bus.clone()).run(until_stopped(stopped.clone())),
    );
    let inbox = InboxRetention { keep_for: KEEP, every: Duration::from_secs(1), ..InboxRetention::default() };
    let config = ConsumerConfig::new(ConsumerSpec::new("lab-replica", &["lab"])).inbox(inbox);
    let consumer = Consumer::new(replica.clone(), bus.clone(), Latest, config);
    let counters = consumer.counters_handle();
    let consuming = tokio::spawn(consumer.run(until_stopped(stopped.clone())));

    let started = std::time::Instant::now();
    let (mut next, mut largest) = (0, 0);
    while next < events {
        // Flow control, as a steady load would have: the backlog stays under BACKLOG
        // events, so what the directory holds is the retention, not a queue.
        while next - counters.applied.get() > BACKLOG {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let count = 100.min(events - next);
        let (outbox, first) = (outbox.clone(), next);
        producer
            .transact(move |tx| {
                let batch = (first + 1..=first + count)
                    .map(|n| NewEvent::new("Counted", format!("k-{}", n % 64), n, json!({ "n": n })))
                    .collect();
                outbox.append(tx, batch).map(|_| ())
            })
            .await
            .unwrap();
        next += count;
        if next % 100_000 == 0 {
            largest = largest.max(size_of(dir.path()));
        }
    }
    while counters.applied.get() < events {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(true);
    relaying.await.unwrap();
    consuming.await.unwrap();
    let inbox_rows: u64 = replica
        .transact(|tx| tx.query_one("SELECT count(*) FROM kit_inbox", &[])?.get(0))
        .await
        .map_err(|e: StoreError| e)
        .unwrap();
    let total = size_of(dir.path());
    largest = largest.max(total);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        eprintln!("{:>12} {}", entry.metadata().unwrap().len(), entry.file_name().to_string_lossy());
    }
    eprintln!(
        "{events} events in {:.0} s; data dir {total} bytes at the end, {largest} at most; {inbox_rows} inbox rows",
        started.elapsed().as_secs_f64()
    );
    assert!(largest < BOUND_BYTES, "the data dir grew to {largest} bytes, over the stated {BOUND_BYTES}");
}
