//! The inventory service's SQL. Every write appends its events to the outbox in the same
//! transaction, and every change of a product's stock goes through [`write_stock`], which
//! bumps its version and yields the StockAdjusted that announces it.

use kit::envelope::{Envelope, NewEvent};
use kit::outbox::Outbox;
use kit::store::{Row, StoreError, Tx};

use super::events::{self, Reservation, StockLevel};
use super::model::{
    self, Answer, InventoryError, OnHand, OrderId, ProductId, ReservationLine, ReservationStatus, Stock,
};

fn stock_from_row(mut row: Row) -> Result<Stock, StoreError> {
    Ok(Stock::new(row.take(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

pub fn stock(tx: &mut Tx<'_>, product_id: &str) -> Result<Option<Stock>, StoreError> {
    let row = tx.query_opt(
        "SELECT product_id, on_hand, reserved, version FROM stock WHERE product_id = $1",
        &[product_id.into()],
    )?;
    row.map(stock_from_row).transpose()
}

pub fn get(tx: &mut Tx<'_>, id: &ProductId) -> Result<Stock, InventoryError> {
    stock(tx, id.as_str())?.ok_or_else(|| InventoryError::NotFound(id.as_str().to_owned()))
}

pub fn list(tx: &mut Tx<'_>) -> Result<Vec<Stock>, InventoryError> {
    let rows =
        tx.query("SELECT product_id, on_hand, reserved, version FROM stock ORDER BY product_id", &[])?;
    Ok(rows.into_iter().map(stock_from_row).collect::<Result<_, _>>()?)
}

pub fn count(tx: &mut Tx<'_>) -> Result<u64, StoreError> {
    tx.query_one("SELECT count(*) FROM stock", &[])?.get(0)
}

/// Saves `stock` as the product's current stock and returns the StockAdjusted announcing
/// it. The only statement that changes stock, so a second site has one place to hook in.
pub fn write_stock(tx: &mut Tx<'_>, stock: &Stock) -> Result<NewEvent, StoreError> {
    tx.execute(
        "INSERT INTO stock (product_id, on_hand, reserved, version) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (product_id) DO UPDATE SET on_hand = excluded.on_hand, \
         reserved = excluded.reserved, version = excluded.version",
        &[
            stock.product_id.as_str().into(),
            stock.on_hand.into(),
            stock.reserved.into(),
            stock.version.into(),
        ],
    )?;
    Ok(events::level_event(&StockLevel {
        product_id: stock.product_id.clone(),
        on_hand: stock.on_hand,
        reserved: stock.reserved,
        version: stock.version,
    }))
}

/// Sets the units on hand of a product (adding it when it has no stock yet); refuses to
/// go below what is reserved.
pub fn set_on_hand(
    tx: &mut Tx<'_>,
    outbox: &Outbox,
    id: &ProductId,
    on_hand: OnHand,
) -> Result<Stock, InventoryError> {
    let on_hand = on_hand.get();
    let stock = match stock(tx, id.as_str())? {
        Some(s) if on_hand < s.reserved => {
            return Err(InventoryError::BelowReserved {
                product_id: s.product_id,
                on_hand,
                reserved: s.reserved,
            });
        }
        Some(s) => Stock::new(s.product_id, on_hand, s.reserved, s.version + 1),
        None => Stock::new(id.as_str().to_owned(), on_hand, 0, 1),
    };
    let adjusted = write_stock(tx, &stock)?;
    outbox.append(tx, vec![adjusted])?;
    Ok(stock)
}

pub fn reservations(tx: &mut Tx<'_>, order_id: &OrderId) -> Result<Vec<ReservationLine>, InventoryError> {
    let rows = tx.query(
        "SELECT order_id, product_id, quantity, status FROM reservation WHERE order_id = $1 ORDER BY product_id",
        &[order_id.as_str().into()],
    )?;
    rows.into_iter()
        .map(|mut row| {
            let status: String = row.take(3)?;
            Ok(ReservationLine {
                order_id: row.take(0)?,
                product_id: row.take(1)?,
                quantity: row.get(2)?,
                status: ReservationStatus::parse(&status)
                    .ok_or_else(|| StoreError::Database(format!("unknown reservation status {status:?}")))?,
            })
        })
        .collect()
}

/// How inventory answered `order_id`, if it has.
pub fn answer(tx: &mut Tx<'_>, order_id: &str) -> Result<Option<Answer>, StoreError> {
    let row = tx.query_opt("SELECT answer FROM stock_answer WHERE order_id = $1", &[order_id.into()])?;
    row.map(|row| {
        let text: String = row.get(0)?;
        Answer::parse(&text).ok_or_else(|| StoreError::Database(format!("unknown stock answer {text:?}")))
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

/// Answers a placed order: reserves every line and publishes StockReserved plus a
/// StockAdjusted per product, or, when any line is short, changes nothing but publishes
/// StockRejected naming what is short. An order already answered is left alone (a
/// replayed OrderPlaced must not reserve twice); returns the answer given now, if any.
pub fn reserve(
    tx: &mut Tx<'_>,
    outbox: &Outbox,
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
        let rejected = Reservation { order_id: order_id.to_owned(), lines, reason: Some(reason) };
        outbox.append(
            tx,
            vec![events::reservation_event(events::STOCK_REJECTED, &rejected).caused_by(cause)],
        )?;
        return Ok(Some(Answer::Rejected));
    }
    let mut adjusted = Vec::with_capacity(lines.len());
    for (line, stock) in lines.iter().zip(current.into_iter().flatten()) {
        tx.execute(
            "INSERT INTO reservation (order_id, product_id, quantity, status) VALUES ($1, $2, $3, $4)",
            &[order_id.into(), line.product_id.as_str().into(), line.quantity.into(), "reserved".into()],
        )?;
        let changed = stock.with_reserved(stock.reserved + u64::from(line.quantity));
        adjusted.push(write_stock(tx, &changed)?.caused_by(cause));
    }
    record_answer(tx, order_id, Answer::Reserved, None)?;
    let reserved = Reservation { order_id: order_id.to_owned(), lines, reason: None };
    let mut published = vec![events::reservation_event(events::STOCK_RESERVED, &reserved).caused_by(cause)];
    published.append(&mut adjusted);
    outbox.append(tx, published)?;
    Ok(Some(Answer::Reserved))
}

/// Releases what a cancelled order holds and publishes StockReleased plus a StockAdjusted
/// per product; marks the order cancelled either way, so a late OrderPlaced reserves
/// nothing for it. Returns the lines released.
pub fn release(
    tx: &mut Tx<'_>,
    outbox: &Outbox,
    order_id: &str,
    reason: Option<String>,
    cause: &Envelope,
) -> Result<Vec<events::StockLine>, StoreError> {
    let held = tx.query(
        "SELECT product_id, quantity FROM reservation WHERE order_id = $1 AND status = 'reserved' ORDER BY product_id",
        &[order_id.into()],
    )?;
    let mut lines = Vec::with_capacity(held.len());
    let mut adjusted = Vec::with_capacity(held.len());
    for mut row in held {
        let line = events::StockLine { product_id: row.take(0)?, quantity: row.get(1)? };
        let current = stock(tx, &line.product_id)?.ok_or_else(|| {
            StoreError::Database(format!("order {order_id} holds {} without stock", line.product_id))
        })?;
        let changed = current.with_reserved(current.reserved.saturating_sub(u64::from(line.quantity)));
        adjusted.push(write_stock(tx, &changed)?.caused_by(cause));
        lines.push(line);
    }
    tx.execute(
        "UPDATE reservation SET status = 'released' WHERE order_id = $1 AND status = 'reserved'",
        &[order_id.into()],
    )?;
    record_answer(tx, order_id, Answer::Cancelled, reason.as_deref())?;
    if !lines.is_empty() {
        let released = Reservation { order_id: order_id.to_owned(), lines: lines.clone(), reason };
        let mut published =
            vec![events::reservation_event(events::STOCK_RELEASED, &released).caused_by(cause)];
        published.append(&mut adjusted);
        outbox.append(tx, published)?;
    }
    Ok(lines)
}
