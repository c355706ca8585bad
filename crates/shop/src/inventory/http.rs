//! The routes of one inventory site: the stock and reservations in its view, and the
//! `/sites/...` calls the other site makes (acknowledge, arbitrate, show a ledger).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use super::agreement::{self, Ledger, Verdict};
use super::events;
use super::merge::SiteStock;
use super::model::{OnHand, OrderId, ProductId, ReservationLine, ReservationStatus, Stock};
use super::sites::{Mode, Site};
use super::{stock_writer, store};
use crate::service::admin::require_token;
use crate::service::{
    Body, BodyRefused, Context, PathParams, Problem, QueryParams, ServiceName, StoreBusy, token,
};

/// The routes of one site, with their document.
pub fn routes(ctx: &Arc<Context>) -> OpenApiRouter<Arc<Context>> {
    let admin = middleware::from_fn_with_state(ctx.clone(), require_token);
    OpenApiRouter::with_openapi(Api::openapi())
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(adjust).map(|put| put.route_layer(admin)))
        .routes(routes!(reservations))
        .routes(routes!(status))
        .routes(routes!(local_reservations))
        .routes(routes!(show_ledger))
        .routes(routes!(acknowledge))
        .routes(routes!(arbitrate))
}

fn here(ctx: &Context) -> Site {
    ctx.site.expect("an inventory instance is a site")
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "capshop inventory",
        description = "Stock per product and the reservations of placed orders (the source of truth)."
    ),
    components(schemas(
        Stock,
        ReservationLine,
        ReservationStatus,
        AdjustRequest,
        SiteStatus,
        Ledger,
        Verdict,
        SiteStock,
        Site,
        Mode,
        Problem
    ))
)]
struct Api;

/// The new stock count of a product.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
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
#[utoipa::path(get, path = "/stock", responses(StoreBusy, (status = 200, body = [Stock])))]
async fn list(State(ctx): State<Arc<Context>>) -> Result<axum::Json<Vec<Stock>>, Problem> {
    Ok(axum::Json(ctx.store.transact(store::list).await?))
}

/// Shows the stock of one product.
#[utoipa::path(get, path = "/stock/{product_id}", params(("product_id" = String, Path, description = "the product, e.g. `p-001`")),
    responses(StoreBusy, (status = 200, body = Stock), (status = 404, body = Problem, content_type = "application/problem+json", description = "no stock of that product")))]
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
#[utoipa::path(put, path = "/stock/{product_id}", params(("product_id" = String, Path, description = "the product, e.g. `p-001`")), request_body = AdjustRequest,
    responses(StoreBusy, BodyRefused, (status = 200, body = Stock, description = "set; with a Consistency-Token"),
              (status = 401, body = Problem, content_type = "application/problem+json", description = "no admin token"),
              (status = 403, body = Problem, content_type = "application/problem+json", description = "a wrong admin token"),
              (status = 409, body = Problem, content_type = "application/problem+json", description = "below what is reserved"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "the body does not fit, or a bad product id or count"),
              (status = 503, body = Problem, content_type = "application/problem+json", description = "cp: this site cannot reach the other, so it refuses writes; or the database is busy")))]
async fn adjust(
    State(ctx): State<Arc<Context>>,
    PathParams(product_id): PathParams<String>,
    Body(request): Body<AdjustRequest>,
) -> Result<Response, Problem> {
    let id = ProductId::parse(&product_id)?;
    let on_hand = OnHand::new(request.on_hand)?;
    let site = here(&ctx);
    if ctx.choices.inventory == Mode::Cp {
        if site != Site::arbiter() {
            let stock = stock_writer::hand_on(&ctx, site, &id, &request).await?;
            return Ok(token::written(StatusCode::OK, &stock, &events::token(&stock)));
        }
        // cp writes only while the sites see each other.
        let peer = ctx.peer(ServiceName::Inventory);
        if let Err(e) = peer.get::<SiteStatus>("/sites").await {
            return Err(Problem::unavailable(agreement::unreachable(site, &e)));
        }
    }
    let outbox = ctx.outbox.clone();
    let stock = ctx.store.transact(move |tx| store::set_on_hand(tx, &outbox, site, &id, on_hand)).await?;
    Ok(token::written(StatusCode::OK, &stock, &events::token(&stock)))
}

