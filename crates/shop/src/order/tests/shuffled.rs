//! Shuffled and duplicated deliveries to the order service's three consumers (DESIGN §2,
//! §6): the handlers are called directly with a history of customer and product changes
//! and inventory's answers (one per order, as a per-key consumer sees them across keys), delivered in a random order with some events twice, in
//! batches; the replicas, the orders and what the order service published end as after
//! in-order delivery.

use kit::consumer::Handler;
use kit::envelope::{Envelope, StreamName};
use kit::outbox::Outbox;
use kit::replica::VersionGate;
use kit::store::{Store, StoreError};
use proptest::prelude::*;

use super::super::events::apply::{CustomerReplica, ProductReplica, StockAnswers};
use super::super::events::{AddressSource, OrderLine, OrderStatus};
use super::super::model::Order;
use super::super::store;
use crate::contracts::catalog::{PRODUCT_ADDED, PRODUCT_PRICE_CHANGED, Product};
use crate::contracts::customer::{ADDRESS_CHANGED, REGISTERED};
use crate::contracts::customer::{Address, Customer, PaymentMethod};
use crate::contracts::inventory::{
    Reservation, STOCK_REJECTED, STOCK_RESERVED, StockLine, reservation_event,
};
use crate::service::testing::{envelope, scrambled};

const CITIES: [&str; 3] = ["Leeds", "London", "York"];
const ORDERS: usize = 3;

fn customer(n: usize, city: &str, version: u64) -> Customer {
    Customer {
        id: format!("c-{n}"),
        name: "Ada Lovelace".into(),
        email: format!("c{n}@example.com"),
        address: Address::parse("1 High St", city, "AB1 2CD", "GB").unwrap(),
        payment_method: PaymentMethod::Card { last4: "4242".into() },
        version,
    }
}

/// An order of `c-0` waiting for stock, as the order service stored it when placed.
fn pending(n: usize) -> Order {
    Order {
        id: format!("o-{n}"),
        customer_id: "c-0".into(),
        status: OrderStatus::PendingStock,
        lines: vec![OrderLine {
            product_id: "p-001".into(),
            name: "Mug".into(),
            quantity: 1,
            unit_price_cents: 500,
        }],
        total_cents: 500,
        address: Address::parse("1 High St", "Leeds", "AB1 2CD", "GB").unwrap(),
        address_source: AddressSource::Replica,
        address_confirmed: false,
        payment_authorization_id: format!("a-{n}"),
        reason: None,
        version: 1,
    }
}

/// One change of the history.
#[derive(Debug, Clone)]
enum Change {
    Customer {
        n: usize,
        city: usize,
    },
    Product {
        n: usize,
        price: u64,
    },
    /// Inventory's one answer to order `n`.
    Answer {
        n: usize,
        reserved: bool,
    },
}

/// A history: per customer and product, versions 1..=k in publish order; at most one
/// answer per order, as inventory answers each order once.
fn history() -> impl Strategy<Value = Vec<Envelope>> {
    let change = prop_oneof![
        (0..2usize, 0..CITIES.len()).prop_map(|(n, city)| Change::Customer { n, city }),
        (0..2usize, 100..900u64).prop_map(|(n, price)| Change::Product { n, price }),
        (0..ORDERS, any::<bool>()).prop_map(|(n, reserved)| Change::Answer { n, reserved }),
    ];
    prop::collection::vec(change, 1..30).prop_map(|changes| {
        let (mut customers, mut products, mut answered) = ([0u64; 2], [0u64; 2], [false; ORDERS]);
        let mut events = Vec::new();
        for change in changes {
            let seq = events.len() as u64 + 1;
            match change {
                Change::Customer { n, city } => {
                    customers[n] += 1;
                    let kind = if customers[n] == 1 { REGISTERED } else { ADDRESS_CHANGED };
                    let c = customer(n, CITIES[city], customers[n]);
                    events.push(envelope("customer", &crate::contracts::customer::event(kind, &c), seq));
                }
                Change::Product { n, price } => {
                    products[n] += 1;
                    let kind = if products[n] == 1 { PRODUCT_ADDED } else { PRODUCT_PRICE_CHANGED };
                    let p = Product {
                        id: format!("p-00{n}"),
                        name: format!("Mug {n}"),
                        description: "a mug".into(),
                        price_cents: price,
                        version: products[n],
                    };
                    events.push(envelope("catalog", &crate::contracts::catalog::event(kind, &p), seq));
                }
                Change::Answer { n, reserved } if !answered[n] => {
                    answered[n] = true;
                    let kind = if reserved { STOCK_RESERVED } else { STOCK_REJECTED };
                    let lines = vec![StockLine { product_id: "p-001".into(), quantity: 1 }];
                    let reason = (!reserved).then(|| "p-001: 0 left".to_owned());
                    let reservation = Reservation::unreserved(&format!("o-{n}"), lines, reason);
                    events.push(envelope("inventory", &reservation_event(kind, &reservation, 1), seq));
                }
                Change::Answer { .. } => {}
            }
        }
        events
    })
}

