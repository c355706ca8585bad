//! The relay lease: which instance of a service relays an outbox stream.
//!
//! Several processes of one service share its database, and each runs a relay; only the
//! holder of the stream's lease publishes. The lease is a row (`kit_relay_lease`) with the
//! holder, an expiry on the database's clock (the one clock every instance shares) and an
//! epoch that grows whenever the lease changes hands. The holder renews it well before it
//! runs out; when the holder dies, another instance takes it once it has expired.
//!
//! A holder that was paused past its expiry is fenced twice: it starts a publish only while
//! its lease is provably held on its own clock (granted at or after the moment it asked, so
//! the local deadline is never later than the database's), and it records a relayed
//! position only under its own epoch, in a transaction that locks the lease row. What it
//! can still send late (a publish under way when it paused, bounded by the bus's request
//! timeout) is a range the new holder publishes too, from the same relayed position and in
//! the same seq order, each key's events one wave after another: the bus drops the copies
//! by event id, and inboxes absorb what comes later than the dedup window. Nothing is
//! skipped (the position only moves under the lease) and no key is reordered.

use std::time::Duration;

use tokio::time::Instant;

use crate::store::{Dialect, StoreError, Tx};

/// How long a lease lasts unless renewed: the bound on a takeover after its holder died.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);

/// The database's clock in milliseconds since the Unix epoch, in each dialect.
fn now_ms_sql(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
        Dialect::Postgres => "CAST(extract(epoch FROM clock_timestamp()) * 1000 AS BIGINT)",
    }
}

/// A lease this relay holds: its epoch and until when, on the local clock, it may publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub epoch: u64,
    pub until: Instant,
}

/// Takes or renews the lease of `stream` for `holder` for `ttl`, if it is free, expired,
/// or `holder`'s already; `None` when another holder has it. `asked` is when the caller
/// started the transaction: the lease lasts at least until `asked + ttl` on its clock.
pub fn hold(
    tx: &mut Tx<'_>,
    stream: &str,
    holder: &str,
    ttl: Duration,
    asked: Instant,
) -> Result<Option<Held>, StoreError> {
    tx.execute(
        "INSERT INTO kit_relay_lease (stream, holder, epoch, expires_ms) VALUES ($1, '', 0, 0) \
         ON CONFLICT (stream) DO NOTHING",
        &[stream.into()],
    )?;
    let now = now_ms_sql(tx.dialect());
    let ttl_ms = ttl.as_millis() as u64;
    let renewed = tx.query_opt(
        &format!(
            "UPDATE kit_relay_lease SET \
               epoch = CASE WHEN holder = $2 THEN epoch ELSE epoch + 1 END, \
               holder = $2, expires_ms = {now} + $3 \
             WHERE stream = $1 AND (holder = $2 OR expires_ms <= {now}) \
             RETURNING epoch"
        ),
        &[stream.into(), holder.into(), ttl_ms.into()],
    )?;
    renewed.map(|row| Ok(Held { epoch: row.get(0)?, until: asked + ttl })).transpose()
}

/// True when `holder` still holds the lease of `stream` under `epoch`; the row stays locked
/// until the caller's transaction ends, so what it writes next is fenced by the lease.
pub fn is_held(tx: &mut Tx<'_>, stream: &str, holder: &str, epoch: u64) -> Result<bool, StoreError> {
    let now = now_ms_sql(tx.dialect());
    Ok(tx
        .query_opt(
            &format!(
                "UPDATE kit_relay_lease SET expires_ms = expires_ms \
                 WHERE stream = $1 AND holder = $2 AND epoch = $3 AND expires_ms > {now} RETURNING 1"
            ),
            &[stream.into(), holder.into(), epoch.into()],
        )?
        .is_some())
}

/// Gives the lease up at once (on shutdown), so another instance takes over without waiting
/// for it to expire.
pub fn give_up(tx: &mut Tx<'_>, stream: &str, holder: &str) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE kit_relay_lease SET expires_ms = 0 WHERE stream = $1 AND holder = $2",
        &[stream.into(), holder.into()],
    )?;
    Ok(())
}

/// Who holds the lease of `stream` now, with its epoch; `None` when nobody does.
pub fn holder(tx: &mut Tx<'_>, stream: &str) -> Result<Option<(String, u64)>, StoreError> {
    let now = now_ms_sql(tx.dialect());
    tx.query_opt(
        &format!("SELECT holder, epoch FROM kit_relay_lease WHERE stream = $1 AND expires_ms > {now}"),
        &[stream.into()],
    )?
    .map(|mut row| Ok((row.take(0)?, row.get(1)?)))
    .transpose()
}
