//! Agreeing a site's waiting reservations with the other site, so each becomes final
//! (`reserved`) or is released: in cp the other site must **acknowledge** a `pending`
//! reservation ([`acknowledge`]); in ap the arbiter site **arbitrates** `provisional`
//! reservations by the compensation rule once it sees both sites' rows ([`arbitrate`]).
//!
//! One task per site runs rounds, woken after a reservation commits and every [`TICK`];
//! the calls to the other site pass the link between the sites and a breaker ([`Peer`]),
//! and no call sits inside a transaction: read, call, then write what the answer decided.
//! The arbiter's route keeps its published path, `POST /sites/settle`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kit::store::{StoreError, Tx};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::merge::{self, SiteStock};
use super::model::{Answer, ReservationLine, ReservationStatus};
use super::sites::{Mode, Site};
use super::store;
use crate::service::{Context, Peer, PeerError, ServiceName};

/// How often a site retries what it could not finish (e.g. during a partition).
pub const TICK: Duration = Duration::from_millis(200);

/// What one site shows the other: reservation lines and the counters of their products.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Ledger {
    pub counters: Vec<SiteStock>,
    pub lines: Vec<ReservationLine>,
}

/// The other site's answer about one order it was shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Verdict {
    pub order_id: String,
    /// Acknowledged (cp) or kept by the rule (ap).
    pub kept: bool,
    pub reason: Option<String>,
    /// cp: not yet — younger pending reservations of the acknowledging site stand in the
    /// way and will give way first; ask again.
    #[serde(default)]
    pub wait: bool,
}

/// The products of `lines`.
fn products(lines: &[ReservationLine]) -> BTreeSet<String> {
    lines.iter().map(|l| l.product_id.clone()).collect()
}

/// Groups lines by order, in order id order.
fn by_order(lines: Vec<ReservationLine>) -> BTreeMap<String, Vec<ReservationLine>> {
    let mut orders: BTreeMap<String, Vec<ReservationLine>> = BTreeMap::new();
    for line in lines {
        orders.entry(line.order_id.clone()).or_default().push(line);
    }
    orders
}

/// `site`'s own lines and counters of `products`, as this site knows them.
pub fn ledger(tx: &mut Tx<'_>, site: Site, products: &BTreeSet<String>) -> Result<Ledger, StoreError> {
    let mut ledger = Ledger::default();
    for product_id in products {
        ledger.counters.extend(store::counters(tx, product_id)?.into_iter().filter(|c| c.site == site));
        ledger.lines.extend(store::product_lines(tx, product_id)?.into_iter().filter(|l| l.site == site));
    }
    Ok(ledger)
}

/// Takes in what the other site showed (each row only if newer than the copy here).
fn absorb(tx: &mut Tx<'_>, ledger: &Ledger) -> Result<(), StoreError> {
    for counters in &ledger.counters {
        store::apply_counters(tx, counters)?;
    }
    for line in &ledger.lines {
        store::apply_line(tx, line)?;
    }
    Ok(())
}

/// cp, at the acknowledging site: reserves each shown pending order in this site's view
/// when every line is available in it, else refuses it with what is short. An order this
/// site already knows keeps the answer it got (a retried call acknowledges once).
///
/// Two sites that each have pending reservations the other must acknowledge would refuse
/// each other's and sell nothing. So reservations give way by age (placement time, then
/// order id), as in wait-die: a shown reservation that would fit if this site's own
/// younger pending reservations gave way is told to wait; a younger one is refused. The
/// youngest pending reservation never waits, so every round concludes at least one, and
/// reservations conclude oldest first.
pub fn acknowledge(tx: &mut Tx<'_>, here: Site, shown: &Ledger) -> Result<Vec<Verdict>, StoreError> {
    for counters in &shown.counters {
        store::apply_counters(tx, counters)?;
    }
    let mut verdicts = Vec::new();
    for (order_id, lines) in by_order(shown.lines.clone()) {
        let known = store::order_lines(tx, &order_id)?;
        if !known.is_empty() {
            let kept = known.iter().all(|l| l.status.counts_against_stock());
            let reason = (!kept).then(|| format!("order {order_id} was already released at {here}"));
            verdicts.push(Verdict { order_id, kept, reason, wait: false });
            continue;
        }
        let (mut short, mut wait) = (Vec::new(), true);
        for line in &lines {
            let available = store::stock(tx, &line.product_id)?.map_or(0, |s| s.available);
            if available < u64::from(line.quantity) {
                short.push(format!(
                    "not enough stock of product {} in {here}'s view: {} requested, {available} available",
                    line.product_id, line.quantity
                ));
                wait &= available + younger_pending(tx, here, line)? >= u64::from(line.quantity);
            }
        }
        if short.is_empty() {
            for line in &lines {
                store::apply_line(tx, line)?;
            }
            verdicts.push(Verdict { order_id, kept: true, reason: None, wait: false });
        } else {
            verdicts.push(Verdict { order_id, kept: false, reason: Some(short.join("; ")), wait });
        }
    }
    Ok(verdicts)
}

