//! The shipping service's routes: shipments by order, and the held ones with their reasons.

use std::sync::Arc;

use axum::extract::State;
use serde::Deserialize;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::events::ShipmentStatus;
use super::model::{HeldShipment, OrderId, Shipment};
use super::store;
use crate::contracts::customer::Address;
use crate::service::page::Page;
use crate::service::session::SignInNeeded;
use crate::service::{Context, PathParams, Problem, QueryParams, SignedIn, StoreBusy, admin};

/// The shipping service's routes, with their document.
pub fn routes() -> OpenApiRouter<Arc<Context>> {
    OpenApiRouter::with_openapi(Api::openapi())
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(held))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "capshop shipping",
        description = "Shipments. An order ships only when it is confirmed, paid, and its address agrees with the customer's current one (or the customer confirmed it); otherwise its shipment is held with the reason until the replicas agree."
    ),
    components(schemas(
        Shipment,
        ShipmentStatus,
        HeldShipment,
        Address,
        Problem,
        crate::service::page::Cursor,
        crate::contracts::ids::OrderId
    ))
)]
struct Api;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShipmentsQuery {
    order_id: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Lists the signed-in customer's shipments: the one of `order_id` (none while the order
/// has not reached shipping, or is not theirs), or all of theirs.
#[utoipa::path(get, path = "/shipments", security(("session" = [])),
    params(("order_id" = Option<crate::contracts::ids::OrderId>, Query, description = "only the shipment of this order"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "at most this many (1 to 100; 100 when absent)"),
        ("cursor" = Option<crate::service::page::Cursor>, Query, description = "the Next-Cursor of the page before")),
    responses(StoreBusy, SignInNeeded, (status = 200, body = [Shipment], description = "a page of shipments; Next-Cursor names the next page when there is one", headers(("Next-Cursor" = String, description = "send as cursor for the next page"))),
              (status = 400, body = Problem, content_type = "application/problem+json", description = "a bad query"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "a bad order id")))]
async fn list(
    State(ctx): State<Arc<Context>>,
    signed_in: SignedIn,
    QueryParams(q): QueryParams<ShipmentsQuery>,
) -> Result<axum::response::Response, Problem> {
    let order = q.order_id.as_deref().map(OrderId::parse).transpose()?;
    let page = Page::parse(q.limit, q.cursor.as_deref())?;
    let (customer, after, fetch) = (signed_in.customer_id().to_owned(), page.after.clone(), page.fetch());
    let shipments = ctx
        .store
        .transact(move |tx| {
            store::shipments(tx, &customer, order.as_ref().map(OrderId::as_str), after.as_deref(), fetch)
        })
        .await?;
    Ok(page.answer(shipments, |s| &s.order_id))
}

/// Shows the shipment of an order of the signed-in customer.
#[utoipa::path(get, path = "/shipments/{order_id}", security(("session" = [])),
    params(("order_id" = String, Path, description = "the order, e.g. `o-0193…`")),
    responses(StoreBusy, SignInNeeded, (status = 200, body = Shipment), (status = 404, body = Problem, content_type = "application/problem+json", description = "no shipment for that order (or not the signed-in customer's)")))]
async fn show(
    State(ctx): State<Arc<Context>>,
    signed_in: SignedIn,
    PathParams(order): PathParams<String>,
) -> Result<axum::Json<Shipment>, Problem> {
    let missing = || format!("no shipment for order {order}");
    let id = OrderId::parse(&order).map_err(|_| Problem::not_found(missing()))?;
    let shipment = ctx.store.transact(move |tx| store::shipment(tx, id.as_str())).await?;
    signed_in.owns(&shipment.customer_id, missing)?;
    Ok(axum::Json(shipment))
}

/// Lists the held shipments that still wait for something, longest held first, each with
/// the reason: the operator's view (admin token), as it spans every customer. Shipments of
/// rejected or cancelled orders are not listed: they never ship.
#[utoipa::path(get, path = "/held", security(("admin" = [])),
    responses(StoreBusy, (status = 200, body = [HeldShipment]),
              (status = 401, body = Problem, content_type = "application/problem+json", description = "no admin token"),
              (status = 403, body = Problem, content_type = "application/problem+json", description = "not the admin token")))]
async fn held(
    State(ctx): State<Arc<Context>>,
    headers: axum::http::HeaderMap,
) -> Result<axum::Json<Vec<HeldShipment>>, Problem> {
    admin::check_bearer(&headers, &ctx.admin_token)?;
    Ok(axum::Json(ctx.store.transact(store::held).await?))
}
