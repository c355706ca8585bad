//! What every service shares: its [`Context`] (store, outbox, bus, replicas, peers,
//! metrics), the common routes (`/health`, `/metrics`, `/openapi.json`, `/admin/...`),
//! problem+json errors, peer calls through links and breakers, and [`run`], which turns a
//! [`Service`] into a running process part: seed, relay, consumers and HTTP server.

pub mod admin;
pub mod facts;
pub mod idempotency;
pub mod limits;
pub mod local;
pub mod page;
pub mod part;
pub mod peer;
pub mod problem;
pub mod recent;
mod routes;
pub mod session;
#[doc(hidden)]
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod token;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use kit::bus::{Bus, ConsumerSpec};
use kit::consumer::{Consumer, ConsumerConfig, Handler};
use kit::envelope::StreamName;
use kit::metrics::KitMetrics;
use kit::outbox::{self, Outbox};
use kit::relay::Relay;
use kit::replica::VersionGate;
use kit::store::{Migrations, Store, StoreError};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;

pub use part::Part;
pub use peer::{Peer, PeerError};
pub use problem::{Body, BodyRefused, PathParams, Problem, QueryParams, StoreBusy};
pub use session::SignedIn;

/// The seven services of DESIGN §1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceName {
    Customer,
    Catalog,
    Inventory,
    Order,
    Payment,
    Shipping,
    Search,
}

impl ServiceName {
    pub const ALL: [ServiceName; 7] = [
        ServiceName::Customer,
        ServiceName::Catalog,
        ServiceName::Inventory,
        ServiceName::Order,
        ServiceName::Payment,
        ServiceName::Shipping,
        ServiceName::Search,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::Customer => "customer",
            ServiceName::Catalog => "catalog",
            ServiceName::Inventory => "inventory",
            ServiceName::Order => "order",
            ServiceName::Payment => "payment",
            ServiceName::Shipping => "shipping",
            ServiceName::Search => "search",
        }
    }

    /// The tables of this service, from `migrations/{sqlite,postgres}/<name>.sql`.
    pub fn migrations(self) -> &'static Migrations {
        /// The migrations of the service named `$name`, one file per dialect.
        /// Later steps are files of their own, applied in order after the first.
        macro_rules! of {
            ($name:literal $(, $later:literal)*) => {{
                const MIGRATIONS: Migrations = Migrations {
                    component: $name,
                    sqlite: &[
                        include_str!(concat!("../../migrations/sqlite/", $name, ".sql")),
                        $(include_str!(concat!("../../migrations/sqlite/", $later, ".sql")),)*
                    ],
                    postgres: &[
                        include_str!(concat!("../../migrations/postgres/", $name, ".sql")),
                        $(include_str!(concat!("../../migrations/postgres/", $later, ".sql")),)*
                    ],
                };
                &MIGRATIONS
            }};
        }
        match self {
            ServiceName::Customer => of!("customer", "customer_sign_in"),
            ServiceName::Catalog => of!("catalog"),
            ServiceName::Inventory => of!("inventory"),
            ServiceName::Order => of!("order", "order_placing"),
            ServiceName::Payment => of!("payment", "payment_voids"),
            ServiceName::Shipping => of!("shipping"),
            ServiceName::Search => of!("search", "search_owner", "search_bestsellers"),
        }
    }

    /// The stream this service publishes on.
    pub fn stream(self) -> StreamName {
        StreamName::parse(self.as_str()).expect("service names are valid stream names")
    }
}

impl std::fmt::Display for ServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ServiceName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|n| n.as_str() == s).ok_or_else(|| {
            format!("unknown service {s:?}: expected one of customer, catalog, inventory, order, payment, shipping, search")
        })
    }
}

/// Settings of the availability/consistency choices (DESIGN §1 table) and their bounds.
#[derive(Debug, Clone)]
pub struct Choices {
    /// Where checkout takes the address from: the local replica (available) or the
    /// customer service, synchronously (consistent).
    pub address: AddressChoice,
    /// How long a read carrying a consistency token waits for the replica.
    pub token_wait: Duration,
    /// How the two inventory sites write during a partition (DESIGN §1, scenario 6).
    pub inventory: crate::inventory::sites::Mode,
    /// Sign-in attempts and writes allowed (OWASP API4).
    pub limits: limits::Limits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressChoice {
    Replica,
    Sync,
}

impl Default for Choices {
    fn default() -> Self {
        Self {
            address: AddressChoice::Replica,
            token_wait: Duration::from_millis(250),
            inventory: crate::inventory::sites::Mode::Ap,
            limits: limits::Limits::default(),
        }
    }
}

/// Which running instance a [`Context`] belongs to: a service, or one inventory site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instance {
    pub name: ServiceName,
    pub site: Option<crate::inventory::sites::Site>,
}

impl From<ServiceName> for Instance {
    fn from(name: ServiceName) -> Self {
        Self { name, site: None }
    }
}

impl From<crate::inventory::sites::Site> for Instance {
    fn from(site: crate::inventory::sites::Site) -> Self {
        Self { name: ServiceName::Inventory, site: Some(site) }
    }
}

