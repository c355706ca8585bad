//! The order service's routes: carts, the checkout, orders.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::checkout::{self, Checkout};
use super::events::{self, ORDER_ADDRESS_CONFIRMED, ORDER_CANCELLED, OrderStatus};
use super::model::{Order, OrderError, Quantity, id};
use super::place;
use super::store::{self, CartLine};
use crate::contracts::customer::Address;
use crate::contracts::order::CANCELLED_BY_THE_CUSTOMER;
use crate::service::idempotency::{self, Begun};
use crate::service::limits::Limited;
use crate::service::page::Page;
use crate::service::session::SignInNeeded;
use crate::service::{
    Body, BodyRefused, Context, PathParams, Problem, QueryParams, SignedIn, StoreBusy, token,
};

/// The order service's routes, with their document.
pub fn routes() -> OpenApiRouter<Arc<Context>> {
    OpenApiRouter::with_openapi(Api::openapi())
        .routes(routes!(cart))
        .routes(routes!(add_item))
        .routes(routes!(remove_item))
        .routes(routes!(show_checkout))
        .routes(routes!(list_orders, place_order))
        .routes(routes!(show_order))
        .routes(routes!(confirm_address))
        .routes(routes!(cancel))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "capshop order",
        description = "Carts, the checkout and orders. The address comes from a replica of the customer (available); the total and the payment are synchronous (consistent)."
    ),
    components(schemas(
        CartLine,
        AddItem,
        PlaceOrder,
        Order,
        Checkout,
        Address,
        Problem,
        crate::service::page::Cursor,
        idempotency::IdempotencyKey
    ))
)]
struct Api;

fn customer_id(value: &str) -> Result<String, OrderError> {
    id("customer_id", "c", value)
}

/// The customer a path or body names, if it is the signed-in one; any other is "no
/// customer" (404), so whose ids exist is not revealed.
fn own_customer(signed_in: &SignedIn, value: &str) -> Result<String, Problem> {
    signed_in.owns(value, || format!("no customer {value}"))?;
    Ok(customer_id(value)?)
}

/// An order of the signed-in customer; another's is "no order" (404).
fn owned(signed_in: &SignedIn, order: Order) -> Result<Order, Problem> {
    signed_in.owns(&order.customer_id, || format!("no order {}", order.id))?;
    Ok(order)
}

/// Shows a customer's cart with list prices from the replica.
#[utoipa::path(get, path = "/carts/{customer_id}", security(("session" = [])), params(("customer_id" = String, Path, description = "the customer, e.g. `c-ada`")),
    responses(StoreBusy, SignInNeeded, (status = 200, body = [CartLine]), (status = 404, body = Problem, content_type = "application/problem+json", description = "not the signed-in customer"), (status = 422, body = Problem, content_type = "application/problem+json", description = "a bad customer id")))]
async fn cart(
    State(ctx): State<Arc<Context>>,
    signed_in: SignedIn,
    PathParams(customer): PathParams<String>,
) -> Result<axum::Json<Vec<CartLine>>, Problem> {
    let customer = own_customer(&signed_in, &customer)?;
    Ok(axum::Json(ctx.store.transact(move |tx| store::cart(tx, &customer)).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddItem {
    pub product_id: String,
    /// 1 to 100.
    #[schema(minimum = 1, maximum = 100)]
    pub quantity: i64,
}

/// Adds a product to a customer's cart.
#[utoipa::path(post, path = "/carts/{customer_id}/items", security(("session" = [])), params(("customer_id" = String, Path, description = "the customer, e.g. `c-ada`")), request_body = AddItem,
    responses(StoreBusy, SignInNeeded, Limited, BodyRefused, (status = 200, body = [CartLine]),
              (status = 404, body = Problem, content_type = "application/problem+json", description = "no such customer"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "the body does not fit, a bad id or quantity, or an unknown product")))]
async fn add_item(
    State(ctx): State<Arc<Context>>,
    signed_in: SignedIn,
    PathParams(customer): PathParams<String>,
    Body(item): Body<AddItem>,
) -> Result<axum::Json<Vec<CartLine>>, Problem> {
    let customer = own_customer(&signed_in, &customer)?;
    let quantity = Quantity::new(item.quantity)?;
    let product = id("product_id", "p", &item.product_id)?;
    let cart = ctx
        .store
        .transact(move |tx| store::add_to_cart(tx, &customer, &product, quantity.get(), Quantity::MAX))
        .await?;
    Ok(axum::Json(cart))
}

/// Removes a product from a customer's cart.
#[utoipa::path(delete, path = "/carts/{customer_id}/items/{product_id}", security(("session" = [])),
    params(("customer_id" = String, Path, description = "the customer, e.g. `c-ada`"), ("product_id" = String, Path, description = "the product, e.g. `p-001`")),
    responses(StoreBusy, SignInNeeded, Limited, (status = 200, body = [CartLine]), (status = 404, body = Problem, content_type = "application/problem+json", description = "not the signed-in customer"), (status = 422, body = Problem, content_type = "application/problem+json", description = "a bad customer id")))]
