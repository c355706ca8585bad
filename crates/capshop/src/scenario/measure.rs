//! What a scenario measures in the shop itself rather than trusts.
//!
//! Convergence is lag and backlog alone: nothing in an outbox, every consumer's applied
//! position at its source's head, and no delivery in flight, retrying or parked.
//!
//! Loss is counted apart from the event path's own bookkeeping (no inbox, no applied
//! position), twice over (docs/break-it-yourself.md, "How events lost is measured"):
//! - committed events: every seq a producer committed is on the bus, and every event on
//!   the bus has had its effect at each consumer that [`effect`] knows how to read (the
//!   replica holds its aggregate at that version or newer; the inventory site answered the
//!   placed order) — a dead letter is not lost, it waits for a replay;
//! - acknowledged writes: every write the shop answered 2xx with a `Consistency-Token`
//!   ([`Ledger`]) is held by every replica that should hold it ([`holders`]).
//!
//! The bus is read from its own database file (read-only) so the measurement passes no
//! link: a cut link hides the bus from a service, not from the observer. The services'
//! databases are only read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use kit::replica::VersionGate;
use kit::store::StoreError;
use serde_json::Value;
use shop::contracts::{catalog, customer, inventory, order};
use shop::inventory::sites::Site;
use shop::service::{Context, Part, ServiceName};

use super::ledger::{Acknowledged, Ledger};

/// Examples of what is missing kept for the report.
const EXAMPLES: usize = 10;

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
    part: Part,
    streams: Vec<String>,
}

/// Where the effect of an event, or an acknowledged write, shows in a part's database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Sign {
    /// The part's replica holds the aggregate of this scope at the version or newer.
    Replica(&'static str),
    /// The inventory site has answered the order (held or rejected it).
    Answered,
    /// The inventory site's view of the product's stock is at the version or newer.
    StockView,
}

/// One event as the bus holds it.
struct Published {
    id: String,
    seq: u64,
    key: String,
    kind: String,
    version: u64,
    customer: Option<String>,
}

/// What holds convergence back; all zero once the shop has converged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Events committed and not yet relayed, over every part.
    pub backlog: u64,
    /// Events published and not yet applied, over every consumer and source stream.
    pub lag: u64,
    /// Deliveries taken and not acknowledged: in flight, waiting to be retried, or parked.
    pub unsettled: u64,
}

impl Progress {
    pub fn converged(&self) -> bool {
        *self == Self::default()
    }
}

/// The outcome of the loss check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lost {
    /// Events committed by every producer's outbox.
    pub committed: u64,
    /// (event, consumer) pairs whose effect was checked.
    pub deliveries: u64,
    /// Acknowledged writes checked.
    pub acknowledged: u64,
    /// Committed events missing: not on the bus, or without their effect at a consumer.
    pub events: u64,
    /// Acknowledged writes some replica that should hold them does not.
    pub writes: u64,
    /// `events + writes`: the figure a scenario reports as `events_lost`.
    pub lost: u64,
    /// What is missing, by key (at most a few).
    pub missing: Vec<String>,
}

impl Lost {
    /// Both runs of a scenario that runs twice, as one.
    pub fn merge(mut self, other: Lost) -> Lost {
        self.committed += other.committed;
        self.deliveries += other.deliveries;
        self.acknowledged += other.acknowledged;
        self.events += other.events;
        self.writes += other.writes;
        self.lost += other.lost;
        self.missing.extend(other.missing);
        self.missing.truncate(EXAMPLES);
        self
    }

    fn event_missing(&mut self, what: String) {
        self.events += 1;
        self.lost += 1;
        self.example(what);
    }

    fn write_missing(&mut self, what: String) {
        self.writes += 1;
        self.lost += 1;
        self.example(what);
    }

    fn example(&mut self, what: String) {
        if self.missing.len() < EXAMPLES {
            self.missing.push(what);
        }
    }
}

