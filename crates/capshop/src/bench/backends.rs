//! Where a run's pipelines keep their data: fresh SQLite files and an embedded log in the
//! run's directory, or fresh PostgreSQL databases and a fresh JetStream namespace on servers
//! the run starts for itself, as `up --distributed` starts them.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::{BusKind, DbKind};
use crate::distributed::BenchServers;

pub struct Backends {
    dir: PathBuf,
    pub db: DbKind,
    pub servers: BenchServers,
}

impl Backends {
    pub async fn start(dir: &Path, bus: BusKind, db: DbKind) -> anyhow::Result<Self> {
        let servers = BenchServers::start(dir, bus == BusKind::Nats, db == DbKind::Postgres).await?;
        Ok(Self { dir: dir.to_owned(), db, servers })
    }

    /// A fresh, empty store named `name` of the pipeline run `run`.
    pub async fn store(&self, run: &str, name: &str) -> anyhow::Result<String> {
        match &self.servers.postgres {
            None => {
                let dir = self.dir.join(run);
                std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
                Ok(format!("sqlite:{}", dir.join(format!("{name}.db")).display()))
            }
            Some(base) => {
                let database = format!("bench_{}_{}", token(run), token(name));
                let admin = format!("{base}/postgres");
                let (drop, create) = (
                    format!("DROP DATABASE IF EXISTS \"{database}\""),
                    format!("CREATE DATABASE \"{database}\""),
                );
                tokio::task::spawn_blocking(move || {
                    // One statement each: PostgreSQL runs neither inside a transaction block.
                    let mut client = postgres::Client::connect(&admin, postgres::NoTls)?;
                    client.batch_execute(&drop)?;
                    client.batch_execute(&create)
                })
                .await?
                .with_context(|| format!("cannot create the database {database}"))?;
                Ok(format!("{base}/{database}"))
            }
        }
    }

    /// A fresh bus for the pipeline run `run`: its own log file, or its own JetStream prefix.
    pub fn bus_url(&self, run: &str) -> anyhow::Result<String> {
        Ok(match &self.servers.nats {
            None => {
                let dir = self.dir.join(run);
                std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
                format!("embedded:{}", dir.join("bus.db").display())
            }
            Some(nats) => format!("{nats}?prefix=bench{}", token(run).replace('_', "")),
        })
    }
}

/// `name` with only ASCII letters, digits and underscores.
fn token(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}
