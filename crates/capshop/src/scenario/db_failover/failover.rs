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

/// One outbox on the pair: the database it is in, its stream, and the highest seq of
/// that stream on the bus (read after the promotion, when nothing relays any more).
pub struct OutboxHead {
    pub database: String,
    pub stream: String,
    pub bus_head: u64,
}

/// Watches the primary until it is silent, then promotes the standby, raises each of
/// `outboxes` (read only then) to at least its bus head, and lifts the fence.
pub async fn fail_over(
    pair: &Pair,
    outboxes: impl Future<Output = anyhow::Result<Vec<OutboxHead>>>,
) -> anyhow::Result<Failover> {
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

    let mut heads_raised = 0;
    for outbox in outboxes.await? {
        // The failover step's own sessions may write through the fence.
        let url = format!("{}?options=-c%20default_transaction_read_only%3Doff", pair.standby.url(&outbox.database));
        let what = format!("cannot raise the outbox head of {} in {}", outbox.stream, outbox.database);
        heads_raised += blocking(move || raise_head(&url, &outbox)).await.context(what)?;
    }
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

/// Raises the outbox head in the database at `url` when it is behind the bus's (or
/// missing: the stream's first events were all in the lost tail); answers 1 if it did.
fn raise_head(url: &str, outbox: &OutboxHead) -> Result<usize, postgres::Error> {
    if outbox.bus_head == 0 {
        return Ok(0);
    }
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    let head = i64::try_from(outbox.bus_head).unwrap_or(i64::MAX);
    let raised = client.execute(
        "INSERT INTO kit_outbox_head (stream, last_seq) VALUES ($1, $2) \
         ON CONFLICT (stream) DO UPDATE SET last_seq = excluded.last_seq \
         WHERE kit_outbox_head.last_seq < excluded.last_seq",
        &[&outbox.stream, &head],
    )?;
    Ok(raised as usize)
}
