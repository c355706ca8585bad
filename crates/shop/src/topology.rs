//! The running shop as a graph, for the dashboard: the gateway's `GET /admin/topology`
//! names every node (each part, the bus, the cache and, in the distributed mode, each
//! process's database) and every link with its faults and the chaos route that controls
//! it. In the embedded mode one [`Chaos`] knows it all; in the distributed mode each
//! process controls its own outbound links, so the gateway asks each one
//! (`/admin/chaos`, and `/admin/process` for what it runs on).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::chaos::{BUS, CACHE, Chaos, LinkStatus, ServiceState, Status};
use crate::service::admin::check_bearer;
use crate::service::{Part, Problem};

/// Where the gateway learns the graph from.
#[derive(Debug, Clone)]
pub enum Deployment {
    /// Every part in the gateway's process, driven by one [`Chaos`].
    Embedded(Chaos),
    /// One process per part at these base URLs (by part name), each with its own
    /// `/admin/chaos` and `/admin/process`.
    Distributed(BTreeMap<String, String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Embedded,
    Distributed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Service,
    Site,
    Bus,
    Cache,
    Database,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Running,
    Stopped,
    /// Its process did not answer the gateway.
    Unreachable,
}

/// One node of the graph.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Node {
    pub name: String,
    pub kind: NodeKind,
    /// Known for parts; `None` for what the shop only uses (bus, cache, databases).
    pub state: Option<NodeState>,
    /// What it is, e.g. `PostgreSQL`, `NATS JetStream`, `pid 4242`.
    pub detail: String,
    /// Whether the dashboard can stop and start it (only parts of the embedded shop).
    pub stoppable: bool,
}

/// A link with its faults and the chaos route (under the gateway) that changes them.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TopologyLink {
    #[serde(flatten)]
    pub status: LinkStatus,
    /// E.g. `/admin/chaos`, or `/api/order/admin/chaos` in the distributed mode.
    pub control: String,
}

/// A connection without a fault switch (a part and its own database).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Attachment {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Topology {
    pub mode: Mode,
    pub nodes: Vec<Node>,
    pub links: Vec<TopologyLink>,
    pub attachments: Vec<Attachment>,
}

/// What a served process runs on, by URL scheme only (no host, no credentials).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub part: String,
    pub pid: u32,
    /// `postgres` or `sqlite`.
    pub store: String,
    /// `nats` or `embedded`.
    pub bus: String,
    /// `redis` for a catalog with a Redis cache.
    pub cache: Option<String>,
}

impl ProcessInfo {
    pub fn new(part: Part, store_url: &str, bus_url: &str, cache_url: Option<&str>) -> Self {
        let scheme = |url: &str| url.split(':').next().unwrap_or_default().to_owned();
        Self {
            part: part.name(),
            pid: std::process::id(),
            store: scheme(store_url),
            bus: scheme(bus_url),
            cache: cache_url.map(scheme),
        }
    }
}

/// A served process's `/admin/process` route (admin token).
pub fn process_router(info: ProcessInfo, token: String) -> Router {
    let token = Arc::new(token);
    Router::new().route("/admin/process", get(move || async move { axum::Json(info) })).layer(
        middleware::from_fn(move |request: Request, next: Next| {
            let token = token.clone();
            async move {
                check_bearer(request.headers(), &token)?;
                Ok::<Response, Problem>(next.run(request).await)
            }
        }),
    )
}

/// The gateway's `/admin/topology` route (admin token).
pub fn router(deployment: Deployment, token: String) -> Router {
    let state = Arc::new((deployment, token, reqwest::Client::new()));
    Router::new().route("/admin/topology", get(topology)).with_state(state)
}

type Shared = Arc<(Deployment, String, reqwest::Client)>;

/// The gateway's document of `/admin/topology`, merged into its `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(
        paths(topology),
        components(schemas(Topology, Node, TopologyLink, Attachment, Mode, NodeKind, NodeState))
    )]
    struct Api;
    <Api as utoipa::OpenApi>::openapi()
}

/// The shop as a graph: every node and every link with its faults and the chaos route
/// that changes them (the dashboard draws this).
#[utoipa::path(get, path = "/admin/topology", tag = "admin",
    responses((status = 200, body = Topology),
              (status = 401, body = Problem, content_type = "application/problem+json", description = "no admin token"),
              (status = 403, body = Problem, content_type = "application/problem+json", description = "a wrong admin token")))]
