//! Per-key parking: what keeps a per-key consumer's messages of one key one at a time, in
//! order, and parks them behind a retried or dead one.
//!
//! A key's parking is one KV entry per consumer and key with
//! - the head: the event being delivered, retried or dead (none when the key is free);
//! - the *kept* messages: later ones that the head's attachment pulled and keeps in
//!   memory, unacknowledged on the server, to deliver when the head is acknowledged
//!   (recorded once per fetch, so that if that attachment dies and the server redelivers
//!   them late, they still go before anything newer);
//! - the *parked* messages: recorded and acknowledged on the consumer, because the head
//!   is retrying or dead, or another attachment has the key's head; releasing publishes the
//!   oldest again on the consumer's subject, where it arrives as the head (attempt 1).
//!
//! The next head is always the oldest (by position in the consumer's stream) of the
//! kept and parked messages. Every change is a compare-and-set on the entry's revision,
//! and the steps are ordered so every crash point is safe:
//! - park: record in the parking, then ack (a crash redelivers it; it is found parked);
//! - keep: record, then deliver the head (a crash redelivers them; found kept, they are
//!   parked by whoever gets them);
//! - release: publish the next copy, then move the head, then ack the old head (a crash
//!   before moving the head drops the copy as parked and publishes another on the next
//!   release; a crash after it redelivers the old head, delivered once more, which the
//!   consumer's inbox absorbs).
//!
//! A message that is neither the head nor recorded is taken as new, whatever its
//! position: dropping a message never seen would lose it. A freed parking stays, headless,
//! so taking the key again is one compare-and-set on the revision this attachment wrote.

use async_nats::jetstream::{kv, stream};
use serde::{Deserialize, Serialize};
use tracing::debug;

use super::streams::token;
use super::{NatsBus, unavailable};
use crate::bus::BusError;

/// How often a compare-and-set is tried again after losing a race.
const CAS_ROUNDS: usize = 16;

/// A message of a consumer's stream: its event id and its position there.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct Position {
    pub id: String,
    pub seq: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Parking {
    /// The event id of the head; none when the key is free.
    head: Option<String>,
    #[serde(default)]
    kept: Vec<Position>,
    #[serde(default)]
    parked: Vec<Position>,
}

impl Parking {
    fn is_head(&self, id: &str) -> bool {
        self.head.as_deref() == Some(id)
    }

    /// Moves `positions` to the parked messages (out of the kept ones), in stream order.
    fn park(&mut self, positions: &[Position]) {
        self.kept.retain(|k| !positions.iter().any(|p| p.id == k.id));
        for position in positions {
            if !self.parked.iter().any(|p| p.id == position.id) {
                self.parked.push(position.clone());
            }
        }
        self.parked.sort_by_key(|p| p.seq);
    }

    /// Adds `positions` to the kept messages, in stream order, once each.
    fn keep(&mut self, positions: &[Position]) {
        for position in positions {
            if !self.kept.iter().chain(&self.parked).any(|p| p.id == position.id) {
                self.kept.push(position.clone());
            }
        }
        self.kept.sort_by_key(|p| p.seq);
    }

    /// Takes the oldest kept or parked message out, as the next head; true when parked.
    fn take_next(&mut self) -> Option<(Position, bool)> {
        let kept = self.kept.first().map(|p| p.seq);
        let parked = self.parked.first().map(|p| p.seq);
        match (kept, parked) {
            (Some(k), Some(p)) if p < k => Some((self.parked.remove(0), true)),
            (Some(_), _) => Some((self.kept.remove(0), false)),
            (None, Some(_)) => Some((self.parked.remove(0), true)),
            (None, None) => None,
        }
    }
}

/// A key's parking as this attachment last read or wrote it, with its revision: the expected
/// revision of its next compare-and-set, saving a read when nobody else changed it.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    parking: Parking,
    revision: u64,
}

/// What a per-key consumer does with a message it pulled.
#[derive(Debug, Clone)]
pub(super) enum Admission {
    /// It is its key's head: deliver it.
    Deliver(Seen),
    /// It was parked behind its key's head: ack it on the consumer, deliver nothing.
    Parked,
    /// A copy of something parked already: ack it, deliver nothing.
    Known,
}

/// What releasing a head did.
#[derive(Debug, Clone)]
pub(super) enum Release {
    /// The oldest kept message, in memory here, is the head now: deliver it.
    Kept(Position, Seen),
    /// A parked message, or a kept one not in memory here, is the head now, published
    /// again (a kept one's attachment died, or it was a late copy of one acknowledged).
    Moved,
    /// Nothing was behind: the key is free.
    Ended(Seen),
    /// The message was not its key's head (any more).
    NotHead,
}

