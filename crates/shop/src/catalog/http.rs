//! The catalog's routes: products, prices (admin), the binding quote and the popular list.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::events::{self, Quote, QuoteItem, QuoteLine, QuoteRequest};
use super::model::{Basket, NewProduct, PriceCents, Product, ProductId, ProductName};
use super::{cache, store};
use crate::service::admin::require_token;
use crate::service::{Body, BodyRefused, Context, PathParams, Problem, StoreBusy, token};

/// How many products `GET /popular` lists.
pub const POPULAR_COUNT: u64 = 5;

/// The key of the ranking in the popularity cache.
const POPULAR_KEY: &str = "popular";

/// The catalog's routes, with their document.
pub fn routes(ctx: &Arc<Context>) -> OpenApiRouter<Arc<Context>> {
    // Writing the catalog is an admin operation; reading and quoting are not.
    let admin = OpenApiRouter::new()
        .routes(routes!(add))
        .routes(routes!(change_price))
        .routes(routes!(rename))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), require_token));
    OpenApiRouter::with_openapi(Api::openapi())
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(quote))
        .routes(routes!(popular))
        .merge(admin)
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "capshop catalog",
        description = "Products and their prices (the source of truth). The quote is the binding, consistent price of a cart; changing prices needs the admin token."
    ),
    components(schemas(
        Product,
        AddProduct,
        PriceChange,
        Rename,
        QuoteRequest,
        QuoteItem,
        Quote,
        QuoteLine,
        Popular,
        Problem
    ))
)]
struct Api;

/// A new product; the id is the next free `p-NNN` when not given.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddProduct {
    pub id: Option<String>,
    pub name: String,
    pub description: String,
    pub price_cents: u64,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceChange {
    pub price_cents: u64,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    pub name: String,
}

/// The most popular products. `limited` is true when the popularity cache could not be
/// asked: the list is then ranked by the database, or, beyond the fallback's limits, the
/// last ranking seen (stale) or empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Popular {
    pub limited: bool,
    pub products: Vec<Product>,
    /// Why the answer is limited.
    pub reason: Option<String>,
}

fn product_id(id: &str) -> Result<ProductId, Problem> {
    ProductId::parse(id).map_err(|_| Problem::not_found(format!("no product {id}")))
}

/// Lists every product, by id.
#[utoipa::path(get, path = "/products", responses(StoreBusy, (status = 200, body = [Product])))]
async fn list(State(ctx): State<Arc<Context>>) -> Result<axum::Json<Vec<Product>>, Problem> {
    Ok(axum::Json(ctx.store.transact(store::list).await?))
}

/// Shows one product.
#[utoipa::path(get, path = "/products/{id}", params(("id" = String, Path, description = "the product, e.g. `p-001`")),
    responses(StoreBusy, (status = 200, body = Product), (status = 404, body = Problem, content_type = "application/problem+json", description = "no such product")))]
async fn show(
    State(ctx): State<Arc<Context>>,
    PathParams(id): PathParams<String>,
) -> Result<axum::Json<Product>, Problem> {
    let id = product_id(&id)?;
    Ok(axum::Json(ctx.store.transact(move |tx| store::get(tx, &id)).await?))
}

/// Adds a product (admin: `Authorization: Bearer <token>`); publishes ProductAdded.
#[utoipa::path(post, path = "/products", request_body = AddProduct,
    responses(StoreBusy, BodyRefused, (status = 201, body = Product, description = "added; with a Consistency-Token"),
              (status = 401, body = Problem, content_type = "application/problem+json", description = "no admin token"),
              (status = 403, body = Problem, content_type = "application/problem+json", description = "a wrong admin token"),
              (status = 409, body = Problem, content_type = "application/problem+json", description = "a product with that id exists"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "the body does not fit, or a bad id, name, description or price")))]
async fn add(State(ctx): State<Arc<Context>>, Body(request): Body<AddProduct>) -> Result<Response, Problem> {
    let new =
        NewProduct::parse(request.id.as_deref(), &request.name, &request.description, request.price_cents)?;
    let outbox = ctx.outbox.clone();
    let product = ctx.store.transact(move |tx| store::add(tx, &outbox, new)).await?;
    Ok(token::written(StatusCode::CREATED, &product, &events::token(&product)))
}

/// Changes a product's price (admin); publishes ProductPriceChanged with the whole product
/// at its next version. The same price again changes nothing.
#[utoipa::path(put, path = "/products/{id}/price", params(("id" = String, Path, description = "the product, e.g. `p-001`")), request_body = PriceChange,
    responses(StoreBusy, BodyRefused, (status = 200, body = Product, description = "changed; with a Consistency-Token"),
              (status = 401, body = Problem, content_type = "application/problem+json", description = "no admin token"),
              (status = 403, body = Problem, content_type = "application/problem+json", description = "a wrong admin token"),
              (status = 404, body = Problem, content_type = "application/problem+json", description = "no such product"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "the body does not fit, or a bad price")))]
