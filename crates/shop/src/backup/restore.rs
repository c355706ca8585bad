//! Verifying a backup and restoring it into a fresh data dir.
//!
//! A restore copies the files, trims the bus copy to what its producers had committed (a
//! consistent backup already is; a naive one is not) and leaves the rest to the shop:
//! `capshop up --data-dir NEW` relays what the outboxes hold, each consumer's attachment
//! delivers again everything above its settled position, and the inbox floor drops what
//! its store had already applied — so every in-flight event has its effect once.

use std::path::Path;

use super::certificate::{self, Certificate};
use super::manifest::{Kind, Manifest, Positions, StreamPosition};
use super::{BackupError, trim};
use crate::contracts::facts::ShopFacts;
use crate::facts::parts;

/// What a verified backup says.
pub struct Verified {
    pub manifest: Manifest,
    /// The certificate checked again on the files as they are now.
    pub certificate: Certificate,
}

/// Checks every file against the manifest and, for a consistent backup, the certificate.
pub async fn verify(dir: &Path) -> Result<Verified, BackupError> {
    let manifest = Manifest::read(dir)?;
    manifest.check_files(dir)?;
    let facts = crate::facts::from_files(dir)
        .await
        .map_err(|e| BackupError::Damaged { file: "a database".into(), what: e.to_string() })?;
    let certificate = certificate::certify(&facts, &certificate::Held::read(dir, &parts())?);
    if manifest.kind == Kind::Consistent && !certificate.passed {
        return Err(BackupError::Certificate(certificate.failures()));
    }
    Ok(Verified { manifest, certificate })
}

/// What a restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Restored {
    pub kind: Kind,
    pub files: usize,
    /// Events dropped from the bus copy because their producer had not committed them.
    pub dropped_uncommitted: u64,
    /// Events committed and not yet applied by some consumer: delivered once the shop runs.
    pub in_flight: u64,
    pub restore_ms: f64,
}

/// Restores the backup in `backup` into `data_dir`, which must be new or empty. A naive
/// backup is restored too (its damage is what `capshop reconcile` then shows); a consistent
/// one must pass its certificate.
pub async fn restore(backup: &Path, data_dir: &Path) -> Result<Restored, BackupError> {
    let started = tokio::time::Instant::now();
    let verified = verify(backup).await?;
    if data_dir.exists() && std::fs::read_dir(data_dir).map_or(true, |mut d| d.next().is_some()) {
        return Err(BackupError::Occupied(data_dir.display().to_string()));
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| BackupError::io(format!("cannot create {}", data_dir.display()), e))?;
    let copied = copy_files(&verified.manifest, backup, data_dir);
    let trimmed = copied.and_then(|()| {
        trim::leases(data_dir, &parts())?;
        trim::uncommitted(&data_dir.join("bus.db"), &trim::committed(data_dir, &parts())?)
    });
    let dropped = match trimmed {
        Ok(dropped) => dropped,
        Err(e) => {
            // Nothing half-restored stays where a shop would start from it.
            for entry in &verified.manifest.files {
                let _ = std::fs::remove_file(data_dir.join(&entry.file));
            }
            return Err(e);
        }
    };
    let in_flight = in_flight(&verified.manifest.positions);
    Ok(Restored {
        kind: verified.manifest.kind,
        files: verified.manifest.files.len(),
        dropped_uncommitted: verified.manifest.dropped_uncommitted + dropped,
        in_flight,
        restore_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

fn copy_files(manifest: &Manifest, from: &Path, to: &Path) -> Result<(), BackupError> {
    for entry in &manifest.files {
        std::fs::copy(from.join(&entry.file), to.join(&entry.file))
            .map_err(|e| BackupError::io(format!("cannot copy {}", entry.file), e))?;
    }
    Ok(())
}

/// Committed events some consumer had not applied at the cut, summed over consumers.
pub(super) fn in_flight(positions: &Positions) -> u64 {
    positions
        .consumers
        .values()
        .flat_map(|streams| streams.iter())
        .map(|(stream, floor)| {
            positions.streams.get(stream).map_or(0, |s| s.committed.saturating_sub(*floor))
        })
        .sum()
}

/// The positions at the cut, from the facts of the copies; a consumer of `held` that never
/// applied an event of one of its streams stands at 0 on it.
pub(super) fn positions(facts: &ShopFacts, held: &certificate::Held) -> Positions {
    let mut positions = Positions::default();
    for (consumer, streams) in held.consumers() {
        let at = positions.consumers.entry(consumer.clone()).or_default();
        at.extend(streams.iter().map(|stream| (stream.clone(), 0)));
    }
    for part in &facts.parts {
        for outbox in &part.outbox {
            let stream =
                positions.streams.entry(outbox.stream.clone()).or_insert_with(StreamPosition::default);
            stream.committed = outbox.last_seq;
            stream.relayed = outbox.relayed_seq;
        }
        for consumer in &part.consumers {
            positions
                .consumers
                .entry(consumer.consumer.clone())
                .or_default()
                .insert(consumer.stream.clone(), consumer.floor);
        }
    }
    for stream in &facts.bus.streams {
        positions.streams.entry(stream.stream.clone()).or_default().bus_head = stream.head;
    }
    positions
}
