//! The `Consistency-Token` header: writes answer with it, reads may send it back.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use kit::token::ConsistencyToken;

use super::Problem;

pub const HEADER: HeaderName = HeaderName::from_static("consistency-token");

/// The token a request carries, if any; a malformed one is a 400.
pub fn from_headers(headers: &HeaderMap) -> Result<Option<ConsistencyToken>, Problem> {
    let Some(value) = headers.get(&HEADER) else { return Ok(None) };
    let text =
        value.to_str().map_err(|_| Problem::bad_request("the Consistency-Token header is not text"))?;
    text.parse().map(Some).map_err(|e| Problem::bad_request(format!("bad Consistency-Token header: {e}")))
}

/// The header to answer a write with.
pub fn header(token: &ConsistencyToken) -> (HeaderName, HeaderValue) {
    (HEADER, HeaderValue::from_str(&token.to_string()).expect("tokens are header-safe text"))
}

/// Answers a write: `body` with `consistency_token` added, and the header.
pub fn written<T: serde::Serialize>(
    status: axum::http::StatusCode,
    body: &T,
    token: &ConsistencyToken,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    Written::new(status, body, token).into_response()
}

/// The answer of a write: its status, the JSON body with `consistency_token` added, and
/// the header. The same value answers a create and every idempotent replay of it.
#[derive(Debug, Clone)]
pub struct Written {
    status: axum::http::StatusCode,
    body: serde_json::Value,
    token: String,
}

impl Written {
    pub fn new<T: serde::Serialize>(
        status: axum::http::StatusCode,
        body: &T,
        token: &ConsistencyToken,
    ) -> Self {
        let mut body = serde_json::to_value(body).expect("responses serialize");
        if let Some(object) = body.as_object_mut() {
            object.insert("consistency_token".into(), token.to_string().into());
        }
        Self { status, body, token: token.to_string() }
    }

    /// An answer read back from where it was recorded.
    pub fn stored(status: axum::http::StatusCode, body: serde_json::Value, token: String) -> Self {
        Self { status, body, token }
    }

    pub fn parts(&self) -> (axum::http::StatusCode, &serde_json::Value, &str) {
        (self.status, &self.body, &self.token)
    }
}

impl axum::response::IntoResponse for Written {
    fn into_response(self) -> axum::response::Response {
        let header = HeaderValue::from_str(&self.token).expect("tokens are header-safe text");
        (self.status, [(HEADER, header)], axum::Json(self.body)).into_response()
    }
}
