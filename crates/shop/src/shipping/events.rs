//! What shipping publishes (key: order id), and how it applies what it consumes: the
//! replicas of orders, customers' addresses and payments, each followed by deciding the
//! affected shipments in the same transaction.

use kit::envelope::NewEvent;

use super::model::Shipment;
use crate::contracts::shipping as contract;

pub use contract::{KINDS, SHIPMENT_CREATED, SHIPMENT_HELD, ShipmentStatus};

/// ShipmentCreated or ShipmentHeld, as the status says, carrying `shipment` as its
/// contract publishes it.
pub fn event(shipment: &Shipment) -> NewEvent {
    contract::event(&contract::Shipment::from(shipment))
}

/// How shipping applies what it consumes. Every handler updates its replica only when the
/// event is news (the version gate for orders and customers; the payment table for
/// payments), then decides again the shipments it may affect, all inside the consumer's
/// transaction, so a shipment never lags behind the facts it was decided by.
pub mod apply {
    use kit::consumer::{Handler, HandlerError};
    use kit::envelope::Envelope;
    use kit::outbox::Outbox;
    use kit::replica::VersionGate;
    use kit::store::{StoreError, Tx};

    use super::ShipmentStatus;
    use crate::contracts::customer::{self, Customer};
    use crate::contracts::order::{self, Order};
    use crate::contracts::payment::{self, Authorization, AuthorizationStatus};
    use crate::shipping::model::{self, Decision, Payment, Shipment};
    use crate::shipping::store::{self, Stored};

    /// Keeps the replica of orders at their newest version.
    pub struct OrderReplica {
        pub gate: VersionGate,
        pub outbox: Outbox,
    }

    impl Handler for OrderReplica {
        fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
            if !order::KINDS.contains(&event.kind.as_str()) {
                return Ok(());
            }
            let order: Order = event.keyed_payload(|p: &Order| &p.id)?;
            if self.gate.admit(tx, order::SCOPE, &event.key, event.version)? {
                store::put_order(tx, &order)?;
                redecide(tx, &self.outbox, &order.id, event)?;
            }
            Ok(())
        }
    }

    /// Keeps the replica of each customer's current address at its newest version; a new
    /// address decides again every shipment of theirs that has not shipped.
    pub struct CustomerReplica {
        pub gate: VersionGate,
        pub outbox: Outbox,
    }

    impl Handler for CustomerReplica {
        fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
            if !customer::KINDS.contains(&event.kind.as_str()) {
                return Ok(());
            }
            let customer: Customer = event.keyed_payload(|p: &Customer| &p.id)?;
            if self.gate.admit(tx, customer::SCOPE, &event.key, event.version)? {
                store::put_customer_address(tx, &customer.id, &customer.address, event.version)?;
                for order_id in store::unshipped_orders_of(tx, &customer.id)? {
                    redecide(tx, &self.outbox, &order_id, event)?;
                }
            }
            Ok(())
        }
    }

    /// Records each order's payment decision. Payment events all have version 1, so they
    /// are recorded idempotently instead of through the version gate.
    pub struct Payments {
        pub outbox: Outbox,
    }

    impl Handler for Payments {
        fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
            if ![payment::PAYMENT_AUTHORIZED, payment::PAYMENT_DECLINED].contains(&event.kind.as_str()) {
                return Ok(());
            }
            let authorization: Authorization = event.keyed_payload(|p: &Authorization| &p.order_id)?;
            let decision = match authorization.status {
                AuthorizationStatus::Authorized => Payment::Authorized,
                AuthorizationStatus::Declined | AuthorizationStatus::Voided => {
                    Payment::Declined { reason: authorization.reason }
                }
            };
            if store::record_payment(tx, &authorization.order_id, &decision)? {
                redecide(tx, &self.outbox, &authorization.order_id, event)?;
            }
            Ok(())
        }
    }

    /// Decides the shipment of `order_id` again from what shipping knows now (after every
    /// event that may change it); saves it and appends ShipmentHeld or ShipmentCreated
    /// (caused by `cause`) only when it changed. A shipped shipment is final and never
    /// looked at again.
    pub fn redecide(
        tx: &mut Tx<'_>,
        outbox: &Outbox,
        order_id: &str,
        cause: &Envelope,
    ) -> Result<(), StoreError> {
        let Some(order) = store::order(tx, order_id)? else { return Ok(()) };
        let existing = store::stored(tx, order_id)?;
        if existing.as_ref().is_some_and(|s| s.shipment.status == ShipmentStatus::Shipped) {
            return Ok(());
        }
        let payment = store::payment(tx, order_id)?;
        let address = store::customer_address(tx, &order.customer_id)?;
        let (status, reason, closed) = match model::decide(&order, &payment, address.as_ref()) {
            Decision::NotYet => return Ok(()),
            // An order that never reached shipping leaves no shipment behind.
            Decision::Never(_) if existing.is_none() => return Ok(()),
            Decision::Never(reason) => (ShipmentStatus::Held, Some(reason), true),
            Decision::Hold(reason) => (ShipmentStatus::Held, Some(reason), false),
            Decision::Ship => (ShipmentStatus::Shipped, None, false),
        };
        let unchanged = existing.as_ref().is_some_and(|s| {
            s.shipment.status == status
                && s.shipment.reason == reason
                && s.shipment.address == order.address
                && s.closed == closed
        });
        if unchanged {
            return Ok(());
        }
        let previous = existing.as_ref();
        let held_since_ms = previous
            .and_then(|s| s.held_since_ms)
            .or_else(|| (status == ShipmentStatus::Held).then(|| cause.occurred_at_ms()));
        let shipment = Shipment {
            order_id: order.id,
            customer_id: order.customer_id,
            status,
            address: order.address,
            reason,
            version: previous.map_or(0, |s| s.shipment.version) + 1,
        };
        tracing::info!(
            order = %shipment.order_id,
            status = ?shipment.status,
            reason = shipment.reason.as_deref(),
            version = shipment.version,
            "shipment decided"
        );
        store::save(tx, &Stored { shipment: shipment.clone(), closed, held_since_ms })?;
        outbox.append(tx, vec![super::event(&shipment).caused_by(cause)])?;
        Ok(())
    }
}
