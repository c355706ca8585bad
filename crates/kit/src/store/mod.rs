//! A store handle: one database, where every transaction is one closure run on the
//! database's own thread (one hop per transaction, never per statement).
//!
//! Callers write SQL once with `$1` placeholders and dialect-neutral [`Param`]s; the
//! backend chosen by URL scheme (`sqlite:` for the embedded mode, `postgres://` or
//! `postgresql://` for the distributed mode) adapts it. Closures are synchronous on
//! purpose: no network call can sit inside a transaction.

mod migrate;
mod postgres;
mod sqlite;
mod value;

use std::sync::Arc;

pub use migrate::Migrations;
pub use value::{FromValue, Param, Row, Value};

/// The SQL dialect of a store, for the rare statement that differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "unsupported store url {0:?}: expected sqlite:PATH, sqlite::memory: or postgres://USER@HOST:PORT/DATABASE"
    )]
    UnsupportedUrl(String),
    #[error("cannot open store {url}: {reason}")]
    Open { url: String, reason: String },
    #[error("database error: {0}")]
    Database(String),
    /// The database aborted the transaction to resolve a conflict with another one
    /// (PostgreSQL's serialization failure or deadlock); running it again may succeed.
    #[error("transaction conflict: {0}")]
    Conflict(String),
    /// The connection to a database server is lost or cannot be made; the next
    /// transaction connects again.
    #[error("database unreachable: {0}")]
    Unreachable(String),
    #[error("column {column}: expected {wanted}, found {found}")]
    Decode { column: usize, found: String, wanted: &'static str },
    #[error("expected one row, found none")]
    NoRow,
    #[error("migration {component} {version} failed: {reason}")]
    Migration { component: String, version: u32, reason: String },
    #[error("the store's database thread has stopped")]
    Closed,
    #[error("a transaction closure panicked: {0}")]
    Panicked(String),
}

impl StoreError {
    /// Busy or locked databases, conflicts, lost connections and stopped threads may
    /// succeed on a later attempt.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Database(msg) => msg.contains("locked") || msg.contains("busy"),
            StoreError::Conflict(_) | StoreError::Unreachable(_) | StoreError::Closed => true,
            _ => false,
        }
    }
}

/// The statements a backend runs inside an open transaction.
pub trait Connection {
    fn dialect(&self) -> Dialect;
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<usize, StoreError>;
    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError>;
    /// Runs a script of several statements without parameters (migrations).
    fn execute_script(&mut self, sql: &str) -> Result<(), StoreError>;
}

type AfterCommit = Box<dyn FnOnce() + Send>;

/// An open transaction, handed to the closure given to [`Store::transact`].
pub struct Tx<'c> {
    conn: &'c mut dyn Connection,
    after_commit: Vec<AfterCommit>,
    savepoints: u32,
}

impl<'c> Tx<'c> {
    pub(crate) fn new(conn: &'c mut dyn Connection) -> Self {
        Self { conn, after_commit: Vec::new(), savepoints: 0 }
    }

    pub fn dialect(&self) -> Dialect {
        self.conn.dialect()
    }

    /// Runs a statement and returns the number of rows it changed.
    pub fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<usize, StoreError> {
        self.conn.execute(sql, params)
    }

    /// Runs a script of several `;`-separated statements without parameters.
    pub fn execute_script(&mut self, sql: &str) -> Result<(), StoreError> {
        self.conn.execute_script(sql)
    }

    pub fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        self.conn.query(sql, params)
    }

    pub fn query_opt(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>, StoreError> {
        Ok(self.conn.query(sql, params)?.into_iter().next())
    }

    pub fn query_one(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Row, StoreError> {
        self.query_opt(sql, params)?.ok_or(StoreError::NoRow)
    }

    /// Runs `f` inside a savepoint: its effects are undone if it fails, and the
    /// surrounding transaction goes on.
    pub fn savepoint<R, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&mut Tx<'c>) -> Result<R, E>,
    ) -> Result<R, E> {
        self.savepoints += 1;
        let name = format!("kit_sp{}", self.savepoints);
        self.conn.execute(&format!("SAVEPOINT {name}"), &[])?;
        let result = f(self);
        match &result {
            Ok(_) => self.conn.execute(&format!("RELEASE {name}"), &[])?,
            Err(_) => {
                self.conn.execute(&format!("ROLLBACK TO {name}"), &[])?;
                self.conn.execute(&format!("RELEASE {name}"), &[])?
            }
        };
        self.savepoints -= 1;
        result
    }

    /// Registers work to run once the transaction has committed (never on rollback),
    /// e.g. waking the relay.
    pub fn after_commit(&mut self, f: impl FnOnce() + Send + 'static) {
        self.after_commit.push(Box::new(f));
    }

    pub(crate) fn into_after_commit(self) -> Vec<AfterCommit> {
        self.after_commit
    }
}

