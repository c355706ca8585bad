//! A PostgreSQL snapshot exported for a consistent cut (the distributed mode's backup,
//! docs/BACKUP.md): a connection opened and a REPEATABLE READ transaction begun ahead of
//! the cut ([`Exporter`], [`Begun`]), its snapshot taken and exported at the cut
//! ([`Exported`]), read by other transactions that adopt it ([`read_at`]) and copied by
//! `pg_dump --snapshot` ([`Exported::dump`]) while it stays open; and a dump loaded into a
//! fresh database ([`load`]) with the events in flight at the cut put back into its outbox
//! ([`put_back`]).

use std::path::Path;

use tokio_postgres::{Client, NoTls};

use super::{Store, StoreError, Tx};
use crate::bus::Message;

/// A connection to one database, opened before the cut (connecting is the slow part).
pub struct Exporter {
    client: Client,
    driver: tokio::task::JoinHandle<()>,
}

/// A REPEATABLE READ transaction that exported its snapshot; it must stay open while the
/// snapshot is read or dumped, and ends with [`Exported::close`] (or when dropped).
pub struct Exported {
    exporter: Exporter,
    id: String,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// The URL as the server and libpq know it: without the kit's own settings.
pub fn server_url(url: &str) -> String {
    url.split_once('?').map_or(url, |(base, _)| base).to_owned()
}

fn failed(url: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{}: {e}", server_url(url)))
}

impl Exporter {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let (client, connection) =
            tokio_postgres::connect(&server_url(url), NoTls).await.map_err(|e| failed(url, e))?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self { client, driver })
    }

    /// Opens the REPEATABLE READ transaction whose snapshot [`Begun::export`] pins. No
    /// snapshot is taken yet (PostgreSQL takes it at the transaction's first query), so
    /// this can go before the cut, and pinning at the cut is one round trip.
    pub async fn begin(self) -> Result<Begun, StoreError> {
        self.client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(|e| StoreError::Database(e.to_string()))?;
        Ok(Begun { exporter: self })
    }
}

/// A REPEATABLE READ transaction begun, its snapshot not taken yet.
pub struct Begun {
    exporter: Exporter,
}

impl Begun {
    /// Pins the database's snapshot now and exports it: one query, sent as a simple query
    /// (one round trip; a prepared one would parse first, and parsing a SELECT would
    /// take the snapshot).
    pub async fn export(self) -> Result<Exported, StoreError> {
        let answer = self
            .exporter
            .client
            .simple_query("SELECT pg_export_snapshot()")
            .await
            .map_err(|e| StoreError::Database(e.to_string()))?;
        let id = answer
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            })
            .ok_or_else(|| StoreError::Database("pg_export_snapshot() answered no row".into()))?;
        Ok(Exported { exporter: self.exporter, id })
    }
}

impl Exported {
    /// The snapshot's id, for `SET TRANSACTION SNAPSHOT` and `pg_dump --snapshot`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Dumps the database `url` at this snapshot into `target` (pg_dump's custom format).
    pub async fn dump(&self, url: &str, target: &Path) -> Result<(), StoreError> {
        let snapshot = format!("--snapshot={}", self.id);
        let file = format!("--file={}", target.display());
        let dbname = format!("--dbname={}", server_url(url));
        run("pg_dump", &["--format=custom", "--no-owner", &snapshot, &file, &dbname]).await
    }

    /// Ends the exporting transaction: the snapshot can no longer be adopted.
    pub async fn close(self) {
        let _ = self.exporter.client.batch_execute("COMMIT").await;
    }
}

/// Runs `work` in a read-only transaction of `store` at the exported snapshot `id`.
pub async fn read_at<R, F>(store: &Store, id: &str, work: F) -> Result<R, StoreError>
where
    R: Send + 'static,
    F: FnOnce(&mut Tx<'_>) -> Result<R, StoreError> + Send + 'static,
{
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Err(StoreError::Database(format!("{id:?} is not an exported snapshot's id")));
    }
    let adopt = format!(
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT '{id}'"
    );
    store
        .transact(move |tx| {
            tx.execute_script(&adopt)?;
            work(tx)
        })
        .await
}

/// Whether the database `url` holds any table of its own (a restore refuses it). Asked on
/// a connection of its own: opening a [`Store`] would create the kit's migrations table.
pub async fn holds_tables(url: &str) -> Result<bool, StoreError> {
    let exporter = Exporter::connect(url).await?;
    let row = exporter
        .client
        .query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", &[])
        .await
        .map_err(|e| StoreError::Database(e.to_string()))?;
    Ok(row.get::<_, i64>(0) > 0)
}

/// Loads the dump `file` into the database `url`, which must be empty.
pub async fn load(url: &str, file: &Path) -> Result<(), StoreError> {
    let dbname = format!("--dbname={}", server_url(url));
    let file = file.display().to_string();
    run("pg_restore", &["--no-owner", "--exit-on-error", "--single-transaction", &dbname, &file]).await
}

