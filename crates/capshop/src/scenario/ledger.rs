//! What clients were told succeeded: every write the shop acknowledged (a 2xx answer with
//! a `Consistency-Token`), recorded by the lab's client as it happens. The loss check holds
//! the replicas to these, so a lost event shows as a write the shop promised and forgot,
//! whatever the event path's own bookkeeping says.

use std::sync::{Arc, Mutex, PoisonError};

use kit::token::{ConsistencyToken, TokenEntry};

/// One acknowledged write: an aggregate at the version the write brought it to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acknowledged {
    pub entry: TokenEntry,
    /// The customer of an order (where the order is routed: its inventory site).
    pub customer: Option<String>,
}

/// Every acknowledged write of one shop, in the order the answers arrived.
#[derive(Clone, Default)]
pub struct Ledger {
    writes: Arc<Mutex<Vec<Acknowledged>>>,
}

impl Ledger {
    /// Records the write an answer acknowledged: each entry of its token (a write without
    /// one changed nothing another service replicates). A token that does not parse names
    /// nothing to check; it is logged, since the shop should never send one.
    pub fn record(&self, token: &str, body: &serde_json::Value) {
        let token: ConsistencyToken = match token.parse() {
            Ok(token) => token,
            Err(e) => {
                tracing::warn!(token, error = %e, "the shop acknowledged a write with a bad consistency token");
                return;
            }
        };
        let customer = body["customer_id"].as_str().map(str::to_owned);
        let mut writes = self.writes.lock().unwrap_or_else(PoisonError::into_inner);
        for entry in token.entries() {
            writes.push(Acknowledged { entry: entry.clone(), customer: customer.clone() });
        }
    }

    pub fn writes(&self) -> Vec<Acknowledged> {
        self.writes.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}
