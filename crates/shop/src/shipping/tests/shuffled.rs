//! Shuffled and duplicated deliveries (DESIGN §2, §6): the handlers are called directly,
//! each delivery order in one transaction. Every delivery order ends in the shipment of
//! in-order delivery whenever the final facts decide it, and at no step does anything ship
//! to an address that disagrees with the customer's current one as shipping knows it.

use kit::consumer::Handler;
use kit::envelope::{Envelope, NewEvent, StreamName};
use kit::outbox::Outbox;
use kit::replica::VersionGate;
use kit::store::{Store, StoreError, Tx};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::fixtures::{
    authorization, customer, leeds, london, order, order_events, placed_and_confirmed, then,
};
use crate::contracts::customer::Address;
use crate::contracts::customer::{ADDRESS_CHANGED, REGISTERED};
use crate::contracts::order::{Order, OrderStatus};
use crate::contracts::payment::AuthorizationStatus;
use crate::shipping::events::apply::{CustomerReplica, OrderReplica, Payments};
use crate::shipping::events::{SHIPMENT_CREATED, ShipmentStatus};
use crate::shipping::model::{Payment, Shipment};
use crate::shipping::store;

/// The keys of one run, fresh for every delivery order so runs share one store.
struct Keys {
    customer: String,
    order: String,
    other_order: String,
}

impl Keys {
    fn run(n: usize) -> Self {
        Self { customer: format!("c-{n}"), order: format!("o-{n}-a"), other_order: format!("o-{n}-b") }
    }

    fn orders(&self) -> [&str; 2] {
        [&self.order, &self.other_order]
    }
}

/// A scenario: its events in the order their producers published them.
type Scenario = fn(&Keys) -> Vec<(&'static str, NewEvent)>;

fn manchester() -> Address {
    Address::parse("1 Piccadilly", "Manchester", "M1 1AA", "GB").unwrap()
}

fn customer_events(k: &Keys, addresses: &[Address]) -> Vec<(&'static str, NewEvent)> {
    addresses
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let kind = if i == 0 { REGISTERED } else { ADDRESS_CHANGED };
            (
                "customer",
                crate::contracts::customer::event(kind, &customer(&k.customer, a.clone(), i as u64 + 1)),
            )
        })
        .collect()
}

fn orders(versions: &[Order]) -> Vec<(&'static str, NewEvent)> {
    order_events(versions).into_iter().map(|e| ("order", e)).collect()
}

fn paid(order_id: &str, k: &Keys) -> (&'static str, NewEvent) {
    (
        "payment",
        crate::contracts::payment::event(&authorization(
            order_id,
            &k.customer,
            AuthorizationStatus::Authorized,
        )),
    )
}

fn moves_to_the_orders_address(k: &Keys) -> Vec<(&'static str, NewEvent)> {
    let mut events = customer_events(k, &[london()]);
    events.extend(orders(&placed_and_confirmed(&k.order, &k.customer, leeds(), true)));
    events.push(paid(&k.order, k));
    events.extend(customer_events(k, &[london(), leeds()]).into_iter().skip(1));
    events
}

fn confirms_the_override(k: &Keys) -> Vec<(&'static str, NewEvent)> {
    let mut events = customer_events(k, &[london()]);
    events.push(paid(&k.order, k));
    let versions = placed_and_confirmed(&k.order, &k.customer, leeds(), true);
    events.extend(orders(&then(versions, |o| o.address_confirmed = true)));
    events
}

fn never_agrees(k: &Keys) -> Vec<(&'static str, NewEvent)> {
    let mut events = customer_events(k, &[london()]);
    events.extend(orders(&placed_and_confirmed(&k.order, &k.customer, leeds(), true)));
    events.push(paid(&k.order, k));
    events.extend(customer_events(k, &[london(), manchester()]).into_iter().skip(1));
    events
}

