//! What happened over a scenario's run, in seconds since its start: lag and backlog
//! samples, every attempt of the load with its outcome, and the fault windows.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct Sample {
    pub t: f64,
    pub series: String,
    /// Events published and not yet applied, over every consumer.
    pub lag: u64,
    /// Events committed and not yet relayed, over every service.
    pub backlog: u64,
    /// Dead letters waiting, over every consumer.
    pub dead: u64,
}

#[derive(Debug, Clone)]
pub struct Attempt {
    /// When the attempt finished.
    pub t: f64,
    pub series: String,
    pub ok: bool,
    pub latency: Duration,
}

#[derive(Debug, Clone)]
pub struct Window {
    pub label: String,
    pub from: f64,
    pub to: Option<f64>,
}

#[derive(Debug, Default)]
pub struct Events {
    pub samples: Vec<Sample>,
    pub attempts: Vec<Attempt>,
    pub windows: Vec<Window>,
}

/// A shared, append-only record of one run.
#[derive(Clone)]
pub struct Timeline {
    start: Instant,
    events: Arc<Mutex<Events>>,
}

impl Timeline {
    pub fn new() -> Self {
        Self { start: Instant::now(), events: Arc::default() }
    }

    /// Seconds since the run started.
    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Events> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn sample(&self, series: &str, lag: u64, backlog: u64, dead: u64) {
        let t = self.now();
        self.lock().samples.push(Sample { t, series: series.to_owned(), lag, backlog, dead });
    }

    pub fn attempt(&self, series: &str, ok: bool, latency: Duration) {
        let t = self.now();
        self.lock().attempts.push(Attempt { t, series: series.to_owned(), ok, latency });
    }

    /// Marks the start of a fault; returns the time it began.
    pub fn fault_begins(&self, label: &str) -> f64 {
        let from = self.now();
        self.lock().windows.push(Window { label: label.to_owned(), from, to: None });
        from
    }

    /// Marks the end of the newest open fault; returns the time it ended.
    pub fn fault_ends(&self) -> f64 {
        let to = self.now();
        if let Some(window) = self.lock().windows.iter_mut().rev().find(|w| w.to.is_none()) {
            window.to = Some(to);
        }
        to
    }

    /// Records a fault window whose bounds are known (faults that overlap each other).
    pub fn window(&self, label: &str, from: f64, to: f64) {
        self.lock().windows.push(Window { label: label.to_owned(), from, to: Some(to) });
    }

    /// Attempts of `series` that finished between `from` and `to`.
    pub fn attempts(&self, series: &str, from: f64, to: f64) -> Vec<Attempt> {
        self.lock()
            .attempts
            .iter()
            .filter(|a| a.series == series && a.t >= from && a.t <= to)
            .cloned()
            .collect()
    }

    /// The highest backlog sampled between `from` and `to`.
    pub fn max_backlog(&self, from: f64, to: f64) -> u64 {
        self.lock().samples.iter().filter(|s| s.t >= from && s.t <= to).map(|s| s.backlog).max().unwrap_or(0)
    }

    pub fn snapshot(&self) -> Events {
        let events = self.lock();
        Events {
            samples: events.samples.clone(),
            attempts: events.attempts.clone(),
            windows: events.windows.clone(),
        }
    }
}

/// The fraction of `attempts` that succeeded (`None` without attempts).
pub fn ratio(attempts: &[Attempt]) -> Option<f64> {
    (!attempts.is_empty()).then(|| attempts.iter().filter(|a| a.ok).count() as f64 / attempts.len() as f64)
}

/// The `p` quantile (0 to 1) of `values`, in milliseconds (0 without values).
pub fn percentile(mut values: Vec<Duration>, p: f64) -> f64 {
    values.sort();
    values.get(((values.len() as f64 - 1.0) * p).round() as usize).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}