/// Everything one service needs at run time; shared by its handlers as axum state.
pub struct Context {
    pub name: ServiceName,
    /// The inventory site this instance is (dc1, dc2); `None` for every other service.
    pub site: Option<crate::inventory::sites::Site>,
    pub store: Store,
    pub outbox: Outbox,
    /// The bus as this service sees it, through its link to the bus.
    pub bus: Arc<dyn Bus>,
    pub gate: VersionGate,
    pub metrics: Arc<KitMetrics>,
    pub registry: std::sync::Mutex<Registry>,
    pub peers: HashMap<ServiceName, Peer>,
    pub admin_token: String,
    /// The shoppers' sign-in as this service knows it: the customer service's public keys
    /// and the revoked sessions, replicated by events.
    pub sessions: session::Sessions,
    /// Over these, requests are answered 429.
    pub limiters: limits::Limiters,
    pub choices: Choices,
    /// Routes of the process this service runs in, served beside its own: a served
    /// process's `/admin/chaos` for its links. Set before [`run`].
    pub process_routes: std::sync::OnceLock<Router>,
    /// The pause of the process this service runs in (kit::pause): its consumers' batches
    /// and its cross-service writes stop there for a consistent backup. Shared by every
    /// part of an embedded shop; see [`Context::share_pause`].
    pause: std::sync::OnceLock<kit::pause::Pause>,
    /// Which of the service's instances this process is (`--instance-id`), named in its
    /// relay lease; unset in the embedded shop. Set before [`run`].
    pub instance_id: std::sync::OnceLock<String>,
    /// State that only this service has (the catalog's popularity cache); see
    /// [`Context::extension`].
    extension: std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>,
}

impl Context {
    /// Opens the store of `instance` (a service, or an inventory site) at `store_url` with
    /// the kit's tables and `migrations`. A site publishes on its own stream
    /// (`inventory-dc1`) and names its consumers after it, because seqs are per producer
    /// and a durable consumer must not be shared.
    pub async fn open(
        instance: impl Into<Instance>,
        store_url: &str,
        migrations: &Migrations,
        bus: Arc<dyn Bus>,
        peers: HashMap<ServiceName, Peer>,
        admin_token: String,
        choices: Choices,
    ) -> Result<Arc<Self>, StoreError> {
        let Instance { name, site } = instance.into();
        let store = Store::open(
            store_url,
            &[&outbox::MIGRATIONS, &idempotency::MIGRATIONS, &session::MIGRATIONS, migrations],
        )
        .await?;
        let sessions = session::Sessions::load(&store).await?;
        let instance = site.map_or_else(|| name.as_str().to_owned(), |s| s.instance());
        let label = [(std::borrow::Cow::Borrowed("service"), std::borrow::Cow::Owned(instance.clone()))];
        let mut registry = Registry::with_labels(label.into_iter());
        let metrics = KitMetrics::register(&mut registry);
        let stream = StreamName::parse(&instance).expect("instance names are valid stream names");
        let outbox = Outbox::new(stream);
        metrics.watch_outbox(&store, &outbox);
        for peer in peers.values() {
            metrics.watch_breaker(peer.breaker());
        }
        Ok(Arc::new(Self {
            name,
            site,
            store,
            outbox,
            bus,
            gate: VersionGate::new(),
            metrics,
            registry: std::sync::Mutex::new(registry),
            peers,
            admin_token,
            sessions,
            limiters: limits::Limiters::new(&choices.limits),
            choices,
            process_routes: std::sync::OnceLock::new(),
            pause: std::sync::OnceLock::new(),
            instance_id: std::sync::OnceLock::new(),
            extension: std::sync::OnceLock::new(),
        }))
    }

    /// Makes this service stop at `pause` (the one of its process) instead of a pause of
    /// its own. Called by the wiring before the service runs; a second call is a bug.
    pub fn share_pause(&self, pause: kit::pause::Pause) {
        if self.pause.set(pause).is_err() {
            panic!("{} was given its process's pause twice, or after it first paused", self.name);
        }
    }

    /// Where this service's cross-database work stops for a consistent cut.
    pub fn pause(&self) -> &kit::pause::Pause {
        self.pause.get_or_init(kit::pause::Pause::new)
    }

    /// The state of its own that this service keeps beside the shared parts, made by
    /// `make` on first use: it lives and dies with the context, so a restarted service
    /// starts afresh. One type per service; asking for another is a bug and panics.
    pub fn extension<T: std::any::Any + Send + Sync>(&self, make: impl FnOnce() -> T) -> &T {
        self.extension
            .get_or_init(|| Box::new(make()))
            .downcast_ref()
            .unwrap_or_else(|| panic!("{} keeps an extension of another type", self.name))
    }

    /// The client of a peer service this one was wired to.
    pub fn peer(&self, name: ServiceName) -> &Peer {
        self.peers.get(&name).unwrap_or_else(|| panic!("{} is not wired to {name}", self.name))
    }

    /// The part this context runs: its service, or its inventory site.
    pub fn part(&self) -> Part {
        self.site.map_or(Part::Service(self.name), Part::Site)
    }

