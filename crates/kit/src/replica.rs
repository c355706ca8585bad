//! Replicas of other services' aggregates: the version gate that makes duplicates,
//! reordering and late replays harmless, and waiting until a replica has caught up with a
//! [`ConsistencyToken`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::store::{Store, StoreError, Tx};
use crate::token::{ConsistencyToken, TokenEntry};

/// The versions a service's replicas hold, per scope and aggregate key.
///
/// Cloning shares the change signal that wakes readers waiting for a version.
#[derive(Debug, Clone)]
pub struct VersionGate {
    changed: Arc<watch::Sender<u64>>,
}

impl Default for VersionGate {
    fn default() -> Self {
        Self::new()
    }
}

/// How a wait for a consistency token ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caught {
    /// The replica holds every named aggregate at least at the named version.
    Up,
    /// The time ran out; these entries are still behind.
    Behind(Vec<TokenEntry>),
}

impl VersionGate {
    pub fn new() -> Self {
        Self { changed: Arc::new(watch::Sender::new(0)) }
    }

    /// Records that the replica of `scope/key` now holds `version`, if that is newer than
    /// what it holds; returns whether it was. Apply the event's state only when it returns
    /// `true`, in the same transaction.
    pub fn admit(&self, tx: &mut Tx<'_>, scope: &str, key: &str, version: u64) -> Result<bool, StoreError> {
        #[cfg(feature = "canary")]
        if crate::canary::armed("version-gate-off") {
            tx.execute(
                "INSERT INTO kit_replica_version (scope, key, version) VALUES ($1, $2, $3) \
                 ON CONFLICT (scope, key) DO UPDATE SET version = excluded.version",
                &[scope.into(), key.into(), version.into()],
            )?;
            return Ok(true);
        }
        let admitted = tx.execute(
            "INSERT INTO kit_replica_version (scope, key, version) VALUES ($1, $2, $3) \
             ON CONFLICT (scope, key) DO UPDATE SET version = excluded.version \
             WHERE excluded.version > kit_replica_version.version",
            &[scope.into(), key.into(), version.into()],
        )? == 1;
        if admitted {
            let changed = self.changed.clone();
            tx.after_commit(move || changed.send_modify(|generation| *generation += 1));
        }
        Ok(admitted)
    }

    /// The version the replica holds for `scope/key`, if any.
    pub fn version(tx: &mut Tx<'_>, scope: &str, key: &str) -> Result<Option<u64>, StoreError> {
        tx.query_opt(
            "SELECT version FROM kit_replica_version WHERE scope = $1 AND key = $2",
            &[scope.into(), key.into()],
        )?
        .map(|row| row.get(0))
        .transpose()
    }

    /// Waits up to `within` until the replica holds every aggregate of `token` at least at
    /// its version; woken by commits that admit a version, never by polling.
    pub async fn wait_for(
        &self,
        store: &Store,
        token: &ConsistencyToken,
        within: Duration,
    ) -> Result<Caught, StoreError> {
        let deadline = tokio::time::Instant::now() + within;
        let mut changes = self.changed.subscribe();
        loop {
            changes.borrow_and_update();
            let behind = Self::behind(store, token).await?;
            if behind.is_empty() {
                return Ok(Caught::Up);
            }
            let woken = tokio::time::timeout_at(deadline, changes.changed()).await;
            if !matches!(woken, Ok(Ok(()))) {
                return Ok(Caught::Behind(behind));
            }
        }
    }

    /// The entries of `token` the replica does not hold yet.
    pub async fn behind(store: &Store, token: &ConsistencyToken) -> Result<Vec<TokenEntry>, StoreError> {
        let entries = token.entries().to_vec();
        store
            .transact(move |tx| {
                let mut behind = Vec::new();
                for entry in entries {
                    let held = Self::version(tx, entry.scope(), entry.key())?.unwrap_or(0);
                    if held < entry.version() {
                        behind.push(entry);
                    }
                }
                Ok(behind)
            })
            .await
    }
}

#[cfg(test)]
mod tests;
