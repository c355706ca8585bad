//! The kit when a consumer's own PostgreSQL fails under load: killed and restarted, or
//! frozen (SIGSTOP of every server process) for longer than the store's call bound; and a
//! relay beside a writer that keeps its transaction open. Real PostgreSQL servers of the
//! tests' own; skipped loudly when none is on PATH, failing in CI.

#![allow(clippy::print_stderr, reason = "the outage tests report what they measured")]

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use kit::bus::{Bus, DeadLetterFilter, EmbeddedBus};
use kit::consumer::{Consumer, ConsumerConfig, Handler, HandlerError};
use kit::envelope::{Envelope, NewEvent, StreamName};
use kit::outbox::{self, Outbox};
use kit::relay::Relay;
use kit::store::{Migrations, Store, StoreError, Tx};
use kit::testserver::PgServer;
use tokio::sync::watch;

/// Real time after which a test that has not converged is taken to have lost events.
const PATIENCE: Duration = Duration::from_secs(120);

/// Events the producer commits during each test, in batches, at a steady pace.
const EVENTS: usize = 3000;
const BATCH: usize = 10;
const PACE: Duration = Duration::from_millis(3);

/// How many times each event was applied, by event id.
const APPLIED: Migrations = Migrations {
    component: "applied",
    sqlite: &["CREATE TABLE applied (id TEXT PRIMARY KEY, times INTEGER NOT NULL)"],
    postgres: &["CREATE TABLE applied (id TEXT PRIMARY KEY, times BIGINT NOT NULL)"],
};

/// Counts every application of an event; the inbox must keep each at one.
struct Record;

impl Handler for Record {
    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        tx.execute(
            "INSERT INTO applied (id, times) VALUES ($1, 1) ON CONFLICT (id) DO UPDATE SET times = applied.times + 1",
            &[event.id.to_string().as_str().into()],
        )?;
        Ok(())
    }
}

/// A producer in memory (its outbox and relay to an embedded bus) and a consumer on a
/// PostgreSQL database of `server`, all running until the pipeline is dropped.
struct Pipeline {
    bus: Arc<dyn Bus>,
    replica: Store,
    consumer: kit::metrics::ConsumerCounters,
    produced: tokio::task::JoinHandle<()>,
    _stop: watch::Sender<bool>,
}

impl Pipeline {
    async fn start(replica_url: &str) -> Pipeline {
        let bus: Arc<dyn Bus> =
            Arc::new(EmbeddedBus::open(":memory:").await.expect("an in-memory bus opens"));
        let producer =
            Store::open("sqlite::memory:", &[&outbox::MIGRATIONS]).await.expect("the producer opens");
        let replica =
            Store::open(replica_url, &[&outbox::MIGRATIONS, &APPLIED]).await.expect("the replica opens");
        let outbox = Outbox::new(StreamName::parse("orders").unwrap());
        let (stop, stopped) = watch::channel(false);
        let until_stopped = |mut stopped: watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        let relay = Relay::new(producer.clone(), outbox.clone(), bus.clone());
        tokio::spawn(relay.run(until_stopped(stopped.clone())));
        let consumer = Consumer::new(
            replica.clone(),
            bus.clone(),
            Record,
            ConsumerConfig::new(kit::bus::ConsumerSpec::new("replica", &["orders"])),
        );
        let counters = consumer.counters_handle();
        tokio::spawn(consumer.run(until_stopped(stopped)));
        let produced = tokio::spawn(async move {
            for batch in 0..EVENTS / BATCH {
                let events: Vec<NewEvent> = (0..BATCH)
                    .map(|i| {
                        NewEvent::new(
                            "Ordered",
                            format!("o-{}", (batch * BATCH + i) % 97),
                            1,
                            serde_json::json!({}),
                        )
                    })
                    .collect();
                let outbox = outbox.clone();
                producer.transact(move |tx| outbox.append(tx, events)).await.expect("the producer commits");
                tokio::time::sleep(PACE).await;
            }
        });
        Pipeline { bus, replica, consumer: counters, produced, _stop: stop }
    }

    /// `(events applied, the most times one was applied)`, or the store's error.
    async fn applied(&self) -> Result<(u64, u64), StoreError> {
        self.replica
            .transact(|tx| {
                let row = tx.query_one("SELECT count(*), coalesce(max(times), 0) FROM applied", &[])?;
                Ok((row.get(0)?, row.get(1)?))
            })
            .await
    }

