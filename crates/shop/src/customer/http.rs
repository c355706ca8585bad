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

use super::model::{Address, Customer, CustomerId, Password, PaymentMethod, Registration};
use super::sign_in::{self, ChangePassword, SignInRequest, SignedInAnswer};
use super::{events, store};
use crate::service::idempotency::{self, Begun, Claim, Written};
use crate::service::limits::Limited;
use crate::service::page::Page;
use crate::service::session::SignInNeeded;
use crate::service::{
    Body, BodyRefused, Context, PathParams, Problem, QueryParams, SignedIn, StoreBusy, admin, token,
};

/// The customer service's routes, with their document.
pub fn routes() -> OpenApiRouter<Arc<Context>> {
    OpenApiRouter::with_openapi(Api::openapi())
        .routes(routes!(list, register))
        .routes(routes!(show))
        .routes(routes!(change_address))
        .routes(routes!(change_payment_method))
        .routes(routes!(sign_in::change_password))
        .routes(routes!(sign_in::sign_in))
        .routes(routes!(sign_in::sign_out))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "capshop customer",
        description = "Customers, their addresses and payment methods (the source of truth)."
    ),
    components(schemas(
        Customer,
        Address,
        PaymentMethod,
        RegisterRequest,
        SignInRequest,
        SignedInAnswer,
        ChangePassword,
        Problem,
        crate::service::page::Cursor,
        idempotency::IdempotencyKey
    ))
)]
struct Api;

#[derive(Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// 1 to 100 characters, not all blank (trimmed).
    #[schema(pattern = "\\S", max_length = 100)]
    pub name: String,
    /// `name@example.com`: a part before the `@`, a `.` after it; at most 254 characters
    /// (trimmed); kept in lower case.
    #[schema(pattern = "^\\s*[^@\\s][^@]*@[\\s\\S]*\\.", max_length = 254)]
    pub email: String,
    pub address: Address,
    pub payment_method: PaymentMethod,
    /// 8 to 128 characters; kept only as an argon2id hash, never shown.
    #[schema(min_length = 8, max_length = 128)]
    pub password: String,
}

/// What of a registration its Idempotency-Key is compared by: all but the password, so no
/// fast digest of a password is ever stored.
#[derive(serde::Serialize)]
struct RegistrationDigest<'a> {
    name: &'a str,
    email: &'a str,
    address: &'a Address,
    payment_method: &'a PaymentMethod,
}

/// The customer `id` names, if it is the signed-in one; any other is "no customer" (404).
pub(super) fn own_customer(signed_in: &SignedIn, id: &str) -> Result<CustomerId, Problem> {
    let missing = || format!("no customer {id}");
    signed_in.owns(id, missing)?;
    CustomerId::parse(id).map_err(|_| Problem::not_found(missing()))
}

/// Registers a customer.
#[utoipa::path(post, path = "/customers", request_body = RegisterRequest,
    params(("Idempotency-Key" = Option<idempotency::IdempotencyKey>, Header, description = "a key of the client's choosing (1 to 255 visible ASCII characters): the same key with the same body answers the first answer again, with no second customer")),
    responses(StoreBusy, BodyRefused, (status = 201, body = Customer, description = "registered (or, with an Idempotency-Key seen before, the first answer again, marked Idempotent-Replayed: true); with a Consistency-Token"),
              (status = 400, body = Problem, content_type = "application/problem+json", description = "a bad Idempotency-Key, or a body that is not JSON"),
              (status = 409, body = Problem, content_type = "application/problem+json", description = "the email is taken, or a request with this Idempotency-Key is still running (retry after Retry-After)"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "the body does not fit, a bad name, email, address or password (8 to 128 characters), or an Idempotency-Key used before with another body")))]
