//! PostgreSQL on `tokio-postgres`, driven by a runtime of the store's own thread: one
//! connection, a prepared-statement cache, a new connection after one is lost, and a
//! bound on every call to the server.
//!
//! Transactions run at PostgreSQL's default isolation, READ COMMITTED. A server that is
//! stopped or cut off enforces nothing, so the client does: every transaction must get its
//! answers (connecting included) within the call bound (5 s; `call_timeout=SECONDS` in the
//! store URL) counted from when it was submitted. A call that does not answer in time, or
//! whose connection is refused or lost, fails with [`StoreError::Unavailable`]; the
//! connection is dropped and the next transaction connects again, so a server that was
//! killed, stopped or restarted needs no service restart. Below the bound the server
//! cancels slow statements itself (`statement_timeout`, `lock_timeout`), which keeps the
//! connection, and TCP keepalives find a silent peer behind an idle connection.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, NoTls, Statement};

use super::{AfterCommit, Backend, Connection, Dialect, Job, Param, Row, StoreError, Tx, Value};

/// How long a transaction may wait for the server, unless the URL sets `call_timeout`.
pub(super) const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an idle connection stays silent before TCP keepalives probe it.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;

/// Prepared statements kept per connection; the cache starts over when it is full.
const STATEMENT_CACHE: usize = 512;

type BoxError = Box<dyn StdError + Sync + Send>;

/// Starts the database thread for `url`; returns its job queue once it is connected, and
/// the call bound.
pub(super) async fn spawn(url: &str) -> Result<(std::sync::mpsc::Sender<Job>, Duration), StoreError> {
    let open_error = |reason: String| StoreError::Open { url: url.to_owned(), reason };
    let (server_url, Settings { bound, shared }) = split_settings(url).map_err(open_error)?;
    let mut config: tokio_postgres::Config =
        server_url.parse().map_err(|e: tokio_postgres::Error| open_error(e.to_string()))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(bound);
    }
    config
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .keepalives_interval(KEEPALIVE_INTERVAL)
        .keepalives_retries(KEEPALIVE_RETRIES);
    // The server gives up first, with a clean error that keeps the connection; what the
    // URL's own `options` say comes later and wins.
    let server_side = format!(
        "-c statement_timeout={} -c lock_timeout={}",
        (bound * 4 / 5).as_millis().max(1),
        (bound / 2).as_millis().max(1)
    );
    let options = match config.get_options() {
        Some(given) => format!("{server_side} {given}"),
        None => server_side,
    };
    config.options(options);
    let jobs = super::spawn_thread(url, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the store's runtime: {e}"))?;
        let mut backend = Postgres { runtime, config, bound, shared, session: None };
        backend.session(Some(Instant::now() + bound)).map_err(|f| f.into_error(bound).to_string())?;
        Ok(backend)
    })
    .await?;
    Ok((jobs, bound))
}

/// The kit's own settings of a store URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Settings {
    /// `call_timeout=SECONDS`: the bound on every transaction.
    bound: Duration,
    /// `shared=true`: several processes (instances of one service) use the database, and
    /// every transaction first takes the database's advisory lock ([`TURNS_LOCK`]; one
    /// more round trip, after a leading `SET TRANSACTION`), so
    /// their transactions take turns as one process's do on its single connection: the
    /// services' transactions are written for that (read, decide, write), and at READ
    /// COMMITTED two at once could each miss the other's write.
    shared: bool,
}

/// The advisory lock that transactions on a shared database take in turn.
const TURNS_LOCK: i64 = 7_170_618;

