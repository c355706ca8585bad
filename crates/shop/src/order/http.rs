//! The order service's routes: carts, the checkout, orders.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get, post};
use kit::token::{ConsistencyToken, TokenEntry};
use serde::Deserialize;

use super::checkout::{self, Checkout};
use super::events::{self, ORDER_ADDRESS_CONFIRMED, ORDER_CANCELLED, OrderStatus};
use super::model::{Order, OrderError, Quantity, id};
use super::place;
use super::store::{self, CartLine};
use crate::contracts::customer::Address;
use crate::service::{Body, Context, PathParams, PeerError, Problem, QueryParams, ServiceName, token};

pub fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/carts/{customer_id}", get(cart))
        .route("/carts/{customer_id}/items", post(add_item))
        .route("/carts/{customer_id}/items/{product_id}", delete(remove_item))
        .route("/checkout/{customer_id}", get(show_checkout))
        .route("/orders", post(place_order).get(list_orders))
        .route("/orders/{id}", get(show_order))
        .route("/orders/{id}/confirm-address", post(confirm_address))
        .route("/orders/{id}/cancel", post(cancel))
        .with_state(ctx)
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "capshop order",
        description = "Carts, the checkout and orders. The address comes from a replica of the customer (available); the total and the payment are synchronous (consistent)."
    ),
    paths(
        cart,
        add_item,
        remove_item,
        show_checkout,
        place_order,
        list_orders,
        show_order,
        confirm_address,
        cancel
    ),
    components(schemas(CartLine, AddItem, PlaceOrder, Order, Checkout, Address, Problem))
)]
pub struct Api;

fn customer_id(value: &str) -> Result<String, OrderError> {
    id("customer_id", "c", value)
}

fn order_token(order: &Order) -> ConsistencyToken {
    ConsistencyToken::new()
        .with(TokenEntry::new(events::SCOPE, &order.id, order.version).expect("order ids are token-safe"))
}

/// Checks the customer exists: by the replica, else by asking its owner. When the owner
/// is unreachable the cart still accepts the item (availability first).
async fn ensure_customer(ctx: &Context, customer_id: &str) -> Result<(), OrderError> {
    let id = customer_id.to_owned();
    if ctx.store.transact(move |tx| store::replicated_customer(tx, &id)).await?.is_some() {
        return Ok(());
    }
    let asked: Result<serde_json::Value, PeerError> =
        ctx.peer(ServiceName::Customer).get(&format!("/customers/{customer_id}")).await;
    match asked {
        Err(PeerError::Refused { status: 404, .. }) => {
            Err(OrderError::UnknownCustomer(customer_id.to_owned()))
        }
        _ => Ok(()),
    }
}

