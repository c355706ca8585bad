//! A consumer's attachment to the embedded log: taking due messages into its pending
//! table, and acknowledging, retrying, releasing and dead-lettering them there.

use std::time::Duration;

use async_trait::async_trait;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;

use super::{EmbeddedBus, SCAN_WINDOW, release_next};
use crate::bus::{
    BusError, ConsumerSpec, Delivery, DeliveryTag, Disposition, Message, Ordering, Subscription,
};
use crate::clock;
use crate::store::{Param, Row, StoreError, Tx};

pub(super) struct EmbeddedSubscription {
    bus: EmbeddedBus,
    spec: ConsumerSpec,
    /// The consumer's streams, sorted, so the scan statement's text is stable.
    streams: Vec<String>,
    changes: watch::Receiver<u64>,
    /// Counts the messages this attachment dead-letters because their ack waits ran out.
    exhausted: Counter,
}

/// What one fetch transaction found: deliveries, or when the next one falls due.
struct Taken {
    deliveries: Vec<Delivery>,
    next_due_ms: Option<u64>,
    /// Log positions past the consumer's scan window are still to be looked at.
    more: bool,
    /// Messages dead-lettered because their ack waits ran out `max_attempts` times.
    exhausted: u64,
}

impl EmbeddedSubscription {
    pub(super) fn new(
        bus: EmbeddedBus,
        spec: ConsumerSpec,
        streams: Vec<String>,
        changes: watch::Receiver<u64>,
    ) -> Self {
        Self { bus, spec, streams, changes, exhausted: Counter::default() }
    }

    async fn take(&self, max: usize) -> Result<Taken, BusError> {
        let spec = self.spec.clone();
        let streams = self.streams.clone();
        let now = clock::now_ms();
        let taken = self.bus.store.transact(move |tx| take(tx, &spec, &streams, now, max)).await?;
        Ok(taken)
    }
}

fn take(
    tx: &mut Tx<'_>,
    spec: &ConsumerSpec,
    streams: &[String],
    now: u64,
    max: usize,
) -> Result<Taken, StoreError> {
    let name = spec.name.as_str();
    let ack_deadline = now + spec.ack_wait.as_millis() as u64;
    let mut deliveries = Vec::new();
    let mut exhausted = 0;

    // Redeliveries first: expired acks, scheduled retries, released and replayed messages.
    let due = tx.query(
        "SELECT p.pos, p.attempts, l.id, l.stream, l.seq, l.key, l.body FROM bus_pending p \
         JOIN bus_log l ON l.pos = p.pos \
         WHERE p.consumer = $1 AND p.state IN ('inflight', 'ready') AND p.visible_at_ms <= $2 \
         ORDER BY p.pos LIMIT $3",
        &[name.into(), now.into(), (max as u64).into()],
    )?;
    for mut row in due {
        let pos: u64 = row.get(0)?;
        let attempts: u32 = row.get(1)?;
        if attempts >= spec.max_attempts {
            tx.execute(
                "UPDATE bus_pending SET state = 'dead', failed_at_ms = $3, \
                 error = coalesce(error || '; ', '') || $4 WHERE consumer = $1 AND pos = $2",
                &[
                    name.into(),
                    pos.into(),
                    now.into(),
                    format!("not acknowledged after {attempts} deliveries").as_str().into(),
                ],
            )?;
            exhausted += 1;
            continue;
        }
        tx.execute(
            "UPDATE bus_pending SET state = 'inflight', attempts = attempts + 1, visible_at_ms = $3 \
             WHERE consumer = $1 AND pos = $2",
            &[name.into(), pos.into(), ack_deadline.into()],
        )?;
        deliveries.push(Delivery {
            tag: DeliveryTag(pos),
            attempt: attempts + 1,
            message: message_from_row(&mut row, 2)?,
        });
    }

    let more = if deliveries.len() < max {
        take_new(tx, spec, streams, ack_deadline, max, &mut deliveries)?
    } else {
        false
    };

    let next_due_ms = if deliveries.is_empty() {
        tx.query_one(
            "SELECT min(visible_at_ms) FROM bus_pending WHERE consumer = $1 AND state IN ('inflight', 'ready')",
            &[name.into()],
        )?
        .get(0)?
    } else {
        None
    };
    Ok(Taken { deliveries, next_due_ms, more, exhausted })
}

