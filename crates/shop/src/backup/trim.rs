//! Dropping what the producers had not committed from a bus copy.
//!
//! The bus is pinned after the services, so its copy may hold events a producer committed
//! (and its relay published) after the producer's own snapshot. Kept, they would clash with
//! the events the restored producer commits under the same seqs; so they go, and the
//! consumers' positions are brought back under what remains. The restored relay publishes
//! them again if the producer's copy has them; it does not, so they never happened.

use std::collections::BTreeMap;
use std::path::Path;

use kit::bus::embedded_copy;
use kit::store::copy;

use super::BackupError;

/// The last seq each producer committed, from the `<part>.db` copies in `dir`.
pub fn committed(dir: &Path, parts: &[String]) -> Result<BTreeMap<String, u64>, BackupError> {
    let mut heads = BTreeMap::new();
    for part in parts {
        let file = format!("{part}.db");
        heads.extend(copy::outbox_heads(&dir.join(&file)).map_err(|e| BackupError::damaged(&file, e))?);
    }
    Ok(heads)
}

/// Removes from `bus` every event above its producer's committed seq in `committed`; a
/// stream no producer of the backup writes is left alone. Answers how many were dropped.
pub fn uncommitted(bus: &Path, committed: &BTreeMap<String, u64>) -> Result<u64, BackupError> {
    embedded_copy::drop_uncommitted(bus, committed).map_err(|e| BackupError::damaged("bus.db", e))
}

/// Forgets every relay lease in the part copies of `dir`: the processes that held them are
/// not the ones that run the restored shop, which must not wait for their leases to expire.
pub fn leases(dir: &Path, parts: &[String]) -> Result<(), BackupError> {
    for part in parts {
        let file = format!("{part}.db");
        copy::forget_relay_leases(&dir.join(&file)).map_err(|e| BackupError::damaged(&file, e))?;
    }
    Ok(())
}
