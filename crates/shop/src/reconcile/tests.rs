//! The checker on facts written by hand: each rule, and how a finding is classed.

use super::*;
use crate::contracts::customer::Address;
use crate::contracts::facts::{
    AuthorizationFact, BusStream, ConsumerPosition, DeadLetterFact, OrderCopy, OutboxPosition, PartFacts,
    ServiceFacts, UnitsOrderedFact,
};
use crate::contracts::inventory::Site;
use crate::contracts::order::{AddressSource, Order, OrderStatus};
use crate::contracts::payment::AuthorizationStatus;

fn address() -> Address {
    Address {
        line1: "1 Main St".into(),
        city: "Springfield".into(),
        postcode: "12345".into(),
        country: "US".into(),
    }
}

fn order(status: OrderStatus) -> Order {
    Order {
        id: "o-1".into(),
        customer_id: "c-ada".into(),
        status,
        lines: Vec::new(),
        total_cents: 100,
        address: address(),
        address_source: AddressSource::Replica,
        address_confirmed: false,
        payment_authorization_id: "a-1".into(),
        reason: None,
        version: 1,
    }
}

fn empty(service: &str) -> ServiceFacts {
    match service {
        "customer" => ServiceFacts::Customer { customers: Vec::new() },
        "catalog" => ServiceFacts::Catalog { products: Vec::new() },
        "order" => ServiceFacts::Order {
            orders: Vec::new(),
            customer_replicas: Vec::new(),
            product_replicas: Vec::new(),
            placing: Vec::new(),
        },
        "payment" => ServiceFacts::Payment { authorizations: Vec::new() },
        "shipping" => ServiceFacts::Shipping {
            shipments: Vec::new(),
            order_replicas: Vec::new(),
            customer_addresses: Vec::new(),
        },
        "search" => ServiceFacts::Search {
            documents: Vec::new(),
            units_ordered: Vec::new(),
            counted_from_the_start: true,
        },
        site => ServiceFacts::Inventory {
            site: if site == "inventory-dc1" { Site::Dc1 } else { Site::Dc2 },
            counters: Vec::new(),
            lines: Vec::new(),
        },
    }
}

/// A shop whose every part reported, with nothing in it.
fn nothing() -> ShopFacts {
    let parts = crate::stores::StoreLocation::parts()
        .into_iter()
        .map(|part| PartFacts {
            state: empty(&part),
            part,
            read_at_ms: 1_000,
            outbox: Vec::new(),
            consumers: Vec::new(),
        })
        .collect();
    ShopFacts { parts, ..ShopFacts::default() }
}

fn part<'a>(facts: &'a mut ShopFacts, name: &str) -> &'a mut PartFacts {
    facts.parts.iter_mut().find(|p| p.part == name).expect("every part is there")
}

/// `stream` committed and relayed up to `head`, and the bus holds it.
fn produced(facts: &mut ShopFacts, producer: &str, stream: &str, head: u64) {
    let outbox =
        OutboxPosition { stream: stream.into(), last_seq: head, relayed_seq: head, bus_head_before: None };
    part(facts, producer).outbox.push(outbox);
    facts.bus.streams.push(BusStream { stream: stream.into(), head });
}

/// `consumer` (of `owner`) applied every seq of `stream` up to `applied`.
fn applied(facts: &mut ShopFacts, owner: &str, consumer: &str, stream: &str, applied: u64) {
    part(facts, owner).consumers.push(ConsumerPosition {
        consumer: consumer.into(),
        stream: stream.into(),
        floor: applied,
        applied,
        applied_above_floor: 0,
        first_gap: None,
    });
}

/// An order confirmed and paid, which shipping knows at its version.
fn confirmed_and_paid() -> ShopFacts {
    let mut facts = nothing();
    if let ServiceFacts::Order { orders, .. } = &mut part(&mut facts, "order").state {
        orders.push(order(OrderStatus::PendingStock));
    }
    if let ServiceFacts::Payment { authorizations } = &mut part(&mut facts, "payment").state {
        let status = AuthorizationStatus::Authorized;
        authorizations.push(AuthorizationFact {
            id: "a-1".into(),
            order_id: "o-1".into(),
            status,
            created_at_ms: 900,
        });
    }
    if let ServiceFacts::Shipping { order_replicas, .. } = &mut part(&mut facts, "shipping").state {
        order_replicas.push(OrderCopy { id: "o-1".into(), status: OrderStatus::PendingStock, version: 1 });
    }
    if let ServiceFacts::Search { documents, .. } = &mut part(&mut facts, "search").state {
        documents.push(crate::contracts::facts::DocumentFact {
            kind: "order".into(),
            id: "o-1".into(),
            version: 1,
        });
    }
    produced(&mut facts, "order", "order", 1);
    produced(&mut facts, "payment", "payment", 1);
    for consumer in
        ["shipping.order-replica", "inventory-dc1.orders", "inventory-dc2.orders", "search.orders"]
    {
        let owner = consumer.split('.').next().unwrap();
        applied(&mut facts, owner, consumer, "order", 1);
    }
    applied(&mut facts, "shipping", "shipping.payments", "payment", 1);
    facts
}

