//! The load generator every HTTP figure uses: `connections` loops, each sending its next
//! request as soon as the previous one answered, for a fixed span; each attempt's latency
//! and outcome is kept.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// What a load run saw.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Latency of every successful attempt, in microseconds.
    pub latencies_us: Vec<u64>,
    pub errors: u64,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn attempts(&self) -> u64 {
        self.latencies_us.len() as u64 + self.errors
    }

    /// Attempts answered per second, failures included.
    pub fn requests_per_s(&self) -> f64 {
        self.attempts() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Adds what another run of the same load saw (one of several segments).
    pub fn absorb(&mut self, other: Outcome) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        self.elapsed += other.elapsed;
    }

    pub fn error_ratio(&self) -> Option<f64> {
        (self.attempts() > 0).then(|| self.errors as f64 / self.attempts() as f64)
    }
}

/// Runs `attempt(connection, n)` in `connections` closed loops for `span`; an attempt
/// answers whether it succeeded.
pub async fn drive<F, Fut>(connections: usize, span: Duration, attempt: F) -> Outcome
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let started = Instant::now();
    let deadline = started + span;
    let mut loops = tokio::task::JoinSet::new();
    for connection in 0..connections {
        let attempt = attempt.clone();
        loops.spawn(async move {
            let mut seen = Outcome::default();
            let mut n = 0;
            while Instant::now() < deadline {
                let sent = Instant::now();
                if attempt(connection, n).await {
                    seen.latencies_us.push(sent.elapsed().as_micros() as u64);
                } else {
                    seen.errors += 1;
                }
                n += 1;
            }
            seen
        });
    }
    let mut total = Outcome::default();
    while let Some(joined) = loops.join_next().await {
        if let Ok(seen) = joined {
            total.latencies_us.extend(seen.latencies_us);
            total.errors += seen.errors;
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// A client for the load: one pooled connection per loop, no proxy, a generous timeout
/// (a slow answer is a latency, not an error, up to 10 s).
pub fn client(connections: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default()
}
