//! The embedded bus: a durable log in its own SQLite file, for one machine.
//!
//! The log keeps every message once (dedup by id). Each consumer has two positions into
//! it: *taken* (how far it has looked) and *settled* (`acked_pos`: everything at or below is
//! acknowledged or has a row in the pending table). A first delivery costs no write of its
//! own: the attachment keeps it in memory, and an acknowledgement moves the settled
//! position. Only exceptions get a pending row — a retry with its deadline and attempts, a
//! message parked behind its key, a dead letter, a release, an acknowledgement out of order
//! — and when a consumer attaches again, every position between its settled and taken
//! positions without a row becomes a row due at once (it was delivered, unacknowledged), so
//! all of it survives a crash.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use changes::Changes;

use super::{Bus, BusError, ConsumerSpec, DeadLetter, DeadLetterFilter, Message, Subscription};
use crate::clock;
use crate::store::{Migrations, Param, Row, Store, StoreError, Tx};

mod attach;
mod changes;
pub mod copy;
mod outstanding;
mod retention;
mod subscription;
mod take;

pub use retention::Retention;
use subscription::EmbeddedSubscription;

const MIGRATIONS: Migrations = Migrations {
    component: "bus",
    sqlite: &[
        include_str!("../../migrations/sqlite/0002_bus.sql"),
        include_str!("../../migrations/sqlite/0003_bus_parked.sql"),
        include_str!("../../migrations/sqlite/0005_bus_retention.sql"),
        include_str!("../../migrations/sqlite/0007_bus_positions.sql"),
    ],
    postgres: &[],
};

/// How many log positions one fetch transaction looks at for a consumer's streams; a
/// fetch that finds nothing in its window moves on to the next one at once, so a long run
/// of other streams' messages costs time, never a missed message.
pub(super) const SCAN_WINDOW: u64 = 8192;

/// The durable log in its own database file; cloning shares it.
#[derive(Clone)]
pub struct EmbeddedBus {
    pub(super) store: Store,
    /// Bumped whenever something may have become deliverable, to wake waiting fetches.
    changes: Arc<watch::Sender<Changes>>,
}

impl EmbeddedBus {
    /// Opens (creating if needed) the log at `path` with the default [`Retention`];
    /// `:memory:` keeps it in memory.
    pub async fn open(path: &str) -> Result<Self, BusError> {
        Self::open_with(path, Retention::default()).await
    }

    /// Opens the log at `path` and prunes it in the background as `retention` says, for as
    /// long as a clone of the bus is alive.
    pub async fn open_with(path: &str, retention: Retention) -> Result<Self, BusError> {
        let store = Store::open(&format!("sqlite:{path}"), &[&MIGRATIONS]).await?;
        let bus = Self { store, changes: Arc::new(watch::Sender::new(Changes::default())) };
        tokio::spawn(retention::prune_in_background(
            bus.store.clone(),
            Arc::downgrade(&bus.changes),
            retention,
        ));
        Ok(bus)
    }

    /// Prunes what `retention` allows now, in batches; returns how many messages it deleted.
    pub async fn prune(&self, retention: &Retention) -> Result<u64, BusError> {
        Ok(retention::prune(&self.store, retention).await?)
    }

    /// Messages the log holds now.
    pub async fn messages(&self) -> Result<u64, BusError> {
        let count =
            self.store.transact(|tx| tx.query_one("SELECT count(*) FROM bus_log", &[])?.get(0)).await?;
        Ok(count)
    }

    /// Wakes every waiting fetch: something pending may be due now.
    pub(super) fn pending_changed(&self) {
        self.changes.send_modify(Changes::pending_changed);
    }
}