/// Units of `line`'s product that `here` has pending for orders placed after `line`'s.
fn younger_pending(tx: &mut Tx<'_>, here: Site, line: &ReservationLine) -> Result<u64, StoreError> {
    let age = |l: &ReservationLine| (l.placed_at_ms, l.order_id.clone());
    let lines = store::product_lines(tx, &line.product_id)?;
    let younger = lines
        .iter()
        .filter(|l| l.site == here && l.status == ReservationStatus::Pending && age(l) > age(line));
    Ok(younger.map(|l| u64::from(l.quantity)).sum())
}

/// The lines of a product in this site's view and the orders among them that the rule
/// ([`merge::over`]) puts beyond its stock: the one place where a site decides what an
/// oversell gives back, whether by a verdict on a waiting reservation or by a recount of
/// final ones.
fn oversold(
    tx: &mut Tx<'_>,
    product_id: &str,
) -> Result<(Vec<ReservationLine>, BTreeSet<String>), StoreError> {
    let on_hand = merge::on_hand(&store::counters(tx, product_id)?);
    let lines = store::product_lines(tx, product_id)?;
    #[cfg(feature = "canary")]
    if kit::canary::armed("compensation-off") {
        return Ok((lines, BTreeSet::new()));
    }
    let over = merge::over(on_hand, &lines);
    Ok((lines, over))
}

/// The rule on each order of `lines`, over this site's view of their products: `None`
/// when the order keeps its units, else the product it has to give back.
fn judge(tx: &mut Tx<'_>, lines: &[ReservationLine]) -> Result<BTreeMap<String, Option<String>>, StoreError> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for product_id in products(lines) {
        for order_id in oversold(tx, &product_id)?.1 {
            out.entry(order_id).or_insert_with(|| product_id.clone());
        }
    }
    Ok(lines.iter().map(|l| (l.order_id.clone(), out.get(&l.order_id).cloned())).collect())
}

fn verdict(order_id: String, over: Option<String>) -> Verdict {
    Verdict { order_id, kept: over.is_none(), reason: over.map(|p| merge::apology(&p)), wait: false }
}

/// ap, at the arbiter: takes in what was shown, applies the compensation rule to the
/// shown orders that still wait, and records each verdict as the owner will write it (the
/// next version, reserved or released), so every verdict is decided in this one
/// database, one after another, and a retried call gets the same verdict.
pub fn arbitrate(tx: &mut Tx<'_>, shown: &Ledger) -> Result<Vec<Verdict>, StoreError> {
    absorb(tx, shown)?;
    let mut verdicts = Vec::new();
    for (order_id, over) in judge(tx, &shown.lines)? {
        let lines = store::order_lines(tx, &order_id)?;
        if !lines.iter().any(|l| l.status == ReservationStatus::Provisional) {
            let kept = lines.iter().all(|l| l.status.counts_against_stock());
            let reason = (!kept).then(|| format!("order {order_id} was already released"));
            verdicts.push(Verdict { order_id, kept, reason, wait: false });
            continue;
        }
        let status = if over.is_none() { ReservationStatus::Reserved } else { ReservationStatus::Released };
        let version = lines.iter().map(|l| l.version).max().unwrap_or(0) + 1;
        for line in lines {
            store::apply_line(tx, &ReservationLine { status, version, ..line })?;
        }
        verdicts.push(verdict(order_id, over));
    }
    Ok(verdicts)
}

/// Writes the verdicts on this site's own orders.
fn conclude_all(
    ctx: &Context,
    tx: &mut Tx<'_>,
    verdicts: &[Verdict],
    refused: Answer,
) -> Result<usize, StoreError> {
    let mut changed = 0;
    for v in verdicts.iter().filter(|v| !v.wait) {
        let verdict = if v.kept { Ok(()) } else { Err(v.reason.clone().unwrap_or_else(|| "refused".into())) };
        changed += usize::from(store::conclude(tx, &ctx.outbox, &v.order_id, verdict, refused)?);
    }
    Ok(changed)
}