/// Takes messages past the consumer's position, one scan window at a time: delivered
/// now, or parked behind an earlier pending message of their key. Returns whether log
/// positions remain past the window.
fn take_new(
    tx: &mut Tx<'_>,
    spec: &ConsumerSpec,
    streams: &[String],
    ack_deadline: u64,
    max: usize,
    deliveries: &mut Vec<Delivery>,
) -> Result<bool, StoreError> {
    let name = spec.name.as_str();
    let taken: u64 =
        tx.query_one("SELECT taken_pos FROM bus_consumer WHERE name = $1", &[name.into()])?.get(0)?;
    let window_end = taken + SCAN_WINDOW;
    let list: Vec<String> = (0..streams.len()).map(|i| format!("${}", i + 3)).collect();
    let sql = format!(
        "SELECT pos, id, stream, seq, key, body FROM bus_log \
         WHERE pos > $1 AND pos <= $2 AND stream IN ({}) ORDER BY pos",
        list.join(", ")
    );
    let mut params: Vec<Param<'_>> = vec![taken.into(), window_end.into()];
    params.extend(streams.iter().map(Param::from));
    let rows = tx.query(&sql, &params)?;
    let room = max - deliveries.len();
    let (mut last, mut added, mut full) = (taken, 0, false);
    for mut row in rows {
        if added == room {
            full = true;
            break;
        }
        last = row.get(0)?;
        let message = message_from_row(&mut row, 1)?;
        let parked = spec.ordering == Ordering::PerKey
            && tx
                .query_opt(
                    "SELECT 1 FROM bus_pending WHERE consumer = $1 AND key = $2 LIMIT 1",
                    &[name.into(), (&message.key).into()],
                )?
                .is_some();
        let (state, attempts, visible) =
            if parked { ("parked", 0u32, 0) } else { ("inflight", 1, ack_deadline) };
        tx.execute(
            "INSERT INTO bus_pending (consumer, pos, key, state, attempts, visible_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
            &[name.into(), last.into(), (&message.key).into(), state.into(), attempts.into(), visible.into()],
        )?;
        if !parked {
            added += 1;
            deliveries.push(Delivery { tag: DeliveryTag(last), attempt: 1, message });
        }
    }
    let mut more = full;
    if !full {
        // The whole window is taken: the position moves to its end, or to the log's head
        // when that comes first (positions past the head are not written yet).
        let head: u64 = tx.query_one("SELECT coalesce(max(pos), 0) FROM bus_log", &[])?.get(0)?;
        last = last.max(window_end.min(head));
        more = head > window_end;
    }
    if last > taken {
        tx.execute("UPDATE bus_consumer SET taken_pos = $2 WHERE name = $1", &[name.into(), last.into()])?;
    }
    Ok(more)
}

fn message_from_row(row: &mut Row, from: usize) -> Result<Message, StoreError> {
    Ok(Message {
        id: row.take(from)?,
        stream: row.take(from + 1)?,
        seq: row.get(from + 2)?,
        key: row.take(from + 3)?,
        body: row.take(from + 4)?,
    })
}

#[async_trait]
impl Subscription for EmbeddedSubscription {
    async fn fetch(&mut self, max: usize) -> Result<Vec<Delivery>, BusError> {
        let max = max.max(1);
        loop {
            self.changes.borrow_and_update();
            let taken = self.take(max).await?;
            self.exhausted.inc_by(taken.exhausted);
            if !taken.deliveries.is_empty() {
                return Ok(taken.deliveries);
            }
            if taken.more {
                continue;
            }
            let wake_at = taken.next_due_ms.map(clock::instant_at);
            tokio::select! {
                changed = self.changes.changed() => {
                    if changed.is_err() {
                        return Err(BusError::Unavailable("the embedded bus was closed".into()));
                    }
                }
                _ = sleep_until(wake_at) => {}
            }
        }
    }

