//! What a scenario measures in the shop itself rather than trusts: replication lag,
//! outbox backlog, and events lost — every event a producer's outbox committed must be
//! on the bus and in the inbox of every consumer of its stream. The producers are every
//! running part of the shop (each inventory site publishes on its own stream), and the
//! consumers are read from the bus, so nothing here names a stream.
//!
//! The bus is read from its own database file (read-only) so the measurement passes no
//! link: a cut link hides the bus from a service, not from the observer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use kit::store::StoreError;
use shop::service::{Context, Part};

/// Reads positions of one running shop.
#[derive(Clone)]
pub struct Probe {
    bus_db: PathBuf,
    /// Every producer and consumer: the shop's parts.
    parts: BTreeMap<Part, Arc<Context>>,
}

/// One durable consumer on the bus and the part it belongs to.
struct Consumer {
    name: String,
    service: Arc<Context>,
    streams: Vec<String>,
}

/// The outcome of the events-lost check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lost {
    /// Events committed by every producer's outbox.
    pub committed: u64,
    /// (event, consumer) pairs checked.
    pub deliveries: u64,
    /// Committed events missing from the bus, plus (event, consumer) pairs missing from
    /// that consumer's inbox.
    pub lost: u64,
    /// What is missing, for the report (at most a few lines).
    pub missing: Vec<String>,
}

impl Probe {
    pub fn new(bus_db: PathBuf, parts: BTreeMap<Part, Arc<Context>>) -> Self {
        Self { bus_db, parts }
    }

    fn bus<T: Send + 'static>(
        &self,
        read: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> impl Future<Output = anyhow::Result<T>> {
        let path = self.bus_db.clone();
        let shown = path.display().to_string();
        async move {
            tokio::task::spawn_blocking(move || {
                let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
                let connection = rusqlite::Connection::open_with_flags(&path, flags)?;
                connection.busy_timeout(std::time::Duration::from_secs(5))?;
                read(&connection)
            })
            .await?
            .with_context(|| format!("cannot read the bus at {shown}"))
        }
    }

    async fn consumers(&self) -> anyhow::Result<Vec<Consumer>> {
        let rows = self
            .bus(|db| {
                let mut statement = db.prepare("SELECT name, streams FROM bus_consumer ORDER BY name")?;
                let rows =
                    statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        let mut consumers = Vec::new();
        for (name, streams) in rows {
            if let Some(service) = Part::of_consumer(&name).and_then(|p| self.parts.get(&p)) {
                let streams = streams.split(',').map(str::to_owned).collect();
                consumers.push(Consumer { name, service: service.clone(), streams });
            }
        }
        Ok(consumers)
    }

    async fn heads(&self) -> anyhow::Result<HashMap<String, u64>> {
        self.bus(|db| {
            let mut statement = db.prepare("SELECT stream, head_seq FROM bus_stream")?;
            let rows = statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))?;
            rows.collect()
        })
        .await
    }