fn kinds(report: &Report) -> Vec<(&str, Class)> {
    report.findings.iter().map(|f| (f.kind.as_str(), f.class)).collect()
}

#[test]
fn a_shop_whose_parts_agree_has_no_finding() {
    let report = check(&confirmed_and_paid());
    assert!(report.findings.is_empty(), "{}", report.table());
    assert!(report.is_clean());
}

#[test]
fn a_part_that_gave_no_facts_is_a_defect_so_nothing_passes_unchecked() {
    let mut facts = confirmed_and_paid();
    facts.parts.retain(|p| p.part != "payment");
    let report = check(&facts);
    assert!(kinds(&report).contains(&("part_missing", Class::Defect)), "{}", report.table());
}

/// Confirms the order at the order service (version 2, seq 2) and moves what shipping
/// has applied of the order stream to `shipping_applied`.
fn confirmed_with_shipping_at(shipping_applied: u64) -> ShopFacts {
    let mut facts = confirmed_and_paid();
    if let ServiceFacts::Order { orders, .. } = &mut part(&mut facts, "order").state {
        orders[0].status = OrderStatus::Confirmed;
        orders[0].version = 2;
    }
    if let ServiceFacts::Search { documents, .. } = &mut part(&mut facts, "search").state {
        documents[0].version = 2;
    }
    part(&mut facts, "order").outbox[0].last_seq = 2;
    part(&mut facts, "order").outbox[0].relayed_seq = 2;
    facts.bus.streams[0].head = 2;
    for p in &mut facts.parts {
        for c in p.consumers.iter_mut().filter(|c| c.stream == "order") {
            let at = if c.consumer == "shipping.order-replica" { shipping_applied } else { 2 };
            (c.floor, c.applied) = (at, at);
        }
    }
    // The site c-ada's orders go to reserved it, and the other holds its copy.
    for site in ["inventory-dc1", "inventory-dc2"] {
        if let ServiceFacts::Inventory { lines, .. } = &mut part(&mut facts, site).state {
            lines.extend(confirmed_lines());
        }
    }
    facts
}

fn confirmed_lines() -> Vec<crate::contracts::facts::LineFact> {
    vec![crate::contracts::facts::LineFact {
        order_id: "o-1".into(),
        product_id: "p-001".into(),
        site: Site::of_customer("c-ada"),
        quantity: 1,
        status: crate::contracts::inventory::ReservationStatus::Reserved,
        version: 1,
    }]
}

#[test]
fn a_paid_order_without_a_shipment_is_in_flight_while_shipping_lacks_its_event_and_a_defect_after() {
    let cases = [
        (1, Class::InFlight, "shipping has not applied seq 2"),
        (2, Class::Defect, "shipping applied everything"),
    ];
    for (shipping_applied, class, what) in cases {
        let report = check(&confirmed_with_shipping_at(shipping_applied));
        let finding = report
            .findings
            .iter()
            .find(|f| f.kind == "paid_order_without_shipment")
            .unwrap_or_else(|| panic!("{what}: {}", report.table()));
        assert_eq!(
            (finding.class, finding.keys["order"].as_str()),
            (class, "o-1"),
            "{what}: {}",
            report.table()
        );
        if let Some(why) = &finding.in_flight {
            assert_eq!((why.stream.as_str(), why.seq, why.unapplied), ("order", 2, 1), "{what}");
            assert_eq!(why.consumer.as_deref(), Some("shipping.order-replica"));
        }
    }
}

