//! Admin routes (`/admin/...`, bearer token): the service's dead letters — list, show,
//! replay and discard — its facts for `capshop reconcile` ([`super::facts`]) and its
//! recent events ([`super::recent`]).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::Response;
use kit::bus::{DeadLetter, DeadLetterFilter};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Body, BodyRefused, Context, PathParams, Problem, QueryParams};

/// The admin routes with their documentation, to be nested at `/admin`.
pub(super) fn routes(ctx: Arc<Context>, facts: super::facts::FactsReader) -> OpenApiRouter<Arc<Context>> {
    OpenApiRouter::new()
        .routes(routes!(super::facts::facts))
        .layer(axum::Extension(facts))
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(replay))
        .routes(routes!(discard))
        .routes(routes!(super::recent::recent))
        .layer(middleware::from_fn_with_state(ctx, require_token))
}

/// Lets a request through only with `Authorization: Bearer <admin token>`.
pub async fn require_token(
    State(ctx): State<Arc<Context>>,
    request: Request,
    next: Next,
) -> Result<Response, Problem> {
    check_bearer(request.headers(), &ctx.admin_token)?;
    Ok(next.run(request).await)
}

/// Accepts `headers` only when they carry `Authorization: Bearer <expected>`.
pub fn check_bearer(headers: &HeaderMap, expected: &str) -> Result<(), Problem> {
    let presented =
        headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(Problem::new(axum::http::StatusCode::FORBIDDEN, "the admin token is wrong")),
        None => Err(Problem::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "admin routes need Authorization: Bearer <token>; capshop up prints the token",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Selects dead letters of this service's consumers.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Selection {
    pub consumer: Option<String>,
    pub event_id: Option<String>,
    pub stream: Option<String>,
    pub key: Option<String>,
    /// Must be true to select every dead letter (guards against an empty body).
    #[serde(default)]
    pub all: bool,
}

impl Selection {
    fn filter(&self) -> DeadLetterFilter {
        DeadLetterFilter {
            consumer: self.consumer.clone(),
            event_id: self.event_id.clone(),
            stream: self.stream.clone(),
            key: self.key.clone(),
        }
    }

    fn is_empty(&self) -> bool {
        self.consumer.is_none() && self.event_id.is_none() && self.stream.is_none() && self.key.is_none()
    }
}

/// A dead letter as the admin API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetterView {
    pub consumer: String,
    pub event_id: String,
    pub stream: String,
    pub seq: u64,
    pub key: String,
    pub attempts: u32,
    pub error: String,
    pub failed_at_ms: u64,
    /// Later events of the same key parked behind this one.
    pub parked: u64,
    /// The original envelope (as text when it is not JSON).
    #[schema(value_type = Object)]
    pub envelope: serde_json::Value,
}

impl From<DeadLetter> for DeadLetterView {
    fn from(d: DeadLetter) -> Self {
        let envelope = serde_json::from_slice(&d.message.body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&d.message.body).into_owned())
        });
        Self {
            consumer: d.consumer,
            event_id: d.message.id,
            stream: d.message.stream,
            seq: d.message.seq,
            key: d.message.key,
            attempts: d.attempts,
            error: d.error,
            failed_at_ms: d.failed_at_ms,
            parked: d.parked,
            envelope,
        }
    }
}

/// Dead letters matching `filter` that belong to this service's consumers, those of
/// every instance included (`inventory-dc2.orders`), so one admin API serves them all.
async fn own_letters(ctx: &Context, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>, Problem> {
    let (service, instance) = (format!("{}.", ctx.name), format!("{}-", ctx.name));
    let letters = ctx.bus.dead_letters(filter).await.map_err(|e| Problem::unavailable(e.to_string()))?;
    let own = |c: &str| c.starts_with(&service) || c.starts_with(&instance);
    Ok(letters.into_iter().filter(|d| own(&d.consumer)).collect())
}

/// Lists the dead letters of this service's consumers that match the selection.
#[utoipa::path(get, path = "/dead-letters", operation_id = "list_dead_letters", tag = "admin", params(Selection),
    responses((status = 200, body = [DeadLetterView]),
              (status = 400, body = Problem, content_type = "application/problem+json", description = "a bad query"),
              (status = 401, body = Problem, content_type = "application/problem+json", description = "no admin token"),
              (status = 403, body = Problem, content_type = "application/problem+json", description = "a wrong admin token"),
              (status = 503, body = Problem, content_type = "application/problem+json", description = "the bus is unreachable")))]
