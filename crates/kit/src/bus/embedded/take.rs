//! One fetch transaction of an attachment: expired fresh deliveries become due rows, due
//! rows (retries, releases, replays, redeliveries) are taken first, then messages past the
//! consumer's taken position, fresh (no row) or parked behind an earlier message of their
//! key. The consumer's positions move once per transaction, never per message.

use std::collections::HashSet;

use super::{SCAN_WINDOW, release_next, unkept_become_due};
use crate::bus::{ConsumerSpec, Delivery, DeliveryTag, Message, Ordering};
use crate::store::{Param, Row, StoreError, Tx};

/// What the attachment knows that the log does not.
pub(super) struct Request {
    pub spec: ConsumerSpec,
    /// The consumer's streams, sorted, so the scan statement's text is stable.
    pub streams: Vec<String>,
    pub generation: u64,
    pub now_ms: u64,
    pub max: usize,
    /// Fresh deliveries whose ack wait ran out: they become due rows at attempt 1.
    pub expired: Vec<(u64, String)>,
    /// Keys with a fresh delivery still outstanding (after `expired`), for parking.
    pub busy_keys: HashSet<String>,
    /// The lowest fresh delivery still outstanding (after `expired`).
    pub lowest_outstanding: Option<u64>,
    /// The attachment's taken position before its last fetch transaction, when that fetch
    /// never came back (cancelled or failed): what it took past there is taken back.
    pub unreturned_after: Option<u64>,
}

/// What one fetch transaction found.
pub(super) struct Taken {
    pub deliveries: Vec<Delivery>,
    /// Which of `deliveries` are fresh (no row), as (position, key).
    pub fresh: Vec<(u64, String)>,
    /// Keys that got a parked row in this transaction.
    pub parked: Vec<String>,
    /// The consumer's taken position after the transaction.
    pub taken: u64,
    /// When the next row falls due, when nothing was delivered.
    pub next_due_ms: Option<u64>,
    /// Log positions past the consumer's scan window are still to be looked at.
    pub more: bool,
    /// Messages dead-lettered because their ack waits ran out `max_attempts` times.
    pub exhausted: u64,
}

/// Another attachment of the consumer has replaced this one.
pub(super) struct Replaced;

pub(super) fn take(tx: &mut Tx<'_>, request: &Request) -> Result<Result<Taken, Replaced>, StoreError> {
    let name = request.spec.name.as_str();
    let row =
        tx.query_one("SELECT taken_pos, generation FROM bus_consumer WHERE name = $1", &[name.into()])?;
    let (taken, generation): (u64, u64) = (row.get(0)?, row.get(1)?);
    if generation != request.generation {
        return Ok(Err(Replaced));
    }
    for (pos, key) in &request.expired {
        tx.execute(
            "INSERT INTO bus_pending (consumer, pos, key, state, attempts, visible_at_ms) \
             VALUES ($1, $2, $3, 'ready', 1, 0) ON CONFLICT DO NOTHING",
            &[name.into(), (*pos).into(), key.as_str().into()],
        )?;
    }
    let ack_deadline = request.now_ms + request.spec.ack_wait.as_millis() as u64;
    let mut taken_now = Taken {
        deliveries: Vec::new(),
        fresh: Vec::new(),
        parked: Vec::new(),
        taken,
        next_due_ms: None,
        more: false,
        exhausted: 0,
    };
    if let Some(from) = request.unreturned_after
        && taken > from
    {
        take_back(tx, request, from, taken, &mut taken_now)?;
    }
    take_due(tx, request, ack_deadline, &mut taken_now)?;
    if taken_now.deliveries.len() < request.max {
        take_new(tx, request, &mut taken_now)?;
    }
    if taken_now.deliveries.is_empty() {
        taken_now.next_due_ms = tx
            .query_one(
                "SELECT min(visible_at_ms) FROM bus_pending WHERE consumer = $1 AND state IN ('inflight', 'ready')",
                &[name.into()],
            )?
            .get(0)?;
    }
    Ok(Ok(taken_now))
}

/// A fetch that was cancelled after its transaction committed took fresh deliveries in
/// `(from, taken]` that its attachment never kept, so nothing would redeliver them and the
/// settled position would pass them: each becomes a row due now at attempt 1, as when a
/// new attachment takes over. A key it parked behind a fresh delivery still outstanding is
/// the attachment's to release at that delivery's ack; behind one settled meanwhile (its
/// ack did not know of the parked message), the key's next message is released now.
fn take_back(
    tx: &mut Tx<'_>,
    request: &Request,
    from: u64,
    taken: u64,
    out: &mut Taken,
) -> Result<(), StoreError> {
    let name = request.spec.name.as_str();
    unkept_become_due(tx, name, &request.streams, from, taken)?;
    let parked = tx.query(
        "SELECT DISTINCT key FROM bus_pending WHERE consumer = $1 AND pos > $2 AND pos <= $3 AND state = 'parked'",
        &[name.into(), from.into(), taken.into()],
    )?;
    for row in parked {
        let key: String = row.get(0)?;
        if request.busy_keys.contains(&key) {
            out.parked.push(key);
        } else {
            release_next(tx, name, &key)?;
        }
    }
    Ok(())
}

