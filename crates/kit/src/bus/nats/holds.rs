//! Per-key holds: what keeps a per-key consumer's messages of one key one at a time, in
//! order, and parks them behind a retried or dead one.
//!
//! A hold is one KV entry per consumer and key: the head (the event being delivered,
//! retried or dead; none when the key is free) and the events parked behind it, as
//! positions in the consumer's own stream. The attachment that delivered a head keeps
//! the key's later messages in memory, unacknowledged on the server, and on the head's
//! ack hands the head over to the first of them (one compare-and-set, no copy). Messages
//! are *parked* only when the head is retrying or dead, or held by another attachment:
//! recorded in the hold, then acknowledged on the consumer. Releasing a head with parked
//! messages publishes the oldest again on the consumer's subject, where it arrives as the
//! new head (attempt 1). A freed hold stays, headless, so taking the key again is one
//! compare-and-set on the revision this attachment last saw.
//!
//! Every change is a compare-and-set on the entry's revision, and the steps are ordered
//! so every crash point is safe:
//! - park: record in the hold, then ack (a crash redelivers it; it is found parked);
//! - release: publish the next copy, then move the head, then ack the old head (a crash
//!   before moving the head drops the copy as parked and publishes another on the next
//!   release; a crash after it redelivers the old head, delivered once more, which the
//!   consumer's inbox absorbs);
//! - messages kept in memory are unacknowledged, so a crash redelivers them.
//!
//! A message that is neither the head nor parked is taken as new, whatever its position:
//! after a crash the server redelivers old messages later than it delivers new ones, so
//! position cannot tell an old copy from a message never seen, and dropping the latter
//! would lose it.

use async_nats::jetstream::kv;
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
struct Hold {
    /// The event id of the head; none when the key is free.
    head: Option<String>,
    parked: Vec<Position>,
}

impl Hold {
    fn is_head(&self, id: &str) -> bool {
        self.head.as_deref() == Some(id)
    }
}

/// A hold as this attachment last read or wrote it, with its revision: the expected
/// revision of its next compare-and-set, saving a read when nobody else changed it.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    hold: Hold,
    revision: u64,
}

/// What a per-key consumer does with a message it pulled.
#[derive(Debug, Clone)]
pub(super) enum Admission {
    /// It is its key's head: deliver it.
    Deliver(Seen),
    /// It was parked behind its key's head: ack it on the consumer, deliver nothing.
    Parked,
    /// A copy of something handled already: ack it, deliver nothing.
    Known,
}

/// What releasing a head did.
#[derive(Debug, Clone)]
pub(super) enum Release {
    /// A parked message is the head now, published again; the messages behind were parked.
    Moved,
    /// The first message behind is the head now: deliver it.
    Next(Seen),
    /// Nothing was behind: the key is free.
    Ended(Seen),
    /// The message was not its key's head (any more): the messages behind are not taken.
    NotHead,
}

/// Adds `behind` to the parked messages, in stream order, once each.
fn park(hold: &mut Hold, behind: &[Position]) {
    for position in behind {
        if !hold.parked.iter().any(|p| p.id == position.id) {
            hold.parked.push(position.clone());
        }
    }
    hold.parked.sort_by_key(|p| p.seq);
}

fn hold_key(consumer: &str, key: &str) -> String {
    format!("{}.{}", token(consumer), token(key))
}

fn decode(entry: &kv::Entry) -> Result<Option<Hold>, BusError> {
    if entry.operation != kv::Operation::Put {
        return Ok(None);
    }
    serde_json::from_slice(&entry.value)
        .map(Some)
        .map_err(|e| BusError::Unavailable(format!("unreadable hold {}: {e}", entry.key)))
}

fn encode(hold: &Hold) -> Vec<u8> {
    serde_json::to_vec(hold).expect("a hold serializes")
}

fn lost_race() -> BusError {
    BusError::Unavailable("a per-key hold kept changing under concurrent updates".into())
}

impl NatsBus {
    async fn hold(&self, bucket: &kv::Store, name: &str) -> Result<Option<(Hold, u64)>, BusError> {
        match bucket.entry(name).await.map_err(unavailable)? {
            Some(entry) => Ok(decode(&entry)?.map(|hold| (hold, entry.revision))),
            None => Ok(None),
        }
    }

    /// Writes `hold` if the entry is still at `revision` (0: if there is none); `None`
    /// when it is not.
    async fn swap(
        &self,
        bucket: &kv::Store,
        name: &str,
        hold: Hold,
        revision: u64,
    ) -> Result<Option<Seen>, BusError> {
        let written = if revision == 0 {
            match bucket.create(name, encode(&hold).into()).await {
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => return Ok(None),
                written => written.map_err(unavailable)?,
            }
        } else {
            match bucket.update(name, encode(&hold).into(), revision).await {
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => return Ok(None),
                written => written.map_err(unavailable)?,
            }
        };
        Ok(Some(Seen { hold, revision: written }))
    }

