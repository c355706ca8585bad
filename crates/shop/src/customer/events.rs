//! What the customer service publishes: every event carries the whole customer at its
//! new version, so replicas apply state with the version gate and need no ordering.

use kit::envelope::NewEvent;
use kit::token::{ConsistencyToken, TokenEntry};

use super::model::Customer;

pub const REGISTERED: &str = "CustomerRegistered";
pub const ADDRESS_CHANGED: &str = "CustomerAddressChanged";
pub const PAYMENT_METHOD_CHANGED: &str = "PaymentMethodChanged";

/// Every kind this service publishes; all carry a [`Customer`] payload.
pub const KINDS: [&str; 3] = [REGISTERED, ADDRESS_CHANGED, PAYMENT_METHOD_CHANGED];

/// The scope of customer aggregates in consistency tokens and replica versions.
pub const SCOPE: &str = "customer";

pub fn event(kind: &str, customer: &Customer) -> NewEvent {
    NewEvent::new(kind, customer.id.as_str(), customer.version, customer)
}

/// The token a write of `customer` answers with: `customer/<id>@<version>`.
pub fn token(customer: &Customer) -> ConsistencyToken {
    let entry =
        TokenEntry::new(SCOPE, customer.id.as_str(), customer.version).expect("customer ids are token-safe");
    ConsistencyToken::new().with(entry)
}
