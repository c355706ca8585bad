//! The inventory service's routes.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, put};
use serde::Deserialize;

use super::events::{self, StockLevel};
use super::model::{OnHand, OrderId, ProductId, ReservationLine, ReservationStatus, Stock};
use super::store;
use crate::service::admin::require_token;
use crate::service::{Body, Context, PathParams, Problem, QueryParams, token};

pub fn router(ctx: Arc<Context>) -> Router {
    let admin = middleware::from_fn_with_state(ctx.clone(), require_token);
    Router::new()
        .route("/stock", get(list))
        .route("/stock/{product_id}", get(show).merge(put(adjust).route_layer(admin)))
        .route("/reservations", get(reservations))
        .with_state(ctx)
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "capshop inventory",
        description = "Stock per product and the reservations of placed orders (the source of truth)."
    ),
    paths(list, show, adjust, reservations),
    components(schemas(Stock, ReservationLine, ReservationStatus, AdjustRequest, Problem))
)]
pub struct Api;

/// The new stock count of a product.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustRequest {
    /// Units on hand, 0 to 1,000,000; not below what is reserved.
    pub on_hand: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReservationsQuery {
    order_id: Option<String>,
}

/// Lists the stock of every product.
#[utoipa::path(get, path = "/stock", responses((status = 200, body = [Stock])))]
async fn list(State(ctx): State<Arc<Context>>) -> Result<axum::Json<Vec<Stock>>, Problem> {
    Ok(axum::Json(ctx.store.transact(store::list).await?))
}

/// Shows the stock of one product.
#[utoipa::path(get, path = "/stock/{product_id}",
    responses((status = 200, body = Stock), (status = 404, body = Problem)))]
async fn show(
    State(ctx): State<Arc<Context>>,
    PathParams(product_id): PathParams<String>,
) -> Result<axum::Json<Stock>, Problem> {
    let id = ProductId::parse(&product_id)
        .map_err(|_| Problem::not_found(format!("no stock of product {product_id}")))?;
    Ok(axum::Json(ctx.store.transact(move |tx| store::get(tx, &id)).await?))
}

/// Sets the units on hand of a product (admin: `Authorization: Bearer <token>`); adds the
/// product when it has no stock yet. Publishes StockAdjusted.
#[utoipa::path(put, path = "/stock/{product_id}", request_body = AdjustRequest,
    responses((status = 200, body = Stock, description = "set; with a Consistency-Token"),
              (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 409, body = Problem, description = "below what is reserved"),
              (status = 422, body = Problem)))]
async fn adjust(
    State(ctx): State<Arc<Context>>,
    PathParams(product_id): PathParams<String>,
    Body(request): Body<AdjustRequest>,
) -> Result<Response, Problem> {
    let id = ProductId::parse(&product_id)?;
    let on_hand = OnHand::new(request.on_hand)?;
    let outbox = ctx.outbox.clone();
    let stock = ctx.store.transact(move |tx| store::set_on_hand(tx, &outbox, &id, on_hand)).await?;
    let level = StockLevel {
        product_id: stock.product_id.clone(),
        on_hand: stock.on_hand,
        reserved: stock.reserved,
        version: stock.version,
    };
    Ok(token::written(StatusCode::OK, &stock, &events::token(&level)))
}

/// Lists the reservation lines of an order (none while inventory has not reserved for it).
#[utoipa::path(get, path = "/reservations",
    params(("order_id" = String, Query, description = "the order, e.g. o-0193…")),
    responses((status = 200, body = [ReservationLine]), (status = 400, body = Problem),
              (status = 422, body = Problem)))]
async fn reservations(
    State(ctx): State<Arc<Context>>,
    QueryParams(query): QueryParams<ReservationsQuery>,
) -> Result<axum::Json<Vec<ReservationLine>>, Problem> {
    let order_id = query.order_id.ok_or_else(|| Problem::bad_request("name the order: ?order_id=o-…"))?;
    let order_id = OrderId::parse(&order_id)?;
    Ok(axum::Json(ctx.store.transact(move |tx| store::reservations(tx, &order_id)).await?))
}