/// Puts `events` (one stream's, in flight at the cut, exported from the bus) back into the
/// restored database's outbox as not yet relayed, so its relay publishes them again, and
/// forgets every relay lease (their holders do not run the restored shop). The outbox then
/// holds every seq above the first put back.
pub fn put_back(tx: &mut Tx<'_>, stream: &str, events: &[Message]) -> Result<(), StoreError> {
    tx.execute("DELETE FROM kit_relay_lease", &[])?;
    let Some(first) = events.iter().map(|m| m.seq).min() else { return Ok(()) };
    for m in events {
        tx.execute(
            "INSERT INTO kit_outbox (stream, seq, id, key, body) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (stream, seq) DO NOTHING",
            &[stream.into(), m.seq.into(), (&m.id).into(), (&m.key).into(), (&m.body).into()],
        )?;
    }
    tx.execute(
        "UPDATE kit_outbox_relayed SET relayed_seq = $2 WHERE stream = $1 AND relayed_seq >= $2",
        &[stream.into(), (first - 1).into()],
    )?;
    Ok(())
}

/// The highest migration applied per component, read in `tx`.
pub fn schema_versions(tx: &mut Tx<'_>) -> Result<std::collections::BTreeMap<String, u32>, StoreError> {
    let rows = tx.query("SELECT component, max(version) FROM kit_migrations GROUP BY component", &[])?;
    rows.into_iter().map(|mut r| Ok((r.take(0)?, r.get(1)?))).collect()
}

/// The seqs still waiting in the outbox, per stream, read in `tx`.
pub fn outbox_waiting(
    tx: &mut Tx<'_>,
) -> Result<std::collections::BTreeMap<String, std::collections::BTreeSet<u64>>, StoreError> {
    let mut waiting: std::collections::BTreeMap<String, std::collections::BTreeSet<u64>> = Default::default();
    for mut row in tx.query("SELECT stream, seq FROM kit_outbox", &[])? {
        waiting.entry(row.take(0)?).or_default().insert(row.get(1)?);
    }
    Ok(waiting)
}

/// Runs one of PostgreSQL's client programs (on PATH), failing with what it said.
async fn run(program: &str, args: &[&str]) -> Result<(), StoreError> {
    let output = tokio::process::Command::new(program).args(args).output().await.map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot run {program} ({e}): it must be on PATH; {}",
            crate::servers::POSTGRES_INSTALL
        ))
    })?;
    if output.status.success() {
        return Ok(());
    }
    Err(StoreError::Database(format!(
        "{program} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testserver::PgServer;

    const ITEMS: super::super::Migrations = super::super::Migrations {
        component: "items",
        sqlite: &[],
        postgres: &["CREATE TABLE items (name TEXT PRIMARY KEY)"],
    };

    async fn names(store: &Store, snapshot: Option<&str>) -> Vec<String> {
        let read = |tx: &mut Tx<'_>| -> Result<Vec<String>, StoreError> {
            tx.query("SELECT name FROM items ORDER BY name", &[])?
                .into_iter()
                .map(|mut r| r.take(0))
                .collect()
        };
        match snapshot {
            Some(id) => read_at(store, id, read).await.unwrap(),
            None => store.transact(read).await.unwrap(),
        }
    }

    #[tokio::test]
    async fn an_exported_snapshot_is_read_and_dumped_as_it_was_at_the_export_not_the_begin_and_loads_into_a_fresh_database()
     {
        let Some(server) = PgServer::start() else { return };
        let url = server.create_database("source");
        let store = Store::open(&url, &[&ITEMS]).await.unwrap();
        let insert = |name: &'static str| {
            move |tx: &mut Tx<'_>| {
                tx.execute("INSERT INTO items (name) VALUES ($1)", &[name.into()]).map(|_| ())
            }
        };
        // Begun before the apple is committed, exported after: the snapshot is taken at
        // the export (what a cut relies on to begin before its pause).
        let begun = Exporter::connect(&url).await.unwrap().begin().await.unwrap();
        store.transact(insert("apple")).await.unwrap();
        let exported = begun.export().await.unwrap();
        store.transact(insert("pear")).await.unwrap();

        assert_eq!(
            names(&store, Some(exported.id())).await,
            ["apple"],
            "the snapshot holds what was committed before the export, even after BEGIN, and nothing later"
        );
        let dir = tempfile::tempdir().unwrap();
        let dump = dir.path().join("source.dump");
        exported.dump(&url, &dump).await.unwrap();
        exported.close().await;

        let copy = server.create_database("copy");
        load(&copy, &dump).await.unwrap();
        let restored = Store::open(&copy, &[]).await.unwrap();
        assert_eq!(
            names(&restored, None).await,
            ["apple"],
            "the dump holds what was committed before the export"
        );
        assert!(load(&copy, &dump).await.is_err(), "a database that already holds the tables is refused");
    }
}
