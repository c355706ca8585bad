//! A copy of the embedded bus's file (a backup): which events it holds, which durable
//! consumers it knows, and forgetting the events their producers had not committed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rusqlite::OptionalExtension as _;

use crate::store::StoreError;
use crate::store::copy::{failed, open, pairs};

/// What a bus copy holds.
#[derive(Debug, Default)]
pub struct Held {
    /// The seqs of each stream in the log.
    pub seqs: BTreeMap<String, BTreeSet<u64>>,
    /// Every durable consumer, with its streams.
    pub consumers: Vec<(String, Vec<String>)>,
}

pub fn held(path: &Path) -> Result<Held, StoreError> {
    let mut held = Held::default();
    for (stream, seq) in pairs::<u64>(path, "SELECT stream, seq FROM bus_log")? {
        held.seqs.entry(stream).or_default().insert(seq);
    }
    held.consumers = pairs::<String>(path, "SELECT name, streams FROM bus_consumer")?
        .into_iter()
        .map(|(name, streams)| (name, streams.split(',').map(str::to_owned).collect()))
        .collect();
    Ok(held)
}

/// Removes every event above its producer's last committed seq in `committed` (a stream
/// not named there is left alone), and brings the consumers' positions back under what
/// remains: new positions are handed out above the highest one left, and a consumer that
/// stood above it would skip them. Answers how many events were dropped.
pub fn drop_uncommitted(path: &Path, committed: &BTreeMap<String, u64>) -> Result<u64, StoreError> {
    let mut conn = open(path)?;
    let mut trim = || -> rusqlite::Result<u64> {
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
            let top: Option<u64> =
                tx.query_row("SELECT max(pos) FROM bus_log", [], |r| r.get(0)).optional()?.flatten();
            tx.execute(
                "UPDATE bus_consumer SET taken_pos = min(taken_pos, ?1), acked_pos = min(acked_pos, ?1)",
                [top.unwrap_or(0)],
            )?;
        }
        tx.commit()?;
        Ok(dropped)
    };
    trim().map_err(|e| failed(path, e))
}
