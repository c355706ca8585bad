//! Pinning the distributed mode's databases at the cut ([`super::distributed`]): every
//! connection opened and its REPEATABLE READ transaction begun before the pauses are held
//! (no snapshot is taken yet), then, while they are held, every snapshot pinned at once
//! except where [`PINNED_AFTER`] orders two: the second is sent once the first answered.
//!
//! Why those two. With every pause held no consumer applies anything and no placement is
//! half done, so most snapshots may be taken in any order: HTTP writes and relays go on,
//! each in one database whose consumers are held. Two pieces of work write two databases,
//! the first before the second, with a call between them:
//! - a placement commits the payment authorization, then its order. Its passage covers
//!   both; pinned after order's, payment's snapshot also holds every authorization the
//!   order snapshot names by itself (the certificate checks it);
//! - in ap mode the arbiter site (dc1) writes its verdict into its copy of dc2's lines
//!   (one version up), then dc2 concludes its own lines. No passage covers that round:
//!   dc2 pinned after dc1 is what keeps dc1's copy from being seen ahead of its source,
//!   and only while dc2's conclusion lands before dc2's pin (docs/BACKUP.md, the limits).

use std::collections::BTreeMap;

use kit::store::Store;
use kit::store::pg_snapshot::{Begun, Exporter};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::BackupError;
use super::distributed::Pinned;

/// The pairs pinned in order: the second's snapshot is taken once the first's is.
const PINNED_AFTER: [(&str, &str); 2] = [("order", "payment"), ("inventory-dc1", "inventory-dc2")];

/// One database ready to be pinned: its transaction begun, a store to read it with.
pub(super) struct Opened {
    part: String,
    url: String,
    begun: Begun,
    store: Store,
}

fn unreachable(part: &str, e: impl std::fmt::Display) -> BackupError {
    BackupError::io(format!("cannot reach {part}'s database"), e)
}

/// Opens a connection to every database of `databases` (part, URL), all at once, and
/// begins the transaction that will pin it.
pub(super) async fn open_all(databases: &[(String, String)]) -> Result<Vec<Opened>, BackupError> {
    let opens = databases.iter().map(|(part, url)| async move {
        let exporter = Exporter::connect(url).await.map_err(|e| unreachable(part, e))?;
        let store = Store::open(url, &[]).await.map_err(|e| unreachable(part, e))?;
        let begun = exporter.begin().await.map_err(|e| unreachable(part, e))?;
        Ok(Opened { part: part.clone(), url: url.clone(), begun, store })
    });
    futures_util::future::join_all(opens).await.into_iter().collect()
}

/// Pins every opened database's snapshot at once, each [`PINNED_AFTER`] pair's second
/// after its first; answers them with when each was pinned (ms since `asked`).
pub(super) async fn pin_all(
    opened: Vec<Opened>,
    asked: Instant,
) -> Result<(Vec<Pinned>, BTreeMap<String, f64>), BackupError> {
    // Per pair, a signal its first sends once pinned, which its second waits for; a
    // first that fails, or is not among `opened`, drops it and the second fails.
    let mut signals: BTreeMap<&str, Vec<oneshot::Sender<()>>> = BTreeMap::new();
    let mut waits: BTreeMap<&str, Vec<(&str, oneshot::Receiver<()>)>> = BTreeMap::new();
    for (first, second) in PINNED_AFTER {
        let (signal, wait) = oneshot::channel();
        signals.entry(first).or_default().push(signal);
        waits.entry(second).or_default().push((first, wait));
    }
    let pins: Vec<_> = opened
        .into_iter()
        .map(|o| {
            let signal = signals.remove(o.part.as_str()).unwrap_or_default();
            let wait = waits.remove(o.part.as_str()).unwrap_or_default();
            async move {
                let failed = |e: &dyn std::fmt::Display| {
                    BackupError::io(format!("cannot pin {}'s snapshot", o.part), e)
                };
                for (first, pinned) in wait {
                    pinned.await.map_err(|_| failed(&format!("{first}'s was not pinned")))?;
                }
                let exported = o.begun.export().await.map_err(|e| failed(&e))?;
                let at = asked.elapsed().as_secs_f64() * 1e3;
                for signal in signal {
                    let _ = signal.send(());
                }
                Ok((Pinned { part: o.part, url: o.url, exported, store: o.store }, at))
            }
        })
        .collect();
    drop(signals);
    let mut pinned = Vec::new();
    let mut at = BTreeMap::new();
    for answer in futures_util::future::join_all(pins).await {
        let (p, ms) = answer?;
        at.insert(p.part.clone(), ms);
        pinned.push(p);
    }
    Ok((pinned, at))
}
