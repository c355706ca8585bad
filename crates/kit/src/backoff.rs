//! Exponential backoff with jitter, shared by the relay (bus unreachable) and the consumer
//! (handler failures), so many waiters never retry in lockstep.

use std::time::Duration;

use rand::Rng;

/// Delays that double per attempt from `base` up to `max`; each delay is drawn between
/// half and all of its step ("equal jitter"), so waits still grow but spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base: Duration::from_millis(100), max: Duration::from_secs(30) }
    }
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self { base, max: max.max(base) }
    }

    /// The delay before attempt `attempt + 1`, after `attempt` failures (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let step = self.step(attempt);
        let half = step / 2;
        half + rand::rng().random_range(Duration::ZERO..=step - half)
    }

    /// The un-jittered upper bound of [`Backoff::delay`].
    pub fn step(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.base.saturating_mul(1u32 << doublings).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_per_attempt_up_to_the_cap() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let steps: Vec<_> = (1..=6).map(|a| backoff.step(a).as_millis()).collect();
        assert_eq!(steps, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jittered_delays_stay_between_half_and_the_full_step() {
        let backoff = Backoff::default();
        for attempt in 1..=40 {
            let (step, delay) = (backoff.step(attempt), backoff.delay(attempt));
            assert!(delay >= step / 2 && delay <= step, "attempt {attempt}: {delay:?} outside {step:?}");
        }
    }
}
