//! PostgreSQL on the synchronous `postgres` crate: one connection on the store's own
//! thread, a prepared-statement cache, and a new connection after one is lost.
//!
//! Transactions run at PostgreSQL's default isolation, READ COMMITTED. A transaction whose
//! connection is lost fails with [`StoreError::Unreachable`]; the next one connects again,
//! so a database server that was killed and restarted needs no service restart.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::time::Duration;

use bytes::BytesMut;
use postgres::error::SqlState;
use postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, NoTls, Statement};

use super::{AfterCommit, Backend, Connection, Dialect, Job, Param, Row, StoreError, Tx, Value};

/// How long connecting may take before the transaction fails as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements kept per connection; the cache starts over when it is full.
const STATEMENT_CACHE: usize = 512;

type BoxError = Box<dyn StdError + Sync + Send>;

/// Starts the database thread for `url` and returns its job queue once it is connected.
pub(super) async fn spawn(url: &str) -> Result<std::sync::mpsc::Sender<Job>, StoreError> {
    let mut config: postgres::Config = url
        .parse()
        .map_err(|e: postgres::Error| StoreError::Open { url: url.to_owned(), reason: e.to_string() })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    super::spawn_thread(url, move || {
        let mut backend = Postgres { config, session: None };
        backend.session().map_err(|e| e.to_string())?;
        Ok(backend)
    })
    .await
}

struct Postgres {
    config: postgres::Config,
    session: Option<Session>,
}

/// One live connection and the statements prepared on it.
struct Session {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl Postgres {
    /// The live session, connecting first when there is none.
    fn session(&mut self) -> Result<&mut Session, StoreError> {
        if self.session.as_ref().is_some_and(|s| s.client.is_closed()) {
            self.session = None;
        }
        if self.session.is_none() {
            let client = self.config.connect(NoTls).map_err(db)?;
            self.session = Some(Session { client, statements: HashMap::new() });
        }
        Ok(self.session.as_mut().expect("a session was just made"))
    }

    /// Begins a transaction. A connection found dead at BEGIN is replaced once: nothing
    /// has run yet, so the first transaction after a server restart succeeds.
    fn begin(&mut self) -> Result<(), StoreError> {
        match self.session()?.client.batch_execute("BEGIN") {
            Ok(()) => Ok(()),
            Err(e) if lost(&e) => {
                self.session = None;
                self.session()?.client.batch_execute("BEGIN").map_err(|e| self.fail(e))
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Maps `e`, dropping the session when it says the connection is gone.
    fn fail(&mut self, e: postgres::Error) -> StoreError {
        if lost(&e) {
            self.session = None;
        }
        db(e)
    }
}

impl Backend for Postgres {
    fn run(&mut self, body: &mut dyn FnMut(&mut Tx<'_>) -> bool) -> Result<Vec<AfterCommit>, StoreError> {
        self.begin()?;
        let session = self.session.as_mut().expect("begin leaves a session");
        let mut conn = PostgresTx { session, aborted: false, lost: false };
        let mut tx = Tx::new(&mut conn);
        let commit = body(&mut tx);
        let hooks = tx.into_after_commit();
        let (aborted, lost) = (conn.aborted, conn.lost);
        if lost {
            self.session = None;
            return Err(StoreError::Unreachable("the connection was lost during the transaction".into()));
        }
        let end = if commit && !aborted { "COMMIT" } else { "ROLLBACK" };
        let ended = self.session.as_mut().expect("the session is still there").client.batch_execute(end);
        ended.map_err(|e| self.fail(e))?;
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
    /// A statement failed and no savepoint rollback has undone it since.
    aborted: bool,
    lost: bool,
}

impl PostgresTx<'_> {
    fn statement(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.session.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.session.client.prepare(sql)?;
        if self.session.statements.len() >= STATEMENT_CACHE {
            self.session.statements.clear();
        }
        self.session.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    /// Records what a statement's outcome says about the transaction.
    fn note<T>(&mut self, sql: &str, result: Result<T, postgres::Error>) -> Result<T, StoreError> {
        match result {
            Ok(v) => {
                if sql.starts_with("ROLLBACK TO ") {
                    self.aborted = false;
                }
                Ok(v)
            }
            Err(e) => {
                self.aborted = true;
                self.lost |= lost(&e);
                Err(db(e))
            }
        }
    }
}

impl Connection for PostgresTx<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<usize, StoreError> {
        let binds: Vec<Bind<'_, '_>> = params.iter().map(Bind).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = binds.iter().map(|b| b as &(dyn ToSql + Sync)).collect();
        let result = self.statement(sql).and_then(|st| self.session.client.execute(&st, &refs));
        self.note(sql, result).map(|n| n as usize)
    }

    fn execute_script(&mut self, sql: &str) -> Result<(), StoreError> {
        let result = self.session.client.batch_execute(sql);
        // A script may change tables that cached statements read.
        self.session.statements.clear();
        self.note(sql, result)
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        let binds: Vec<Bind<'_, '_>> = params.iter().map(Bind).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = binds.iter().map(|b| b as &(dyn ToSql + Sync)).collect();
        let result = self.statement(sql).and_then(|st| self.session.client.query(&st, &refs));
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
fn lost(e: &postgres::Error) -> bool {
    let shutting_down = [SqlState::ADMIN_SHUTDOWN, SqlState::CRASH_SHUTDOWN, SqlState::CANNOT_CONNECT_NOW];
    e.is_closed()
        || e.source().is_some_and(|s| s.is::<std::io::Error>())
        || e.code().is_some_and(|c| c.code().starts_with("08") || shutting_down.contains(c))
        || (e.as_db_error().is_none() && e.to_string().starts_with("error connecting"))
}

fn db(e: postgres::Error) -> StoreError {
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
        _ if lost(&e) => StoreError::Unreachable(text),
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
