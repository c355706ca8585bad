//! How one service is wired, the same in every mode: its links (to the bus and to each
//! peer it calls), its peers behind breakers, its context on its store, and which
//! `run::<S>` it is. `launch` wires all seven in one process; `serve` wires one per
//! process; only the store URL, the bus and the peers' URLs differ.

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
use crate::service::{Choices, Context, Peer, Service, ServiceName, peer};
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

/// One service wired and ready to run: its context and every outbound link it owns by
/// name (`order->customer`, `order->bus`, `catalog->cache`).
pub struct Wired {
    pub ctx: Arc<Context>,
    pub links: BTreeMap<String, Link>,
}

/// What one service is wired from.
pub struct Wiring<'a> {
    pub name: ServiceName,
    pub store_url: &'a str,
    /// The bus as everyone shares it; the service sees it through its own link.
    pub bus: Arc<dyn Bus>,
    /// The base URL of each service this one calls (see [`callees`]).
    pub peer_urls: &'a BTreeMap<ServiceName, String>,
    pub admin_token: String,
    pub choices: Choices,
}

impl Wiring<'_> {
    /// Opens the service's store and builds its links, peers and context.
    pub async fn open(self) -> Result<Wired, LaunchError> {
        let name = self.name;
        let mut links = BTreeMap::new();
        let bus_link = Link::new(&format!("{name}->bus"));
        links.insert(bus_link.name().to_owned(), bus_link.clone());
        let bus: Arc<dyn Bus> = Arc::new(LinkedBus::new(self.bus, bus_link));
        let mut peers = HashMap::new();
        for callee in callees(name) {
            let url = self.peer_urls.get(&callee).ok_or(LaunchError::Peer { service: name, peer: callee })?;
            let link = Link::new(&format!("{name}->{callee}"));
            links.insert(link.name().to_owned(), link.clone());
            peers.insert(callee, Peer::new(callee.as_str(), url, link, peer::default_breaker()));
        }
        let ctx =
            Context::open(name, self.store_url, migrations(name), bus, peers, self.admin_token, self.choices)
                .await
                .map_err(|e| LaunchError::Store { service: name, reason: e.to_string() })?;
        if name == ServiceName::Catalog {
            let cache = crate::catalog::cache_link(&ctx);
            links.insert(cache.name().to_owned(), cache);
        }
        Ok(Wired { ctx, links })
    }
}

/// Service `name` running on `listener` until `shutdown` is cancelled.
pub type Running = Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>;

/// Runs service `name`: the one place a [`ServiceName`] becomes its `run::<S>`.
pub fn run(
    name: ServiceName,
    ctx: Arc<Context>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Running {
    use crate::service::run;
    match name {
        ServiceName::Customer => Box::pin(run::<CustomerService>(ctx, listener, shutdown)),
        ServiceName::Catalog => Box::pin(run::<CatalogService>(ctx, listener, shutdown)),
        ServiceName::Inventory => Box::pin(run::<InventoryService>(ctx, listener, shutdown)),
        ServiceName::Order => Box::pin(run::<OrderService>(ctx, listener, shutdown)),
        ServiceName::Payment => Box::pin(run::<PaymentService>(ctx, listener, shutdown)),
        ServiceName::Shipping => Box::pin(run::<ShippingService>(ctx, listener, shutdown)),
        ServiceName::Search => Box::pin(run::<SearchService>(ctx, listener, shutdown)),
    }
}

/// Starts service `name` as a task of its own (what [`crate::chaos::Chaos`] starts and
/// restarts).
pub(crate) fn spawn(
    name: ServiceName,
    ctx: Arc<Context>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> JoinHandle<std::io::Result<()>> {
    tokio::spawn(run(name, ctx, listener, shutdown))
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