/// Takes the kit's own settings out of a store URL (`call_timeout=SECONDS`, fractions
/// allowed; `shared=true`) and gives back the URL for the server with them.
fn split_settings(url: &str) -> Result<(String, Settings), String> {
    let mut settings = Settings { bound: DEFAULT_CALL_TIMEOUT, shared: false };
    let Some((base, query)) = url.split_once('?') else { return Ok((url.to_owned(), settings)) };
    let mut bound = DEFAULT_CALL_TIMEOUT;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("shared", value)) => {
                settings.shared = value.parse().map_err(|_| format!("shared={value}: give true or false"))?;
            }
            Some(("call_timeout", value)) => {
                let seconds =
                    value.parse::<f64>().ok().filter(|s| s.is_finite() && *s > 0.0).ok_or_else(|| {
                        format!(
                            "call_timeout={value}: give a positive number of seconds, e.g. call_timeout=5"
                        )
                    })?;
                bound = Duration::from_secs_f64(seconds);
            }
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() { base.to_owned() } else { format!("{base}?{}", rest.join("&")) };
    settings.bound = bound;
    Ok((url, settings))
}

struct Postgres {
    runtime: tokio::runtime::Runtime,
    config: tokio_postgres::Config,
    bound: Duration,
    shared: bool,
    session: Option<Session>,
}

/// One live connection and the statements prepared on it.
struct Session {
    client: Client,
    /// The task that drives the connection's socket; it runs while a call waits.
    connection: tokio::task::JoinHandle<()>,
    statements: HashMap<String, Statement>,
}

impl Drop for Session {
    fn drop(&mut self) {
        // Closes the socket, so the server ends the backend and rolls back what it held.
        self.connection.abort();
    }
}

/// Why a call to the server failed.
enum Failure {
    Server(tokio_postgres::Error),
    /// No answer before the transaction's deadline.
    TimedOut,
}

impl Failure {
    /// Whether the connection cannot be used any more.
    fn loses_connection(&self) -> bool {
        match self {
            Failure::Server(e) => lost(e),
            Failure::TimedOut => true,
        }
    }

    fn into_error(self, bound: Duration) -> StoreError {
        match self {
            Failure::Server(e) => db(e),
            Failure::TimedOut => StoreError::Unavailable(format!(
                "the database did not answer within {bound:?}; the connection was dropped and the next \
                 transaction connects again (the bound is call_timeout=SECONDS in the store URL)"
            )),
        }
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Server(e)
    }
}

