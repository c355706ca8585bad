//! The outbox pitfall on PostgreSQL: transactions can commit out of seq order.
//!
//! Had the outbox taken seqs from a plain sequence (`nextval`), a writer could take seq 5,
//! a second writer seq 6 and commit first; the relay, running meanwhile, would see 6 but
//! not 5, publish 6 and mark everything up to 6 relayed, and 5, committed a moment later,
//! would never be published (or, read by seq alone, be published after 6). A rolled-back
//! writer would leave a gap for ever. This test catches each of these: it checks that the
//! bus holds exactly the committed seqs 1..N, once, in order. The outbox instead counts
//! seqs in the row `kit_outbox_head`, which an appending transaction keeps locked until
//! it ends, so the next writer gets its seq only after the previous one committed or
//! rolled back (and then reuses the seq): commit order is seq order.

use std::collections::HashSet;
use std::sync::Arc;

use crate::bus::{self, Bus, ConsumerSpec, Message};
use crate::envelope::{NewEvent, StreamName};
use crate::outbox::{self, Outbox};
use crate::relay::Relay;
use crate::store::{Store, StoreError};
use crate::testkit::{TALLY, TestDb, event};

const WRITERS: usize = 16;
const TRANSACTIONS: usize = 200;

/// What one writer did: the ids it committed and the ids it appended but rolled back.
#[derive(Default)]
struct Written {
    committed: Vec<String>,
    rolled_back: Vec<String>,
}

/// A writer's transactions: one or two events each; every ninth rolls back after
/// appending; every tenth holds its transaction open in `pg_sleep` after appending, to
/// widen the window in which others wait to commit.
async fn write(store: Store, outbox: Outbox, writer: usize) -> Written {
    let mut written = Written::default();
    for i in 0..TRANSACTIONS {
        let outbox = outbox.clone();
        let events: Vec<NewEvent> =
            (0..1 + i % 2).map(|n| event(&format!("w{writer}"), (i * 2 + n) as u64)).collect();
        let result = store
            .transact(move |tx| {
                let appended = outbox.append(tx, events)?;
                let ids: Vec<String> = appended.iter().map(|e| e.id.to_string()).collect();
                if i % 10 == 7 {
                    tx.execute("SELECT pg_sleep(0.002)", &[])?;
                }
                match i % 9 == 4 {
                    true => Err(Outcome::RolledBack(ids)),
                    false => Ok(ids),
                }
            })
            .await;
        match result {
            Ok(ids) => written.committed.extend(ids),
            Err(Outcome::RolledBack(ids)) => written.rolled_back.extend(ids),
            Err(Outcome::Failed(e)) => panic!("writer {writer}'s transaction {i} failed: {e}"),
        }
    }
    written
}

/// Why a writer's transaction did not commit.
enum Outcome {
    /// Rolled back on purpose, with the ids it had appended.
    RolledBack(Vec<String>),
    Failed(StoreError),
}

impl From<StoreError> for Outcome {
    fn from(e: StoreError) -> Self {
        Outcome::Failed(e)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_reach_the_bus_in_commit_order_with_no_seq_skipped_or_rolled_back() {
    let Some(db) = TestDb::postgres() else { return };
    let bus: Arc<dyn Bus> = bus::connect("embedded::memory:").await.unwrap();
    let outbox = Outbox::new(StreamName::parse("orders").unwrap());
    let relay_store = db.open(&[&outbox::MIGRATIONS, &TALLY]).await;
    // Small batches, so the relay reads the outbox many times while writers commit.
    let relay = Relay::new(relay_store.clone(), outbox.clone(), bus.clone()).batch(7);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let relaying = tokio::spawn(relay.run(async {
        let _ = stopped.await;
    }));

    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        // A store per writer is a connection per writer, so their transactions overlap.
        let store = db.open(&[&outbox::MIGRATIONS, &TALLY]).await;
        writers.push(tokio::spawn(write(store, outbox.clone(), writer)));
    }
    let (mut committed, mut rolled_back) = (HashSet::new(), HashSet::new());
    for writer in writers {
        let written = writer.await.unwrap();
        committed.extend(written.committed);
        rolled_back.extend(written.rolled_back);
    }
    let total = committed.len() as u64;
    assert!(total > 0 && !rolled_back.is_empty(), "the writers both committed and rolled back");

    let backlog =
        |store: Store, outbox: Outbox| async move { store.transact(move |tx| outbox.backlog(tx)).await };
    while backlog(relay_store.clone(), outbox.clone()).await.unwrap() > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let _ = stop.send(());
    relaying.await.unwrap();

    // A marker published after the relay drained: everything before it is what the relay
    // published, so reading up to it needs no timeout.
    let mut subscription = bus.subscribe(&ConsumerSpec::new("check", &["orders", "marker"])).await.unwrap();
    let marker = Message {
        id: "marker".into(),
        stream: "marker".into(),
        seq: 1,
        key: "m".into(),
        body: b"{}".to_vec(),
    };
    bus.publish(&[marker]).await.unwrap();
    let mut relayed: Vec<(u64, String)> = Vec::new();
    'read: loop {
        for delivery in subscription.fetch(1000).await.unwrap() {
            if delivery.message.stream == "marker" {
                break 'read;
            }
            relayed.push((delivery.message.seq, delivery.message.id));
        }
    }

    let seqs: Vec<u64> = relayed.iter().map(|(seq, _)| *seq).collect();
    let first_wrong = seqs.iter().zip(1..).position(|(seq, expected)| *seq != expected);
    assert_eq!(
        first_wrong,
        None,
        "seqs on the bus are not 1..{total} in order: {:?}",
        first_wrong.map(|i| &seqs[i..])
    );
    assert_eq!(seqs.len() as u64, total, "the bus holds a seq for every committed event");
    let ids: HashSet<String> = relayed.into_iter().map(|(_, id)| id).collect();
    assert_eq!(ids.len() as u64, total, "an event reached the bus twice");
    assert!(ids.is_disjoint(&rolled_back), "an event of a rolled-back transaction reached the bus");
    assert_eq!(ids, committed, "the bus holds exactly the committed events");
}
