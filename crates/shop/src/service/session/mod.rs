//! A shopper's sign-in, checked by every service on its own (DESIGN §1 table: available).
//!
//! The customer service signs each session token with its Ed25519 key ([`paseto`]) and
//! publishes the public key and every revocation on its stream; each service that serves
//! customer-scoped routes replicates both ([`replica`]) into its own database and into
//! [`Sessions`], so it verifies a token with no call to the customer service — also while
//! that is down. The price: a revoked token still passes a replica until the revocation
//! reaches it (the replication lag). A token's signature is checked once per process and
//! remembered; its expiry and revocation are judged on every request.
//!
//! [`SignedIn`] is the one place a route learns who is signed in: an axum extractor that
//! answers 401 problem+json with `WWW-Authenticate` when the token is missing, malformed,
//! signed by an unknown key, expired or revoked. [`SignedIn::owns`] turns another
//! customer's resource into a 404, so existence is not revealed.

pub mod paseto;
pub mod replica;

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ed25519_dalek::VerifyingKey;
use kit::store::{Store, StoreError};

pub use replica::{MIGRATIONS, SessionReplica, refresh_every, replicate};

use super::{Context, Problem};

/// What this service knows of sign-in: the signing keys and the revoked sessions.
#[derive(Clone, Default)]
pub struct Sessions(Arc<RwLock<Known>>);

#[derive(Default)]
struct Known {
    keys: HashMap<String, VerifyingKey>,
    /// Revoked session ids, with the time their token expires anyway.
    revoked: HashMap<String, u64>,
    /// Tokens whose signature this process has checked, with what they say (at most
    /// [`CHECKED_MAX`]).
    checked: HashMap<String, Checked>,
}

/// How many checked tokens a process remembers; past it, it forgets them all and checks
/// each again once. A token is signed once and shown on every request of its session, and
/// an Ed25519 check costs tens of µs, so each is checked once; its expiry and revocation
/// are still judged on every request.
const CHECKED_MAX: usize = 10_000;

/// What a token with a good signature says.
#[derive(Debug, Clone)]
struct Checked {
    customer_id: String,
    session_id: String,
    expires_at_ms: u64,
}

impl Sessions {
    /// What the service's database holds, replicated before this start.
    pub async fn load(store: &Store) -> Result<Self, StoreError> {
        let sessions = Self::default();
        sessions.refresh(store).await?;
        Ok(sessions)
    }

    /// Learns what the database holds now: with several instances of a service, another
    /// instance's consumer may have applied a key or a revocation this one has not seen.
    pub async fn refresh(&self, store: &Store) -> Result<(), StoreError> {
        let now = kit::clock::now_ms();
        let (keys, revoked) = store.transact(move |tx| replica::known(tx, now)).await?;
        for (kid, key) in keys {
            self.learn_key(kid, key);
        }
        for (session, expires_at_ms) in revoked {
            self.revoke(session, expires_at_ms, now);
        }
        Ok(())
    }

    /// Like [`Sessions::verify`], but a token signed with a key this process does not know
    /// yet is checked again after reading the keys from the database.
    pub async fn verify_on(&self, store: &Store, token: &str, now_ms: u64) -> Result<SignedIn, Refusal> {
        let known = |kid: &str| self.0.read().unwrap_or_else(PoisonError::into_inner).keys.contains_key(kid);
        if let Ok(kid) = paseto::kid(token)
            && !known(&kid)
            && let Err(e) = self.refresh(store).await
        {
            tracing::warn!(error = %e, "cannot read the signing keys");
        }
        self.verify(token, now_ms)
    }

    pub fn learn_key(&self, kid: String, key: VerifyingKey) {
        self.0.write().unwrap_or_else(PoisonError::into_inner).keys.insert(kid, key);
    }

    /// Refuses `session` from now on; revocations of tokens expired by `now_ms` are dropped.
    pub fn revoke(&self, session: String, expires_at_ms: u64, now_ms: u64) {
        let mut known = self.0.write().unwrap_or_else(PoisonError::into_inner);
        known.revoked.retain(|_, expires| *expires > now_ms);
        if expires_at_ms > now_ms {
            known.revoked.insert(session, expires_at_ms);
        }
    }

    /// Who `token` signs in at `now_ms`, or why it does not.
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<SignedIn, Refusal> {
        let checked = self.signature_checked(token)?;
        if checked.expires_at_ms <= now_ms {
            return Err(Refusal::Invalid("the token has expired: sign in again".into()));
        }
        let known = self.0.read().unwrap_or_else(PoisonError::into_inner);
        if known.revoked.contains_key(&checked.session_id) {
            return Err(Refusal::Invalid("the session was ended (signed out or password changed)".into()));
        }
        Ok(SignedIn {
            customer_id: checked.customer_id,
            session_id: checked.session_id,
            expires_at_ms: checked.expires_at_ms,
            token: token.to_owned(),
        })
    }