/// Runs one call to the server on the store's runtime, giving up at `deadline`.
fn call<T>(
    runtime: &tokio::runtime::Runtime,
    deadline: Option<Instant>,
    work: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, Failure> {
    match deadline {
        None => runtime.block_on(work).map_err(Failure::Server),
        Some(deadline) if Instant::now() >= deadline => Err(Failure::TimedOut),
        Some(deadline) => {
            let at = tokio::time::Instant::from_std(deadline);
            match runtime.block_on(async { tokio::time::timeout_at(at, work).await }) {
                Ok(result) => result.map_err(Failure::Server),
                Err(_) => Err(Failure::TimedOut),
            }
        }
    }
}

impl Postgres {
    /// The live session, connecting first when there is none.
    fn session(&mut self, deadline: Option<Instant>) -> Result<&mut Session, Failure> {
        if self.session.as_ref().is_some_and(|s| s.client.is_closed()) {
            self.session = None;
        }
        if self.session.is_none() {
            let (client, connection) = call(&self.runtime, deadline, self.config.connect(NoTls))?;
            let connection = self.runtime.spawn(async move {
                let _ = connection.await;
            });
            self.session = Some(Session { client, connection, statements: HashMap::new() });
        }
        Ok(self.session.as_mut().expect("a session was just made"))
    }

    fn try_begin(&mut self, deadline: Option<Instant>) -> Result<(), Failure> {
        self.session(deadline)?;
        let session = self.session.as_ref().expect("a session was just made");
        call(&self.runtime, deadline, session.client.batch_execute("BEGIN"))
    }

    /// Begins a transaction. A connection found dead at BEGIN is replaced once: nothing
    /// has run yet, so the first transaction after a server restart succeeds.
    fn begin(&mut self, deadline: Option<Instant>) -> Result<(), StoreError> {
        match self.try_begin(deadline) {
            Ok(()) => Ok(()),
            Err(Failure::Server(e)) if lost(&e) => {
                self.session = None;
                self.try_begin(deadline).map_err(|f| self.fail(f))
            }
            Err(f) => Err(self.fail(f)),
        }
    }

    /// Maps `failure`, dropping the session when it says the connection is gone.
    fn fail(&mut self, failure: Failure) -> StoreError {
        if failure.loses_connection() {
            self.session = None;
        }
        failure.into_error(self.bound)
    }
}

impl Backend for Postgres {
    fn run(
        &mut self,
        deadline: Option<Instant>,
        body: &mut dyn FnMut(&mut Tx<'_>) -> bool,
    ) -> Result<Vec<AfterCommit>, StoreError> {
        self.begin(deadline)?;
        let session = self.session.as_mut().expect("begin leaves a session");
        let mut conn = PostgresTx {
            session,
            runtime: &self.runtime,
            deadline,
            bound: self.bound,
            aborted: false,
            lost: None,
            turn_pending: self.shared,
        };
        let mut tx = Tx::new(&mut conn);
        let commit = body(&mut tx);
        let hooks = tx.into_after_commit();
        let (aborted, lost) = (conn.aborted, conn.lost.take());
        if let Some(reason) = lost {
            self.session = None;
            return Err(StoreError::Unavailable(reason));
        }
        let end = if commit && !aborted { "COMMIT" } else { "ROLLBACK" };
        let session = self.session.as_ref().expect("the session is still there");
        let ended = call(&self.runtime, deadline, session.client.batch_execute(end));
        ended.map_err(|f| self.fail(f))?;
        match (commit, aborted) {
            // PostgreSQL answers COMMIT of an aborted transaction with a silent rollback;
            // a body that swallowed a failed statement must not pass for committed.
            (true, true) => Err(StoreError::Database(
                "the transaction was rolled back: a statement in it failed and the body went on".into(),
            )),
            (true, false) => Ok(hooks),
            (false, _) => Ok(Vec::new()),
        }
    }
}

struct PostgresTx<'s> {
    session: &'s mut Session,
    runtime: &'s tokio::runtime::Runtime,
    deadline: Option<Instant>,
    bound: Duration,
    /// A statement failed and no savepoint rollback has undone it since.
    aborted: bool,
    /// Why the connection cannot be used any more, once a call lost it or timed out.
    lost: Option<String>,
    /// On a shared database: the transaction has yet to take its turn ([`TURNS_LOCK`]).
    turn_pending: bool,
}

impl PostgresTx<'_> {
    /// Takes the shared database's turn before the transaction's first statement, or
    /// after a leading `SET TRANSACTION` (which must come before any query).
    fn take_turn(&mut self, sql: &str) -> Result<(), StoreError> {
        if !self.turn_pending || sql.starts_with("SET TRANSACTION") {
            return Ok(());
        }
        self.turn_pending = false;
        let lock = format!("SELECT pg_advisory_xact_lock({TURNS_LOCK})");
        let result = call(self.runtime, self.deadline, self.session.client.batch_execute(&lock));
        self.note(&lock, result)
    }

    fn statement(&mut self, sql: &str) -> Result<Statement, Failure> {
        if let Some(statement) = self.session.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = call(self.runtime, self.deadline, self.session.client.prepare(sql))?;
        if self.session.statements.len() >= STATEMENT_CACHE {
            self.session.statements.clear();
        }
        self.session.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    /// Records what a call's outcome says about the transaction.
    fn note<T>(&mut self, sql: &str, result: Result<T, Failure>) -> Result<T, StoreError> {
        if let Some(reason) = &self.lost {
            return Err(StoreError::Unavailable(reason.clone()));
        }
        match result {
            Ok(v) => {
                if sql.starts_with("ROLLBACK TO ") {
                    self.aborted = false;
                }
                Ok(v)
            }
            Err(failure) => {
                self.aborted = true;
                let loses = failure.loses_connection();
                let e = failure.into_error(self.bound);
                if loses {
                    self.lost = Some(e.to_string());
                }
                Err(e)
            }
        }
    }
}

impl Connection for PostgresTx<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<usize, StoreError> {
        self.take_turn(sql)?;
        let binds: Vec<Bind<'_, '_>> = params.iter().map(Bind).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = binds.iter().map(|b| b as &(dyn ToSql + Sync)).collect();
        let result = self
            .statement(sql)
            .and_then(|st| call(self.runtime, self.deadline, self.session.client.execute(&st, &refs)));
        self.note(sql, result).map(|n| n as usize)
    }

    fn execute_script(&mut self, sql: &str) -> Result<(), StoreError> {
        self.take_turn(sql)?;
        let result = call(self.runtime, self.deadline, self.session.client.batch_execute(sql));
        // A script may change tables that cached statements read.
        self.session.statements.clear();
        self.note(sql, result)
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        self.take_turn(sql)?;
        let binds: Vec<Bind<'_, '_>> = params.iter().map(Bind).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = binds.iter().map(|b| b as &(dyn ToSql + Sync)).collect();
        let result = self
            .statement(sql)
            .and_then(|st| call(self.runtime, self.deadline, self.session.client.query(&st, &refs)));
        let rows = self.note(sql, result)?;
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| row.try_get::<_, Cell>(i).map(|c| c.0).map_err(db))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Row::new)
            })
            .collect()
    }
}

