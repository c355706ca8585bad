//! What the customer service publishes ([`crate::contracts::customer`]), built from its
//! model: every event carries the whole customer at its new version.

use kit::envelope::NewEvent;
use kit::token::ConsistencyToken;

use super::model::Customer;
use crate::contracts::customer as contract;

pub use contract::{ADDRESS_CHANGED, KINDS, PAYMENT_METHOD_CHANGED, REGISTERED, SCOPE};

pub fn event(kind: &str, customer: &Customer) -> NewEvent {
    contract::event(kind, &contract::Customer::from(customer))
}

/// The token a write of `customer` answers with: `customer/<id>@<version>`.
pub fn token(customer: &Customer) -> ConsistencyToken {
    contract::token(customer.id.as_str(), customer.version)
}