async fn remove_item(
    State(ctx): State<Arc<Context>>,
    signed_in: SignedIn,
    PathParams((customer, product)): PathParams<(String, String)>,
) -> Result<axum::Json<Vec<CartLine>>, Problem> {
    let customer = own_customer(&signed_in, &customer)?;
    Ok(axum::Json(ctx.store.transact(move |tx| store::remove_from_cart(tx, &customer, &product)).await?))
}

/// The checkout: cart, address and payment method (with where they came from and how old
/// they are) and the total (confirmed only by a fresh catalog quote). Send the
/// `Consistency-Token` of your last customer write to read your own writes.
#[utoipa::path(get, path = "/checkout/{customer_id}", security(("session" = [])), params(("customer_id" = String, Path, description = "the customer, e.g. `c-ada`"), ("Consistency-Token" = Option<String>, Header, description = "the token of your last write, to read your own writes")),
    responses(StoreBusy, SignInNeeded, (status = 200, body = Checkout),
              (status = 400, body = Problem, content_type = "application/problem+json", description = "a bad Consistency-Token"),
              (status = 404, body = Problem, content_type = "application/problem+json", description = "no such customer"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "a bad customer id"),
              (status = 503, body = Problem, content_type = "application/problem+json", description = "the address is known neither to the replica nor to the customer service; or the database is busy")))]
async fn show_checkout(
    State(ctx): State<Arc<Context>>,
    signed_in: SignedIn,
    PathParams(customer): PathParams<String>,
    headers: HeaderMap,
) -> Result<axum::Json<Checkout>, Problem> {
    own_customer(&signed_in, &customer)?;
    let token = token::from_headers(&headers)?;
    Ok(axum::Json(checkout::checkout(&ctx, &signed_in, token.as_ref()).await?))
}

#[derive(Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    pub customer_id: String,
    /// Ships to this address instead of the one on file.
    pub address_override: Option<Address>,
}

/// Places an order from the customer's cart: a binding quote and a payment authorization
/// first; 503 with the reason if either cannot be had, and then nothing is written.
#[utoipa::path(post, path = "/orders", security(("session" = [])), request_body = PlaceOrder, params(("Consistency-Token" = Option<String>, Header, description = "the token of your last write, to read your own writes"),
        ("Idempotency-Key" = Option<idempotency::IdempotencyKey>, Header, description = "a key of the client's choosing (1 to 255 visible ASCII characters): the same key with the same body answers the first answer again, with no second order")),
    responses(StoreBusy, SignInNeeded, Limited, BodyRefused, (status = 201, body = Order, description = "placed (or, with an Idempotency-Key seen before, the first answer again, marked Idempotent-Replayed: true); with a Consistency-Token"),
              (status = 409, body = Problem, content_type = "application/problem+json", description = "a request with this Idempotency-Key is still running; retry after Retry-After"),
              (status = 400, body = Problem, content_type = "application/problem+json", description = "a bad Consistency-Token, or a body that is not JSON"),
              (status = 402, body = Problem, content_type = "application/problem+json", description = "the payment was declined"),
              (status = 404, body = Problem, content_type = "application/problem+json", description = "no such customer"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "the body does not fit, a bad id or address, an empty cart, or an Idempotency-Key used before with another body"),
              (status = 503, body = Problem, content_type = "application/problem+json", description = "no binding total, no address or no payment decision could be had: nothing was written; or the database is busy")))]
async fn place_order(
    State(ctx): State<Arc<Context>>,
    signed_in: SignedIn,
    headers: HeaderMap,
    Body(request): Body<PlaceOrder>,
) -> Result<Response, Problem> {
    own_customer(&signed_in, &request.customer_id)?;
    let token = token::from_headers(&headers)?;
    let claim = match idempotency::begin(&ctx, "POST /orders", &headers, &request).await? {
        Begun::Replay(answer) => return Ok(answer),
        Begun::Fresh(claim) => claim,
    };
    let address = request.address_override.map(Address::validated).transpose().map_err(Problem::from);
    let placed = match address {
        Ok(address) => place::place(&ctx, &signed_in, address, token.as_ref(), claim.clone())
            .await
            .map_err(Problem::from),
        Err(problem) => Err(problem),
    };
    match placed {
        Ok(order) => Ok(place::answer(&order).into_response()),
        Err(e) => {
            if let Some(claim) = claim {
                claim.release(&ctx).await;
            }
            Err(e)
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrdersQuery {
    customer_id: String,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Lists a customer's orders, oldest first, a page at a time.
#[utoipa::path(get, path = "/orders", security(("session" = [])), params(("customer_id" = String, Query, description = "the customer, e.g. `c-ada`"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "at most this many (1 to 100; 100 when absent)"),
        ("cursor" = Option<crate::service::page::Cursor>, Query, description = "the Next-Cursor of the page before")),
    responses(StoreBusy, SignInNeeded, (status = 200, body = [Order], description = "a page of orders; Next-Cursor names the next page when there is one", headers(("Next-Cursor" = String, description = "send as cursor for the next page"))), (status = 404, body = Problem, content_type = "application/problem+json", description = "not the signed-in customer"), 
              (status = 400, body = Problem, content_type = "application/problem+json", description = "no customer_id, or a bad query"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "a bad customer id, a limit out of 1 to 100, or a cursor this list did not answer")))]
async fn list_orders(
    State(ctx): State<Arc<Context>>,
    signed_in: SignedIn,
    QueryParams(q): QueryParams<OrdersQuery>,
) -> Result<Response, Problem> {
    let customer = own_customer(&signed_in, &q.customer_id)?;
    let page = Page::parse(q.limit, q.cursor.as_deref())?;
    let (after, fetch) = (page.after.clone(), page.fetch());
    let orders =
        ctx.store.transact(move |tx| store::orders_of(tx, &customer, after.as_deref(), fetch)).await?;
    Ok(page.answer(orders, |o| &o.id))
}

/// Shows an order with its status.
#[utoipa::path(get, path = "/orders/{id}", security(("session" = [])), params(("id" = String, Path, description = "the order, e.g. `o-0193…`")),
    responses(StoreBusy, SignInNeeded, (status = 200, body = Order), (status = 404, body = Problem, content_type = "application/problem+json", description = "no such order (or not the signed-in customer's)")))]
