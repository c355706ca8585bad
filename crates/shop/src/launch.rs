//! The embedded shop: every service in this process, each with its own SQLite file and
//! loopback port, one embedded bus, and the gateway in front — what `capshop up` runs and
//! what the end-to-end tests start.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kit::link::Link;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::chaos::Chaos;
use crate::gateway;
use crate::inventory::sites::Site;
use crate::service::{Choices, Context, Part, ServiceName};
pub use crate::stores::StoreLocation;
use crate::wiring::{self, Wiring};

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
    /// Routes the binary adds to the gateway beside the shop's own (`capshop up`: running
    /// scenarios from the dashboard); they check the admin token themselves.
    pub operations: Option<axum::Router>,
}

impl ShopConfig {
    /// A shop kept in `data_dir` with its gateway on a free loopback port: what the tests
    /// and the scenarios start.
    pub fn ephemeral(data_dir: &Path, admin_token: &str, choices: Choices) -> Self {
        Self {
            data_dir: data_dir.to_owned(),
            gateway: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_token: admin_token.to_owned(),
            choices,
            stores: StoreLocation::Sqlite,
            operations: None,
        }
    }
}

/// A running shop; [`Shop::stop`] shuts it down cleanly.
pub struct Shop {
    pub gateway: SocketAddr,
    /// Where each service listens; inventory's is dc1's (its HTTP API is dc1's).
    pub services: BTreeMap<ServiceName, SocketAddr>,
    pub admin_token: String,
    /// Every link by name: `order->customer`, `search->bus`, ...
    pub links: BTreeMap<String, Link>,
    /// Each service's context; inventory's is dc1's.
    pub contexts: BTreeMap<ServiceName, Arc<Context>>,
    /// Every running part's context (each inventory site on its own): what publishes on
    /// its own stream, for those who measure all of them.
    pub parts: BTreeMap<Part, Arc<Context>>,
    /// Cuts, heals, slows links; stops and starts services and sites.
    pub chaos: Chaos,
    /// The inventory sites; `services` and `contexts` name dc1 for inventory.
    pub sites: BTreeMap<Site, InventorySite>,
    /// Consistent backups of this shop's databases (`None` with services on PostgreSQL).
    pub backups: Option<crate::backup::Source>,
    shutdown: CancellationToken,
    /// The gateway.
    tasks: tokio::task::JoinSet<std::io::Result<()>>,
    /// Parts that failed by themselves (not stopped on purpose).
    failures: mpsc::UnboundedReceiver<(Part, std::io::Error)>,
}

impl Shop {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.gateway, path)
    }

    /// Resolves when the gateway has stopped or a service failed by itself; a service
    /// stopped on purpose (by [`Chaos::stop`]) is not a failure.
    pub async fn stopped(&mut self) -> std::io::Result<()> {
        loop {
            tokio::select! {
                Some((name, e)) = self.failures.recv() => {
                    return Err(std::io::Error::other(format!("{name} failed: {e}")));
                }
                joined = self.tasks.join_next() => match joined {
                    Some(joined) => joined.map_err(std::io::Error::other)??,
                    None => return Ok(()),
                },
            }
        }
    }

    pub async fn stop(mut self) -> std::io::Result<()> {
        self.shutdown.cancel();
        let services = self.chaos.stop_all().await;
        while let Some(joined) = self.tasks.join_next().await {
            joined.map_err(std::io::Error::other)??;
        }
        services
    }
}

/// One running inventory site.
#[derive(Clone)]
pub struct InventorySite {
    pub addr: SocketAddr,
    pub ctx: Arc<Context>,
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot use the data directory {dir}: {reason}")]
    DataDir { dir: String, reason: String },
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("cannot open the bus: {0}")]
    Bus(#[from] kit::bus::BusError),
    #[error("cannot open the {part} database: {reason}")]
    Store { part: Part, reason: String },
    #[error("{part} calls {peer}, but no URL for {peer} was given")]
    Peer { part: Part, peer: String },
    #[error("{part} stopped with an error: {reason}")]
    Served { part: Part, reason: String },
}

