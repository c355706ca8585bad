//! The published contracts of the services: what each one promises to the others.
//!
//! A contract is everything another service may rely on: the kinds of events a service
//! publishes, their payload types and the schema version of each, the scopes of its
//! consistency tokens, the value shapes it owns (an address, a payment method) and the
//! requests and answers of its synchronous API. A service's model may change freely;
//! its contract changes only on purpose, as a reviewed diff of the golden snapshots in
//! `contracts/snapshots/`, and with an upcaster when an old payload must still be read.
//!
//! The rule: a service module depends only on `crate::contracts`, `crate::service` and
//! `kit` — never on another service's `model`, `store`, `events` or `http`. Each service
//! converts between its own types and its contract in its `events.rs` or `model.rs`. Only
//! the composition roots (`launch`, `serve`, `wiring`, `stores`, `gateway`, `chaos`,
//! `facts`) name services. `tests.rs` here enforces the rule.

pub mod catalog;
pub mod customer;
pub mod facts;
pub mod ids;
pub mod inventory;
pub mod order;
pub mod payment;
pub mod session;
pub mod shipping;

use kit::schema::Schemas;

/// A value that breaks a contract's rule for its shape (`field` then `reason`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct Invalid {
    pub field: &'static str,
    pub reason: String,
}

impl Invalid {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self { field, reason: reason.into() }
    }
}

/// A broken rule of a contract's shape is the client's mistake: 422 with the rule.
impl From<Invalid> for crate::service::Problem {
    fn from(e: Invalid) -> Self {
        crate::service::Problem::unprocessable(e.to_string())
    }
}

/// The schemas every consumer of the shop decodes with: the current version of each
/// published kind, and the upcasters that read older payloads as current ones. A payload
/// newer than this build knows goes to dead letters instead of being misread.
pub fn schemas() -> Schemas {
    let published = [
        (&customer::KINDS[..], customer::SCHEMA),
        (&session::KINDS[..], session::SCHEMA),
        (&catalog::KINDS[..], catalog::SCHEMA),
        (&order::KINDS[..], order::SCHEMA),
        (&payment::KINDS[..], payment::SCHEMA),
        (&shipping::KINDS[..], shipping::SCHEMA),
        (&inventory::RESERVATION_KINDS[..], inventory::RESERVATION_SCHEMA),
        (&[inventory::STOCK_ADJUSTED][..], inventory::COUNTERS_SCHEMA),
    ];
    let mut schemas = Schemas::new();
    for (kinds, version) in published {
        for kind in kinds {
            schemas = schemas.current(kind, version);
        }
    }
    inventory::upcasters(schemas)
}

#[cfg(test)]
mod snapshots;
#[cfg(test)]
mod tests;