/// The reason a cp site gives when the other site gave no acknowledgement.
pub fn unreachable(here: Site, error: &PeerError) -> String {
    match error {
        PeerError::Unavailable { .. } => format!(
            "inventory site {here} cannot reach {} and, in cp mode, reserves nothing the other site has \
             not acknowledged; try again when the sites see each other ({error})",
            here.peer()
        ),
        PeerError::Refused { .. } => {
            format!("inventory site {} refused to acknowledge the reservation ({error})", here.peer())
        }
    }
}

/// ap reservations stay provisional while the other site cannot be asked; the next round
/// retries.
fn waiting_for(here: Site, error: &PeerError) -> Result<usize, StoreError> {
    tracing::debug!(site = %here, error = %error, "provisional reservations wait for the other site");
    Ok(0)
}

/// One round: concludes this site's waiting reservations, as far as the other site lets it.
async fn round(ctx: &Arc<Context>, here: Site, mode: Mode, peer: &Peer) -> Result<usize, StoreError> {
    let waiting = match mode {
        Mode::Cp => ReservationStatus::Pending,
        Mode::Ap => ReservationStatus::Provisional,
    };
    let shown = ctx
        .store
        .transact(move |tx| {
            let lines = store::lines_in(tx, here, waiting)?;
            let mut shown = ledger(tx, here, &products(&lines))?;
            shown.lines = lines;
            Ok(shown)
        })
        .await?;
    if shown.lines.is_empty() {
        return Ok(0);
    }
    let ctx2 = ctx.clone();
    match mode {
        Mode::Cp => {
            #[cfg(feature = "canary")]
            if kit::canary::armed("cp-check-off") {
                let kept = |order_id| Verdict { order_id, kept: true, reason: None, wait: false };
                let verdicts: Vec<Verdict> = by_order(shown.lines).into_keys().map(kept).collect();
                return ctx
                    .store
                    .transact(move |tx| conclude_all(&ctx2, tx, &verdicts, Answer::Rejected))
                    .await;
            }
            let answer: Result<Vec<Verdict>, PeerError> = peer.post("/sites/acks", &shown).await;
            let verdicts = match answer {
                Ok(verdicts) => verdicts,
                Err(e) => by_order(shown.lines)
                    .into_keys()
                    .map(|order_id| Verdict {
                        order_id,
                        kept: false,
                        reason: Some(unreachable(here, &e)),
                        wait: false,
                    })
                    .collect(),
            };
            ctx.store.transact(move |tx| conclude_all(&ctx2, tx, &verdicts, Answer::Rejected)).await
        }
        Mode::Ap if here == Site::arbiter() => {
            let wanted: Vec<String> = products(&shown.lines).into_iter().collect();
            let theirs = match peer.post::<_, Ledger>("/sites/ledger", &wanted).await {
                Ok(theirs) => theirs,
                Err(e) => return waiting_for(here, &e),
            };
            ctx.store
                .transact(move |tx| {
                    absorb(tx, &theirs)?;
                    let verdicts: Vec<Verdict> = judge(tx, &shown.lines)?
                        .into_iter()
                        .map(|(order, over)| verdict(order, over))
                        .collect();
                    conclude_all(&ctx2, tx, &verdicts, Answer::Compensated)
                })
                .await
        }
        Mode::Ap => {
            let verdicts = match peer.post::<_, Vec<Verdict>>("/sites/settle", &shown).await {
                Ok(verdicts) => verdicts,
                Err(e) => return waiting_for(here, &e),
            };
            ctx.store.transact(move |tx| conclude_all(&ctx2, tx, &verdicts, Answer::Compensated)).await
        }
    }
}

