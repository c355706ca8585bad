//! Faults on purpose (DESIGN §4): one handle, [`Chaos`], that knows every link of the
//! running shop and every service, so links can be cut (both ways or one way), slowed and
//! made lossy, and services stopped and started again. The gateway's `/admin/chaos`
//! routes ([`http`]), `capshop chaos` and the dashboard all drive this one type.
//!
//! A stopped service neither serves nor consumes: its HTTP server, relay and consumers
//! stop. Its database and its context (store, links, breakers) stay, so starting it again
//! on the same port resumes where it left off.

pub mod http;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kit::link::{Faults, Link};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::service::{Context, ServiceName};

/// The endpoints a link can end at besides a service.
pub const BUS: &str = "bus";
pub const CACHE: &str = "cache";

/// Why a chaos command changed nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChaosError {
    #[error("unknown endpoint {name:?}: use a service ({services}), bus or cache")]
    UnknownEndpoint { name: String, services: String },
    #[error("there is no link between {a} and {b}; the links are: {links}")]
    NoLink { a: String, b: String, links: String },
    #[error("a loss fraction must be between 0 and 1 (e.g. 0.3), not {0}")]
    BadLoss(f64),
    #[error("a latency must be at most {max} ms, not {ms}; to make a link unreachable, cut it", max = MAX_LATENCY.as_millis())]
    BadLatency { ms: u64 },
    #[error("{service} could not start again on {addr}: {reason}")]
    Start { service: ServiceName, addr: SocketAddr, reason: String },
    #[error(
        "{service} does not run in this process; stop and start a served service with its process manager"
    )]
    NotHere { service: ServiceName },
    #[error("{service} failed while stopping: {reason}")]
    Stop { service: ServiceName, reason: String },
}

/// A latency beyond this is a cut in disguise; cut the link instead.
pub const MAX_LATENCY: Duration = Duration::from_secs(60);

/// One link as status shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct LinkStatus {
    /// `owner->peer`, e.g. `order->customer`.
    pub name: String,
    pub from: String,
    pub to: String,
    /// Calls from `from` to `to` fail.
    pub cut_out: bool,
    /// Answers (or fetches) from `to` back to `from` fail.
    pub cut_in: bool,
    /// Added to every pass over the link (a request and its answer pass twice).
    pub latency_ms: u64,
    /// The fraction of passes that fail.
    pub loss: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    Running,
    Stopped,
}

/// One service as status shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct ServiceStatus {
    #[schema(value_type = String)]
    pub name: ServiceName,
    pub state: ServiceState,
    /// Where it listens (the same address after a restart).
    pub url: String,
}

/// Every link with its faults and every service with its state.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Status {
    pub links: Vec<LinkStatus>,
    pub services: Vec<ServiceStatus>,
}

/// Starts one service's task on `listener` until `stop` is cancelled.
pub(crate) type Spawner =
    fn(ServiceName, Arc<Context>, TcpListener, CancellationToken) -> JoinHandle<std::io::Result<()>>;

struct Running {
    stop: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

struct Slot {
    addr: SocketAddr,
    ctx: Arc<Context>,
    running: tokio::sync::Mutex<Option<Running>>,
}

struct Inner {
    links: BTreeMap<String, Link>,
    slots: BTreeMap<ServiceName, Slot>,
    spawner: Spawner,
    /// Cancelled when the whole shop stops; every service's own token is its child.
    shutdown: CancellationToken,
    failures: mpsc::UnboundedSender<(ServiceName, std::io::Error)>,
}

/// The fault controls of one running shop; cheap to clone.
#[derive(Clone)]
pub struct Chaos {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Chaos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chaos").field("links", &self.inner.links.keys()).finish()
    }
}

