//! Faults on purpose (DESIGN §4): one handle, [`Chaos`], that knows every link of the
//! running shop and every [`Part`] (a service, or one inventory site), so links can be cut
//! (both ways or one way), slowed and made lossy, a part's bus link given faults inside the
//! bus ([`BusFault`]: deliveries duplicated, acks lost, deliveries delayed), and parts
//! stopped and started again.
//! A service that runs as several parts names all of them: `inventory` is both sites. The gateway's `/admin/chaos`
//! routes ([`http`]), `capshop chaos` and the dashboard all drive this one type.
//!
//! A stopped part neither serves nor consumes: its HTTP server, relay and consumers
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

use crate::service::part::{self, UnknownPart};
use crate::service::{Context, Part};

/// The endpoints a link can end at besides a service.
pub const BUS: &str = "bus";
pub const CACHE: &str = "cache";

/// Why a chaos command changed nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChaosError {
    #[error("unknown endpoint {name:?}: use a service or an inventory site ({parts}), bus or cache")]
    UnknownEndpoint { name: String, parts: String },
    #[error(transparent)]
    UnknownPart(#[from] UnknownPart),
    #[error("there is no link between {a} and {b}; the links are: {links}")]
    NoLink { a: String, b: String, links: String },
    #[error("a loss fraction must be between 0 and 1 (e.g. 0.3), not {0}")]
    BadLoss(f64),
    #[error("a {fault} fraction must be between 0 and 1 (e.g. 0.3), not {fraction}")]
    BadFraction { fault: BusFault, fraction: f64 },
    #[error(
        "{fault} is a fault inside the bus: name a service (or an inventory site) and bus, e.g. `order bus`, not {a} and {b}"
    )]
    NotABusLink { fault: BusFault, a: String, b: String },
    #[error("a latency must be at most {max} ms, not {ms}; to make a link unreachable, cut it", max = MAX_LATENCY.as_millis())]
    BadLatency { ms: u64 },
    #[error("{part} could not start again on {addr}: {reason}")]
    Start { part: Part, addr: SocketAddr, reason: String },
    #[error("{part} does not run in this process; stop and start a served service with its process manager")]
    NotHere { part: Part },
    #[error("{part} failed while stopping: {reason}")]
    Stop { part: Part, reason: String },
}

/// A fault inside the bus, set on a `<part>->bus` link as a fraction of its deliveries or
/// acks (`kit::link::Faults`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusFault {
    /// Deliveries handed to the consumer a second time.
    Duplicate,
    /// Acks reported done but not forwarded: the bus redelivers after its ack wait.
    LostAck,
    /// Deliveries held back and handed out after later ones.
    Delay,
}

impl std::fmt::Display for BusFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BusFault::Duplicate => "duplicate",
            BusFault::LostAck => "lost-ack",
            BusFault::Delay => "delay",
        })
    }
}

/// A latency beyond this is a cut in disguise; cut the link instead.
pub const MAX_LATENCY: Duration = Duration::from_secs(60);

/// One link as status shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
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
    /// On a bus link: the fraction of deliveries handed to the consumer twice.
    pub duplicate: f64,
    /// On a bus link: the fraction of acks not forwarded (redelivered after the ack wait).
    pub lost_ack: f64,
    /// On a bus link: the fraction of deliveries held back behind later ones.
    pub delay: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    Running,
    Stopped,
}

/// One part (a service, or an inventory site) as status shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ServiceStatus {
    /// The part: `order`, `inventory-dc1`, ...
    pub name: String,
    /// The service it is: `inventory` for both sites.
    pub service: String,
    pub state: ServiceState,
    /// Where it listens (the same address after a restart).
    pub url: String,
}

/// Every link with its faults and every part with its state.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Status {
    pub links: Vec<LinkStatus>,
    pub services: Vec<ServiceStatus>,
}

