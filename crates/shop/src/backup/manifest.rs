//! The manifest a backup is known by: what it holds (each file with its size, SHA-256 and
//! schema versions), the positions at the cut, its certificate and how long it took. A
//! directory without one is not a backup.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::BackupError;
use super::certificate::Certificate;

/// The file name of the manifest inside a backup directory.
pub const FILE: &str = "manifest.json";
/// The manifest's own format; a newer one is refused by an older capshop.
pub const FORMAT: u32 = 1;

/// How the databases were copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// All at one cut (DESIGN §5): consumers and cross-service writes paused while every
    /// database pins a snapshot.
    Consistent,
    /// Each database on its own, one after another: what seed 004 warns about.
    Naive,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Manifest {
    pub format: u32,
    pub kind: Kind,
    pub capshop_version: String,
    /// When the cut was taken (RFC 3339, UTC).
    pub created_at: String,
    /// `embedded` (SQLite files and the embedded bus).
    pub deployment: String,
    /// How long cross-service work was held (0 for a naive backup).
    pub pause_ms: f64,
    /// From the request to the manifest written.
    pub total_ms: f64,
    /// Where a distributed cut's pause went (absent for an embedded or naive backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub pause_steps: Option<PauseSteps>,
    pub files: Vec<FileEntry>,
    #[schema(value_type = Object)]
    pub positions: Positions,
    pub certificate: Certificate,
    /// Events on the bus copy that their producer had not committed at the cut, dropped.
    pub dropped_uncommitted: u64,
}

/// One database of the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileEntry {
    /// `order`, `inventory-dc1`, ..., or `bus`.
    pub part: String,
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    /// The highest migration applied, per component (`kit`, `order`, `bus`, ...).
    pub schema: BTreeMap<String, u32>,
}

/// Where a distributed cut's pause went, in ms since the gateway asked for the holds: when
/// every process's hold had answered, when each database's snapshot was pinned, when every
/// hold's release had answered; and per process (by its base URL) how long its hold waited
/// for the passages under way, and how long it held. `pause_ms` is `released_ms` (or a
/// longer hold): no consumer waited longer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PauseSteps {
    pub holds_answered_ms: f64,
    pub pinned_ms: BTreeMap<String, f64>,
    pub released_ms: f64,
    pub waited_ms: BTreeMap<String, f64>,
    pub held_ms: BTreeMap<String, f64>,
}

/// Where every stream and consumer stood at the cut.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Positions {
    /// Per stream: committed by its producer, relayed, held by the bus.
    pub streams: BTreeMap<String, StreamPosition>,
    /// Per consumer and stream: the inbox floor (every seq at or below it applied).
    pub consumers: BTreeMap<String, BTreeMap<String, u64>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPosition {
    pub committed: u64,
    pub relayed: u64,
    pub bus_head: u64,
}

impl Manifest {
    pub fn write(&self, dir: &Path) -> Result<(), BackupError> {
        let text = serde_json::to_vec_pretty(self).map_err(|e| BackupError::io("writing the manifest", e))?;
        std::fs::write(dir.join(FILE), text).map_err(|e| BackupError::io("writing the manifest", e))
    }

    /// Reads the manifest of the backup in `dir`.
    pub fn read(dir: &Path) -> Result<Self, BackupError> {
        let path = dir.join(FILE);
        let text = std::fs::read(&path).map_err(|_| BackupError::NotABackup(dir.display().to_string()))?;
        let manifest: Manifest = serde_json::from_slice(&text)
            .map_err(|e| BackupError::Damaged { file: FILE.into(), what: format!("unreadable: {e}") })?;
        if manifest.format > FORMAT {
            return Err(BackupError::Damaged {
                file: FILE.into(),
                what: format!(
                    "format {} is newer than this capshop reads ({FORMAT}); use a newer capshop",
                    manifest.format
                ),
            });
        }
        Ok(manifest)
    }

    /// Checks that every file the manifest lists is in `dir` with its size and checksum.
    pub fn check_files(&self, dir: &Path) -> Result<(), BackupError> {
        for entry in &self.files {
            let path = dir.join(&entry.file);
            let (bytes, sha256) = checksum(&path)
                .map_err(|_| BackupError::Damaged { file: entry.file.clone(), what: "missing".into() })?;
            if bytes != entry.bytes || sha256 != entry.sha256 {
                return Err(BackupError::Damaged {
                    file: entry.file.clone(),
                    what: format!(
                        "its checksum is {sha256} ({bytes} bytes) where the manifest says {} ({} bytes)",
                        entry.sha256, entry.bytes
                    ),
                });
            }
        }
        Ok(())
    }
}

/// The size and SHA-256 (hex) of a file.
pub fn checksum(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&buffer[..n]);
    }
    Ok((bytes, hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()))
}

/// The highest migration per component recorded in a database copy.
pub fn schema_versions(path: &Path) -> Result<BTreeMap<String, u32>, BackupError> {
    kit::store::copy::schema_versions(path).map_err(|e| BackupError::damaged(&path.display().to_string(), e))
}
