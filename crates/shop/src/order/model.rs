//! Carts and orders: validated inputs and the errors of the order service.

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::contracts::customer::Address;
use crate::contracts::order::{self as contract, AddressSource, OrderLine, OrderStatus};
use crate::service::{PeerError, Problem};

/// An order as the order service keeps it and answers it over HTTP. Its events publish
/// it converted to [`contract::Order`], so the record may change apart from the contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Order {
    pub id: String,
    pub customer_id: String,
    pub status: OrderStatus,
    pub lines: Vec<OrderLine>,
    pub total_cents: u64,
    /// Where the order ships to.
    pub address: Address,
    pub address_source: AddressSource,
    /// True once the customer confirmed this address although it differs from theirs.
    pub address_confirmed: bool,
    pub payment_authorization_id: String,
    /// Why the order was rejected or cancelled.
    pub reason: Option<String>,
    pub version: u64,
}

impl From<&Order> for contract::Order {
    fn from(order: &Order) -> Self {
        Self {
            id: order.id.clone(),
            customer_id: order.customer_id.clone(),
            status: order.status,
            lines: order.lines.clone(),
            total_cents: order.total_cents,
            address: order.address.clone(),
            address_source: order.address_source,
            address_confirmed: order.address_confirmed,
            payment_authorization_id: order.payment_authorization_id.clone(),
            reason: order.reason.clone(),
            version: order.version,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("{field} {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("no order {0}")]
    NotFound(String),
    #[error("no customer {0}")]
    UnknownCustomer(String),
    #[error("no product {0}")]
    UnknownProduct(String),
    #[error("the cart of {0} is empty")]
    EmptyCart(String),
    #[error("the total cannot be confirmed, so no order was placed: {0}")]
    TotalUnconfirmed(String),
    #[error("the address is unknown here and cannot be fetched, so no order was placed: {0}")]
    AddressUnknown(String),
    #[error("payment could not be authorized, so no order was placed: {0}")]
    PaymentUnavailable(String),
    #[error("payment declined: {0}")]
    PaymentDeclined(String),
    #[error("order {id} is {status} and cannot be changed")]
    Final { id: String, status: &'static str },
    #[error(
        "order {0} is confirmed and on its way to shipping, which may have shipped it already, \
         so it can no longer be cancelled"
    )]
    OnItsWay(String),
    #[error(transparent)]
    Store(#[from] kit::store::StoreError),
}

impl From<OrderError> for Problem {
    fn from(e: OrderError) -> Self {
        match e {
            OrderError::Store(e) => e.into(),
            e => Problem::new(e.status(), e.to_string()),
        }
    }
}

impl OrderError {
    pub fn status(&self) -> StatusCode {
        match self {
            OrderError::Invalid { .. } | OrderError::UnknownProduct(_) | OrderError::EmptyCart(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            OrderError::NotFound(_) | OrderError::UnknownCustomer(_) => StatusCode::NOT_FOUND,
            OrderError::TotalUnconfirmed(_)
            | OrderError::AddressUnknown(_)
            | OrderError::PaymentUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            OrderError::PaymentDeclined(_) => StatusCode::PAYMENT_REQUIRED,
            OrderError::Final { .. } | OrderError::OnItsWay(_) => StatusCode::CONFLICT,
            OrderError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A peer's refusal of our request passes through; its absence becomes `unavailable`.
    pub fn from_peer(e: PeerError, unavailable: fn(String) -> OrderError) -> OrderError {
        match e {
            PeerError::Refused { detail, .. } => OrderError::Invalid { field: "request", reason: detail },
            other => unavailable(other.to_string()),
        }
    }
}

/// A quantity in a cart: 1 to 100 of one product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(u32);

impl Quantity {
    pub const MAX: u32 = 100;

    pub fn new(n: i64) -> Result<Self, OrderError> {
        if (1..=Self::MAX as i64).contains(&n) {
            Ok(Self(n as u32))
        } else {
            Err(OrderError::Invalid {
                field: "quantity",
                reason: format!("must be between 1 and {}", Self::MAX),
            })
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// Checks an id of the form `<prefix>-<letters, digits, ->`.
pub fn id(field: &'static str, prefix: &str, value: &str) -> Result<String, OrderError> {
    let ok = value.len() <= 64
        && value.strip_prefix(prefix).and_then(|rest| rest.strip_prefix('-')).is_some_and(|rest| {
            !rest.is_empty()
                && rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if ok {
        Ok(value.to_owned())
    } else {
        Err(OrderError::Invalid {
            field,
            reason: format!("{value:?} is not of the form {prefix}-<letters, digits, ->"),
        })
    }
}

pub fn new_order_id() -> String {
    format!("o-{}", uuid::Uuid::now_v7().simple())
}