/// Starts one part's task on `listener` until `stop` is cancelled.
pub(crate) type Spawner =
    fn(Part, Arc<Context>, TcpListener, CancellationToken) -> JoinHandle<std::io::Result<()>>;

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
    slots: BTreeMap<Part, Slot>,
    spawner: Spawner,
    /// Cancelled when the whole shop stops; every service's own token is its child.
    shutdown: CancellationToken,
    failures: mpsc::UnboundedSender<(Part, std::io::Error)>,
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
    /// Takes over `listeners` and starts every part on its own; a part that fails by
    /// itself is reported on the returned receiver.
    pub(crate) fn start_all(
        links: BTreeMap<String, Link>,
        contexts: &BTreeMap<Part, Arc<Context>>,
        listeners: BTreeMap<Part, TcpListener>,
        spawner: Spawner,
        shutdown: CancellationToken,
    ) -> (Self, mpsc::UnboundedReceiver<(Part, std::io::Error)>) {
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

    fn spawn(&self, name: Part, listener: TcpListener) -> Running {
        let stop = self.inner.shutdown.child_token();
        let inner = (self.inner.spawner)(name, self.inner.slots[&name].ctx.clone(), listener, stop.clone());
        let failures = self.inner.failures.clone();
        let task = tokio::spawn(async move {
            let result = inner.await.map_err(std::io::Error::other).and_then(|r| r);
            if let Err(e) = &result {
                tracing::error!(part = %name, error = %e, "part failed");
                let _ = failures.send((name, std::io::Error::other(e.to_string())));
            }
            result
        });
        Running { stop, task }
    }

    /// Every link with its faults and every part with its state.
    pub async fn status(&self) -> Status {
        let links = self.inner.links.values().map(link_status).collect();
        let mut services = Vec::new();
        for (name, slot) in &self.inner.slots {
            let running = slot.running.lock().await.as_ref().is_some_and(|r| !r.task.is_finished());
            let state = if running { ServiceState::Running } else { ServiceState::Stopped };
            services.push(ServiceStatus {
                name: name.name(),
                service: name.service().as_str().to_owned(),
                state,
                url: format!("http://{}", slot.addr),
            });
        }
        Status { links, services }
    }

    /// The link named `name` (e.g. `order->customer`), if the shop has it.
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.inner.links.get(name)
    }

    /// Cuts traffic between `a` and `b`: both ways, or with `oneway` only from `a` to `b`.
    /// Every link between them is cut (the sites have one each way), and a service of
    /// several parts names all of them (`inventory bus`: both sites' links to the bus).
    pub fn cut(&self, a: &str, b: &str, oneway: bool) -> Result<Vec<LinkStatus>, ChaosError> {
        self.each_between(a, b, |link, a_owns| {
            let mut faults = link.faults();
            if !oneway || a_owns {
                faults.cut_out = true;
            }
            if !oneway || !a_owns {
                faults.cut_in = true;
            }
            link.set(faults);
        })
    }

    /// Removes every fault of the links between `a` and `b`.
    pub fn heal(&self, a: &str, b: &str) -> Result<Vec<LinkStatus>, ChaosError> {
        self.each_between(a, b, |link, _| link.heal())
    }

    /// Removes every fault of every link (stopped services stay stopped).
    pub fn heal_all(&self) {
        self.inner.links.values().for_each(Link::heal);
    }

    /// Adds `latency` to every pass over the link between `a` and `b`.
    pub fn latency(&self, a: &str, b: &str, latency: Duration) -> Result<Vec<LinkStatus>, ChaosError> {
        if latency > MAX_LATENCY {
            return Err(ChaosError::BadLatency { ms: latency.as_millis() as u64 });
        }
        self.each_between(a, b, |link, _| link.set(Faults { latency, ..link.faults() }))
    }

    /// Makes a `fraction` of the passes over the link between `a` and `b` fail.
    pub fn loss(&self, a: &str, b: &str, fraction: f64) -> Result<Vec<LinkStatus>, ChaosError> {
        if !(0.0..=1.0).contains(&fraction) {
            return Err(ChaosError::BadLoss(fraction));
        }
        self.each_between(a, b, |link, _| link.set(Faults { loss: fraction, ..link.faults() }))
    }

    /// Sets the bus fault `fault` on the bus links between `a` and `b` (one end `bus`) to
    /// `fraction` of their deliveries (0 removes it).
    pub fn bus_fault(
        &self,
        a: &str,
        b: &str,
        fault: BusFault,
        fraction: f64,
    ) -> Result<Vec<LinkStatus>, ChaosError> {
        if !(0.0..=1.0).contains(&fraction) {
            return Err(ChaosError::BadFraction { fault, fraction });
        }
        if (a == BUS) == (b == BUS) {
            return Err(ChaosError::NotABusLink { fault, a: a.to_owned(), b: b.to_owned() });
        }
        self.each_between(a, b, |link, _| {
            let faults = link.faults();
            link.set(match fault {
                BusFault::Duplicate => Faults { duplicate: fraction, ..faults },
                BusFault::LostAck => Faults { lost_ack: fraction, ..faults },
                BusFault::Delay => Faults { delay: fraction, ..faults },
            })
        })
    }

    /// The parts `name` names: a part (`inventory-dc2`), or every part of a service
    /// (`inventory`: both sites).
    pub fn parts(&self, name: &str) -> Result<Vec<Part>, ChaosError> {
        Ok(Part::named(name)?)
    }

    /// Stops `part`: it no longer serves nor consumes; its data stays. Stopping a
    /// stopped part changes nothing.
    pub async fn stop(&self, part: Part) -> Result<(), ChaosError> {
        let slot = self.inner.slots.get(&part).ok_or(ChaosError::NotHere { part })?;
        let running = slot.running.lock().await.take();
        match running {
            Some(Running { stop, task }) => {
                stop.cancel();
                let stopped = task.await.map_err(std::io::Error::other).and_then(|r| r);
                stopped.map_err(|e| ChaosError::Stop { part, reason: e.to_string() })
            }
            None => Ok(()),
        }
    }

    /// Starts `part` again on its address with the same context and links (also after
    /// it failed by itself). Starting a running part changes nothing.
    pub async fn start(&self, part: Part) -> Result<(), ChaosError> {
        let slot = self.inner.slots.get(&part).ok_or(ChaosError::NotHere { part })?;
        let mut running = slot.running.lock().await;
        if running.as_ref().is_some_and(|r| !r.task.is_finished()) {
            return Ok(());
        }
        let listener = TcpListener::bind(slot.addr).await.map_err(|e| ChaosError::Start {
            part,
            addr: slot.addr,
            reason: e.to_string(),
        })?;
        *running = Some(self.spawn(part, listener));
        Ok(())
    }

    /// Stops every part (the shop is stopping); the first failure is returned.
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

    /// Applies `change` to every link between `a` and `b` (with whether `a` owns it, so
    /// `a -> b` is its `Out`) and answers their status; an unknown endpoint or no link
    /// at all changes nothing.
    fn each_between(
        &self,
        a: &str,
        b: &str,
        change: impl Fn(&Link, bool),
    ) -> Result<Vec<LinkStatus>, ChaosError> {
        let (ends_a, ends_b) = (endpoints(a)?, endpoints(b)?);
        let mut found: BTreeMap<&str, (&Link, bool)> = BTreeMap::new();
        for x in &ends_a {
            for y in ends_b.iter().filter(|y| *y != x) {
                if let Some(link) = self.inner.links.get(&format!("{x}->{y}")) {
                    found.insert(link.name(), (link, true));
                }
                if let Some(link) = self.inner.links.get(&format!("{y}->{x}")) {
                    found.entry(link.name()).or_insert((link, false));
                }
            }
        }
        if found.is_empty() {
            let links = self.inner.links.keys().cloned().collect::<Vec<_>>().join(", ");
            return Err(ChaosError::NoLink { a: a.to_owned(), b: b.to_owned(), links });
        }
        Ok(found
            .into_values()
            .map(|(link, a_owns)| {
                change(link, a_owns);
                link_status(link)
            })
            .collect())
    }
}

/// The link ends `name` stands for: `bus`, `cache`, or the names of the parts it names.
fn endpoints(name: &str) -> Result<Vec<String>, ChaosError> {
    if name == BUS || name == CACHE {
        return Ok(vec![name.to_owned()]);
    }
    match Part::named(name) {
        Ok(parts) => Ok(parts.into_iter().map(Part::name).collect()),
        Err(_) => Err(ChaosError::UnknownEndpoint { name: name.to_owned(), parts: part::known() }),
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
        duplicate: faults.duplicate,
        lost_ack: faults.lost_ack,
        delay: faults.delay,
    }
}
