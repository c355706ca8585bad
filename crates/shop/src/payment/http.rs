//! The payment service's routes: authorize a payment (once per order), void the placement
//! of an order the order service abandoned, and look them up.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::events::{Authorization, AuthorizationRequest, AuthorizationStatus, VoidRequest};
use super::model::{self, Charge};
use super::store;
use crate::contracts::customer::PaymentMethod;
use crate::service::{Body, BodyRefused, Context, PathParams, Problem, QueryParams, StoreBusy};

/// The payment service's routes, with their document.
pub fn routes() -> OpenApiRouter<Arc<Context>> {
    OpenApiRouter::with_openapi(Api::openapi())
        .routes(routes!(list, authorize))
        .routes(routes!(show))
        .routes(routes!(void))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "capshop payment",
        description = "Payment authorizations, decided synchronously (consistent) and once per order: asking again for the same order answers the first decision. An order whose placement was abandoned is voided: its authorization is void and none is made after."
    ),
    components(schemas(
        AuthorizationRequest,
        Authorization,
        AuthorizationStatus,
        VoidRequest,
        PaymentMethod,
        Problem
    ))
)]
struct Api;

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
    responses(StoreBusy, BodyRefused, (status = 201, body = Authorization, description = "decided now"),
              (status = 200, body = Authorization, description = "decided before, for the same order"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "the body does not fit, or a bad order id, amount or payment method")))]
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

/// Voids the placement of an order the order service abandoned (it will never commit the
/// order): its authorization, if payment made one, becomes voided (PaymentVoided is
/// published), and an authorization asked for after is answered voided. Idempotent.
#[utoipa::path(post, path = "/voids", request_body = VoidRequest,
    responses(StoreBusy, BodyRefused, (status = 200, body = Option<Authorization>, description = "voided: the order's authorization as it stands now, or null when payment made none"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "the body does not fit, or a bad order id")))]
async fn void(
    State(ctx): State<Arc<Context>>,
    Body(request): Body<VoidRequest>,
) -> Result<axum::Json<Option<Authorization>>, Problem> {
    let order_id = model::void_order_id(&request)?;
    let outbox = ctx.outbox.clone();
    let now = kit::clock::now_ms();
    Ok(axum::Json(ctx.store.transact(move |tx| store::void(tx, &outbox, &order_id, now)).await?))
}

/// Lists authorizations, newest first: the one of `order_id` (none if it was never
/// asked for), or the latest `limit` (default 100, at most 1000).
#[utoipa::path(get, path = "/authorizations",
    params(("order_id" = Option<String>, Query, description = "only the authorization of this order"),
           ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "how many, 1 to 1000; 100 when absent")),
    responses(StoreBusy, (status = 200, body = [Authorization]),
              (status = 400, body = Problem, content_type = "application/problem+json", description = "a bad query"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "a limit out of range")))]
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
    params(("id" = String, Path, description = "the authorization, e.g. `a-0193…`")),
    responses(StoreBusy, (status = 200, body = Authorization), (status = 404, body = Problem, content_type = "application/problem+json", description = "no such authorization")))]
async fn show(
    State(ctx): State<Arc<Context>>,
    PathParams(id): PathParams<String>,
) -> Result<axum::Json<Authorization>, Problem> {
    Ok(axum::Json(ctx.store.transact(move |tx| store::get(tx, &id)).await?))
}
