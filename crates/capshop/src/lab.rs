//! `capshop lab pipeline`: one producer, the relay, the embedded bus and one consumer on
//! files in a directory, driven until every event is applied.
//!
//! It resumes where a previous run in the same directory stopped, which is what the crash
//! tests use: a run is frozen at a kit crash point, killed with SIGKILL and run again, and
//! the report shows whether any event was lost or applied twice. The timing it prints is
//! the commit-to-replica throughput of the embedded event path.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use kit::bus::ConsumerSpec;
use kit::consumer::{Consumer, ConsumerConfig, Handler, HandlerError};
use kit::envelope::{Envelope, NewEvent, StreamName};
use kit::outbox::{self, Outbox};
use kit::relay::Relay;
use kit::store::{Migrations, Store, StoreError, Tx};
use serde_json::json;

#[derive(Subcommand)]
pub enum LabCommand {
    /// Commits events, relays them and applies them to a replica; prints a JSON report.
    Pipeline(PipelineArgs),
}

#[derive(Args)]
pub struct PipelineArgs {
    /// Where the producer, bus and replica files live (kept across runs).
    #[arg(long)]
    dir: PathBuf,
    /// Events to commit in total.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Events per producer transaction.
    #[arg(long, default_value_t = 100)]
    per_commit: u64,
}

const PRODUCER: Migrations = Migrations {
    component: "lab-producer",
    sqlite: &["CREATE TABLE lab_progress (id INTEGER PRIMARY KEY, produced INTEGER NOT NULL)"],
    postgres: &[],
};

/// The replica records every application as a row, so a second effect would show.
const REPLICA: Migrations = Migrations {
    component: "lab-replica",
    sqlite: &["CREATE TABLE lab_applied (n INTEGER NOT NULL)"],
    postgres: &[],
};

struct Recorder;

impl Handler for Recorder {
    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        let n = event.payload["n"].as_u64().ok_or_else(|| HandlerError::permanent("payload without n"))?;
        tx.execute("INSERT INTO lab_applied (n) VALUES ($1)", &[n.into()])?;
        Ok(())
    }
}

pub async fn run(command: LabCommand) -> anyhow::Result<()> {
    match command {
        LabCommand::Pipeline(args) => pipeline(args).await,
    }
}

async fn pipeline(args: PipelineArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("cannot create {}", args.dir.display()))?;
    let path = |name: &str| args.dir.join(name).display().to_string();
    let producer =
        Store::open(&format!("sqlite:{}", path("producer.db")), &[&outbox::MIGRATIONS, &PRODUCER]).await?;
    let replica =
        Store::open(&format!("sqlite:{}", path("replica.db")), &[&outbox::MIGRATIONS, &REPLICA]).await?;
    let bus = kit::bus::connect(&format!("embedded:{}", path("bus.db"))).await?;
    let outbox = Outbox::new(StreamName::parse("lab")?);

    let (produced_at_start, applied_at_start) = (produced(&producer).await?, applied(&replica).await?.0);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let relay = Relay::new(producer.clone(), outbox.clone(), bus.clone());
    let relaying = tokio::spawn(relay.run(until_stopped(stopped.clone())));
    let config = ConsumerConfig::new(ConsumerSpec::new("lab-replica", &["lab"]));
    let consumer = Consumer::new(replica.clone(), bus.clone(), Recorder, config);
    let counters = consumer.counters_handle();
    let consuming = tokio::spawn(consumer.run(until_stopped(stopped.clone())));

    let started = Instant::now();
    let mut next = produced_at_start;
    while next < args.events {
        let count = args.per_commit.min(args.events - next);
        let (outbox, first) = (outbox.clone(), next);
        producer
            .transact(move |tx| {
                let events = (first + 1..=first + count)
                    .map(|n| NewEvent::new("Counted", format!("k-{}", n % 64), n, json!({ "n": n })))
                    .collect();
                outbox.append(tx, events)?;
                tx.execute(
                    "INSERT INTO lab_progress (id, produced) VALUES (1, $1) \
                     ON CONFLICT (id) DO UPDATE SET produced = excluded.produced",
                    &[(first + count).into()],
                )?;
                Ok::<_, StoreError>(())
            })
            .await?;
        next += count;
    }
    let committed = started.elapsed();
    let (rows, distinct, min, max) = loop {
        let counts = applied(&replica).await?;
        if counts.1 >= args.events {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let elapsed = started.elapsed();
    let _ = stop.send(true);
    relaying.await?;
    consuming.await?;
    let new_events = args.events - produced_at_start;
    let report = json!({
        "events": args.events,
        "produced_at_start": produced_at_start,
        "applied_at_start": applied_at_start,
        "applied_rows": rows,
        "applied_distinct": distinct,
        "first": min,
        "last": max,
        "lost": args.events - distinct,
        "applied_twice": rows - distinct,
        "duplicates_skipped": counters.duplicates.get(),
        "commit_seconds": committed.as_secs_f64(),
        "seconds": elapsed.as_secs_f64(),
        "events_per_second": (new_events as f64 / elapsed.as_secs_f64()).round(),
    });
    println!("{report}");
    Ok(())
}

async fn produced(store: &Store) -> anyhow::Result<u64> {
    Ok(store
        .transact(|tx| {
            tx.query_opt("SELECT produced FROM lab_progress WHERE id = 1", &[])?
                .map_or(Ok(0), |r| r.get::<u64>(0))
        })
        .await?)
}

/// Rows, distinct events, lowest and highest event applied.
async fn applied(store: &Store) -> anyhow::Result<(u64, u64, u64, u64)> {
    Ok(store
        .transact(|tx| {
            let row = tx.query_one(
                "SELECT count(*), count(DISTINCT n), coalesce(min(n), 0), coalesce(max(n), 0) FROM lab_applied",
                &[],
            )?;
            Ok::<_, StoreError>((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .await?)
}
