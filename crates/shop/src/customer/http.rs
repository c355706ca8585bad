//! The customer service's routes.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::model::{Address, Customer, CustomerId, PaymentMethod, Registration};
use super::{events, store};
use crate::service::idempotency::{self, Begun, Claim, Written};
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

#[derive(Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
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
    params(("Idempotency-Key" = Option<String>, Header, description = "a key of the client's choosing (1 to 255 visible ASCII characters): the same key with the same body answers the first answer again, with no second customer")),
    responses(StoreBusy, BodyRefused, (status = 201, body = Customer, description = "registered (or, with an Idempotency-Key seen before, the first answer again, marked Idempotent-Replayed: true); with a Consistency-Token"),
              (status = 400, body = Problem, content_type = "application/problem+json", description = "a bad Idempotency-Key, or a body that is not JSON"),
              (status = 409, body = Problem, content_type = "application/problem+json", description = "the email is taken, or a request with this Idempotency-Key is still running (retry after Retry-After)"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "the body does not fit, a bad name, email or address, or an Idempotency-Key used before with another body")))]
async fn register(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    Body(request): Body<RegisterRequest>,
) -> Result<Response, Problem> {
    let claim = match idempotency::begin(&ctx, "POST /customers", &headers, &request).await? {
        Begun::Replay(answer) => return Ok(answer),
        Begun::Fresh(claim) => claim,
    };
    let registered = register_once(&ctx, request, claim.clone()).await;
    if let (Err(_), Some(claim)) = (&registered, claim) {
        claim.release(&ctx).await;
    }
    registered.map(IntoResponse::into_response)
}

/// Registers the customer and, under a claimed Idempotency-Key, records the answer with it.
async fn register_once(
    ctx: &Context,
    request: RegisterRequest,
    claim: Option<Claim>,
) -> Result<Written, Problem> {
    let new = Registration::parse(&request.name, &request.email, request.address, request.payment_method)?;
    let outbox = ctx.outbox.clone();
    let answer = ctx
        .store
        .transact(move |tx| {
            let customer = store::register(tx, &outbox, CustomerId::generate(), new)?;
            let answer = Written::new(StatusCode::CREATED, &customer, &events::token(&customer));
            if let Some(claim) = &claim {
                claim.complete(tx, &answer).map_err(super::model::CustomerError::from)?;
            }
            Ok::<_, super::model::CustomerError>(answer)
        })
        .await?;
    Ok(answer)
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
