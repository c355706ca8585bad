use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::consumer::{Handler, HandlerError};
use crate::envelope::{Envelope, EventId, StreamName};
use crate::outbox;
use crate::store::Migrations;
use crate::testkit::TestDb;

const PROFILES: Migrations = Migrations {
    component: "profiles",
    sqlite: &["CREATE TABLE profile (key TEXT PRIMARY KEY, city TEXT NOT NULL, version INTEGER NOT NULL)"],
    postgres: &["CREATE TABLE profile (key TEXT PRIMARY KEY, city TEXT NOT NULL, version BIGINT NOT NULL)"],
};

async fn replica_store() -> Store {
    Store::open("sqlite::memory:", &[&outbox::MIGRATIONS, &PROFILES]).await.unwrap()
}

/// A state-carrying replica: each event carries the whole profile at its version.
struct ProfileReplica {
    gate: VersionGate,
}

impl Handler for ProfileReplica {
    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        if self.gate.admit(tx, "profile", &event.key, event.version)? {
            let city = event.payload["city"].as_str().ok_or_else(|| HandlerError::permanent("no city"))?;
            tx.execute(
                "INSERT INTO profile (key, city, version) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO UPDATE SET city = excluded.city, version = excluded.version",
                &[event.key.as_str().into(), city.into(), event.version.into()],
            )?;
        }
        Ok(())
    }
}

fn profile_event(seq: u64, key: &str, version: u64, city: &str) -> Envelope {
    Envelope {
        id: EventId::new(),
        stream: StreamName::parse("customer").unwrap(),
        seq,
        kind: "ProfileChanged".into(),
        key: key.into(),
        version,
        occurred_at: time::OffsetDateTime::now_utc(),
        correlation_id: uuid::Uuid::now_v7(),
        causation_id: None,
        schema: 1,
        payload: json!({ "city": city }),
    }
}

async fn profiles(store: &Store) -> BTreeMap<String, (String, u64)> {
    store
        .transact(|tx| {
            tx.query("SELECT key, city, version FROM profile", &[])?
                .into_iter()
                .map(|mut r| Ok((r.take(0)?, (r.take(1)?, r.get(2)?))))
                .collect::<Result<BTreeMap<_, _>, StoreError>>()
        })
        .await
        .unwrap()
}

/// Delivers `batches` of events to the replica the way the consumer runtime does.
async fn deliver(store: &Store, gate: &VersionGate, batches: Vec<Vec<Envelope>>) {
    for batch in batches {
        let handler = ProfileReplica { gate: gate.clone() };
        store
            .transact(move |tx| {
                let decoded = batch.into_iter().map(Ok).collect();
                crate::consumer::apply(tx, "profiles", &handler, decoded, 0)
            })
            .await
            .unwrap();
    }
}

async fn the_gate_admits_only_newer_versions(db: TestDb) {
    let store = db.open(&[&outbox::MIGRATIONS, &PROFILES]).await;
    let gate = VersionGate::new();
    let g = gate.clone();
    let admitted = store
        .transact(move |tx| {
            Ok::<_, StoreError>([
                g.admit(tx, "customer", "c-1", 2)?,
                g.admit(tx, "customer", "c-1", 1)?,
                g.admit(tx, "customer", "c-1", 2)?,
                g.admit(tx, "customer", "c-1", 3)?,
                g.admit(tx, "catalog", "c-1", 1)?,
                VersionGate::version(tx, "customer", "c-1")? == Some(3),
            ])
        })
        .await
        .unwrap();
    assert_eq!(admitted, [true, false, false, true, true, true]);
}

async fn waiting_for_a_token_returns_once_the_replica_catches_up(db: TestDb) {
    let store = db.open(&[&outbox::MIGRATIONS, &PROFILES]).await;
    let gate = VersionGate::new();
    let token: ConsistencyToken = "customer/c-1@2,customer/c-2@1".parse().unwrap();
    let writer = {
        let (store, gate) = (store.clone(), gate.clone());
        tokio::spawn(async move {
            for (key, version) in [("c-1", 1), ("c-2", 1), ("c-1", 2)] {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let gate = gate.clone();
                store.transact(move |tx| gate.admit(tx, "customer", key, version)).await.unwrap();
            }
        })
    };
    let caught = gate.wait_for(&store, &token, Duration::from_secs(10)).await.unwrap();
    assert_eq!(caught, Caught::Up);
    writer.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn waiting_for_a_token_gives_up_after_the_bound_and_names_what_is_behind() {
    let store = replica_store().await;
    let gate = VersionGate::new();
    let g = gate.clone();
    store.transact(move |tx| g.admit(tx, "customer", "c-1", 5)).await.unwrap();
    let token: ConsistencyToken = "customer/c-1@5,customer/c-2@7".parse().unwrap();
    let started = tokio::time::Instant::now();
    let caught = gate.wait_for(&store, &token, Duration::from_millis(250)).await.unwrap();
    assert_eq!(caught, Caught::Behind(vec![TokenEntry::new("customer", "c-2", 7).unwrap()]));
    assert_eq!(started.elapsed(), Duration::from_millis(250));
}

/// A history of profile changes: per key, versions 1..=n in order, interleaved.
fn history() -> impl Strategy<Value = Vec<Envelope>> {
    prop::collection::vec((0..4usize, prop::sample::select(vec!["Oslo", "Lima", "Pune", "Kyiv"])), 1..40)
        .prop_map(|changes| {
            let mut versions = [0u64; 4];
            changes
                .into_iter()
                .enumerate()
                .map(|(i, (k, city))| {
                    versions[k] += 1;
                    profile_event(i as u64 + 1, &format!("c-{k}"), versions[k], city)
                })
                .collect()
        })
}

/// The history shuffled, with some events delivered more than once, cut into batches.
fn scrambled() -> impl Strategy<Value = (Vec<Envelope>, Vec<Vec<Envelope>>)> {
    history()
        .prop_flat_map(|events| {
            let n = events.len();
            let duplicates = prop::collection::vec(0..n, 0..n);
            (Just(events), duplicates, 1..8usize).prop_flat_map(|(events, duplicates, batch)| {
                let mut delivered = events.clone();
                delivered.extend(duplicates.into_iter().map(|i| events[i].clone()));
                (Just(events), Just(delivered).prop_shuffle(), Just(batch))
            })
        })
        .prop_map(|(events, delivered, batch)| (events, delivered.chunks(batch).map(<[_]>::to_vec).collect()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn shuffled_and_duplicated_delivery_ends_in_the_in_order_state((events, batches) in scrambled()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (in_order, scrambled) = (replica_store().await, replica_store().await);
            let gate = VersionGate::new();
            deliver(&in_order, &gate, vec![events]).await;
            deliver(&scrambled, &gate, batches).await;
            assert_eq!(profiles(&scrambled).await, profiles(&in_order).await);
        });
    }
}

crate::testkit::on_both_backends!(
    the_gate_admits_only_newer_versions,
    waiting_for_a_token_returns_once_the_replica_catches_up,
);
