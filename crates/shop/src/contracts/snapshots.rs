//! Golden JSON of every published event kind, built from fixed examples: a change to a
//! contract shows up as a diff of `snapshots/*.snap` to review (and, for a payload that
//! consumers must still read in its old shape, a new schema version and an upcaster).

use kit::envelope::NewEvent;
use serde_json::{Value, json};

use super::customer::{self, Address, Customer, PaymentMethod};
use super::inventory::{self, Reservation, ReservationStatus, Site, StockCounters, StockLine};
use super::order::{self, AddressSource, Order, OrderLine, OrderStatus};
use super::payment::{self, Authorization, AuthorizationStatus};
use super::shipping::{self, Shipment, ShipmentStatus};
use super::{catalog, catalog::Product};

/// What a consumer relies on of an event: everything but its id, position and time.
fn published(event: NewEvent) -> Value {
    json!({
        "kind": event.kind,
        "key": event.key,
        "version": event.version,
        "schema": event.schema,
        "payload": event.payload,
    })
}

fn address() -> Address {
    Address {
        line1: "12 St James's Square".into(),
        city: "London".into(),
        postcode: "SW1Y 4JH".into(),
        country: "GB".into(),
    }
}

fn customer_example() -> Customer {
    Customer {
        id: "c-42".into(),
        name: "Ada Lovelace".into(),
        email: "ada@example.com".into(),
        address: address(),
        payment_method: PaymentMethod::Card { last4: "4242".into() },
        version: 3,
    }
}

fn product_example() -> Product {
    Product {
        id: "p-001".into(),
        name: "Espresso cup".into(),
        description: "Porcelain, 80 ml.".into(),
        price_cents: 1250,
        version: 2,
    }
}

fn order_example(status: OrderStatus, reason: Option<&str>) -> Order {
    Order {
        id: "o-7".into(),
        customer_id: "c-42".into(),
        status,
        lines: vec![OrderLine {
            product_id: "p-001".into(),
            name: "Espresso cup".into(),
            quantity: 2,
            unit_price_cents: 1250,
        }],
        total_cents: 2500,
        address: address(),
        address_source: AddressSource::Replica,
        address_confirmed: false,
        payment_authorization_id: "a-7".into(),
        reason: reason.map(Into::into),
        version: 4,
    }
}

fn reservation_example(status: ReservationStatus, reason: Option<&str>, compensated: bool) -> Reservation {
    Reservation {
        order_id: "o-7".into(),
        lines: vec![StockLine { product_id: "p-001".into(), quantity: 2 }],
        reason: reason.map(Into::into),
        site: Some(Site::Dc2),
        status: Some(status),
        placed_at_ms: 1_764_547_200_000,
        compensated,
    }
}

fn authorization_example(status: AuthorizationStatus, reason: Option<&str>) -> Authorization {
    Authorization {
        authorization_id: "a-7".into(),
        order_id: "o-7".into(),
        customer_id: "c-42".into(),
        amount_cents: 2500,
        status,
        reason: reason.map(Into::into),
    }
}

fn shipment_example(status: ShipmentStatus, reason: Option<&str>) -> Shipment {
    Shipment {
        order_id: "o-7".into(),
        customer_id: "c-42".into(),
        status,
        address: address(),
        reason: reason.map(Into::into),
        version: 2,
    }
}

#[test]
fn customer_events_keep_their_published_shape() {
    for kind in customer::KINDS {
        insta::assert_json_snapshot!(kind, published(customer::event(kind, &customer_example())));
    }
}

#[test]
fn catalog_events_keep_their_published_shape() {
    for kind in catalog::KINDS {
        insta::assert_json_snapshot!(kind, published(catalog::event(kind, &product_example())));
    }
}

