//! SQLite on rusqlite: one connection on its own thread, WAL, prepared-statement cache.

use std::sync::mpsc;

use rusqlite::types::{ToSqlOutput, ValueRef};

use super::{AfterCommit, Backend, Connection, Dialect, Job, Param, Row, StoreError, Tx, Value};

/// Starts the database thread for `path` and returns its job queue once it is open.
pub(super) async fn spawn(url: &str, path: &str) -> Result<mpsc::Sender<Job>, StoreError> {
    let path = path.to_owned();
    super::spawn_thread(url, move || open(&path).map(|conn| Sqlite { conn }).map_err(|e| e.to_string())).await
}

fn open(path: &str) -> rusqlite::Result<rusqlite::Connection> {
    let conn = if path == ":memory:" {
        rusqlite::Connection::open_in_memory()?
    } else {
        if let Some(dir) = std::path::Path::new(path).parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        rusqlite::Connection::open(path)?
    };
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(256);
    Ok(conn)
}

struct Sqlite {
    conn: rusqlite::Connection,
}

impl Backend for Sqlite {
    fn run(
        &mut self,
        _deadline: Option<std::time::Instant>,
        body: &mut dyn FnMut(&mut Tx<'_>) -> bool,
    ) -> Result<Vec<AfterCommit>, StoreError> {
        control(&self.conn, "BEGIN IMMEDIATE").map_err(db)?;
        let mut conn = SqliteTx { conn: &self.conn };
        let mut tx = Tx::new(&mut conn);
        let commit = body(&mut tx);
        let hooks = tx.into_after_commit();
        if commit {
            if let Err(e) = control(&self.conn, "COMMIT") {
                let _ = control(&self.conn, "ROLLBACK");
                return Err(db(e));
            }
            Ok(hooks)
        } else {
            control(&self.conn, "ROLLBACK").map_err(db)?;
            Ok(Vec::new())
        }
    }
}

/// Runs a transaction-control statement from the statement cache: parsing `BEGIN` and
/// `COMMIT` anew for every transaction showed in profiles.
fn control(conn: &rusqlite::Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

pub(super) struct SqliteTx<'c> {
    pub(super) conn: &'c rusqlite::Connection,
}

impl Connection for SqliteTx<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<usize, StoreError> {
        let mut stmt = self.conn.prepare_cached(&placeholders(sql)).map_err(db)?;
        stmt.execute(rusqlite::params_from_iter(params.iter().map(Bind))).map_err(db)
    }

    fn execute_script(&mut self, sql: &str) -> Result<(), StoreError> {
        self.conn.execute_batch(sql).map_err(db)
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&placeholders(sql)).map_err(db)?;
        let width = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params.iter().map(Bind))).map_err(db)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(db)? {
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                values.push(match row.get_ref(i).map_err(db)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    ValueRef::Real(v) => Value::Real(v),
                    ValueRef::Text(v) => Value::Text(String::from_utf8_lossy(v).into_owned()),
                    ValueRef::Blob(v) => Value::Blob(v.to_vec()),
                });
            }
            out.push(Row::new(values));
        }
        Ok(out)
    }
}

struct Bind<'p, 'a>(&'p Param<'a>);

impl rusqlite::ToSql for Bind<'_, '_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self.0 {
            Param::Null => ValueRef::Null,
            Param::Int(v) => ValueRef::Integer(v),
            Param::Real(v) => ValueRef::Real(v),
            Param::Text(v) => ValueRef::Text(v.as_bytes()),
            Param::Blob(v) => ValueRef::Blob(v),
        }))
    }
}

/// Rewrites PostgreSQL's `$N` placeholders as SQLite's `?N` (outside string literals).
fn placeholders(sql: &str) -> std::borrow::Cow<'_, str> {
    if numbered_in_order(sql) {
        return sql.into();
    }
    let mut out = String::with_capacity(sql.len());
    let mut in_literal = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => in_literal = !in_literal,
            '$' if !in_literal && chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push('?');
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out.into()
}

/// Whether every `$N` first appears in ascending order, so SQLite's own numbering of
/// `$name` parameters (by first appearance) already gives `$N` the index N and the text
/// needs no rewrite (the common case, and no allocation per statement).
fn numbered_in_order(sql: &str) -> bool {
    let bytes = sql.as_bytes();
    let (mut highest, mut in_literal, mut i) = (0u32, false, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => in_literal = !in_literal,
            b'$' if !in_literal => {
                let digits = bytes[i + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
                let n: u32 = sql[i + 1..i + 1 + digits].parse().unwrap_or(0);
                if n > highest + 1 || n == 0 {
                    return false;
                }
                highest = highest.max(n);
                i += digits;
            }
            _ => {}
        }
        i += 1;
    }
    true
}

/// A failure of the database file itself (busy past the busy timeout, locked, full, an
/// I/O error, unopenable or read-only) is the store's, not the statement's: `Unavailable`.
fn db(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::*;
    match e.sqlite_error_code() {
        Some(
            DatabaseBusy | DatabaseLocked | DiskFull | SystemIoFailure | CannotOpen | ReadOnly | OutOfMemory,
        ) => StoreError::Unavailable(format!("{e} (the database file cannot serve now; try again)")),
        _ => StoreError::Database(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn dollar_placeholders_become_numbered_question_marks_outside_literals() {
        assert_eq!(
            placeholders("SELECT '$1', a FROM t WHERE b = $2 AND c = $10"),
            "SELECT '$1', a FROM t WHERE b = ?2 AND c = ?10"
        );
    }

    #[test]
    fn placeholders_numbered_in_order_of_first_use_are_left_as_they_are() {
        let sql = "UPDATE t SET a = $1, b = $2 WHERE a < $1 AND c = $3";
        assert!(matches!(placeholders(sql), std::borrow::Cow::Borrowed(s) if s == sql));
        assert!(matches!(placeholders("SELECT $2, $1"), std::borrow::Cow::Owned(_)));
    }
}
