//! The payment service's SQL. A decision and its event are written in one transaction,
//! once per order: the order id is unique, so asking again reads the first decision. A void
//! is a row of its own per order (`voids`): it turns an authorized decision into a voided
//! one, and a decision asked for after it is refused.

use kit::outbox::Outbox;
use kit::store::{Row, StoreError, Tx};

use super::events::{self, Authorization, AuthorizationStatus};
use super::model::{self, Charge, PaymentError};

/// An authorization with its void, if any (`voids` is keyed by order id too).
const COLUMNS: &str = "a.id, a.order_id, a.customer_id, a.amount_cents, a.status, a.reason, v.reason";
const FROM: &str = "authorizations a LEFT JOIN voids v ON v.order_id = a.order_id";

fn status_column(status: AuthorizationStatus) -> &'static str {
    match status {
        AuthorizationStatus::Authorized | AuthorizationStatus::Voided => "authorized",
        AuthorizationStatus::Declined => "declined",
    }
}

/// The status of an authorization from its `status` column and whether its order has a
/// void (a void turns an authorized decision into a voided one, never a declined one).
pub(super) fn status(column: &str, voided: bool) -> Result<AuthorizationStatus, StoreError> {
    match (column, voided) {
        ("authorized", false) => Ok(AuthorizationStatus::Authorized),
        ("authorized", true) => Ok(AuthorizationStatus::Voided),
        ("declined", _) => Ok(AuthorizationStatus::Declined),
        (other, _) => Err(StoreError::Database(format!("unknown authorization status {other:?}"))),
    }
}

fn authorization_from_row(mut row: Row) -> Result<Authorization, StoreError> {
    let voided: Option<String> = row.take(6)?;
    let status = status(&row.take::<String>(4)?, voided.is_some())?;
    let reason = match status {
        AuthorizationStatus::Voided => voided,
        _ => row.take(5)?,
    };
    Ok(Authorization {
        authorization_id: row.take(0)?,
        order_id: row.take(1)?,
        customer_id: row.take(2)?,
        amount_cents: row.get(3)?,
        status,
        reason,
    })
}

fn by_order(tx: &mut Tx<'_>, order_id: &str) -> Result<Option<Authorization>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM {FROM} WHERE a.order_id = $1");
    tx.query_opt(&sql, &[order_id.into()])?.map(authorization_from_row).transpose()
}

fn void_of(tx: &mut Tx<'_>, order_id: &str) -> Result<Option<String>, StoreError> {
    let row = tx.query_opt("SELECT reason FROM voids WHERE order_id = $1", &[order_id.into()])?;
    row.map(|mut r| r.take(0)).transpose()
}

pub fn get(tx: &mut Tx<'_>, id: &str) -> Result<Authorization, PaymentError> {
    let row = tx.query_opt(&format!("SELECT {COLUMNS} FROM {FROM} WHERE a.id = $1"), &[id.into()])?;
    row.map(authorization_from_row).transpose()?.ok_or_else(|| PaymentError::NotFound(id.to_owned()))
}

/// Authorizations, newest first: the one of `order_id` (if any), or the latest `limit`.
pub fn list(tx: &mut Tx<'_>, order_id: Option<&str>, limit: u64) -> Result<Vec<Authorization>, PaymentError> {
    if let Some(order_id) = order_id {
        return Ok(by_order(tx, order_id)?.into_iter().collect());
    }
    let sql = format!("SELECT {COLUMNS} FROM {FROM} ORDER BY a.created_at_ms DESC, a.id DESC LIMIT $1");
    let rows = tx.query(&sql, &[limit.into()])?;
    Ok(rows.into_iter().map(authorization_from_row).collect::<Result<_, _>>()?)
}

/// Decides `charge` and records the decision with its event, or returns the decision
/// already recorded for its order. The flag says whether the decision is new. An order
/// whose placement was voided before it asked gets no decision: the answer is voided and
/// nothing is recorded.
pub fn authorize(
    tx: &mut Tx<'_>,
    outbox: &Outbox,
    charge: Charge,
    now_ms: u64,
) -> Result<(Authorization, bool), PaymentError> {
    if let Some(first) = by_order(tx, &charge.order_id)? {
        return Ok((first, false));
    }
    if let Some(why) = void_of(tx, &charge.order_id)? {
        let refused = Authorization {
            authorization_id: String::new(),
            order_id: charge.order_id,
            customer_id: charge.customer_id,
            amount_cents: charge.amount_cents,
            status: AuthorizationStatus::Voided,
            reason: Some(why),
        };
        return Ok((refused, false));
    }
    let (status, reason) = model::decide(&charge);
    let authorization = Authorization {
        authorization_id: model::new_authorization_id(),
        order_id: charge.order_id,
        customer_id: charge.customer_id,
        amount_cents: charge.amount_cents,
        status,
        reason,
    };
    let (kind, last4) = charge.payment_method.columns();
    tx.execute(
        "INSERT INTO authorizations (id, order_id, customer_id, amount_cents, payment_kind, payment_last4, \
         status, reason, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            authorization.authorization_id.as_str().into(),
            authorization.order_id.as_str().into(),
            authorization.customer_id.as_str().into(),
            authorization.amount_cents.into(),
            kind.into(),
            last4.into(),
            status_column(status).into(),
            authorization.reason.as_deref().into(),
            now_ms.into(),
        ],
    )?;
    outbox.append(tx, vec![events::event(&authorization)])?;
    Ok((authorization, true))
}

/// Why an abandoned placement's authorization is void.
pub const ABANDONED: &str = "the placement of its order was abandoned; nothing is charged";

/// Voids the placement of `order_id`: records the void (once), and when payment had
/// authorized the order, publishes PaymentVoided. Answers the authorization as it stands
/// now, if payment made one.
pub fn void(
    tx: &mut Tx<'_>,
    outbox: &Outbox,
    order_id: &str,
    now_ms: u64,
) -> Result<Option<Authorization>, PaymentError> {
    if void_of(tx, order_id)?.is_none() {
        tx.execute(
            "INSERT INTO voids (order_id, reason, voided_at_ms) VALUES ($1, $2, $3)",
            &[order_id.into(), ABANDONED.into(), now_ms.into()],
        )?;
        if let Some(voided) = by_order(tx, order_id)?.filter(|a| a.status == AuthorizationStatus::Voided) {
            outbox.append(tx, vec![events::event(&voided)])?;
        }
    }
    Ok(by_order(tx, order_id)?)
}