async fn show_order(
    State(ctx): State<Arc<Context>>,
    signed_in: SignedIn,
    PathParams(order): PathParams<String>,
) -> Result<axum::Json<Order>, Problem> {
    let order = ctx.store.transact(move |tx| store::order(tx, &order)).await?;
    Ok(axum::Json(owned(&signed_in, order)?))
}

/// Applies `change` to an open order and publishes `kind`; `change` may refuse it.
async fn change_order(
    ctx: &Context,
    signed_in: &SignedIn,
    id: String,
    kind: &'static str,
    change: fn(&mut Order) -> Result<(), OrderError>,
) -> Result<Response, Problem> {
    let outbox = ctx.outbox.clone();
    let owner = signed_in.customer_id().to_owned();
    let order = ctx
        .store
        .transact(move |tx| {
            let mut order = store::order(tx, &id)?;
            if order.customer_id != owner {
                return Err(OrderError::NotFound(id));
            }
            if matches!(order.status, OrderStatus::Rejected | OrderStatus::Cancelled) {
                return Err(OrderError::Final { id, status: order.status.as_str() });
            }
            change(&mut order)?;
            store::change(tx, &outbox, order, kind)
        })
        .await?;
    Ok(token::written(StatusCode::OK, &order, &events::token(&order)))
}

/// The customer confirms the order's address although it differs from theirs; shipping
/// may then ship to it.
#[utoipa::path(post, path = "/orders/{id}/confirm-address", security(("session" = [])), params(("id" = String, Path, description = "the order, e.g. `o-0193…`")),
    responses(StoreBusy, SignInNeeded, Limited, (status = 200, body = Order, description = "confirmed; with a Consistency-Token"),
              (status = 404, body = Problem, content_type = "application/problem+json", description = "no such order"),
              (status = 409, body = Problem, content_type = "application/problem+json", description = "the order is rejected or cancelled")))]
async fn confirm_address(
    State(ctx): State<Arc<Context>>,
    signed_in: SignedIn,
    PathParams(order): PathParams<String>,
) -> Result<Response, Problem> {
    change_order(&ctx, &signed_in, order, ORDER_ADDRESS_CONFIRMED, |o| {
        o.address_confirmed = true;
        Ok(())
    })
    .await
}

/// Cancels an order that is still waiting for its stock; inventory releases what it
/// reserved. A confirmed order is refused: shipping ships it on its own as soon as it
/// learns of it, so a cancel could no longer be kept (a shipped order is returned, not
/// cancelled).
#[utoipa::path(post, path = "/orders/{id}/cancel", security(("session" = [])), params(("id" = String, Path, description = "the order, e.g. `o-0193…`")),
    responses(StoreBusy, SignInNeeded, Limited, (status = 200, body = Order, description = "cancelled; with a Consistency-Token"),
              (status = 404, body = Problem, content_type = "application/problem+json", description = "no such order"),
              (status = 409, body = Problem, content_type = "application/problem+json", description = "the order is confirmed (on its way to shipping), rejected or cancelled already")))]
async fn cancel(
    State(ctx): State<Arc<Context>>,
    signed_in: SignedIn,
    PathParams(order): PathParams<String>,
) -> Result<Response, Problem> {
    change_order(&ctx, &signed_in, order, ORDER_CANCELLED, |o| {
        if o.status == OrderStatus::Confirmed {
            return Err(OrderError::OnItsWay(o.id.clone()));
        }
        o.status = OrderStatus::Cancelled;
        o.reason = Some(CANCELLED_BY_THE_CUSTOMER.into());
        Ok(())
    })
    .await
}
