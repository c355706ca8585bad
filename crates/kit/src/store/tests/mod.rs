//! The store suite: each behaviour is one async fn taking a fresh, empty database, run
//! against both backends by `on_both_backends!` at the end (modules `sqlite`, `postgres`).

mod postgres_only;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::*;
use crate::testkit::TestDb;

const ITEMS: Migrations = Migrations {
    component: "items",
    sqlite: &["CREATE TABLE items (name TEXT PRIMARY KEY, qty INTEGER NOT NULL)"],
    postgres: &["CREATE TABLE items (name TEXT PRIMARY KEY, qty BIGINT NOT NULL)"],
};

/// The error of a transaction body that gives up on its own account.
#[derive(Debug, PartialEq)]
enum BodyError {
    Refused,
    Store(String),
}

impl From<StoreError> for BodyError {
    fn from(e: StoreError) -> Self {
        BodyError::Store(e.to_string())
    }
}

/// The store of a fresh database with the `items` table.
async fn items(db: &TestDb) -> Store {
    db.open(&[&ITEMS]).await
}

/// The type of a blob column or cast in `dialect`.
fn blob(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => "BLOB",
        Dialect::Postgres => "BYTEA",
    }
}

fn insert(tx: &mut Tx<'_>, name: &str, qty: i64) -> Result<usize, StoreError> {
    tx.execute("INSERT INTO items (name, qty) VALUES ($1, $2)", &[name.into(), qty.into()])
}

async fn names(store: &Store) -> Vec<String> {
    store
        .transact(|tx| {
            tx.query("SELECT name FROM items ORDER BY name", &[])?.into_iter().map(|r| r.get(0)).collect()
        })
        .await
        .expect("items are readable")
}

async fn a_transaction_whose_body_returns_ok_is_committed(db: TestDb) {
    let store = items(&db).await;
    let answer = store
        .transact(|tx| {
            insert(tx, "apple", 1)?;
            insert(tx, "pear", 2)?;
            let changed = tx.execute("UPDATE items SET qty = qty + 1", &[])?;
            Ok::<_, StoreError>(changed)
        })
        .await
        .unwrap();
    assert_eq!(answer, 2, "execute returns the number of changed rows");
    assert_eq!(names(&store).await, ["apple", "pear"]);
}

async fn a_transaction_whose_body_returns_err_is_rolled_back_and_the_error_comes_back(db: TestDb) {
    let store = items(&db).await;
    let result = store
        .transact(|tx| {
            insert(tx, "apple", 1)?;
            Err::<(), _>(BodyError::Refused)
        })
        .await;
    assert_eq!(result, Err(BodyError::Refused));
    assert!(names(&store).await.is_empty(), "a rolled-back insert is visible");
}

async fn a_panicking_transaction_is_rolled_back_and_the_store_keeps_working(db: TestDb) {
    let store = items(&db).await;
    let result = store
        .transact(|tx| -> Result<(), StoreError> {
            insert(tx, "apple", 1)?;
            panic!("the body gave up on {}", "apple")
        })
        .await;
    match result {
        Err(StoreError::Panicked(text)) => assert_eq!(text, "the body gave up on apple"),
        other => panic!("expected a panicked error, got {other:?}"),
    }
    let result = store.transact(|_| -> Result<(), StoreError> { panic!("a static message") }).await;
    assert!(matches!(&result, Err(StoreError::Panicked(text)) if text == "a static message"), "{result:?}");
    assert!(names(&store).await.is_empty(), "the panicking body's insert is visible");
    store.transact(|tx| insert(tx, "pear", 1)).await.expect("the store works after a panic");
    assert_eq!(names(&store).await, ["pear"]);
}