    /// Decides whether a per-key consumer's message at `seq` of its stream is delivered,
    /// parked or already parked, recording it in its key's hold. `seen` is the key's hold
    /// as this attachment last saw it, if it remembers.
    pub(super) async fn admit(
        &self,
        consumer: &str,
        key: &str,
        id: &str,
        seq: u64,
        mut seen: Option<Seen>,
    ) -> Result<Admission, BusError> {
        let bucket = self.hold_bucket().await?;
        let name = hold_key(consumer, key);
        for _ in 0..CAS_ROUNDS {
            let remembered = seen.is_some();
            let (mut hold, revision) = match seen.take() {
                Some(seen) => (seen.hold, seen.revision),
                None => self.hold(&bucket, &name).await?.unwrap_or_default(),
            };
            if hold.is_head(id) {
                if remembered {
                    continue; // only what the server says makes it the head
                }
                return Ok(Admission::Deliver(Seen { hold, revision }));
            }
            let admission = if hold.head.is_none() {
                hold.head = Some(id.to_owned());
                None
            } else if hold.parked.iter().any(|p| p.id == id) {
                return Ok(Admission::Known);
            } else {
                hold.parked.push(Position { id: id.to_owned(), seq });
                Some(Admission::Parked)
            };
            let parked = hold.parked.len();
            if let Some(written) = self.swap(&bucket, &name, hold, revision).await? {
                if admission.is_some() {
                    debug!(consumer, key, event = id, parked, "parked behind its key");
                }
                return Ok(admission.unwrap_or(Admission::Deliver(written)));
            }
        }
        Err(lost_race())
    }

    /// Ends the hold of `id` on its key, given the messages this attachment pulled behind
    /// it (in order, not yet acknowledged on the server): the oldest parked message becomes
    /// the head and is delivered again, and `behind` is parked after it; or, with nothing
    /// parked, the first of `behind` becomes the head; or the key is free.
    pub(super) async fn release(
        &self,
        consumer: &str,
        key: &str,
        id: &str,
        behind: &[Position],
        mut seen: Option<Seen>,
    ) -> Result<Release, BusError> {
        let bucket = self.hold_bucket().await?;
        let name = hold_key(consumer, key);
        for _ in 0..CAS_ROUNDS {
            let remembered = seen.is_some();
            let (mut hold, revision) = match seen.take() {
                Some(seen) => (seen.hold, seen.revision),
                None => self.hold(&bucket, &name).await?.unwrap_or_default(),
            };
            if !hold.is_head(id) {
                if remembered {
                    continue; // only what the server says makes it not the head
                }
                return Ok(Release::NotHead);
            }
            let moved = !hold.parked.is_empty();
            if moved {
                let next = hold.parked.remove(0);
                self.redeliver_parked(consumer, &next).await?;
                hold.head = Some(next.id);
                park(&mut hold, behind);
            } else {
                hold.head = behind.first().map(|next| next.id.clone());
            }
            let head = hold.head.clone();
            if let Some(written) = self.swap(&bucket, &name, hold, revision).await? {
                debug!(consumer, key, head = ?head, "released its key");
                return Ok(match (moved, head) {
                    (true, _) => Release::Moved,
                    (false, Some(_)) => Release::Next(written),
                    (false, None) => Release::Ended(written),
                });
            }
        }
        Err(lost_race())
    }

    /// Parks `behind` (pulled by this attachment, not yet acknowledged) behind the head
    /// `id` of their key, which is now retrying or dead. False when `id` is not the head.
    pub(super) async fn park_behind(
        &self,
        consumer: &str,
        key: &str,
        id: &str,
        behind: &[Position],
    ) -> Result<bool, BusError> {
        let bucket = self.hold_bucket().await?;
        let name = hold_key(consumer, key);
        for _ in 0..CAS_ROUNDS {
            let Some((mut hold, revision)) = self.hold(&bucket, &name).await? else { return Ok(false) };
            if !hold.is_head(id) {
                return Ok(false);
            }
            park(&mut hold, behind);
            if self.swap(&bucket, &name, hold, revision).await?.is_some() {
                return Ok(true);
            }
        }
        Err(lost_race())
    }

    /// Publishes a parked message again on its consumer's subject.
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

    /// How many messages are parked behind `id` on its key (0 when it is not the head).
    pub(super) async fn parked_behind(&self, consumer: &str, key: &str, id: &str) -> Result<u64, BusError> {
        let bucket = self.hold_bucket().await?;
        Ok(match self.hold(&bucket, &hold_key(consumer, key)).await? {
            Some((hold, _)) if hold.is_head(id) => hold.parked.len() as u64,
            _ => 0,
        })
    }
}