    async fn ack(&mut self, tags: &[DeliveryTag]) -> Result<(), BusError> {
        if tags.is_empty() {
            return Ok(());
        }
        let name = self.spec.name.clone();
        let per_key = self.spec.ordering == Ordering::PerKey;
        let tags = tags.to_vec();
        let released = self
            .bus
            .store
            .transact(move |tx| {
                let mut released = false;
                for tag in &tags {
                    let key = tx.query_opt(
                        "DELETE FROM bus_pending WHERE consumer = $1 AND pos = $2 AND state IN ('inflight', 'ready') RETURNING key",
                        &[(&name).into(), tag.0.into()],
                    )?;
                    if let (true, Some(row)) = (per_key, key) {
                        release_next(tx, &name, &row.get::<String>(0)?)?;
                        released = true;
                    }
                }
                Ok::<_, StoreError>(released)
            })
            .await?;
        if released {
            self.bus.wake();
        }
        Ok(())
    }

    async fn retry(
        &mut self,
        tag: DeliveryTag,
        delay: Duration,
        error: &str,
    ) -> Result<Disposition, BusError> {
        let name = self.spec.name.clone();
        let max_attempts = self.spec.max_attempts;
        let error = error.to_owned();
        let now = clock::now_ms();
        let visible = now + delay.as_millis() as u64;
        let disposition = self
            .bus
            .store
            .transact(move |tx| {
                let row = tx.query_opt(
                    "UPDATE bus_pending SET state = CASE WHEN attempts >= $3 THEN 'dead' ELSE 'ready' END, \
                     visible_at_ms = $4, error = $5, failed_at_ms = $6 \
                     WHERE consumer = $1 AND pos = $2 AND state = 'inflight' RETURNING state",
                    &[
                        (&name).into(),
                        tag.0.into(),
                        max_attempts.into(),
                        visible.into(),
                        (&error).into(),
                        now.into(),
                    ],
                )?;
                Ok::<_, StoreError>(match row {
                    Some(row) if row.get::<String>(0)? == "dead" => Disposition::DeadLettered,
                    Some(_) => Disposition::Retrying,
                    None => Disposition::NotPending,
                })
            })
            .await?;
        self.bus.wake();
        Ok(disposition)
    }

    async fn reject(&mut self, tag: DeliveryTag, error: &str) -> Result<(), BusError> {
        let name = self.spec.name.clone();
        let error = error.to_owned();
        let now = clock::now_ms();
        self.bus
            .store
            .transact(move |tx| {
                tx.execute(
                    "UPDATE bus_pending SET state = 'dead', error = $3, failed_at_ms = $4 \
                     WHERE consumer = $1 AND pos = $2 AND state IN ('inflight', 'ready')",
                    &[(&name).into(), tag.0.into(), (&error).into(), now.into()],
                )
            })
            .await?;
        Ok(())
    }

    fn count_exhausted(&mut self, counter: Counter) {
        self.exhausted = counter;
    }

    async fn release(&mut self, tags: &[DeliveryTag]) -> Result<(), BusError> {
        if tags.is_empty() {
            return Ok(());
        }
        let name = self.spec.name.clone();
        let tags = tags.to_vec();
        self.bus
            .store
            .transact(move |tx| {
                for tag in &tags {
                    // Due again at once; the next take counts the same attempt again.
                    tx.execute(
                        "UPDATE bus_pending SET state = 'ready', visible_at_ms = 0, attempts = attempts - 1 \
                         WHERE consumer = $1 AND pos = $2 AND state = 'inflight' AND attempts > 0",
                        &[(&name).into(), tag.0.into()],
                    )?;
                }
                Ok::<_, StoreError>(())
            })
            .await?;
        self.bus.wake();
        Ok(())
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