fn never_paid(k: &Keys) -> Vec<(&'static str, NewEvent)> {
    let mut events = customer_events(k, &[london()]);
    events.extend(orders(&placed_and_confirmed(&k.order, &k.customer, london(), false)));
    events
}

fn rejected(k: &Keys) -> Vec<(&'static str, NewEvent)> {
    let mut events = customer_events(k, &[london()]);
    events.push(paid(&k.order, k));
    let placed = vec![order(&k.order, &k.customer, london(), OrderStatus::PendingStock, 1)];
    events.extend(orders(&then(placed, |o| o.status = OrderStatus::Rejected)));
    events
}

fn cancelled_while_held(k: &Keys) -> Vec<(&'static str, NewEvent)> {
    let mut events = customer_events(k, &[london()]);
    events.push(paid(&k.order, k));
    let versions = placed_and_confirmed(&k.order, &k.customer, leeds(), true);
    events.extend(orders(&then(versions, |o| o.status = OrderStatus::Cancelled)));
    events
}

/// Two orders of one customer who moves to where both ship.
fn two_orders_one_move(k: &Keys) -> Vec<(&'static str, NewEvent)> {
    let mut events = customer_events(k, &[london()]);
    events.extend(orders(&placed_and_confirmed(&k.order, &k.customer, leeds(), true)));
    events.push(paid(&k.order, k));
    events.extend(orders(&placed_and_confirmed(&k.other_order, &k.customer, leeds(), true)));
    events.push(paid(&k.other_order, k));
    events.extend(customer_events(k, &[london(), manchester(), leeds()]).into_iter().skip(1));
    events
}

/// The customer moves away after the order agreed: whether it shipped depends on which
/// came first, so only the safety of each step is checked.
fn moves_away(k: &Keys) -> Vec<(&'static str, NewEvent)> {
    let mut events = customer_events(k, &[london()]);
    events.extend(orders(&placed_and_confirmed(&k.order, &k.customer, london(), false)));
    events.push(paid(&k.order, k));
    events.extend(customer_events(k, &[london(), leeds()]).into_iter().skip(1));
    events
}

/// What a delivery order ends in, per order: a shipment that may still ship, or none.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// No shipment, or one closed because its order was rejected or cancelled.
    WillNotShip,
    Held {
        address: Address,
        reason: String,
    },
    Shipped {
        address: Address,
    },
}

struct Bench {
    store: Store,
    orders: OrderReplica,
    customers: CustomerReplica,
    payments: Payments,
}

async fn bench() -> Bench {
    let store = Store::open(
        "sqlite::memory:",
        &[&kit::outbox::MIGRATIONS, crate::service::ServiceName::Shipping.migrations()],
    )
    .await
    .unwrap();
    let (gate, outbox) = (VersionGate::new(), Outbox::new(StreamName::parse("shipping").unwrap()));
    Bench {
        store,
        orders: OrderReplica { gate: gate.clone(), outbox: outbox.clone() },
        customers: CustomerReplica { gate, outbox: outbox.clone() },
        payments: Payments { outbox },
    }
}