impl Chaos {
    /// Takes over `listeners` and starts every service on its own; a service that fails
    /// by itself is reported on the returned receiver.
    pub(crate) fn start_all(
        links: BTreeMap<String, Link>,
        contexts: &BTreeMap<ServiceName, Arc<Context>>,
        listeners: BTreeMap<ServiceName, TcpListener>,
        spawner: Spawner,
        shutdown: CancellationToken,
    ) -> (Self, mpsc::UnboundedReceiver<(ServiceName, std::io::Error)>) {
        let (failures, failed) = mpsc::unbounded_channel();
        let mut slots = BTreeMap::new();
        let mut started = Vec::new();
        for (name, listener) in listeners {
            let addr = listener.local_addr().expect("a bound address");
            slots.insert(name, Slot { addr, ctx: contexts[&name].clone(), running: Default::default() });
            started.push((name, listener));
        }
        let chaos = Self { inner: Arc::new(Inner { links, slots, spawner, shutdown, failures }) };
        for (name, listener) in started {
            let running = chaos.spawn(name, listener);
            *chaos.inner.slots[&name].running.try_lock().expect("a fresh slot is free") = Some(running);
        }
        (chaos, failed)
    }

    /// The fault controls of a process that serves one service (or the gateway): only its
    /// own outbound `links`; it starts and stops no service.
    pub fn links_only(links: BTreeMap<String, Link>) -> Self {
        let (failures, _) = mpsc::unbounded_channel();
        let inner = Inner {
            links,
            slots: BTreeMap::new(),
            spawner: crate::wiring::spawn,
            shutdown: CancellationToken::new(),
            failures,
        };
        Self { inner: Arc::new(inner) }
    }

    fn spawn(&self, name: ServiceName, listener: TcpListener) -> Running {
        let stop = self.inner.shutdown.child_token();
        let inner = (self.inner.spawner)(name, self.inner.slots[&name].ctx.clone(), listener, stop.clone());
        let failures = self.inner.failures.clone();
        let task = tokio::spawn(async move {
            let result = inner.await.map_err(std::io::Error::other).and_then(|r| r);
            if let Err(e) = &result {
                tracing::error!(service = %name, error = %e, "service failed");
                let _ = failures.send((name, std::io::Error::other(e.to_string())));
            }
            result
        });
        Running { stop, task }
    }

    /// Every link with its faults and every service with its state.
    pub async fn status(&self) -> Status {
        let links = self.inner.links.values().map(link_status).collect();
        let mut services = Vec::new();
        for (name, slot) in &self.inner.slots {
            let running = slot.running.lock().await.as_ref().is_some_and(|r| !r.task.is_finished());
            let state = if running { ServiceState::Running } else { ServiceState::Stopped };
            services.push(ServiceStatus { name: *name, state, url: format!("http://{}", slot.addr) });
        }
        Status { links, services }
    }

