//! Idempotent creates (DESIGN §1 table, §6): a client that sends a create again with the
//! same `Idempotency-Key` — after a timeout, a reset, a double click — gets the first
//! answer again and never a second effect.
//!
//! The first request claims the key (route, key, a digest of the request) before it does
//! anything; its answer is recorded under the key in the SAME transaction as its effect,
//! so an effect without its recorded answer, or the reverse, cannot exist. A retry finds
//! the answer and gets it back (`Idempotent-Replayed: true`); one that races the first
//! waits briefly for it; the same key with another request is a 422. A request that fails
//! releases its claim, so a retry runs again; a claim whose request died (a crash) is taken
//! over after [`ABANDONED`]. Keys are kept for [`RETENTION`].

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kit::store::{Migrations, StoreError, Tx};
use sha2::Digest;

pub use super::token::Written;
use super::{Context, Problem};

pub const HEADER: HeaderName = HeaderName::from_static("idempotency-key");
/// Marks an answer given again for a key seen before.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The table of claimed keys, in every service's database.
pub const MIGRATIONS: Migrations = Migrations {
    component: "idempotency",
    sqlite: &[include_str!("../../migrations/sqlite/idempotency.sql")],
    postgres: &[include_str!("../../migrations/postgres/idempotency.sql")],
};

/// How long a recorded answer is kept for retries (at least a day, as clients expect).
pub const RETENTION: Duration = Duration::from_secs(48 * 3600);
/// A claim older than this whose request never finished is taken over by a retry.
pub const ABANDONED: Duration = Duration::from_secs(30);
/// How long a retry that races the first request waits for its answer.
const RACE_WAIT: Duration = Duration::from_secs(5);

/// A key this request holds while it makes its effect.
#[derive(Debug, Clone)]
pub struct Claim {
    route: &'static str,
    key: String,
    owner: String,
}

/// What a look at the request's key decided.
pub enum Begun {
    /// Go on and make the effect; record the answer with [`Claim::complete`] if there is a key.
    Fresh(Option<Claim>),
    /// The request was answered before: send this again.
    Replay(Response),
}

/// Claims the request's `Idempotency-Key` for `route`, or finds its earlier answer.
pub async fn begin<T: serde::Serialize>(
    ctx: &Arc<Context>,
    route: &'static str,
    headers: &HeaderMap,
    request: &T,
) -> Result<Begun, Problem> {
    let Some(key) = key(headers)? else { return Ok(Begun::Fresh(None)) };
    let digest = digest(request);
    let deadline = tokio::time::Instant::now() + RACE_WAIT;
    loop {
        let (key, digest) = (key.clone(), digest.clone());
        let now = kit::clock::now_ms();
        let found = ctx.store.transact(move |tx| claim(tx, route, &key, &digest, now)).await?;
        match found {
            Found::Claimed(claim) => return Ok(Begun::Fresh(Some(claim))),
            Found::Answered(written) => {
                let mut response = written.into_response();
                response.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
                return Ok(Begun::Replay(response));
            }
            Found::OtherRequest => {
                return Err(Problem::unprocessable(
                    "this Idempotency-Key was already used with a different request; use a new key for a new request",
                ));
            }
            Found::Running if tokio::time::Instant::now() >= deadline => {
                let problem = Problem::conflict(
                    "a request with this Idempotency-Key is still running; send it again in a moment",
                );
                let mut response = problem.into_response();
                response.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from_static("1"));
                return Ok(Begun::Replay(response));
            }
            Found::Running => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

impl Claim {
    /// Records `answer` under the key, inside the transaction that makes the effect. Fails
    /// (rolling the effect back) when a retry took the key over from this request.
    pub fn complete(&self, tx: &mut Tx<'_>, answer: &Written) -> Result<(), StoreError> {
        let (status, body, token) = answer.parts();
        let body = body.to_string();
        let updated = tx.execute(
            "UPDATE idempotency_key SET status = $1, body = $2, consistency_token = $3 \
             WHERE route = $4 AND key = $5 AND owner = $6",
            &[
                u32::from(status.as_u16()).into(),
                body.as_str().into(),
                token.into(),
                self.route.into(),
                self.key.as_str().into(),
                self.owner.as_str().into(),
            ],
        )?;
        if updated == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!("idempotency key {} was taken over by a retry", self.key)))
        }
    }

    /// Gives the key up after the request failed, so a retry runs it again.
    pub async fn release(self, ctx: &Context) {
        let released = ctx
            .store
            .transact(move |tx| {
                tx.execute(
                    "DELETE FROM idempotency_key WHERE route = $1 AND key = $2 AND owner = $3 AND status = 0",
                    &[self.route.into(), self.key.as_str().into(), self.owner.as_str().into()],
                )
            })
            .await;
        if let Err(e) = released {
            // The claim then lapses after ABANDONED and a retry takes it over.
            tracing::warn!(error = %e, "cannot release an idempotency key");
        }
    }
}

