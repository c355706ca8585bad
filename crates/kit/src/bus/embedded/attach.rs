//! Attaching a consumer: registering it, and taking over what its previous attachment left.
//!
//! The previous attachment is gone (crashed, dropped, or about to find out it was replaced):
//! its rows in flight are due now, and every position between the consumer's settled and
//! taken positions without a row was one of its fresh deliveries, delivered once and never
//! acknowledged — each becomes a row due now at attempt 1, so its attempts stay counted.

use crate::bus::{ConsumerSpec, Ordering};
use crate::store::{StoreError, Tx};

pub(super) struct Attach {
    pub spec: ConsumerSpec,
    /// The consumer's streams, sorted and without duplicates.
    pub streams: Vec<String>,
}

impl Attach {
    /// Returns the attachment's generation and the consumer's taken position.
    pub(super) fn run(self, tx: &mut Tx<'_>) -> Result<(u64, u64), StoreError> {
        let name = self.spec.name.as_str();
        let per_key = self.spec.ordering == Ordering::PerKey;
        tx.execute(
            // A new consumer starts at the oldest position the log still keeps.
            "INSERT INTO bus_consumer (name, streams, per_key, max_attempts, taken_pos, acked_pos) \
             SELECT $1, $2, $3, $4, start, start FROM (SELECT coalesce(min(pos), 1) - 1 AS start FROM bus_log) WHERE true \
             ON CONFLICT (name) DO UPDATE SET \
             streams = excluded.streams, per_key = excluded.per_key, max_attempts = excluded.max_attempts, \
             generation = generation + 1",
            &[
                name.into(),
                self.spec.streams.join(",").as_str().into(),
                per_key.into(),
                self.spec.max_attempts.into(),
            ],
        )?;
        let row = tx.query_one(
            "SELECT generation, acked_pos, taken_pos FROM bus_consumer WHERE name = $1",
            &[name.into()],
        )?;
        let (generation, acked, taken): (u64, u64, u64) = (row.get(0)?, row.get(1)?, row.get(2)?);
        tx.execute(
            "UPDATE bus_pending SET state = 'ready', visible_at_ms = 0 WHERE consumer = $1 AND state = 'inflight'",
            &[name.into()],
        )?;
        if taken > acked {
            self.take_over(tx, acked, taken)?;
        }
        Ok((generation, taken))
    }

    /// Turns the previous attachment's fresh deliveries (positions in `(acked, taken]` of
    /// the consumer's streams without a row) into rows due now, and clears its
    /// acknowledgements out of order: everything up to `taken` is settled or has a row.
    fn take_over(&self, tx: &mut Tx<'_>, acked: u64, taken: u64) -> Result<(), StoreError> {
        let name = self.spec.name.as_str();
        super::unkept_become_due(tx, name, &self.streams, acked, taken)?;
        tx.execute(
            "DELETE FROM bus_pending WHERE consumer = $1 AND state = 'acked' AND pos <= $2",
            &[name.into(), taken.into()],
        )?;
        tx.execute("UPDATE bus_consumer SET acked_pos = $2 WHERE name = $1", &[name.into(), taken.into()])?;
        Ok(())
    }
}
