//! The SQL of one inventory site. Every write appends its events to the outbox in the same
//! transaction. A site writes its own rows (its counters, the lines of orders routed to it)
//! and replaces the other site's copies only with newer versions ([`apply_counters`],
//! [`apply_line`]); a product's view is summed from both ([`stock`]).

use kit::envelope::Envelope;
use kit::outbox::Outbox;
use kit::store::{Row, StoreError, Tx};

use super::events::{self, Reservation, StockLine};
use super::merge::{self, SiteStock};
use super::model::{
    self, Answer, InventoryError, OnHand, OrderId, ProductId, ReservationLine, ReservationStatus, Stock,
};
use super::sites::{Mode, Site};

fn corrupt(what: &str, text: &str) -> StoreError {
    StoreError::Database(format!("unknown {what} {text:?}"))
}

fn counters_from_row(mut row: Row) -> Result<SiteStock, StoreError> {
    let site: String = row.take(0)?;
    Ok(SiteStock {
        site: Site::parse(&site).ok_or_else(|| corrupt("site", &site))?,
        product_id: row.take(1)?,
        added: row.get(2)?,
        removed: row.get(3)?,
        version: row.get(4)?,
    })
}

const LINE: &str = "order_id, product_id, quantity, status, site, placed_at_ms, version";

fn line_from_row(mut row: Row) -> Result<ReservationLine, StoreError> {
    let status: String = row.take(3)?;
    let site: String = row.take(4)?;
    Ok(ReservationLine {
        order_id: row.take(0)?,
        product_id: row.take(1)?,
        quantity: row.get(2)?,
        status: ReservationStatus::parse(&status).ok_or_else(|| corrupt("reservation status", &status))?,
        site: Site::parse(&site).ok_or_else(|| corrupt("site", &site))?,
        placed_at_ms: row.get(5)?,
        version: row.get(6)?,
    })
}

