//! Broken links and orphans between orders, reservations, authorizations and shipments.

use std::collections::BTreeSet;

use super::view::View;
use super::{Finding, Group};
use crate::contracts::inventory::{ReservationStatus, Site};
use crate::contracts::order::{Order, OrderStatus};
use crate::contracts::payment::AuthorizationStatus;
use crate::contracts::shipping::ShipmentStatus;

pub fn check(view: &View<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for order in view.orders.values() {
        findings.extend(reservation_of(view, order));
        findings.extend(authorization_of(view, order));
        findings.extend(shipment_of(view, order));
    }
    findings.extend(reservations_without_orders(view));
    findings.extend(authorizations_without_orders(view));
    findings.extend(shipments_without_orders(view));
    findings
}

/// A confirmed or shipped order needs its lines reserved at the site it was routed to.
fn reservation_of(view: &View<'_>, order: &Order) -> Option<Finding> {
    let shipped = view.shipments.get(order.id.as_str()).is_some_and(|s| s.status == ShipmentStatus::Shipped);
    if order.status != OrderStatus::Confirmed && !shipped {
        return None;
    }
    let site = Site::of_customer(&order.customer_id);
    let lines: Vec<_> =
        view.sites.get(&site)?.lines.iter().filter(|l| l.order_id == order.id && l.site == site).collect();
    if !lines.is_empty() && lines.iter().all(|l| l.status == ReservationStatus::Reserved) {
        return None;
    }
    let found = if lines.is_empty() {
        "no lines".to_owned()
    } else {
        lines.iter().map(|l| format!("{} {}", l.product_id, l.status.as_str())).collect::<Vec<_>>().join(", ")
    };
    let what = if shipped { "shipped" } else { order.status.as_str() };
    let detail = format!("order {} is {what} but {site} holds {found} for it", order.id);
    let in_flight = view.explain(&[(&site.instance(), "order.stock")]);
    let keys = [("order", order.id.as_str()), ("site", site.as_str())];
    Some(Finding::new("confirmed_without_reservation", Group::BrokenLink, &keys, detail, in_flight))
}

/// Every order was placed with an authorization the payment service made for it.
fn authorization_of(view: &View<'_>, order: &Order) -> Option<Finding> {
    let id = order.payment_authorization_id.as_str();
    let problem = match view.authorization_ids.get(id) {
        None => "does not exist".to_owned(),
        Some(a) if a.order_id != order.id => format!("was made for order {}", a.order_id),
        Some(a) if a.status != AuthorizationStatus::Authorized => "was declined".to_owned(),
        Some(_) => return None,
    };
    let detail = format!("order {} names payment authorization {id}, which {problem}", order.id);
    let keys = [("order", order.id.as_str()), ("authorization", id)];
    // A synchronous edge: the payment commits before the order, and is read after it.
    Some(Finding::new("order_without_authorization", Group::BrokenLink, &keys, detail, None))
}

/// A confirmed and paid order has a shipment, shipped or held with its reason.
fn shipment_of(view: &View<'_>, order: &Order) -> Option<Finding> {
    let paid = view
        .authorizations
        .get(order.id.as_str())
        .is_some_and(|a| a.status == AuthorizationStatus::Authorized);
    if order.status != OrderStatus::Confirmed || !paid || view.shipments.contains_key(order.id.as_str()) {
        return None;
    }
    let detail = format!("order {} is confirmed and paid but has no shipment, shipped or held", order.id);
    let in_flight = view.explain(&[("order", "shipping.order-replica"), ("payment", "shipping.payments")]);
    Some(Finding::new(
        "paid_order_without_shipment",
        Group::BrokenLink,
        &[("order", &order.id)],
        detail,
        in_flight,
    ))
}

