//! Shipments and the rule that decides them (DESIGN §1, §6): an order ships only when it
//! is confirmed, paid, and its address equals the customer's current address as shipping
//! knows it, or the customer confirmed the difference. Otherwise its shipment is held with
//! the reason, and the rule is asked again whenever what shipping knows changes.

use serde::{Deserialize, Serialize};

use crate::contracts::customer::Address;
use crate::contracts::order::{Order, OrderStatus};
use crate::contracts::shipping::{self as contract, ShipmentStatus};

/// A shipment as shipping keeps it and answers it over HTTP. Its events publish it
/// converted to [`contract::Shipment`], so the record may change apart from the contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Shipment {
    pub order_id: String,
    pub customer_id: String,
    pub status: ShipmentStatus,
    pub address: Address,
    pub reason: Option<String>,
    pub version: u64,
}

impl From<&Shipment> for contract::Shipment {
    fn from(s: &Shipment) -> Self {
        Self {
            order_id: s.order_id.clone(),
            customer_id: s.customer_id.clone(),
            status: s.status,
            address: s.address.clone(),
            reason: s.reason.clone(),
            version: s.version,
        }
    }
}
use crate::service::Problem;

#[derive(Debug, thiserror::Error)]
pub enum ShippingError {
    #[error("{field} {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("no shipment for order {0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] kit::store::StoreError),
}

impl From<ShippingError> for Problem {
    fn from(e: ShippingError) -> Self {
        match e {
            ShippingError::Invalid { .. } => Problem::unprocessable(e.to_string()),
            ShippingError::NotFound(_) => Problem::not_found(e.to_string()),
            ShippingError::Store(e) => e.into(),
        }
    }
}

/// An order id as shipping is asked for it: `o-` and 1–62 of a-z, 0-9, `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderId(String);

impl OrderId {
    pub fn parse(id: &str) -> Result<Self, ShippingError> {
        let ok = id.len() <= 64
            && id.strip_prefix("o-").is_some_and(|rest| {
                !rest.is_empty()
                    && rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            });
        if ok {
            Ok(Self(id.to_owned()))
        } else {
            Err(ShippingError::Invalid {
                field: "order_id",
                reason: format!("{id:?} is not of the form o-<letters, digits, ->"),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What shipping knows of an order's payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payment {
    /// No payment event for the order has arrived yet.
    Unknown,
    Authorized,
    Declined {
        reason: Option<String>,
    },
}

/// What should become of an order's shipment, given what shipping knows now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No shipment yet: the order is still waiting for its stock.
    NotYet,
    /// Held, with every condition that fails.
    Hold(String),
    Ship,
    /// The order was rejected or cancelled: it never ships, and a held shipment is closed
    /// with this reason.
    Never(String),
}

/// Decides the shipment of `order` from its payment and the customer's current address
/// (`None` while shipping has not heard of the customer).
pub fn decide(order: &Order, payment: &Payment, customer_address: Option<&Address>) -> Decision {
    match order.status {
        OrderStatus::PendingStock => return Decision::NotYet,
        OrderStatus::Rejected | OrderStatus::Cancelled => {
            let what = if order.status == OrderStatus::Rejected { "rejected" } else { "cancelled" };
            let why = order.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
            return Decision::Never(format!("the order was {what}{why}, so it will not ship"));
        }
        OrderStatus::Confirmed => {}
    }
    let mut failing = Vec::new();
    match payment {
        Payment::Authorized => {}
        Payment::Unknown => failing.push("waiting for payment".to_owned()),
        Payment::Declined { reason } => failing.push(match reason {
            Some(reason) => format!("the payment was declined ({reason})"),
            None => "the payment was declined".to_owned(),
        }),
    }
    if !order.address_confirmed {
        match customer_address {
            None => failing.push("the customer's address is not known yet".to_owned()),
            Some(current) if *current != order.address => failing.push(format!(
                "the order's address differs from the customer's current address ({})",
                difference(&order.address, current)
            )),
            Some(_) => {}
        }
    }
    if failing.is_empty() { Decision::Ship } else { Decision::Hold(failing.join("; ")) }
}

/// The first field in which two addresses differ, as `ours vs theirs` (city first, as
/// people tell addresses apart by it).
fn difference(ours: &Address, theirs: &Address) -> String {
    let fields = [
        (&ours.city, &theirs.city),
        (&ours.line1, &theirs.line1),
        (&ours.postcode, &theirs.postcode),
        (&ours.country, &theirs.country),
    ];
    fields
        .into_iter()
        .find(|(a, b)| a != b)
        .map(|(a, b)| format!("{a} vs {b}"))
        .unwrap_or_else(|| "identical".into())
}

/// A held shipment waiting for something, for operators: what it waits for and since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct HeldShipment {
    pub order_id: String,
    pub customer_id: String,
    pub address: Address,
    /// Every condition that fails, e.g. "waiting for payment".
    pub reason: String,
    pub version: u64,
    /// When the event that first held it occurred (milliseconds since the Unix epoch).
    pub held_since_ms: u64,
}