fn parking_key(consumer: &str, key: &str) -> String {
    format!("{}.{}", token(consumer), token(key))
}

fn encode(parking: &Parking) -> Vec<u8> {
    serde_json::to_vec(parking).expect("a parking serializes")
}

fn lost_race() -> BusError {
    BusError::Unavailable("a per-key parking kept changing under concurrent updates".into())
}

impl NatsBus {
    /// Reads a key's parking and its revision from the bucket's stream leader: a KV read may be a
    /// direct get that a replica answers from behind, and a stale "not the head" would
    /// leave a key parked for good.
    async fn parking(&self, name: &str) -> Result<Option<(Parking, u64)>, BusError> {
        let bucket = self.names.parking_bucket();
        let stream = self.js.get_stream_no_info(format!("KV_{bucket}")).await.map_err(unavailable)?;
        let stored = match stream.get_last_raw_message_by_subject(&format!("$KV.{bucket}.{name}")).await {
            Ok(stored) => stored,
            Err(e) if matches!(e.kind(), stream::LastRawMessageErrorKind::NoMessageFound) => return Ok(None),
            Err(e) => return Err(unavailable(e)),
        };
        if stored.headers.get("KV-Operation").is_some() {
            return Ok(None); // deleted or purged
        }
        let parking = serde_json::from_slice(&stored.payload)
            .map_err(|e| BusError::Unavailable(format!("unreadable parking {name}: {e}")))?;
        Ok(Some((parking, stored.sequence)))
    }

    /// The key's parking as this attachment remembers it (then `true`), or as the server has it.
    async fn current(&self, name: &str, seen: &mut Option<Seen>) -> Result<(Parking, u64, bool), BusError> {
        Ok(match seen.take() {
            Some(seen) => (seen.parking, seen.revision, true),
            None => {
                let (parking, revision) = self.parking(name).await?.unwrap_or_default();
                (parking, revision, false)
            }
        })
    }

    /// Writes `parking` if the entry is still at `revision` (0: if there is none); `None`
    /// when it is not.
    async fn swap(
        &self,
        bucket: &kv::Store,
        name: &str,
        parking: Parking,
        revision: u64,
    ) -> Result<Option<Seen>, BusError> {
        let written = if revision == 0 {
            match bucket.create(name, encode(&parking).into()).await {
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => return Ok(None),
                written => written.map_err(unavailable)?,
            }
        } else {
            match bucket.update(name, encode(&parking).into(), revision).await {
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => return Ok(None),
                written => written.map_err(unavailable)?,
            }
        };
        Ok(Some(Seen { parking, revision: written }))
    }

    /// Decides whether a per-key consumer's message at `seq` of its stream is delivered
    /// or parked, recording it in its key's parking. `seen` is the key's parking as this
    /// attachment last saw it, if it remembers.
    pub(super) async fn admit(
        &self,
        consumer: &str,
        key: &str,
        id: &str,
        seq: u64,
        mut seen: Option<Seen>,
    ) -> Result<Admission, BusError> {
        let bucket = self.parking_bucket().await?;
        let name = parking_key(consumer, key);
        for _ in 0..CAS_ROUNDS {
            let (mut parking, revision, remembered) = self.current(&name, &mut seen).await?;
            if parking.is_head(id) {
                if remembered {
                    continue; // only what the server says makes it the head
                }
                return Ok(Admission::Deliver(Seen { parking, revision }));
            }
            if parking.parked.iter().any(|p| p.id == id) {
                return Ok(Admission::Known);
            }
            let deliver = parking.head.is_none();
            if deliver {
                parking.head = Some(id.to_owned());
            } else {
                // New, or kept by an attachment that died: parked either way.
                parking.park(&[Position { id: id.to_owned(), seq }]);
            }
            let parked = parking.parked.len();
            if let Some(written) = self.swap(&bucket, &name, parking, revision).await? {
                if deliver {
                    return Ok(Admission::Deliver(written));
                }
                debug!(consumer, key, event = id, parked, "parked behind its key");
                return Ok(Admission::Parked);
            }
        }
        Err(lost_race())
    }

    /// Records the messages this attachment keeps in memory behind the head `id` of
    /// their key. `None` when `id` is not the head (they must not be delivered here).
    pub(super) async fn keep(
        &self,
        consumer: &str,
        key: &str,
        id: &str,
        kept: &[Position],
        mut seen: Option<Seen>,
    ) -> Result<Option<Seen>, BusError> {
        let bucket = self.parking_bucket().await?;
        let name = parking_key(consumer, key);
        for _ in 0..CAS_ROUNDS {
            let (mut parking, revision, remembered) = self.current(&name, &mut seen).await?;
            if !parking.is_head(id) {
                if remembered {
                    continue;
                }
                return Ok(None);
            }
            parking.keep(kept);
            if let Some(written) = self.swap(&bucket, &name, parking, revision).await? {
                return Ok(Some(written));
            }
        }
        Err(lost_race())
    }

