//! Signing in and out, and changing the password: the customer service issues session
//! tokens signed with its key ([`crate::service::session`]) and revokes them by event.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::WWW_AUTHENTICATE;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::http::own_customer;
use super::model::{CustomerError, Password, normalized_email};
use super::store;
use crate::service::limits::Limited;
use crate::service::session::SignInNeeded;
use crate::service::session::paseto::{self, Claims};
use crate::service::{Body, BodyRefused, Context, PathParams, Problem, SignedIn, StoreBusy};

/// How long a session token signs its customer in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    pub email: String,
    pub password: String,
}

/// A new session: send `token` as `Authorization: Bearer <token>`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SignedInAnswer {
    /// A PASETO v4.public token, signed by the customer service.
    pub token: String,
    pub customer_id: String,
    /// RFC 3339; sign in again after it.
    pub expires_at: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    pub current_password: String,
    /// 8 to 128 characters.
    #[schema(min_length = 8, max_length = 128)]
    pub new_password: String,
}

/// 401 for a wrong email or password, with the challenge RFC 9110 asks of a 401.
fn refused(e: CustomerError) -> Response {
    let mut response = Problem::from(e).into_response();
    if response.status() == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, r#"Bearer realm="capshop""#.parse().expect("a header value"));
    }
    response
}

/// Checks `password` against `hash` off the async threads (argon2 is slow on purpose).
async fn check(password: Password, hash: Option<super::model::PasswordHash>) -> Result<(), Problem> {
    let matched = tokio::task::spawn_blocking(move || password.matches(hash.as_ref()))
        .await
        .map_err(|e| Problem::internal(format!("the password could not be checked: {e}")))?;
    if matched { Ok(()) } else { Err(Problem::from(CustomerError::WrongPassword)) }
}

/// Signs in: a session token for the customer of this email and password.
#[utoipa::path(post, path = "/sessions", request_body = SignInRequest,
    responses(StoreBusy, BodyRefused, Limited, (status = 201, body = SignedInAnswer, description = "signed in"),
              (status = 401, body = Problem, content_type = "application/problem+json", description = "the email or password is wrong", headers(("WWW-Authenticate" = String, description = "Bearer realm=\"capshop\""))),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "the body does not fit")))]
pub async fn sign_in(
    State(ctx): State<Arc<Context>>,
    headers: axum::http::HeaderMap,
    Body(request): Body<SignInRequest>,
) -> Response {
    if let Err(too_many) = ctx.limiters.sign_in(&normalized_email(&request.email), &headers) {
        return too_many.into_response();
    }
    match start_session(&ctx, request).await {
        Ok(answer) => (StatusCode::CREATED, axum::Json(answer)).into_response(),
        Err(problem) if problem.status == StatusCode::UNAUTHORIZED => refused(CustomerError::WrongPassword),
        Err(problem) => problem.into_response(),
    }
}

async fn start_session(ctx: &Context, request: SignInRequest) -> Result<SignedInAnswer, Problem> {
    let email = normalized_email(&request.email);
    let found = ctx.store.transact(move |tx| store::credentials(tx, &email)).await?;
    let (id, hash) = match found {
        Some((id, hash)) => (Some(id), hash),
        None => (None, None),
    };
    // A password that cannot be one is still checked, so every refusal costs the same.
    let password = Password::parse("password", request.password).unwrap_or_else(|_| {
        Password::parse("password", "not a password at all".into()).expect("a valid stand-in")
    });
    check(password, hash).await?;
    let id = id.ok_or_else(|| Problem::from(CustomerError::WrongPassword))?;

    let now_ms = kit::clock::now_ms();
    let expires_at_ms = now_ms + SESSION_TTL.as_millis() as u64;
    let session = format!("s-{}", uuid::Uuid::now_v7().simple());
    let (outbox, customer, session_id) = (ctx.outbox.clone(), id.clone(), session.clone());
    let (kid, key) = ctx
        .store
        .transact(move |tx| {
            let key = store::signing_key(tx, &outbox, now_ms)?;
            store::open_session(tx, &session_id, &customer, expires_at_ms, now_ms)?;
            Ok::<_, CustomerError>(key)
        })
        .await?;
    let iat = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
        .map_err(|e| Problem::internal(e.to_string()))?;
    let exp = iat + SESSION_TTL;
    let token = paseto::sign(&key, &kid, &Claims { sub: id.to_string(), jti: session, iat, exp });
    let expires_at = exp
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| Problem::internal(e.to_string()))?;
    Ok(SignedInAnswer { token, customer_id: id.to_string(), expires_at })
}

/// Signs out: the session's token is refused from now on here, and by every other service
/// once the revocation has replicated to it.
#[utoipa::path(delete, path = "/sessions/current", security(("session" = [])),
    responses(StoreBusy, SignInNeeded, Limited, (status = 204, description = "signed out")))]
pub async fn sign_out(State(ctx): State<Arc<Context>>, signed_in: SignedIn) -> Result<StatusCode, Problem> {
    let (outbox, session, now_ms) =
        (ctx.outbox.clone(), signed_in.session_id().to_owned(), kit::clock::now_ms());
    ctx.store.transact(move |tx| store::end_session(tx, &outbox, &session, now_ms)).await?;
    ctx.sessions.revoke(signed_in.session_id().to_owned(), signed_in.expires_at_ms(), now_ms);
    Ok(StatusCode::NO_CONTENT)
}

/// Changes the password; every session of the customer ends (sign in again with the new one).
#[utoipa::path(put, path = "/customers/{id}/password", params(("id" = String, Path, description = "the customer, e.g. `c-ada`")),
    request_body = ChangePassword, security(("session" = [])),
    responses(StoreBusy, BodyRefused, SignInNeeded, Limited, (status = 204, description = "changed; every session of the customer is ended"),
              (status = 403, body = Problem, content_type = "application/problem+json", description = "the current password is wrong"),
              (status = 404, body = Problem, content_type = "application/problem+json", description = "no such customer (or not the signed-in one)"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "the body does not fit, or a new password that is not 8 to 128 characters")))]
pub async fn change_password(
    State(ctx): State<Arc<Context>>,
    signed_in: SignedIn,
    PathParams(id): PathParams<String>,
    Body(change): Body<ChangePassword>,
) -> Result<StatusCode, Problem> {
    let id = own_customer(&signed_in, &id)?;
    let new = Password::parse("new_password", change.new_password)?;
    let current = Password::parse("current_password", change.current_password);
    let lookup = id.clone();
    let hash = ctx.store.transact(move |tx| store::password_hash(tx, &lookup)).await?;
    let wrong = || Problem::new(StatusCode::FORBIDDEN, "the current password is wrong");
    check(current.map_err(|_| wrong())?, hash).await.map_err(|_| wrong())?;
    let hash = tokio::task::spawn_blocking(move || new.hash())
        .await
        .map_err(|e| Problem::internal(format!("the password could not be hashed: {e}")))?;
    let (outbox, now_ms) = (ctx.outbox.clone(), kit::clock::now_ms());
    let ended = ctx.store.transact(move |tx| store::change_password(tx, &outbox, &id, &hash, now_ms)).await?;
    for revoked in ended {
        ctx.sessions.revoke(revoked.session_id, revoked.expires_at_ms, now_ms);
    }
    Ok(StatusCode::NO_CONTENT)
}
