//! Stock, reservations and the rule that decides a placed order: every line is reserved
//! when every line is available, or nothing is and the order is rejected with the reason.
//!
//! The decision is a pure function of the requested lines and the stock in this site's
//! view (both sites' counters and reservations, see [`super::merge`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::events::StockLine;
use super::sites::Site;
use crate::service::Problem;

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("{field} {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("no stock of product {0}")]
    NotFound(String),
    #[error("on_hand of {product_id} cannot be {on_hand}: {reserved} are reserved")]
    BelowReserved { product_id: String, on_hand: u64, reserved: u64 },
    #[error(transparent)]
    Store(#[from] kit::store::StoreError),
}

impl From<InventoryError> for Problem {
    fn from(e: InventoryError) -> Self {
        match e {
            InventoryError::Invalid { .. } => Problem::unprocessable(e.to_string()),
            InventoryError::NotFound(_) => Problem::not_found(e.to_string()),
            InventoryError::BelowReserved { .. } => Problem::conflict(e.to_string()),
            InventoryError::Store(e) => e.into(),
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> InventoryError {
    InventoryError::Invalid { field, reason: reason.into() }
}

/// Whether `rest` is 1 or more of a-z, 0-9, `-`.
fn slug(rest: &str) -> bool {
    !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A product id as inventory keeps stock of it: `p-` and 1–60 of a-z, 0-9, `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProductId(String);

impl ProductId {
    pub fn parse(id: &str) -> Result<Self, InventoryError> {
        if id.len() <= 62 && id.strip_prefix("p-").is_some_and(slug) {
            Ok(Self(id.to_owned()))
        } else {
            Err(invalid("product_id", format!("{id:?} is not of the form p-<letters, digits, ->")))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An order id as inventory is asked for it: `o-` and 1–62 of a-z, 0-9, `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderId(String);

impl OrderId {
    pub fn parse(id: &str) -> Result<Self, InventoryError> {
        if id.len() <= 64 && id.strip_prefix("o-").is_some_and(slug) {
            Ok(Self(id.to_owned()))
        } else {
            Err(invalid("order_id", format!("{id:?} is not of the form o-<letters, digits, ->")))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Units on hand a product may be set to: 0 to one million.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnHand(u64);

impl OnHand {
    pub const MAX: u64 = 1_000_000;

    pub fn new(units: u64) -> Result<Self, InventoryError> {
        if units <= Self::MAX {
            Ok(Self(units))
        } else {
            Err(invalid("on_hand", format!("must be at most {}", Self::MAX)))
        }
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

/// The stock of one product in this site's view: both sites' adjustments and reservations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Stock {
    pub product_id: String,
    pub on_hand: u64,
    /// Units reserved for placed orders (pending, provisional or reserved, at either site).
    pub reserved: u64,
    /// `on_hand - reserved`, or 0: what a new order may reserve.
    pub available: u64,
    /// `reserved - on_hand`, or 0: units reserved beyond the stock (ap, until the arbiter
    /// has decided).
    pub oversold: u64,
    /// Grows with every change at either site; equal at both sites once they agree.
    pub version: u64,
}

impl Stock {
    pub fn new(product_id: String, on_hand: u64, reserved: u64, version: u64) -> Self {
        Self {
            product_id,
            on_hand,
            reserved,
            available: on_hand.saturating_sub(reserved),
            oversold: reserved.saturating_sub(on_hand),
            version,
        }
    }
}

/// Where a reservation line stands at the site that owns it: the published status
/// itself, since replicas of the other site keep it as they receive it.
pub use crate::contracts::inventory::ReservationStatus;

/// Units of one product reserved for one order by the site that owns the order; both sites
/// keep every line, each site writing only its own (replicated by version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReservationLine {
    #[schema(value_type = crate::contracts::ids::OrderId)]
    pub order_id: String,
    #[schema(value_type = crate::contracts::ids::ProductId)]
    pub product_id: String,
    /// At least 1.
    #[schema(minimum = 1)]
    pub quantity: u32,
    pub status: ReservationStatus,
    /// The site the order was routed to, the only writer of this line.
    pub site: Site,
    /// When the order was placed (its OrderPlaced): the order of compensation.
    pub placed_at_ms: u64,
    /// Grows with every change of the order's reservation at its site.
    pub version: u64,
}

/// What inventory answered a placed order; recorded so an order is answered once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Reserved, waiting to be acknowledged (cp) or arbitrated (ap). Stored as `held`, the
    /// word the `stock_answer` rows were written with.
    Waiting,
    Reserved,
    Rejected,
    Cancelled,
    /// Reserved in ap, then found oversold and released with an apology.
    Compensated,
}

impl Answer {
    const ALL: [Answer; 5] =
        [Self::Waiting, Self::Reserved, Self::Rejected, Self::Cancelled, Self::Compensated];

    pub fn as_str(self) -> &'static str {
        match self {
            Answer::Waiting => "held",
            Answer::Reserved => "reserved",
            Answer::Rejected => "rejected",
            Answer::Cancelled => "cancelled",
            Answer::Compensated => "compensated",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

/// The lines of an order as inventory reserves them: one per product (quantities of
/// repeated products added up), in product order, without empty lines.
pub fn requested(lines: impl IntoIterator<Item = (String, u32)>) -> Vec<StockLine> {
    let mut merged: BTreeMap<String, u32> = BTreeMap::new();
    for (product_id, quantity) in lines {
        let total = merged.entry(product_id).or_default();
        *total = total.saturating_add(quantity);
    }
    merged
        .into_iter()
        .filter(|(_, quantity)| *quantity > 0)
        .map(|(product_id, quantity)| StockLine { product_id, quantity })
        .collect()
}

/// Why `lines` cannot all be reserved from `stock` (the stock of each line's product, if
/// this site keeps any); empty when they can.
pub fn shortages(lines: &[StockLine], stock: &[Option<Stock>]) -> Vec<String> {
    lines
        .iter()
        .zip(stock)
        .filter_map(|(line, stock)| match stock {
            None => Some(format!("no stock of product {}", line.product_id)),
            Some(s) if s.available < u64::from(line.quantity) => Some(format!(
                "not enough stock of product {}: {} requested, {} available",
                line.product_id, line.quantity, s.available
            )),
            Some(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod unit {
    use super::*;

    fn line(product_id: &str, quantity: u32) -> StockLine {
        StockLine { product_id: product_id.into(), quantity }
    }

    #[test]
    fn repeated_products_are_reserved_as_one_line() {
        let lines =
            requested([("p-002".into(), 1), ("p-001".into(), 2), ("p-002".into(), 3), ("p-003".into(), 0)]);
        assert_eq!(lines, [line("p-001", 2), line("p-002", 4)]);
    }

    #[test]
    fn shortages_name_every_product_that_is_short() {
        let lines = [line("p-001", 2), line("p-002", 5), line("p-009", 1)];
        let stock =
            [Some(Stock::new("p-001".into(), 2, 0, 1)), Some(Stock::new("p-002".into(), 9, 5, 3)), None];
        assert_eq!(
            shortages(&lines, &stock),
            ["not enough stock of product p-002: 5 requested, 4 available", "no stock of product p-009",]
        );
    }

    #[test]
    fn answers_keep_the_words_existing_stock_answer_rows_were_stored_with() {
        let stored: Vec<_> = Answer::ALL.into_iter().map(Answer::as_str).collect();
        assert_eq!(stored, ["held", "reserved", "rejected", "cancelled", "compensated"]);
        assert_eq!(Answer::parse("held"), Some(Answer::Waiting), "a row written before the rename");
    }

    #[test]
    fn ids_outside_their_form_are_refused() {
        assert!(ProductId::parse("p-001").is_ok());
        assert!(ProductId::parse("P-001").is_err());
        assert!(OrderId::parse("o-0193f2").is_ok());
        assert!(OrderId::parse("o-").is_err());
        assert!(OnHand::new(OnHand::MAX + 1).is_err());
    }
}