    /// Ends the turn of `id` as its key's head: the oldest kept or parked message becomes the
    /// head, or the key is free. A next head that is not kept in memory here (positions
    /// `here`) is published again: waiting for the server to redeliver it would wait for
    /// good if it was acknowledged already.
    pub(super) async fn release(
        &self,
        consumer: &str,
        key: &str,
        id: &str,
        here: &[u64],
        mut seen: Option<Seen>,
    ) -> Result<Release, BusError> {
        let bucket = self.parking_bucket().await?;
        let name = parking_key(consumer, key);
        for _ in 0..CAS_ROUNDS {
            let (mut parking, revision, remembered) = self.current(&name, &mut seen).await?;
            if !parking.is_head(id) {
                if remembered {
                    continue; // only what the server says makes it not the head
                }
                return Ok(Release::NotHead);
            }
            let next = parking.take_next().map(|(next, parked)| {
                let copied = parked || !here.contains(&next.seq);
                (next, copied)
            });
            if let Some((next, true)) = &next {
                self.redeliver_parked(consumer, next).await?;
            }
            parking.head = next.as_ref().map(|(p, _)| p.id.clone());
            if let Some(written) = self.swap(&bucket, &name, parking, revision).await? {
                debug!(consumer, key, head = ?written.parking.head, "released its key");
                return Ok(match next {
                    Some((_, true)) => Release::Moved,
                    Some((kept, false)) => Release::Kept(kept, written),
                    None => Release::Ended(written),
                });
            }
        }
        Err(lost_race())
    }

    /// Parks the messages kept behind the head `id` of their key, which is now retrying
    /// or dead. False when `id` is not the head (they are not taken then).
    pub(super) async fn park_kept(
        &self,
        consumer: &str,
        key: &str,
        id: &str,
        kept: &[Position],
    ) -> Result<bool, BusError> {
        let bucket = self.parking_bucket().await?;
        let name = parking_key(consumer, key);
        for _ in 0..CAS_ROUNDS {
            let Some((mut parking, revision)) = self.parking(&name).await? else { return Ok(false) };
            if !parking.is_head(id) {
                return Ok(false);
            }
            parking.park(kept);
            if self.swap(&bucket, &name, parking, revision).await?.is_some() {
                return Ok(true);
            }
        }
        Err(lost_race())
    }

    /// Publishes a parked (or lost kept) message again on its consumer's subject.
    async fn redeliver_parked(&self, consumer: &str, parked: &Position) -> Result<(), BusError> {
        let stored = self
            .js
            .get_stream_no_info(self.names.consumer_stream(consumer))
            .await
            .map_err(unavailable)?
            .get_raw_message(parked.seq)
            .await
            .map_err(unavailable)?;
        let message = super::streams::message(Some(&stored.headers), &stored.payload).ok_or_else(|| {
            BusError::Unavailable(format!("parked message {} lost its headers", parked.seq))
        })?;
        self.redeliver(consumer, &message, &uuid::Uuid::now_v7().to_string()).await
    }

    /// How many messages wait behind `id` on its key (0 when it is not the head).
    pub(super) async fn parked_behind(&self, consumer: &str, key: &str, id: &str) -> Result<u64, BusError> {
        self.parking_bucket().await?;
        Ok(match self.parking(&parking_key(consumer, key)).await? {
            Some((parking, _)) if parking.is_head(id) => (parking.parked.len() + parking.kept.len()) as u64,
            _ => 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{Parking, Position};

    fn at(id: &str, seq: u64) -> Position {
        Position { id: id.into(), seq }
    }

    #[test]
    fn the_next_head_is_the_oldest_of_the_kept_and_parked_messages() {
        let mut parking = Parking { head: Some("h".into()), ..Parking::default() };
        parking.park(&[at("n", 9)]);
        parking.keep(&[at("b", 3), at("a", 2)]);
        parking.keep(&[at("n", 9), at("a", 2)]);
        let order: Vec<_> =
            std::iter::from_fn(|| parking.take_next()).map(|(p, parked)| (p.id, parked)).collect();
        assert_eq!(order, [("a".to_owned(), false), ("b".to_owned(), false), ("n".to_owned(), true)]);
    }

    #[test]
    fn parking_a_kept_message_moves_it() {
        let mut parking = Parking { head: Some("h".into()), ..Parking::default() };
        parking.keep(&[at("a", 2), at("b", 3)]);
        parking.park(&[at("b", 3)]);
        assert_eq!(parking.kept, [at("a", 2)]);
        assert_eq!(parking.parked, [at("b", 3)]);
    }
}