#[test]
fn a_replica_behind_is_in_flight_only_while_an_event_is_unapplied_and_a_different_one_never() {
    let report = check(&confirmed_with_shipping_at(1));
    let behind =
        report.findings.iter().find(|f| f.kind == "replica_behind").expect("shipping's copy is behind");
    assert_eq!(behind.keys["replica"], "shipping.order_replica");
    assert_eq!(behind.class, Class::InFlight);
    assert!(kinds(&report).contains(&("consumer_behind", Class::InFlight)), "{}", report.table());

    let mut facts = confirmed_with_shipping_at(1);
    if let ServiceFacts::Shipping { order_replicas, .. } = &mut part(&mut facts, "shipping").state {
        order_replicas[0] = OrderCopy { id: "o-1".into(), status: OrderStatus::Cancelled, version: 2 };
    }
    let report = check(&facts);
    let differs =
        report.findings.iter().find(|f| f.kind == "replica_differs").expect("same version, other status");
    assert_eq!(differs.class, Class::Defect, "no event makes one version mean two things");
}

#[test]
fn a_consumer_read_after_its_producer_is_in_flight_live_and_a_defect_in_files() {
    let mut facts = confirmed_and_paid();
    // Search applied seq 2, which the order service had not committed when it was read.
    for c in part(&mut facts, "search").consumers.iter_mut() {
        (c.floor, c.applied) = (2, 2);
    }
    facts.bus.streams[0].head = 2;
    if let ServiceFacts::Search { documents, .. } = &mut part(&mut facts, "search").state {
        documents[0].version = 2;
    }
    let files = check(&facts);
    assert_eq!(
        kinds(&files),
        [
            ("replica_ahead", Class::Defect),
            ("bus_ahead_of_outbox", Class::Defect),
            ("consumer_ahead", Class::Defect)
        ],
        "{}",
        files.table()
    );
    facts.live = true;
    part(&mut facts, "order").outbox[0].bus_head_before = Some(1);
    let live = check(&facts);
    assert_eq!(
        kinds(&live),
        [("replica_ahead", Class::InFlight), ("consumer_ahead", Class::InFlight)],
        "{}",
        live.table()
    );
}

#[test]
fn an_authorization_without_its_order_is_in_flight_only_while_its_placement_may_be_under_way_live() {
    let mut facts = confirmed_and_paid();
    part(&mut facts, "order").read_at_ms = 100_000;
    if let ServiceFacts::Payment { authorizations } = &mut part(&mut facts, "payment").state {
        let status = AuthorizationStatus::Authorized;
        authorizations.push(AuthorizationFact {
            id: "a-2".into(),
            order_id: "o-2".into(),
            status,
            created_at_ms: 95_000,
        });
    }
    let old = 100_000 - links::PLACING_MS - 1;
    let cases = [(false, 95_000, Class::Defect), (true, 95_000, Class::InFlight), (true, old, Class::Defect)];
    for (live, created_at_ms, class) in cases {
        facts.live = live;
        if let ServiceFacts::Payment { authorizations } = &mut part(&mut facts, "payment").state {
            authorizations[1].created_at_ms = created_at_ms;
        }
        let report = check(&facts);
        assert_eq!(
            kinds(&report),
            [("authorization_without_order", class)],
            "live {live}: {}",
            report.table()
        );
    }
}

#[test]
fn unrelayed_events_are_in_flight_and_dead_letters_and_lost_bus_events_are_defects() {
    let mut facts = confirmed_and_paid();
    part(&mut facts, "payment").outbox[0].last_seq = 3;
    facts.bus.dead_letters.push(DeadLetterFact {
        consumer: "search.orders".into(),
        stream: "order".into(),
        seq: 1,
        key: "o-1".into(),
        event_id: "e-1".into(),
    });
    facts.bus.streams[0].head = 0;
    let report = check(&facts);
    let found = kinds(&report);
    for expected in [
        ("unrelayed", Class::InFlight),
        ("consumer_behind", Class::InFlight),
        ("dead_letter", Class::Defect),
        ("bus_behind_relay", Class::Defect),
    ] {
        assert!(found.contains(&expected), "{expected:?}: {}", report.table());
    }
    let unrelayed = report.findings.iter().find(|f| f.kind == "unrelayed").unwrap();
    assert_eq!(unrelayed.in_flight.as_ref().map(|w| (w.seq, w.unapplied)), Some((2, 2)));
    assert_eq!(report.streams, 2, "two stream defects: {}", report.table());
}

#[test]
fn a_consumer_position_counts_what_is_missing_above_its_floor() {
    let position = |floor, applied, above, first_gap| ConsumerPosition {
        consumer: "c".into(),
        stream: "s".into(),
        floor,
        applied,
        applied_above_floor: above,
        first_gap,
    };
    let cases = [
        (position(5, 5, 0, None), 5, None),
        (position(5, 5, 0, None), 7, Some((2, 6))),
        // 6 and 8 applied above the floor 5, 7 not: one gap below the head, one above it.
        (position(5, 8, 2, Some(7)), 9, Some((2, 7))),
        (position(5, 8, 3, None), 8, None),
    ];
    for (position, head, expected) in cases {
        assert_eq!(position.unapplied(head), expected, "{position:?} at head {head}");
    }
}

