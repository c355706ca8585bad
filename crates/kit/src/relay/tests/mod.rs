//! The relay on both store backends, and its commit-order guarantee under concurrent
//! writers on PostgreSQL (`commit_order`), and its lease among instances (`lease`).

mod commit_order;
mod lease;

use std::time::Duration;

use super::*;
use crate::bus::{ConsumerSpec, DeadLetterFilter};
use crate::envelope::StreamName;
use crate::link::{Faults, Link, LinkedBus};
use crate::testkit::{TALLY, TestDb, event, memory_bus, memory_store};

async fn producer_store(db: &TestDb) -> Store {
    db.open(&[&outbox::MIGRATIONS, &TALLY]).await
}

async fn backlog(store: &Store, outbox: &Outbox) -> u64 {
    let outbox = outbox.clone();
    store.transact(move |tx| outbox.backlog(tx)).await.unwrap()
}

async fn append(store: &Store, outbox: &Outbox, n: u64) {
    let outbox = outbox.clone();
    store.transact(move |tx| outbox.append(tx, (1..=n).map(|v| event("k", v)).collect())).await.unwrap();
}

async fn relays_in_seq_order_in_batches_and_marks_the_outbox(db: TestDb) {
    let bus = memory_bus().await;
    let store = producer_store(&db).await;
    let outbox = Outbox::new(StreamName::parse("orders").unwrap());
    append(&store, &outbox, 25).await;
    let relay = Relay::new(store.clone(), outbox.clone(), bus.clone()).batch(10);
    let moved: Vec<usize> = [
        relay.relay_batch().await,
        relay.relay_batch().await,
        relay.relay_batch().await,
        relay.relay_batch().await,
    ]
    .into_iter()
    .map(Result::unwrap)
    .collect();
    assert_eq!(moved, [10, 10, 5, 0]);
    assert_eq!(backlog(&store, &outbox).await, 0);
    assert_eq!(bus.stream_head("orders").await.unwrap(), 25);
    let mut sub = bus.subscribe(&ConsumerSpec::new("c", &["orders"])).await.unwrap();
    let seqs: Vec<u64> = sub.fetch(100).await.unwrap().iter().map(|d| d.message.seq).collect();
    assert_eq!(seqs, (1..=25).collect::<Vec<_>>());
}

async fn a_running_relay_is_woken_by_each_commit(db: TestDb) {
    let bus = memory_bus().await;
    let store = producer_store(&db).await;
    let outbox = Outbox::new(StreamName::parse("orders").unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(Relay::new(store.clone(), outbox.clone(), bus.clone()).run(async {
        let _ = stopped.await;
    }));
    for round in 1..=3 {
        append(&store, &outbox, 1).await;
        // No timer is involved: under a real clock this returns as soon as the relay ran.
        while bus.stream_head("orders").await.unwrap() < round {
            tokio::task::yield_now().await;
        }
    }
    let _ = stop.send(());
    running.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn writes_are_accepted_and_the_outbox_grows_while_the_bus_is_cut() {
    let bus = memory_bus().await;
    let link = Link::new("orders->bus");
    let linked: Arc<dyn Bus> = Arc::new(LinkedBus::new(bus.clone(), link.clone()));
    let store = memory_store().await;
    let outbox = Outbox::new(StreamName::parse("orders").unwrap());
    link.set(Faults { cut_out: true, ..Faults::default() });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(Relay::new(store.clone(), outbox.clone(), linked).run(async {
        let _ = stopped.await;
    }));
    for _ in 0..5 {
        append(&store, &outbox, 100).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(backlog(&store, &outbox).await, 500, "every write was accepted and waits in the outbox");
    assert_eq!(bus.stream_head("orders").await.unwrap(), 0);
    link.heal();
    while backlog(&store, &outbox).await > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(bus.stream_head("orders").await.unwrap(), 500);
    assert!(bus.dead_letters(&DeadLetterFilter::all()).await.unwrap().is_empty());
    let _ = stop.send(());
    running.await.unwrap();
}

async fn publishing_again_after_a_crash_before_marking_adds_nothing(db: TestDb) {
    let bus = memory_bus().await;
    let store = producer_store(&db).await;
    let outbox = Outbox::new(StreamName::parse("orders").unwrap());
    append(&store, &outbox, 3).await;
    // A relay that published but died before marking: the next one publishes the same ids.
    let pending = {
        let stream = "orders".to_owned();
        store.transact(move |tx| outbox::read_pending(tx, &stream, 10)).await.unwrap()
    };
    let first: Vec<Message> = pending
        .into_iter()
        .map(|p| Message { id: p.id, stream: "orders".into(), seq: p.seq, key: p.key, body: p.body })
        .collect();
    bus.publish(&first).await.unwrap();
    let relay = Relay::new(store.clone(), outbox.clone(), bus.clone());
    assert_eq!(relay.relay_batch().await.unwrap(), 3);
    let mut sub = bus.subscribe(&ConsumerSpec::new("c", &["orders"])).await.unwrap();
    assert_eq!(sub.fetch(100).await.unwrap().len(), 3, "the bus dropped the copies by event id");
}

/// An outbox from before the relayed position had a table of its own: what was relayed
/// stays relayed, the rest is published, and appending goes on from the same seq.
async fn an_outbox_migrated_to_its_own_relayed_table_keeps_its_position(db: TestDb) {
    const BEFORE: crate::store::Migrations = crate::store::Migrations {
        component: "kit",
        sqlite: &[outbox::MIGRATIONS.sqlite[0]],
        postgres: &[outbox::MIGRATIONS.postgres[0]],
    };
    let old = db.open(&[&BEFORE]).await;
    let outbox = Outbox::new(StreamName::parse("orders").unwrap());
    old.transact(|tx| {
        tx.execute(
            "INSERT INTO kit_outbox_head (stream, last_seq, relayed_seq) VALUES ('orders', 7, 5)",
            &[],
        )?;
        for seq in 6..=7u64 {
            let (id, body) = (format!("e-{seq}"), b"{}".to_vec());
            tx.execute(
                "INSERT INTO kit_outbox (stream, seq, id, key, body) VALUES ('orders', $1, $2, 'k', $3)",
                &[seq.into(), (&id).into(), (&body).into()],
            )?;
        }
        Ok::<_, StoreError>(())
    })
    .await
    .unwrap();
    drop(old);

    let store = producer_store(&db).await;
    assert_eq!(backlog(&store, &outbox).await, 2, "seqs 6 and 7 still wait for the relay");
    let bus = memory_bus().await;
    let relay = Relay::new(store.clone(), outbox.clone(), bus.clone());
    assert_eq!(relay.relay_batch().await.unwrap(), 2);
    append(&store, &outbox, 1).await;
    assert_eq!(relay.relay_batch().await.unwrap(), 1);
    let mut sub = bus.subscribe(&ConsumerSpec::new("c", &["orders"])).await.unwrap();
    let seqs: Vec<u64> = sub.fetch(100).await.unwrap().iter().map(|d| d.message.seq).collect();
    assert_eq!(seqs, [6, 7, 8], "nothing relayed before is published again, nothing is skipped");
    assert_eq!(backlog(&store, &outbox).await, 0);
}

crate::testkit::on_both_backends!(
    an_outbox_migrated_to_its_own_relayed_table_keeps_its_position,
    relays_in_seq_order_in_batches_and_marks_the_outbox,
    a_running_relay_is_woken_by_each_commit,
    publishing_again_after_a_crash_before_marking_adds_nothing,
);