/// A parameter bound to the type PostgreSQL inferred for its placeholder: an integer
/// fits any integer, boolean or float column, so callers need not know the width.
#[derive(Debug)]
struct Bind<'p, 'a>(&'p Param<'a>);

impl ToSql for Bind<'_, '_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match *self.0 {
            Param::Null => Ok(IsNull::Yes),
            Param::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(v)?.to_sql(ty, out),
                Type::BOOL => (v != 0).to_sql(ty, out),
                Type::FLOAT8 => (v as f64).to_sql(ty, out),
                Type::FLOAT4 => (v as f32).to_sql(ty, out),
                _ => Err(mismatch("an integer", ty)),
            },
            Param::Real(v) => match *ty {
                Type::FLOAT8 => v.to_sql(ty, out),
                Type::FLOAT4 => (v as f32).to_sql(ty, out),
                _ => Err(mismatch("a float", ty)),
            },
            Param::Text(v) if <&str as ToSql>::accepts(ty) => v.to_sql(ty, out),
            Param::Text(_) => Err(mismatch("text", ty)),
            Param::Blob(v) if *ty == Type::BYTEA => v.to_sql(ty, out),
            Param::Blob(_) => Err(mismatch("a blob", ty)),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn mismatch(given: &str, ty: &Type) -> BoxError {
    format!("a parameter of type {ty} cannot take {given}").into()
}

/// A column value decoded by its PostgreSQL type into the store's [`Value`].
struct Cell(Value);

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(Cell(match *ty {
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Value::Int(i16::from_sql(ty, raw)?.into()),
            Type::OID => Value::Int(u32::from_sql(ty, raw)?.into()),
            Type::BOOL => Value::Int(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f32::from_sql(ty, raw)?.into()),
            Type::NUMERIC => numeric(raw)?,
            Type::BYTEA => Value::Blob(raw.to_vec()),
            Type::VOID => Value::Null,
            _ if <String as FromSql>::accepts(ty) => Value::Text(String::from_sql(ty, raw)?),
            _ => return Err(format!("columns of type {ty} are not supported by the store").into()),
        }))
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Cell(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Decodes PostgreSQL's binary NUMERIC (what `sum` of integers returns): an integer
/// when it has no fraction and fits, else a float.
fn numeric(raw: &[u8]) -> Result<Value, BoxError> {
    let word = |i: usize| -> Result<u16, BoxError> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "a short numeric".into())
    };
    let (ndigits, weight, sign, scale) = (word(0)? as usize, word(1)? as i16, word(2)?, word(3)?);
    if sign == 0xC000 {
        return Ok(Value::Real(f64::NAN));
    }
    let mut whole: Option<i64> = Some(0);
    let mut real = 0f64;
    for i in 0..ndigits {
        let digit = word(4 + i)?;
        let exponent = i32::from(weight) - i as i32;
        real += f64::from(digit) * 10_000f64.powi(exponent);
        whole = match exponent {
            e if e < 0 => whole.filter(|_| digit == 0),
            e => whole
                .and_then(|w| w.checked_add(i64::from(digit).checked_mul(10_000i64.checked_pow(e as u32)?)?)),
        };
    }
    let negative = sign == 0x4000;
    Ok(match whole {
        Some(w) if scale == 0 || real.fract() == 0.0 => Value::Int(if negative { -w } else { w }),
        _ => Value::Real(if negative { -real } else { real }),
    })
}

