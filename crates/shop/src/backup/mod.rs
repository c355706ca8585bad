//! Backups of every database of the shop, consistent with each other, and their restore
//! (DESIGN §5, docs/BACKUP.md).
//!
//! A consistent backup is a cut: the process's [`kit::pause::Pause`] is held (each
//! consumer finishes the batch it is applying and settling, each placement the payment
//! and order it is committing, and the next ones wait), every database pins a read
//! snapshot — the order service before payment, the bus last — and the pause is released;
//! HTTP writes and relays never stop. Then the snapshots are copied with SQLite's online
//! backup API, the bus copy loses what its producers had not committed, and the copies
//! must pass a [`certificate`] before the manifest makes the directory a backup.
//!
//! - [`cut`]: pinning and copying; [`trim`]: the bus copy trimmed to what was committed;
//!   [`certificate`]: the checks; [`manifest`]: what a backup says of itself;
//!   [`restore`]: verifying and restoring; [`http`]: `/admin/backups` on the gateway.

pub mod certificate;
mod cut;
pub mod distributed;
mod events;
pub mod hold;
pub mod http;
pub mod manifest;
pub mod pg_backup;
pub mod pg_restore;
mod pin;
pub mod restore;
mod trim;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kit::pause::Pause;
pub use manifest::{Kind, Manifest};
pub use restore::{Restored, restore, verify};

use crate::facts::parts;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} exists and is not empty: a backup is written into a new directory; name another")]
    Exists(String),
    #[error("{0} holds no backup (no manifest.json): name a directory `capshop backup create` wrote")]
    NotABackup(String),
    #[error("{file} of the backup is damaged: {what}; the backup cannot be trusted, restore another one")]
    Damaged { file: String, what: String },
    #[error("the backup failed its certificate, so nothing was kept: {}", .0.join("; "))]
    Certificate(Vec<String>),
    #[error("{0} already holds a shop: restore into a new or empty one")]
    Occupied(String),
    #[error("{what}: {reason}")]
    Io { what: String, reason: String },
    #[error("backups of this deployment are not built yet: {0}")]
    Unsupported(String),
}

impl BackupError {
    /// A copy that cannot be read or mended as the kit's tables say it should.
    pub(crate) fn damaged(file: &str, e: kit::store::StoreError) -> Self {
        BackupError::Damaged { file: file.to_owned(), what: e.to_string() }
    }

    pub(crate) fn io(what: impl Into<String>, e: impl std::fmt::Display) -> Self {
        BackupError::Io { what: what.into(), reason: e.to_string() }
    }
}

/// What a backup copies: every database file of the embedded shop in the order the cut
/// pins them and the pause of the process, or the distributed shop's processes, databases
/// and bus. Remembers the backups it took.
#[derive(Clone)]
pub struct Source {
    origin: Origin,
    taken: Arc<Mutex<Vec<Summary>>>,
    /// One backup at a time.
    running: Arc<tokio::sync::Mutex<()>>,
}

/// A backup as the dashboard lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Summary {
    pub dir: String,
    pub kind: Kind,
    pub created_at: String,
    pub pause_ms: f64,
    pub total_ms: f64,
    pub bytes: u64,
    pub certified: bool,
}

impl Summary {
    pub fn of(dir: &Path, manifest: &Manifest) -> Self {
        Self {
            dir: dir.display().to_string(),
            kind: manifest.kind,
            created_at: manifest.created_at.clone(),
            pause_ms: manifest.pause_ms,
            total_ms: manifest.total_ms,
            bytes: manifest.files.iter().map(|f| f.bytes).sum(),
            certified: manifest.certificate.passed,
        }
    }
}

#[derive(Clone)]
enum Origin {
    Embedded { files: Vec<(String, PathBuf)>, pause: Pause },
    Distributed(Arc<distributed::Cluster>),
}

impl Source {
    /// The distributed shop `cluster` reaches.
    pub fn distributed(cluster: distributed::Cluster) -> Self {
        Self {
            origin: Origin::Distributed(Arc::new(cluster)),
            taken: Arc::default(),
            running: Arc::default(),
        }
    }

    /// The embedded shop in `data_dir`: a `<part>.db` per part and `bus.db`, stopping at
    /// `pause`.
    pub fn embedded(data_dir: &Path, pause: Pause) -> Self {
        let mut files: Vec<(String, PathBuf)> =
            parts().into_iter().map(|p| (p.clone(), data_dir.join(format!("{p}.db")))).collect();
        files.push(("bus".into(), data_dir.join("bus.db")));
        Self { origin: Origin::Embedded { files, pause }, taken: Arc::default(), running: Arc::default() }
    }

