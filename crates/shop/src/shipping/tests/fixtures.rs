//! Customers, orders and payments as their producers publish them.

use kit::envelope::NewEvent;

use crate::contracts::customer::{Address, Customer, PaymentMethod};
use crate::contracts::order::{
    AddressSource, ORDER_ADDRESS_CONFIRMED, ORDER_ADDRESS_OVERRIDDEN, ORDER_CANCELLED, ORDER_CONFIRMED,
    ORDER_PLACED, ORDER_REJECTED, Order, OrderLine, OrderStatus,
};
use crate::contracts::payment::{Authorization, AuthorizationStatus};

pub(super) fn london() -> Address {
    Address::parse("12 St James's Square", "London", "SW1Y 4JH", "GB").unwrap()
}

pub(super) fn leeds() -> Address {
    Address::parse("2 New Road", "Leeds", "LS1 1AA", "GB").unwrap()
}

pub(super) const LEEDS_VS_LONDON: &str =
    "the order's address differs from the customer's current address (Leeds vs London)";

pub(super) fn customer(id: &str, address: Address, version: u64) -> Customer {
    Customer {
        id: id.into(),
        name: "Ada Lovelace".into(),
        email: format!("{id}@example.com"),
        address,
        payment_method: PaymentMethod::Card { last4: "4242".into() },
        version,
    }
}

/// An order at `version` with `status`, as the order service publishes it.
pub(super) fn order(
    id: &str,
    customer_id: &str,
    address: Address,
    status: OrderStatus,
    version: u64,
) -> Order {
    Order {
        id: id.into(),
        customer_id: customer_id.into(),
        status,
        lines: vec![OrderLine {
            product_id: "p-001".into(),
            name: "Difference Engine".into(),
            quantity: 1,
            unit_price_cents: 1_999,
        }],
        total_cents: 1_999,
        address,
        address_source: AddressSource::Replica,
        address_confirmed: false,
        payment_authorization_id: format!("a-{id}"),
        reason: None,
        version,
    }
}

pub(super) fn authorization(order_id: &str, customer_id: &str, status: AuthorizationStatus) -> Authorization {
    Authorization {
        authorization_id: format!("a-{order_id}"),
        order_id: order_id.into(),
        customer_id: customer_id.into(),
        amount_cents: 1_999,
        status,
        reason: (status == AuthorizationStatus::Declined).then(|| "insufficient funds".into()),
    }
}

/// The order service's events for an order placed with `address` (an override when it
/// is not the customer's) and then confirmed: versions 1.. in publish order.
pub(super) fn placed_and_confirmed(
    id: &str,
    customer_id: &str,
    address: Address,
    overridden: bool,
) -> Vec<Order> {
    let mut placed = order(id, customer_id, address, OrderStatus::PendingStock, 1);
    let mut versions = Vec::new();
    if overridden {
        placed.address_source = AddressSource::Override;
        versions.push(placed.clone());
        placed.version = 2;
    }
    versions.push(placed);
    let mut confirmed = versions.last().unwrap().clone();
    confirmed.status = OrderStatus::Confirmed;
    confirmed.version += 1;
    versions.push(confirmed);
    versions
}

/// The kind the order service publishes a version of an order with.
pub(super) fn order_kind(order: &Order, previous: Option<&Order>) -> &'static str {
    match (order.status, previous) {
        (OrderStatus::PendingStock, None) => ORDER_PLACED,
        (OrderStatus::PendingStock, Some(_)) => ORDER_ADDRESS_OVERRIDDEN,
        (OrderStatus::Confirmed, Some(p)) if p.status == OrderStatus::Confirmed => ORDER_ADDRESS_CONFIRMED,
        (OrderStatus::Confirmed, _) => ORDER_CONFIRMED,
        (OrderStatus::Rejected, _) => ORDER_REJECTED,
        (OrderStatus::Cancelled, _) => ORDER_CANCELLED,
    }
}

pub(super) fn order_events(versions: &[Order]) -> Vec<NewEvent> {
    versions
        .iter()
        .enumerate()
        .map(|(i, o)| {
            crate::contracts::order::event(order_kind(o, i.checked_sub(1).map(|p| &versions[p])), o)
        })
        .collect()
}

/// `versions` plus the next version, made by `change`.
pub(super) fn then(mut versions: Vec<Order>, change: impl FnOnce(&mut Order)) -> Vec<Order> {
    let mut next = versions.last().unwrap().clone();
    change(&mut next);
    next.version += 1;
    versions.push(next);
    versions
}