fn lines(
    tx: &mut Tx<'_>,
    filter: &str,
    params: &[kit::store::Param<'_>],
) -> Result<Vec<ReservationLine>, StoreError> {
    let sql = format!("SELECT {LINE} FROM reservation WHERE {filter} ORDER BY order_id, product_id");
    tx.query(&sql, params)?.into_iter().map(line_from_row).collect()
}

/// Both sites' counters of a product, as this site knows them.
pub fn counters(tx: &mut Tx<'_>, product_id: &str) -> Result<Vec<SiteStock>, StoreError> {
    let rows = tx.query(
        "SELECT site, product_id, added, removed, version FROM site_stock WHERE product_id = $1 ORDER BY site",
        &[product_id.into()],
    )?;
    rows.into_iter().map(counters_from_row).collect()
}

/// Every site's counters of every product, as this site knows them (by product, then site).
pub fn every_counter(tx: &mut Tx<'_>) -> Result<Vec<SiteStock>, StoreError> {
    let rows = tx.query(
        "SELECT site, product_id, added, removed, version FROM site_stock ORDER BY product_id, site",
        &[],
    )?;
    rows.into_iter().map(counters_from_row).collect()
}

/// Every reservation line this site holds, its own and its copies of the other's.
pub fn every_line(tx: &mut Tx<'_>) -> Result<Vec<ReservationLine>, StoreError> {
    lines(tx, "TRUE", &[])
}

/// Every reservation line of a product, at both sites.
pub fn product_lines(tx: &mut Tx<'_>, product_id: &str) -> Result<Vec<ReservationLine>, StoreError> {
    lines(tx, "product_id = $1", &[product_id.into()])
}

/// The lines of one order.
pub fn order_lines(tx: &mut Tx<'_>, order_id: &str) -> Result<Vec<ReservationLine>, StoreError> {
    lines(tx, "order_id = $1", &[order_id.into()])
}

/// The lines of `site` with `status` (what an agreement round works on).
pub fn lines_in(
    tx: &mut Tx<'_>,
    site: Site,
    status: ReservationStatus,
) -> Result<Vec<ReservationLine>, StoreError> {
    lines(tx, "site = $1 AND status = $2", &[site.as_str().into(), status.as_str().into()])
}

/// The stock of a product in this site's view, if either site ever stocked it.
pub fn stock(tx: &mut Tx<'_>, product_id: &str) -> Result<Option<Stock>, StoreError> {
    let counters = counters(tx, product_id)?;
    if counters.is_empty() {
        return Ok(None);
    }
    let lines = product_lines(tx, product_id)?;
    let version =
        counters.iter().map(|c| c.version).sum::<u64>() + lines.iter().map(|l| l.version).sum::<u64>();
    Ok(Some(Stock::new(product_id.to_owned(), merge::on_hand(&counters), merge::reserved(&lines), version)))
}

pub fn get(tx: &mut Tx<'_>, id: &ProductId) -> Result<Stock, InventoryError> {
    stock(tx, id.as_str())?.ok_or_else(|| InventoryError::NotFound(id.as_str().to_owned()))
}

fn products(tx: &mut Tx<'_>) -> Result<Vec<String>, StoreError> {
    let rows = tx.query("SELECT DISTINCT product_id FROM site_stock ORDER BY product_id", &[])?;
    rows.into_iter().map(|row| row.get(0)).collect()
}

pub fn list(tx: &mut Tx<'_>) -> Result<Vec<Stock>, InventoryError> {
    let mut all = Vec::new();
    for product_id in products(tx)? {
        all.extend(stock(tx, &product_id)?);
    }
    Ok(all)
}

pub fn count(tx: &mut Tx<'_>) -> Result<u64, StoreError> {
    tx.query_one("SELECT count(DISTINCT product_id) FROM site_stock", &[])?.get(0)
}

/// Writes the first stock of a product as dc1's counters at version 0, identically at
/// both sites, so each can sell from its first second and neither replicates it.
pub fn seed(tx: &mut Tx<'_>, id: &ProductId, units: OnHand) -> Result<(), StoreError> {
    let seeded = SiteStock {
        site: Site::Dc1,
        product_id: id.as_str().to_owned(),
        added: units.get(),
        removed: 0,
        version: 0,
    };
    apply_counters(tx, &seeded)?;
    Ok(())
}

/// Replaces a site's counters of a product with `counters` if they are newer than the
/// copy here; returns whether they were.
pub fn apply_counters(tx: &mut Tx<'_>, counters: &SiteStock) -> Result<bool, StoreError> {
    let changed = tx.execute(
        "INSERT INTO site_stock (site, product_id, added, removed, version) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (site, product_id) DO UPDATE SET added = excluded.added, removed = excluded.removed, \
         version = excluded.version WHERE excluded.version > site_stock.version",
        &[
            counters.site.as_str().into(),
            counters.product_id.as_str().into(),
            counters.added.into(),
            counters.removed.into(),
            counters.version.into(),
        ],
    )?;
    Ok(changed > 0)
}

/// Replaces a reservation line with `line` if it is newer than the copy here; returns
/// whether it was.
pub fn apply_line(tx: &mut Tx<'_>, line: &ReservationLine) -> Result<bool, StoreError> {
    let changed = tx.execute(
        "INSERT INTO reservation (order_id, product_id, quantity, status, site, placed_at_ms, version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (order_id, product_id) DO UPDATE SET quantity = excluded.quantity, \
         status = excluded.status, site = excluded.site, placed_at_ms = excluded.placed_at_ms, \
         version = excluded.version WHERE excluded.version > reservation.version",
        &[
            line.order_id.as_str().into(),
            line.product_id.as_str().into(),
            line.quantity.into(),
            line.status.as_str().into(),
            line.site.as_str().into(),
            line.placed_at_ms.into(),
            line.version.into(),
        ],
    )?;
    Ok(changed > 0)
}

/// Sets the units on hand of a product in `site`'s view (adding it when it has no stock
/// yet) by moving `site`'s own counters by the difference; refuses to go below what the
/// view has reserved.
pub fn set_on_hand(
    tx: &mut Tx<'_>,
    outbox: &Outbox,
    site: Site,
    id: &ProductId,
    on_hand: OnHand,
) -> Result<Stock, InventoryError> {
    let wanted = on_hand.get();
    let current = stock(tx, id.as_str())?;
    if let Some(s) = current.as_ref().filter(|s| wanted < s.reserved) {
        return Err(InventoryError::BelowReserved {
            product_id: s.product_id.clone(),
            on_hand: wanted,
            reserved: s.reserved,
        });
    }
    let now = current.map_or(0, |s| s.on_hand);
    let mine = counters(tx, id.as_str())?.into_iter().find(|c| c.site == site);
    let mut mine = mine.unwrap_or(SiteStock {
        site,
        product_id: id.as_str().to_owned(),
        added: 0,
        removed: 0,
        version: 0,
    });
    if wanted >= now {
        mine.added += wanted - now;
    } else {
        mine.removed += now - wanted;
    }
    mine.version += 1;
    apply_counters(tx, &mine)?;
    outbox.append(tx, vec![events::level_event(&mine)])?;
    get(tx, id)
}

pub fn reservations(tx: &mut Tx<'_>, order_id: &OrderId) -> Result<Vec<ReservationLine>, InventoryError> {
    Ok(order_lines(tx, order_id.as_str())?)
}

/// How this site answered `order_id`, if it has, with the reason.
pub fn answer(tx: &mut Tx<'_>, order_id: &str) -> Result<Option<(Answer, Option<String>)>, StoreError> {
    let row =
        tx.query_opt("SELECT answer, reason FROM stock_answer WHERE order_id = $1", &[order_id.into()])?;
    row.map(|mut row| {
        let text: String = row.take(0)?;
        let answer = Answer::parse(&text).ok_or_else(|| corrupt("stock answer", &text))?;
        Ok((answer, row.take(1)?))
    })
    .transpose()
}

fn record_answer(
    tx: &mut Tx<'_>,
    order_id: &str,
    answer: Answer,
    reason: Option<&str>,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO stock_answer (order_id, answer, reason) VALUES ($1, $2, $3) \
         ON CONFLICT (order_id) DO UPDATE SET answer = excluded.answer, reason = excluded.reason",
        &[order_id.into(), answer.as_str().into(), reason.into()],
    )?;
    Ok(())
}

