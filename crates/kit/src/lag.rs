//! How far a consumer is behind its sources: per source stream, the position it has
//! applied, the position the source has published, and the age of the newest applied event.

use crate::bus::{Bus, BusError};
use crate::clock;
use crate::store::{Store, StoreError, Tx};

/// One consumer's position on one source stream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StreamLag {
    pub stream: String,
    /// The highest seq of this stream the consumer has applied.
    pub applied_seq: u64,
    /// The highest seq the source has published on the bus.
    pub published_seq: u64,
    /// Milliseconds since the newest applied event occurred (`None` before the first).
    pub newest_applied_age_ms: Option<u64>,
}

impl StreamLag {
    /// Events published but not applied yet (an unordered consumer may have applied a
    /// later seq before an earlier one; this counts by position).
    pub fn events_behind(&self) -> u64 {
        self.published_seq.saturating_sub(self.applied_seq)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LagError {
    #[error("cannot read applied positions: {0}")]
    Store(#[from] StoreError),
    #[error("cannot read published positions: {0}")]
    Bus(#[from] BusError),
}

/// Measures `consumer`'s lag on each of `streams`.
pub async fn measure(
    store: &Store,
    bus: &dyn Bus,
    consumer: &str,
    streams: &[String],
) -> Result<Vec<StreamLag>, LagError> {
    let applied = {
        let (consumer, streams) = (consumer.to_owned(), streams.to_vec());
        store.transact(move |tx| applied_positions(tx, &consumer, &streams)).await?
    };
    let now = clock::now_ms();
    let mut lags = Vec::with_capacity(streams.len());
    for (stream, (applied_seq, occurred_at_ms)) in streams.iter().zip(applied) {
        lags.push(StreamLag {
            stream: stream.clone(),
            applied_seq,
            published_seq: bus.stream_head(stream).await?,
            newest_applied_age_ms: occurred_at_ms.map(|at| now.saturating_sub(at)),
        });
    }
    Ok(lags)
}

/// Per stream, the applied seq and when the newest applied event occurred.
fn applied_positions(
    tx: &mut Tx<'_>,
    consumer: &str,
    streams: &[String],
) -> Result<Vec<(u64, Option<u64>)>, StoreError> {
    streams
        .iter()
        .map(|stream| {
            let row = tx.query_opt(
                "SELECT seq, occurred_at_ms FROM kit_applied WHERE consumer = $1 AND stream = $2",
                &[consumer.into(), stream.into()],
            )?;
            match row {
                Some(row) => Ok((row.get(0)?, Some(row.get(1)?))),
                None => Ok((0, None)),
            }
        })
        .collect()
}
