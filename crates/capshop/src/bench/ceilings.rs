//! The ceilings the other figures are read against, measured in the same run on the same
//! machine: what SQLite (or the run's PostgreSQL) itself can insert with capshop's
//! durability settings, what the run's JetStream accepts when publishes are pipelined, and
//! what an axum route that does nothing answers under the same load generator as the shop.

use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;

use super::Phases;
use super::load::{self, Outcome};

/// Rows per transaction of the raw insert ceiling.
const ROWS_PER_COMMIT: u64 = 1_000;

/// Bytes of an event body: about the size of a serialized shop envelope.
const BODY_BYTES: usize = 400;

/// Inserts `rows` event-sized rows (the bus log's columns) into a fresh SQLite file, with
/// the pragmas of `kit::store::sqlite` (WAL, synchronous NORMAL), in batches; answers rows
/// per second. The pipeline commits as many events, so both grow their files alike.
pub async fn sqlite_inserts(path: &Path, rows: u64) -> anyhow::Result<f64> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || insert(&path, rows)).await.context("the insert thread died")?
}

fn insert(path: &Path, rows: u64) -> anyhow::Result<f64> {
    let conn = rusqlite::Connection::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.execute_batch(
        "CREATE TABLE event (pos INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, stream TEXT NOT NULL, \
         seq INTEGER NOT NULL, key TEXT NOT NULL, body BLOB NOT NULL, published_at_ms INTEGER NOT NULL)",
    )?;
    let body = vec![b'x'; BODY_BYTES];
    let started = Instant::now();
    let mut seq = 0u64;
    while seq < rows {
        let tx = conn.unchecked_transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO event (id, stream, seq, key, body, published_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for _ in 0..ROWS_PER_COMMIT.min(rows - seq) {
                seq += 1;
                let id = format!("0193{seq:032x}");
                insert.execute(rusqlite::params![id, "bench", seq, format!("k-{}", seq % 64), body, 0])?;
            }
        }
        tx.commit()?;
    }
    Ok(seq as f64 / started.elapsed().as_secs_f64())
}

/// Inserts `rows` event-sized rows into a fresh table of the PostgreSQL database at `url`
/// (its default durability: synchronous_commit on), through one prepared statement, in
/// transactions of [`ROWS_PER_COMMIT`]; answers rows per second.
pub async fn postgres_inserts(url: &str, rows: u64) -> anyhow::Result<f64> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
        client.batch_execute(
            "CREATE TABLE event (pos BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE, stream TEXT NOT NULL, \
             seq BIGINT NOT NULL, key TEXT NOT NULL, body BYTEA NOT NULL, published_at_ms BIGINT NOT NULL)",
        )?;
        let insert = client.prepare(
            "INSERT INTO event (id, stream, seq, key, body, published_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        )?;
        let body = vec![b'x'; BODY_BYTES];
        let started = Instant::now();
        let mut seq = 0i64;
        while (seq as u64) < rows {
            let mut tx = client.transaction()?;
            for _ in 0..ROWS_PER_COMMIT.min(rows - seq as u64) {
                seq += 1;
                let (id, key) = (format!("0193{seq:032x}"), format!("k-{}", seq % 64));
                tx.execute(&insert, &[&id, &"bench", &seq, &key, &body, &0i64])?;
            }
            tx.commit()?;
        }
        Ok::<_, postgres::Error>(seq as f64 / started.elapsed().as_secs_f64())
    })
    .await
    .context("the insert thread died")?
    .context("the PostgreSQL insert ceiling failed")
}

/// Publish acknowledgements a JetStream ceiling keeps outstanding at once.
const PUBLISH_WINDOW: usize = 1_000;

/// Publishes `messages` event-sized messages (each with a `Nats-Msg-Id`, as the bus sends
/// them) to a fresh file-stored stream on the server at `url` (the sync setting it was
/// started with), keeping [`PUBLISH_WINDOW`] acknowledgements outstanding; then reads them
/// back with a pull consumer. Answers (published per second, consumed per second).
pub async fn jetstream(url: &str, messages: u64) -> anyhow::Result<(f64, f64)> {
    use async_nats::jetstream::{self, consumer, stream};
    use futures_util::StreamExt as _;

    let server = url.strip_prefix("nats://").unwrap_or(url).split('?').next().unwrap_or_default().to_owned();
    let client = async_nats::connect(server).await.context("cannot connect to the bench's NATS")?;
    let js = jetstream::new(client);
    let config = stream::Config {
        name: "CEILING".into(),
        subjects: vec!["ceiling".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    };
    let created = js.get_or_create_stream(config).await.context("cannot create the ceiling's stream")?;
    let body = bytes::Bytes::from(vec![b'x'; BODY_BYTES]);
    let started = Instant::now();
    let mut acks = std::collections::VecDeque::with_capacity(PUBLISH_WINDOW);
    for n in 0..messages {
        let publish = jetstream::message::PublishMessage::build()
            .message_id(format!("0193{n:032x}"))
            .payload(body.clone());
        acks.push_back(js.send_publish("ceiling", publish).await?);
        if acks.len() >= PUBLISH_WINDOW
            && let Some(ack) = acks.pop_front()
        {
            ack.await?;
        }
    }
    for ack in acks {
        ack.await?;
    }
    let published = messages as f64 / started.elapsed().as_secs_f64();

    let puller = created
        .create_consumer(consumer::pull::Config {
            durable_name: Some("ceiling".into()),
            ..Default::default()
        })
        .await
        .context("cannot create the ceiling's consumer")?;
    let started = Instant::now();
    let mut read = 0;
    let mut batches = puller.stream().max_messages_per_batch(1_000).messages().await?;
    while read < messages {
        let Some(message) = batches.next().await else { break };
        message.map_err(|e| anyhow::anyhow!("{e}"))?.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        read += 1;
    }
    Ok((published, read as f64 / started.elapsed().as_secs_f64()))
}

/// Serves `GET /` answering "hello" on a loopback port and drives it with the shop's load
/// generator: what HTTP alone costs on this machine.
pub async fn http_hello(phases: Phases) -> anyhow::Result<Outcome> {
    let listener =
        tokio::net::TcpListener::bind("127.0.0.1:0").await.context("cannot bind a loopback port")?;
    let url = format!("http://{}/", listener.local_addr()?);
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
    let stop = tokio_util::sync::CancellationToken::new();
    let serving = tokio::spawn({
        let stop = stop.clone();
        async move { axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await }
    });
    let client = load::client(phases.connections);
    let outcome = load::drive(phases.connections, phases.measure, move |_, _| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            match client.get(&url).send().await {
                Ok(answer) => answer.status().is_success() && answer.bytes().await.is_ok(),
                Err(_) => false,
            }
        }
    })
    .await;
    stop.cancel();
    serving.await.context("the hello server panicked")?.context("the hello server failed")?;
    Ok(outcome)
}