    /// The attempts and state (`inflight`, `ready`, `held`, `dead`) of `consumer`'s
    /// delivery of the newest event of `key` on `stream`; `None` once acknowledged.
    pub async fn delivery(
        &self,
        consumer: &str,
        stream: &str,
        key: &str,
    ) -> anyhow::Result<Option<(u32, String)>> {
        let (consumer, stream, key) = (consumer.to_owned(), stream.to_owned(), key.to_owned());
        self.bus(move |db| {
            let mut statement = db.prepare(
                "SELECT p.attempts, p.state FROM bus_pending p JOIN bus_log l ON l.pos = p.pos \
                 WHERE p.consumer = ?1 AND l.stream = ?2 AND l.key = ?3 ORDER BY p.pos DESC LIMIT 1",
            )?;
            let mut rows = statement.query_map([&consumer, &stream, &key], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.next().transpose()
        })
        .await
    }

    /// Events published but not yet applied, summed over every consumer and stream.
    pub async fn lag(&self) -> anyhow::Result<u64> {
        let heads = self.heads().await?;
        let mut behind = 0;
        for consumer in self.consumers().await? {
            let name = consumer.name.clone();
            let applied: HashMap<String, u64> = consumer
                .service
                .store
                .transact(move |tx| {
                    tx.query(
                        "SELECT stream, seq FROM kit_applied WHERE consumer = $1",
                        &[name.as_str().into()],
                    )?
                    .into_iter()
                    .map(|mut row| Ok((row.take::<String>(0)?, row.get::<u64>(1)?)))
                    .collect::<Result<_, StoreError>>()
                })
                .await?;
            for stream in &consumer.streams {
                let head = heads.get(stream).copied().unwrap_or(0);
                behind += head.saturating_sub(applied.get(stream).copied().unwrap_or(0));
            }
        }
        Ok(behind)
    }

    /// Dead letters waiting for a replay or a discard, over every consumer.
    pub async fn dead_letters(&self) -> anyhow::Result<u64> {
        self.bus(|db| db.query_row("SELECT COUNT(*) FROM bus_pending WHERE state = 'dead'", [], |r| r.get(0)))
            .await
    }

    /// Committed events not yet relayed to the bus, summed over every part.
    pub async fn backlog(&self) -> anyhow::Result<u64> {
        let mut backlog = 0;
        for ctx in self.parts.values() {
            backlog += ctx
                .store
                .transact(|tx| {
                    tx.query_one(
                        "SELECT COALESCE(SUM(h.last_seq - COALESCE(r.relayed_seq, 0)), 0) FROM kit_outbox_head h \
                         LEFT JOIN kit_outbox_relayed r ON r.stream = h.stream",
                        &[],
                    )?
                        .get::<u64>(0)
                })
                .await?;
        }
        Ok(backlog)
    }

    /// Compares every producer's committed events with the bus, and the bus with every
    /// consumer's inbox.
    pub async fn lost(&self) -> anyhow::Result<Lost> {
        let mut outcome = Lost::default();
        let published: HashMap<String, Vec<String>> = self
            .bus(|db| {
                let mut statement = db.prepare("SELECT stream, id FROM bus_log ORDER BY pos")?;
                let mut by_stream: HashMap<String, Vec<String>> = HashMap::new();
                let rows =
                    statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
                for row in rows {
                    let (stream, id) = row?;
                    by_stream.entry(stream).or_default().push(id);
                }
                Ok(by_stream)
            })
            .await?;
        for ctx in self.parts.values() {
            let name = ctx.outbox.stream().to_string();
            let committed = ctx
                .store
                .transact(|tx| {
                    tx.query("SELECT last_seq FROM kit_outbox_head", &[])?
                        .first()
                        .map_or(Ok(0), |row| row.get::<u64>(0))
                })
                .await?;
            let on_bus = published.get(&name).map_or(0, |ids| ids.len() as u64);
            outcome.committed += committed;
            if committed > on_bus {
                outcome.lost += committed - on_bus;
                outcome
                    .missing
                    .push(format!("{name}: {} committed events are not on the bus", committed - on_bus));
            }
        }
        for consumer in self.consumers().await? {
            let name = consumer.name.clone();
            let inbox: HashSet<String> = consumer
                .service
                .store
                .transact(move |tx| {
                    tx.query("SELECT event_id FROM kit_inbox WHERE consumer = $1", &[name.as_str().into()])?
                        .into_iter()
                        .map(|mut row| row.take::<String>(0))
                        .collect::<Result<_, StoreError>>()
                })
                .await?;
            for stream in &consumer.streams {
                let ids = published.get(stream).map(Vec::as_slice).unwrap_or_default();
                let missing = ids.iter().filter(|id| !inbox.contains(*id)).count() as u64;
                outcome.deliveries += ids.len() as u64;
                if missing > 0 {
                    outcome.lost += missing;
                    outcome
                        .missing
                        .push(format!("{}: {missing} events of {stream} not applied", consumer.name));
                }
            }
        }
        Ok(outcome)
    }
}