type Job = Box<dyn FnOnce(&mut dyn Backend) + Send>;

/// What a database thread offers the store: running one job in one transaction.
pub(crate) trait Backend {
    fn run(&mut self, body: &mut dyn FnMut(&mut Tx<'_>) -> bool) -> Result<Vec<AfterCommit>, StoreError>;
}

/// Starts a database thread that opens its backend with `open`, then runs jobs until
/// every handle to the store is dropped; returns the job queue once the backend is open.
async fn spawn_thread<B: Backend + 'static>(
    url: &str,
    open: impl FnOnce() -> Result<B, String> + Send + 'static,
) -> Result<std::sync::mpsc::Sender<Job>, StoreError> {
    let (jobs, queue) = std::sync::mpsc::channel::<Job>();
    let (ready, opened) = tokio::sync::oneshot::channel();
    let url_owned = url.to_owned();
    std::thread::Builder::new()
        .name(format!("store {url}"))
        .spawn(move || match open() {
            Ok(mut backend) => {
                let _ = ready.send(Ok(()));
                while let Ok(job) = queue.recv() {
                    job(&mut backend);
                }
            }
            Err(reason) => {
                let _ = ready.send(Err(StoreError::Open { url: url_owned, reason }));
            }
        })
        .map_err(|e| StoreError::Open { url: url.to_owned(), reason: e.to_string() })?;
    opened.await.map_err(|_| StoreError::Closed)??;
    Ok(jobs)
}

/// A cheap, cloneable handle to one database.
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    url: String,
    dialect: Dialect,
    jobs: std::sync::mpsc::Sender<Job>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("url", &self.inner.url).finish()
    }
}

impl Store {
    /// Opens the store named by `url` and applies `migrations` that have not run yet.
    pub async fn open(url: &str, migrations: &[&Migrations]) -> Result<Store, StoreError> {
        let (dialect, jobs) = if let Some(path) = url.strip_prefix("sqlite:") {
            (Dialect::Sqlite, sqlite::spawn(url, path).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Dialect::Postgres, postgres::spawn(url).await?)
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        let store = Store { inner: Arc::new(StoreInner { url: url.to_owned(), dialect, jobs }) };
        migrate::apply(&store, migrations).await?;
        Ok(store)
    }

    pub fn url(&self) -> &str {
        &self.inner.url
    }

    pub fn dialect(&self) -> Dialect {
        self.inner.dialect
    }

    /// Runs `f` in one transaction on the database thread: committed when it returns
    /// `Ok`, rolled back when it returns `Err` or panics.
    pub async fn transact<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&mut Tx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel::<Result<R, E>>();
        let job: Job = Box::new(move |backend| {
            let mut f = Some(f);
            let mut outcome: Option<Result<R, E>> = None;
            let ran = backend.run(&mut |tx| {
                let f = f.take().expect("a transaction body runs once");
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(tx)))
                    .unwrap_or_else(|panic| Err(StoreError::Panicked(panic_text(&panic)).into()));
                let ok = result.is_ok();
                outcome = Some(result);
                ok
            });
            let result = match (ran, outcome) {
                (Ok(hooks), Some(result)) => {
                    hooks.into_iter().for_each(|hook| hook());
                    result
                }
                (Err(e), Some(Err(inner))) => {
                    tracing::warn!(error = %e, "rollback failed");
                    Err(inner)
                }
                (Err(e), _) => Err(e.into()),
                (Ok(_), None) => Err(StoreError::Closed.into()),
            };
            let _ = reply.send(result);
        });
        self.inner.jobs.send(job).map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// The message of a caught panic, for error texts.
pub(crate) fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests;