/// An `Idempotency-Key` as the creates take it, for their documents: the rule of [`key`].
#[derive(utoipa::ToSchema)]
#[schema(pattern = "^[!-~]{1,255}$")]
pub struct IdempotencyKey(pub String);

/// The request's key: 1 to 255 visible ASCII characters.
fn key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get(&HEADER) else { return Ok(None) };
    let text = value
        .to_str()
        .ok()
        .filter(|t| (1..=255).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_graphic()));
    text.map(|t| Some(t.to_owned())).ok_or_else(|| {
        Problem::bad_request("the Idempotency-Key header must be 1 to 255 visible ASCII characters")
    })
}

fn digest<T: serde::Serialize>(request: &T) -> String {
    let canonical = serde_json::to_vec(request).expect("requests serialize");
    sha2::Sha256::digest(canonical).iter().map(|b| format!("{b:02x}")).collect()
}

enum Found {
    Claimed(Claim),
    Answered(Written),
    OtherRequest,
    Running,
}

fn claim(
    tx: &mut Tx<'_>,
    route: &'static str,
    key: &str,
    digest: &str,
    now: u64,
) -> Result<Found, StoreError> {
    let expired = now.saturating_sub(RETENTION.as_millis() as u64);
    tx.execute("DELETE FROM idempotency_key WHERE created_at_ms < $1", &[expired.into()])?;
    let row = tx.query_opt(
        "SELECT request_digest, status, body, consistency_token, created_at_ms FROM idempotency_key \
         WHERE route = $1 AND key = $2",
        &[route.into(), key.into()],
    )?;
    let owner = uuid::Uuid::now_v7().to_string();
    let Some(mut row) = row else {
        tx.execute(
            "INSERT INTO idempotency_key (route, key, request_digest, owner, status, created_at_ms) \
             VALUES ($1, $2, $3, $4, 0, $5)",
            &[route.into(), key.into(), digest.into(), owner.as_str().into(), now.into()],
        )?;
        return Ok(Found::Claimed(Claim { route, key: key.to_owned(), owner }));
    };
    if row.take::<String>(0)? != digest {
        return Ok(Found::OtherRequest);
    }
    let status = row.get::<u32>(1)?;
    if status != 0 {
        let body: String = row.take(2)?;
        let written = Written::stored(
            StatusCode::from_u16(status as u16).map_err(|e| StoreError::Database(e.to_string()))?,
            serde_json::from_str(&body).map_err(|e| StoreError::Database(e.to_string()))?,
            row.take(3)?,
        );
        return Ok(Found::Answered(written));
    }
    if now.saturating_sub(row.get::<u64>(4)?) < ABANDONED.as_millis() as u64 {
        return Ok(Found::Running);
    }
    // The claiming request died without an effect (its effect and answer commit together).
    tx.execute(
        "UPDATE idempotency_key SET owner = $1, created_at_ms = $2 WHERE route = $3 AND key = $4 AND status = 0",
        &[owner.as_str().into(), now.into(), route.into(), key.into()],
    )?;
    Ok(Found::Claimed(Claim { route, key: key.to_owned(), owner }))
}
