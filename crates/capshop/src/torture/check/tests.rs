//! The checker on small hand-made histories and final states: each rule holds on a true
//! story and fails on the broken one.

use serde_json::{Value, json};
use shop::contracts::facts::{BusFacts, PartFacts, ServiceFacts, ShopFacts};

use super::*;
use crate::torture::history::{Op, Outcome};

fn op(client: &str, name: &str, key: &str, value: Value, outcome: Outcome, ids: Value, at: f64) -> Op {
    let idempotency_key = ids["key"].as_str().map(str::to_owned);
    Op {
        client: client.into(),
        op: name.into(),
        key: key.into(),
        value,
        idempotency_key,
        invoke: at,
        complete: at + 0.01,
        outcome,
        status: if outcome == Outcome::Ok { 200 } else { 503 },
        ids,
    }
}

fn address(line1: &str) -> Value {
    json!({ "line1": line1, "city": "Springfield", "postcode": "12345", "country": "US" })
}

/// A shopper `c-1` of client c0 who registered at "0 Start", then wrote `writes`.
fn history(writes: &[(&str, Outcome)], orders: &[(&str, &str, Outcome)]) -> Vec<Op> {
    let registration = json!({ "address": address("0 Start") });
    let mut ops = vec![
        op("c0", "register", "", registration, Outcome::Ok, json!({ "id": "c-1", "key": "reg-1" }), 0.0),
        op("c0", "sign-in", "c-1", Value::Null, Outcome::Ok, json!({}), 0.1),
    ];
    for (i, (line, outcome)) in writes.iter().enumerate() {
        ops.push(op("c0", "address", "c-1", address(line), *outcome, json!({}), 1.0 + i as f64));
    }
    for (i, (key, id, outcome)) in orders.iter().enumerate() {
        let ids =
            if *outcome == Outcome::Ok { json!({ "id": id, "key": key }) } else { json!({ "key": key }) };
        ops.push(op("c0", "place", "c-1", json!({}), *outcome, ids, 10.0 + i as f64));
    }
    ops
}

fn facts(final_line: &str, orders: &[&str]) -> ShopFacts {
    let customer: shop::contracts::customer::Customer = serde_json::from_value(json!({
        "id": "c-1", "name": "T", "email": "t@example.com", "address": address(final_line),
        "payment_method": { "kind": "invoice" }, "version": 3
    }))
    .unwrap();
    let orders = orders
        .iter()
        .map(|id| {
            serde_json::from_value(json!({
                "id": id, "customer_id": "c-1", "status": "confirmed", "lines": [], "total_cents": 0,
                "address": address(final_line), "address_source": "replica", "address_confirmed": false,
                "payment_authorization_id": "a-1", "reason": null, "version": 2
            }))
            .unwrap()
        })
        .collect();
    let part = |name: &str, state| PartFacts {
        part: name.into(),
        read_at_ms: 0,
        outbox: vec![],
        consumers: vec![],
        state,
    };
    ShopFacts {
        live: true,
        cut: false,
        parts: vec![
            part("customer", ServiceFacts::Customer { customers: vec![customer] }),
            part(
                "order",
                ServiceFacts::Order {
                    orders,
                    customer_replicas: vec![],
                    product_replicas: vec![],
                    placing: vec![],
                },
            ),
        ],
        bus: BusFacts::default(),
    }
}

fn violations(ops: &[Op], facts: &ShopFacts) -> Vec<(&'static str, u64)> {
    let report = shop::reconcile::check(&ShopFacts { parts: vec![], ..facts.clone() });
    let end = Final { facts, reconcile: &report, converged: Ok(()), strict: false, inventory_mode: Mode::Ap };
    check(ops, &end).into_iter().map(|r| (r.rule, r.violations)).filter(|(_, n)| *n > 0).collect()
}

