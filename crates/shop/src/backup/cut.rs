//! Pinning every database at one cut and copying the snapshots, or (naive) copying each
//! database on its own, one after another.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kit::pause::Pause;
use kit::store::snapshot::Snapshot;

use super::BackupError;
use super::manifest::Kind;
use crate::contracts::facts::ShopFacts;

/// What the copy step tells the manifest.
pub(super) struct Copied {
    /// How long cross-service work was held.
    pub pause: Duration,
    pub created_at: String,
}

fn failed(part: &str, e: kit::store::StoreError) -> BackupError {
    BackupError::io(format!("cannot copy the {part} database"), e)
}

/// Copies every file of `files` into `dir` as `<part>.db`.
pub(super) async fn copy(
    files: &[(String, PathBuf)],
    pause: &Pause,
    dir: &Path,
    kind: Kind,
) -> Result<Copied, BackupError> {
    let dest = |part: &str| dir.join(format!("{part}.db"));
    let created_at = now_rfc3339();
    match kind {
        Kind::Consistent => {
            let (snapshots, paused) = pinned(files, pause).await?;
            let targets: Vec<_> = snapshots.into_iter().map(|(part, s)| (dest(&part), part, s)).collect();
            in_background(move || {
                for (target, part, snapshot) in targets {
                    snapshot.copy_to(&target).map_err(|e| failed(&part, e))?;
                }
                Ok(())
            })
            .await?;
            Ok(Copied { pause: paused, created_at })
        }
        Kind::Naive => {
            // Each database as it is when its turn comes, in the order of its file name, as
            // `cp *.db` would take them.
            let mut files = files.to_vec();
            files.sort_by(|a, b| a.1.cmp(&b.1));
            for (part, path) in &files {
                let (path, target, name) = (path.clone(), dest(part), part.clone());
                blocking(move || Snapshot::open(&path)?.copy_to(&target))
                    .await
                    .map_err(|e| failed(&name, e))?;
            }
            Ok(Copied { pause: Duration::ZERO, created_at })
        }
    }
}

/// Every file of `files` pinned at one cut: connections are opened first (the slow part),
/// then `pause` is held only while each pins its snapshot. Answers how long it was held.
async fn pinned(
    files: &[(String, PathBuf)],
    pause: &Pause,
) -> Result<(Vec<(String, Snapshot)>, Duration), BackupError> {
    let owned = files.to_vec();
    let mut snapshots: Vec<(String, Snapshot)> = blocking(move || {
        owned.into_iter().map(|(part, path)| Snapshot::open(&path).map(|s| (part, s))).collect()
    })
    .await
    .map_err(|e| failed("shop", e))?;
    let held = pause.hold().await;
    let pinned: Result<(), BackupError> =
        snapshots.iter_mut().try_for_each(|(part, s)| s.pin().map_err(|e| failed(part, e)));
    let paused = held.held_for();
    drop(held);
    pinned?;
    Ok((snapshots, paused))
}

/// The facts of every part and of the bus at one cut, read from the pinned snapshots
/// without copying them: what `capshop reconcile` checks on a running embedded shop.
pub(super) async fn facts(files: &[(String, PathBuf)], pause: &Pause) -> Result<ShopFacts, BackupError> {
    let (snapshots, _) = pinned(files, pause).await?;
    blocking(move || {
        let mut shop = ShopFacts { cut: true, ..ShopFacts::default() };
        for (part, snapshot) in snapshots {
            let unreadable =
                |e: kit::store::StoreError| BackupError::io(format!("cannot read the {part} snapshot"), e);
            if part == "bus" {
                shop.bus = snapshot.read(crate::facts::read_bus).map_err(unreadable)?;
                continue;
            }
            let (state, site) = crate::facts::reader(&part)
                .ok_or_else(|| BackupError::io("cannot read the cut", format!("no part {part}")))?;
            let facts = snapshot.read(|tx| crate::service::facts::read_in(tx, part.clone(), state, site));
            shop.parts.push(facts.map_err(unreadable)?);
        }
        Ok(shop)
    })
    .await
}

/// Runs `work` on a thread of its own at the lowest CPU priority: copying every page of
/// every database must not take the cores from the shop it copies.
async fn in_background<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BackupError> + Send + 'static,
) -> Result<T, BackupError> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("backup copy".into())
        .spawn(move || {
            // SAFETY: plain system calls on the calling thread; a failure only leaves its
            // priority as it was.
            unsafe {
                let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
                libc::setpriority(libc::PRIO_PROCESS, thread, 19);
            }
            let _ = done.send(work());
        })
        .map_err(|e| BackupError::io("cannot start the copy", e))?;
    result.await.map_err(|_| BackupError::io("the copy", "its thread stopped"))?
}

async fn blocking<T: Send + 'static, E: Send + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    tokio::task::spawn_blocking(work).await.expect("a backup copy does not panic")
}

pub(super) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".into())
}
