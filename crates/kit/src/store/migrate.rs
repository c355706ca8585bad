//! Schema migrations per dialect, applied once each and recorded in `kit_migrations`.

use super::{Dialect, Store, StoreError};

/// The ordered migrations of one component (the kit, a service), one SQL text per
/// version and dialect, usually `include_str!` of `migrations/<dialect>/NNNN_name.sql`.
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    pub component: &'static str,
    pub sqlite: &'static [&'static str],
    pub postgres: &'static [&'static str],
}

pub(super) async fn apply(store: &Store, all: &[&Migrations]) -> Result<(), StoreError> {
    let dialect = store.dialect();
    let plan: Vec<(String, Vec<&'static str>)> = all
        .iter()
        .map(|m| {
            let steps = match dialect {
                Dialect::Sqlite => m.sqlite,
                Dialect::Postgres => m.postgres,
            };
            (m.component.to_owned(), steps.to_vec())
        })
        .collect();
    store
        .transact_unbounded(move |tx| {
            if tx.dialect() == Dialect::Postgres {
                // A migration may rightly take long; the server's bounds do not apply.
                tx.execute("SET LOCAL statement_timeout = 0", &[])?;
                tx.execute("SET LOCAL lock_timeout = 0", &[])?;
                // Stores opening the same database at once migrate one after another; each
                // statement after the lock sees what the previous one committed.
                tx.execute("SELECT pg_advisory_xact_lock(7170617)", &[])?;
            }
            tx.execute(
                "CREATE TABLE IF NOT EXISTS kit_migrations (component TEXT NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (component, version))",
                &[],
            )?;
            for (component, steps) in &plan {
                for (index, sql) in steps.iter().enumerate() {
                    let version = index as u32 + 1;
                    let done = tx
                        .query_opt(
                            "SELECT 1 FROM kit_migrations WHERE component = $1 AND version = $2",
                            &[component.into(), version.into()],
                        )?
                        .is_some();
                    if done {
                        continue;
                    }
                    tx.execute_script(sql).map_err(|e| StoreError::Migration {
                        component: component.clone(),
                        version,
                        reason: e.to_string(),
                    })?;
                    tx.execute(
                        "INSERT INTO kit_migrations (component, version) VALUES ($1, $2)",
                        &[component.into(), version.into()],
                    )?;
                }
            }
            Ok(())
        })
        .await
}
