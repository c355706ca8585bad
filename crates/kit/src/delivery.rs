//! Test support: a batch delivered to a handler through the consumer's inbox, in the
//! caller's transaction, exactly as the consumer runtime applies what the bus delivers
//! (duplicates skipped, each failed event rolled back alone), without a bus. For property
//! tests of shuffled and duplicated delivery whose handlers only the inbox makes idempotent.

use crate::consumer::{Handler, Outcome, apply};
use crate::envelope::Envelope;
use crate::store::{StoreError, Tx};

/// What became of a batch.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    pub applied: usize,
    /// Copies of events the inbox had already let through, skipped.
    pub duplicates: usize,
    /// Why each failed event failed.
    pub failed: Vec<String>,
}

/// Delivers `batch` to `handler` as `consumer` in `tx`; `now_ms` stamps the inbox rows.
pub fn deliver(
    tx: &mut Tx<'_>,
    consumer: &str,
    handler: &dyn Handler,
    batch: Vec<Envelope>,
    now_ms: u64,
) -> Result<Delivered, StoreError> {
    let outcomes = apply(tx, consumer, handler, batch.into_iter().map(Ok).collect(), now_ms)?;
    let mut delivered = Delivered::default();
    for outcome in outcomes {
        match outcome {
            Outcome::Applied => delivered.applied += 1,
            Outcome::Duplicate => delivered.duplicates += 1,
            Outcome::Failed(e) => delivered.failed.push(e.to_string()),
            Outcome::Undecodable(e) => delivered.failed.push(e),
        }
    }
    Ok(delivered)
}