    /// The name this instance publishes and consumes under: the service, or the site.
    pub fn instance(&self) -> String {
        self.site.map_or_else(|| self.name.as_str().to_owned(), |s| s.instance())
    }

    /// Consumer names are prefixed with their service (or site), e.g.
    /// `order.customer-replica`, `inventory-dc2.orders`.
    pub fn consumer_name(&self, purpose: &str) -> String {
        format!("{}.{purpose}", self.instance())
    }
}

/// One service: its tables, routes, consumers and seed data.
pub trait Service: Send + Sync + 'static {
    const NAME: ServiceName;

    /// The service's tables: `migrations/{sqlite,postgres}/<NAME>.sql`.
    fn migrations() -> &'static Migrations {
        Self::NAME.migrations()
    }

    /// The service's own routes, each with its `#[utoipa::path]`, and the document they
    /// belong to (title, description, schemas): one source, so no route goes undocumented.
    /// [`run`] adds the common routes and serves the document at `/openapi.json`.
    fn routes(ctx: &Arc<Context>) -> OpenApiRouter<Arc<Context>>;

    /// Starts the service's consumers on `consumers`.
    fn consume(_ctx: &Arc<Context>, _consumers: &mut Consumers) {}

    /// What this service tells `capshop reconcile` about its own state
    /// ([`crate::contracts::facts`]), read inside the caller's transaction; `site` is the
    /// inventory site whose database `tx` is.
    fn facts(
        tx: &mut kit::store::Tx<'_>,
        site: Option<crate::inventory::sites::Site>,
    ) -> Result<crate::contracts::facts::ServiceFacts, StoreError>;

    /// Writes first-start data (through the outbox, so replicas learn of it).
    fn seed(_ctx: Arc<Context>) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        async { Ok(()) }
    }
}

/// The consumers of one service, started with its relay and stopped with it.
pub struct Consumers {
    ctx: Arc<Context>,
    shutdown: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

impl Consumers {
    /// Every consumer decodes with the published [`crate::contracts::schemas`], so an old
    /// payload is upcast before its handler sees it.
    fn config(spec: ConsumerSpec) -> ConsumerConfig {
        // The consumer keeps its batches in progress, so a short ack wait costs nothing while
        // it lives and brings back soon what it held when it crashed.
        let spec = spec.ack_wait(kit::consumer::KEPT_ALIVE_ACK_WAIT);
        ConsumerConfig::new(spec).schemas(crate::contracts::schemas())
    }

    /// Runs `handler` as the durable consumer `<service>.<purpose>` of `spec`'s streams.
    pub fn start<H: Handler>(&mut self, spec: ConsumerSpec, handler: H) {
        let bus = self.ctx.bus.clone();
        self.start_on(bus, spec, handler);
    }

    /// Like [`Consumers::start`], but fetching through `bus` (e.g. over one more link).
    pub fn start_on<H: Handler>(&mut self, bus: Arc<dyn Bus>, spec: ConsumerSpec, handler: H) {
        let ctx = &self.ctx;
        let counters = ctx.metrics.consumer_counters(&spec.name);
        ctx.metrics.watch_consumer(&ctx.store, &spec.name, &spec.streams);
        let consumer = Consumer::new(ctx.store.clone(), bus, handler, Self::config(spec))
            .counters(counters)
            .pause(ctx.pause().clone());
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move { consumer.run(shutdown.cancelled_owned()).await });
    }

    /// Runs a background task of the service until it stops.
    pub fn spawn(&mut self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// Cancelled when the service stops.
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Runs service `S` on `listener` until `shutdown` is cancelled: seeds on first start,
/// relays its outbox, runs its consumers and serves its routes plus the common ones.
pub async fn run<S: Service>(
    ctx: Arc<Context>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    S::seed(ctx.clone()).await.map_err(std::io::Error::other)?;
    let mut consumers =
        Consumers { ctx: ctx.clone(), shutdown: shutdown.clone(), tasks: tokio::task::JoinSet::new() };
    let mut relay = Relay::new(ctx.store.clone(), ctx.outbox.clone(), ctx.bus.clone())
        .counter(ctx.metrics.relayed_counter(&ctx.instance()));
    if let Some(id) = ctx.instance_id.get() {
        relay = relay.holder(id);
    }
    consumers.tasks.spawn(relay.run(shutdown.clone().cancelled_owned()));
    S::consume(&ctx, &mut consumers);
    if ctx.store.dialect() == kit::store::Dialect::Postgres {
        consumers.spawn(session::refresh_every(ctx.clone(), shutdown.clone()));
    }
    let app = routes::common(ctx.clone(), S::routes(&ctx), facts::FactsReader(S::facts));
    // Callers in this process reach the router directly while it serves (`local`).
    let serving = Arc::new(local::Serving::list(listener.local_addr()?, app.clone()));
    let stopping = (shutdown.clone(), serving.clone());
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            stopping.0.cancelled().await;
            stopping.1.close();
        })
        .await;
    serving.drain().await;
    shutdown.cancel();
    while consumers.tasks.join_next().await.is_some() {}
    served
}
