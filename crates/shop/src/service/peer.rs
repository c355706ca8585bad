//! Synchronous calls to another service: every one passes the caller's [`Link`] to that
//! service (for fault injection) and a [`CircuitBreaker`] with a call timeout, so an
//! unreachable peer costs a caller nothing once its breaker is open.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Method, Request, StatusCode, header};
use kit::breaker::{BreakerConfig, BreakerError, CircuitBreaker};
use kit::link::{Direction, Link};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::local;

/// Why a call to a peer gave no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    /// The peer could not be reached, timed out, failed, or its breaker is open.
    #[error("{peer} is unavailable: {reason}")]
    Unavailable { peer: String, reason: String },
    /// The peer answered and refused (a 4xx): the request itself is wrong.
    #[error("{peer} refused the request ({status}): {detail}")]
    Refused { peer: String, status: u16, detail: String },
}

impl PeerError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, PeerError::Unavailable { .. })
    }
}

/// A client of one peer service.
#[derive(Clone)]
pub struct Peer {
    name: String,
    base_url: String,
    /// Where `base_url` connects: a service of this process there is called directly.
    addr: Option<std::net::SocketAddr>,
    client: reqwest::Client,
    breaker: CircuitBreaker,
    link: Link,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("name", &self.name).field("base_url", &self.base_url).finish()
    }
}

/// The default breaker of a synchronous call: open after 5 failures in a row, probe after
/// 2 s, and give a call 1 s.
pub fn default_breaker() -> BreakerConfig {
    BreakerConfig {
        failure_threshold: 5,
        open_for: Duration::from_secs(2),
        call_timeout: Duration::from_secs(1),
    }
}

impl Peer {
    /// A client of `name` at `base_url` (e.g. `http://127.0.0.1:4101`), behind `link`.
    pub fn new(name: &str, base_url: &str, link: Link, breaker: BreakerConfig) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("an http client builds");
        Self {
            name: name.to_owned(),
            addr: local::address_of(base_url),
            base_url: base_url.trim_end_matches('/').to_owned(),
            client,
            breaker: CircuitBreaker::new(name, breaker),
            link,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    pub fn link(&self) -> &Link {
        &self.link
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, PeerError> {
        self.call(Method::GET, path, None, None).await
    }

    /// A GET on behalf of a signed-in shopper: their session token goes along.
    pub async fn get_as<T: DeserializeOwned>(&self, path: &str, bearer: &str) -> Result<T, PeerError> {
        self.call(Method::GET, path, Some(bearer), None).await
    }

    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, PeerError> {
        self.call(Method::POST, path, None, Some(self.encode(body)?)).await
    }

    /// A PUT handed on for the caller whose `bearer` token goes along (an admin's write
    /// that one service passes to the one that must make it).
    pub async fn put_as<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        bearer: &str,
    ) -> Result<T, PeerError> {
        self.call(Method::PUT, path, Some(bearer), Some(self.encode(body)?)).await
    }

    fn encode<B: Serialize + ?Sized>(&self, body: &B) -> Result<Bytes, PeerError> {
        serde_json::to_vec(body)
            .map(Bytes::from)
            .map_err(|e| self.unavailable(format!("unsendable request: {e}")))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Bytes>,
    ) -> Result<T, PeerError> {
        let exchange = async {
            self.link.pass(Direction::Out).await.map_err(|e| self.unavailable(e))?;
            let (status, body) = self.exchange(method, path, bearer, body).await?;
            self.link.pass(Direction::In).await.map_err(|e| self.unavailable(e))?;
            if status.is_success() {
                return serde_json::from_slice(&body)
                    .map_err(|e| self.unavailable(format!("unreadable answer: {e}")));
            }
            let detail = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["detail"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            if status.is_client_error() {
                Err(PeerError::Refused { peer: self.name.clone(), status: status.as_u16(), detail })
            } else {
                Err(self.unavailable(format!("{status}: {detail}")))
            }
        };
        self.breaker.call_with(exchange, PeerError::is_retryable).await.map_err(|e| match e {
            BreakerError::Inner(inner) => inner,
            other => self.unavailable(other),
        })
    }

    /// Sends one request and reads its answer: to the peer's router directly when it
    /// serves in this process ([`local`]), else over HTTP.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), PeerError> {
        let bearer = bearer.map(|token| format!("Bearer {token}"));
        if let Some(addr) = self.addr {
            let mut request = Request::builder().method(method.clone()).uri(path);
            if let Some(bearer) = &bearer {
                request = request.header(header::AUTHORIZATION, bearer);
            }
            if body.is_some() {
                request = request.header(header::CONTENT_TYPE, "application/json");
            }
            let request = request
                .body(body.clone().map_or_else(axum::body::Body::empty, axum::body::Body::from))
                .map_err(|e| self.unavailable(e))?;
            if let Some(answer) = local::call(addr, request).await {
                return Ok((answer.status, answer.body.map_err(|e| self.unavailable(e))?));
            }
        }
        let mut request = self.client.request(method, self.url(path));
        if let Some(bearer) = bearer {
            request = request.header(header::AUTHORIZATION, bearer);
        }
        if let Some(body) = body {
            request = request.header(header::CONTENT_TYPE, "application/json").body(body);
        }
        let response = request.send().await.map_err(|e| self.unavailable(e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.unavailable(e))?;
        Ok((status, body))
    }

    fn unavailable(&self, reason: impl std::fmt::Display) -> PeerError {
        PeerError::Unavailable { peer: self.name.clone(), reason: reason.to_string() }
    }
}

impl From<PeerError> for super::problem::Problem {
    fn from(e: PeerError) -> Self {
        match &e {
            PeerError::Unavailable { .. } => super::problem::Problem::unavailable(e.to_string()),
            PeerError::Refused { status, .. } => super::problem::Problem::new(
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
                e.to_string(),
            ),
        }
    }
}
