//! `GET /admin/events`: the newest events this part published, as the bus keeps them, so
//! the dashboard can show events flow (kind, key, stream, seq, age) without a database
//! read: the outbox forgets an event once it is relayed, the bus keeps it.

use std::sync::Arc;

use axum::extract::State;
use kit::envelope::Envelope;
use serde::{Deserialize, Serialize};

use super::{Context, Problem, QueryParams};

/// The most events one request may ask for.
pub const MAX_LIMIT: usize = 500;

/// How many of the newest events to show.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Recent {
    /// 1 to 500; 50 when not given.
    pub limit: Option<usize>,
}

/// One published event as the dashboard lists it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecentEvent {
    pub event_id: String,
    pub kind: String,
    pub key: String,
    pub stream: String,
    pub seq: u64,
    /// The aggregate's version after the change.
    pub version: u64,
    /// When it occurred, in milliseconds since the Unix epoch.
    pub occurred_at_ms: u64,
}

impl From<Envelope> for RecentEvent {
    fn from(e: Envelope) -> Self {
        Self {
            event_id: e.id.to_string(),
            occurred_at_ms: e.occurred_at_ms(),
            kind: e.kind,
            key: e.key,
            stream: e.stream.to_string(),
            seq: e.seq,
            version: e.version,
        }
    }
}

/// The newest events this service (or inventory site) published, newest first.
#[utoipa::path(get, path = "/events", operation_id = "recent_events", tag = "admin", params(Recent),
    responses((status = 200, body = [RecentEvent]),
              (status = 400, body = Problem, content_type = "application/problem+json", description = "a limit outside 1 to 500"),
              (status = 401, body = Problem, content_type = "application/problem+json", description = "no admin token"),
              (status = 403, body = Problem, content_type = "application/problem+json", description = "a wrong admin token"),
              (status = 503, body = Problem, content_type = "application/problem+json", description = "the bus is unreachable")))]
pub(super) async fn recent(
    State(ctx): State<Arc<Context>>,
    QueryParams(recent): QueryParams<Recent>,
) -> Result<axum::Json<Vec<RecentEvent>>, Problem> {
    let limit = recent.limit.unwrap_or(50);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Problem::bad_request(format!("limit must be between 1 and {MAX_LIMIT}, not {limit}")));
    }
    let stream = ctx.outbox.stream().as_str();
    let messages = ctx.bus.recent(stream, limit).await.map_err(|e| Problem::unavailable(e.to_string()))?;
    // Every message on a service's stream is an envelope its outbox wrote.
    let events = messages
        .iter()
        .filter_map(|m| serde_json::from_slice::<Envelope>(&m.body).ok())
        .map(RecentEvent::from)
        .collect();
    Ok(axum::Json(events))
}
