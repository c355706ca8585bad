//! Resource limits (OWASP API4): sign-in attempts per email and per client address, and
//! writes per signed-in customer, each a keyed GCRA limiter (`governor`) in the memory of
//! the service that answers. Over a limit the answer is 429 problem+json with Retry-After.
//!
//! The limits are per process: several instances of a service each allow the quota, and a
//! restart forgets the counts. That is the availability choice again; a shared store for
//! counts would make every sign-in depend on it.

use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
pub use governor::Quota;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, RateLimiter};

use super::Problem;

/// The quotas, part of a service's [`super::Choices`]; `None` turns one off.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub sign_ins_per_email: Option<Quota>,
    pub sign_ins_per_address: Option<Quota>,
    pub writes_per_customer: Option<Quota>,
}

/// `n` a minute, all of them at once if need be.
pub fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).expect("a quota is not zero"))
}

impl Default for Limits {
    /// 5 sign-in attempts a minute per email, 30 per client address, and 20 writes a
    /// second per customer with bursts of 100.
    fn default() -> Self {
        let writes = Quota::per_second(NonZeroU32::new(20).expect("20"))
            .allow_burst(NonZeroU32::new(100).expect("100"));
        Self {
            sign_ins_per_email: Some(per_minute(5)),
            sign_ins_per_address: Some(per_minute(30)),
            writes_per_customer: Some(writes),
        }
    }
}

impl Limits {
    /// No limit at all: for the bench and the lab, whose load is the point.
    pub fn off() -> Self {
        Self { sign_ins_per_email: None, sign_ins_per_address: None, writes_per_customer: None }
    }
}

/// Keys kept before the limiters forget the ones back at full quota.
const KEYS_KEPT: usize = 10_000;

/// One keyed limiter, or none.
struct Keyed(Option<DefaultKeyedRateLimiter<String>>);

impl Keyed {
    fn new(quota: Option<Quota>) -> Self {
        Self(quota.map(RateLimiter::keyed))
    }

    fn check(&self, key: &str, what: &'static str) -> Result<(), TooMany> {
        let Some(limiter) = &self.0 else { return Ok(()) };
        if limiter.len() > KEYS_KEPT {
            limiter.retain_recent();
        }
        limiter.check_key(&key.to_owned()).map_err(|not_until| TooMany {
            what,
            retry_after: not_until.wait_time_from(DefaultClock::default().now()),
        })
    }
}

/// The limiters of one service.
pub struct Limiters {
    sign_ins_per_email: Keyed,
    sign_ins_per_address: Keyed,
    writes_per_customer: Keyed,
}

impl Limiters {
    pub fn new(limits: &Limits) -> Self {
        Self {
            sign_ins_per_email: Keyed::new(limits.sign_ins_per_email),
            sign_ins_per_address: Keyed::new(limits.sign_ins_per_address),
            writes_per_customer: Keyed::new(limits.writes_per_customer),
        }
    }

    /// Counts a sign-in attempt for `email` from the client of `headers`.
    pub fn sign_in(&self, email: &str, headers: &HeaderMap) -> Result<(), TooMany> {
        self.sign_ins_per_address.check(&client_address(headers), "sign-in attempts from this address")?;
        self.sign_ins_per_email.check(email, "sign-in attempts for this email")
    }

    /// Counts a write of `customer`.
    pub fn write(&self, customer: &str) -> Result<(), TooMany> {
        self.writes_per_customer.check(customer, "writes of this customer")
    }
}

/// The client's address as the gateway saw it (it sets `X-Forwarded-For`); requests that
/// reach a service directly share one count.
pub fn client_address(headers: &HeaderMap) -> String {
    headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "direct".to_owned())
}

/// Over a limit: 429 with `Retry-After` in whole seconds (at least 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooMany {
    what: &'static str,
    retry_after: Duration,
}

impl IntoResponse for TooMany {
    fn into_response(self) -> Response {
        let seconds = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        let seconds = seconds.max(1);
        let detail = format!("too many {}: try again in {seconds} s", self.what);
        let mut response = Problem::new(StatusCode::TOO_MANY_REQUESTS, detail).into_response();
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(seconds));
        response
    }
}

/// The answer of a limited route over its limit, for a handler's `responses(...)`.
#[derive(utoipa::IntoResponses)]
pub enum Limited {
    #[response(
        status = 429,
        description = "over a limit (sign-in attempts per email or address, writes per customer); try again after Retry-After",
        content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "seconds to wait"))
    )]
    TooMany(Problem),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_refuses_past_its_burst_with_a_retry_after_and_keys_count_apart() {
        let limiters = Limiters::new(&Limits { sign_ins_per_email: Some(per_minute(2)), ..Limits::off() });
        let headers = HeaderMap::new();
        assert!(limiters.sign_in("ada@example.com", &headers).is_ok());
        assert!(limiters.sign_in("ada@example.com", &headers).is_ok());
        let refused = limiters.sign_in("ada@example.com", &headers).unwrap_err();
        assert!(limiters.sign_in("bob@example.com", &headers).is_ok(), "another email has its own quota");
        let response = refused.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let seconds: u64 = response.headers()[RETRY_AFTER].to_str().unwrap().parse().unwrap();
        assert!((1..=30).contains(&seconds), "{seconds}");
        assert!(Limiters::new(&Limits::off()).write("c-ada").is_ok());
    }

    #[test]
    fn the_client_address_is_the_first_forwarded_one() {
        let mut headers = HeaderMap::new();
        assert_eq!(client_address(&headers), "direct");
        headers.insert("x-forwarded-for", "203.0.113.7, 10.0.0.1".parse().unwrap());
        assert_eq!(client_address(&headers), "203.0.113.7");
    }
}