/// Lists the reservation lines of an order (none while inventory has not reserved for it),
/// asking the other site when this one has no copy yet.
#[utoipa::path(get, path = "/reservations",
    params(("order_id" = crate::contracts::ids::OrderId, Query, description = "the order, e.g. `o-0193…`")),
    responses(StoreBusy, (status = 200, body = [ReservationLine]),
              (status = 400, body = Problem, content_type = "application/problem+json", description = "no order_id, or a bad query"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "a bad order id")))]
async fn reservations(
    State(ctx): State<Arc<Context>>,
    QueryParams(query): QueryParams<ReservationsQuery>,
) -> Result<axum::Json<Vec<ReservationLine>>, Problem> {
    let order_id = query.order_id.ok_or_else(|| Problem::bad_request("name the order: ?order_id=o-…"))?;
    let order_id = OrderId::parse(&order_id)?;
    let path = format!("/sites/reservations?order_id={}", order_id.as_str());
    let here = ctx.store.transact(move |tx| store::reservations(tx, &order_id)).await?;
    if !here.is_empty() {
        return Ok(axum::Json(here));
    }
    let there = ctx.peer(ServiceName::Inventory).get::<Vec<ReservationLine>>(&path).await;
    Ok(axum::Json(there.unwrap_or(here)))
}

/// Lists the reservation lines of an order as this site alone knows them.
#[utoipa::path(get, path = "/sites/reservations",
    params(("order_id" = crate::contracts::ids::OrderId, Query, description = "the order, e.g. `o-0193…`")),
    responses(StoreBusy, (status = 200, body = [ReservationLine]),
              (status = 400, body = Problem, content_type = "application/problem+json", description = "no order_id, or a bad query"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "a bad order id")))]
async fn local_reservations(
    State(ctx): State<Arc<Context>>,
    QueryParams(query): QueryParams<ReservationsQuery>,
) -> Result<axum::Json<Vec<ReservationLine>>, Problem> {
    let order_id = query.order_id.ok_or_else(|| Problem::bad_request("name the order: ?order_id=o-…"))?;
    let order_id = OrderId::parse(&order_id)?;
    Ok(axum::Json(ctx.store.transact(move |tx| store::reservations(tx, &order_id)).await?))
}

/// Which site this is, its mode, and how many of its orders wait for the other site.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SiteStatus {
    pub site: Site,
    pub mode: Mode,
    /// Order lines reserved here that wait to be acknowledged (cp) or arbitrated (ap).
    pub waiting: u64,
}

/// Shows which site answers and what waits for the other site.
#[utoipa::path(get, path = "/sites", responses(StoreBusy, (status = 200, body = SiteStatus)))]
async fn status(State(ctx): State<Arc<Context>>) -> Result<axum::Json<SiteStatus>, Problem> {
    let (site, mode) = (here(&ctx), ctx.choices.inventory);
    let waiting = ctx
        .store
        .transact(move |tx| {
            let pending = store::lines_in(tx, site, ReservationStatus::Pending)?.len();
            let provisional = store::lines_in(tx, site, ReservationStatus::Provisional)?.len();
            Ok::<_, kit::store::StoreError>((pending + provisional) as u64)
        })
        .await?;
    Ok(axum::Json(SiteStatus { site, mode, waiting }))
}

/// Shows this site's own counters and reservation lines of the listed products (called
/// by the arbiter before it decides its own orders).
#[utoipa::path(post, path = "/sites/ledger", request_body = [crate::contracts::ids::ProductId],
    responses(StoreBusy, BodyRefused, (status = 200, body = Ledger),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "the body does not fit, or a bad product id")))]