/// ap: gives back this site's final (`reserved`) orders that the rule puts beyond the
/// stock (final lines are taken first, so only a lowered stock can do that), once the site
/// has seen the other site's rows of those products, so both sites judge the same rows.
/// `None` when the other site could not be asked.
async fn recount(ctx: &Arc<Context>, here: Site, peer: &Peer) -> Result<Option<usize>, StoreError> {
    let suspect = ctx.store.transact(store::reserved_beyond_stock).await?;
    if suspect.is_empty() {
        return Ok(Some(0));
    }
    let Ok(theirs) = peer.post::<_, Ledger>("/sites/ledger", &suspect).await else { return Ok(None) };
    let ctx2 = ctx.clone();
    ctx.store
        .transact(move |tx| {
            absorb(tx, &theirs)?;
            let mut given_back = 0;
            for product_id in &suspect {
                let (lines, over) = oversold(tx, product_id)?;
                let own = lines.iter().filter(|l| l.site == here && l.status == ReservationStatus::Reserved);
                for line in own.filter(|l| over.contains(&l.order_id)) {
                    let reason = merge::apology(product_id);
                    given_back += usize::from(store::compensate(tx, &ctx2.outbox, &line.order_id, reason)?);
                }
            }
            Ok(given_back)
        })
        .await
        .map(Some)
}

/// Runs the agreement rounds of site `here` until `shutdown`.
pub async fn run(ctx: Arc<Context>, here: Site, mode: Mode, wake: Arc<Notify>, shutdown: CancellationToken) {
    let peer = ctx.peer(ServiceName::Inventory).clone();
    // A recount scans every final line, so it runs after a change, not on every tick,
    // and again until the other site could be asked.
    let mut recount_due = mode == Mode::Ap;
    loop {
        match round(&ctx, here, mode, &peer).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(site = %here, mode = mode.as_str(), orders = n, "waiting reservations concluded")
            }
            Err(e) => tracing::warn!(site = %here, error = %e, "agreement round failed"),
        }
        if recount_due {
            match recount(&ctx, here, &peer).await {
                Ok(Some(0)) => recount_due = false,
                Ok(Some(n)) => {
                    recount_due = false;
                    tracing::warn!(site = %here, orders = n, "final reservations compensated: stock was lowered");
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(site = %here, error = %e, "recount failed"),
            }
        }
        tokio::select! {
            _ = wake.notified() => recount_due = mode == Mode::Ap,
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod unit {
    use kit::envelope::StreamName;
    use kit::outbox::Outbox;
    use kit::store::Store;

    use super::*;
    use crate::inventory::model::{OnHand, ProductId};

    async fn site() -> Store {
        let store = Store::open(
            "sqlite::memory:",
            &[&kit::outbox::MIGRATIONS, crate::service::ServiceName::Inventory.migrations()],
        )
        .await
        .unwrap();
        store
            .transact(|tx| store::seed(tx, &ProductId::parse("p-001").unwrap(), OnHand::new(5).unwrap()))
            .await
            .unwrap();
        store
    }

    async fn lines(store: &Store) -> Vec<ReservationLine> {
        store.transact(|tx| store::order_lines(tx, "o-1")).await.unwrap()
    }

    #[tokio::test]
    async fn a_cancel_racing_the_arbiters_verdict_wins_at_both_sites() {
        let (arbiter, owner) = (site().await, site().await);
        let waiting = ReservationLine {
            order_id: "o-1".into(),
            product_id: "p-001".into(),
            quantity: 2,
            status: ReservationStatus::Provisional,
            site: Site::Dc2,
            placed_at_ms: 1,
            version: 1,
        };
        let shown = Ledger { counters: Vec::new(), lines: vec![waiting.clone()] };
        owner.transact(move |tx| store::apply_line(tx, &waiting)).await.unwrap();
        let verdicts = arbiter.transact(move |tx| arbitrate(tx, &shown)).await.unwrap();
        assert!(verdicts[0].kept);
        assert_eq!(
            lines(&arbiter).await[0].status,
            ReservationStatus::Reserved,
            "recorded ahead of the owner"
        );

        // The order is cancelled at its site before the verdict arrives there.
        let outbox = Outbox::new(StreamName::parse("inventory-dc2").unwrap());
        let cancel = crate::service::testing::envelope(
            "order",
            &kit::envelope::NewEvent::new("OrderCancelled", "o-1", 3, serde_json::json!({})),
            1,
        );
        owner
            .transact(move |tx| store::release(tx, &outbox, "o-1", Some("changed my mind".into()), &cancel))
            .await
            .unwrap();
        let released = lines(&owner).await;
        assert_eq!((released[0].status, released[0].version), (ReservationStatus::Released, 3));
        let replicated = released[0].clone();
        assert!(arbiter.transact(move |tx| store::apply_line(tx, &replicated)).await.unwrap());
        assert_eq!(lines(&arbiter).await, released, "the cancel wins at the arbiter too");
    }
}