/// Answers a placed order routed to `site`: when every line is available in the site's
/// view it reserves them — `provisional` in ap (announced at once by StockReserved with
/// that status), `pending` in cp (announced once the other site acknowledged it) — and the
/// agreement task concludes the answer; otherwise it reserves nothing and publishes
/// StockRejected naming what is short. An order already answered is left alone (a replayed
/// OrderPlaced must not reserve twice); returns the answer given now, if any.
pub fn reserve(
    tx: &mut Tx<'_>,
    outbox: &Outbox,
    site: Site,
    mode: Mode,
    order_id: &str,
    lines: impl IntoIterator<Item = (String, u32)>,
    cause: &Envelope,
) -> Result<Option<Answer>, StoreError> {
    if answer(tx, order_id)?.is_some() {
        return Ok(None);
    }
    let lines = model::requested(lines);
    let current = lines.iter().map(|l| stock(tx, &l.product_id)).collect::<Result<Vec<_>, _>>()?;
    let shortages = model::shortages(&lines, &current);
    if !shortages.is_empty() {
        let reason = shortages.join("; ");
        record_answer(tx, order_id, Answer::Rejected, Some(&reason))?;
        let rejected = Reservation::unreserved(order_id, lines, Some(reason));
        outbox.append(
            tx,
            vec![events::reservation_event(events::STOCK_REJECTED, &rejected, 1).caused_by(cause)],
        )?;
        return Ok(Some(Answer::Rejected));
    }
    let status = match mode {
        Mode::Ap => ReservationStatus::Provisional,
        Mode::Cp => ReservationStatus::Pending,
    };
    let reserved: Vec<ReservationLine> = lines
        .iter()
        .map(|l| ReservationLine {
            order_id: order_id.to_owned(),
            product_id: l.product_id.clone(),
            quantity: l.quantity,
            status,
            site,
            placed_at_ms: cause.occurred_at_ms(),
            version: 1,
        })
        .collect();
    for line in &reserved {
        apply_line(tx, line)?;
    }
    record_answer(tx, order_id, Answer::Waiting, None)?;
    if mode == Mode::Ap {
        let provisional = events::reservation_of(&reserved, None);
        outbox.append(
            tx,
            vec![events::reservation_event(events::STOCK_RESERVED, &provisional, 1).caused_by(cause)],
        )?;
    }
    Ok(Some(Answer::Waiting))
}

/// What becomes of the reservation lines of an order at its site.
enum Outcome {
    /// Final: StockReserved; the order may ship.
    Reserved,
    /// Refused after it was reserved (cp): StockRejected with the reason.
    Refused(String),
    /// Given back because its product was oversold (ap): StockRejected with the apology,
    /// marked as a compensation, so the order service cancels the order.
    Compensated(String),
    /// Released because the order was cancelled: StockReleased.
    Released(Option<String>),
}