async fn change_price(
    State(ctx): State<Arc<Context>>,
    PathParams(id): PathParams<String>,
    Body(change): Body<PriceChange>,
) -> Result<Response, Problem> {
    let id = product_id(&id)?;
    let price = PriceCents::new(change.price_cents)?;
    let outbox = ctx.outbox.clone();
    let product = ctx.store.transact(move |tx| store::change_price(tx, &outbox, &id, price)).await?;
    Ok(token::written(StatusCode::OK, &product, &events::token(&product)))
}

/// Renames a product (admin); publishes ProductRenamed with the whole product at its next
/// version. The same name again changes nothing.
#[utoipa::path(put, path = "/products/{id}/name", params(("id" = String, Path, description = "the product, e.g. `p-001`")), request_body = Rename,
    responses(StoreBusy, BodyRefused, (status = 200, body = Product, description = "renamed; with a Consistency-Token"),
              (status = 401, body = Problem, content_type = "application/problem+json", description = "no admin token"),
              (status = 403, body = Problem, content_type = "application/problem+json", description = "a wrong admin token"),
              (status = 404, body = Problem, content_type = "application/problem+json", description = "no such product"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "the body does not fit, or a bad name")))]
async fn rename(
    State(ctx): State<Arc<Context>>,
    PathParams(id): PathParams<String>,
    Body(rename): Body<Rename>,
) -> Result<Response, Problem> {
    let id = product_id(&id)?;
    let name = ProductName::parse(&rename.name)?;
    let outbox = ctx.outbox.clone();
    let product = ctx.store.transact(move |tx| store::rename(tx, &outbox, &id, name)).await?;
    Ok(token::written(StatusCode::OK, &product, &events::token(&product)))
}

/// Prices a cart at the current prices: the binding, consistent quote the order service
/// asks for before it shows a total or places an order.
#[utoipa::path(post, path = "/quote", request_body = QuoteRequest,
    responses(StoreBusy, BodyRefused, (status = 200, body = Quote),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "the body does not fit, no items, a bad quantity, or unknown products (named)")))]
async fn quote(
    State(ctx): State<Arc<Context>>,
    Body(request): Body<QuoteRequest>,
) -> Result<axum::Json<Quote>, Problem> {
    let basket = Basket::try_from(request)?;
    Ok(axum::Json(ctx.store.transact(move |tx| store::quote(tx, &basket)).await?))
}

/// Lists the most quoted products from the popularity cache. When the cache cannot be
/// asked (cut off, down, or its breaker open), ranks from the database behind a bulkhead
/// and a breaker of its own, and beyond those answers at once with the last ranking seen
/// (stale) or none; every such answer says `limited: true` and why.
#[utoipa::path(get, path = "/popular", responses(StoreBusy, (status = 200, body = Popular)))]
async fn popular(State(ctx): State<Arc<Context>>) -> Result<axum::Json<Popular>, Problem> {
    let cache = cache::of(&ctx);
    let products = match cache.get(POPULAR_KEY).await {
        Ok(Some(products)) => {
            cache.metrics.hits.inc();
            products
        }
        Ok(None) => {
            cache.metrics.misses.inc();
            let products = ctx.store.transact(|tx| store::most_quoted(tx, POPULAR_COUNT)).await?;
            if let Err(e) = cache.put(POPULAR_KEY, products.clone()).await {
                // The ranking is complete; only the next request pays for it again.
                tracing::debug!(error = %e, "popular ranking not cached");
            }
            cache.remember(&products);
            products
        }
        Err(e) => return Ok(axum::Json(fallback(&ctx, cache, &e).await)),
    };
    Ok(axum::Json(Popular { limited: false, products, reason: None }))
}

/// The answer when the cache is unavailable: a ranking read from the database while at
/// most [`cache::FALLBACK_LIMIT`] such reads run and their breaker is closed; else at
/// once the last ranking seen (or none), so a dead cache never piles its load onto the
/// database.
async fn fallback(ctx: &Context, cache: &cache::PopularCache, e: &cache::CacheUnavailable) -> Popular {
    let limited = |why: String| {
        cache.metrics.limited.inc();
        let stale = cache.stale();
        let shown = if stale.is_some() { "the last ranking seen" } else { "no ranking" };
        Popular {
            limited: true,
            products: stale.unwrap_or_default(),
            reason: Some(format!("features limited: {e}; {why}; showing {shown}")),
        }
    };
    let Ok(_permit) = cache.bulkhead.try_acquire() else {
        return limited(format!("{} database reads already stand in for it", cache::FALLBACK_LIMIT));
    };
    let read = ctx.store.transact(|tx| store::most_quoted(tx, POPULAR_COUNT));
    match cache.fallback_breaker.call(read).await {
        Ok(products) => {
            cache.metrics.fallbacks.inc();
            cache.remember(&products);
            let reason = Some(format!("features limited: {e}; ranked by the database instead"));
            Popular { limited: true, products, reason }
        }
        Err(db) => limited(format!("the database read standing in for it failed: {db}")),
    }
}