/// How a consumer's effect shows, for the consumers whose effect can be read; the others
/// (order.stock, shipping.payments, the sites' site-replica) are held to their position.
fn effect(consumer: &str, part: Part) -> Option<Sign> {
    let (_, purpose) = consumer.split_once('.')?;
    match (part.service(), purpose) {
        (ServiceName::Order | ServiceName::Shipping, "customer-replica") => {
            Some(Sign::Replica(customer::SCOPE))
        }
        (ServiceName::Order, "product-replica") | (ServiceName::Search, "catalog") => {
            Some(Sign::Replica(catalog::SCOPE))
        }
        (ServiceName::Shipping, "order-replica") | (ServiceName::Search, "orders") => {
            Some(Sign::Replica(order::SCOPE))
        }
        (ServiceName::Inventory, "orders") => Some(Sign::Answered),
        _ => None,
    }
}

/// Whether `consumer` (of `part`) is meant to have an effect for `event` at all.
fn concerns(sign: Sign, part: Part, event: &Published) -> bool {
    match (sign, part) {
        // A site answers the placed orders routed to it, and only those.
        (Sign::Answered, Part::Site(site)) => {
            event.kind == order::ORDER_PLACED
                && event.customer.as_deref().is_some_and(|c| Site::of_customer(c) == site)
        }
        (Sign::Answered, _) => false,
        // The customer stream also carries sign-in (keys, revocations): the sessions
        // consumers apply those, the customer replicas only the customers.
        (Sign::Replica(scope), _) if scope == customer::SCOPE => {
            customer::KINDS.contains(&event.kind.as_str())
        }
        _ => true,
    }
}

/// The parts that must hold an acknowledged write, and how each shows it; `None` for a
/// scope no other part replicates.
fn holders(write: &Acknowledged) -> Option<Vec<(Part, Sign)>> {
    let scope = write.entry.scope();
    let service = |name, sign| (Part::Service(name), sign);
    Some(if scope == customer::SCOPE {
        let sign = Sign::Replica(customer::SCOPE);
        vec![service(ServiceName::Order, sign), service(ServiceName::Shipping, sign)]
    } else if scope == catalog::SCOPE {
        let sign = Sign::Replica(catalog::SCOPE);
        vec![service(ServiceName::Order, sign), service(ServiceName::Search, sign)]
    } else if scope == order::SCOPE {
        let sign = Sign::Replica(order::SCOPE);
        let mut holders = vec![service(ServiceName::Shipping, sign), service(ServiceName::Search, sign)];
        if let Some(customer) = &write.customer {
            holders.push((Part::Site(Site::of_customer(customer)), Sign::Answered));
        }
        holders
    } else if scope == inventory::SCOPE {
        Site::ALL.into_iter().map(|site| (Part::Site(site), Sign::StockView)).collect()
    } else {
        return None;
    })
}

