//! A copy of a service's SQLite database file (a backup), read and mended by the kit,
//! which owns the tables it touches: the outbox's heads and waiting events, the relay
//! lease, the migrations applied. Each call opens the file on a connection of its own
//! and closes it before it returns, so the file is whole again when it does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::StoreError;

/// Opens the SQLite file at `path` (which must exist) on a connection of its own.
pub(crate) fn open(path: &Path) -> Result<rusqlite::Connection, StoreError> {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    rusqlite::Connection::open_with_flags(path, flags)
        .map_err(|e| StoreError::Open { url: path.display().to_string(), reason: e.to_string() })
}

pub(crate) fn failed(path: &Path, e: rusqlite::Error) -> StoreError {
    StoreError::Database(format!("{}: {e}", path.display()))
}

/// Rows of two columns, e.g. (stream, seq).
pub(crate) fn pairs<T: rusqlite::types::FromSql>(
    path: &Path,
    sql: &str,
) -> Result<Vec<(String, T)>, StoreError> {
    let conn = open(path)?;
    let read = || -> rusqlite::Result<Vec<(String, T)>> {
        let mut statement = conn.prepare(sql)?;
        let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    };
    read().map_err(|e| failed(path, e))
}

/// The last seq committed per stream the copy's outbox produces.
pub fn outbox_heads(path: &Path) -> Result<BTreeMap<String, u64>, StoreError> {
    Ok(pairs(path, "SELECT stream, last_seq FROM kit_outbox_head")?.into_iter().collect())
}

/// The seqs still waiting in the copy's outbox, per stream.
pub fn outbox_waiting(path: &Path) -> Result<BTreeMap<String, BTreeSet<u64>>, StoreError> {
    let mut waiting: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for (stream, seq) in pairs(path, "SELECT stream, seq FROM kit_outbox")? {
        waiting.entry(stream).or_default().insert(seq);
    }
    Ok(waiting)
}

/// The highest migration applied per component.
pub fn schema_versions(path: &Path) -> Result<BTreeMap<String, u32>, StoreError> {
    Ok(pairs(path, "SELECT component, max(version) FROM kit_migrations GROUP BY component")?
        .into_iter()
        .collect())
}

/// Forgets every relay lease in the copy: the processes that held them do not run the
/// restored copy, which must not wait for their leases to expire. A copy made before the
/// lease existed (migration 0008) has nothing to forget.
pub fn forget_relay_leases(path: &Path) -> Result<(), StoreError> {
    let conn = open(path)?;
    let forget = || -> rusqlite::Result<()> {
        let leased: bool = conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'kit_relay_lease'",
            [],
            |r| r.get(0),
        )?;
        if leased {
            conn.execute("DELETE FROM kit_relay_lease", [])?;
        }
        Ok(())
    };
    forget().map_err(|e| failed(path, e))
}