    /// Waits until the replica has applied at least `count` events.
    async fn wait_applied(&self, count: u64) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if matches!(self.applied().await, Ok((n, _)) if n >= count) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "the replica did not reach {count} events");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until everything produced is applied, then checks that nothing was applied
    /// twice, nothing became a dead letter and no attempt was used.
    async fn assert_converged(&mut self) {
        (&mut self.produced).await.expect("the producer finished");
        self.wait_applied(EVENTS as u64).await;
        let (applied, most) = self.applied().await.expect("the replica answers");
        assert_eq!(applied, EVENTS as u64, "every event applied");
        assert_eq!(most, 1, "an event was applied twice");
        let letters = self.bus.dead_letters(&DeadLetterFilter::all()).await.unwrap();
        assert!(letters.is_empty(), "the store's outage made dead letters: {letters:?}");
        assert_eq!(self.consumer.dead_lettered.get(), 0);
        assert_eq!(self.consumer.retried.get(), 0, "the store's outage used attempts");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_whose_postgres_is_killed_under_load_and_restarted_converges_with_no_dead_letter() {
    let Some(server) = PgServer::start() else { return };
    let mut pipeline = Pipeline::start(&server.create_database("replica")).await;
    pipeline.wait_applied(300).await;
    tokio::task::block_in_place(|| server.kill());
    // The consumer meets refused connections for a while, under its outage backoff.
    let down = pipeline.applied().await;
    assert!(matches!(&down, Err(e) if e.is_unavailable()), "a killed server is unavailable: {down:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| server.restart());
    let restarted = tokio::time::Instant::now();
    pipeline.assert_converged().await;
    eprintln!("converged {:?} after the server restarted", restarted.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_store_call_gives_up_within_the_bound_while_postgres_is_frozen_and_all_converges_after() {
    let Some(server) = PgServer::start() else { return };
    let bound = 2.0;
    let url = format!("{}?call_timeout={bound}", server.create_database("replica"));
    let mut pipeline = Pipeline::start(&url).await;
    pipeline.wait_applied(300).await;
    tokio::task::block_in_place(|| server.stop());
    // Every call made while the server is frozen returns, unavailable, before it goes on:
    // the client's bound answered, since the server answers nothing.
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let replica = pipeline.replica.clone();
            tokio::spawn(async move {
                let asked = tokio::time::Instant::now();
                let answered = replica.transact(|tx| tx.query_one("SELECT 1", &[]).map(drop)).await;
                eprintln!(
                    "a call to the frozen server answered after {:?} (bound {bound} s)",
                    asked.elapsed()
                );
                answered
            })
        })
        .collect();
    for call in calls {
        let answered = tokio::time::timeout(PATIENCE, call).await.expect("a store call hung").unwrap();
        match answered {
            Err(e) => {
                assert!(e.is_unavailable(), "{e}");
                assert!(e.to_string().contains("did not answer within"), "the client's bound gave up: {e}");
            }
            Ok(()) => panic!("a frozen server answered"),
        }
    }
    tokio::task::block_in_place(|| server.cont());
    let thawed = tokio::time::Instant::now();
    pipeline.assert_converged().await;
    eprintln!("converged {:?} after the server went on", thawed.elapsed());
}

/// A writer that appended and keeps its transaction open holds its stream's head row: the
/// relay still publishes what was committed before and records it, without waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_is_not_blocked_by_a_writer_holding_its_transaction_open() {
    let Some(server) = PgServer::shared() else { return };
    let url = server.create_database("relay_beside_a_writer");
    let writer = Store::open(&url, &[&outbox::MIGRATIONS]).await.unwrap();
    let relaying = Store::open(&url, &[&outbox::MIGRATIONS]).await.unwrap();
    let outbox = Outbox::new(StreamName::parse("orders").unwrap());
    let event = |n: u64| NewEvent::new("Ordered", format!("o-{n}"), 1, serde_json::json!({}));
    let committed = outbox.clone();
    writer.transact(move |tx| committed.append(tx, (1..=3).map(event).collect())).await.unwrap();

    let (appended, wait_appended) = std_mpsc::channel::<()>();
    let (finish, finished) = std_mpsc::channel::<()>();
    let open = outbox.clone();
    let long_writer = tokio::spawn(async move {
        writer
            .transact(move |tx| {
                open.append(tx, vec![event(4)])?;
                appended.send(()).unwrap();
                finished.recv_timeout(PATIENCE).expect("the test lets the writer finish");
                Ok::<_, StoreError>(())
            })
            .await
    });
    tokio::task::block_in_place(|| wait_appended.recv_timeout(PATIENCE)).expect("the writer appended");

    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::open(":memory:").await.unwrap());
    let relay = Relay::new(relaying.clone(), outbox.clone(), bus.clone());
    let moved = relay.relay_batch().await;
    finish.send(()).unwrap();
    assert_eq!(moved.expect("the relay published and recorded while the writer was open"), 3);
    long_writer.await.unwrap().expect("the writer commits after");
    assert_eq!(relay.relay_batch().await.unwrap(), 1, "the writer's event follows");
    assert_eq!(bus.stream_head("orders").await.unwrap(), 4);
}
