//! capshop's own small failover step, what Patroni does with a `post_promote` callback:
//! notice that the primary is silent, promote the standby, make it safe to write, and
//! only then let the services in.
//!
//! "Safe to write" is about the outbox. With asynchronous replication the promoted
//! standby may lack the last events the old primary committed *and relayed*: the bus has
//! them, under seqs the new primary would hand out again to new events. A consumer that
//! has applied up to a seq takes a new event under an old seq for one it has seen, so
//! the new event would be skipped. The step therefore raises every outbox head to the
//! bus's head for its stream while the standby is still fenced (its sessions read-only,
//! refused by `target_session_attrs=read-write`), then lifts the fence.

use std::time::Duration;

use anyhow::Context as _;
use kit::bus::Bus;
use tokio::time::Instant;

use super::pair::{Pair, blocking};

/// How often the primary is asked whether it still answers, and how many silent answers
/// in a row count as dead: what a failover tool's loop and its TTL are.
const PROBE_EVERY: Duration = Duration::from_millis(100);
const SILENT_PROBES: u32 = 3;

/// When each step of a failover ended, counted from the moment the step started watching.
#[derive(Debug, Clone, Copy)]
pub struct Failover {
    pub detected: Duration,
    pub promoted: Duration,
    /// The outbox heads raised and the fence lifted: the services can write again.
    pub opened: Duration,
    /// Outbox heads that were behind the bus and were raised.
    pub heads_raised: usize,
}

/// Watches the primary until it is silent, then promotes the standby, raises the outbox
/// head of each of `parts` to `bus`'s head for its stream (`capshop after-promote`), and lifts the
/// fence.
pub async fn fail_over(pair: &Pair, parts: &[String], bus: &dyn Bus) -> anyhow::Result<Failover> {
    let started = Instant::now();
    let primary = pair.primary.url("postgres");
    let mut silent = 0;
    while silent < SILENT_PROBES {
        let url = primary.clone();
        let answered = tokio::time::timeout(
            PROBE_EVERY,
            blocking(move || postgres::Client::connect(&url, postgres::NoTls).is_ok()),
        )
        .await
        .unwrap_or(false);
        silent = if answered { 0 } else { silent + 1 };
        tokio::time::sleep(PROBE_EVERY).await;
    }
    let detected = started.elapsed();

    let standby = pair.standby.url("postgres");
    blocking(move || {
        let mut client = postgres::Client::connect(&standby, postgres::NoTls)?;
        client.query_one("SELECT pg_promote(true, 60)", &[]).map(drop)
    })
    .await
    .context("the standby could not be promoted")?;
    let promoted = started.elapsed();

    // The bus's heads are read now: nothing relays (the old primary is gone, the new one
    // fenced), and a batch a relay read before the crash has landed meanwhile. The step's
    // own sessions may write through the fence.
    let through_fence = format!(
        "postgres://postgres@127.0.0.1:{}?options=-c%20default_transaction_read_only%3Doff",
        pair.standby.port
    );
    let heads = crate::after_promote::raise_outbox_heads(&through_fence, parts, bus).await?;
    let heads_raised = heads.iter().filter(|h| h.raised()).count();
    std::fs::remove_file(pair.fence()).context("cannot lift the standby's fence")?;
    let standby = pair.standby.url("postgres");
    blocking(move || {
        let mut client = postgres::Client::connect(&standby, postgres::NoTls)?;
        client.batch_execute("SELECT pg_reload_conf()")
    })
    .await
    .context("the promoted standby did not reload its settings")?;
    Ok(Failover { detected, promoted, opened: started.elapsed(), heads_raised })
}
