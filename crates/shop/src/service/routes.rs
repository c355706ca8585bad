//! The routes every service serves besides its own: health, metrics, OpenAPI, admin.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Context, Problem, admin, facts};

/// Requests larger than this are refused with 413 before a handler sees them.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The service's `own` routes with the common ones, and the document of all of them at
/// `/openapi.json`.
pub(super) fn common(
    ctx: Arc<Context>,
    own: OpenApiRouter<Arc<Context>>,
    facts: facts::FactsReader,
) -> Router {
    let (routes, openapi) = own
        .routes(routes!(health))
        .routes(routes!(metrics))
        .nest("/admin", admin::routes(ctx.clone(), facts))
        .split_for_parts();
    let openapi = Arc::new(with_security_schemes(openapi));
    let methods = Arc::new(Methods::of(&openapi));
    let process = ctx.process_routes.get().cloned().unwrap_or_default();
    routes
        .route("/openapi.json", get(move || async move { axum::Json(openapi.as_ref().clone()) }))
        .with_state(ctx)
        .merge(process)
        .fallback(|| async { Problem::not_found("no such route") })
        .layer(axum::middleware::from_fn(move |request, next| {
            let methods = methods.clone();
            async move { methods.refuse_undeclared(request, next).await }
        }))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

/// Says which service (and which instance of it) answers and that it is up.
#[utoipa::path(get, path = "/health", tag = "common",
    responses((status = 200, description = "`{\"service\": <name>, \"status\": \"ok\"}`, and `\"instance\": <id>` in a served process")))]
async fn health(State(ctx): State<Arc<Context>>) -> axum::Json<serde_json::Value> {
    match ctx.instance_id.get() {
        Some(instance) => axum::Json(json!({ "service": ctx.name, "status": "ok", "instance": instance })),
        None => axum::Json(json!({ "service": ctx.name, "status": "ok" })),
    }
}

/// The service's metrics in the Prometheus/OpenMetrics text format: outbox, relay,
/// consumers and their lag, breakers.
#[utoipa::path(get, path = "/metrics", tag = "common",
    responses((status = 200, content_type = "application/openmetrics-text", body = String)))]
async fn metrics(State(ctx): State<Arc<Context>>) -> Result<impl IntoResponse, Problem> {
    if let Err(e) = ctx.metrics.refresh(ctx.bus.as_ref()).await {
        // Counters and breaker states are still worth serving when the bus is cut.
        tracing::debug!(error = %e, "metrics refresh incomplete");
    }
    let mut text = String::new();
    let registry = ctx.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .map_err(|e| Problem::internal(e.to_string()))?;
    Ok(([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text))
}

/// The two bearer schemes routes name in `security(...)`: a shopper's session token and
/// the operator's admin token.
fn with_security_schemes(mut openapi: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
    let components = openapi.components.get_or_insert_with(Default::default);
    let session = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .bearer_format("PASETO v4.public")
        .description(Some("a session token from POST /api/customer/sessions"))
        .build();
    components.add_security_scheme("session", SecurityScheme::Http(session));
    let admin = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .description(Some("the admin token `capshop up` prints"))
        .build();
    components.add_security_scheme("admin", SecurityScheme::Http(admin));
    openapi
}

/// The methods each documented path answers, so that any other method on it is a 405
/// problem with `Allow` before any route's own checks (an admin token, a session) run.
struct Methods(Vec<(Vec<String>, Vec<String>)>);

impl Methods {
    fn of(openapi: &utoipa::openapi::OpenApi) -> Self {
        let mut paths = Vec::new();
        for (path, item) in &openapi.paths.paths {
            let item = serde_json::to_value(item).unwrap_or_default();
            let mut methods: Vec<String> = item
                .as_object()
                .map(|ops| {
                    let verbs = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];
                    ops.keys().filter(|k| verbs.contains(&k.as_str())).map(|k| k.to_uppercase()).collect()
                })
                .unwrap_or_default();
            if methods.iter().any(|m| m == "GET") && !methods.iter().any(|m| m == "HEAD") {
                methods.push("HEAD".into());
            }
            paths.push((path.split('/').map(str::to_owned).collect(), methods));
        }
        Self(paths)
    }

    /// The methods of the documented path `path` matches, if it matches one.
    fn allowed(&self, path: &str) -> Option<&[String]> {
        let parts: Vec<&str> = path.split('/').collect();
        self.0.iter().find_map(|(template, methods)| {
            let matches = template.len() == parts.len()
                && template.iter().zip(&parts).all(|(t, p)| t == p || (t.starts_with('{') && !p.is_empty()));
            matches.then_some(methods.as_slice())
        })
    }

    async fn refuse_undeclared(
        &self,
        request: axum::extract::Request,
        next: axum::middleware::Next,
    ) -> axum::response::Response {
        if let Some(allowed) = self.allowed(request.uri().path())
            && !allowed.iter().any(|m| m == request.method().as_str())
        {
            let allow = allowed.join(", ");
            let detail = format!("{} is not answered here; use {allow}", request.method());
            let mut response =
                Problem::new(axum::http::StatusCode::METHOD_NOT_ALLOWED, detail).into_response();
            if let Ok(value) = allow.parse() {
                response.headers_mut().insert(axum::http::header::ALLOW, value);
            }
            return response;
        }
        next.run(request).await
    }
}
