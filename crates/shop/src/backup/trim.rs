//! Dropping what the producers had not committed from a bus copy.
//!
//! The bus is pinned after the services, so its copy may hold events a producer committed
//! (and its relay published) after the producer's own snapshot. Kept, they would clash with
//! the events the restored producer commits under the same seqs; so they go, and the
//! consumers' positions are brought back under what remains. The restored relay publishes
//! them again if the producer's copy has them; it does not, so they never happened.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::OptionalExtension as _;

use super::BackupError;

/// The last seq each producer committed, from the `<part>.db` copies in `dir`.
pub fn committed(dir: &Path, parts: &[String]) -> Result<BTreeMap<String, u64>, BackupError> {
    let mut heads = BTreeMap::new();
    for part in parts {
        let file = format!("{part}.db");
        let read = || -> rusqlite::Result<Vec<(String, u64)>> {
            let conn = open(&dir.join(&file))?;
            let mut statement = conn.prepare("SELECT stream, last_seq FROM kit_outbox_head")?;
            let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        };
        let rows = read().map_err(|e| BackupError::Damaged { file: file.clone(), what: e.to_string() })?;
        heads.extend(rows);
    }
    Ok(heads)
}

/// Removes from `bus` every event above its producer's committed seq in `committed`; a
/// stream no producer of the backup writes is left alone. Answers how many were dropped.
pub fn uncommitted(bus: &Path, committed: &BTreeMap<String, u64>) -> Result<u64, BackupError> {
    let trim = || -> rusqlite::Result<u64> {
        let mut conn = open(bus)?;
        let tx = conn.transaction()?;
        let mut dropped = 0u64;
        for (stream, last) in committed {
            dropped += tx.execute(
                "DELETE FROM bus_log WHERE stream = ?1 AND seq > ?2",
                rusqlite::params![stream, last],
            )? as u64;
            tx.execute(
                "UPDATE bus_stream SET head_seq = ?2 WHERE stream = ?1 AND head_seq > ?2",
                rusqlite::params![stream, last],
            )?;
        }
        if dropped > 0 {
            tx.execute("DELETE FROM bus_pending WHERE pos NOT IN (SELECT pos FROM bus_log)", [])?;
            // New positions are handed out above the highest one left: no consumer may
            // stand above it, or it would skip them.
            let top: Option<u64> =
                tx.query_row("SELECT max(pos) FROM bus_log", [], |r| r.get(0)).optional()?.flatten();
            let top = top.unwrap_or(0);
            tx.execute(
                "UPDATE bus_consumer SET taken_pos = min(taken_pos, ?1), acked_pos = min(acked_pos, ?1)",
                [top],
            )?;
        }
        tx.commit()?;
        Ok(dropped)
    };
    trim().map_err(|e| BackupError::Damaged { file: "bus.db".into(), what: e.to_string() })
}

fn open(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

/// Forgets every relay lease in the part copies of `dir`: the processes that held them are
/// not the ones that run the restored shop, which must not wait for their leases to expire.
pub fn leases(dir: &Path, parts: &[String]) -> Result<(), BackupError> {
    for part in parts {
        let file = format!("{part}.db");
        let forget = || -> rusqlite::Result<()> {
            let conn = open(&dir.join(&file))?;
            // A backup from before the lease (migration 0008) has no such table.
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
        forget().map_err(|e| BackupError::Damaged { file: file.clone(), what: e.to_string() })?;
    }
    Ok(())
}