    /// Every part's facts and the bus's at one consistent cut, without copying anything:
    /// consumers and placements held for a moment while the snapshots are pinned.
    pub async fn facts(&self) -> Result<crate::contracts::facts::ShopFacts, BackupError> {
        match &self.origin {
            Origin::Embedded { files, pause } => cut::facts(files, pause).await,
            Origin::Distributed(cluster) => {
                let cut = cluster.cut().await?;
                for pinned in cut.pinned {
                    pinned.exported.close().await;
                }
                Ok(cut.facts)
            }
        }
    }

    /// The backups taken through this source, oldest first.
    pub fn taken(&self) -> Vec<Summary> {
        self.taken.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Takes a backup of `kind` into `dir`, which must not exist or be empty. A failure
    /// leaves nothing behind that could pass for a backup.
    pub async fn create(&self, dir: &Path, kind: Kind) -> Result<Manifest, BackupError> {
        let _one = self.running.lock().await;
        let started = tokio::time::Instant::now();
        if dir.exists() && std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_some()) {
            return Err(BackupError::Exists(dir.display().to_string()));
        }
        let partial = partial_dir(dir);
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial)
            .map_err(|e| BackupError::io(format!("cannot create {}", partial.display()), e))?;
        let manifest = match &self.origin {
            Origin::Embedded { files, pause } => match cut::copy(files, pause, &partial, kind).await {
                Ok(copied) => finish(&partial, kind, copied, started).await,
                Err(e) => Err(e),
            },
            Origin::Distributed(cluster) => pg_backup::create(cluster, &partial, kind, started).await,
        };
        let manifest = match manifest {
            Ok(manifest) => manifest,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&partial);
                return Err(e);
            }
        };
        if dir.exists() {
            std::fs::remove_dir(dir)
                .map_err(|e| BackupError::io(format!("cannot replace {}", dir.display()), e))?;
        }
        std::fs::rename(&partial, dir)
            .map_err(|e| BackupError::io(format!("cannot move the backup to {}", dir.display()), e))?;
        self.taken
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Summary::of(dir, &manifest));
        Ok(manifest)
    }
}

/// Where a backup is written before it is complete: beside its directory, under a name
/// no one would take for a backup.
fn partial_dir(dir: &Path) -> PathBuf {
    let name = dir.file_name().map_or_else(|| "backup".into(), |n| n.to_string_lossy().into_owned());
    dir.with_file_name(format!(".{name}.partial"))
}

/// Trims the bus copy, certifies (a consistent backup must pass) and writes the manifest.
async fn finish(
    dir: &Path,
    kind: Kind,
    copied: cut::Copied,
    started: tokio::time::Instant,
) -> Result<Manifest, BackupError> {
    let parts = parts();
    let committed = trim::committed(dir, &parts)?;
    let dropped = match kind {
        Kind::Consistent => trim::uncommitted(&dir.join("bus.db"), &committed)?,
        // A naive backup is kept as it was copied, to show what that gives.
        Kind::Naive => 0,
    };
    let facts =
        crate::facts::from_files(dir).await.map_err(|e| BackupError::io("cannot read the copies", e))?;
    let held = certificate::Held::read(dir, &parts)?;
    let certificate = certificate::certify(&facts, &held);
    if kind == Kind::Consistent && !certificate.passed {
        return Err(BackupError::Certificate(certificate.failures()));
    }
    let mut files = Vec::new();
    for part in parts.iter().cloned().chain(["bus".to_owned()]) {
        let file = format!("{part}.db");
        let path = dir.join(&file);
        let (bytes, sha256) =
            manifest::checksum(&path).map_err(|e| BackupError::io(format!("cannot read {file}"), e))?;
        files.push(manifest::FileEntry {
            schema: manifest::schema_versions(&path)?,
            part,
            file,
            bytes,
            sha256,
        });
    }
    let manifest = Manifest {
        format: manifest::FORMAT,
        kind,
        capshop_version: env!("CARGO_PKG_VERSION").into(),
        created_at: copied.created_at,
        deployment: "embedded".into(),
        pause_ms: copied.pause.as_secs_f64() * 1e3,
        total_ms: started.elapsed().as_secs_f64() * 1e3,
        pause_steps: None,
        files,
        positions: restore::positions(&facts, &held),
        certificate,
        dropped_uncommitted: dropped,
    };
    manifest.write(dir)?;
    Ok(manifest)
}