#[test]
fn the_table_names_every_finding_with_its_keys_and_why_it_is_in_flight() {
    let report = check(&confirmed_with_shipping_at(1));
    let table = report.table();
    assert!(table.contains("paid_order_without_shipment") && table.contains("order=o-1"), "{table}");
    assert!(
        table.contains("shipping.order-replica has not applied 1 event(s) of order from seq 2"),
        "{table}"
    );
}

/// o-1 holds 6 units of p-001; search counts `counted` of them and applied the order
/// stream up to `search_applied` (of 1).
fn units_counted(counted: Option<u64>, search_applied: u64) -> Report {
    let mut facts = six_mugs_ordered();
    if let ServiceFacts::Search { units_ordered, .. } = &mut part(&mut facts, "search").state {
        let units = counted.map(|units| UnitsOrderedFact { product_id: "p-001".into(), units });
        units_ordered.extend(units);
    }
    for c in part(&mut facts, "search").consumers.iter_mut() {
        (c.floor, c.applied) = (search_applied, search_applied);
    }
    check(&facts)
}

/// A confirmed and paid o-1 whose one line is 6 units of p-001.
fn six_mugs_ordered() -> ShopFacts {
    let mut facts = confirmed_and_paid();
    if let ServiceFacts::Order { orders, .. } = &mut part(&mut facts, "order").state {
        orders[0].lines.push(crate::contracts::order::OrderLine {
            product_id: "p-001".into(),
            name: "Mug".into(),
            quantity: 6,
            unit_price_cents: 100,
        });
    }
    facts
}

fn units_finding(report: &Report) -> Option<&Finding> {
    report.findings.iter().find(|f| f.kind == "units_ordered_differ")
}

#[test]
fn search_counting_more_units_than_the_orders_hold_is_a_defect_and_fewer_in_flight_only_while_unapplied() {
    let agreeing = units_counted(Some(6), 1);
    assert!(agreeing.findings.is_empty(), "{}", agreeing.table());

    let twice = units_counted(Some(7), 1);
    let finding = units_finding(&twice).unwrap_or_else(|| panic!("{}", twice.table()));
    assert_eq!(
        (finding.class, finding.group, finding.keys["product"].as_str()),
        (Class::Defect, Group::Counter, "p-001")
    );
    assert_eq!(finding.detail, "search counts 7 units of p-001 ordered, the orders hold 6");
    assert_eq!((twice.counters, twice.defects), (1, 1), "{}", twice.table());

    let unapplied = units_counted(None, 0);
    let finding = units_finding(&unapplied).unwrap_or_else(|| panic!("{}", unapplied.table()));
    assert_eq!(finding.class, Class::InFlight, "{}", unapplied.table());
    let why = finding.in_flight.as_ref().unwrap();
    assert_eq!((why.stream.as_str(), why.consumer.as_deref(), why.seq), ("order", Some("search.orders"), 1));
    assert_eq!(unapplied.counters, 0);

    let lost = units_counted(Some(5), 1);
    assert_eq!(units_finding(&lost).map(|f| f.class), Some(Class::Defect), "{}", lost.table());
    // No unapplied placement takes units away: too many is a defect even while one is in flight.
    let behind_and_over = units_counted(Some(7), 0);
    assert_eq!(
        units_finding(&behind_and_over).map(|f| f.class),
        Some(Class::Defect),
        "{}",
        behind_and_over.table()
    );
}

#[test]
fn a_counter_that_began_after_orders_were_placed_is_not_checked() {
    let mut facts = six_mugs_ordered();
    if let ServiceFacts::Search { counted_from_the_start, .. } = &mut part(&mut facts, "search").state {
        *counted_from_the_start = false;
    }
    let upgraded = check(&facts);
    assert!(
        units_finding(&upgraded).is_none(),
        "an upgraded shop's counter never counted o-1: {}",
        upgraded.table()
    );
    let old: ServiceFacts =
        serde_json::from_value(serde_json::json!({ "service": "search", "documents": [] }))
            .expect("facts older than the counter still read");
    assert!(matches!(old, ServiceFacts::Search { counted_from_the_start: false, .. }), "{old:?}");
}