async fn register(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    Body(request): Body<RegisterRequest>,
) -> Result<Response, Problem> {
    let digest = RegistrationDigest {
        name: &request.name,
        email: &request.email,
        address: &request.address,
        payment_method: &request.payment_method,
    };
    let claim = match idempotency::begin(&ctx, "POST /customers", &headers, &digest).await? {
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
    let password = Password::parse("password", request.password)?;
    let hash = tokio::task::spawn_blocking(move || password.hash())
        .await
        .map_err(|e| Problem::internal(format!("the password could not be hashed: {e}")))?;
    let new =
        Registration::parse(&request.name, &request.email, request.address, request.payment_method, hash)?;
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

/// A page of the customer list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Lists every customer, by id, a page at a time: for the operator (the admin token), not
/// for shoppers.
#[utoipa::path(get, path = "/customers", security(("admin" = [])),
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "at most this many (1 to 100; 100 when absent)"),
        ("cursor" = Option<crate::service::page::Cursor>, Query, description = "the Next-Cursor of the page before")),
    responses(StoreBusy, (status = 200, body = [Customer], description = "a page of customers; Next-Cursor names the next page when there is one", headers(("Next-Cursor" = String, description = "send as cursor for the next page"))),
              (status = 400, body = Problem, content_type = "application/problem+json", description = "a bad query"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "a limit out of 1 to 100, or a cursor this list did not answer"),
              (status = 401, body = Problem, content_type = "application/problem+json", description = "no admin token"),
              (status = 403, body = Problem, content_type = "application/problem+json", description = "not the admin token")))]
async fn list(
    State(ctx): State<Arc<Context>>,
    headers: HeaderMap,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Response, Problem> {
    admin::check_bearer(&headers, &ctx.admin_token)?;
    let page = Page::parse(q.limit, q.cursor.as_deref())?;
    let (after, fetch) = (page.after.clone(), page.fetch());
    let customers = ctx.store.transact(move |tx| store::list(tx, after.as_deref(), fetch)).await?;
    Ok(page.answer(customers, |c| c.id.as_str()))
}

/// Shows the signed-in customer.
#[utoipa::path(get, path = "/customers/{id}", params(("id" = String, Path, description = "the customer, e.g. `c-ada`")), security(("session" = [])),
    responses(StoreBusy, SignInNeeded, (status = 200, body = Customer), (status = 404, body = Problem, content_type = "application/problem+json", description = "no such customer (or not the signed-in one)")))]
async fn show(
    State(ctx): State<Arc<Context>>,
    signed_in: SignedIn,
    PathParams(id): PathParams<String>,
) -> Result<axum::Json<Customer>, Problem> {
    let id = own_customer(&signed_in, &id)?;
    Ok(axum::Json(ctx.store.transact(move |tx| store::get(tx, &id)).await?))
}

/// Changes a customer's address; replicas learn of it by the CustomerAddressChanged event.
#[utoipa::path(put, path = "/customers/{id}/address", params(("id" = String, Path, description = "the customer, e.g. `c-ada`")), request_body = Address, security(("session" = [])),
    responses(StoreBusy, BodyRefused, SignInNeeded, Limited, (status = 200, body = Customer, description = "changed; with a Consistency-Token"),
              (status = 404, body = Problem, content_type = "application/problem+json", description = "no such customer (or not the signed-in one)"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "the body does not fit, or a bad address")))]
async fn change_address(
    State(ctx): State<Arc<Context>>,
    signed_in: SignedIn,
    PathParams(id): PathParams<String>,
    Body(address): Body<Address>,
) -> Result<Response, Problem> {
    let id = own_customer(&signed_in, &id)?;
    let address = address.validated()?;
    let outbox = ctx.outbox.clone();
    let customer = ctx.store.transact(move |tx| store::change_address(tx, &outbox, &id, address)).await?;
    Ok(token::written(StatusCode::OK, &customer, &events::token(&customer)))
}

/// Changes a customer's payment method.
#[utoipa::path(put, path = "/customers/{id}/payment-method", params(("id" = String, Path, description = "the customer, e.g. `c-ada`")), request_body = PaymentMethod, security(("session" = [])),
    responses(StoreBusy, BodyRefused, SignInNeeded, Limited, (status = 200, body = Customer, description = "changed; with a Consistency-Token"),
              (status = 404, body = Problem, content_type = "application/problem+json", description = "no such customer (or not the signed-in one)"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "the body does not fit, or a bad card")))]
async fn change_payment_method(
    State(ctx): State<Arc<Context>>,
    signed_in: SignedIn,
    PathParams(id): PathParams<String>,
    Body(method): Body<PaymentMethod>,
) -> Result<Response, Problem> {
    let id = own_customer(&signed_in, &id)?;
    let method = method.validated()?;
    let outbox = ctx.outbox.clone();
    let customer =
        ctx.store.transact(move |tx| store::change_payment_method(tx, &outbox, &id, method)).await?;
    Ok(token::written(StatusCode::OK, &customer, &events::token(&customer)))
}
