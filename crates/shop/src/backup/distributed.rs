//! The cut of the distributed mode (a process per service, a PostgreSQL database each,
//! NATS JetStream), taken by the gateway: every service process's pause is held through
//! its `/admin/pause` ([`super::hold`]), all at once; every database pins a REPEATABLE
//! READ snapshot and exports it (`pg_export_snapshot()`), all at once but payment after
//! order and dc2 after dc1 ([`super::pin`]); the pauses are released, all at once; then
//! each database's facts are read at its snapshot and, for a backup, it is copied with
//! `pg_dump --snapshot`, and the events in flight are read back from the bus
//! ([`super::events`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kit::bus::{Bus, DeadLetterFilter};
use kit::store::Store;
use kit::store::pg_snapshot::{self, Exported, Exporter};
use tokio::time::Instant;

use super::BackupError;
use super::hold::{HoldReleased, HoldTaken};
use super::manifest::PauseSteps;
use super::pin;
use crate::contracts::facts::{BusFacts, BusStream, PartFacts, ShopFacts};
use crate::facts::parts;
use crate::stores::StoreLocation;

/// What a distributed backup reaches: every service process, every database, the bus.
pub struct Cluster {
    /// The base URL of every service process (every instance of each part).
    processes: Vec<String>,
    /// Each part's database URL, in [`parts`]' order.
    databases: Vec<(String, String)>,
    bus: Arc<dyn Bus>,
    client: reqwest::Client,
    token: String,
}

/// One database pinned at the cut: its exported snapshot, and a store to read it with.
pub(super) struct Pinned {
    pub part: String,
    pub url: String,
    pub exported: Exported,
    pub store: Store,
}

/// A part's facts at the cut, with what the certificate and the manifest need of it.
pub(super) struct Read {
    pub facts: PartFacts,
    pub waiting: BTreeMap<String, BTreeSet<u64>>,
    pub schema: BTreeMap<String, u32>,
}

/// Every database pinned at one cut, the facts read there, and how long the pauses held.
pub(super) struct Cut {
    pub pinned: Vec<Pinned>,
    pub facts: ShopFacts,
    pub reads: Vec<Read>,
    pub pause: Duration,
    pub steps: PauseSteps,
}

/// One process's pause, held.
struct Hold {
    process: String,
    id: u64,
    waited_ms: f64,
}

fn unreachable(what: &str, e: impl std::fmt::Display) -> BackupError {
    BackupError::io(format!("cannot reach {what}"), e)
}

impl Cluster {
    /// The shop whose service processes listen at `processes`, whose databases are
    /// `capshop_<part>` on the server at `database_base` (`postgres://user@host:port`), and
    /// whose bus is `bus`.
    pub fn new(processes: Vec<String>, database_base: &str, bus: Arc<dyn Bus>, token: String) -> Self {
        let base = database_base.trim_end_matches('/');
        let databases = parts()
            .into_iter()
            .map(|p| (p.clone(), format!("{base}/{}", StoreLocation::database(&p))))
            .collect();
        let mut processes = processes;
        processes.sort();
        processes.dedup();
        Self { processes, databases, bus, client: reqwest::Client::new(), token }
    }

    pub fn bus(&self) -> &dyn Bus {
        self.bus.as_ref()
    }

    /// Every database at one cut: connections opened and transactions begun first, then
    /// every process's pause held while every database pins its snapshot ([`super::pin`]),
    /// then the pauses released and the facts read at the snapshots.
    pub(super) async fn cut(&self) -> Result<Cut, BackupError> {
        let opened = pin::open_all(&self.databases).await?;
        let before = self.heads().await?;
        let asked = Instant::now();
        let since = || asked.elapsed().as_secs_f64() * 1e3;
        let holds = self.hold_all().await?;
        let mut steps = PauseSteps { holds_answered_ms: since(), ..PauseSteps::default() };
        steps.waited_ms = holds.iter().map(|h| (h.process.clone(), h.waited_ms)).collect();
        let pinned = pin::pin_all(opened, asked).await;
        let released = self.release_all(&holds).await;
        steps.released_ms = since();
        let (pinned, pinned_ms) = pinned?;
        steps.pinned_ms = pinned_ms;
        steps.held_ms = released?;
        // From asking for the holds to their release answered: a consumer waits no longer.
        let longest = steps.held_ms.values().copied().fold(steps.released_ms, f64::max);
        let pause = Duration::from_secs_f64(longest / 1e3);
        tracing::debug!(?steps, "the distributed cut's pause");
        let (facts, reads) = self.read(&pinned, &before).await?;
        Ok(Cut { pinned, facts, reads, pause, steps })
    }

    /// Pins `part`'s database on its own, with no pause: one step of a naive backup.
    pub(super) async fn pin_alone(&self, part: &str) -> Result<Pinned, BackupError> {
        let (_, url) = self
            .databases
            .iter()
            .find(|(p, _)| p == part)
            .ok_or_else(|| BackupError::io("cannot pin", format!("no part {part}")))?;
        let exporter =
            Exporter::connect(url).await.map_err(|e| unreachable(&format!("{part}'s database"), e))?;
        let store = Store::open(url, &[]).await.map_err(|e| unreachable(&format!("{part}'s database"), e))?;
        let pin = async { exporter.begin().await?.export().await };
        let exported = pin.await.map_err(|e| BackupError::io(format!("cannot pin {part}"), e))?;
        Ok(Pinned { part: part.to_owned(), url: url.clone(), exported, store })
    }

