//! The transactional outbox: events are appended inside the caller's transaction, so a
//! state change and its events commit together or not at all.

use std::sync::Arc;

use time::OffsetDateTime;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::crashpoint;
use crate::envelope::{Envelope, EventId, NewEvent, StreamName};
use crate::store::{Migrations, StoreError, Tx};

/// The kit's tables inside a service database (outbox, inbox, applied positions, replica
/// versions, relay leases); every service store opens with these.
pub const MIGRATIONS: Migrations = Migrations {
    component: "kit",
    sqlite: &[
        include_str!("../migrations/sqlite/0001_outbox_inbox.sql"),
        include_str!("../migrations/sqlite/0004_inbox_position.sql"),
        include_str!("../migrations/sqlite/0006_outbox_relayed.sql"),
        include_str!("../migrations/sqlite/0008_relay_lease.sql"),
    ],
    postgres: &[
        include_str!("../migrations/postgres/0001_outbox_inbox.sql"),
        include_str!("../migrations/postgres/0004_inbox_position.sql"),
        include_str!("../migrations/postgres/0006_outbox_relayed.sql"),
        include_str!("../migrations/postgres/0008_relay_lease.sql"),
    ],
};

/// The outbox of one stream. Cloning shares the wake-up signal of its relay.
#[derive(Debug, Clone)]
pub struct Outbox {
    stream: StreamName,
    committed: Arc<Notify>,
    /// The canary `outbox-outside-txn`: rows committed transactions left for the relay to write.
    #[cfg(feature = "canary")]
    deferred: Arc<std::sync::Mutex<Vec<Row>>>,
}

/// One outbox row: seq, event id, key, body.
type Row = (u64, String, String, Vec<u8>);

impl Outbox {
    pub fn new(stream: StreamName) -> Self {
        Self {
            stream,
            committed: Arc::new(Notify::new()),
            #[cfg(feature = "canary")]
            deferred: Arc::default(),
        }
    }

    pub fn stream(&self) -> &StreamName {
        &self.stream
    }

    /// The signal the relay waits on; it fires after each commit that appended events.
    pub(crate) fn committed(&self) -> Arc<Notify> {
        self.committed.clone()
    }

    /// Appends events in the caller's transaction and returns them as committed envelopes.
    ///
    /// Seqs come from a counter row that the transaction locks until it commits, so they are
    /// contiguous in commit order on every backend (PostgreSQL included).
    pub fn append(&self, tx: &mut Tx<'_>, events: Vec<NewEvent>) -> Result<Vec<Envelope>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let stream = self.stream.as_str();
        let count = events.len() as u64;
        let last: u64 = tx
            .query_one(
                "INSERT INTO kit_outbox_head (stream, last_seq) VALUES ($1, $2) \
                 ON CONFLICT (stream) DO UPDATE SET last_seq = kit_outbox_head.last_seq + $2 \
                 RETURNING last_seq",
                &[stream.into(), count.into()],
            )?
            .get(0)?;
        let first = last - count + 1;
        let now = OffsetDateTime::now_utc();
        let mut envelopes = Vec::with_capacity(events.len());
        #[cfg(feature = "canary")]
        let mut deferred: Vec<Row> = Vec::new();
        for (offset, event) in events.into_iter().enumerate() {
            let correlation_id = event.correlation_id.unwrap_or_else(Uuid::now_v7);
            let envelope = Envelope {
                id: EventId::new(),
                stream: self.stream.clone(),
                seq: first + offset as u64,
                kind: event.kind,
                key: event.key,
                version: event.version,
                occurred_at: now,
                correlation_id,
                causation_id: event.causation_id,
                schema: event.schema,
                payload: event.payload,
            };
            let row = (envelope.seq, envelope.id.to_string(), envelope.key.clone(), envelope.to_json());
            envelopes.push(envelope);
            #[cfg(feature = "canary")]
            if crate::canary::armed("outbox-outside-txn") {
                deferred.push(row);
                continue;
            }
            insert(tx, stream, &row)?;
        }
        #[cfg(feature = "canary")]
        if !deferred.is_empty() {
            let rows = self.deferred.clone();
            tx.after_commit(move || {
                rows.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(deferred)
            });
        }
        let committed = self.committed.clone();
        tx.after_commit(move || {
            // Right after the commit (where the canary's rows are still only in memory).
            crashpoint::reached("outbox.after_commit");
            committed.notify_one();
        });
        Ok(envelopes)
    }

    /// The canary `outbox-outside-txn`: writes the rows that committed transactions left
    /// behind, in a transaction of their own (a crash before it loses them).
    #[cfg(feature = "canary")]
    pub(crate) fn write_deferred(&self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        let rows =
            std::mem::take(&mut *self.deferred.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        rows.iter().try_for_each(|row| insert(tx, self.stream.as_str(), row))
    }

    /// Events still waiting for the relay.
    pub fn backlog(&self, tx: &mut Tx<'_>) -> Result<u64, StoreError> {
        let row = tx.query_opt(
            "SELECT h.last_seq - coalesce(r.relayed_seq, 0) FROM kit_outbox_head h \
             LEFT JOIN kit_outbox_relayed r ON r.stream = h.stream WHERE h.stream = $1",
            &[self.stream.as_str().into()],
        )?;
        row.map_or(Ok(0), |r| r.get(0))
    }
}

fn insert(tx: &mut Tx<'_>, stream: &str, (seq, id, key, body): &Row) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO kit_outbox (stream, seq, id, key, body) VALUES ($1, $2, $3, $4, $5)",
        &[stream.into(), (*seq).into(), id.into(), key.into(), body.into()],
    )?;
    Ok(())
}

/// A batch of committed events read by the relay.
pub(crate) struct Pending {
    pub seq: u64,
    pub id: String,
    pub key: String,
    pub body: Vec<u8>,
}

pub(crate) fn read_pending(tx: &mut Tx<'_>, stream: &str, limit: usize) -> Result<Vec<Pending>, StoreError> {
    let relayed: u64 = tx
        .query_opt("SELECT relayed_seq FROM kit_outbox_relayed WHERE stream = $1", &[stream.into()])?
        .map_or(Ok(0), |r| r.get(0))?;
    tx.query(
        "SELECT seq, id, key, body FROM kit_outbox WHERE stream = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        &[stream.into(), relayed.into(), (limit as u64).into()],
    )?
    .into_iter()
    .map(|mut row| Ok(Pending { seq: row.get(0)?, id: row.take(1)?, key: row.take(2)?, body: row.take(3)? }))
    .collect()
}

/// Records that everything up to `seq` is on the bus and drops those rows; touches
/// nothing a writer locks, so it never waits behind an open writer.
pub(crate) fn mark_relayed(tx: &mut Tx<'_>, stream: &str, seq: u64) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO kit_outbox_relayed (stream, relayed_seq) VALUES ($1, $2) \
         ON CONFLICT (stream) DO UPDATE SET relayed_seq = excluded.relayed_seq \
         WHERE excluded.relayed_seq > kit_outbox_relayed.relayed_seq",
        &[stream.into(), seq.into()],
    )?;
    tx.execute("DELETE FROM kit_outbox WHERE stream = $1 AND seq <= $2", &[stream.into(), seq.into()])?;
    Ok(())
}
