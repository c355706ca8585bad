//! Retention of the embedded log: positions every consumer has settled are deleted once
//! they are older than the retention's age, or while the log holds more than its size.
//!
//! What a consumer still needs is never deleted: a position is deleted only when it is at
//! or below every consumer's *settled floor* (its settled position, or the position before
//! its oldest pending row: in flight, retrying, parked or dead, if that comes first), and never the newest
//! position, so SQLite never hands out a position twice. Pruning runs beside the writers,
//! in small transactions of its own, woken by publishes (no timer, so paused-time tests
//! keep their clock).

use std::collections::BTreeMap;
use std::sync::Weak;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, warn};

use super::changes::Changes;
use crate::clock;
use crate::store::{Store, StoreError, Tx};

/// How long and how much of the settled log the embedded bus keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Settled messages published longer ago than this are deleted.
    pub max_age: Duration,
    /// While the log's file holds more bytes than this in use, its oldest settled
    /// messages are deleted, whatever their age.
    pub max_bytes: u64,
    /// Messages deleted per transaction, so a prune never holds the log for long.
    pub batch: u64,
}

impl Default for Retention {
    /// One hour and 256 MiB, in batches of 2,000.
    fn default() -> Self {
        Self { max_age: Duration::from_secs(3600), max_bytes: 256 << 20, batch: 2000 }
    }
}

/// Batches one wake-up may delete before it lets the next change wake it again.
const BATCHES_PER_WAKE: usize = 64;

/// Prunes as the log grows, once per [`Retention::batch`] messages published (a look at
/// what may go costs a transaction of the log's), until the bus (the owner of `changed`)
/// is gone.
pub(super) async fn prune_in_background(
    store: Store,
    changed: Weak<watch::Sender<Changes>>,
    retention: Retention,
) {
    let Some(mut changes) = changed.upgrade().map(|sender| sender.subscribe()) else { return };
    let mut looked_at = 0;
    loop {
        if changes.changed().await.is_err() {
            return; // every clone of the bus was dropped
        }
        let published = changes.borrow_and_update().messages();
        if published < looked_at + retention.batch.max(1) {
            continue;
        }
        looked_at = published;
        if let Err(e) = prune_batches(&store, &retention, BATCHES_PER_WAKE).await {
            warn!(error = %e, "pruning the embedded log failed; the next publish tries again");
        }
    }
}

/// Prunes everything `retention` allows now; returns how many messages were deleted.
pub(super) async fn prune(store: &Store, retention: &Retention) -> Result<u64, StoreError> {
    prune_batches(store, retention, usize::MAX).await
}

async fn prune_batches(store: &Store, retention: &Retention, batches: usize) -> Result<u64, StoreError> {
    let mut deleted = 0;
    for _ in 0..batches {
        let (retention, now) = (retention.clone(), clock::now_ms());
        let n = store.transact(move |tx| prune_batch(tx, &retention, now)).await?;
        deleted += n;
        if n == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    if deleted > 0 {
        debug!(deleted, "pruned the embedded log");
    }
    Ok(deleted)
}

/// Deletes up to one batch of prunable messages; returns how many.
fn prune_batch(tx: &mut Tx<'_>, retention: &Retention, now: u64) -> Result<u64, StoreError> {
    // The lowest position some consumer may still need, minus one; none without consumers.
    let floor: Option<u64> = tx
        .query_one(
            "SELECT min(min(c.acked_pos, coalesce((SELECT min(p.pos) - 1 FROM bus_pending p WHERE p.consumer = c.name), c.acked_pos))) \
             FROM bus_consumer c",
            &[],
        )?
        .get(0)?;
    let Some(floor) = floor else { return Ok(0) };
    let head: u64 = tx.query_one("SELECT coalesce(max(pos), 0) FROM bus_log", &[])?.get(0)?;
    let limit = floor.min(head.saturating_sub(1));
    if limit == 0 {
        return Ok(0);
    }
    let used: u64 = tx
        .query_one(
            "SELECT (p.page_count - f.freelist_count) * s.page_size \
             FROM pragma_page_count() p, pragma_freelist_count() f, pragma_page_size() s",
            &[],
        )?
        .get(0)?;
    let over = used > retention.max_bytes;
    let cutoff = now.saturating_sub(retention.max_age.as_millis() as u64);
    let Some(oldest) = tx.query_opt("SELECT pos, published_at_ms FROM bus_log ORDER BY pos LIMIT 1", &[])?
    else {
        return Ok(0);
    };
    let (oldest, published_at): (u64, u64) = (oldest.get(0)?, oldest.get(1)?);
    if !over && published_at > cutoff {
        return Ok(0); // the oldest message is young: so are the others
    }
    // Positions are dense, so one batch lies within `batch` positions of the oldest: the
    // scan stays that short however long the log.
    let last = limit.min(oldest + retention.batch.max(1) - 1);
    let pruned = tx.query(
        "DELETE FROM bus_log WHERE pos >= $1 AND pos <= $2 AND ($3 = 1 OR published_at_ms <= $4) \
         RETURNING stream, seq",
        &[oldest.into(), last.into(), over.into(), cutoff.into()],
    )?;
    let mut highest: BTreeMap<String, u64> = BTreeMap::new();
    for row in &pruned {
        let (stream, seq) = (row.get::<String>(0)?, row.get::<u64>(1)?);
        let entry = highest.entry(stream).or_default();
        *entry = (*entry).max(seq);
    }
    for (stream, seq) in highest {
        tx.execute(
            "UPDATE bus_stream SET pruned_seq = max(pruned_seq, $2) WHERE stream = $1",
            &[stream.as_str().into(), seq.into()],
        )?;
    }
    Ok(pruned.len() as u64)
}