async fn show_ledger(
    State(ctx): State<Arc<Context>>,
    Body(products): Body<Vec<String>>,
) -> Result<axum::Json<Ledger>, Problem> {
    let products = products
        .iter()
        .map(|p| ProductId::parse(p).map(|id| id.as_str().to_owned()))
        .collect::<Result<_, _>>()?;
    let site = here(&ctx);
    Ok(axum::Json(ctx.store.transact(move |tx| agreement::ledger(tx, site, &products)).await?))
}

/// Checks a ledger the other site sent: only its own rows, about valid ids. A ledger of
/// this site's own rows is well formed but sent to the wrong site: 409, like a settle sent
/// to the site that is not the arbiter.
fn from_the_other_site(ctx: &Context, ledger: &Ledger) -> Result<(), Problem> {
    let other = here(ctx).peer();
    let foreign = ledger.counters.iter().map(|c| c.site).chain(ledger.lines.iter().map(|l| l.site));
    if let Some(site) = foreign.into_iter().find(|s| *s != other) {
        return Err(Problem::conflict(format!(
            "a ledger shown to {} must come from {other}, not {site}",
            here(ctx)
        )));
    }
    for id in ledger.counters.iter().map(|c| &c.product_id).chain(ledger.lines.iter().map(|l| &l.product_id))
    {
        ProductId::parse(id)?;
    }
    for line in &ledger.lines {
        OrderId::parse(&line.order_id)?;
        if line.quantity == 0 {
            return Err(Problem::unprocessable(format!("the line of {} has quantity 0", line.order_id)));
        }
    }
    Ok(())
}

/// cp: acknowledges the other site's pending reservations its own view can still cover.
#[utoipa::path(post, path = "/sites/acks", request_body = Ledger,
    responses(StoreBusy, BodyRefused, (status = 200, body = [Verdict]),
              (status = 409, body = Problem, content_type = "application/problem+json", description = "this site runs in ap mode, or the ledger is not of the other site"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "the body does not fit, or a bad id")))]
async fn acknowledge(
    State(ctx): State<Arc<Context>>,
    Body(ledger): Body<Ledger>,
) -> Result<axum::Json<Vec<Verdict>>, Problem> {
    if ctx.choices.inventory != Mode::Cp {
        return Err(Problem::conflict(
            "this site runs in ap mode, where the arbiter decides and nothing is acknowledged: run both \
             sites with the same --inventory-mode",
        ));
    }
    from_the_other_site(&ctx, &ledger)?;
    let site = here(&ctx);
    Ok(axum::Json(ctx.store.transact(move |tx| agreement::acknowledge(tx, site, &ledger)).await?))
}

/// ap, at the arbiter: arbitrates the other site's provisional reservations by the rule
/// (the path keeps its published name, `settle`).
#[utoipa::path(post, path = "/sites/settle", request_body = Ledger,
    responses(StoreBusy, BodyRefused, (status = 200, body = [Verdict]),
              (status = 409, body = Problem, content_type = "application/problem+json", description = "this site is not the arbiter, or runs in cp mode, or the ledger is not of the other site"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "the body does not fit, or a bad id")))]
async fn arbitrate(
    State(ctx): State<Arc<Context>>,
    Body(ledger): Body<Ledger>,
) -> Result<axum::Json<Vec<Verdict>>, Problem> {
    if ctx.choices.inventory != Mode::Ap || here(&ctx) != Site::arbiter() {
        let arbiter = Site::arbiter();
        return Err(Problem::conflict(format!(
            "only {arbiter} arbitrates, in ap mode: send this call to {arbiter}"
        )));
    }
    from_the_other_site(&ctx, &ledger)?;
    Ok(axum::Json(ctx.store.transact(move |tx| agreement::arbitrate(tx, &ledger)).await?))
}
