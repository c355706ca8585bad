//! The history of one schedule: every operation a client invoked with its outcome, and
//! every nemesis action, in the order they completed; written as JSON lines.

use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

/// How an operation ended, as a client can know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A 2xx: the shop acknowledged it.
    Ok,
    /// A definite 4xx: the shop refused it and changed nothing.
    Fail,
    /// A timeout, a reset or a 5xx: it may or may not have taken effect.
    Unknown,
    /// A nemesis action (it has no outcome to judge).
    Info,
}

impl Outcome {
    /// The outcome of an HTTP answer (`0`: no answer at all) to a request sent with an
    /// Idempotency-Key or without.
    pub fn of(status: u16, idempotent: bool) -> Self {
        match status {
            200..=299 => Outcome::Ok,
            // 409 to a create with a key is "a request with this key is still running": the
            // first one may yet take effect. 408 is a timeout.
            409 if idempotent => Outcome::Unknown,
            408 => Outcome::Unknown,
            400..=499 => Outcome::Fail,
            _ => Outcome::Unknown,
        }
    }
}

/// One operation or nemesis action.
#[derive(Debug, Clone, Serialize)]
pub struct Op {
    /// `c0`, `c1`, ... or `nemesis`.
    pub client: String,
    /// `register`, `address`, `place`, `cancel`, `restock`, `read-order`, ... or the fault.
    pub op: String,
    /// What it is about: a customer, an order, a product.
    pub key: String,
    /// The unique value it wrote (an address line, a stock count), if any.
    pub value: Value,
    pub idempotency_key: Option<String>,
    /// Seconds since the workload started.
    pub invoke: f64,
    pub complete: f64,
    pub outcome: Outcome,
    pub status: u16,
    /// What the answer named: an order id, a version, a customer id.
    pub ids: Value,
}

/// The shared, append-only history of one schedule.
#[derive(Clone)]
pub struct History {
    start: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl History {
    pub fn new() -> Self {
        Self { start: Instant::now(), ops: Arc::default() }
    }

    /// Seconds since the schedule started.
    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    pub fn push(&self, op: Op) {
        self.ops.lock().unwrap_or_else(PoisonError::into_inner).push(op);
    }

    /// A nemesis action that began at `invoke`.
    pub fn nemesis(&self, action: &str, what: String, invoke: f64, status: u16) {
        self.push(Op {
            client: "nemesis".into(),
            op: action.into(),
            key: what,
            value: Value::Null,
            idempotency_key: None,
            invoke,
            complete: self.now(),
            outcome: Outcome::Info,
            status,
            ids: Value::Null,
        });
    }

    pub fn snapshot(&self) -> Vec<Op> {
        self.ops.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The history as JSON lines, in completion order.
    pub fn json_lines(&self) -> String {
        let mut ops = self.snapshot();
        ops.sort_by(|a, b| a.complete.total_cmp(&b.complete));
        ops.iter().filter_map(|op| serde_json::to_string(op).ok()).map(|line| line + "\n").collect()
    }
}
