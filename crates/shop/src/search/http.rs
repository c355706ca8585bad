//! The search service's routes. Every answer says how far behind the index is, because
//! the index is fed asynchronously and may lag its sources (DESIGN §1).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::FEEDS;
use super::bestsellers::{self, Bestseller};
use super::model::{Hit, Kind, SearchQuery, limit_of};
use super::store;
use crate::service::session::{Refusal, SignInNeeded};
use crate::service::{Context, Problem, QueryParams, SignedIn, StoreBusy};

/// The search service's routes, with their document.
pub fn routes() -> OpenApiRouter<Arc<Context>> {
    OpenApiRouter::with_openapi(Api::openapi())
        .routes(routes!(search))
        .routes(routes!(bestsellers))
        .routes(routes!(status))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "capshop search",
        description = "A full-text index of products and orders, fed by events; every answer carries its lag."
    ),
    components(schemas(
        SearchAnswer,
        Hit,
        Kind,
        ConsumerLag,
        StreamLag,
        SearchStatus,
        Documents,
        Problem,
        BestsellersAnswer,
        Bestseller
    ))
)]
struct Api;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Words that must all match (`mug blue`, `p-001`), or an FTS5 query (`mug OR kettle`,
    /// `"blue mug"`, `kett*`, `title:mug`). Required: 1 to 200 characters, not all blank.
    #[param(required = true, pattern = "\\S", max_length = 200)]
    q: Option<String>,
    /// `product` or `order`; both when absent.
    #[param(value_type = Option<Kind>)]
    kind: Option<String>,
    /// 1 to 100; 20 when absent.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BestsellersParams {
    /// 1 to 100; 10 when absent.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

/// One consumer's position on one source stream (see `kit::lag::StreamLag`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StreamLag {
    pub stream: String,
    pub applied_seq: u64,
    pub published_seq: u64,
    /// Events published but not applied yet.
    pub events_behind: u64,
    /// Milliseconds since the newest applied event occurred (null before the first).
    pub newest_applied_age_ms: Option<u64>,
}

impl From<kit::lag::StreamLag> for StreamLag {
    fn from(lag: kit::lag::StreamLag) -> Self {
        Self {
            events_behind: lag.events_behind(),
            stream: lag.stream,
            applied_seq: lag.applied_seq,
            published_seq: lag.published_seq,
            newest_applied_age_ms: lag.newest_applied_age_ms,
        }
    }
}

/// How far one consumer feeding the index is behind its sources.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConsumerLag {
    pub consumer: String,
    pub streams: Vec<StreamLag>,
    /// Why the lag could not be measured (e.g. the bus is unreachable); the index still
    /// answers from what it holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchAnswer {
    /// The query as it was asked.
    pub query: String,
    pub results: Vec<Hit>,
    pub lag: Vec<ConsumerLag>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BestsellersAnswer {
    /// The most ordered products, most units first.
    pub results: Vec<Bestseller>,
    pub lag: Vec<ConsumerLag>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Documents {
    pub products: u64,
    pub orders: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchStatus {
    pub documents: Documents,
    pub lag: Vec<ConsumerLag>,
}

/// The lag of every consumer feeding the index.
async fn lag(ctx: &Context) -> Vec<ConsumerLag> {
    let mut lags = Vec::with_capacity(FEEDS.len());
    for (purpose, stream) in FEEDS {
        let consumer = ctx.consumer_name(purpose);
        let streams = [stream.to_owned()];
        let measured = kit::lag::measure(&ctx.store, ctx.bus.as_ref(), &consumer, &streams).await;
        lags.push(match measured {
            Ok(streams) => {
                ConsumerLag { consumer, streams: streams.into_iter().map(Into::into).collect(), error: None }
            }
            Err(e) => ConsumerLag { consumer, streams: Vec::new(), error: Some(e.to_string()) },
        });
    }
    lags
}

/// Searches products and, for a signed-in shopper, their own orders, best match first,
/// and says how far behind the index is. Orders need a session (`kind=order` without one
/// is a 401); nobody finds another customer's orders.
#[utoipa::path(get, path = "/search", params(SearchParams), security((), ("session" = [])),
    responses(StoreBusy, SignInNeeded, (status = 200, body = SearchAnswer),
              (status = 400, body = Problem, content_type = "application/problem+json", description = "an empty or unparsable query, a bad kind or limit")))]
async fn search(
    State(ctx): State<Arc<Context>>,
    signed_in: Option<SignedIn>,
    QueryParams(params): QueryParams<SearchParams>,
) -> Result<Response, Problem> {
    let query = SearchQuery::parse(params.q.as_deref(), params.kind.as_deref(), params.limit)?;
    if query.kind == Some(Kind::Order) && signed_in.is_none() {
        return Ok(Refusal::Missing.into_response());
    }
    let text = query.text.clone();
    let shopper = signed_in.map(|s| s.customer_id().to_owned());
    let results = ctx.store.transact(move |tx| store::search(tx, &query, shopper.as_deref())).await?;
    Ok(axum::Json(SearchAnswer { query: text, results, lag: lag(&ctx).await }).into_response())
}

/// The most ordered products: units of each in every order placed (confirmed, rejected or
/// cancelled since), counted from the order events, with how far behind the count is.
#[utoipa::path(get, path = "/bestsellers", params(BestsellersParams),
    responses(StoreBusy, (status = 200, body = BestsellersAnswer),
              (status = 400, body = Problem, content_type = "application/problem+json", description = "a bad limit or an unknown parameter")))]
async fn bestsellers(
    State(ctx): State<Arc<Context>>,
    QueryParams(params): QueryParams<BestsellersParams>,
) -> Result<axum::Json<BestsellersAnswer>, Problem> {
    let limit = limit_of(params.limit, 10)?;
    let results = ctx.store.transact(move |tx| bestsellers::top(tx, limit)).await?;
    Ok(axum::Json(BestsellersAnswer { results, lag: lag(&ctx).await }))
}

/// How many documents the index holds and how far behind its sources it is.
#[utoipa::path(get, path = "/status", responses(StoreBusy, (status = 200, body = SearchStatus)))]
async fn status(State(ctx): State<Arc<Context>>) -> Result<axum::Json<SearchStatus>, Problem> {
    let documents = ctx
        .store
        .transact(|tx| {
            Ok::<_, kit::store::StoreError>(Documents {
                products: store::count(tx, Kind::Product)?,
                orders: store::count(tx, Kind::Order)?,
            })
        })
        .await?;
    Ok(axum::Json(SearchStatus { documents, lag: lag(&ctx).await }))
}
