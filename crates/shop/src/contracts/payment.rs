//! The payment service's contract: its events (key: order id; a decision is version 1 and
//! never changed, a void of an authorized payment is version 2), its synchronous
//! authorization (`POST /authorizations`) and the void of an abandoned placement
//! (`POST /voids`).

use kit::envelope::NewEvent;
use serde::{Deserialize, Serialize};

use super::customer::PaymentMethod;

pub const PAYMENT_AUTHORIZED: &str = "PaymentAuthorized";
pub const PAYMENT_DECLINED: &str = "PaymentDeclined";
pub const PAYMENT_VOIDED: &str = "PaymentVoided";
pub const KINDS: [&str; 3] = [PAYMENT_AUTHORIZED, PAYMENT_DECLINED, PAYMENT_VOIDED];

/// The schema version of the [`Authorization`] payload.
pub const SCHEMA: u32 = 1;

/// `POST /authorizations`: authorize `amount_cents` for an order about to be placed.
/// Idempotent by `order_id`: asking again answers the first decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuthorizationRequest {
    /// 1 to 100 printable ASCII characters, no spaces.
    #[schema(pattern = "^[!-~]{1,100}$")]
    pub order_id: String,
    /// 1 to 100 printable ASCII characters, no spaces.
    #[schema(pattern = "^[!-~]{1,100}$")]
    pub customer_id: String,
    /// More than 0, at most 2^63 - 1 (what the payment store keeps).
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_u64)]
    pub amount_cents: u64,
    pub payment_method: PaymentMethod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthorizationStatus {
    Authorized,
    Declined,
    /// The order's placement was abandoned before its order was committed: nothing is
    /// charged, and the order will never be placed.
    Voided,
}

/// `POST /voids`: the order service abandoned the placement of `order_id` and will never
/// commit it. Voids its authorization, if payment made one, and refuses one asked for
/// after. Idempotent by `order_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VoidRequest {
    /// 1 to 100 printable ASCII characters, no spaces.
    #[schema(pattern = "^[!-~]{1,100}$")]
    pub order_id: String,
}

/// The payment service's decision; also the payload of its events (key: order id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Authorization {
    pub authorization_id: String,
    pub order_id: String,
    pub customer_id: String,
    pub amount_cents: u64,
    pub status: AuthorizationStatus,
    /// Why it was declined or voided.
    pub reason: Option<String>,
}

pub fn event(authorization: &Authorization) -> NewEvent {
    let (kind, version) = match authorization.status {
        AuthorizationStatus::Authorized => (PAYMENT_AUTHORIZED, 1),
        AuthorizationStatus::Declined => (PAYMENT_DECLINED, 1),
        AuthorizationStatus::Voided => (PAYMENT_VOIDED, 2),
    };
    NewEvent::new(kind, authorization.order_id.as_str(), version, authorization).schema(SCHEMA)
}
