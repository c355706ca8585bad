//! `/admin/pause` on every service process of the distributed mode: the process's
//! [`Pause`] held for a backup run elsewhere (the gateway, docs/BACKUP.md). `POST` answers
//! once the pause is held (every passage under way has ended), with a hold id;
//! `DELETE /admin/pause/{id}` releases it. A hold ends by itself after [`BOUND`], so a
//! backup that died never stops a shop; releasing it then answers 410, and the backup that
//! asked knows its cut is not one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use kit::pause::Pause;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::service::Problem;

/// The longest a hold lasts without being released.
pub const BOUND: Duration = Duration::from_secs(2);
/// The longest `POST` waits for the passages under way before it gives up.
const WAIT: Duration = Duration::from_secs(5);

/// A hold taken: its id, and how long it waited for the passages under way.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HoldTaken {
    pub hold: u64,
    pub waited_ms: f64,
    pub bound_ms: f64,
}

/// A hold released: how long passages were kept waiting.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HoldReleased {
    pub held_ms: f64,
}

struct Holds {
    pause: Pause,
    token: String,
    next: AtomicU64,
    /// The holds in force, each released by sending it a channel for how long it held.
    held: Mutex<HashMap<u64, oneshot::Sender<oneshot::Sender<Duration>>>>,
}

/// The routes, holding `pause` (the process's) for callers with `token`.
pub fn router(pause: Pause, token: String) -> Router {
    let holds = Arc::new(Holds { pause, token, next: AtomicU64::new(1), held: Mutex::default() });
    Router::new()
        .route("/admin/pause", post(hold))
        .route("/admin/pause/{id}", delete(release))
        .with_state(holds)
}

/// Holds the process's pause; answers once it is held.
#[utoipa::path(post, path = "/admin/pause", operation_id = "hold_pause", tag = "admin",
    responses((status = 200, body = HoldTaken, description = "held, until released or for at most bound_ms"),
              (status = 401, body = Problem, content_type = "application/problem+json", description = "no admin token"),
              (status = 403, body = Problem, content_type = "application/problem+json", description = "a wrong admin token"),
              (status = 503, body = Problem, content_type = "application/problem+json", description = "the passages under way did not end in time")))]
async fn hold(State(holds): State<Arc<Holds>>, headers: HeaderMap) -> Response {
    if let Err(problem) = crate::service::admin::check_bearer(&headers, &holds.token) {
        return problem.into_response();
    }
    let Ok(held) = tokio::time::timeout(WAIT, holds.pause.hold()).await else {
        return Problem::unavailable(format!(
            "the work under way did not end within {WAIT:?}; try the backup again"
        ))
        .into_response();
    };
    let id = holds.next.fetch_add(1, Ordering::Relaxed);
    let (release, released) = oneshot::channel::<oneshot::Sender<Duration>>();
    holds.held.lock().unwrap_or_else(PoisonError::into_inner).insert(id, release);
    let waited_ms = held.waited.as_secs_f64() * 1e3;
    let owner = holds.clone();
    tokio::spawn(async move {
        let answer = tokio::time::timeout(BOUND, released).await;
        let held_for = held.held_for();
        drop(held);
        match answer {
            Ok(Ok(reply)) => {
                let _ = reply.send(held_for);
            }
            // Not released in time (or the route went away): it ends by itself.
            _ => {
                owner.held.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
            }
        }
    });
    axum::Json(HoldTaken { hold: id, waited_ms, bound_ms: BOUND.as_secs_f64() * 1e3 }).into_response()
}

/// Releases a hold.
#[utoipa::path(delete, path = "/admin/pause/{id}", operation_id = "release_pause", tag = "admin",
    params(("id" = u64, Path, description = "the hold's id")),
    responses((status = 200, body = HoldReleased, description = "released"),
              (status = 401, body = Problem, content_type = "application/problem+json", description = "no admin token"),
              (status = 403, body = Problem, content_type = "application/problem+json", description = "a wrong admin token"),
              (status = 410, body = Problem, content_type = "application/problem+json", description = "no such hold: it ended by itself, or was released")))]
async fn release(State(holds): State<Arc<Holds>>, headers: HeaderMap, Path(id): Path<u64>) -> Response {
    if let Err(problem) = crate::service::admin::check_bearer(&headers, &holds.token) {
        return problem.into_response();
    }
    let release = holds.held.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
    let gone = || {
        Problem::new(
            StatusCode::GONE,
            format!("no hold {id}: it ended by itself after {BOUND:?}, or was released; a cut that needed it must be taken again"),
        )
        .into_response()
    };
    let Some(release) = release else { return gone() };
    let (reply, held_for) = oneshot::channel();
    if release.send(reply).is_err() {
        return gone();
    }
    match held_for.await {
        Ok(held) => axum::Json(HoldReleased { held_ms: held.as_secs_f64() * 1e3 }).into_response(),
        Err(_) => gone(),
    }
}