async fn a_failed_savepoint_undoes_only_its_own_writes(db: TestDb) {
    let store = items(&db).await;
    store
        .transact(|tx| {
            insert(tx, "apple", 1)?;
            let refused = tx.savepoint(|tx| {
                insert(tx, "pear", 1)?;
                Err::<(), _>(BodyError::Refused)
            });
            assert_eq!(refused, Err(BodyError::Refused));
            let duplicate = tx.savepoint(|tx| {
                insert(tx, "plum", 1)?;
                insert(tx, "apple", 2)
            });
            assert!(matches!(duplicate, Err(StoreError::Database(_))), "{duplicate:?}");
            tx.savepoint(|tx| insert(tx, "quince", 1))?;
            Ok::<_, BodyError>(())
        })
        .await
        .unwrap();
    assert_eq!(names(&store).await, ["apple", "quince"]);
}

async fn a_savepoint_inside_a_savepoint_rolls_back_on_its_own(db: TestDb) {
    let store = items(&db).await;
    store
        .transact(|tx| {
            tx.savepoint(|tx| {
                insert(tx, "apple", 1)?;
                let inner = tx.savepoint(|tx| {
                    insert(tx, "pear", 1)?;
                    Err::<(), _>(BodyError::Refused)
                });
                assert_eq!(inner, Err(BodyError::Refused));
                insert(tx, "plum", 1)?;
                Ok::<_, BodyError>(())
            })
        })
        .await
        .unwrap();
    assert_eq!(names(&store).await, ["apple", "plum"]);
}

async fn after_commit_hooks_run_in_order_only_once_the_transaction_has_committed(db: TestDb) {
    let store = items(&db).await;
    let ran = Arc::new(Mutex::new(Vec::new()));
    let hooks = ran.clone();
    store
        .transact(move |tx| {
            insert(tx, "apple", 1)?;
            for hook in ["first", "second"] {
                let ran = hooks.clone();
                tx.after_commit(move || ran.lock().unwrap().push(hook));
            }
            assert!(hooks.lock().unwrap().is_empty(), "a hook ran before the commit");
            Ok::<_, StoreError>(())
        })
        .await
        .unwrap();
    assert_eq!(*ran.lock().unwrap(), ["first", "second"]);

    let count = Arc::new(AtomicUsize::new(0));
    let (on_err, on_panic) = (count.clone(), count.clone());
    let failed = store
        .transact(move |tx| {
            tx.after_commit(move || _ = on_err.fetch_add(1, Ordering::SeqCst));
            Err::<(), _>(BodyError::Refused)
        })
        .await;
    assert_eq!(failed, Err(BodyError::Refused));
    let panicked = store
        .transact(move |tx| -> Result<(), StoreError> {
            tx.after_commit(move || _ = on_panic.fetch_add(1, Ordering::SeqCst));
            panic!("no commit")
        })
        .await;
    assert!(panicked.is_err());
    assert_eq!(count.load(Ordering::SeqCst), 0, "a hook of a rolled-back transaction ran");
}

/// Parameters of every type: (column, parameter, value read back); the columns are
/// 0 integer, 1 real, 2 text, 3 blob.
fn typed_cases<'a>(blob: &'a [u8], owned: &'a String) -> Vec<(usize, Param<'a>, Value)> {
    vec![
        (0, Param::Null, Value::Null),
        (0, i64::MIN.into(), Value::Int(i64::MIN)),
        (0, i64::MAX.into(), Value::Int(i64::MAX)),
        (0, (i64::MAX as u64).into(), Value::Int(i64::MAX)),
        (0, u32::MAX.into(), Value::Int(u32::MAX.into())),
        (0, (-7i32).into(), Value::Int(-7)),
        (0, true.into(), Value::Int(1)),
        (0, false.into(), Value::Int(0)),
        (1, 2.5f64.into(), Value::Real(2.5)),
        (2, "grüße, 'quoted' $1 ?2".into(), Value::Text("grüße, 'quoted' $1 ?2".into())),
        (2, owned.into(), Value::Text(owned.clone())),
        (3, blob.into(), Value::Blob(blob.to_vec())),
        (3, (&[][..]).into(), Value::Blob(Vec::new())),
        (2, Option::<&str>::None.into(), Value::Null),
        (0, Some(7u64).into(), Value::Int(7)),
    ]
}

