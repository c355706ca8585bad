//! `capshop after-promote`: what to run once a PostgreSQL standby has been promoted, before
//! the services write to it (Patroni's `post_promote` callback, or by hand).
//!
//! With asynchronous replication the promoted database may lack the last events the old
//! primary committed and relayed: the bus already has them, under seqs this database would
//! hand out again. A consumer that applied up to a seq takes a new event under an old seq
//! for one it has seen and skips it. Raising each service's outbox head to the bus's head
//! for its stream makes the next event's seq a new one (docs/DEPLOY.md, "The failover
//! choices, measured").

use anyhow::Context as _;
use clap::Args;
use kit::bus::Bus;
use shop::stores::StoreLocation;

#[derive(Args)]
pub struct AfterPromoteArgs {
    /// The promoted server, as the services' base URL without a database
    /// (postgres://capshop@pg2:5432); each part's database is capshop_<part>.
    #[arg(long, env = "CAPSHOP_DB")]
    db: String,
    /// The bus the services publish to, e.g. nats://nats1:4222.
    #[arg(long, env = "CAPSHOP_BUS")]
    bus: String,
}

/// One part's outbox head before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub part: String,
    pub was: u64,
    /// The bus's head for the part's stream: what the outbox head is now at least.
    pub bus: u64,
}

impl Head {
    pub fn raised(&self) -> bool {
        self.was < self.bus
    }
}

pub async fn run(args: AfterPromoteArgs) -> anyhow::Result<()> {
    let bus = kit::bus::connect(&args.bus)
        .await
        .with_context(|| format!("cannot reach the bus at {}", args.bus))?;
    for head in raise_outbox_heads(&args.db, &StoreLocation::parts(), bus.as_ref()).await? {
        let verdict = if head.raised() { "raised" } else { "already past the bus" };
        println!("{:<14} outbox head {:>8}, bus {:>8}: {verdict}", head.part, head.was, head.bus);
    }
    Ok(())
}

/// Raises the outbox head of each of `parts` in its database at `db_base` to the bus's
/// head for its stream, where it is behind; answers each part's heads.
pub async fn raise_outbox_heads(db_base: &str, parts: &[String], bus: &dyn Bus) -> anyhow::Result<Vec<Head>> {
    let location = StoreLocation::Postgres { base_url: db_base.to_owned() };
    let mut heads = Vec::new();
    for part in parts.iter().cloned() {
        let bus_head =
            bus.stream_head(&part).await.with_context(|| format!("cannot read the bus's head of {part}"))?;
        let url = location.url_of(&part, std::path::Path::new(""));
        let name = part.clone();
        let was =
            tokio::task::spawn_blocking(move || raise(&url, &name, bus_head)).await?.with_context(|| {
                format!("cannot raise the outbox head of {part} (is {db_base} the promoted primary?)")
            })?;
        heads.push(Head { part, was, bus: bus_head });
    }
    Ok(heads)
}

/// Raises `stream`'s head in the database at `url` to `to` when it is behind (or missing:
/// the stream's first events were all in the lost tail); answers what it was.
fn raise(url: &str, stream: &str, to: u64) -> Result<u64, postgres::Error> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    let mut tx = client.transaction()?;
    let was = tx
        .query_opt("SELECT last_seq FROM kit_outbox_head WHERE stream = $1 FOR UPDATE", &[&stream])?
        .map_or(0, |row| row.get::<_, i64>(0).max(0) as u64);
    if was < to {
        let to = i64::try_from(to).unwrap_or(i64::MAX);
        tx.execute(
            "INSERT INTO kit_outbox_head (stream, last_seq) VALUES ($1, $2) \
             ON CONFLICT (stream) DO UPDATE SET last_seq = excluded.last_seq",
            &[&stream, &to],
        )?;
    }
    tx.commit()?;
    Ok(was)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kit::bus::Message;

    #[tokio::test]
    async fn an_outbox_head_behind_the_bus_is_raised_to_it_and_one_ahead_is_left_alone() {
        let Some(server) = kit::testserver::PgServer::start() else { return };
        let dir = tempfile::tempdir().unwrap();
        for part in StoreLocation::parts() {
            let url = server.create_database(&StoreLocation::database(&part));
            kit::store::Store::open(&url, &[&kit::outbox::MIGRATIONS]).await.unwrap();
        }
        // The promoted database lost the order stream's last two events, which the bus
        // has; the catalog's head is ahead of the bus (events not relayed yet).
        let set = |part: &str, seq: i64| {
            let (url, part) = (server.url(&StoreLocation::database(part)), part.to_owned());
            std::thread::spawn(move || {
                let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                client
                    .execute("INSERT INTO kit_outbox_head (stream, last_seq) VALUES ($1, $2)", &[&part, &seq])
                    .unwrap();
            })
            .join()
            .unwrap();
        };
        set("order", 3);
        set("catalog", 9);
        let bus =
            kit::bus::connect(&format!("embedded:{}", dir.path().join("bus.db").display())).await.unwrap();
        let message = |stream: &str, seq: u64| Message {
            id: format!("{stream}-{seq}"),
            stream: stream.to_owned(),
            seq,
            key: "k".into(),
            body: b"{}".to_vec(),
        };
        let published: Vec<Message> = (1..=5)
            .map(|seq| message("order", seq))
            .chain((1..=7).map(|seq| message("catalog", seq)))
            .collect();
        bus.publish(&published).await.unwrap();

        let heads =
            raise_outbox_heads(&server.base_url(), &StoreLocation::parts(), bus.as_ref()).await.unwrap();
        let of = |part: &str| heads.iter().find(|h| h.part == part).unwrap().clone();
        assert_eq!(of("order"), Head { part: "order".into(), was: 3, bus: 5 });
        assert!(of("order").raised());
        assert_eq!(of("catalog"), Head { part: "catalog".into(), was: 9, bus: 7 });
        assert!(!of("catalog").raised());
        assert_eq!(heads.iter().filter(|h| h.raised()).count(), 1, "{heads:?}");
        let head = |part: &str| {
            let url = server.url(&StoreLocation::database(part));
            let part = part.to_owned();
            std::thread::spawn(move || {
                let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                client
                    .query_one("SELECT last_seq FROM kit_outbox_head WHERE stream = $1", &[&part])
                    .unwrap()
                    .get::<_, i64>(0)
            })
            .join()
            .unwrap()
        };
        assert_eq!(head("order"), 5, "the next order event gets seq 6, new to the bus");
        assert_eq!(head("catalog"), 9, "a head ahead of the bus is never lowered");
    }
}
