//! Test support shared by the kit's unit tests: fresh databases of either backend, a
//! producer with an outbox, and a tally handler whose effect is not idempotent by
//! itself, so a second apply would show.

use std::sync::Arc;

use serde_json::json;

use crate::bus::{Bus, EmbeddedBus};
use crate::consumer::{Handler, HandlerError};
use crate::envelope::{Envelope, NewEvent, StreamName};
use crate::outbox::{self, Outbox};
use crate::relay::Relay;
use crate::store::{Migrations, Store, StoreError, Tx};
use crate::testserver::PgServer;

pub const TALLY: Migrations = Migrations {
    component: "tally",
    sqlite: &[
        "CREATE TABLE tally (key TEXT PRIMARY KEY, applied INTEGER NOT NULL, last_version INTEGER NOT NULL)",
    ],
    postgres: &[
        "CREATE TABLE tally (key TEXT PRIMARY KEY, applied BIGINT NOT NULL, last_version BIGINT NOT NULL)",
    ],
};

/// A fresh, empty database of one backend: a temporary SQLite file, or a database of its
/// own on the test process's shared PostgreSQL server.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub fn sqlite() -> Option<TestDb> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite:{}", dir.path().join("store.db").display());
        Some(TestDb { url, _dir: Some(dir) })
    }

    /// `None` (after a loud notice) when PostgreSQL is not installed, outside CI.
    pub fn postgres() -> Option<TestDb> {
        static CREATED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let server = PgServer::shared()?;
        let name = format!("kit_test_{}", CREATED.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        Some(TestDb { url: server.create_database(&name), _dir: None })
    }

    /// Opens the database with `migrations`.
    pub async fn open(&self, migrations: &[&Migrations]) -> Store {
        Store::open(&self.url, migrations).await.unwrap_or_else(|e| panic!("{} opens: {e}", self.url))
    }
}

pub async fn memory_bus() -> Arc<dyn Bus> {
    Arc::new(EmbeddedBus::open(":memory:").await.expect("in-memory bus opens"))
}

pub async fn memory_store() -> Store {
    Store::open("sqlite::memory:", &[&outbox::MIGRATIONS, &TALLY]).await.expect("in-memory store opens")
}

/// Generates one `#[tokio::test]` per named async fn of the calling module (each taking a
/// fresh [`TestDb`]) in two modules, `sqlite` and `postgres`: one suite, both backends.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $crate::testkit::on_both_backends!(@tests $crate::testkit::TestDb::sqlite(); $($name),*);
        }
        mod postgres {
            $crate::testkit::on_both_backends!(@tests $crate::testkit::TestDb::postgres(); $($name),*);
        }
    };
    (@tests $fresh:expr; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                if let Some(db) = $fresh {
                    super::$name(db).await
                }
            }
        )*
    };
}
pub(crate) use on_both_backends;

/// A producing service: its store, its outbox and a relay to `bus`.
pub struct Producer {
    pub store: Store,
    pub outbox: Outbox,
    pub relay: Relay,
}

impl Producer {
    pub async fn new(stream: &str, bus: Arc<dyn Bus>) -> Self {
        let store = memory_store().await;
        let outbox = Outbox::new(StreamName::parse(stream).unwrap());
        let relay = Relay::new(store.clone(), outbox.clone(), bus);
        Self { store, outbox, relay }
    }

    /// Commits `events` in one transaction and relays everything committed.
    pub async fn emit(&self, events: Vec<NewEvent>) -> Vec<Envelope> {
        let outbox = self.outbox.clone();
        let envelopes = self.store.transact(move |tx| outbox.append(tx, events)).await.unwrap();
        while self.relay.relay_batch().await.unwrap() > 0 {}
        envelopes
    }
}

/// An event of `key` the tally handler applies, or fails when `payload.fail` is set.
pub fn event(key: &str, version: u64) -> NewEvent {
    NewEvent::new("Counted", key, version, json!({ "fail": false }))
}

pub fn failing_event(key: &str, version: u64, retryable: bool) -> NewEvent {
    NewEvent::new("Counted", key, version, json!({ "fail": true, "retryable": retryable }))
}

/// Counts applications per key; fails events whose payload says so.
pub struct Tally;

impl Handler for Tally {
    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        if event.payload["fail"] == true {
            let message = format!("{} v{} is poison", event.key, event.version);
            return Err(if event.payload["retryable"] == true {
                HandlerError::retryable(message)
            } else {
                HandlerError::permanent(message)
            });
        }
        if event.payload["panic"] == true {
            panic!("the handler met {}", event.key);
        }
        tx.execute(
            "INSERT INTO tally (key, applied, last_version) VALUES ($1, 1, $2) \
             ON CONFLICT (key) DO UPDATE SET applied = tally.applied + 1, last_version = excluded.last_version",
            &[event.key.as_str().into(), event.version.into()],
        )?;
        Ok(())
    }
}

/// `(key, applied, last_version)` for every key, ordered by key.
pub async fn tally(store: &Store) -> Vec<(String, u64, u64)> {
    store
        .transact(|tx| {
            tx.query("SELECT key, applied, last_version FROM tally ORDER BY key", &[])?
                .into_iter()
                .map(|mut r| Ok((r.take(0)?, r.get(1)?, r.get(2)?)))
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .await
        .unwrap()
}