async fn parameters_of_every_type_round_trip(db: TestDb) {
    let store = items(&db).await;
    let (blob, owned): (Vec<u8>, String) = ((0..=255).collect(), "owned".into());
    let (blob_in, owned_in) = (blob.clone(), owned.clone());
    let values = store
        .transact(move |tx| {
            let ddl = match tx.dialect() {
                Dialect::Sqlite => {
                    "CREATE TABLE vals (id INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB)"
                }
                Dialect::Postgres => {
                    "CREATE TABLE vals (id BIGINT PRIMARY KEY, i BIGINT, r DOUBLE PRECISION, t TEXT, b BYTEA)"
                }
            };
            tx.execute(ddl, &[])?;
            let cases = typed_cases(&blob_in, &owned_in);
            for (id, (column, param, _)) in cases.iter().enumerate() {
                let name = ["i", "r", "t", "b"][*column];
                tx.execute(
                    &format!("INSERT INTO vals (id, {name}) VALUES ($1, $2)"),
                    &[(id as u64).into(), *param],
                )?;
            }
            let rows = tx.query("SELECT i, r, t, b FROM vals ORDER BY id", &[])?;
            Ok::<_, StoreError>(
                rows.into_iter()
                    .zip(&cases)
                    .map(|(mut row, (column, ..))| row.0.remove(*column))
                    .collect::<Vec<_>>(),
            )
        })
        .await
        .unwrap();
    let expected: Vec<Value> = typed_cases(&blob, &owned).into_iter().map(|(_, _, value)| value).collect();
    assert_eq!(values, expected);
}

async fn columns_read_back_as_the_rust_types_they_were_written_from(db: TestDb) {
    let store = items(&db).await;
    let row = store
        .transact(|tx| {
            tx.query_one(
                &format!(
                    "SELECT CAST($1 AS BIGINT), CAST($2 AS BIGINT), CAST($3 AS BOOLEAN), \
                     CAST($4 AS DOUBLE PRECISION), CAST($5 AS TEXT), CAST($6 AS {}), CAST($7 AS BIGINT), \
                     CAST($8 AS TEXT)",
                    blob(tx.dialect())
                ),
                &[
                    (i64::MAX as u64).into(),
                    u32::MAX.into(),
                    true.into(),
                    2.5f64.into(),
                    "text".into(),
                    (&vec![0u8, 255]).into(),
                    Option::<u64>::None.into(),
                    Some("some").into(),
                ],
            )
        })
        .await
        .unwrap();
    assert_eq!(row.get::<u64>(0).unwrap(), i64::MAX as u64);
    assert_eq!(row.get::<u32>(1).unwrap(), u32::MAX);
    assert!(row.get::<bool>(2).unwrap());
    assert_eq!(row.get::<f64>(3).unwrap(), 2.5);
    assert_eq!(row.get::<String>(4).unwrap(), "text");
    assert_eq!(row.get::<Vec<u8>>(5).unwrap(), [0, 255]);
    assert_eq!(row.get::<Option<u64>>(6).unwrap(), None);
    assert_eq!(row.get::<Option<String>>(7).unwrap(), Some("some".into()));
    assert_eq!(row.get::<Option<String>>(8).unwrap(), None, "a column past the end reads as null");
}

async fn a_value_of_another_type_is_a_decode_error_naming_the_column(db: TestDb) {
    let store = items(&db).await;
    let row = store.transact(|tx| tx.query_one("SELECT -1, 'text', NULL", &[])).await.unwrap();
    assert!(matches!(row.get::<u64>(0), Err(StoreError::Decode { column: 0, .. })), "a negative u64");
    assert!(matches!(row.get::<i64>(1), Err(StoreError::Decode { column: 1, .. })), "text as i64");
    assert!(matches!(row.get::<String>(2), Err(StoreError::Decode { column: 2, .. })), "null as String");
    assert_eq!(row.get::<i64>(0).unwrap(), -1);
}

