//! Starting one service on a free port for tests, with its data in a given directory.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use kit::bus::Bus;
use kit::envelope::{Envelope, EventId, NewEvent, StreamName};
use tokio_util::sync::CancellationToken;

use super::{Choices, Context, Peer, Service, ServiceName};
use crate::inventory::InventoryService;
use crate::inventory::sites::Site;

/// Polls `probe` until it returns `Some`, for at most 20 s; panics naming `what` after that.
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_within(std::time::Duration::from_secs(20), what, probe).await
}

/// Polls `probe` until it returns `Some`, for at most `within`: a safety net for tests
/// that wait on asynchronous replication, not a measurement.
pub async fn eventually_within<T, F, Fut>(within: std::time::Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The admin token of services started by [`spawn`].
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A service running in the test's runtime; stopped when dropped.
pub struct Running {
    pub addr: SocketAddr,
    pub ctx: Arc<Context>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A client of this service, as another service would hold it.
    pub fn peer(&self) -> Peer {
        Peer::new(
            self.ctx.name.as_str(),
            &self.url(""),
            kit::link::Link::new(self.ctx.name.as_str()),
            super::peer::default_breaker(),
        )
    }

    /// Stops the service and waits until its consumers and relay have stopped.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts service `S` on 127.0.0.1:0 with its database in `dir`, on `bus`, calling `peers`.
pub async fn spawn<S: Service>(dir: &Path, bus: Arc<dyn Bus>, peers: HashMap<ServiceName, Peer>) -> Running {
    spawn_with::<S>(dir, bus, peers, Choices::default()).await
}

pub async fn spawn_with<S: Service>(
    dir: &Path,
    bus: Arc<dyn Bus>,
    peers: HashMap<ServiceName, Peer>,
    choices: Choices,
) -> Running {
    let url = format!("sqlite:{}", dir.join(format!("{}.db", S::NAME)).display());
    let ctx = Context::open(S::NAME, &url, S::migrations(), bus, peers, ADMIN_TOKEN.into(), choices)
        .await
        .expect("the service's store opens");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(super::run::<S>(ctx.clone(), listener, shutdown.clone()));
    Running { addr, ctx, shutdown, task: Some(task) }
}

/// Starts both inventory sites on 127.0.0.1:0 with their databases in `dir`, on `bus`,
/// linked as in the shop; returns them with their links by name.
pub async fn spawn_sites(
    dir: &Path,
    bus: Arc<dyn Bus>,
    choices: Choices,
) -> (BTreeMap<Site, Running>, BTreeMap<String, kit::link::Link>) {
    let mut listeners = BTreeMap::new();
    for site in Site::ALL {
        listeners.insert(site, tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port"));
    }
    let addrs: BTreeMap<Site, SocketAddr> =
        listeners.iter().map(|(site, l)| (*site, l.local_addr().expect("a bound address"))).collect();
    let mut links = BTreeMap::new();
    let mut sites = BTreeMap::new();
    for (site, listener) in listeners {
        let url = format!("sqlite:{}", dir.join(format!("{}.db", site.instance())).display());
        let ctx = crate::inventory::sites::open(
            &url,
            ADMIN_TOKEN.into(),
            choices.clone(),
            site,
            &format!("http://{}", addrs[&site.peer()]),
            &bus,
            &mut links,
        )
        .await
        .expect("the site's store opens");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(super::run::<InventoryService>(ctx.clone(), listener, shutdown.clone()));
        sites.insert(site, Running { addr: addrs[&site], ctx, shutdown, task: Some(task) });
    }
    (sites, links)
}

/// The envelope `event` would have once committed on `stream` at `seq`, for tests that call
/// a handler directly (shuffled and duplicated deliveries).
pub fn envelope(stream: &str, event: &NewEvent, seq: u64) -> Envelope {
    Envelope {
        id: EventId::new(),
        stream: StreamName::parse(stream).expect("a valid stream name"),
        seq,
        kind: event.kind.clone(),
        key: event.key.clone(),
        version: event.version,
        occurred_at: time::OffsetDateTime::now_utc(),
        correlation_id: uuid::Uuid::now_v7(),
        causation_id: None,
        schema: event.schema,
        payload: event.payload.clone(),
    }
}

/// `history` as the bus may hand it to a consumer: shuffled, some events delivered more
/// than once, in batches of random size. Gives the history and the batches.
#[cfg(test)]
pub(crate) fn scrambled(
    history: impl proptest::strategy::Strategy<Value = Vec<Envelope>>,
) -> impl proptest::strategy::Strategy<Value = (Vec<Envelope>, Vec<Vec<Envelope>>)> {
    use proptest::prelude::*;
    history
        .prop_flat_map(|events| {
            let n = events.len();
            (Just(events), prop::collection::vec(0..n, 0..n), 1..6usize).prop_flat_map(
                |(events, duplicates, batch)| {
                    let mut delivered = events.clone();
                    delivered.extend(duplicates.into_iter().map(|i| events[i].clone()));
                    (Just(events), Just(delivered).prop_shuffle(), Just(batch))
                },
            )
        })
        .prop_map(|(events, delivered, batch)| (events, delivered.chunks(batch).map(<[_]>::to_vec).collect()))
}

/// A producing service as far as a consumer under test can tell: its own store, outbox
/// and relay, publishing on the stream `name`.
pub struct Producer {
    store: kit::store::Store,
    outbox: kit::outbox::Outbox,
    relay: kit::relay::Relay,
}

impl Producer {
    pub async fn open(dir: &Path, name: &str, bus: Arc<dyn Bus>) -> Self {
        let url = format!("sqlite:{}", dir.join(format!("producer-{name}.db")).display());
        let store =
            kit::store::Store::open(&url, &[&kit::outbox::MIGRATIONS]).await.expect("a producer store opens");
        let outbox = kit::outbox::Outbox::new(StreamName::parse(name).expect("a valid stream name"));
        let relay = kit::relay::Relay::new(store.clone(), outbox.clone(), bus);
        Self { store, outbox, relay }
    }

    /// Commits `events` through the outbox and relays them to the bus.
    pub async fn emit(&self, events: Vec<NewEvent>) {
        let outbox = self.outbox.clone();
        self.store.transact(move |tx| outbox.append(tx, events)).await.expect("the events commit");
        while self.relay.relay_batch().await.expect("the relay publishes") > 0 {}
    }
}