/// Moves the own lines of `order_id` on to `outcome` at the next version and publishes
/// the event that says so; returns the lines, or none when nothing is reserved for it.
fn advance(
    tx: &mut Tx<'_>,
    outbox: &Outbox,
    order_id: &str,
    outcome: Outcome,
    cause: Option<&Envelope>,
) -> Result<Vec<ReservationLine>, StoreError> {
    let counted: Vec<ReservationLine> =
        order_lines(tx, order_id)?.into_iter().filter(|l| l.status.counts_against_stock()).collect();
    if counted.is_empty() {
        return Ok(counted);
    }
    let (status, kind, compensated, reason) = match outcome {
        Outcome::Reserved => (ReservationStatus::Reserved, events::STOCK_RESERVED, false, None),
        Outcome::Refused(reason) => {
            (ReservationStatus::Released, events::STOCK_REJECTED, false, Some(reason))
        }
        Outcome::Compensated(reason) => {
            (ReservationStatus::Released, events::STOCK_REJECTED, true, Some(reason))
        }
        Outcome::Released(reason) => (ReservationStatus::Released, events::STOCK_RELEASED, false, reason),
    };
    // The next version of a provisional reservation is the arbiter's verdict, which the
    // arbiter records ahead of the owner; a cancel skips it, so it wins over that record at
    // both sites.
    let provisional = counted.iter().any(|l| l.status == ReservationStatus::Provisional);
    let skip = if provisional && kind == events::STOCK_RELEASED { 2 } else { 1 };
    let version = counted.iter().map(|l| l.version).max().unwrap_or(0) + skip;
    let moved: Vec<ReservationLine> =
        counted.into_iter().map(|l| ReservationLine { status, version, ..l }).collect();
    for line in &moved {
        apply_line(tx, line)?;
    }
    let payload = Reservation { compensated, ..events::reservation_of(&moved, reason) };
    let mut event = events::reservation_event(kind, &payload, version);
    if let Some(cause) = cause {
        event = event.caused_by(cause);
    }
    outbox.append(tx, vec![event])?;
    Ok(moved)
}

/// Concludes the answer of an order waiting at this site (pending or provisional): `Ok(())`
/// reserves it and publishes StockReserved; `Err(reason)` releases it and publishes
/// StockRejected with the reason, recorded as `refused`: rejected (cp: the order is
/// rejected) or compensated (ap: the order is cancelled with the apology). Does nothing
/// to an order no longer waiting; returns whether it changed.
pub fn conclude(
    tx: &mut Tx<'_>,
    outbox: &Outbox,
    order_id: &str,
    verdict: Result<(), String>,
    refused: Answer,
) -> Result<bool, StoreError> {
    let waiting = order_lines(tx, order_id)?
        .iter()
        .any(|l| matches!(l.status, ReservationStatus::Pending | ReservationStatus::Provisional));
    if !waiting {
        return Ok(false);
    }
    match verdict {
        Ok(()) => {
            advance(tx, outbox, order_id, Outcome::Reserved, None)?;
            record_answer(tx, order_id, Answer::Reserved, None)?;
        }
        Err(reason) => {
            let outcome = match refused {
                Answer::Compensated => Outcome::Compensated(reason.clone()),
                _ => Outcome::Refused(reason.clone()),
            };
            advance(tx, outbox, order_id, outcome, None)?;
            record_answer(tx, order_id, refused, Some(&reason))?;
        }
    }
    Ok(true)
}

/// The products whose final (`reserved`) lines, at both sites, add up to more than is on
/// hand: possible only when stock was lowered at one site while the arbiter decided orders.
pub fn reserved_beyond_stock(tx: &mut Tx<'_>) -> Result<Vec<String>, StoreError> {
    let rows = tx.query(
        "SELECT r.product_id FROM reservation r WHERE r.status = 'reserved' GROUP BY r.product_id \
         HAVING sum(r.quantity) > (SELECT coalesce(sum(s.added), 0) - coalesce(sum(s.removed), 0) \
         FROM site_stock s WHERE s.product_id = r.product_id) ORDER BY r.product_id",
        &[],
    )?;
    rows.into_iter().map(|row| row.get(0)).collect()
}

/// Gives back what is reserved for a final order of this site, publishing StockRejected
/// with `reason`, so the order service cancels the order (if it has not shipped, shipping
/// will not ship it). Returns whether anything was reserved for the order.
pub fn compensate(
    tx: &mut Tx<'_>,
    outbox: &Outbox,
    order_id: &str,
    reason: String,
) -> Result<bool, StoreError> {
    let moved = advance(tx, outbox, order_id, Outcome::Compensated(reason.clone()), None)?;
    if !moved.is_empty() {
        record_answer(tx, order_id, Answer::Compensated, Some(&reason))?;
    }
    Ok(!moved.is_empty())
}

/// Releases what is reserved for a cancelled order and publishes StockReleased; marks the
/// order cancelled (unless it was already refused or compensated), so a late OrderPlaced
/// reserves nothing for it. Returns the lines released.
pub fn release(
    tx: &mut Tx<'_>,
    outbox: &Outbox,
    order_id: &str,
    reason: Option<String>,
    cause: &Envelope,
) -> Result<Vec<StockLine>, StoreError> {
    let moved = advance(tx, outbox, order_id, Outcome::Released(reason.clone()), Some(cause))?;
    let refused = matches!(answer(tx, order_id)?, Some((Answer::Rejected | Answer::Compensated, _)));
    if !refused {
        record_answer(tx, order_id, Answer::Cancelled, reason.as_deref())?;
    }
    Ok(moved.into_iter().map(|l| StockLine { product_id: l.product_id, quantity: l.quantity }).collect())
}