#[test]
#[should_panic(expected = "u64 parameter fits in i64")]
fn a_u64_beyond_the_range_of_i64_is_refused_as_a_parameter() {
    let _ = Param::from(u64::MAX);
}

async fn dollar_placeholders_may_repeat_and_come_in_any_order(db: TestDb) {
    let store = items(&db).await;
    let row = store
        .transact(|tx| {
            tx.query_one(
                "SELECT CAST($2 AS TEXT), '$1', CAST($1 AS TEXT), CAST($2 AS TEXT)",
                &["first".into(), "second".into()],
            )
        })
        .await
        .unwrap();
    let texts: Vec<String> = (0..4).map(|i| row.get(i).unwrap()).collect();
    assert_eq!(texts, ["second", "$1", "first", "second"]);
}

async fn query_one_without_a_row_is_a_no_row_error(db: TestDb) {
    let store = items(&db).await;
    let result =
        store.transact(|tx| tx.query_one("SELECT name FROM items WHERE name = $1", &["none".into()])).await;
    assert!(matches!(result, Err(StoreError::NoRow)), "{result:?}");
    let none = store.transact(|tx| tx.query_opt("SELECT name FROM items", &[])).await.unwrap();
    assert_eq!(none, None);
}

async fn migrations_apply_once_are_recorded_and_data_persists_across_reopening(db: TestDb) {
    const SHELF_V1: &str =
        "CREATE TABLE shelf (item TEXT NOT NULL); INSERT INTO shelf (item) VALUES ('seeded')";
    const SHELF_V2_STEP: &str = "ALTER TABLE shelf ADD COLUMN qty INTEGER NOT NULL DEFAULT 0";
    const SHELF: Migrations = Migrations { component: "shelf", sqlite: &[SHELF_V1], postgres: &[SHELF_V1] };
    const SHELF_V2: Migrations = Migrations {
        component: "shelf",
        sqlite: &[SHELF_V1, SHELF_V2_STEP],
        postgres: &[SHELF_V1, SHELF_V2_STEP],
    };
    let url = &db.url;
    let recorded = |store: Store| async move {
        store
            .transact(|tx| {
                let applied = tx
                    .query("SELECT component, version FROM kit_migrations ORDER BY component, version", &[])?
                    .into_iter()
                    .map(|mut r| Ok((r.take::<String>(0)?, r.get::<u32>(1)?)))
                    .collect::<Result<Vec<_>, StoreError>>()?;
                let items = tx
                    .query("SELECT item FROM shelf ORDER BY item", &[])?
                    .into_iter()
                    .map(|r| r.get::<String>(0))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok::<_, StoreError>((applied, items))
            })
            .await
            .unwrap()
    };

    let store = Store::open(url, &[&SHELF, &ITEMS]).await.unwrap();
    store.transact(|tx| tx.execute("INSERT INTO shelf (item) VALUES ('added')", &[])).await.unwrap();
    let (applied, items) = recorded(store).await;
    assert_eq!(applied, [("items".into(), 1), ("shelf".into(), 1)]);
    assert_eq!(items, ["added", "seeded"]);

    let store = Store::open(url, &[&SHELF, &ITEMS]).await.expect("reopening runs no migration twice");
    let (applied, items) = recorded(store).await;
    assert_eq!(applied, [("items".into(), 1), ("shelf".into(), 1)]);
    assert_eq!(items, ["added", "seeded"], "the data did not persist, or the seed ran again");

    let store = Store::open(url, &[&SHELF_V2, &ITEMS]).await.expect("a new version applies on its own");
    let (applied, items) = recorded(store.clone()).await;
    assert_eq!(applied, [("items".into(), 1), ("shelf".into(), 1), ("shelf".into(), 2)]);
    assert_eq!(items, ["added", "seeded"]);
    let qty = store.transact(|tx| tx.query_one("SELECT sum(qty) FROM shelf", &[])).await.unwrap();
    assert_eq!(qty.get::<i64>(0).unwrap(), 0, "version 2 added the column");
}