/// What `sign` reads for an aggregate that is not there at all.
fn shown(sign: Sign, held: Option<u64>) -> String {
    match (sign, held) {
        (Sign::Answered, None) => "has not answered it".into(),
        (_, None) => "holds none".into(),
        (_, Some(version)) => format!("holds v{version}"),
    }
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

    fn context(&self, part: Part) -> anyhow::Result<&Arc<Context>> {
        self.parts.get(&part).with_context(|| format!("the shop runs no {part}"))
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
        Ok(rows
            .into_iter()
            .filter_map(|(name, streams)| {
                let part = Part::of_consumer(&name).filter(|p| self.parts.contains_key(p))?;
                let streams = streams.split(',').map(str::to_owned).collect();
                Some(Consumer { name, part, streams })
            })
            .collect())
    }

    async fn heads(&self) -> anyhow::Result<HashMap<String, u64>> {
        self.bus(|db| {
            let mut statement = db.prepare("SELECT stream, head_seq FROM bus_stream")?;
            let rows = statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))?;
            rows.collect()
        })
        .await
    }

    /// Every event on the bus, by stream.
    async fn published(&self) -> anyhow::Result<HashMap<String, Vec<Published>>> {
        self.bus(|db| {
            let mut statement = db.prepare("SELECT stream, id, seq, key, body FROM bus_log ORDER BY pos")?;
            let mut by_stream: HashMap<String, Vec<Published>> = HashMap::new();
            let rows = statement.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get::<_, Vec<u8>>(4)?))
            })?;
            for row in rows {
                let (stream, id, seq, key, body) = row?;
                let envelope: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                by_stream.entry(stream).or_default().push(Published {
                    id,
                    seq,
                    key,
                    kind: envelope["kind"].as_str().unwrap_or_default().to_owned(),
                    version: envelope["version"].as_u64().unwrap_or(0),
                    customer: envelope["payload"]["customer_id"].as_str().map(str::to_owned),
                });
            }
            Ok(by_stream)
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
            let applied: HashMap<String, u64> = self
                .context(consumer.part)?
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

    /// Deliveries taken and not settled: in flight, waiting for a retry, or parked behind
    /// an earlier event of their key (a dead letter is settled: it waits for a person).
    pub async fn unsettled(&self) -> anyhow::Result<u64> {
        self.bus(|db| {
            db.query_row(
                "SELECT COUNT(*) FROM bus_pending WHERE state IN ('inflight', 'ready', 'parked')",
                [],
                |r| r.get(0),
            )
        })
        .await
    }

    /// Committed events not yet relayed to the bus, summed over every part.
    pub async fn backlog(&self) -> anyhow::Result<u64> {
        let mut backlog = 0;
        for ctx in self.parts.values() {
            let outbox = ctx.outbox.clone();
            backlog += ctx.store.transact(move |tx| outbox.backlog(tx)).await?;
        }
        Ok(backlog)
    }

    /// Backlog, lag and unsettled deliveries, read now.
    pub async fn progress(&self) -> anyhow::Result<Progress> {
        Ok(Progress {
            backlog: self.backlog().await?,
            lag: self.lag().await?,
            unsettled: self.unsettled().await?,
        })
    }

    /// What each of `keys` holds at `part`, as `sign` reads it (`None`: nothing).
    async fn held(&self, part: Part, sign: Sign, keys: Vec<String>) -> anyhow::Result<HashMap<String, u64>> {
        let held = self
            .context(part)?
            .store
            .transact(move |tx| {
                let mut held = HashMap::new();
                for key in keys {
                    let version = match sign {
                        Sign::Replica(scope) => VersionGate::version(tx, scope, &key)?,
                        // An answered order holds every version of its placement.
                        Sign::Answered => shop::inventory::store::answer(tx, &key)?.map(|_| u64::MAX),
                        Sign::StockView => shop::inventory::store::stock(tx, &key)?.map(|s| s.version),
                    };
                    if let Some(version) = version {
                        held.insert(key, version);
                    }
                }
                Ok::<_, StoreError>(held)
            })
            .await?;
        Ok(held)
    }

    /// Counts what is lost: committed events against the bus and their effects, and the
    /// writes in `ledger` against the replicas that should hold them.
    pub async fn lost(&self, ledger: &Ledger) -> anyhow::Result<Lost> {
        let mut outcome = Lost::default();
        // Producers first, then the bus: an event relayed before the bus is read must be on
        // it, while one relayed in between would otherwise be counted missing.
        let relayed = self.relayed().await?;
        let published = self.published().await?;
        committed_events(&relayed, &published, &mut outcome);
        self.effects(&published, &mut outcome).await?;
        self.acknowledged_writes(ledger, &mut outcome).await?;
        Ok(outcome)
    }

    /// Per producer stream: the seqs it has committed, and how many of them still wait in
    /// its outbox.
    async fn relayed(&self) -> anyhow::Result<Vec<(String, u64, u64)>> {
        let mut relayed = Vec::with_capacity(self.parts.len());
        for ctx in self.parts.values() {
            let (outbox, stream) = (ctx.outbox.clone(), ctx.outbox.stream().to_string());
            let name = stream.clone();
            let (committed, unrelayed) = ctx
                .store
                .transact(move |tx| {
                    let committed = tx
                        .query_opt(
                            "SELECT last_seq FROM kit_outbox_head WHERE stream = $1",
                            &[name.as_str().into()],
                        )?
                        .map_or(Ok(0), |row| row.get::<u64>(0))?;
                    Ok::<_, StoreError>((committed, outbox.backlog(tx)?))
                })
                .await?;
            relayed.push((stream, committed, unrelayed));
        }
        Ok(relayed)
    }

    /// Every event on the bus has had its effect at each consumer whose effect is known.
    async fn effects(
        &self,
        published: &HashMap<String, Vec<Published>>,
        outcome: &mut Lost,
    ) -> anyhow::Result<()> {
        let dead: HashSet<(String, String)> = self
            .bus(|db| {
                let mut statement = db.prepare(
                    "SELECT p.consumer, l.id FROM bus_pending p JOIN bus_log l ON l.pos = p.pos WHERE p.state = 'dead'",
                )?;
                let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect()
            })
            .await?;
        for consumer in self.consumers().await? {
            let Some(sign) = effect(&consumer.name, consumer.part) else { continue };
            let events: Vec<&Published> = consumer
                .streams
                .iter()
                .flat_map(|s| published.get(s).into_iter().flatten())
                .filter(|e| concerns(sign, consumer.part, e))
                .filter(|e| !dead.contains(&(consumer.name.clone(), e.id.clone())))
                .collect();
            let keys: HashSet<String> = events.iter().map(|e| e.key.clone()).collect();
            let held = self.held(consumer.part, sign, keys.into_iter().collect()).await?;
            for event in events {
                outcome.deliveries += 1;
                let holds = held.get(&event.key).copied();
                if holds.is_none_or(|v| v < event.version) {
                    outcome.event_missing(format!(
                        "event {} ({} {}@{}) had no effect at {}: it {}",
                        event.id,
                        event.kind,
                        event.key,
                        event.version,
                        consumer.name,
                        shown(sign, holds)
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every acknowledged write is held by every part that should hold it.
    async fn acknowledged_writes(&self, ledger: &Ledger, outcome: &mut Lost) -> anyhow::Result<()> {
        let writes = ledger.writes();
        let mut wanted: BTreeMap<(Part, Sign), HashSet<String>> = BTreeMap::new();
        let checked: Vec<(&Acknowledged, Vec<(Part, Sign)>)> =
            writes.iter().filter_map(|w| holders(w).map(|h| (w, h))).collect();
        for (write, holders) in &checked {
            for holder in holders {
                wanted.entry(*holder).or_default().insert(write.entry.key().to_owned());
            }
        }
        let mut held = BTreeMap::new();
        for ((part, sign), keys) in wanted {
            held.insert((part, sign), self.held(part, sign, keys.into_iter().collect()).await?);
        }
        for (write, holders) in checked {
            outcome.acknowledged += 1;
            let entry = &write.entry;
            let behind: Vec<String> = holders
                .iter()
                .filter_map(|holder| {
                    let holds = held.get(holder).and_then(|h| h.get(entry.key())).copied();
                    holds
                        .is_none_or(|v| v < entry.version())
                        .then(|| format!("{} {}", holder.0, shown(holder.1, holds)))
                })
                .collect();
            if !behind.is_empty() {
                outcome
                    .write_missing(format!("acknowledged write {entry} is missing: {}", behind.join(", ")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

/// Every seq a producer had committed and relayed must be on the bus (seqs are contiguous
/// per stream, so a gap is a committed event missing).
fn committed_events(
    relayed: &[(String, u64, u64)],
    published: &HashMap<String, Vec<Published>>,
    outcome: &mut Lost,
) {
    for (stream, committed, unrelayed) in relayed {
        outcome.committed += committed;
        let on_bus: HashSet<u64> = published.get(stream).into_iter().flatten().map(|e| e.seq).collect();
        for seq in (1..=committed.saturating_sub(*unrelayed)).filter(|seq| !on_bus.contains(seq)) {
            outcome.event_missing(format!("{stream} #{seq}: committed and relayed, but not on the bus"));
        }
    }
}
