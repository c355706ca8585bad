//! The gateway: one address for the whole shop. It serves the shop page (`/`) and the
//! dashboard (`/dashboard`), and routes `/api/<service>/<path>` to that
//! service's `/<path>` (and `/api/search?q=` to the search service's `/search`), passing
//! method, body, query and the headers that matter both ways. `/admin/chaos` holds the
//! fault controls of the whole shop ([`crate::chaos::http`]); `/admin/reconcile` gathers
//! every part's facts and checks them ([`crate::reconcile`]); `/admin/topology` is the graph
//! the dashboard draws ([`crate::topology`]); `/admin/backups` takes consistent backups
//! ([`crate::backup`]). A service with several instances is balanced over ([`upstreams`]).

mod upstreams;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get};

use crate::chaos::Chaos;
use crate::service::{Problem, idempotency, token};
use crate::topology::Deployment;

/// Request headers the gateway forwards to a service.
const FORWARDED: [HeaderName; 6] = [
    header::CONTENT_TYPE,
    header::AUTHORIZATION,
    header::ACCEPT,
    token::HEADER,
    idempotency::HEADER,
    FORWARDED_FOR,
];
const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// Answer headers the gateway passes back to the client.
const RETURNED: [HeaderName; 7] = [
    crate::service::page::NEXT_CURSOR,
    header::CONTENT_TYPE,
    token::HEADER,
    header::RETRY_AFTER,
    header::ALLOW,
    idempotency::REPLAYED,
    header::WWW_AUTHENTICATE,
];

/// Where each service listens, e.g. `http://127.0.0.1:41001`, by the name it has under
/// `/api`: a service (`inventory` is dc1), or a part of its own (`inventory-dc2`).
#[derive(Debug, Clone)]
pub struct Routes {
    /// Every instance of each (several when a service runs several processes); requests
    /// are balanced over them.
    pub instances: BTreeMap<String, Vec<String>>,
}

impl Routes {
    /// One instance per service.
    pub fn single(services: BTreeMap<String, String>) -> Self {
        Self { instances: services.into_iter().map(|(name, url)| (name, vec![url])).collect() }
    }
}

struct Gateway {
    upstreams: Arc<upstreams::Upstreams>,
    /// The parts in this process, read directly by `/admin/reconcile` (embedded shop).
    local: crate::facts::LocalParts,
    /// The embedded shop's databases, which `/admin/reconcile` reads at one cut.
    cut: Option<crate::backup::Source>,
    client: reqwest::Client,
    admin_token: String,
}

/// The gateway's routes; `/admin/chaos` drives `chaos` for callers with `admin_token`,
/// `/admin/topology` describes `deployment`, and `/admin/reconcile` reads the facts of the
/// `local` parts directly (the embedded shop) or, when there are none, asks every part
/// behind `routes`.
pub fn router(
    routes: Routes,
    local: crate::facts::LocalParts,
    chaos: Chaos,
    deployment: Deployment,
    backups: Option<crate::backup::Source>,
    admin_token: String,
) -> Router {
    let admin = admin_token.clone();
    let cut = backups.clone();
    let client = reqwest::Client::new();
    let upstreams = Arc::new(upstreams::Upstreams::new(&routes.instances));
    if routes.instances.values().any(|urls| urls.len() > 1) {
        upstreams::Upstreams::watch(Arc::downgrade(&upstreams), client.clone());
    }
    let gateway = Arc::new(Gateway { upstreams, local, cut, client, admin_token: admin });
    Router::new()
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({ "service": "gateway", "status": "ok" })) }),
        )
        .route("/", get(|| async { Html(include_str!("../assets/shop.html")) }))
        .route("/dashboard", get(|| async { Html(include_str!("../assets/dashboard.html")) }))
        .route("/openapi.json", get(|| async { axum::Json(openapi()) }))
        .route("/assets/{name}", get(asset))
        .route("/admin/reconcile", get(reconcile))
        .route("/api/{service}", any(forward_root))
        .route("/api/{service}/{*path}", any(forward))
        .fallback(|| async { Problem::not_found("no such route; the API is under /api/<service>/...") })
        .with_state(gateway)
        .merge(crate::topology::router(deployment, admin_token.clone()))
        .merge(crate::backup::http::router(backups, admin_token.clone()))
        .nest("/admin/chaos", crate::chaos::http::router(chaos, admin_token))
}