#[async_trait]
impl Bus for EmbeddedBus {
    async fn publish(&self, batch: &[Message]) -> Result<(), BusError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (owned, now) = (batch.to_vec(), clock::now_ms());
        self.store.transact(move |tx| append(tx, &owned, now)).await?;
        self.changes.send_modify(|changes| changes.published(batch.iter().map(|m| m.stream.as_str())));
        Ok(())
    }

    async fn subscribe(&self, spec: &ConsumerSpec) -> Result<Box<dyn Subscription>, BusError> {
        spec.validate()?;
        let mut streams = spec.streams.clone();
        streams.sort();
        streams.dedup();
        let attach = attach::Attach { spec: spec.clone(), streams: streams.clone() };
        let attached = self.store.transact(move |tx| attach.run(tx)).await?;
        self.pending_changed();
        Ok(Box::new(EmbeddedSubscription::new(self.clone(), spec.clone(), streams, attached)))
    }

    async fn stream_head(&self, stream: &str) -> Result<u64, BusError> {
        let stream = stream.to_owned();
        let head = self
            .store
            .transact(move |tx| {
                tx.query_opt("SELECT head_seq FROM bus_stream WHERE stream = $1", &[(&stream).into()])?
                    .map_or(Ok(0), |r| r.get::<u64>(0))
            })
            .await?;
        Ok(head)
    }

    async fn retained_from(&self, stream: &str) -> Result<u64, BusError> {
        let stream = stream.to_owned();
        let pruned = self
            .store
            .transact(move |tx| {
                tx.query_opt("SELECT pruned_seq FROM bus_stream WHERE stream = $1", &[(&stream).into()])?
                    .map_or(Ok(0), |r| r.get::<u64>(0))
            })
            .await?;
        Ok(pruned + 1)
    }

    async fn recent(&self, stream: &str, limit: usize) -> Result<Vec<Message>, BusError> {
        let stream = stream.to_owned();
        let messages = self
            .store
            .transact(move |tx| {
                tx.query(
                    "SELECT id, stream, seq, key, body FROM bus_log WHERE stream = $1 ORDER BY pos DESC LIMIT $2",
                    &[(&stream).into(), (limit as u64).into()],
                )?
                .into_iter()
                .map(|mut row| {
                    Ok(Message {
                        id: row.take(0)?,
                        stream: row.take(1)?,
                        seq: row.get(2)?,
                        key: row.take(3)?,
                        body: row.take(4)?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()
            })
            .await?;
        Ok(messages)
    }

    async fn dead_letters(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>, BusError> {
        let filter = filter.clone();
        let letters = self
            .store
            .transact(move |tx| {
                let (clause, params) = filter_clause(&filter);
                let sql = format!(
                    "SELECT p.consumer, l.id, l.stream, l.seq, l.key, l.body, p.attempts, p.error, p.failed_at_ms, \
                     (SELECT count(*) FROM bus_pending h WHERE h.consumer = p.consumer AND h.key = p.key AND h.state = 'parked') \
                     FROM bus_pending p JOIN bus_log l ON l.pos = p.pos WHERE p.state = 'dead' {clause} ORDER BY p.failed_at_ms, p.pos"
                );
                let params: Vec<Param<'_>> = params.iter().map(Into::into).collect();
                tx.query(&sql, &params)?.into_iter().map(dead_letter_from_row).collect::<Result<Vec<_>, _>>()
            })
            .await?;
        Ok(letters)
    }

    async fn replay(&self, filter: &DeadLetterFilter) -> Result<usize, BusError> {
        let filter = filter.clone();
        let replayed = self
            .store
            .transact(move |tx| {
                let (clause, params) = filter_clause(&filter);
                let sql = format!(
                    "UPDATE bus_pending AS p SET state = 'ready', attempts = 0, visible_at_ms = 0 \
                     WHERE p.state = 'dead' {clause}"
                );
                let params: Vec<Param<'_>> = params.iter().map(Into::into).collect();
                tx.execute(&sql, &params)
            })
            .await?;
        self.pending_changed();
        Ok(replayed)
    }

    async fn discard(&self, filter: &DeadLetterFilter) -> Result<usize, BusError> {
        let filter = filter.clone();
        let discarded = self
            .store
            .transact(move |tx| {
                let (clause, params) = filter_clause(&filter);
                // Above its consumer's settled position a settled message keeps a row.
                let settle = format!(
                    "UPDATE bus_pending AS p SET state = 'acked' WHERE p.state = 'dead' {clause} \
                     AND p.pos > (SELECT c.acked_pos FROM bus_consumer c WHERE c.name = p.consumer) \
                     RETURNING consumer, key"
                );
                let delete = format!(
                    "DELETE FROM bus_pending AS p WHERE p.state = 'dead' {clause} RETURNING consumer, key"
                );
                let params: Vec<Param<'_>> = params.iter().map(Into::into).collect();
                let mut released = tx.query(&settle, &params)?;
                released.extend(tx.query(&delete, &params)?);
                for row in &released {
                    release_next(tx, &row.get::<String>(0)?, &row.get::<String>(1)?)?;
                }
                Ok::<_, StoreError>(released.len())
            })
            .await?;
        self.pending_changed();
        Ok(discarded)
    }
}

/// Builds the `AND ...` conditions on `bus_pending AS p` for a dead-letter filter.
fn filter_clause(filter: &DeadLetterFilter) -> (String, Vec<String>) {
    let mut clause = String::new();
    let mut params = Vec::new();
    let mut add = |column: &str, value: &Option<String>| {
        if let Some(value) = value {
            params.push(value.clone());
            clause.push_str(&format!(" AND {column} = ${}", params.len()));
        }
    };
    add("p.consumer", &filter.consumer);
    add("p.key", &filter.key);
    let mut log = String::new();
    let mut add_log = |column: &str, value: &Option<String>| {
        if let Some(value) = value {
            params.push(value.clone());
            log.push_str(&format!(" AND {column} = ${}", params.len()));
        }
    };
    add_log("l2.id", &filter.event_id);
    add_log("l2.stream", &filter.stream);
    if !log.is_empty() {
        clause.push_str(&format!(" AND p.pos IN (SELECT l2.pos FROM bus_log l2 WHERE 1 = 1{log})"));
    }
    (clause, params)
}

fn dead_letter_from_row(mut row: Row) -> Result<DeadLetter, StoreError> {
    Ok(DeadLetter {
        consumer: row.take(0)?,
        message: Message {
            id: row.take(1)?,
            stream: row.take(2)?,
            seq: row.get(3)?,
            key: row.take(4)?,
            body: row.take(5)?,
        },
        attempts: row.get(6)?,
        error: row.take::<Option<String>>(7)?.unwrap_or_default(),
        failed_at_ms: row.get::<Option<u64>>(8)?.unwrap_or_default(),
        parked: row.get(9)?,
    })
}

/// Appends a batch to the log: a message already there (by id) is skipped, and so is one at
/// or below its stream's pruned seq (a copy of a message every consumer settled). Each
/// stream's head moves once per batch.
fn append(tx: &mut Tx<'_>, batch: &[Message], now: u64) -> Result<(), StoreError> {
    let mut heads: std::collections::BTreeMap<&str, (u64, u64)> = std::collections::BTreeMap::new();
    for m in batch {
        if !heads.contains_key(m.stream.as_str()) {
            let pruned: u64 = tx
                .query_opt("SELECT pruned_seq FROM bus_stream WHERE stream = $1", &[(&m.stream).into()])?
                .map_or(Ok(0), |r| r.get(0))?;
            heads.insert(&m.stream, (pruned, 0));
        }
        let (pruned, head) = heads.get_mut(m.stream.as_str()).expect("inserted above");
        *head = (*head).max(m.seq);
        if m.seq <= *pruned {
            continue;
        }
        tx.execute(
            "INSERT INTO bus_log (id, stream, seq, key, body, published_at_ms) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO NOTHING",
            &[(&m.id).into(), (&m.stream).into(), m.seq.into(), (&m.key).into(), (&m.body).into(), now.into()],
        )?;
    }
    for (stream, (_, head)) in heads {
        tx.execute(
            "INSERT INTO bus_stream (stream, head_seq) VALUES ($1, $2) \
             ON CONFLICT (stream) DO UPDATE SET head_seq = max(head_seq, excluded.head_seq)",
            &[stream.into(), head.into()],
        )?;
    }
    Ok(())
}

/// Settles the row of a redelivered message (in flight or due): deleted, or kept as
/// `acked` while it lies above the consumer's settled position, where a position without a
/// row means a fresh delivery never acknowledged. Returns the message's key when it was
/// pending.
pub(super) fn settle_row(tx: &mut Tx<'_>, consumer: &str, pos: u64) -> Result<Option<String>, StoreError> {
    let kept = tx.query_opt(
        "UPDATE bus_pending SET state = 'acked' WHERE consumer = $1 AND pos = $2 AND state IN ('inflight', 'ready') \
         AND pos > (SELECT acked_pos FROM bus_consumer WHERE name = $1) RETURNING key",
        &[consumer.into(), pos.into()],
    )?;
    let row = match kept {
        Some(row) => Some(row),
        None => tx.query_opt(
            "DELETE FROM bus_pending WHERE consumer = $1 AND pos = $2 AND state IN ('inflight', 'ready') RETURNING key",
            &[consumer.into(), pos.into()],
        )?,
    };
    row.map(|row| row.get::<String>(0)).transpose()
}

/// Makes each position in `(from, to]` of the consumer's `streams` that has no row a row due
/// now at attempt 1: a fresh delivery that was taken, never acknowledged, and that no
/// attachment keeps any more (it was replaced, or its fetch was cancelled).
pub(super) fn unkept_become_due(
    tx: &mut Tx<'_>,
    consumer: &str,
    streams: &[String],
    from: u64,
    to: u64,
) -> Result<(), StoreError> {
    let list: Vec<String> = (0..streams.len()).map(|i| format!("${}", i + 4)).collect();
    let sql = format!(
        "INSERT INTO bus_pending (consumer, pos, key, state, attempts, visible_at_ms) \
         SELECT $1, l.pos, l.key, 'ready', 1, 0 FROM bus_log l \
         WHERE l.pos > $2 AND l.pos <= $3 AND l.stream IN ({}) \
         AND NOT EXISTS (SELECT 1 FROM bus_pending p WHERE p.consumer = $1 AND p.pos = l.pos)",
        list.join(", ")
    );
    let mut params: Vec<Param<'_>> = vec![consumer.into(), from.into(), to.into()];
    params.extend(streams.iter().map(Param::from));
    tx.execute(&sql, &params)?;
    Ok(())
}

/// Makes the oldest message parked behind `key` deliverable, once nothing else of the key
/// is pending before it.
pub(super) fn release_next(tx: &mut Tx<'_>, consumer: &str, key: &str) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE bus_pending SET state = 'ready', visible_at_ms = 0 \
         WHERE consumer = $1 AND pos = \
         (SELECT min(pos) FROM bus_pending WHERE consumer = $1 AND key = $2 AND state <> 'acked') \
         AND state = 'parked'",
        &[consumer.into(), key.into()],
    )?;
    Ok(())
}

#[cfg(test)]
mod late_tests;
#[cfg(test)]
mod tests;