#[test]
fn a_history_whose_every_acknowledged_write_is_in_the_final_state_passes() {
    let ops = history(&[("1 A", Outcome::Ok), ("2 B", Outcome::Unknown)], &[("k1", "o-1", Outcome::Ok)]);
    assert_eq!(violations(&ops, &facts("1 A", &["o-1"])), vec![], "the unknown write did not take effect");
    assert_eq!(violations(&ops, &facts("2 B", &["o-1"])), vec![], "the unknown write took effect");
}

#[test]
fn an_acknowledged_address_overwritten_by_an_older_one_is_lost() {
    let ops = history(&[("1 A", Outcome::Ok), ("2 B", Outcome::Ok)], &[]);
    assert_eq!(violations(&ops, &facts("1 A", &[])), vec![("1 no acknowledged write lost", 1)]);
    assert_eq!(violations(&ops, &facts("0 Start", &[])), vec![("1 no acknowledged write lost", 2)]);
}

#[test]
fn a_missing_acknowledged_order_is_lost_and_an_order_nobody_placed_is_unexpected() {
    let ops = history(&[], &[("k1", "o-1", Outcome::Ok), ("k2", "", Outcome::Unknown)]);
    assert_eq!(violations(&ops, &facts("0 Start", &[])), vec![("1 no acknowledged write lost", 1)]);
    assert_eq!(
        violations(&ops, &facts("0 Start", &["o-1", "o-2"])),
        vec![],
        "the unknown placement took effect"
    );
    assert_eq!(
        violations(&ops, &facts("0 Start", &["o-1", "o-2", "o-3"])),
        vec![("2 nothing unexpected", 1)],
        "two orders nobody was told of, one unknown placement"
    );
}

#[test]
fn one_idempotency_key_answered_with_two_orders_is_a_double_effect() {
    let ops = history(&[], &[("k1", "o-1", Outcome::Ok), ("k1", "o-2", Outcome::Ok)]);
    assert_eq!(violations(&ops, &facts("0 Start", &["o-1", "o-2"])), vec![("3 no double effect", 1)]);
}

#[test]
fn a_replica_version_going_backwards_for_a_client_breaks_convergence() {
    let mut ops = history(&[], &[]);
    for (at, version) in [(1.0, 3), (2.0, 2)] {
        ops.push(op(
            "c0",
            "checkout",
            "c-1",
            Value::Null,
            Outcome::Ok,
            json!({ "replica_version": version }),
            at,
        ));
    }
    assert_eq!(violations(&ops, &facts("0 Start", &[])), vec![("4 convergence", 1)]);
}

#[test]
fn rule_5_in_cp_fails_on_a_view_read_oversold_even_when_the_final_stock_covers_it() {
    use shop::inventory::audit::Audit;
    use shop::inventory::sites::Mode;

    let read = |key: &str, oversold: u64, at: f64| {
        let ids = json!({ "available": 0, "oversold": oversold });
        op("c0", "read-stock", key, Value::Null, Outcome::Ok, ids, at)
    };
    let fine = vec![read("inventory-dc1/p-001", 0, 1.0), read("inventory-dc2/p-001", 0, 2.0)];
    let judged = crate::torture::stock::rule(Mode::Cp, &Audit::default(), &fine);
    assert_eq!(judged.violations, 0, "{judged:?}");
    let mut oversold = fine.clone();
    oversold.extend([read("inventory-dc1/p-001", 2, 3.0), read("inventory-dc1/p-001", 1, 4.0)]);
    let judged = crate::torture::stock::rule(Mode::Cp, &Audit::default(), &oversold);
    assert_eq!(judged.violations, 1, "one view, judged once: {judged:?}");
    assert!(judged.examples[0].contains("inventory-dc1/p-001 showed 2 units"), "{judged:?}");
    // In ap a view shows an oversell until the arbiter has decided it: the final audit judges.
    assert_eq!(crate::torture::stock::rule(Mode::Ap, &Audit::default(), &oversold).violations, 0);
}