fn envelope((stream, event): &(&'static str, NewEvent), seq: u64) -> Envelope {
    crate::service::testing::envelope(stream, event, seq)
}

impl Bench {
    fn handler(&self, stream: &str) -> &dyn Handler {
        match stream {
            "order" => &self.orders,
            "customer" => &self.customers,
            _ => &self.payments,
        }
    }

    /// Delivers `events` in the order of `positions` (an index may repeat: a duplicate,
    /// the same envelope again); returns each order's outcome.
    async fn deliver(
        self: &std::sync::Arc<Self>,
        keys: Keys,
        events: Vec<Envelope>,
        positions: Vec<usize>,
    ) -> [Outcome; 2] {
        let bench = self.clone();
        self.store
            .transact(move |tx| {
                let mut shipped: [Option<Shipment>; 2] = [None, None];
                for i in positions {
                    let event = &events[i];
                    bench
                        .handler(event.stream.as_str())
                        .handle(tx, event)
                        .expect("the handler applies the event");
                    for (order_id, shipped) in keys.orders().into_iter().zip(&mut shipped) {
                        check_step(tx, order_id, shipped, event)?;
                    }
                }
                let mut outcomes = [Outcome::WillNotShip, Outcome::WillNotShip];
                for (order_id, outcome) in keys.orders().into_iter().zip(&mut outcomes) {
                    check_published(tx, order_id)?;
                    *outcome = outcome_of(tx, order_id)?;
                }
                Ok::<_, StoreError>(outcomes)
            })
            .await
            .unwrap()
    }
}

/// Checks that a shipment ships only on agreeing facts, and stays shipped as it shipped.
fn check_step(
    tx: &mut Tx<'_>,
    order_id: &str,
    shipped: &mut Option<Shipment>,
    after: &Envelope,
) -> Result<(), StoreError> {
    let Some(now) = store::stored(tx, order_id)?.map(|s| s.shipment) else { return Ok(()) };
    if let Some(before) = shipped {
        assert_eq!(&now, before, "a shipped shipment is final (after {} v{})", after.kind, after.version);
        return Ok(());
    }
    if now.status == ShipmentStatus::Shipped {
        let order = store::order(tx, order_id)?.expect("a shipment has its order");
        let current = store::customer_address(tx, &order.customer_id)?;
        assert!(
            order.address_confirmed || current.as_ref() == Some(&now.address),
            "shipped to {:?} while the customer's current address is {current:?} (after {} v{})",
            now.address,
            after.kind,
            after.version
        );
        assert_eq!(order.status, OrderStatus::Confirmed);
        assert_eq!(store::payment(tx, order_id)?, Payment::Authorized);
        *shipped = Some(now);
    }
    Ok(())
}

/// Checks the events published for one order: versions 1.., each a change, at most one
/// ShipmentCreated and nothing after it.
fn check_published(tx: &mut Tx<'_>, order_id: &str) -> Result<(), StoreError> {
    let rows = tx.query("SELECT body FROM kit_outbox WHERE key = $1 ORDER BY seq", &[order_id.into()])?;
    let mut previous: Option<Shipment> = None;
    for mut row in rows {
        let envelope: Envelope = serde_json::from_slice(&row.take::<Vec<u8>>(0)?).unwrap();
        let shipment: Shipment = envelope.payload_as().unwrap();
        assert_eq!(shipment.version, previous.as_ref().map_or(0, |p| p.version) + 1);
        if let Some(p) = &previous {
            assert_eq!(p.status, ShipmentStatus::Held, "nothing follows ShipmentCreated");
            assert!(p.reason != shipment.reason || p.address != shipment.address, "each event is a change");
        }
        assert_eq!(envelope.kind == SHIPMENT_CREATED, shipment.status == ShipmentStatus::Shipped);
        previous = Some(shipment);
    }
    Ok(())
}

fn outcome_of(tx: &mut Tx<'_>, order_id: &str) -> Result<Outcome, StoreError> {
    Ok(match store::stored(tx, order_id)? {
        None => Outcome::WillNotShip,
        Some(s) if s.closed => Outcome::WillNotShip,
        Some(s) if s.shipment.status == ShipmentStatus::Shipped => {
            Outcome::Shipped { address: s.shipment.address }
        }
        Some(s) => {
            Outcome::Held { address: s.shipment.address, reason: s.shipment.reason.unwrap_or_default() }
        }
    })
}

/// Every ordering of `0..n`.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut all = Vec::new();
    for rest in permutations(n - 1) {
        for at in 0..=rest.len() {
            let mut p = rest.clone();
            p.insert(at, n - 1);
            all.push(p);
        }
    }
    all
}

