//! The embedded shop: every service in this process, each with its own SQLite file and
//! loopback port, one embedded bus, and the gateway in front — what `capshop up` runs and
//! what the end-to-end tests start.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use kit::bus::Bus;
use kit::link::{Link, LinkedBus};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::catalog::CatalogService;
use crate::customer::CustomerService;
use crate::gateway;
use crate::inventory::InventoryService;
use crate::order::OrderService;
use crate::payment::PaymentService;
use crate::search::SearchService;
use crate::service::{Choices, Context, Peer, Service, ServiceName, peer};
use crate::shipping::ShippingService;
pub use crate::stores::StoreLocation;

/// How to start the shop.
#[derive(Debug, Clone)]
pub struct ShopConfig {
    /// Where every database file and the bus live; kept across restarts.
    pub data_dir: PathBuf,
    /// Where the gateway listens (port 0 picks a free one).
    pub gateway: SocketAddr,
    pub admin_token: String,
    pub choices: Choices,
    /// Where the service databases live (default: SQLite files in `data_dir`).
    pub stores: StoreLocation,
}

/// Which services call which synchronously (DESIGN §1); everything else goes by events.
const CALLS: [(ServiceName, ServiceName); 3] = [
    (ServiceName::Order, ServiceName::Customer),
    (ServiceName::Order, ServiceName::Catalog),
    (ServiceName::Order, ServiceName::Payment),
];

/// A running shop; [`Shop::stop`] shuts it down cleanly.
pub struct Shop {
    pub gateway: SocketAddr,
    pub services: BTreeMap<ServiceName, SocketAddr>,
    pub admin_token: String,
    /// Every link by name: `order->customer`, `search->bus`, ...
    pub links: BTreeMap<String, Link>,
    pub contexts: BTreeMap<ServiceName, Arc<Context>>,
    shutdown: CancellationToken,
    tasks: tokio::task::JoinSet<std::io::Result<()>>,
}

impl Shop {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.gateway, path)
    }

    /// Resolves when every service has stopped (after [`Shop::stop`], or when one failed).
    pub async fn stopped(&mut self) -> std::io::Result<()> {
        while let Some(joined) = self.tasks.join_next().await {
            joined.map_err(std::io::Error::other)??;
        }
        Ok(())
    }

    pub async fn stop(mut self) -> std::io::Result<()> {
        self.shutdown.cancel();
        self.stopped().await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot use the data directory {dir}: {reason}")]
    DataDir { dir: String, reason: String },
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("cannot open the bus: {0}")]
    Bus(#[from] kit::bus::BusError),
    #[error("cannot open the {service} database: {reason}")]
    Store { service: ServiceName, reason: String },
}

/// Starts every service and the gateway.
pub async fn launch(config: ShopConfig) -> Result<Shop, LaunchError> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| LaunchError::DataDir { dir: dir.display().to_string(), reason: e.to_string() })?;
    let bus = kit::bus::connect(&format!("embedded:{}", dir.join("bus.db").display())).await?;

    let mut listeners = BTreeMap::new();
    for name in ServiceName::ALL {
        listeners.insert(name, bind("127.0.0.1:0".parse().expect("a loopback address")).await?);
    }
    let services: BTreeMap<ServiceName, SocketAddr> =
        listeners.iter().map(|(name, l)| (*name, l.local_addr().expect("a bound address"))).collect();

    let mut links = BTreeMap::new();
    let mut contexts = BTreeMap::new();
    for name in ServiceName::ALL {
        let bus_link = Link::new(&format!("{name}->bus"));
        links.insert(bus_link.name().to_owned(), bus_link.clone());
        let service_bus: Arc<dyn Bus> = Arc::new(LinkedBus::new(bus.clone(), bus_link));
        let mut peers = HashMap::new();
        for (_, callee) in CALLS.iter().filter(|(caller, _)| *caller == name) {
            let link = Link::new(&format!("{name}->{callee}"));
            links.insert(link.name().to_owned(), link.clone());
            let url = format!("http://{}", services[callee]);
            peers.insert(*callee, Peer::new(callee.as_str(), &url, link, peer::default_breaker()));
        }
        let store_url = config.stores.url(name, dir);
        let migrations = migrations(name);
        let ctx = Context::open(
            name,
            &store_url,
            migrations,
            service_bus,
            peers,
            config.admin_token.clone(),
            config.choices.clone(),
        )
        .await
        .map_err(|e| LaunchError::Store { service: name, reason: e.to_string() })?;
        contexts.insert(name, ctx);
    }

    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (name, listener) in listeners {
        let (ctx, shutdown) = (contexts[&name].clone(), shutdown.clone());
        match name {
            ServiceName::Customer => {
                tasks.spawn(crate::service::run::<CustomerService>(ctx, listener, shutdown))
            }
            ServiceName::Catalog => {
                tasks.spawn(crate::service::run::<CatalogService>(ctx, listener, shutdown))
            }
            ServiceName::Inventory => {
                tasks.spawn(crate::service::run::<InventoryService>(ctx, listener, shutdown))
            }
            ServiceName::Order => tasks.spawn(crate::service::run::<OrderService>(ctx, listener, shutdown)),
            ServiceName::Payment => {
                tasks.spawn(crate::service::run::<PaymentService>(ctx, listener, shutdown))
            }
            ServiceName::Shipping => {
                tasks.spawn(crate::service::run::<ShippingService>(ctx, listener, shutdown))
            }
            ServiceName::Search => tasks.spawn(crate::service::run::<SearchService>(ctx, listener, shutdown)),
        };
    }

    let gateway_listener = bind(config.gateway).await?;
    let gateway = gateway_listener.local_addr().expect("a bound address");
    let routes =
        gateway::Routes { services: services.iter().map(|(n, a)| (*n, format!("http://{a}"))).collect() };
    let app = gateway::router(routes);
    let stop = shutdown.clone();
    tasks.spawn(async move {
        axum::serve(gateway_listener, app).with_graceful_shutdown(stop.cancelled_owned()).await
    });

    Ok(Shop { gateway, services, admin_token: config.admin_token, links, contexts, shutdown, tasks })
}

fn migrations(name: ServiceName) -> &'static kit::store::Migrations {
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

async fn bind(addr: SocketAddr) -> Result<TcpListener, LaunchError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| LaunchError::Listen { addr: addr.to_string(), reason: e.to_string() })
}
