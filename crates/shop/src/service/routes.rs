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
    let openapi = Arc::new(openapi);
    let process = ctx.process_routes.get().cloned().unwrap_or_default();
    routes
        .route("/openapi.json", get(move || async move { axum::Json(openapi.as_ref().clone()) }))
        .with_state(ctx)
        .merge(process)
        .fallback(|| async { Problem::not_found("no such route") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

/// Says which service answers and that it is up.
#[utoipa::path(get, path = "/health", tag = "common",
    responses((status = 200, description = "`{\"service\": <name>, \"status\": \"ok\"}`")))]
async fn health(State(ctx): State<Arc<Context>>) -> axum::Json<serde_json::Value> {
    axum::Json(json!({ "service": ctx.name, "status": "ok" }))
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
