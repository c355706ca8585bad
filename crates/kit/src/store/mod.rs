//! A store handle: one database, where every transaction is one closure run on the
//! database's own thread (one hop per transaction, never per statement).
//!
//! Callers write SQL once with `$1` placeholders and dialect-neutral [`Param`]s; the
//! backend chosen by URL scheme (`sqlite:` for the embedded mode, `postgres://` or
//! `postgresql://` for the distributed mode) adapts it. Closures are synchronous on
//! purpose: no network call can sit inside a transaction.

pub mod copy;
mod migrate;
pub mod pg_snapshot;
mod postgres;
pub mod snapshot;
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
    /// The database cannot serve now: the connection is refused or lost, or the server
    /// did not answer within the call bound. Not the caller's fault: try again later (an
    /// HTTP handler answers 503, a consumer keeps its deliveries); the next transaction
    /// connects again.
    #[error("database unavailable: {0}")]
    Unavailable(String),
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
    /// Busy or locked databases, conflicts, unavailable databases and stopped threads may
    /// succeed on a later attempt. They are the store's failure, not the work's: a consumer
    /// gives its deliveries back without using an attempt.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Database(msg) => msg.contains("locked") || msg.contains("busy"),
            StoreError::Conflict(_) | StoreError::Unavailable(_) | StoreError::Closed => true,
            _ => false,
        }
    }

    /// Whether the database itself is gone for this transaction (refused, lost, not
    /// answering), so no later statement of it can succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Closed)
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
    /// Why the database became unavailable during this transaction, once it did: every
    /// later statement fails at once with it instead of waiting on a dead connection.
    unavailable: Option<String>,
}

impl<'c> Tx<'c> {
    pub(crate) fn new(conn: &'c mut dyn Connection) -> Self {
        Self { conn, after_commit: Vec::new(), savepoints: 0, unavailable: None }
    }

    pub fn dialect(&self) -> Dialect {
        self.conn.dialect()
    }

    /// Runs a statement and returns the number of rows it changed.
    pub fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<usize, StoreError> {
        self.guarded(|conn| conn.execute(sql, params))
    }

    /// Runs a script of several `;`-separated statements without parameters.
    pub fn execute_script(&mut self, sql: &str) -> Result<(), StoreError> {
        self.guarded(|conn| conn.execute_script(sql))
    }

    pub fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        self.guarded(|conn| conn.query(sql, params))
    }

    pub fn query_opt(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    pub fn query_one(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Row, StoreError> {
        self.query_opt(sql, params)?.ok_or(StoreError::NoRow)
    }

    /// The error every statement of this transaction gives since the database became
    /// unavailable in it, if it did: whatever a body made of a failed statement, the
    /// transaction cannot commit, and it is not the body's fault.
    pub fn unavailable(&self) -> Option<StoreError> {
        self.unavailable.clone().map(StoreError::Unavailable)
    }

    fn guarded<T>(
        &mut self,
        run: impl FnOnce(&mut dyn Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if let Some(e) = self.unavailable() {
            return Err(e);
        }
        let result = run(self.conn);
        if let Err(e) = &result
            && e.is_unavailable()
        {
            self.unavailable = Some(match e {
                StoreError::Unavailable(reason) => reason.clone(),
                other => other.to_string(),
            });
        }
        result
    }

    /// Runs `f` inside a savepoint: its effects are undone if it fails, and the
    /// surrounding transaction goes on.
    ///
    /// A body that returns `Ok` after swallowing a failed statement fails here too on
    /// PostgreSQL (which refuses the `RELEASE` of an aborted savepoint); its effects are
    /// undone the same way, so the transaction goes on rather than staying aborted.
    pub fn savepoint<R, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&mut Tx<'c>) -> Result<R, E>,
    ) -> Result<R, E> {
        let name = format!("kit_sp{}", self.savepoints + 1);
        self.execute(&format!("SAVEPOINT {name}"), &[])?;
        self.savepoints += 1;
        let result = f(self);
        let ended = match &result {
            Ok(_) => match self.execute(&format!("RELEASE {name}"), &[]) {
                Ok(_) => Ok(()),
                Err(e) if e.is_unavailable() => Err(e),
                Err(e) => self.undo(&name).and(Err(StoreError::Database(format!(
                    "the savepoint was rolled back: a statement in it failed and the body went on ({e})"
                )))),
            },
            Err(_) => self.undo(&name),
        };
        self.savepoints -= 1;
        ended?;
        result
    }

    /// Rolls back to the savepoint `name` and releases it.
    fn undo(&mut self, name: &str) -> Result<(), StoreError> {
        self.execute(&format!("ROLLBACK TO {name}"), &[])?;
        self.execute(&format!("RELEASE {name}"), &[])?;
        Ok(())
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

/// What a database thread offers the store: running one job in one transaction, with
/// every call to a database server answered by `deadline` (none: no bound).
pub(crate) trait Backend {
    fn run(
        &mut self,
        deadline: Option<std::time::Instant>,
        body: &mut dyn FnMut(&mut Tx<'_>) -> bool,
    ) -> Result<Vec<AfterCommit>, StoreError>;
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
    /// How long a transaction may wait for a database server (none for SQLite).
    call_timeout: Option<std::time::Duration>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("url", &self.inner.url).finish()
    }
}

impl Store {
    /// Opens the store named by `url` and applies `migrations` that have not run yet.
    pub async fn open(url: &str, migrations: &[&Migrations]) -> Result<Store, StoreError> {
        let (dialect, jobs, call_timeout) = if let Some(path) = url.strip_prefix("sqlite:") {
            (Dialect::Sqlite, sqlite::spawn(url, path).await?, None)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let (jobs, bound) = postgres::spawn(url).await?;
            (Dialect::Postgres, jobs, Some(bound))
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        let inner = StoreInner { url: url.to_owned(), dialect, jobs, call_timeout };
        let store = Store { inner: Arc::new(inner) };
        migrate::apply(&store, migrations).await?;
        Ok(store)
    }

    pub fn url(&self) -> &str {
        &self.inner.url
    }

    pub fn dialect(&self) -> Dialect {
        self.inner.dialect
    }

    /// How long a transaction may wait for the database server, counted from when it is
    /// submitted; past it the transaction fails with [`StoreError::Unavailable`]. `None`
    /// for SQLite, which has no server to wait for.
    pub fn call_timeout(&self) -> Option<std::time::Duration> {
        self.inner.call_timeout
    }

    /// Runs `f` in one transaction on the database thread: committed when it returns
    /// `Ok`, rolled back when it returns `Err` or panics. On PostgreSQL it answers within
    /// [`Store::call_timeout`], with [`StoreError::Unavailable`] when the server does not.
    pub async fn transact<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&mut Tx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.run_job(self.inner.call_timeout, f).await
    }

    /// Like [`Store::transact`] without the call bound, for work that may rightly take
    /// long (migrations, which may also wait for another process's migrations).
    pub(crate) async fn transact_unbounded<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&mut Tx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.run_job(None, f).await
    }

    async fn run_job<R, E, F>(&self, bound: Option<std::time::Duration>, f: F) -> Result<R, E>
    where
        F: FnOnce(&mut Tx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel::<Result<R, E>>();
        // Real time, not tokio's: the bound holds on the database thread, also while a
        // test's paused clock stands still.
        let deadline = bound.map(|bound| std::time::Instant::now() + bound);
        let job: Job = Box::new(move |backend| {
            let mut f = Some(f);
            let mut outcome: Option<Result<R, E>> = None;
            let ran = backend.run(deadline, &mut |tx| {
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
