//! Placements under way, and abandoning those that outlive their bound.
//!
//! A placement asks payment to authorize before it commits its order, in another database,
//! so an answer lost on the way back or a crash between the two leaves an authorization
//! with no order. A row in `placements` is written before payment is asked and deleted in the
//! transaction that commits the order. A row older than [`ABANDON_AFTER_MS`] is marked
//! abandoned; from then on that placement can no longer commit (the commit checks its row in
//! the same transaction), so payment can safely be told to void the order's authorization
//! (`POST /voids`). The row is deleted once payment has voided it. Both decisions are made
//! in the order service's database, on its clock: no other service's clock or replica is
//! trusted to say that an order will never appear.

use std::sync::Arc;
use std::time::Duration;

use kit::store::{StoreError, Tx};
use tokio_util::sync::CancellationToken;

use crate::contracts::payment::{Authorization, VoidRequest};
use crate::service::{Context, PeerError, ServiceName};

/// How long a placement may take from its start to its order's commit before it is
/// abandoned (the payment call alone is bounded by the peer's 1 s).
pub const ABANDON_AFTER_MS: u64 = 10_000;

/// How often the order service looks for placements to abandon.
const EVERY: Duration = Duration::from_secs(1);

/// At most this many abandoned placements are voided per look.
const BATCH: u64 = 100;

/// Notes that the placement of `order_id` started at `now_ms`.
pub fn begin(tx: &mut Tx<'_>, order_id: &str, now_ms: u64) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO placements (order_id, started_at_ms) VALUES ($1, $2)",
        &[order_id.into(), now_ms.into()],
    )?;
    Ok(())
}

/// Ends the placement of `order_id` in the transaction that commits its order: false when
/// it was abandoned meanwhile (then the order must not be committed).
pub fn finish(tx: &mut Tx<'_>, order_id: &str) -> Result<bool, StoreError> {
    let ended =
        tx.execute("DELETE FROM placements WHERE order_id = $1 AND abandoned = 0", &[order_id.into()])?;
    Ok(ended == 1)
}

/// The order ids of every placement under way or abandoned and not yet voided (what
/// reconcile may see as an authorization without its order).
pub fn under_way(tx: &mut Tx<'_>) -> Result<Vec<String>, StoreError> {
    let rows = tx.query("SELECT order_id FROM placements ORDER BY order_id", &[])?;
    rows.into_iter().map(|mut r| r.take(0)).collect()
}

/// Abandons every placement that started before `before_ms`, and answers the oldest
/// abandoned ones still to be voided.
fn abandon(tx: &mut Tx<'_>, before_ms: u64) -> Result<Vec<String>, StoreError> {
    tx.execute(
        "UPDATE placements SET abandoned = 1 WHERE abandoned = 0 AND started_at_ms < $1",
        &[before_ms.into()],
    )?;
    let rows = tx.query(
        "SELECT order_id FROM placements WHERE abandoned = 1 ORDER BY started_at_ms LIMIT $1",
        &[BATCH.into()],
    )?;
    rows.into_iter().map(|mut r| r.take(0)).collect()
}

fn forget(tx: &mut Tx<'_>, order_id: &str) -> Result<(), StoreError> {
    tx.execute("DELETE FROM placements WHERE order_id = $1 AND abandoned = 1", &[order_id.into()])?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum VoidError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Payment(#[from] PeerError),
}

/// Abandons overdue placements and has payment void them, once a second until `shutdown`.
/// A void that cannot be made now (payment unreachable) is tried again on the next look.
pub async fn abandon_every(ctx: Arc<Context>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
        match abandon_overdue(&ctx).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(placements = n, "abandoned placements voided at payment"),
            Err(e) => tracing::debug!(error = %e, "abandoned placements wait to be voided"),
        }
    }
}

async fn abandon_overdue(ctx: &Context) -> Result<usize, VoidError> {
    let before = kit::clock::now_ms().saturating_sub(ABANDON_AFTER_MS);
    let abandoned = ctx.store.transact(move |tx| abandon(tx, before)).await?;
    let n = abandoned.len();
    for order_id in abandoned {
        let request = VoidRequest { order_id: order_id.clone() };
        let _: Option<Authorization> = ctx.peer(ServiceName::Payment).post("/voids", &request).await?;
        ctx.store.transact(move |tx| forget(tx, &order_id)).await?;
    }
    Ok(n)
}