/// Starts every service and the gateway.
pub async fn launch(config: ShopConfig) -> Result<Shop, LaunchError> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| LaunchError::DataDir { dir: dir.display().to_string(), reason: e.to_string() })?;
    let bus = kit::bus::connect(&format!("embedded:{}", dir.join("bus.db").display())).await?;

    let mut listeners = BTreeMap::new();
    for part in Part::all() {
        listeners.insert(part, bind("127.0.0.1:0".parse().expect("a loopback address")).await?);
    }
    let addrs: BTreeMap<Part, SocketAddr> =
        listeners.iter().map(|(part, l)| (*part, l.local_addr().expect("a bound address"))).collect();
    // A service of several parts (inventory) is reached at its first (dc1).
    let mut services = BTreeMap::new();
    for (part, addr) in &addrs {
        services.entry(part.service()).or_insert(*addr);
    }

    // Each part by its name, and each service by its own too (`inventory` is dc1).
    let peer_urls: BTreeMap<String, String> = services
        .iter()
        .map(|(n, a)| (n.to_string(), a))
        .chain(addrs.iter().map(|(p, a)| (p.name(), a)))
        .map(|(n, a)| (n, format!("http://{a}")))
        .collect();
    let mut links = BTreeMap::new();
    let mut parts = BTreeMap::new();
    // One process, one pause: a backup stops every part's cross-database work at once.
    let pause = kit::pause::Pause::new();
    for part in Part::all() {
        let store_url = config.stores.url_of(&part.name(), dir);
        let wired = Wiring {
            part,
            store_url: &store_url,
            bus: bus.clone(),
            peer_urls: &peer_urls,
            admin_token: config.admin_token.clone(),
            choices: config.choices.clone(),
            cache_url: None,
            pause: pause.clone(),
        }
        .open()
        .await?;
        links.extend(wired.links);
        parts.insert(part, wired.ctx);
    }
    let mut contexts = BTreeMap::new();
    for (part, ctx) in &parts {
        contexts.entry(part.service()).or_insert_with(|| ctx.clone());
    }
    let sites: BTreeMap<Site, InventorySite> = Site::ALL
        .map(|s| (s, InventorySite { addr: addrs[&Part::Site(s)], ctx: parts[&Part::Site(s)].clone() }))
        .into();
    let shutdown = CancellationToken::new();
    let (chaos, failures) =
        Chaos::start_all(links.clone(), &parts, listeners, wiring::spawn, shutdown.clone());
    let mut tasks = tokio::task::JoinSet::new();
    let gateway_listener = bind(config.gateway).await?;
    let gateway = gateway_listener.local_addr().expect("a bound address");
    let routes = gateway::Routes::single(peer_urls);
    let local = crate::facts::LocalParts::new(&parts);
    let deployment = crate::topology::Deployment::Embedded(chaos.clone());
    let backups = match config.stores {
        StoreLocation::Sqlite => Some(crate::backup::Source::embedded(dir, pause.clone())),
        // Services on PostgreSQL beside the embedded bus: not a deployment backups know.
        StoreLocation::Postgres { .. } | StoreLocation::Split { .. } => None,
    };
    let mut app = gateway::router(
        routes,
        local,
        chaos.clone(),
        deployment,
        backups.clone(),
        config.admin_token.clone(),
    );
    if let Some(operations) = config.operations.clone() {
        app = app.merge(operations);
    }
    let stop = shutdown.clone();
    tasks.spawn(async move {
        axum::serve(gateway_listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });

    Ok(Shop {
        gateway,
        services,
        admin_token: config.admin_token,
        links,
        contexts,
        parts,
        sites,
        backups,
        chaos,
        shutdown,
        tasks,
        failures,
    })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, LaunchError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| LaunchError::Listen { addr: addr.to_string(), reason: e.to_string() })
}
