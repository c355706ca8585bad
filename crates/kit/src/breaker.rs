//! Circuit breaker that guards every synchronous call between services.
//!
//! A breaker starts closed. After `failure_threshold` consecutive failures
//! (a timeout counts as one) it opens and rejects callers at once, without
//! running their call. Once `open_for` has passed it is half-open: exactly one
//! probe call may go through at a time while other callers are still rejected.
//! The probe's success closes the breaker; its failure opens it again.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::{Instant, timeout};

/// Tuning for one breaker: how quickly it trips, how long it stays open and
/// how long a single call may take.
#[derive(Debug, Clone)]
pub struct BreakerConfig {
    /// Consecutive failures that open a closed breaker.
    pub failure_threshold: u32,
    /// How long an open breaker rejects callers before letting a probe through.
    pub open_for: Duration,
    /// Longest a single call may run before it counts as a failure.
    pub call_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { failure_threshold: 5, open_for: Duration::from_secs(5), call_timeout: Duration::from_secs(2) }
    }
}

/// Where a breaker stands, as reported to callers, metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// Encodes the state for a gauge, by severity: 0 closed, 1 half-open, 2 open (so an
    /// alert can fire on `== 2`).
    pub fn as_gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }

    /// Names the state for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a call through a breaker did not produce the callee's answer.
#[derive(Debug, thiserror::Error)]
pub enum BreakerError<E> {
    /// The breaker rejected the call without running it.
    #[error("circuit {0} is open")]
    Open(String),
    /// The call ran longer than the breaker's call timeout and was dropped.
    #[error("call through circuit {name} timed out after {after:?}")]
    Timeout { name: String, after: Duration },
    /// The call itself failed; the callee's error is passed through.
    #[error(transparent)]
    Inner(E),
}

type Observer = Arc<dyn Fn(&str, BreakerState) + Send + Sync>;

/// Shares one breaker's state between all its clones.
#[derive(Clone)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    config: BreakerConfig,
    circuit: Mutex<Circuit>,
    observer: Mutex<Option<Observer>>,
}

/// Mutable state, only ever touched under the mutex and never across an await.
struct Circuit {
    phase: Phase,
    consecutive_failures: u32,
    /// Bumped on every transition so that late results of calls admitted in
    /// an earlier phase cannot sway the current one.
    epoch: u64,
}

enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

impl Phase {
    fn state(&self) -> BreakerState {
        match self {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

/// What a caller was let through as.
#[derive(Clone, Copy)]
enum Admission {
    /// An ordinary call while closed, remembered with the epoch it started in.
    Closed { epoch: u64 },
    /// The single probe allowed while half-open.
    Probe,
}

impl Circuit {
    /// Moves an open circuit to half-open once its open period has passed.
    fn refresh(&mut self, now: Instant) -> Option<BreakerState> {
        match self.phase {
            Phase::Open { until } if now >= until => Some(self.enter(Phase::HalfOpen { probing: false })),
            _ => None,
        }
    }

    fn enter(&mut self, phase: Phase) -> BreakerState {
        self.phase = phase;
        self.consecutive_failures = 0;
        self.epoch = self.epoch.wrapping_add(1);
        self.phase.state()
    }

    fn trip(&mut self, open_for: Duration) -> BreakerState {
        self.enter(Phase::Open { until: Instant::now() + open_for })
    }
}

/// Frees the half-open probe slot if the probe's future is dropped before it
/// reports a result, so a cancelled caller cannot wedge the breaker.
struct ProbeSlot<'a> {
    inner: &'a Inner,
    armed: bool,
}

impl ProbeSlot<'_> {
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for ProbeSlot<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut circuit = self.inner.lock_circuit();
        if let Phase::HalfOpen { probing } = &mut circuit.phase {
            *probing = false;
        }
    }
}

impl Inner {
    fn lock_circuit(&self) -> MutexGuard<'_, Circuit> {
        // Nothing panics while holding the lock, so poisoning carries no broken state.
        self.circuit.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn notify(&self, transition: Option<BreakerState>) {
        let Some(state) = transition else {
            return;
        };
        // Clone the observer out so it runs without any lock held and may
        // itself query the breaker.
        let observer = self.observer.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(observer) = observer {
            observer(&self.name, state);
        }
    }