/// Redeliveries first: expired acks, scheduled retries, released and replayed messages.
fn take_due(
    tx: &mut Tx<'_>,
    request: &Request,
    ack_deadline: u64,
    out: &mut Taken,
) -> Result<(), StoreError> {
    let (name, now) = (request.spec.name.as_str(), request.now_ms);
    let due = tx.query(
        "SELECT p.pos, p.attempts, l.id, l.stream, l.seq, l.key, l.body FROM bus_pending p \
         JOIN bus_log l ON l.pos = p.pos \
         WHERE p.consumer = $1 AND p.state IN ('inflight', 'ready') AND p.visible_at_ms <= $2 \
         ORDER BY p.pos LIMIT $3",
        &[name.into(), now.into(), (request.max as u64).into()],
    )?;
    for mut row in due {
        let pos: u64 = row.get(0)?;
        let attempts: u32 = row.get(1)?;
        if attempts >= request.spec.max_attempts {
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
            out.exhausted += 1;
            continue;
        }
        tx.execute(
            "UPDATE bus_pending SET state = 'inflight', attempts = attempts + 1, visible_at_ms = $3 \
             WHERE consumer = $1 AND pos = $2",
            &[name.into(), pos.into(), ack_deadline.into()],
        )?;
        out.deliveries.push(Delivery {
            tag: DeliveryTag(pos),
            attempt: attempts + 1,
            message: message_from_row(&mut row, 2)?,
        });
    }
    Ok(())
}

/// Takes messages past the consumer's position, one scan window at a time: delivered
/// fresh, or parked behind an earlier unsettled message of their key; then moves the
/// consumer's taken and settled positions.
fn take_new(tx: &mut Tx<'_>, request: &Request, out: &mut Taken) -> Result<(), StoreError> {
    let name = request.spec.name.as_str();
    let per_key = request.spec.ordering == Ordering::PerKey;
    let taken = out.taken;
    let window_end = taken + SCAN_WINDOW;
    let list: Vec<String> = (0..request.streams.len()).map(|i| format!("${}", i + 3)).collect();
    let sql = format!(
        "SELECT pos, id, stream, seq, key, body FROM bus_log \
         WHERE pos > $1 AND pos <= $2 AND stream IN ({}) ORDER BY pos",
        list.join(", ")
    );
    let mut params: Vec<Param<'_>> = vec![taken.into(), window_end.into()];
    params.extend(request.streams.iter().map(Param::from));
    let rows = tx.query(&sql, &params)?;
    // Rows of the consumer's keys exist only after a failure, a release or a crash: when
    // there are none, no message needs a look-up to know whether it must park.
    let mut rows_exist = per_key
        && tx
            .query_opt(
                "SELECT 1 FROM bus_pending WHERE consumer = $1 AND state <> 'acked' LIMIT 1",
                &[name.into()],
            )?
            .is_some();
    let mut busy: HashSet<String> = if per_key { request.busy_keys.clone() } else { HashSet::new() };
    let room = request.max - out.deliveries.len();
    let (mut last, mut added, mut full) = (taken, 0, false);
    for mut row in rows {
        if added == room {
            full = true;
            break;
        }
        last = row.get(0)?;
        let message = message_from_row(&mut row, 1)?;
        if per_key && (busy.contains(&message.key) || rows_exist && has_row(tx, name, &message.key)?) {
            tx.execute(
                "INSERT INTO bus_pending (consumer, pos, key, state, attempts, visible_at_ms) \
                 VALUES ($1, $2, $3, 'parked', 0, 0)",
                &[name.into(), last.into(), (&message.key).into()],
            )?;
            rows_exist = true;
            out.parked.push(message.key);
            continue;
        }
        if per_key {
            busy.insert(message.key.clone());
        }
        added += 1;
        out.fresh.push((last, message.key.clone()));
        out.deliveries.push(Delivery { tag: DeliveryTag(last), attempt: 1, message });
    }
    if !full {
        // The whole window is taken: the position moves to its end, or to the log's head
        // when that comes first (positions past the head are not written yet).
        let head: u64 = tx.query_one("SELECT coalesce(max(pos), 0) FROM bus_log", &[])?.get(0)?;
        last = last.max(window_end.min(head));
        out.more = head > window_end;
    } else {
        out.more = true;
    }
    out.taken = last;
    let lowest =
        [request.lowest_outstanding, out.fresh.first().map(|(pos, _)| *pos)].into_iter().flatten().min();
    let settled = lowest.map_or(last, |pos| pos - 1);
    tx.execute(
        "UPDATE bus_consumer SET taken_pos = $2, acked_pos = max(acked_pos, $3) WHERE name = $1",
        &[name.into(), last.into(), settled.into()],
    )?;
    Ok(())
}

/// Whether `key` has an unsettled row (retrying, parked, dead, released) for the consumer.
fn has_row(tx: &mut Tx<'_>, consumer: &str, key: &str) -> Result<bool, StoreError> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM bus_pending WHERE consumer = $1 AND key = $2 AND state <> 'acked' LIMIT 1",
            &[consumer.into(), key.into()],
        )?
        .is_some())
}

pub(super) fn message_from_row(row: &mut Row, from: usize) -> Result<Message, StoreError> {
    Ok(Message {
        id: row.take(from)?,
        stream: row.take(from + 1)?,
        seq: row.get(from + 2)?,
        key: row.take(from + 3)?,
        body: row.take(from + 4)?,
    })
}
