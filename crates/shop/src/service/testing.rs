//! Starting one service on a free port for tests, with its data in a given directory,
//! and checking what every test must end with: each outbox relayed, and no dead letter
//! unless the test said it expects some (as crates.io's test app checks its job queue).
//!
//! [`Running::finish`] checks both: it waits for the relay, then looks for dead letters.
//! A [`Running`] dropped without `finish` still fails the test on dead letters (checked
//! on a thread of its own, since the test's runtime is busy dropping it); it cannot wait
//! for the relay there, because the relay runs on that very runtime.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kit::bus::{Bus, DeadLetter, DeadLetterFilter};
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

/// Whether a test leaves dead letters on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetters {
    /// Any dead letter fails the test.
    Forbidden,
    /// The test dead-letters events on purpose.
    Expected,
}

/// How long the end-of-test check waits for a relay to empty its outbox.
const RELAY_PATIENCE: Duration = Duration::from_secs(10);

/// Asserts what a test ends with, for each of `parts`: its outbox is relayed (waiting
/// for the relay a while) and, unless `dead_letters` is [`DeadLetters::Expected`], none
/// of its consumers has a dead letter.
pub async fn assert_nothing_left(parts: &[&Context], dead_letters: DeadLetters) {
    for ctx in parts {
        let instance = ctx.instance();
        eventually_within(RELAY_PATIENCE, &format!("the outbox of {instance} to be relayed"), || async {
            let outbox = ctx.outbox.clone();
            let backlog =
                ctx.store.transact(move |tx| outbox.backlog(tx)).await.expect("the outbox is readable");
            (backlog == 0).then_some(())
        })
        .await;
    }
    if dead_letters == DeadLetters::Forbidden {
        for ctx in parts {
            let letters =
                ctx.bus.dead_letters(&DeadLetterFilter::all()).await.expect("dead letters are listable");
            assert_no_dead_letters(&ctx.instance(), &letters);
        }
    }
}

/// Fails naming the dead letters of `instance`'s consumers among `letters`.
fn assert_no_dead_letters(instance: &str, letters: &[DeadLetter]) {
    let prefix = format!("{instance}.");
    let own: Vec<String> = letters
        .iter()
        .filter(|l| l.consumer.starts_with(&prefix))
        .map(|l| {
            format!(
                "{} ({} of {}, key {}): {}",
                l.consumer, l.message.id, l.message.stream, l.message.key, l.error
            )
        })
        .collect();
    assert!(
        own.is_empty(),
        "the test left dead letters of {instance} without expecting them (declare them with expect_dead_letters() or DeadLetters::Expected):\n{}",
        own.join("\n")
    );
}

/// A service running in the test's runtime; stopped when dropped.
pub struct Running {
    pub addr: SocketAddr,
    pub ctx: Arc<Context>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    dead_letters_expected: AtomicBool,
    checked: bool,
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

    /// A session token of `customer` that this service accepts, signed by a key of the
    /// test's own that the service is taught directly (no customer service needed).
    pub fn session_of(&self, customer: &str) -> String {
        session_token(&self.ctx, customer)
    }

    /// Declares that the test dead-letters events of this service on purpose.
    pub fn expect_dead_letters(&self) {
        self.dead_letters_expected.store(true, Ordering::Relaxed);
    }

    fn dead_letters(&self) -> DeadLetters {
        if self.dead_letters_expected.load(Ordering::Relaxed) {
            DeadLetters::Expected
        } else {
            DeadLetters::Forbidden
        }
    }

