//! How one part of the shop (a service, or an inventory site) is wired, the same in every
//! mode: its links (to the bus and to each peer it calls), its peers behind breakers, its
//! context on its store, and which `run::<S>` it is. `launch` wires every part in one
//! process; `serve` wires one per process; only the store URL, the bus and the peers' URLs
//! differ.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use kit::bus::Bus;
use kit::link::{Link, LinkedBus};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::catalog::CatalogService;
use crate::customer::CustomerService;
use crate::inventory::InventoryService;
use crate::launch::LaunchError;
use crate::order::OrderService;
use crate::payment::PaymentService;
use crate::search::SearchService;
use crate::service::{Choices, Context, Part, Peer, Service, ServiceName, peer};
use crate::shipping::ShippingService;

/// Which services call which synchronously (DESIGN §1); everything else goes by events.
pub const CALLS: [(ServiceName, ServiceName); 3] = [
    (ServiceName::Order, ServiceName::Customer),
    (ServiceName::Order, ServiceName::Catalog),
    (ServiceName::Order, ServiceName::Payment),
];

/// The services `caller` calls synchronously, so the peers it must be given.
pub fn callees(caller: ServiceName) -> impl Iterator<Item = ServiceName> {
    CALLS.into_iter().filter(move |(from, _)| *from == caller).map(|(_, to)| to)
}

/// The peers `part` must be given URLs for, by name: the services it calls, or the
/// other inventory site.
pub fn peers_of(part: Part) -> Vec<String> {
    match part {
        Part::Service(name) => callees(name).map(|callee| callee.as_str().to_owned()).collect(),
        Part::Site(site) => vec![site.peer().instance()],
    }
}

/// One part wired and ready to run: its context and every outbound link it owns by name
/// (`order->customer`, `order->bus`, `catalog->cache`, `inventory-dc1->inventory-dc2`).
pub struct Wired {
    pub ctx: Arc<Context>,
    pub links: BTreeMap<String, Link>,
}

/// What one part is wired from.
pub struct Wiring<'a> {
    pub part: Part,
    pub store_url: &'a str,
    /// The bus as everyone shares it; the part sees it through its own link.
    pub bus: Arc<dyn Bus>,
    /// The base URL of each peer by name (at least those of [`peers_of`]).
    pub peer_urls: &'a BTreeMap<String, String>,
    pub admin_token: String,
    pub choices: Choices,
    /// The catalog's popularity cache (`redis://HOST:PORT`); `None` keeps it in memory.
    pub cache_url: Option<&'a str>,
    /// The pause of the process the part runs in (shared by every part of an embedded shop).
    pub pause: kit::pause::Pause,
}

impl Wiring<'_> {
    /// Opens the part's store and builds its links, peers and context.
    pub async fn open(self) -> Result<Wired, LaunchError> {
        let part = self.part;
        for peer in peers_of(part) {
            if !self.peer_urls.contains_key(&peer) {
                return Err(LaunchError::Peer { part, peer });
            }
        }
        let failed = |e: kit::store::StoreError| LaunchError::Store { part, reason: e.to_string() };
        let mut links = BTreeMap::new();
        let name = match part {
            Part::Site(site) => {
                let other = &self.peer_urls[&site.peer().instance()];
                let (token, choices) = (self.admin_token, self.choices);
                let ctx = crate::inventory::sites::open(
                    self.store_url,
                    token,
                    choices,
                    site,
                    other,
                    &self.bus,
                    &mut links,
                )
                .await
                .map_err(failed)?;
                ctx.share_pause(self.pause);
                return Ok(Wired { ctx, links });
            }
            Part::Service(name) => name,
        };
        let bus_link = Link::new(&format!("{name}->bus"));
        links.insert(bus_link.name().to_owned(), bus_link.clone());
        let bus: Arc<dyn Bus> = Arc::new(LinkedBus::new(self.bus, bus_link));
        let mut peers = HashMap::new();
        for callee in callees(name) {
            let link = Link::new(&format!("{name}->{callee}"));
            links.insert(link.name().to_owned(), link.clone());
            let url = &self.peer_urls[callee.as_str()];
            peers.insert(callee, Peer::new(callee.as_str(), url, link, peer::default_breaker()));
        }
        let ctx =
            Context::open(name, self.store_url, migrations(name), bus, peers, self.admin_token, self.choices)
                .await
                .map_err(failed)?;
        ctx.share_pause(self.pause);
        if name == ServiceName::Catalog {
            crate::catalog::cache::open(&ctx, self.cache_url)
                .map_err(|e| LaunchError::Served { part, reason: e.to_string() })?;
            let cache = crate::catalog::cache_link(&ctx);
            links.insert(cache.name().to_owned(), cache);
        }
        Ok(Wired { ctx, links })
    }
}

/// A part running on its listener until its shutdown is cancelled.
pub type Running = Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>;

/// Runs `part`: the one place a part becomes its service's `run::<S>` (an inventory site
/// runs the inventory service with its site's context).
pub fn run(part: Part, ctx: Arc<Context>, listener: TcpListener, shutdown: CancellationToken) -> Running {
    use crate::service::run;
    match part.service() {
        ServiceName::Customer => Box::pin(run::<CustomerService>(ctx, listener, shutdown)),
        ServiceName::Catalog => Box::pin(run::<CatalogService>(ctx, listener, shutdown)),
        ServiceName::Inventory => Box::pin(run::<InventoryService>(ctx, listener, shutdown)),
        ServiceName::Order => Box::pin(run::<OrderService>(ctx, listener, shutdown)),
        ServiceName::Payment => Box::pin(run::<PaymentService>(ctx, listener, shutdown)),
        ServiceName::Shipping => Box::pin(run::<ShippingService>(ctx, listener, shutdown)),
        ServiceName::Search => Box::pin(run::<SearchService>(ctx, listener, shutdown)),
    }
}

/// Starts `part` as a task of its own (what [`crate::chaos::Chaos`] starts and restarts).
pub(crate) fn spawn(
    part: Part,
    ctx: Arc<Context>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> JoinHandle<std::io::Result<()>> {
    tokio::spawn(run(part, ctx, listener, shutdown))
}

/// The tables of service `name`.
pub fn migrations(name: ServiceName) -> &'static kit::store::Migrations {
    match name {
        ServiceName::Customer => CustomerService::migrations(),
        ServiceName::Catalog => CatalogService::migrations(),
        ServiceName::Inventory => InventoryService::migrations(),
        ServiceName::Order => OrderService::migrations(),
        ServiceName::Payment => PaymentService::migrations(),
        ServiceName::Shipping => ShippingService::migrations(),
        ServiceName::Search => SearchService::migrations(),
    }
}