/// The gateway's document: the fault controls, the topology and the checker.
fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = crate::chaos::http::openapi();
    doc.merge(crate::topology::openapi());
    doc.merge(crate::backup::http::openapi());
    doc.merge(
        utoipa_axum::router::OpenApiRouter::<Arc<Gateway>>::new()
            .routes(utoipa_axum::routes!(reconcile))
            .into_openapi(),
    );
    doc
}

/// Gathers every part's facts — at one consistent cut of the embedded shop's databases, or
/// one read transaction each from every part's `/admin/facts` — and answers the checker's
/// report (admin token).
#[utoipa::path(get, path = "/admin/reconcile", operation_id = "reconcile", tag = "admin",
    responses((status = 200, body = crate::reconcile::Report, description = "every finding, classed in flight or defect"),
              (status = 401, body = Problem, content_type = "application/problem+json", description = "no admin token"),
              (status = 403, body = Problem, content_type = "application/problem+json", description = "a wrong admin token"),
              (status = 503, body = Problem, content_type = "application/problem+json", description = "a part's facts cannot be had")))]
async fn reconcile(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Err(problem) = crate::service::admin::check_bearer(&headers, &gateway.admin_token) {
        return problem.into_response();
    }
    let live = || async {
        let parts = gateway.upstreams.one_of_each();
        crate::facts::from_parts(&gateway.client, &parts, &gateway.admin_token)
            .await
            .map_err(|e| e.to_string())
    };
    let mut no_cut = None;
    let facts = match (&gateway.cut, gateway.local.is_empty()) {
        (Some(cut), distributed) => match cut.facts().await {
            // A cut needs every process's pause; one that cannot be held (a process down
            // or unreachable) leaves the part-by-part read, which classes what is under
            // way by its windows, and a note says why.
            Err(e) if distributed => {
                no_cut = Some(format!("no consistent cut ({e}): read live, part by part"));
                live().await
            }
            cut => cut.map_err(|e| e.to_string()),
        },
        (None, true) => live().await,
        (None, false) => crate::facts::from_local(&gateway.local).await.map_err(|e| e.to_string()),
    };
    match facts {
        Ok(facts) => {
            let mut report = crate::reconcile::check(&facts);
            report.notes.extend(no_cut);
            axum::Json(report).into_response()
        }
        Err(e) => Problem::unavailable(format!("cannot reconcile: {e}")).into_response(),
    }
}

