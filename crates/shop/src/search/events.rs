//! How search applies what it consumes; it publishes nothing. Both feeds carry whole
//! aggregates at their version, so each is version-gated: a duplicate, a reordered older
//! version or a late replay changes nothing, and an event is indexed only when it is news.
//! The one exception is the bestsellers counter ([`bestsellers`]), which counts every
//! OrderPlaced, older or not, and which only the inbox keeps from counting one twice.

use kit::consumer::{Handler, HandlerError};
use kit::envelope::Envelope;
use kit::replica::VersionGate;
use kit::store::Tx;

use super::model::Document;
use super::{bestsellers, store};
use crate::contracts::catalog::{self as catalog, Product};
use crate::contracts::order::{self as order, Order};

/// A product whose name holds this text cannot be indexed: its event fails on purpose,
/// for the poison-event scenario (DESIGN §4, scenario 4).
pub const POISON_MARKER: &str = "#poison";

/// Indexes products from the catalog's ProductAdded and ProductPriceChanged.
pub struct ProductIndex {
    pub gate: VersionGate,
}

impl Handler for ProductIndex {
    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        if !catalog::KINDS.contains(&event.kind.as_str()) {
            return Ok(());
        }
        let product: Product = event.keyed_payload(|p: &Product| &p.id)?;
        if !self.gate.admit(tx, catalog::SCOPE, &event.key, event.version)? {
            return Ok(());
        }
        // Failing after the gate rolls the admission back with the event; a newer version
        // that fixes the name makes a replay of this one a harmless no-op.
        if product.name.contains(POISON_MARKER) {
            return Err(HandlerError::retryable(format!(
                "cannot index product {}: its name holds the marker {POISON_MARKER}",
                product.id
            )));
        }
        store::put(tx, &Document::product(&product))?;
        Ok(())
    }
}

/// Indexes orders from every event of the order service, and counts the units of every
/// order placed for the bestsellers.
pub struct OrderIndex {
    pub gate: VersionGate,
}

impl Handler for OrderIndex {
    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        if !order::KINDS.contains(&event.kind.as_str()) {
            return Ok(());
        }
        let order: Order = event.keyed_payload(|p: &Order| &p.id)?;
        // Not gated: an order's placement counts even when a newer version was indexed first.
        if event.kind == order::ORDER_PLACED {
            bestsellers::count(tx, &order)?;
        }
        if self.gate.admit(tx, order::SCOPE, &event.key, event.version)? {
            store::put(tx, &Document::order(&order))?;
        }
        Ok(())
    }
}
