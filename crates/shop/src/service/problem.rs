//! Errors as `application/problem+json` (RFC 9457), and the extractors that turn bad
//! requests into them, so every service answers bad input the same clear way.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A problem report: what went wrong, for a person reading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem; `about:blank` when the title says it all.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    #[schema(value_type = u16)]
    #[serde(serialize_with = "status_code")]
    pub status: StatusCode,
    pub detail: String,
}

fn status_code<S: serde::Serializer>(status: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u16(status.as_u16())
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status,
            detail: detail.into(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, detail)
    }

    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
    }

    /// A dependency the operation needs to stay consistent is unreachable: refuse clearly.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, detail)
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, detail)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.title, self.detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), detail = %self.detail, "request failed");
        }
        let body = serde_json::to_vec(&self).expect("a problem serializes");
        (self.status, [(axum::http::header::CONTENT_TYPE, "application/problem+json")], body).into_response()
    }
}

impl From<kit::store::StoreError> for Problem {
    fn from(e: kit::store::StoreError) -> Self {
        if e.is_unavailable() {
            // Refused, lost, or no answer within the store's call bound: answered at once.
            Problem::unavailable(format!("the database is unavailable, try again shortly: {e}"))
        } else if e.is_retryable() {
            Problem::unavailable(format!("the database is busy, try again: {e}"))
        } else {
            Problem::internal(e.to_string())
        }
    }
}

/// The answer of a handler whose database is busy (a retryable [`kit::store::StoreError`]),
/// for a handler's `responses(...)`: try again.
#[derive(utoipa::IntoResponses)]
pub enum StoreBusy {
    #[response(
        status = 503,
        description = "the database is busy, try again",
        content_type = "application/problem+json"
    )]
    Busy(Problem),
}

/// A JSON request body; malformed or ill-typed JSON becomes a 400/415/413 problem.
///
/// A number with a zero fraction (`59.0`) is read as the integer it is: JSON Schema
/// calls it an integer, so every integer field of the contracts takes it, here, once.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(mut json) =
            axum::Json::<serde_json::Value>::from_request(req, state).await.map_err(json_problem)?;
        integral_numbers_as_integers(&mut json);
        let bytes = serde_json::to_vec(&json).map_err(|e| Problem::internal(e.to_string()))?;
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(json_problem(rejection)),
        }
    }
}

/// Replaces every float with a zero fraction that fits an i64 or u64 by that integer.
fn integral_numbers_as_integers(json: &mut serde_json::Value) {
    use serde_json::Value;
    match json {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // 2^64 and -2^63: the ends of u64 and i64, exact as f64.
            if f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                *json = Value::from(f as u64);
            } else if f.fract() == 0.0 && (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
                *json = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(integral_numbers_as_integers),
        _ => {}
    }
}

/// The answers of [`Body`] when it refuses a request body before the handler runs, for a
/// handler's `responses(...)`; a body of the wrong shape (422) each handler documents
/// itself, beside its own checks.
#[derive(utoipa::IntoResponses)]
pub enum BodyRefused {
    #[response(
        status = 400,
        description = "the body is not valid JSON",
        content_type = "application/problem+json"
    )]
    NotJson(Problem),
    #[response(
        status = 413,
        description = "the body is larger than this service accepts",
        content_type = "application/problem+json"
    )]
    TooLarge(Problem),
    #[response(
        status = 415,
        description = "the body was not sent as `Content-Type: application/json`",
        content_type = "application/problem+json"
    )]
    NotSentAsJson(Problem),
}

fn json_problem(rejection: JsonRejection) -> Problem {
    let status = rejection.status();
    let detail = match &rejection {
        JsonRejection::JsonDataError(e) => format!("the body does not fit: {}", source_text(e)),
        JsonRejection::JsonSyntaxError(e) => format!("the body is not valid JSON: {}", source_text(e)),
        JsonRejection::MissingJsonContentType(_) => {
            "send the body as JSON with Content-Type: application/json".into()
        }
        JsonRejection::BytesRejection(_) if status == StatusCode::PAYLOAD_TOO_LARGE => {
            "the body is larger than this service accepts".into()
        }
        other => other.body_text(),
    };
    Problem::new(status, detail)
}

fn source_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text = inner.to_string();
        source = inner.source();
    }
    text
}

/// Path parameters; a mismatch becomes a 400 problem.
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| PathParams(value))
            .map_err(|e: PathRejection| Problem::bad_request(format!("bad path: {}", e.body_text())))
    }
}

/// Query parameters; a mismatch becomes a 400 problem.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for QueryParams<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| QueryParams(value))
            .map_err(|e: QueryRejection| Problem::bad_request(format!("bad query: {}", e.body_text())))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use kit::store::StoreError;

    use super::Problem;

    #[test]
    fn a_database_that_is_unavailable_or_busy_is_a_503_and_any_other_store_error_a_500() {
        let unavailable = Problem::from(StoreError::Unavailable("no answer within 5s".into()));
        assert_eq!(unavailable.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(unavailable.detail.contains("try again"), "{}", unavailable.detail);
        let conflict = Problem::from(StoreError::Conflict("40001".into()));
        assert_eq!(conflict.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(Problem::from(StoreError::NoRow).status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn a_float_with_a_zero_fraction_is_read_as_the_integer_json_schema_says_it_is() {
        let mut json =
            serde_json::json!({"quantity": 59.0, "lines": [{"n": -3.0}], "price": 1.5, "big": 1e300});
        super::integral_numbers_as_integers(&mut json);
        assert_eq!(
            json,
            serde_json::json!({"quantity": 59, "lines": [{"n": -3}], "price": 1.5, "big": 1e300})
        );
        assert!(json["quantity"].is_u64() && json["lines"][0]["n"].is_i64());
    }
}