/// An order service's store with its orders placed and waiting for stock.
async fn service_store() -> Store {
    let store = Store::open(
        "sqlite::memory:",
        &[&kit::outbox::MIGRATIONS, crate::service::ServiceName::Order.migrations()],
    )
    .await
    .unwrap();
    store
        .transact(|tx| {
            for n in 0..ORDERS {
                let placed = pending(n);
                tx.execute(
                    "INSERT INTO orders (id, customer_id, status, version, created_at_ms, body) VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        placed.id.as_str().into(),
                        placed.customer_id.as_str().into(),
                        placed.status.as_str().into(),
                        1u64.into(),
                        0u64.into(),
                        serde_json::to_string(&placed).unwrap().as_str().into(),
                    ],
                )?;
            }
            Ok::<_, StoreError>(())
        })
        .await
        .unwrap();
    store
}

/// Delivers each batch in one transaction, as the consumer runtime does.
async fn deliver(store: &Store, batches: Vec<Vec<Envelope>>) {
    let gate = VersionGate::new();
    let outbox = Outbox::new(StreamName::parse("order").unwrap());
    for batch in batches {
        let customers = CustomerReplica { gate: gate.clone() };
        let products = ProductReplica { gate: gate.clone() };
        let answers = StockAnswers { outbox: outbox.clone() };
        store
            .transact(move |tx| {
                for event in &batch {
                    let handler: &dyn Handler = match event.stream.as_str() {
                        "customer" => &customers,
                        "catalog" => &products,
                        _ => &answers,
                    };
                    handler.handle(tx, event).expect("the order service applies the event");
                }
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap();
    }
}

/// What the consumers leave: each replicated customer's address and version, each
/// replicated product, each order, and the (key, kind, version) of every published event.
type State = (Vec<(String, u64)>, Vec<(String, u64, u64)>, Vec<Order>, Vec<(String, String, u64)>);

async fn state(store: &Store) -> State {
    store
        .transact(|tx| {
            let mut customers = Vec::new();
            for n in 0..2 {
                if let Some(r) = store::replicated_customer(tx, &format!("c-{n}"))? {
                    customers.push((r.customer.address.city, r.customer.version));
                }
            }
            let mut products = Vec::new();
            for row in tx.query("SELECT id, price_cents, version FROM product_replica ORDER BY id", &[])? {
                let mut row = row;
                products.push((row.take(0)?, row.get(1)?, row.get(2)?));
            }
            let orders = store::orders_of(tx, "c-0", None, u32::MAX)?;
            let mut published = Vec::new();
            for mut row in tx.query("SELECT body FROM kit_outbox ORDER BY seq", &[])? {
                let event: Envelope = serde_json::from_slice(&row.take::<Vec<u8>>(0)?).unwrap();
                published.push((event.key, event.kind, event.version));
            }
            published.sort();
            Ok::<_, StoreError>((customers, products, orders, published))
        })
        .await
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn shuffled_and_duplicated_delivery_ends_as_in_order_delivery((events, batches) in scrambled(history())) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (in_order, shuffled) = (service_store().await, service_store().await);
            deliver(&in_order, vec![events]).await;
            deliver(&shuffled, batches).await;
            let expected = state(&in_order).await;
            let answered = expected.2.iter().filter(|o| o.status != OrderStatus::PendingStock).count();
            assert_eq!(expected.3.len(), answered, "one OrderConfirmed or OrderRejected per answered order");
            assert_eq!(state(&shuffled).await, expected);
        });
    }
}
