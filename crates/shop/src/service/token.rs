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
    let mut value = serde_json::to_value(body).expect("responses serialize");
    if let Some(object) = value.as_object_mut() {
        object.insert("consistency_token".into(), token.to_string().into());
    }
    (status, [header(token)], axum::Json(value)).into_response()
}
