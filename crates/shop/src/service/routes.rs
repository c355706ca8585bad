//! The routes every service serves besides its own: health, metrics, OpenAPI, admin.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use super::{Context, Problem, admin};

/// Requests larger than this are refused with 413 before a handler sees them.
pub const BODY_LIMIT: usize = 64 * 1024;

pub(super) fn common(ctx: Arc<Context>, own: Router, openapi: utoipa::openapi::OpenApi) -> Router {
    let openapi = Arc::new(openapi);
    let process = ctx.process_routes.get().cloned().unwrap_or_default();
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(move || async move { axum::Json(openapi.as_ref().clone()) }))
        .nest("/admin", admin::router(ctx.clone()))
        .with_state(ctx.clone())
        .merge(own)
        .merge(process)
        .fallback(|| async { Problem::not_found("no such route") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

async fn health(State(ctx): State<Arc<Context>>) -> axum::Json<serde_json::Value> {
    axum::Json(json!({ "service": ctx.name, "status": "ok" }))
}

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