async fn topology(State(state): State<Shared>, headers: HeaderMap) -> Result<axum::Json<Topology>, Problem> {
    let (deployment, token, client) = state.as_ref();
    check_bearer(&headers, token)?;
    Ok(axum::Json(match deployment {
        Deployment::Embedded(chaos) => embedded(chaos.status().await),
        Deployment::Distributed(parts) => distributed(parts, client, &headers).await,
    }))
}

fn embedded(status: Status) -> Topology {
    let mut nodes: Vec<Node> = status
        .services
        .iter()
        .map(|s| Node {
            name: s.name.clone(),
            kind: if s.name == s.service { NodeKind::Service } else { NodeKind::Site },
            state: Some(match s.state {
                ServiceState::Running => NodeState::Running,
                ServiceState::Stopped => NodeState::Stopped,
            }),
            detail: s.url.clone(),
            stoppable: true,
        })
        .collect();
    let links: Vec<TopologyLink> = status
        .links
        .into_iter()
        .map(|status| TopologyLink { status, control: "/admin/chaos".to_owned() })
        .collect();
    nodes.extend(shared_ends(&links, "embedded log (SQLite)", "in memory"));
    Topology { mode: Mode::Embedded, nodes, links, attachments: Vec::new() }
}

/// The bus and cache nodes, for those that some link ends at.
fn shared_ends(links: &[TopologyLink], bus: &str, cache: &str) -> Vec<Node> {
    [(BUS, NodeKind::Bus, bus), (CACHE, NodeKind::Cache, cache)]
        .into_iter()
        .filter(|(name, _, _)| links.iter().any(|l| l.status.to == *name))
        .map(|(name, kind, detail)| Node {
            name: name.to_owned(),
            kind,
            state: None,
            detail: detail.to_owned(),
            stoppable: false,
        })
        .collect()
}

async fn distributed(
    parts: &BTreeMap<String, String>,
    client: &reqwest::Client,
    headers: &HeaderMap,
) -> Topology {
    let authorization = headers.get(header::AUTHORIZATION).cloned();
    let (mut nodes, mut links, mut attachments) = (Vec::new(), Vec::new(), Vec::new());
    let (mut bus, mut cache) = ("bus".to_owned(), "cache".to_owned());
    for part in Part::all() {
        let name = part.name();
        let Some(base) = parts.get(&name) else { continue };
        let ask = |path: &str| {
            let mut request = client.get(format!("{base}{path}")).timeout(std::time::Duration::from_secs(2));
            if let Some(value) = &authorization {
                request = request.header(header::AUTHORIZATION, value.clone());
            }
            request.send()
        };
        let status: Option<Status> = fetch_json(ask("/admin/chaos")).await;
        let process: Option<ProcessInfo> = fetch_json(ask("/admin/process")).await;
        let kind = if matches!(part, Part::Site(_)) { NodeKind::Site } else { NodeKind::Service };
        let (state, detail) = match &process {
            Some(p) => (NodeState::Running, format!("pid {} at {base}", p.pid)),
            None => (NodeState::Unreachable, format!("no answer from {base}")),
        };
        nodes.push(Node { name: name.clone(), kind, state: Some(state), detail, stoppable: false });
        if let Some(p) = &process {
            let database = format!("db:{name}");
            nodes.push(Node {
                name: database.clone(),
                kind: NodeKind::Database,
                state: None,
                detail: store_name(&p.store).to_owned(),
                stoppable: false,
            });
            attachments.push(Attachment { from: name.clone(), to: database });
            bus = bus_name(&p.bus).to_owned();
            if let Some(c) = &p.cache {
                cache = if c == "redis" { "Redis".to_owned() } else { c.clone() };
            }
        }
        let control = format!("/api/{name}/admin/chaos");
        links.extend(
            status
                .into_iter()
                .flat_map(|s| s.links)
                .map(|status| TopologyLink { status, control: control.clone() }),
        );
    }
    nodes.extend(shared_ends(&links, &bus, &cache));
    Topology { mode: Mode::Distributed, nodes, links, attachments }
}

async fn fetch_json<T: serde::de::DeserializeOwned>(
    sent: impl std::future::Future<Output = reqwest::Result<reqwest::Response>>,
) -> Option<T> {
    let answer = sent.await.ok()?;
    if !answer.status().is_success() {
        return None;
    }
    answer.json().await.ok()
}

fn store_name(scheme: &str) -> &str {
    match scheme {
        "postgres" | "postgresql" => "PostgreSQL",
        "sqlite" => "SQLite",
        other => other,
    }
}

fn bus_name(scheme: &str) -> &str {
    match scheme {
        "nats" => "NATS JetStream",
        "embedded" => "embedded log (SQLite)",
        other => other,
    }
}
