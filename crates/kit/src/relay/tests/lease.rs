//! The relay lease with several relays of one stream on one database, as several instances
//! of a service run them.

use std::time::Duration;

use super::*;
use crate::relay::lease;

const SHORT: Duration = Duration::from_millis(300);

fn relay(store: &Store, outbox: &Outbox, bus: &Arc<dyn Bus>, name: &str) -> Relay {
    Relay::new(store.clone(), outbox.clone(), bus.clone()).holder(name).lease_ttl(SHORT)
}

async fn seqs_on_the_bus(bus: &Arc<dyn Bus>) -> Vec<u64> {
    let mut sub = bus.subscribe(&ConsumerSpec::new("c", &["orders"])).await.unwrap();
    sub.fetch(1000).await.unwrap().iter().map(|d| d.message.seq).collect()
}

async fn only_the_holder_relays_and_another_takes_over_when_it_dies(db: TestDb) {
    let bus = memory_bus().await;
    let (a_store, b_store) = (producer_store(&db).await, producer_store(&db).await);
    let outbox = Outbox::new(StreamName::parse("orders").unwrap());
    let (a, b) = (relay(&a_store, &outbox, &bus, "a"), relay(&b_store, &outbox, &bus, "b"));
    append(&a_store, &outbox, 3).await;
    assert_eq!(a.relay_batch().await.unwrap(), 3);
    append(&b_store, &outbox, 2).await;
    assert_eq!(b.relay_batch().await.unwrap(), 0, "b stands by while a holds the lease");
    assert!(!b.holds_lease().await.unwrap());
    drop(a); // dies without giving the lease up
    while b.relay_batch().await.unwrap() == 0 {
        tokio::time::sleep(SHORT / 5).await;
    }
    assert!(b.holds_lease().await.unwrap());
    assert_eq!(seqs_on_the_bus(&bus).await, [1, 2, 3, 4, 5], "each event once, in seq order");
    assert_eq!(backlog(&b_store, &outbox).await, 0);
}

async fn a_holder_whose_lease_was_taken_over_is_fenced_out(db: TestDb) {
    let bus = memory_bus().await;
    let (a_store, b_store) = (producer_store(&db).await, producer_store(&db).await);
    let outbox = Outbox::new(StreamName::parse("orders").unwrap());
    let (a, b) = (relay(&a_store, &outbox, &bus, "a"), relay(&b_store, &outbox, &bus, "b"));
    assert!(a.holds_lease().await.unwrap());
    let (a_holder, a_epoch) =
        a_store.transact(|tx| lease::holder(tx, "orders")).await.unwrap().expect("a holds it");
    // a pauses past its lease; b takes it over.
    while !b.holds_lease().await.unwrap() {
        tokio::time::sleep(SHORT / 5).await;
    }
    let (b_holder, b_epoch) = b_store.transact(|tx| lease::holder(tx, "orders")).await.unwrap().unwrap();
    assert!(b_epoch > a_epoch, "the epoch grows when the lease changes hands");
    assert_ne!(a_holder, b_holder);
    let fenced = a_store.transact(move |tx| lease::is_held(tx, "orders", &a_holder, a_epoch)).await.unwrap();
    assert!(!fenced, "a can no longer record a relayed position under its old epoch");
    append(&a_store, &outbox, 2).await;
    assert_eq!(a.relay_batch().await.unwrap(), 0, "a, woken, finds the lease taken and stands by");
    assert_eq!(b.relay_batch().await.unwrap(), 2);
    assert_eq!(seqs_on_the_bus(&bus).await, [1, 2]);
}

async fn a_relay_that_stops_hands_its_lease_over_at_once(db: TestDb) {
    let bus = memory_bus().await;
    let (a_store, b_store) = (producer_store(&db).await, producer_store(&db).await);
    let outbox = Outbox::new(StreamName::parse("orders").unwrap());
    // Long enough that only a handed-over lease explains the takeover.
    let a = relay(&a_store, &outbox, &bus, "a").lease_ttl(Duration::from_secs(600));
    let b = relay(&b_store, &outbox, &bus, "b");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    append(&a_store, &outbox, 1).await;
    let running = tokio::spawn(a.run(async {
        let _ = stopped.await;
    }));
    while bus.stream_head("orders").await.unwrap() < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!b.holds_lease().await.unwrap());
    let _ = stop.send(());
    running.await.unwrap();
    assert!(b.holds_lease().await.unwrap(), "b takes the lease a gave up");
}

crate::testkit::on_both_backends!(
    only_the_holder_relays_and_another_takes_over_when_it_dies,
    a_holder_whose_lease_was_taken_over_is_fenced_out,
    a_relay_that_stops_hands_its_lease_over_at_once,
);