#[test]
fn order_events_keep_their_published_shape() {
    let examples = [
        (order::ORDER_PLACED, order_example(OrderStatus::PendingStock, None)),
        (
            order::ORDER_ADDRESS_OVERRIDDEN,
            Order {
                address_source: AddressSource::Override,
                ..order_example(OrderStatus::PendingStock, None)
            },
        ),
        (order::ORDER_CONFIRMED, order_example(OrderStatus::Confirmed, None)),
        (order::ORDER_REJECTED, order_example(OrderStatus::Rejected, Some("p-001 is out of stock"))),
        (order::ORDER_CANCELLED, order_example(OrderStatus::Cancelled, Some("cancelled by the customer"))),
        (
            order::ORDER_ADDRESS_CONFIRMED,
            Order {
                address_source: AddressSource::Override,
                address_confirmed: true,
                ..order_example(OrderStatus::Confirmed, None)
            },
        ),
    ];
    assert_eq!(examples.each_ref().map(|(kind, _)| *kind), order::KINDS, "one example per published kind");
    for (kind, example) in examples {
        insta::assert_json_snapshot!(kind, published(order::event(kind, &example)));
    }
}

#[test]
fn inventory_events_keep_their_published_shape() {
    let answers = [
        (inventory::STOCK_RESERVED, reservation_example(ReservationStatus::Reserved, None, false)),
        (
            inventory::STOCK_REJECTED,
            reservation_example(ReservationStatus::Released, Some("p-001 was oversold"), true),
        ),
        (inventory::STOCK_RELEASED, reservation_example(ReservationStatus::Released, None, false)),
    ];
    assert_eq!(answers.each_ref().map(|(kind, _)| *kind), inventory::RESERVATION_KINDS);
    for (kind, example) in answers {
        insta::assert_json_snapshot!(kind, published(inventory::reservation_event(kind, &example, 3)));
    }
    let counters =
        StockCounters { site: Site::Dc1, product_id: "p-001".into(), added: 40, removed: 7, version: 9 };
    insta::assert_json_snapshot!(inventory::STOCK_ADJUSTED, published(inventory::counters_event(&counters)));
}

#[test]
fn payment_events_keep_their_published_shape() {
    let examples = [
        authorization_example(AuthorizationStatus::Authorized, None),
        authorization_example(AuthorizationStatus::Declined, Some("invoice payments are limited to 2000.00")),
        authorization_example(AuthorizationStatus::Voided, Some("the placement of its order was abandoned")),
    ];
    for (kind, example) in payment::KINDS.into_iter().zip(examples) {
        let event = payment::event(&example);
        assert_eq!(event.kind, kind, "the status decides the kind");
        insta::assert_json_snapshot!(kind, published(event));
    }
}

#[test]
fn shipping_events_keep_their_published_shape() {
    let examples = [
        shipment_example(ShipmentStatus::Shipped, None),
        shipment_example(ShipmentStatus::Held, Some("the order's address differs from the customer's")),
    ];
    for (kind, example) in shipping::KINDS.into_iter().zip(examples) {
        let event = shipping::event(&example);
        assert_eq!(event.kind, kind, "the status decides the kind");
        insta::assert_json_snapshot!(kind, published(event));
    }
}

#[test]
fn a_schema_1_reservation_reads_as_one_that_reserved_nothing_and_was_no_compensation() {
    let v1 = json!({ "order_id": "o-7", "lines": [{ "product_id": "p-001", "quantity": 2 }], "reason": "sold out" });
    let v2: Reservation = serde_json::from_value(inventory::reservation_v1_to_v2(v1).unwrap()).unwrap();
    assert_eq!(
        v2,
        Reservation::unreserved(
            "o-7",
            vec![StockLine { product_id: "p-001".into(), quantity: 2 }],
            Some("sold out".into())
        )
    );
}

#[test]
fn a_schema_1_reservation_that_already_has_the_new_fields_keeps_them() {
    let full = serde_json::to_value(reservation_example(ReservationStatus::Reserved, None, true)).unwrap();
    assert_eq!(inventory::reservation_v1_to_v2(full.clone()).unwrap(), full);
}
