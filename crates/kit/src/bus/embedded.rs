//! The embedded bus: a durable log in its own SQLite file, for one machine.
//!
//! The log keeps every message once (dedup by id). Each consumer has a taken position
//! into the log and a pending table of messages taken but not yet acknowledged; attempts,
//! retry deadlines, parked messages and dead letters live there, so all of them survive a crash.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use super::{Bus, BusError, ConsumerSpec, DeadLetter, DeadLetterFilter, Message, Ordering, Subscription};
use crate::clock;
use crate::store::{Migrations, Param, Row, Store, StoreError, Tx};

mod retention;
mod subscription;

pub use retention::Retention;
use subscription::EmbeddedSubscription;

const MIGRATIONS: Migrations = Migrations {
    component: "bus",
    sqlite: &[
        include_str!("../../migrations/sqlite/0002_bus.sql"),
        include_str!("../../migrations/sqlite/0003_bus_parked.sql"),
        include_str!("../../migrations/sqlite/0005_bus_retention.sql"),
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
    changed: Arc<watch::Sender<u64>>,
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
        let bus = Self { store, changed: Arc::new(watch::Sender::new(0)) };
        tokio::spawn(retention::prune_in_background(
            bus.store.clone(),
            Arc::downgrade(&bus.changed),
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

    pub(super) fn wake(&self) {
        self.changed.send_modify(|generation| *generation += 1);
    }
}

#[async_trait]
impl Bus for EmbeddedBus {
    async fn publish(&self, batch: &[Message]) -> Result<(), BusError> {
        if batch.is_empty() {
            return Ok(());
        }
        let batch = batch.to_vec();
        let now = clock::now_ms();
        self.store
            .transact(move |tx| {
                for m in &batch {
                    // A seq at or below the stream's pruned seq is a copy of a settled message.
                    tx.execute(
                        "INSERT INTO bus_log (id, stream, seq, key, body, published_at_ms) \
                         SELECT $1, $2, $3, $4, $5, $6 WHERE NOT EXISTS \
                         (SELECT 1 FROM bus_stream WHERE stream = $2 AND pruned_seq >= $3) \
                         ON CONFLICT (id) DO NOTHING",
                        &[
                            (&m.id).into(),
                            (&m.stream).into(),
                            m.seq.into(),
                            (&m.key).into(),
                            (&m.body).into(),
                            now.into(),
                        ],
                    )?;
                    tx.execute(
                        "INSERT INTO bus_stream (stream, head_seq) VALUES ($1, $2) \
                         ON CONFLICT (stream) DO UPDATE SET head_seq = max(head_seq, excluded.head_seq)",
                        &[(&m.stream).into(), m.seq.into()],
                    )?;
                }
                Ok::<_, StoreError>(())
            })
            .await?;
        self.wake();
        Ok(())
    }

    async fn subscribe(&self, spec: &ConsumerSpec) -> Result<Box<dyn Subscription>, BusError> {
        spec.validate()?;
        let (name, streams) = (spec.name.clone(), spec.streams.join(","));
        let (per_key, max_attempts) = (spec.ordering == Ordering::PerKey, spec.max_attempts);
        self.store
            .transact(move |tx| {
                tx.execute(
                    // A new consumer starts at the oldest position the log still keeps.
                    "INSERT INTO bus_consumer (name, streams, per_key, max_attempts, taken_pos) \
                     VALUES ($1, $2, $3, $4, (SELECT coalesce(min(pos), 1) - 1 FROM bus_log)) \
                     ON CONFLICT (name) DO UPDATE SET \
                     streams = excluded.streams, per_key = excluded.per_key, max_attempts = excluded.max_attempts",
                    &[(&name).into(), (&streams).into(), per_key.into(), max_attempts.into()],
                )?;
                // A new attachment means the previous one is gone: what it had taken unacked is
                // due now (its attempts stay counted).
                tx.execute(
                    "UPDATE bus_pending SET state = 'ready', visible_at_ms = 0 \
                     WHERE consumer = $1 AND state = 'inflight'",
                    &[(&name).into()],
                )?;
                Ok::<_, StoreError>(())
            })
            .await?;
        let mut streams = spec.streams.clone();
        streams.sort();
        streams.dedup();
        Ok(Box::new(EmbeddedSubscription::new(self.clone(), spec.clone(), streams, self.changed.subscribe())))
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
        self.wake();
        Ok(replayed)
    }

    async fn discard(&self, filter: &DeadLetterFilter) -> Result<usize, BusError> {
        let filter = filter.clone();
        let discarded = self
            .store
            .transact(move |tx| {
                let (clause, params) = filter_clause(&filter);
                let sql = format!(
                    "DELETE FROM bus_pending AS p WHERE p.state = 'dead' {clause} RETURNING consumer, key"
                );
                let params: Vec<Param<'_>> = params.iter().map(Into::into).collect();
                let released = tx.query(&sql, &params)?;
                for row in &released {
                    release_next(tx, &row.get::<String>(0)?, &row.get::<String>(1)?)?;
                }
                Ok::<_, StoreError>(released.len())
            })
            .await?;
        self.wake();
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

/// Makes the oldest message parked behind `key` deliverable, once nothing else of the key
/// is pending before it.
pub(super) fn release_next(tx: &mut Tx<'_>, consumer: &str, key: &str) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE bus_pending SET state = 'ready', visible_at_ms = 0 \
         WHERE consumer = $1 AND pos = (SELECT min(pos) FROM bus_pending WHERE consumer = $1 AND key = $2) \
         AND state = 'parked'",
        &[consumer.into(), key.into()],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests;