    fn admit(&self) -> (Result<Admission, ()>, Option<BreakerState>) {
        let mut circuit = self.lock_circuit();
        let transition = circuit.refresh(Instant::now());
        let admission = match &mut circuit.phase {
            Phase::Closed => Ok(Admission::Closed { epoch: circuit.epoch }),
            Phase::Open { .. } | Phase::HalfOpen { probing: true } => Err(()),
            Phase::HalfOpen { probing } => {
                *probing = true;
                Ok(Admission::Probe)
            }
        };
        (admission, transition)
    }

    fn record(&self, admission: Admission, failed: bool) -> Option<BreakerState> {
        let mut circuit = self.lock_circuit();
        match (admission, &circuit.phase) {
            (Admission::Closed { epoch }, Phase::Closed) if epoch == circuit.epoch => {
                if !failed {
                    circuit.consecutive_failures = 0;
                    return None;
                }
                circuit.consecutive_failures = circuit.consecutive_failures.saturating_add(1);
                (circuit.consecutive_failures >= self.config.failure_threshold)
                    .then(|| circuit.trip(self.config.open_for))
            }
            (Admission::Probe, Phase::HalfOpen { probing: true }) => {
                Some(if failed { circuit.trip(self.config.open_for) } else { circuit.enter(Phase::Closed) })
            }
            // A call admitted in an earlier phase finished late; it says
            // nothing about the callee's health now.
            _ => None,
        }
    }
}

impl CircuitBreaker {
    /// Creates a closed breaker for the named downstream dependency.
    pub fn new(name: impl Into<String>, config: BreakerConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                name: name.into(),
                config,
                circuit: Mutex::new(Circuit { phase: Phase::Closed, consecutive_failures: 0, epoch: 0 }),
                observer: Mutex::new(None),
            }),
        }
    }

    /// Names the dependency this breaker guards.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Reports the current state; an open breaker whose `open_for` has passed
    /// is reported (and becomes) half-open even before the next call.
    pub fn state(&self) -> BreakerState {
        let (state, transition) = {
            let mut circuit = self.inner.lock_circuit();
            let transition = circuit.refresh(Instant::now());
            (circuit.phase.state(), transition)
        };
        self.inner.notify(transition);
        state
    }

    /// Exposes the tuning this breaker was created with.
    pub fn config(&self) -> &BreakerConfig {
        &self.inner.config
    }

    /// Runs `call` under the timeout; every Err counts as a failure.
    pub async fn call<T, E, F>(&self, call: F) -> Result<T, BreakerError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        self.call_with(call, |_| true).await
    }

    /// Same, but only errors for which `is_failure` is true trip the breaker
    /// (e.g. a 404 is an answer, not an outage). Such answers count as
    /// successes: they prove the callee is up, so they reset the failure
    /// count and a half-open probe that gets one closes the breaker.
    pub async fn call_with<T, E, F>(
        &self,
        call: F,
        is_failure: impl Fn(&E) -> bool,
    ) -> Result<T, BreakerError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        let inner = &*self.inner;
        let (admission, transition) = inner.admit();
        inner.notify(transition);
        let Ok(admission) = admission else {
            return Err(BreakerError::Open(inner.name.clone()));
        };
        let mut slot = ProbeSlot { inner, armed: matches!(admission, Admission::Probe) };

        let outcome = timeout(inner.config.call_timeout, call).await;
        let (failed, result) = match outcome {
            Ok(Ok(value)) => (false, Ok(value)),
            Ok(Err(error)) => (is_failure(&error), Err(BreakerError::Inner(error))),
            Err(_elapsed) => (
                true,
                Err(BreakerError::Timeout { name: inner.name.clone(), after: inner.config.call_timeout }),
            ),
        };

        // The result is recorded below, which frees the probe slot itself.
        slot.disarm();
        let transition = inner.record(admission, failed);
        inner.notify(transition);
        result
    }

    /// Registers the observer called on every state change (for metrics and
    /// logs); a later observer replaces an earlier one.
    pub fn on_transition(&self, f: impl Fn(&str, BreakerState) + Send + Sync + 'static) {
        *self.inner.observer.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(f));
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.lock_circuit().phase.state();
        f.debug_struct("CircuitBreaker")
            .field("name", &self.inner.name)
            .field("state", &state)
            .field("config", &self.inner.config)
            .finish()
    }
}

#[cfg(test)]
mod tests;