async fn list(
    State(ctx): State<Arc<Context>>,
    QueryParams(selection): QueryParams<Selection>,
) -> Result<axum::Json<Vec<DeadLetterView>>, Problem> {
    let letters = own_letters(&ctx, &selection.filter()).await?;
    Ok(axum::Json(letters.into_iter().map(Into::into).collect()))
}

/// Shows the dead letters of one event (one per consumer it failed in).
#[utoipa::path(get, path = "/dead-letters/{event_id}", operation_id = "show_dead_letter", tag = "admin",
    params(("event_id" = String, Path, description = "the id of the dead event")),
    responses((status = 200, body = [DeadLetterView]),
              (status = 401, body = Problem, content_type = "application/problem+json", description = "no admin token"),
              (status = 403, body = Problem, content_type = "application/problem+json", description = "a wrong admin token"),
              (status = 404, body = Problem, content_type = "application/problem+json", description = "no dead letter of that event"),
              (status = 503, body = Problem, content_type = "application/problem+json", description = "the bus is unreachable")))]
async fn show(
    State(ctx): State<Arc<Context>>,
    PathParams(event_id): PathParams<String>,
) -> Result<axum::Json<Vec<DeadLetterView>>, Problem> {
    let letters = own_letters(&ctx, &DeadLetterFilter::all().event(event_id.clone())).await?;
    if letters.is_empty() {
        return Err(Problem::not_found(format!("no dead letter for event {event_id}")));
    }
    Ok(axum::Json(letters.into_iter().map(Into::into).collect()))
}

// How many dead letters a replay or discard took; the name is the published schema's.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Settled {
    pub count: usize,
}

/// Replays the selected dead letters: each is delivered to its consumer again.
#[utoipa::path(post, path = "/dead-letters/replay", operation_id = "replay_dead_letters", tag = "admin", request_body = Selection,
    responses(BodyRefused, (status = 200, body = Settled, description = "how many were replayed"),
              (status = 400, body = Problem, content_type = "application/problem+json", description = "an empty selection without `all: true`, or a body that is not JSON"),
              (status = 401, body = Problem, content_type = "application/problem+json", description = "no admin token"),
              (status = 403, body = Problem, content_type = "application/problem+json", description = "a wrong admin token"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "the body does not fit"),
              (status = 503, body = Problem, content_type = "application/problem+json", description = "the bus is unreachable")))]
async fn replay(
    State(ctx): State<Arc<Context>>,
    Body(selection): Body<Selection>,
) -> Result<axum::Json<Settled>, Problem> {
    replay_or_discard(&ctx, selection, true).await
}

/// Discards the selected dead letters for good.
#[utoipa::path(post, path = "/dead-letters/discard", operation_id = "discard_dead_letters", tag = "admin", request_body = Selection,
    responses(BodyRefused, (status = 200, body = Settled, description = "how many were discarded"),
              (status = 400, body = Problem, content_type = "application/problem+json", description = "an empty selection without `all: true`, or a body that is not JSON"),
              (status = 401, body = Problem, content_type = "application/problem+json", description = "no admin token"),
              (status = 403, body = Problem, content_type = "application/problem+json", description = "a wrong admin token"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "the body does not fit"),
              (status = 503, body = Problem, content_type = "application/problem+json", description = "the bus is unreachable")))]
async fn discard(
    State(ctx): State<Arc<Context>>,
    Body(selection): Body<Selection>,
) -> Result<axum::Json<Settled>, Problem> {
    replay_or_discard(&ctx, selection, false).await
}

/// Replays or discards the selected dead letters, one (consumer, event) at a time so that
/// only this service's consumers are touched.
async fn replay_or_discard(
    ctx: &Context,
    selection: Selection,
    replay: bool,
) -> Result<axum::Json<Settled>, Problem> {
    if selection.is_empty() && !selection.all {
        return Err(Problem::bad_request(
            "name a consumer, event_id, stream or key, or send {\"all\": true} to select every dead letter",
        ));
    }
    let mut count = 0;
    for letter in own_letters(ctx, &selection.filter()).await? {
        let one = DeadLetterFilter::all().consumer(letter.consumer).event(letter.message.id);
        let done = if replay { ctx.bus.replay(&one).await } else { ctx.bus.discard(&one).await };
        count += done.map_err(|e| Problem::unavailable(e.to_string()))?;
    }
    Ok(axum::Json(Settled { count }))
}