/// Runs `scenario` in order, then in every order of its events with one of them
/// delivered twice; returns the in-order outcome and every other outcome seen.
async fn every_order(scenario: Scenario) -> ([Outcome; 2], Vec<[Outcome; 2]>) {
    let bench = std::sync::Arc::new(bench().await);
    let run = |n: usize| {
        let keys = Keys::run(n);
        let events: Vec<Envelope> =
            scenario(&keys).iter().zip(1..).map(|(e, seq)| envelope(e, seq)).collect();
        (keys, events)
    };
    let (keys, events) = run(0);
    let in_order = bench.deliver(keys, events.clone(), (0..events.len()).collect()).await;
    let mut seen = Vec::new();
    for (n, mut positions) in permutations(events.len()).into_iter().enumerate() {
        let (keys, events) = run(n + 1);
        let twice = positions[n % positions.len()];
        positions.insert((n * 7) % (positions.len() + 1), twice);
        seen.push(bench.deliver(keys, events, positions).await);
    }
    (in_order, seen)
}

fn shipped(address: Address) -> Outcome {
    Outcome::Shipped { address }
}

#[tokio::test]
async fn every_delivery_order_of_a_decided_scenario_ends_as_in_order_delivery() {
    let held = |reason: &str| Outcome::Held { address: leeds(), reason: reason.into() };
    let cases: [(&str, Scenario, Outcome); 6] = [
        ("moves to the order's address", moves_to_the_orders_address, shipped(leeds())),
        ("confirms the override", confirms_the_override, shipped(leeds())),
        (
            "never agrees",
            never_agrees,
            held("the order's address differs from the customer's current address (Leeds vs Manchester)"),
        ),
        ("never paid", never_paid, Outcome::Held { address: london(), reason: "waiting for payment".into() }),
        ("rejected", rejected, Outcome::WillNotShip),
        ("cancelled while held", cancelled_while_held, Outcome::WillNotShip),
    ];
    for (name, scenario, expected) in cases {
        let (in_order, seen) = every_order(scenario).await;
        assert_eq!(in_order[0], expected, "{name}: in order");
        assert!(seen.len() >= 6, "{name}: {} delivery orders", seen.len());
        for outcome in &seen {
            assert_eq!(outcome, &in_order, "{name}: shuffled and duplicated");
        }
    }
}

#[tokio::test]
async fn a_customer_moving_away_never_gets_a_shipment_to_the_old_address_once_shipping_knows() {
    let (in_order, seen) = every_order(moves_away).await;
    assert_eq!(in_order[0], shipped(london()), "it agreed when the order was confirmed and paid");
    let moved = Outcome::Held {
        address: london(),
        reason: "the order's address differs from the customer's current address (London vs Leeds)".into(),
    };
    for outcome in &seen {
        assert!(outcome[0] == shipped(london()) || outcome[0] == moved, "{outcome:?}");
    }
    assert!(seen.iter().any(|o| o[0] == moved), "some delivery orders learn of the move first");
}

#[tokio::test]
async fn random_deliveries_of_two_orders_with_duplicates_end_as_in_order_delivery() {
    let bench = std::sync::Arc::new(bench().await);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut expected = None;
    for n in 0..400 {
        let keys = Keys::run(n);
        let events: Vec<Envelope> =
            two_orders_one_move(&keys).iter().zip(1..).map(|(e, seq)| envelope(e, seq)).collect();
        let mut positions: Vec<usize> = (0..events.len()).collect();
        if n > 0 {
            positions.shuffle(&mut rng);
            for _ in 0..rng.random_range(0..4) {
                let twice = positions[rng.random_range(0..positions.len())];
                positions.insert(rng.random_range(0..=positions.len()), twice);
            }
        }
        let outcome = bench.deliver(keys, events, positions).await;
        let expected = expected.get_or_insert_with(|| outcome.clone());
        assert_eq!(&outcome, expected, "run {n}");
    }
    assert_eq!(expected, Some([shipped(leeds()), shipped(leeds())]));
}