    /// Ends the test for this service: checks that its outbox is relayed and that it has
    /// no dead letters unless expected ([`assert_nothing_left`]), then stops it.
    pub async fn finish(mut self) {
        assert_nothing_left(&[&self.ctx], self.dead_letters()).await;
        self.checked = true;
        self.stop().await;
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
        if self.checked || std::thread::panicking() || self.dead_letters() == DeadLetters::Expected {
            return;
        }
        // The test's runtime is the one dropping this, so the bus is asked from a runtime
        // of its own on a thread of its own.
        let bus = self.ctx.bus.clone();
        let listed = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime
                .block_on(async {
                    tokio::time::timeout(RELAY_PATIENCE, bus.dead_letters(&DeadLetterFilter::all())).await
                })
                .map_err(std::io::Error::other)?
                .map_err(std::io::Error::other)
        })
        .join();
        match listed {
            Ok(Ok(letters)) => assert_no_dead_letters(&self.ctx.instance(), &letters),
            // A bus the test cut off or shut down cannot be asked; `finish` would have.
            Ok(Err(e)) => tracing::debug!(error = %e, "dead letters not checked at drop"),
            Err(_) => panic!("listing the dead letters panicked"),
        }
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
    Running::new(addr, ctx, shutdown, task)
}

impl Running {
    fn new(
        addr: SocketAddr,
        ctx: Arc<Context>,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    ) -> Self {
        Running {
            addr,
            ctx,
            shutdown,
            task: Some(task),
            dead_letters_expected: AtomicBool::new(false),
            checked: false,
        }
    }
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
        sites.insert(site, Running::new(addrs[&site], ctx, shutdown, task));
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

/// A session token of `customer` that `ctx` accepts: signed by a fresh key that `ctx`'s
/// sessions learn here, for tests of one service without the customer service.
pub fn session_token(ctx: &Context, customer: &str) -> String {
    use super::session::paseto::{self, Claims};
    let key = paseto::generate_key();
    let kid = format!("k-test-{}", uuid::Uuid::now_v7().simple());
    ctx.sessions.learn_key(kid.clone(), key.verifying_key());
    let iat = time::OffsetDateTime::now_utc();
    let claims = Claims {
        sub: customer.to_owned(),
        jti: format!("s-test-{}", uuid::Uuid::now_v7().simple()),
        iat,
        exp: iat + time::Duration::hours(1),
    };
    paseto::sign(&key, &kid, &claims)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::{Producer, Running, eventually, spawn};
    use crate::contracts::catalog::{PRODUCT_ADDED, Product, event};
    use crate::search::SearchService;

    /// A search service whose catalog consumer has dead-lettered a poisoned product.
    async fn search_with_a_dead_letter(dir: &std::path::Path) -> Running {
        let bus = kit::bus::connect(&format!("embedded:{}", dir.join("bus.db").display())).await.unwrap();
        let service = spawn::<SearchService>(dir, bus.clone(), HashMap::new()).await;
        let catalog = Producer::open(dir, "catalog", bus.clone()).await;
        let poisoned = Product {
            id: "p-011".into(),
            name: "Cursed Lamp #poison".into(),
            description: "a lamp".into(),
            price_cents: 1500,
            version: 1,
        };
        catalog.emit(vec![event(PRODUCT_ADDED, &poisoned)]).await;
        eventually("the poisoned product to be dead-lettered", || async {
            let letters = bus.dead_letters(&kit::bus::DeadLetterFilter::all()).await.unwrap();
            (!letters.is_empty()).then_some(())
        })
        .await;
        service
    }

    #[tokio::test]
    #[should_panic(expected = "the test left dead letters of search without expecting them")]
    async fn finishing_a_service_with_a_dead_letter_it_did_not_expect_fails_the_test() {
        let dir = tempfile::tempdir().unwrap();
        search_with_a_dead_letter(dir.path()).await.finish().await;
    }

    #[tokio::test]
    #[should_panic(expected = "the test left dead letters of search without expecting them")]
    async fn dropping_a_service_with_a_dead_letter_it_did_not_expect_fails_the_test() {
        let dir = tempfile::tempdir().unwrap();
        drop(search_with_a_dead_letter(dir.path()).await);
    }

    #[tokio::test]
    async fn a_test_that_expects_dead_letters_finishes_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let service = search_with_a_dead_letter(dir.path()).await;
        service.expect_dead_letters();
        service.finish().await;
    }
}