async fn a_failing_migration_names_its_version_and_leaves_nothing_applied(db: TestDb) {
    const GOOD: &str = "CREATE TABLE good (a TEXT)";
    const BAD: &str = "CREATE TABLE nonsense (";
    const BROKEN: Migrations =
        Migrations { component: "broken", sqlite: &[GOOD, BAD], postgres: &[GOOD, BAD] };
    const FIRST_ONLY: Migrations = Migrations { component: "broken", sqlite: &[GOOD], postgres: &[GOOD] };
    let url = &db.url;
    match Store::open(url, &[&BROKEN]).await {
        Err(StoreError::Migration { component, version, .. }) => {
            assert_eq!((component.as_str(), version), ("broken", 2));
        }
        other => panic!("expected a migration error, got {other:?}"),
    }
    let store = Store::open(url, &[&FIRST_ONLY]).await.expect("the first version applies afresh");
    let applied = store
        .transact(|tx| tx.query("SELECT version FROM kit_migrations WHERE component = 'broken'", &[]))
        .await
        .unwrap();
    assert_eq!(applied.len(), 1);
}

#[tokio::test]
async fn a_url_of_an_unknown_scheme_is_unsupported() {
    for url in ["postgres:shop", "mysql:shop", "shop.db", ""] {
        match Store::open(url, &[]).await {
            Err(StoreError::UnsupportedUrl(got)) => assert_eq!(got, url),
            other => panic!("expected {url:?} to be unsupported, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_database_file_that_cannot_be_opened_is_an_open_error() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().display());
    let result = Store::open(&url, &[]).await;
    assert!(matches!(&result, Err(StoreError::Open { url: got, .. }) if *got == url), "{result:?}");
}

async fn concurrent_transactions_run_one_at_a_time(db: TestDb) {
    let store = items(&db).await;
    store.transact(|tx| insert(tx, "counter", 0)).await.unwrap();
    let increments = (0..20).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .transact(|tx| {
                    let qty: i64 =
                        tx.query_one("SELECT qty FROM items WHERE name = 'counter'", &[])?.get(0)?;
                    tx.execute("UPDATE items SET qty = $1 WHERE name = 'counter'", &[(qty + 1).into()])
                })
                .await
        })
    });
    for increment in increments.collect::<Vec<_>>() {
        increment.await.unwrap().unwrap();
    }
    let qty = store.transact(|tx| tx.query_one("SELECT qty FROM items", &[])).await.unwrap();
    assert_eq!(qty.get::<i64>(0).unwrap(), 20, "a read-modify-write was interleaved");
}

#[test]
fn busy_locked_and_closed_stores_are_worth_retrying() {
    assert!(StoreError::Database("database is locked".into()).is_retryable());
    assert!(StoreError::Database("database is busy".into()).is_retryable());
    assert!(StoreError::Closed.is_retryable());
    assert!(!StoreError::Database("UNIQUE constraint failed".into()).is_retryable());
    assert!(!StoreError::NoRow.is_retryable());
}

crate::testkit::on_both_backends!(
    a_transaction_whose_body_returns_ok_is_committed,
    a_transaction_whose_body_returns_err_is_rolled_back_and_the_error_comes_back,
    a_panicking_transaction_is_rolled_back_and_the_store_keeps_working,
    a_failed_savepoint_undoes_only_its_own_writes,
    a_savepoint_inside_a_savepoint_rolls_back_on_its_own,
    after_commit_hooks_run_in_order_only_once_the_transaction_has_committed,
    parameters_of_every_type_round_trip,
    columns_read_back_as_the_rust_types_they_were_written_from,
    a_value_of_another_type_is_a_decode_error_naming_the_column,
    dollar_placeholders_may_repeat_and_come_in_any_order,
    query_one_without_a_row_is_a_no_row_error,
    migrations_apply_once_are_recorded_and_data_persists_across_reopening,
    a_failing_migration_names_its_version_and_leaves_nothing_applied,
    concurrent_transactions_run_one_at_a_time,
);
