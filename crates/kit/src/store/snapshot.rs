//! A read snapshot of a SQLite database, for backups: a connection of its own holds a read
//! transaction open (WAL keeps what it sees while writers go on), and the online backup API
//! copies exactly that state later, page by page, in one step.
//!
//! Opening the connection is the slow part and happens before the cut; pinning is one
//! `BEGIN` and one read, cheap enough to do for every database while a
//! [`crate::pause::Pause`] is held.

use std::path::{Path, PathBuf};

use super::copy::{failed, open};
use super::{StoreError, Tx};

/// A database file with a connection opened for its snapshot.
pub struct Snapshot {
    path: PathBuf,
    conn: rusqlite::Connection,
    pinned: bool,
}

impl Snapshot {
    /// Opens `path` (which must exist; nothing is written to it), not pinned yet.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(|e| failed(path, e))?;
        Ok(Self { path: path.to_owned(), conn, pinned: false })
    }

    /// Starts the read transaction whose state [`Snapshot::copy_to`] copies: what was
    /// committed before this call, nothing committed after it.
    pub fn pin(&mut self) -> Result<(), StoreError> {
        self.conn.execute_batch("BEGIN").map_err(|e| failed(&self.path, e))?;
        // A deferred transaction takes its snapshot at its first read.
        self.conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
            .map_err(|e| failed(&self.path, e))?;
        self.pinned = true;
        Ok(())
    }

    /// Runs `read` inside the pinned snapshot, with the statements a store transaction has
    /// (what it writes stays in the snapshot's transaction and is never committed).
    pub fn read<T>(&self, read: impl FnOnce(&mut Tx<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut conn = super::sqlite::SqliteTx { conn: &self.conn };
        read(&mut Tx::new(&mut conn))
    }

    /// Copies the snapshot into a new file `dest` (the pinned state, or, unpinned, the
    /// state when the copy starts) and ends the read transaction. Blocking: run it off the
    /// async threads.
    pub fn copy_to(mut self, dest: &Path) -> Result<(), StoreError> {
        if dest.exists() {
            return Err(StoreError::Database(format!(
                "{} exists already; a backup never overwrites",
                dest.display()
            )));
        }
        let mut out = rusqlite::Connection::open(dest).map_err(|e| failed(dest, e))?;
        {
            let backup = rusqlite::backup::Backup::new(&self.conn, &mut out).map_err(|e| failed(dest, e))?;
            // One step copies every page inside the open read transaction.
            match backup.step(-1).map_err(|e| failed(dest, e))? {
                rusqlite::backup::StepResult::Done => {}
                other => {
                    return Err(StoreError::Database(format!(
                        "copying {} did not finish in one step ({other:?}); try again",
                        self.path.display()
                    )));
                }
            }
        }
        // The copy keeps the source's WAL mode (so opening it as a store changes nothing);
        // closing it folds the log into the file, so the backup is one file.
        drop(out);
        if self.pinned {
            self.conn.execute_batch("COMMIT").map_err(|e| failed(&self.path, e))?;
            self.pinned = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[tokio::test]
    async fn a_pinned_snapshot_copies_what_was_committed_before_the_pin_and_nothing_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("source.db");
        let store = Store::open(&format!("sqlite:{}", path.display()), &[]).await.unwrap();
        let insert = |n: i64| {
            let store = store.clone();
            async move {
                store
                    .transact(move |tx| {
                        tx.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER)", &[])?;
                        tx.execute("INSERT INTO t (n) VALUES ($1)", &[n.into()])
                    })
                    .await
                    .unwrap()
            }
        };
        insert(1).await;
        let mut snapshot = Snapshot::open(&path).unwrap();
        snapshot.pin().unwrap();
        insert(2).await;
        let seen: u64 = snapshot.read(|tx| tx.query_one("SELECT count(*) FROM t", &[])?.get(0)).unwrap();
        assert_eq!(seen, 1, "a read inside the snapshot sees it as pinned");
        let dest = dir.path().join("copy.db");
        snapshot.copy_to(&dest).unwrap();
        insert(3).await;
        assert!(!dir.path().join("copy.db-wal").exists(), "the copy is one file");

        let copy = rusqlite::Connection::open(&dest).unwrap();
        let rows: Vec<i64> = copy
            .prepare("SELECT n FROM t")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows, vec![1], "the copy holds what was committed before the pin only");
        assert!(
            Snapshot::open(&path).unwrap().copy_to(&dest).is_err(),
            "an existing file is never overwritten"
        );
    }
}
