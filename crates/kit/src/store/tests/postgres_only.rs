//! What only the PostgreSQL backend has: a server that can go away and come back,
//! conflicts between connections, and transactions that the server aborted.

use std::sync::{Arc, Barrier};

use super::{ITEMS, insert, names};
use crate::store::{Store, StoreError};
use crate::testkit::TestDb;
use crate::testserver::PgServer;

#[tokio::test]
async fn a_killed_and_restarted_server_is_reconnected_without_reopening_the_store() {
    let Some(server) = PgServer::start() else { return };
    let store = Store::open(&server.create_database("shop"), &[&ITEMS]).await.unwrap();
    store.transact(|tx| insert(tx, "apple", 1)).await.unwrap();

    server.kill();
    let down = store.transact(|tx| insert(tx, "pear", 1)).await;
    match down {
        Err(e) => assert!(e.is_retryable(), "a lost server is worth retrying: {e}"),
        Ok(_) => panic!("a transaction committed on a killed server"),
    }

    server.restart();
    store.transact(|tx| insert(tx, "plum", 1)).await.expect("the first transaction after a restart succeeds");
    assert_eq!(names(&store).await, ["apple", "plum"]);
}

#[tokio::test]
async fn a_deadlock_between_two_stores_fails_one_transaction_as_a_retryable_conflict() {
    let Some(db) = TestDb::postgres() else { return };
    let (first, second) = (db.open(&[&ITEMS]).await, db.open(&[&ITEMS]).await);
    first.transact(|tx| Ok::<_, StoreError>((insert(tx, "a", 0)?, insert(tx, "b", 0)?))).await.unwrap();
    // Each locks one row, waits for the other to do the same, then wants the other's row.
    let both_locked = Arc::new(Barrier::new(2));
    let crosswise = |store: Store, mine: &'static str, theirs: &'static str| {
        let both_locked = both_locked.clone();
        tokio::spawn(async move {
            store
                .transact(move |tx| {
                    tx.execute("UPDATE items SET qty = qty + 1 WHERE name = $1", &[mine.into()])?;
                    both_locked.wait();
                    tx.execute("UPDATE items SET qty = qty + 1 WHERE name = $1", &[theirs.into()])
                })
                .await
        })
    };
    let (one, two) = (crosswise(first.clone(), "a", "b"), crosswise(second, "b", "a"));
    let outcomes = [one.await.unwrap(), two.await.unwrap()];
    let conflicts: Vec<&StoreError> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert_eq!(conflicts.len(), 1, "exactly one transaction is chosen as the deadlock victim: {outcomes:?}");
    assert!(matches!(conflicts[0], StoreError::Conflict(_)), "{:?}", conflicts[0]);
    assert!(conflicts[0].is_retryable());
}

#[tokio::test]
async fn a_body_that_swallows_a_failed_statement_is_not_committed() {
    let Some(db) = TestDb::postgres() else { return };
    let store = db.open(&[&ITEMS]).await;
    store.transact(|tx| insert(tx, "apple", 1)).await.unwrap();
    let result = store
        .transact(|tx| {
            insert(tx, "pear", 1)?;
            let _ignored = insert(tx, "apple", 2);
            Ok::<_, StoreError>(())
        })
        .await;
    assert!(matches!(&result, Err(StoreError::Database(m)) if m.contains("rolled back")), "{result:?}");
    assert_eq!(
        names(&store).await,
        ["apple"],
        "PostgreSQL aborted the transaction, so nothing of it may stay"
    );
}

#[tokio::test]
async fn a_server_that_is_not_there_is_an_open_error() {
    let url = format!("postgres://postgres@127.0.0.1:{}/none", crate::testserver::free_port());
    let result = Store::open(&url, &[]).await;
    assert!(matches!(&result, Err(StoreError::Open { url: got, .. }) if *got == url), "{result:?}");
}

#[tokio::test]
async fn a_savepoint_whose_body_swallowed_a_failed_statement_is_undone_and_the_transaction_goes_on() {
    let Some(db) = TestDb::postgres() else { return };
    let store = db.open(&[&ITEMS]).await;
    store.transact(|tx| insert(tx, "apple", 1)).await.unwrap();
    let swallowed = store
        .transact(|tx| {
            let inside = tx.savepoint(|tx| {
                insert(tx, "pear", 1)?;
                let _ignored = insert(tx, "apple", 2);
                Ok::<_, StoreError>(())
            });
            insert(tx, "plum", 1)?;
            Ok::<_, StoreError>(inside)
        })
        .await
        .expect("the transaction goes on after the savepoint and commits");
    assert!(
        matches!(&swallowed, Err(StoreError::Database(m)) if m.contains("savepoint was rolled back")),
        "the savepoint tells its body failed: {swallowed:?}"
    );
    assert_eq!(names(&store).await, ["apple", "plum"], "the savepoint's writes are undone, the rest commits");
}

#[tokio::test]
async fn the_server_gives_up_on_a_slow_statement_below_the_call_bound_and_the_store_goes_on() {
    let Some(db) = TestDb::postgres() else { return };
    let store = Store::open(&format!("{}?call_timeout=1", db.url), &[&ITEMS]).await.unwrap();
    let timeouts = store
        .transact(|tx| {
            let statement: String = tx.query_one("SHOW statement_timeout", &[])?.take(0)?;
            let lock: String = tx.query_one("SHOW lock_timeout", &[])?.take(0)?;
            Ok::<_, StoreError>((statement, lock))
        })
        .await
        .unwrap();
    assert_eq!(timeouts, ("800ms".to_owned(), "500ms".to_owned()), "4/5 and 1/2 of the call bound");
    let slow = store.transact(|tx| tx.execute("SELECT pg_sleep(30)", &[])).await;
    assert!(matches!(&slow, Err(StoreError::Unavailable(m)) if m.contains("57014")), "{slow:?}");
    store.transact(|tx| insert(tx, "apple", 1)).await.expect("the store goes on after a cancelled statement");
    assert_eq!(names(&store).await, ["apple"]);
}

/// Two stores on one database with `shared=true`, as two instances of a service open it:
/// each transaction reads, waits, then writes what it decided from its read. Taking turns,
/// the second one sees the first's write, as on one process's connection; at READ
/// COMMITTED alone both read "none" and the second insert fails on the key.
#[tokio::test]
async fn transactions_of_stores_sharing_a_database_take_turns() {
    let Some(db) = TestDb::postgres() else { return };
    let shared = format!("{}?shared=true", db.url);
    let (first, second) =
        (Store::open(&shared, &[&ITEMS]).await.unwrap(), Store::open(&shared, &[&ITEMS]).await.unwrap());
    let insert_if_none = |store: Store| {
        tokio::spawn(async move {
            store
                .transact(|tx| {
                    let found: i64 = tx.query_one("SELECT count(*) FROM items", &[])?.get(0)?;
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    if found == 0 {
                        insert(tx, "only", 1)?;
                    }
                    Ok::<_, StoreError>(())
                })
                .await
        })
    };
    let (a, b) = (insert_if_none(first.clone()), insert_if_none(second.clone()));
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    assert_eq!(names(&first).await, ["only"], "the second transaction saw the first's write");
    // A transaction may still set its isolation first: its turn comes after that.
    let read = second
        .transact(|tx| {
            tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", &[])?;
            tx.query_one("SELECT count(*) FROM items", &[])?.get::<i64>(0)
        })
        .await
        .unwrap();
    assert_eq!(read, 1);
}