    /// What `token` says, once its signature is good: remembered from an earlier check of
    /// the same token, or checked now with the key it names.
    fn signature_checked(&self, token: &str) -> Result<Checked, Refusal> {
        if let Some(checked) = self.0.read().unwrap_or_else(PoisonError::into_inner).checked.get(token) {
            return Ok(checked.clone());
        }
        let kid = paseto::kid(token).map_err(|e| Refusal::Invalid(e.to_string()))?;
        let key = self.0.read().unwrap_or_else(PoisonError::into_inner).keys.get(&kid).copied();
        let key = key.ok_or_else(|| Refusal::Invalid(paseto::TokenError::UnknownKey(kid).to_string()))?;
        let claims = paseto::verify(&key, token).map_err(|e| Refusal::Invalid(e.to_string()))?;
        let checked = Checked {
            customer_id: claims.sub,
            session_id: claims.jti,
            expires_at_ms: u64::try_from(claims.exp.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
        };
        let mut known = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if known.checked.len() >= CHECKED_MAX {
            known.checked.clear();
        }
        known.checked.insert(token.to_owned(), checked.clone());
        Ok(checked)
    }
}

/// A request's verified session token: which customer it is.
#[derive(Debug, Clone)]
pub struct SignedIn {
    customer_id: String,
    session_id: String,
    expires_at_ms: u64,
    token: String,
}

impl SignedIn {
    pub fn customer_id(&self) -> &str {
        &self.customer_id
    }

    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    pub fn expires_at_ms(&self) -> u64 {
        self.expires_at_ms
    }

    /// The token as presented, for a call made on the shopper's behalf.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Passes when the resource belongs to this customer; otherwise the 404 `missing`
    /// describes, as for a resource that does not exist.
    pub fn owns(&self, customer_id: &str, missing: impl FnOnce() -> String) -> Result<(), Problem> {
        if self.customer_id == customer_id { Ok(()) } else { Err(Problem::not_found(missing())) }
    }
}

/// Why a request is not signed in: answered 401 with `WWW-Authenticate: Bearer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Invalid(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (detail, challenge) = match self {
            Refusal::Missing => (
                "sign in first: POST /api/customer/sessions with your email and password, then send Authorization: Bearer <token>".to_owned(),
                r#"Bearer realm="capshop""#.to_owned(),
            ),
            Refusal::Invalid(reason) => {
                let challenge = format!(r#"Bearer realm="capshop", error="invalid_token", error_description="{}""#, reason.replace('"', "'"));
                (format!("the session token is not accepted: {reason}"), challenge)
            }
        };
        let mut response = Problem::new(StatusCode::UNAUTHORIZED, detail).into_response();
        let challenge = HeaderValue::from_str(&challenge)
            .unwrap_or_else(|_| HeaderValue::from_static(r#"Bearer realm="capshop""#));
        response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
        response
    }
}

/// The bearer token of a request: `None` without an Authorization header.
fn bearer(parts: &Parts) -> Result<Option<&str>, Refusal> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else { return Ok(None) };
    let text = value.to_str().map_err(|_| Refusal::Invalid("the Authorization header is not text".into()))?;
    let token = text
        .strip_prefix("Bearer ")
        .ok_or_else(|| Refusal::Invalid("send Authorization: Bearer <session token>".into()))?;
    Ok(Some(token.trim()))
}

/// A shopper's request: signed in, and (for a write) within the customer's write limit.
impl FromRequestParts<Arc<Context>> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, ctx: &Arc<Context>) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).map_err(IntoResponse::into_response)?;
        let token = token.ok_or(Refusal::Missing).map_err(IntoResponse::into_response)?;
        let signed_in = ctx
            .sessions
            .verify_on(&ctx.store, token, kit::clock::now_ms())
            .await
            .map_err(IntoResponse::into_response)?;
        if !parts.method.is_safe() {
            ctx.limiters.write(&signed_in.customer_id).map_err(IntoResponse::into_response)?;
        }
        Ok(signed_in)
    }
}

/// A route open to anyone that shows a signed-in shopper more (search over their orders).
impl OptionalFromRequestParts<Arc<Context>> for SignedIn {
    type Rejection = Refusal;

    async fn from_request_parts(
        parts: &mut Parts,
        ctx: &Arc<Context>,
    ) -> Result<Option<Self>, Self::Rejection> {
        match bearer(parts)? {
            None => Ok(None),
            Some(token) => ctx.sessions.verify_on(&ctx.store, token, kit::clock::now_ms()).await.map(Some),
        }
    }
}

/// The answer of [`SignedIn`] when it refuses a request, for a handler's `responses(...)`.
#[derive(utoipa::IntoResponses)]
pub enum SignInNeeded {
    #[response(
        status = 401,
        description = "no session token, or one that is malformed, expired, revoked or signed by an unknown key (with WWW-Authenticate: Bearer)",
        content_type = "application/problem+json",
        headers(("WWW-Authenticate" = String, description = "Bearer realm=\"capshop\", with error=\"invalid_token\" for a token not accepted"))
    )]
    Unauthorized(Problem),
}

#[cfg(test)]
mod tests;
