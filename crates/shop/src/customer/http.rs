//! The customer service's routes.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::model::{Address, Customer, CustomerId, PaymentMethod, Registration};
use super::{events, store};
use crate::service::{Body, BodyRefused, Context, PathParams, Problem, StoreBusy, token};

/// The customer service's routes, with their document.
pub fn routes() -> OpenApiRouter<Arc<Context>> {
    OpenApiRouter::with_openapi(Api::openapi())
        .routes(routes!(list, register))
        .routes(routes!(show))
        .routes(routes!(change_address))
        .routes(routes!(change_payment_method))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "capshop customer",
        description = "Customers, their addresses and payment methods (the source of truth)."
    ),
    components(schemas(Customer, Address, PaymentMethod, RegisterRequest, Problem))
)]
struct Api;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub name: String,
    pub email: String,
    pub address: Address,
    pub payment_method: PaymentMethod,
}

fn customer_id(id: &str) -> Result<CustomerId, Problem> {
    CustomerId::parse(id).map_err(|_| Problem::not_found(format!("no customer {id}")))
}

/// Registers a customer.
#[utoipa::path(post, path = "/customers", request_body = RegisterRequest,
    responses(StoreBusy, BodyRefused, (status = 201, body = Customer, description = "registered; with a Consistency-Token"),
              (status = 409, body = Problem, content_type = "application/problem+json", description = "the email is taken"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "the body does not fit, or a bad name, email or address")))]
async fn register(
    State(ctx): State<Arc<Context>>,
    Body(request): Body<RegisterRequest>,
) -> Result<Response, Problem> {
    let new = Registration::parse(&request.name, &request.email, request.address, request.payment_method)?;
    let outbox = ctx.outbox.clone();
    let customer =
        ctx.store.transact(move |tx| store::register(tx, &outbox, CustomerId::generate(), new)).await?;
    Ok(token::written(StatusCode::CREATED, &customer, &events::token(&customer)))
}

/// Lists every customer.
#[utoipa::path(get, path = "/customers", responses(StoreBusy, (status = 200, body = [Customer])))]
async fn list(State(ctx): State<Arc<Context>>) -> Result<axum::Json<Vec<Customer>>, Problem> {
    Ok(axum::Json(ctx.store.transact(store::list).await?))
}

/// Shows one customer.
#[utoipa::path(get, path = "/customers/{id}", params(("id" = String, Path, description = "the customer, e.g. `c-ada`")),
    responses(StoreBusy, (status = 200, body = Customer), (status = 404, body = Problem, content_type = "application/problem+json", description = "no such customer")))]
async fn show(
    State(ctx): State<Arc<Context>>,
    PathParams(id): PathParams<String>,
) -> Result<axum::Json<Customer>, Problem> {
    let id = customer_id(&id)?;
    Ok(axum::Json(ctx.store.transact(move |tx| store::get(tx, &id)).await?))
}

/// Changes a customer's address; replicas learn of it by the CustomerAddressChanged event.
#[utoipa::path(put, path = "/customers/{id}/address", params(("id" = String, Path, description = "the customer, e.g. `c-ada`")), request_body = Address,
    responses(StoreBusy, BodyRefused, (status = 200, body = Customer, description = "changed; with a Consistency-Token"),
              (status = 404, body = Problem, content_type = "application/problem+json", description = "no such customer"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "the body does not fit, or a bad address")))]
async fn change_address(
    State(ctx): State<Arc<Context>>,
    PathParams(id): PathParams<String>,
    Body(address): Body<Address>,
) -> Result<Response, Problem> {
    let id = customer_id(&id)?;
    let address = address.validated()?;
    let outbox = ctx.outbox.clone();
    let customer = ctx.store.transact(move |tx| store::change_address(tx, &outbox, &id, address)).await?;
    Ok(token::written(StatusCode::OK, &customer, &events::token(&customer)))
}

/// Changes a customer's payment method.
#[utoipa::path(put, path = "/customers/{id}/payment-method", params(("id" = String, Path, description = "the customer, e.g. `c-ada`")), request_body = PaymentMethod,
    responses(StoreBusy, BodyRefused, (status = 200, body = Customer, description = "changed; with a Consistency-Token"),
              (status = 404, body = Problem, content_type = "application/problem+json", description = "no such customer"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "the body does not fit, or a bad card")))]
async fn change_payment_method(
    State(ctx): State<Arc<Context>>,
    PathParams(id): PathParams<String>,
    Body(method): Body<PaymentMethod>,
) -> Result<Response, Problem> {
    let id = customer_id(&id)?;
    let method = method.validated()?;
    let outbox = ctx.outbox.clone();
    let customer =
        ctx.store.transact(move |tx| store::change_payment_method(tx, &outbox, &id, method)).await?;
    Ok(token::written(StatusCode::OK, &customer, &events::token(&customer)))
}