    /// The link named `name` (e.g. `order->customer`), if the shop has it.
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.inner.links.get(name)
    }

    /// Cuts traffic between `a` and `b`: both ways, or with `oneway` only from `a` to `b`.
    pub fn cut(&self, a: &str, b: &str, oneway: bool) -> Result<LinkStatus, ChaosError> {
        let (link, a_owns) = self.between(a, b)?;
        let mut faults = link.faults();
        if !oneway || a_owns {
            faults.cut_out = true;
        }
        if !oneway || !a_owns {
            faults.cut_in = true;
        }
        link.set(faults);
        Ok(link_status(link))
    }

    /// Removes every fault of the link between `a` and `b`.
    pub fn heal(&self, a: &str, b: &str) -> Result<LinkStatus, ChaosError> {
        let (link, _) = self.between(a, b)?;
        link.heal();
        Ok(link_status(link))
    }

    /// Removes every fault of every link (stopped services stay stopped).
    pub fn heal_all(&self) {
        self.inner.links.values().for_each(Link::heal);
    }

    /// Adds `latency` to every pass over the link between `a` and `b`.
    pub fn latency(&self, a: &str, b: &str, latency: Duration) -> Result<LinkStatus, ChaosError> {
        if latency > MAX_LATENCY {
            return Err(ChaosError::BadLatency { ms: latency.as_millis() as u64 });
        }
        let (link, _) = self.between(a, b)?;
        link.set(Faults { latency, ..link.faults() });
        Ok(link_status(link))
    }

    /// Makes a `fraction` of the passes over the link between `a` and `b` fail.
    pub fn loss(&self, a: &str, b: &str, fraction: f64) -> Result<LinkStatus, ChaosError> {
        if !(0.0..=1.0).contains(&fraction) {
            return Err(ChaosError::BadLoss(fraction));
        }
        let (link, _) = self.between(a, b)?;
        link.set(Faults { loss: fraction, ..link.faults() });
        Ok(link_status(link))
    }

    /// Stops `service`: it no longer serves nor consumes; its data stays. Stopping a
    /// stopped service changes nothing.
    pub async fn stop(&self, service: ServiceName) -> Result<(), ChaosError> {
        let slot = self.inner.slots.get(&service).ok_or(ChaosError::NotHere { service })?;
        let running = slot.running.lock().await.take();
        match running {
            Some(Running { stop, task }) => {
                stop.cancel();
                let stopped = task.await.map_err(std::io::Error::other).and_then(|r| r);
                stopped.map_err(|e| ChaosError::Stop { service, reason: e.to_string() })
            }
            None => Ok(()),
        }
    }

    /// Starts `service` again on its address with the same context and links (also after
    /// it failed by itself). Starting a running service changes nothing.
    pub async fn start(&self, service: ServiceName) -> Result<(), ChaosError> {
        let slot = self.inner.slots.get(&service).ok_or(ChaosError::NotHere { service })?;
        let mut running = slot.running.lock().await;
        if running.as_ref().is_some_and(|r| !r.task.is_finished()) {
            return Ok(());
        }
        let listener = TcpListener::bind(slot.addr).await.map_err(|e| ChaosError::Start {
            service,
            addr: slot.addr,
            reason: e.to_string(),
        })?;
        *running = Some(self.spawn(service, listener));
        Ok(())
    }

    /// Stops every service (the shop is stopping); the first failure is returned.
    pub(crate) async fn stop_all(&self) -> std::io::Result<()> {
        self.inner.shutdown.cancel();
        let mut first = Ok(());
        for name in self.inner.slots.keys() {
            if let Err(e) = self.stop(*name).await
                && first.is_ok()
            {
                first = Err(std::io::Error::other(e.to_string()));
            }
        }
        first
    }

    /// The link between `a` and `b`, and whether `a` is its owner (so `a -> b` is `Out`).
    fn between(&self, a: &str, b: &str) -> Result<(&Link, bool), ChaosError> {
        for name in [a, b] {
            let known = name == BUS || name == CACHE || name.parse::<ServiceName>().is_ok();
            if !known {
                let services = ServiceName::ALL.map(ServiceName::as_str).join(", ");
                return Err(ChaosError::UnknownEndpoint { name: name.to_owned(), services });
            }
        }
        if let Some(link) = self.inner.links.get(&format!("{a}->{b}")) {
            return Ok((link, true));
        }
        if let Some(link) = self.inner.links.get(&format!("{b}->{a}")) {
            return Ok((link, false));
        }
        let links = self.inner.links.keys().cloned().collect::<Vec<_>>().join(", ");
        Err(ChaosError::NoLink { a: a.to_owned(), b: b.to_owned(), links })
    }
}

fn link_status(link: &Link) -> LinkStatus {
    let faults = link.faults();
    let (from, to) = link.name().split_once("->").unwrap_or((link.name(), ""));
    LinkStatus {
        name: link.name().to_owned(),
        from: from.to_owned(),
        to: to.to_owned(),
        cut_out: faults.cut_out,
        cut_in: faults.cut_in,
        latency_ms: faults.latency.as_millis() as u64,
        loss: faults.loss,
    }
}