/// The pages' scripts and style, compiled into the binary so `up` needs no files.
async fn asset(Path(name): Path<String>) -> Response {
    let (content_type, body) = match name.as_str() {
        "shop.js" => ("text/javascript", include_str!("../assets/shop.js")),
        "shop-api.js" => ("text/javascript", include_str!("../assets/shop-api.js")),
        "shop-words.js" => ("text/javascript", include_str!("../assets/shop-words.js")),
        "shop-orders.js" => ("text/javascript", include_str!("../assets/shop-orders.js")),
        "dashboard.js" => ("text/javascript", include_str!("../assets/dashboard.js")),
        "topology.js" => ("text/javascript", include_str!("../assets/topology.js")),
        "charts.js" => ("text/javascript", include_str!("../assets/charts.js")),
        "backups.js" => ("text/javascript", include_str!("../assets/backups.js")),
        "capshop.css" => ("text/css", include_str!("../assets/capshop.css")),
        _ => return Problem::not_found(format!("no asset {name}")).into_response(),
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Where a request came from, as `X-Forwarded-For` tells the service (the client's own
/// header is replaced: only the gateway's word counts, e.g. for sign-in limits per address).
type Peer = Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>;

fn forwarded_for(peer: Peer, mut headers: HeaderMap) -> HeaderMap {
    headers.remove(FORWARDED_FOR);
    if let Some(axum::Extension(axum::extract::ConnectInfo(addr))) = peer
        && let Ok(value) = addr.ip().to_string().parse()
    {
        headers.insert(FORWARDED_FOR, value);
    }
    headers
}

async fn forward_root(
    State(gateway): State<Arc<Gateway>>,
    Path(service): Path<String>,
    peer: Peer,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = service.clone();
    proxy(&gateway, &service, &path, method, query, forwarded_for(peer, headers), body).await
}

async fn forward(
    State(gateway): State<Arc<Gateway>>,
    Path((service, _)): Path<(String, String)>,
    uri: axum::http::Uri,
    peer: Peer,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // The path as the client encoded it: a decoded `%3F` or `%2F` would change the route.
    let raw = uri.path().strip_prefix("/api/").and_then(|rest| rest.split_once('/')).map_or("", |(_, p)| p);
    let query = uri.query().map(str::to_owned);
    proxy(&gateway, &service, raw, method, query, forwarded_for(peer, headers), body).await
}

async fn proxy(
    gateway: &Gateway,
    service: &str,
    path: &str,
    method: Method,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(instances) = gateway.upstreams.in_turn(service) else {
        let known = gateway.upstreams.names().cloned().collect::<Vec<_>>().join(", ");
        return Problem::not_found(format!("no service {service:?} behind /api: use one of {known}"))
            .into_response();
    };
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    // What failed before it reached an instance may go to the next one, whatever the
    // method; what may have reached it only when repeating it is harmless.
    let repeatable = method.is_idempotent() || headers.contains_key(idempotency::HEADER);
    let mut failure = None;
    for instance in instances {
        let url = format!("{}/{path}{query}", instance.url);
        if let Some(answer) = in_process(&instance, &method, &url, &headers, &body).await {
            return answered(service, answer.status, returned(&answer.headers), answer.body);
        }
        let mut request = gateway.client.request(method.clone(), url);
        for name in FORWARDED {
            if let Some(value) = headers.get(&name) {
                request = request.header(name, value);
            }
        }
        match request.body(body.clone()).send().await {
            Ok(answer) => {
                let (status, headers) = (answer.status(), returned(answer.headers()));
                let body = answer.bytes().await.map_err(|e| e.to_string());
                return answered(service, status, headers, body);
            }
            Err(e) => {
                let unreached = e.is_connect();
                if unreached {
                    instance.mark(true);
                }
                failure = Some(e);
                if !unreached && !repeatable {
                    break;
                }
            }
        }
    }
    let e = failure.map_or_else(|| "no instance".to_owned(), |e| e.to_string());
    Problem::new(StatusCode::BAD_GATEWAY, format!("{service} is unreachable: {e}")).into_response()
}

/// Sends the request to `instance`'s router directly when it serves in this process
/// (the embedded shop, [`crate::service::local`]); `None` sends it over HTTP.
async fn in_process(
    instance: &upstreams::Instance,
    method: &Method,
    url: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Option<crate::service::local::Answer> {
    let addr = instance.addr?;
    // The path and query as the HTTP client would send them (it normalizes the URL).
    let url = reqwest::Url::parse(url).ok()?;
    let target = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    let mut request = axum::http::Request::builder().method(method.clone()).uri(target);
    for name in FORWARDED {
        if let Some(value) = headers.get(&name) {
            request = request.header(name, value);
        }
    }
    let request = request.body(axum::body::Body::from(body.clone())).ok()?;
    crate::service::local::call(addr, request).await
}

/// The headers of an instance's answer that matter to the client.
fn returned(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in RETURNED {
        if let Some(value) = headers.get(&name) {
            out.insert(name, value.clone());
        }
    }
    out
}

/// An instance's answer, passed back with `out`, the headers that matter.
fn answered(service: &str, status: StatusCode, out: HeaderMap, body: Result<Bytes, String>) -> Response {
    match body {
        Ok(bytes) => (status, out, bytes).into_response(),
        Err(e) => Problem::new(StatusCode::BAD_GATEWAY, format!("{service} broke off its answer: {e}"))
            .into_response(),
    }
}
