//! Authorization requests, validated once at the edge, and the rule that decides them.

use super::events::{AuthorizationRequest, AuthorizationStatus};
use crate::contracts::customer::PaymentMethod;

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("{field} {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("no authorization {0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] kit::store::StoreError),
}

impl From<PaymentError> for crate::service::Problem {
    fn from(e: PaymentError) -> Self {
        use crate::service::Problem;
        match e {
            PaymentError::Invalid { .. } => Problem::unprocessable(e.to_string()),
            PaymentError::NotFound(_) => Problem::not_found(e.to_string()),
            PaymentError::Store(e) => e.into(),
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> PaymentError {
    PaymentError::Invalid { field, reason: reason.into() }
}

/// Above this, every payment is declined: 10000.00.
pub const AMOUNT_LIMIT_CENTS: u64 = 1_000_000;
/// Above this, payment by invoice is declined: 2000.00.
pub const INVOICE_LIMIT_CENTS: u64 = 200_000;

/// The order of a void, checked as an authorization's.
pub fn void_order_id(request: &super::events::VoidRequest) -> Result<String, PaymentError> {
    reference("order_id", &request.order_id)
}

/// An id another service gave (an order, a customer): 1–100 visible characters.
fn reference(field: &'static str, value: &str) -> Result<String, PaymentError> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.len() > 100 {
        return Err(invalid(field, "must be at most 100 characters"));
    }
    if !value.chars().all(|c| c.is_ascii_graphic()) {
        return Err(invalid(field, "must be printable ASCII without spaces"));
    }
    Ok(value.to_owned())
}

/// A request to authorize a payment, validated.
#[derive(Debug, Clone)]
pub struct Charge {
    pub order_id: String,
    pub customer_id: String,
    pub amount_cents: u64,
    pub payment_method: PaymentMethod,
}

impl TryFrom<AuthorizationRequest> for Charge {
    type Error = PaymentError;

    fn try_from(request: AuthorizationRequest) -> Result<Self, Self::Error> {
        let order_id = reference("order_id", &request.order_id)?;
        let customer_id = reference("customer_id", &request.customer_id)?;
        if request.amount_cents == 0 || i64::try_from(request.amount_cents).is_err() {
            return Err(invalid("amount_cents", "must be more than 0 and at most 9223372036854775807"));
        }
        let payment_method = request
            .payment_method
            .validated()
            .map_err(|_| invalid("payment_method.last4", "must be the last four digits of the card"))?;
        Ok(Self { order_id, customer_id, amount_cents: request.amount_cents, payment_method })
    }
}

/// Decides a charge: authorized, or declined with the reason.
pub fn decide(charge: &Charge) -> (AuthorizationStatus, Option<String>) {
    if charge.amount_cents > AMOUNT_LIMIT_CENTS {
        return (AuthorizationStatus::Declined, Some("amount exceeds the limit of 10000.00".into()));
    }
    if charge.payment_method == PaymentMethod::Invoice && charge.amount_cents > INVOICE_LIMIT_CENTS {
        return (AuthorizationStatus::Declined, Some("invoice payments are limited to 2000.00".into()));
    }
    (AuthorizationStatus::Authorized, None)
}

/// A fresh authorization id: `a-` and a UUID v7.
pub fn new_authorization_id() -> String {
    format!("a-{}", uuid::Uuid::now_v7().simple())
}
