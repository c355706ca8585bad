//! The distributed mode: one service, or the gateway, in this process (`capshop serve`),
//! on a store and a bus named by URL (`postgres://...`, `nats://...`) and with its peers
//! at the URLs given. The service is wired by [`crate::wiring`] exactly as `launch` wires
//! it; the process adds `/admin/chaos` for its own outbound links, `/admin/pause` (its
//! pause, held for a backup's cut) and `/admin/process` (what it runs on) for the
//! gateway's `/admin/topology`.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::chaos::Chaos;
use crate::gateway;
use crate::inventory::sites::Site;
use crate::launch::LaunchError;
use crate::service::{Choices, Part, ServiceName};
use crate::topology::{Deployment, ProcessInfo};
use crate::wiring::Wiring;

/// What one served part (a service, or an inventory site) needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub part: Part,
    /// Its own database, e.g. `postgres://shop@db1:5432/capshop_order`.
    pub store_url: String,
    /// The bus every service shares, e.g. `nats://nats1:4222,nats2:4222?replicas=3`.
    pub bus_url: String,
    /// The base URL of each peer by name (at least those of [`crate::wiring::peers_of`]).
    pub peers: BTreeMap<String, String>,
    pub admin_token: String,
    pub choices: Choices,
    /// The catalog's popularity cache, e.g. `redis://cache1:6379`; `None` keeps it in the
    /// catalog's memory. Only the catalog has one.
    pub cache_url: Option<String>,
    /// Which instance of the part this process is, e.g. `order-2` (several may run).
    pub instance_id: String,
}

/// Runs one service on `listener` until `shutdown` is cancelled: opens its store and the
/// bus, then runs it as `launch` does, with `/admin/chaos` for its links beside its routes.
pub async fn serve(
    config: ServeConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), LaunchError> {
    let part = config.part;
    let bus = kit::bus::connect(&config.bus_url).await?;
    // Several instances of the service may share its database: their transactions take turns.
    let store_url = match config.store_url.starts_with("postgres") {
        true if config.store_url.contains('?') => format!("{}&shared=true", config.store_url),
        true => format!("{}?shared=true", config.store_url),
        false => config.store_url.clone(),
    };
    let pause = kit::pause::Pause::new();
    let wired = Wiring {
        part,
        store_url: &store_url,
        bus,
        peer_urls: &config.peers,
        admin_token: config.admin_token.clone(),
        choices: config.choices,
        cache_url: config.cache_url.as_deref(),
        pause: pause.clone(),
    }
    .open()
    .await?;
    let chaos = crate::chaos::http::router(Chaos::links_only(wired.links), config.admin_token.clone());
    let info = ProcessInfo::new(part, &config.store_url, &config.bus_url, config.cache_url.as_deref());
    let routes = axum::Router::new()
        .nest("/admin/chaos", chaos)
        .merge(crate::backup::hold::router(pause, config.admin_token.clone()))
        .merge(crate::topology::process_router(info, config.admin_token));
    wired.ctx.process_routes.set(routes).unwrap_or_else(|_| unreachable!("a fresh context has no routes"));
    wired
        .ctx
        .instance_id
        .set(config.instance_id)
        .unwrap_or_else(|_| unreachable!("a fresh context has no id"));
    crate::wiring::run(part, Arc::clone(&wired.ctx), listener, shutdown)
        .await
        .map_err(|e| LaunchError::Served { part, reason: e.to_string() })
}

/// What the gateway of the distributed mode needs to take backups (docs/BACKUP.md).
#[derive(Debug, Clone)]
pub struct GatewayBackups {
    /// The server holding every part's `capshop_<part>` database: postgres://USER@HOST:PORT.
    pub database_base: String,
    /// The bus every service shares.
    pub bus_url: String,
}

/// Runs the gateway on `listener` until `shutdown` is cancelled, routing `/api/<service>`
/// to the service's `instances` (balanced when there are several). It owns no links: each service's `/admin/chaos` controls its own.
/// With `backups`, `/admin/backups` takes consistent backups and `/admin/reconcile`
/// reads at a cut, both holding every service process's pause.
pub async fn serve_gateway(
    instances: BTreeMap<String, Vec<String>>,
    admin_token: String,
    backups: Option<GatewayBackups>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut instances = instances;
    // `/api/inventory` reaches the first site, as in the embedded shop.
    if let Some(dc1) = instances.get(&Site::Dc1.instance()).cloned() {
        instances.entry(ServiceName::Inventory.to_string()).or_insert(dc1);
    }
    let services: BTreeMap<String, String> =
        instances.iter().filter_map(|(name, urls)| Some((name.clone(), urls.first()?.clone()))).collect();
    let deployment = Deployment::Distributed(services.clone());
    let source = match backups {
        Some(backups) => {
            let bus = kit::bus::connect(&backups.bus_url).await.map_err(std::io::Error::other)?;
            let processes = instances.values().flatten().cloned().collect();
            let cluster = crate::backup::distributed::Cluster::new(
                processes,
                &backups.database_base,
                bus,
                admin_token.clone(),
            );
            Some(crate::backup::Source::distributed(cluster))
        }
        None => None,
    };
    let routes = gateway::Routes { instances };
    let app = gateway::router(
        routes,
        crate::facts::LocalParts::default(),
        Chaos::links_only(BTreeMap::new()),
        deployment,
        source,
        admin_token,
    );
    axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