/// Lines a site still counts against the stock need an order that is not rejected or
/// cancelled. Only the site's own lines are checked here; its copies of the other site's
/// are replicas ([`super::replicas`]).
fn reservations_without_orders(view: &View<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (site, held) in &view.sites {
        let counting: BTreeSet<&str> = held
            .lines
            .iter()
            .filter(|l| l.site == *site && l.status.counts_against_stock())
            .map(|l| l.order_id.as_str())
            .collect();
        let consumer = format!("{}.orders", site.instance());
        for order_id in counting {
            let (kind, detail) = match view.orders.get(order_id) {
                None => (
                    "reservation_without_order",
                    format!("{site} holds stock for order {order_id}, which does not exist"),
                ),
                Some(o) if matches!(o.status, OrderStatus::Rejected | OrderStatus::Cancelled) => (
                    "reservation_for_closed_order",
                    format!("{site} holds stock for order {order_id}, which is {}", o.status.as_str()),
                ),
                Some(_) => continue,
            };
            let in_flight = view.explain(&[("order", &consumer)]);
            let keys = [("order", order_id), ("site", site.as_str())];
            findings.push(Finding::new(kind, Group::Orphan, &keys, detail, in_flight));
        }
    }
    findings
}

/// How long a placement may take from its authorization to its order's commit: the order
/// service commits the order right after the payment answers, so an authorization younger
/// than this at the order service's read may belong to a placement still under way.
pub const PLACING_MS: u64 = 10_000;

/// An authorization was made for an order that the order service then recorded.
fn authorizations_without_orders(view: &View<'_>) -> Vec<Finding> {
    let order_read_at = view.parts.get("order").map(|p| p.read_at_ms);
    view.authorizations
        .values()
        .filter(|a| a.status == AuthorizationStatus::Authorized && !view.orders.contains_key(a.order_id.as_str()))
        .map(|a| {
            let detail = format!("authorization {} is for order {}, which does not exist", a.id, a.order_id);
            // Live, an authorization made shortly before the order service was read (or
            // after it) belongs to an order that may commit after that read. In files,
            // nothing is under way: the placement failed after the payment answered.
            let placing = |at: &u64| view.live && a.created_at_ms + PLACING_MS >= *at;
            let in_flight = |reason: String| super::InFlight {
                stream: "order".to_owned(),
                consumer: None,
                seq: view.head("order") + 1,
                unapplied: 0,
                reason,
            };
            // A placement the order service still holds either commits its order or is
            // abandoned and voided at payment (order/placing.rs).
            let in_flight = if view.placing.contains(a.order_id.as_str()) {
                Some(in_flight(format!(
                    "the order service's placement of order {} is under way or abandoned and waits to be voided",
                    a.order_id
                )))
            } else {
                order_read_at.filter(placing).map(|at| {
                    in_flight(format!(
                        "authorized at {} ms, within {PLACING_MS} ms of the order service's read at {at} ms: its order may still be committing",
                        a.created_at_ms
                    ))
                })
            };
            let keys = [("authorization", a.id.as_str()), ("order", a.order_id.as_str())];
            Finding::new("authorization_without_order", Group::Orphan, &keys, detail, in_flight)
        })
        .collect()
}

/// A shipped shipment needs a confirmed order, and goes to the customer's address unless
/// the customer confirmed the order's own.
fn shipments_without_orders(view: &View<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for shipment in view.shipments.values().filter(|s| s.status == ShipmentStatus::Shipped) {
        let id = shipment.order_id.as_str();
        let order = view.orders.get(id);
        if order.is_none_or(|o| o.status != OrderStatus::Confirmed) {
            let is = order.map_or("missing", |o| o.status.as_str());
            let detail = format!("order {id} was shipped but its order is {is}");
            let in_flight = view.explain(&[("order", "shipping.order-replica")]);
            findings.push(Finding::new(
                "shipment_without_confirmed_order",
                Group::Orphan,
                &[("order", id)],
                detail,
                in_flight,
            ));
        }
        let Some(customer) = view.customers.get(shipment.customer_id.as_str()) else { continue };
        if order.is_some_and(|o| o.address_confirmed) || customer.address == shipment.address {
            continue;
        }
        let detail = format!(
            "order {id} was shipped to {}, {} but customer {} lives at {}, {} (version {})",
            shipment.address.line1,
            shipment.address.city,
            customer.id,
            customer.address.line1,
            customer.address.city,
            customer.version
        );
        let in_flight = view.explain(&[("customer", "shipping.customer-replica")]);
        let keys = [("order", id), ("customer", customer.id.as_str())];
        findings.push(Finding::new("shipped_to_other_address", Group::BrokenLink, &keys, detail, in_flight));
    }
    findings
}