/// Shows a customer's cart with list prices from the replica.
#[utoipa::path(get, path = "/carts/{customer_id}", responses((status = 200, body = [CartLine])))]
async fn cart(
    State(ctx): State<Arc<Context>>,
    PathParams(customer): PathParams<String>,
) -> Result<axum::Json<Vec<CartLine>>, Problem> {
    let customer = customer_id(&customer)?;
    Ok(axum::Json(ctx.store.transact(move |tx| store::cart(tx, &customer)).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddItem {
    pub product_id: String,
    /// 1 to 100.
    pub quantity: i64,
}

/// Adds a product to a customer's cart.
#[utoipa::path(post, path = "/carts/{customer_id}/items", request_body = AddItem,
    responses((status = 200, body = [CartLine]), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn add_item(
    State(ctx): State<Arc<Context>>,
    PathParams(customer): PathParams<String>,
    Body(item): Body<AddItem>,
) -> Result<axum::Json<Vec<CartLine>>, Problem> {
    let customer = customer_id(&customer)?;
    let quantity = Quantity::new(item.quantity)?;
    let product = id("product_id", "p", &item.product_id)?;
    ensure_customer(&ctx, &customer).await?;
    let cart = ctx
        .store
        .transact(move |tx| store::add_to_cart(tx, &customer, &product, quantity.get(), Quantity::MAX))
        .await?;
    Ok(axum::Json(cart))
}

/// Removes a product from a customer's cart.
#[utoipa::path(delete, path = "/carts/{customer_id}/items/{product_id}", responses((status = 200, body = [CartLine])))]
async fn remove_item(
    State(ctx): State<Arc<Context>>,
    PathParams((customer, product)): PathParams<(String, String)>,
) -> Result<axum::Json<Vec<CartLine>>, Problem> {
    let customer = customer_id(&customer)?;
    Ok(axum::Json(ctx.store.transact(move |tx| store::remove_from_cart(tx, &customer, &product)).await?))
}

/// The checkout: cart, address and payment method (with where they came from and how old
/// they are) and the total (confirmed only by a fresh catalog quote). Send the
/// `Consistency-Token` of your last customer write to read your own writes.
#[utoipa::path(get, path = "/checkout/{customer_id}", params(("Consistency-Token" = Option<String>, Header)),
    responses((status = 200, body = Checkout), (status = 404, body = Problem)))]
async fn show_checkout(
    State(ctx): State<Arc<Context>>,
    PathParams(customer): PathParams<String>,
    headers: HeaderMap,
) -> Result<axum::Json<Checkout>, Problem> {
    let customer = customer_id(&customer)?;
    let token = token::from_headers(&headers)?;
    Ok(axum::Json(checkout::checkout(&ctx, &customer, token.as_ref()).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    pub customer_id: String,
    /// Ships to this address instead of the one on file.
    pub address_override: Option<Address>,
}

/// Places an order from the customer's cart: a binding quote and a payment authorization
/// first; 503 with the reason if either cannot be had, and then nothing is written.
#[utoipa::path(post, path = "/orders", request_body = PlaceOrder, params(("Consistency-Token" = Option<String>, Header)),
    responses((status = 201, body = Order), (status = 402, body = Problem), (status = 422, body = Problem), (status = 503, body = Problem)))]
async fn place_order(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    Body(request): Body<PlaceOrder>,
) -> Result<Response, Problem> {
    let customer = customer_id(&request.customer_id)?;
    let address = request.address_override.map(Address::validated).transpose().map_err(Problem::from)?;
    let token = token::from_headers(&headers)?;
    let order = place::place(&ctx, &customer, address, token.as_ref()).await?;
    Ok(token::written(StatusCode::CREATED, &order, &order_token(&order)))
}

#[derive(Debug, Deserialize)]
struct OrdersQuery {
    customer_id: String,
}

/// Lists a customer's orders.
#[utoipa::path(get, path = "/orders", params(("customer_id" = String, Query)), responses((status = 200, body = [Order])))]
async fn list_orders(
    State(ctx): State<Arc<Context>>,
    QueryParams(q): QueryParams<OrdersQuery>,
) -> Result<axum::Json<Vec<Order>>, Problem> {
    let customer = customer_id(&q.customer_id)?;
    Ok(axum::Json(ctx.store.transact(move |tx| store::orders_of(tx, &customer)).await?))
}

/// Shows an order with its status.
#[utoipa::path(get, path = "/orders/{id}", responses((status = 200, body = Order), (status = 404, body = Problem)))]
async fn show_order(
    State(ctx): State<Arc<Context>>,
    PathParams(order): PathParams<String>,
) -> Result<axum::Json<Order>, Problem> {
    Ok(axum::Json(ctx.store.transact(move |tx| store::order(tx, &order)).await?))
}

/// Applies `change` to an open order and publishes `kind`.
async fn change_order(
    ctx: &Context,
    id: String,
    kind: &'static str,
    change: fn(&mut Order),
) -> Result<Response, Problem> {
    let outbox = ctx.outbox.clone();
    let order = ctx
        .store
        .transact(move |tx| {
            let mut order = store::order(tx, &id)?;
            if matches!(order.status, OrderStatus::Rejected | OrderStatus::Cancelled) {
                return Err(OrderError::Final { id, status: order.status.as_str() });
            }
            change(&mut order);
            store::change(tx, &outbox, order, kind)
        })
        .await?;
    Ok(token::written(StatusCode::OK, &order, &order_token(&order)))
}

/// The customer confirms the order's address although it differs from theirs; shipping
/// may then ship to it.
#[utoipa::path(post, path = "/orders/{id}/confirm-address", responses((status = 200, body = Order), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn confirm_address(
    State(ctx): State<Arc<Context>>,
    PathParams(order): PathParams<String>,
) -> Result<Response, Problem> {
    change_order(&ctx, order, ORDER_ADDRESS_CONFIRMED, |o| o.address_confirmed = true).await
}

/// Cancels an open order; inventory releases its stock.
#[utoipa::path(post, path = "/orders/{id}/cancel", responses((status = 200, body = Order), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn cancel(
    State(ctx): State<Arc<Context>>,
    PathParams(order): PathParams<String>,
) -> Result<Response, Problem> {
    change_order(&ctx, order, ORDER_CANCELLED, |o| {
        o.status = OrderStatus::Cancelled;
        o.reason = Some("cancelled by the customer".into());
    })
    .await
}
