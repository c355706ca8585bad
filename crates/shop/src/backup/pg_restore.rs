//! Restoring a distributed backup into fresh databases (`capshop_<part>` on one server):
//! each dump is loaded, the events in flight at the cut are put back into their
//! producers' outboxes as not yet relayed, and relay leases are forgotten. The restored
//! shop must run on a fresh stream prefix (or a fresh NATS server), so the old streams are
//! not mixed in: its relays publish what the outboxes hold, and each consumer's inbox
//! floor drops what it had already applied — every event in flight has its effect once.
//! The certificate is checked again on the restored databases.

use std::collections::BTreeMap;
use std::path::Path;

use kit::store::{Store, pg_snapshot};

use super::certificate::{self, Held};
use super::manifest::{Kind, Manifest};
use super::pg_backup::DEPLOYMENT;
use super::restore::{Restored, in_flight};
use super::{BackupError, events};
use crate::contracts::facts::ShopFacts;
use crate::stores::StoreLocation;

/// Whether the backup in `dir` is of the distributed mode.
pub fn is_distributed(dir: &Path) -> Result<bool, BackupError> {
    Ok(Manifest::read(dir)?.deployment == DEPLOYMENT)
}

/// Checks a distributed backup: every file against its checksum, and the certificate it
/// passed when it was taken (its databases can be re-checked only once restored).
pub fn verify(dir: &Path) -> Result<Manifest, BackupError> {
    let manifest = Manifest::read(dir)?;
    manifest.check_files(dir)?;
    if manifest.kind == Kind::Consistent && !manifest.certificate.passed {
        return Err(BackupError::Certificate(manifest.certificate.failures()));
    }
    Ok(manifest)
}

fn failed(part: &str, e: impl std::fmt::Display) -> BackupError {
    BackupError::io(format!("cannot restore {part}'s database"), e)
}

/// Restores the backup in `backup` into the databases `capshop_<part>` of the server at
/// `database_base` (`postgres://user@host:port`), which must exist and be empty.
pub async fn restore(backup: &Path, database_base: &str) -> Result<Restored, BackupError> {
    let started = tokio::time::Instant::now();
    let manifest = verify(backup)?;
    let base = database_base.trim_end_matches('/');
    let mut dumps = Vec::new();
    for entry in manifest.files.iter().filter(|f| !f.part.starts_with("events:")) {
        let url = format!("{base}/{}", StoreLocation::database(&entry.part));
        if pg_snapshot::holds_tables(&url).await.map_err(|e| failed(&entry.part, e))? {
            return Err(BackupError::Occupied(format!(
                "the database {}",
                StoreLocation::database(&entry.part)
            )));
        }
        dumps.push((entry.part.clone(), url, entry.file.clone()));
    }
    let mut stores = BTreeMap::new();
    for (part, url, file) in dumps {
        pg_snapshot::load(&url, &backup.join(&file)).await.map_err(|e| failed(&part, e))?;
        let store = Store::open(&url, &[]).await.map_err(|e| failed(&part, e))?;
        stores.insert(part, store);
    }
    let mut put_back: BTreeMap<String, Vec<kit::bus::Message>> = BTreeMap::new();
    for entry in &manifest.files {
        if let Some(stream) = entry.part.strip_prefix("events:") {
            put_back.insert(stream.to_owned(), events::read(backup, &entry.file)?);
        }
    }
    for (part, store) in &stores {
        // A part's stream is named after it.
        let (stream, taken) = (part.clone(), put_back.remove(part).unwrap_or_default());
        store
            .transact(move |tx| pg_snapshot::put_back(tx, &stream, &taken))
            .await
            .map_err(|e| failed(part, e))?;
    }
    let certificate = recertify(&stores).await?;
    if manifest.kind == Kind::Consistent && !certificate.passed {
        return Err(BackupError::Certificate(certificate.failures()));
    }
    Ok(Restored {
        kind: manifest.kind,
        files: manifest.files.len(),
        dropped_uncommitted: 0,
        in_flight: in_flight(&manifest.positions),
        restore_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

/// The certificate on the restored databases: with the events put back, every unapplied
/// event must now be in an outbox.
async fn recertify(stores: &BTreeMap<String, Store>) -> Result<certificate::Certificate, BackupError> {
    let mut facts = ShopFacts { cut: true, ..ShopFacts::default() };
    let mut waiting = BTreeMap::new();
    for part in crate::facts::parts() {
        let Some(store) = stores.get(&part) else { continue };
        let (state, site) = crate::facts::reader(&part).ok_or_else(|| failed(&part, "no such part"))?;
        facts.parts.push(
            crate::service::facts::read(store, part.clone(), state, site)
                .await
                .map_err(|e| failed(&part, e))?,
        );
        waiting.extend(store.transact(pg_snapshot::outbox_waiting).await.map_err(|e| failed(&part, e))?);
    }
    Ok(certificate::certify(&facts, &Held::exported(BTreeMap::new(), waiting)))
}