/// Whether `e` means the connection is gone (closed, broken, or the server shutting down).
fn lost(e: &tokio_postgres::Error) -> bool {
    let shutting_down = [SqlState::ADMIN_SHUTDOWN, SqlState::CRASH_SHUTDOWN, SqlState::CANNOT_CONNECT_NOW];
    e.is_closed()
        || e.source().is_some_and(|s| s.is::<std::io::Error>())
        || e.code().is_some_and(|c| c.code().starts_with("08") || shutting_down.contains(c))
        || (e.as_db_error().is_none() && e.to_string().starts_with("error connecting"))
}

fn db(e: tokio_postgres::Error) -> StoreError {
    let text = match e.as_db_error() {
        Some(d) => match d.detail() {
            Some(detail) => format!("{}: {} ({detail})", d.code().code(), d.message()),
            None => format!("{}: {}", d.code().code(), d.message()),
        },
        None => match e.source() {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    };
    match e.code() {
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED => {
            StoreError::Conflict(text)
        }
        // The server's own bounds (statement_timeout, lock_timeout): busy, not wrong.
        Some(c) if *c == SqlState::QUERY_CANCELED || *c == SqlState::LOCK_NOT_AVAILABLE => {
            StoreError::Unavailable(format!("the database gave up on a slow statement: {text}"))
        }
        _ if lost(&e) => StoreError::Unavailable(text),
        _ => StoreError::Database(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(ndigits: u16, weight: i16, sign: u16, scale: u16, digits: &[u16]) -> Vec<u8> {
        [ndigits, weight as u16, sign, scale].iter().chain(digits).flat_map(|w| w.to_be_bytes()).collect()
    }

    #[test]
    fn a_store_url_sets_the_call_bound_and_keeps_the_servers_own_settings() {
        let (url, settings) =
            split_settings("postgres://a@h:1/db?call_timeout=2.5&sslmode=disable&shared=true").unwrap();
        assert_eq!(
            (url.as_str(), settings),
            (
                "postgres://a@h:1/db?sslmode=disable",
                Settings { bound: Duration::from_millis(2500), shared: true }
            )
        );
        let (url, settings) = split_settings("postgres://a@h:1/db").unwrap();
        assert_eq!(
            (url.as_str(), settings),
            ("postgres://a@h:1/db", Settings { bound: DEFAULT_CALL_TIMEOUT, shared: false })
        );
        assert!(split_settings("postgres://a@h:1/db?shared=yes").unwrap_err().contains("true or false"));
        let refused = split_settings("postgres://a@h:1/db?call_timeout=0").unwrap_err();
        assert!(refused.contains("give a positive number of seconds"), "{refused}");
    }

    #[test]
    fn numerics_without_a_fraction_decode_as_integers_and_others_as_floats() {
        assert_eq!(numeric(&encode(0, 0, 0, 0, &[])).unwrap(), Value::Int(0));
        assert_eq!(numeric(&encode(2, 1, 0, 0, &[12, 3456])).unwrap(), Value::Int(123_456));
        assert_eq!(numeric(&encode(1, 1, 0x4000, 0, &[7])).unwrap(), Value::Int(-70_000));
        assert_eq!(numeric(&encode(2, 0, 0, 1, &[3, 5000])).unwrap(), Value::Real(3.5));
        assert_eq!(
            numeric(&encode(3, 4, 0, 0, &[9, 2233, 7203])).unwrap(),
            Value::Int(92_233_720_300_000_000)
        );
    }
}