    /// The parts, in the order a backup copies them.
    pub(super) fn parts(&self) -> impl Iterator<Item = &str> {
        self.databases.iter().map(|(p, _)| p.as_str())
    }

    /// The facts of every pinned database at its snapshot, and the bus's as seen after the
    /// snapshots (heads read before them stand for what the bus held at the cut at most).
    async fn read(
        &self,
        pinned: &[Pinned],
        before: &BTreeMap<String, u64>,
    ) -> Result<(ShopFacts, Vec<Read>), BackupError> {
        let mut reads = Vec::new();
        for p in pinned {
            reads.push(read_one(p, before).await?);
        }
        Ok((self.facts_of(&reads).await?, reads))
    }

    /// The shop's facts from the parts' `reads` and the bus as it is now.
    pub(super) async fn facts_of(&self, reads: &[Read]) -> Result<ShopFacts, BackupError> {
        let parts = reads.iter().map(|r| r.facts.clone()).collect();
        Ok(ShopFacts { cut: true, live: false, parts, bus: self.bus_facts().await? })
    }

    /// Every stream's head on the bus now.
    pub(super) async fn heads(&self) -> Result<BTreeMap<String, u64>, BackupError> {
        let mut heads = BTreeMap::new();
        for stream in parts() {
            let head = self.bus.stream_head(&stream).await.map_err(|e| unreachable("the bus", e))?;
            heads.insert(stream, head);
        }
        Ok(heads)
    }

    async fn bus_facts(&self) -> Result<BusFacts, BackupError> {
        let streams =
            self.heads().await?.into_iter().map(|(stream, head)| BusStream { stream, head }).collect();
        let letters =
            self.bus.dead_letters(&DeadLetterFilter::all()).await.map_err(|e| unreachable("the bus", e))?;
        let dead_letters = letters.into_iter().map(crate::service::facts::dead_letter_fact).collect();
        Ok(BusFacts { streams, dead_letters, unreachable: Vec::new() })
    }

    /// Sends `method` `path` to the process at `base` with the admin token.
    async fn ask(
        &self,
        method: reqwest::Method,
        base: &str,
        path: &str,
    ) -> Result<reqwest::Response, BackupError> {
        let request = self.client.request(method, format!("{base}{path}")).bearer_auth(&self.token);
        request.send().await.map_err(|e| unreachable(base, e))
    }

    /// Holds every process's pause, all at once; on a failure the holds taken are released.
    async fn hold_all(&self) -> Result<Vec<Hold>, BackupError> {
        let asks = self.processes.iter().map(|base| async move {
            let answer = self.ask(reqwest::Method::POST, base, "/admin/pause").await?;
            if !answer.status().is_success() {
                return Err(unreachable(base, format!("its pause answered {}", answer.status())));
            }
            let taken: HoldTaken = answer.json().await.map_err(|e| unreachable(base, e))?;
            Ok(Hold { process: base.clone(), id: taken.hold, waited_ms: taken.waited_ms })
        });
        let answers = futures_util::future::join_all(asks).await;
        let mut held = Vec::new();
        let mut failure = None;
        for answer in answers {
            match answer {
                Ok(hold) => held.push(hold),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        if let Some(e) = failure {
            let _ = self.release_all(&held).await;
            return Err(e);
        }
        Ok(held)
    }

    /// Releases every hold, all at once; answers how long each process was held. A hold
    /// that had ended by itself fails the cut: some consumer may have moved while the
    /// snapshots were pinned.
    async fn release_all(&self, holds: &[Hold]) -> Result<BTreeMap<String, f64>, BackupError> {
        let asks = holds.iter().map(|hold| async move {
            let base = &hold.process;
            let path = format!("/admin/pause/{}", hold.id);
            let answer = self.ask(reqwest::Method::DELETE, base, &path).await?;
            if !answer.status().is_success() {
                return Err(BackupError::io(
                    format!("the pause of {base} ended before the snapshots were pinned"),
                    answer.status(),
                ));
            }
            let released: HoldReleased = answer.json().await.map_err(|e| unreachable(base, e))?;
            Ok((base.clone(), released.held_ms))
        });
        futures_util::future::join_all(asks).await.into_iter().collect()
    }
}

/// One pinned database's facts at its snapshot; `before` holds the bus heads read before
/// it was pinned.
pub(super) async fn read_one(p: &Pinned, before: &BTreeMap<String, u64>) -> Result<Read, BackupError> {
    let (state, site) = crate::facts::reader(&p.part)
        .ok_or_else(|| BackupError::io("cannot read the cut", format!("no part {}", p.part)))?;
    let part = p.part.clone();
    let mut read = pg_snapshot::read_at(&p.store, p.exported.id(), move |tx| {
        let facts = crate::service::facts::read_in(tx, part, state, site)?;
        let waiting = pg_snapshot::outbox_waiting(tx)?;
        let schema = pg_snapshot::schema_versions(tx)?;
        Ok(Read { facts, waiting, schema })
    })
    .await
    .map_err(|e| BackupError::io(format!("cannot read {}'s snapshot", p.part), e))?;
    for outbox in &mut read.facts.outbox {
        outbox.bus_head_before = before.get(&outbox.stream).copied();
    }
    Ok(read)
}
