//! The payment service's routes: authorize a payment (once per order), and look them up.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::events::{Authorization, AuthorizationRequest, AuthorizationStatus};
use super::model::Charge;
use super::store;
use crate::contracts::customer::PaymentMethod;
use crate::service::{Body, Context, PathParams, Problem, QueryParams};

pub fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/authorizations", get(list).post(authorize))
        .route("/authorizations/{id}", get(show))
        .with_state(ctx)
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "capshop payment",
        description = "Payment authorizations, decided synchronously (consistent) and once per order: asking again for the same order answers the first decision."
    ),
    paths(authorize, list, show),
    components(schemas(AuthorizationRequest, Authorization, AuthorizationStatus, PaymentMethod, Problem))
)]
pub struct Api;

/// How many authorizations `GET /authorizations` lists when not told.
const DEFAULT_LIMIT: u64 = 100;
const MAX_LIMIT: u64 = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizationsQuery {
    order_id: Option<String>,
    limit: Option<u64>,
}

/// Authorizes a payment for an order about to be placed: 201 with a new decision
/// (PaymentAuthorized or PaymentDeclined is published with it), 200 with the first
/// decision when the order was already decided.
#[utoipa::path(post, path = "/authorizations", request_body = AuthorizationRequest,
    responses((status = 201, body = Authorization, description = "decided now"),
              (status = 200, body = Authorization, description = "decided before, for the same order"),
              (status = 400, body = Problem), (status = 422, body = Problem)))]
async fn authorize(
    State(ctx): State<Arc<Context>>,
    Body(request): Body<AuthorizationRequest>,
) -> Result<Response, Problem> {
    let charge = Charge::try_from(request)?;
    let outbox = ctx.outbox.clone();
    let now = kit::clock::now_ms();
    let (authorization, new) =
        ctx.store.transact(move |tx| store::authorize(tx, &outbox, charge, now)).await?;
    let status = if new { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(authorization)).into_response())
}

/// Lists authorizations, newest first: the one of `order_id` (none if it was never
/// asked for), or the latest `limit` (default 100, at most 1000).
#[utoipa::path(get, path = "/authorizations",
    params(("order_id" = Option<String>, Query), ("limit" = Option<u64>, Query)),
    responses((status = 200, body = [Authorization]), (status = 400, body = Problem), (status = 422, body = Problem)))]
async fn list(
    State(ctx): State<Arc<Context>>,
    QueryParams(q): QueryParams<AuthorizationsQuery>,
) -> Result<axum::Json<Vec<Authorization>>, Problem> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Problem::unprocessable(format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    let found = ctx.store.transact(move |tx| store::list(tx, q.order_id.as_deref(), limit)).await?;
    Ok(axum::Json(found))
}

/// Shows one authorization by its id (`a-…`).
#[utoipa::path(get, path = "/authorizations/{id}",
    responses((status = 200, body = Authorization), (status = 404, body = Problem)))]
async fn show(
    State(ctx): State<Arc<Context>>,
    PathParams(id): PathParams<String>,
) -> Result<axum::Json<Authorization>, Problem> {
    Ok(axum::Json(ctx.store.transact(move |tx| store::get(tx, &id)).await?))
}
