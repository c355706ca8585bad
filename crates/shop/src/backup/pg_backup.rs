//! A backup of the distributed mode into a directory: each database dumped at its
//! exported snapshot (`<part>.dump`, pg_dump's custom format), the events in flight at the
//! cut exported from the bus (`events/<stream>.jsonl`), the certificate, the manifest.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use super::certificate::{self, Held};
use super::distributed::{Cluster, Pinned, read_one};
use super::manifest::{self, FileEntry, Kind, Manifest};
use super::{BackupError, events, restore};
use crate::contracts::facts::ShopFacts;

/// The file a part's database is dumped into.
pub fn dump_of(part: &str) -> String {
    format!("{part}.dump")
}

async fn dump(p: &Pinned, dir: &Path) -> Result<(), BackupError> {
    p.exported
        .dump(&p.url, &dir.join(dump_of(&p.part)))
        .await
        .map_err(|e| BackupError::io(format!("cannot dump the {} database", p.part), e))
}

/// Takes a backup of `kind` of `cluster` into `dir` (the partial directory, new).
pub(super) async fn create(
    cluster: &Cluster,
    dir: &Path,
    kind: Kind,
    started: tokio::time::Instant,
) -> Result<Manifest, BackupError> {
    let created_at = super::cut::now_rfc3339();
    let (facts, reads, pause, steps) = match kind {
        Kind::Consistent => {
            let cut = cluster.cut().await?;
            let mut dumped = Ok(());
            for p in &cut.pinned {
                dumped = dumped.and(dump(p, dir).await);
            }
            for p in cut.pinned {
                p.exported.close().await;
            }
            dumped?;
            (cut.facts, cut.reads, cut.pause, Some(cut.steps))
        }
        Kind::Naive => {
            // Each database as it is when its turn comes, one after another, in the order
            // of its name, as a script dumping every database would take them.
            let before = cluster.heads().await?;
            let mut names: Vec<String> = cluster.parts().map(str::to_owned).collect();
            names.sort();
            let mut reads = Vec::new();
            for part in names {
                let p = cluster.pin_alone(&part).await?;
                let read = read_one(&p, &before).await;
                let dumped = dump(&p, dir).await;
                p.exported.close().await;
                reads.push(read?);
                dumped?;
            }
            (cluster.facts_of(&reads).await?, reads, Duration::ZERO, None)
        }
    };
    let exported = export_in_flight(cluster, &facts, dir).await?;
    let waiting = reads.iter().flat_map(|r| r.waiting.clone()).collect();
    let held =
        Held::exported(exported.iter().map(|(s, (seqs, _))| (s.clone(), seqs.clone())).collect(), waiting);
    let certificate = certificate::certify(&facts, &held);
    if kind == Kind::Consistent && !certificate.passed {
        return Err(BackupError::Certificate(certificate.failures()));
    }
    let mut files = Vec::new();
    for read in &reads {
        files.push(entry(dir, &read.facts.part, &dump_of(&read.facts.part), read.schema.clone())?);
    }
    for (stream, (_, file)) in &exported {
        files.push(entry(dir, &format!("events:{stream}"), file, BTreeMap::new())?);
    }
    let manifest = Manifest {
        format: manifest::FORMAT,
        kind,
        capshop_version: env!("CARGO_PKG_VERSION").into(),
        created_at,
        deployment: DEPLOYMENT.into(),
        pause_ms: pause.as_secs_f64() * 1e3,
        total_ms: started.elapsed().as_secs_f64() * 1e3,
        pause_steps: steps,
        files,
        positions: restore::positions(&facts, &held),
        certificate,
        dropped_uncommitted: 0,
    };
    manifest.write(dir)?;
    Ok(manifest)
}

/// The manifest's `deployment` of a distributed backup.
pub const DEPLOYMENT: &str = "distributed";

fn entry(
    dir: &Path,
    part: &str,
    file: &str,
    schema: BTreeMap<String, u32>,
) -> Result<FileEntry, BackupError> {
    let (bytes, sha256) =
        manifest::checksum(&dir.join(file)).map_err(|e| BackupError::io(format!("cannot read {file}"), e))?;
    Ok(FileEntry { part: part.to_owned(), file: file.to_owned(), bytes, sha256, schema })
}

/// Per stream, the lowest inbox floor of its consumers at the cut (0 for one that never
/// applied anything): every event above it may be unapplied by someone.
pub(super) fn lowest_floors(facts: &ShopFacts) -> BTreeMap<String, u64> {
    let mut floors: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for part in &facts.parts {
        for position in &part.consumers {
            floors.insert((position.consumer.as_str(), position.stream.as_str()), position.floor);
        }
    }
    let mut lowest: BTreeMap<String, u64> = BTreeMap::new();
    for (consumer, streams) in crate::reconcile::CONSUMERS {
        for stream in streams {
            let floor = floors.get(&(consumer, *stream)).copied().unwrap_or(0);
            let at = lowest.entry((*stream).to_owned()).or_insert(floor);
            *at = (*at).min(floor);
        }
    }
    lowest
}

/// Writes every stream's events in (lowest floor, committed] (at least the last committed
/// one) into `dir`; answers, per
/// stream, the seqs written and the file.
async fn export_in_flight(
    cluster: &Cluster,
    facts: &ShopFacts,
    dir: &Path,
) -> Result<BTreeMap<String, (BTreeSet<u64>, String)>, BackupError> {
    let floors = lowest_floors(facts);
    let mut exported = BTreeMap::new();
    for part in &facts.parts {
        for outbox in &part.outbox {
            let Some(floor) = floors.get(&outbox.stream).copied() else { continue };
            // The last committed event too, applied or not: put back and published again
            // (its consumers' inbox floors drop it), the fresh stream's head continues
            // where the old one stood.
            let after = floor.min(outbox.last_seq.saturating_sub(1));
            let taken = events::in_flight(cluster.bus(), &outbox.stream, after, outbox.last_seq).await?;
            events::write(dir, &outbox.stream, &taken)?;
            let seqs = taken.iter().map(|m| m.seq).collect();
            exported.insert(outbox.stream.clone(), (seqs, events::file_of(&outbox.stream)));
        }
    }
    Ok(exported)
}
