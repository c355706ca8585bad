//! Per-key holds: what keeps a per-key consumer's messages of one key one at a time, in
//! order, and parks them behind a retried or dead one.
//!
//! A hold is one KV entry per consumer and key: the head (the event being delivered,
//! retried or dead), the events parked behind it (as positions in the consumer's own
//! stream) and the highest position it has taken in. The attachment that delivered a
//! head keeps the key's later messages in memory, unacknowledged on the server, and on
//! the head's ack hands the head over to the first of them (one compare-and-set, no
//! copy). Messages are *parked* only when the head is retrying or dead, or held by
//! another attachment: recorded in the hold, then acknowledged on the consumer. Releasing
//! a head with parked messages publishes the oldest again on the consumer's subject,
//! where it arrives as the new head (attempt 1).
//!
//! Every change is a compare-and-set on the entry's revision, and the steps are ordered
//! so every crash point is safe:
//! - park: record in the hold, then ack (a crash redelivers it; it is found parked);
//! - release: publish the next copy, then move the head, then ack the old head (a crash
//!   before moving the head drops the copy as parked and publishes another on the next
//!   release; a crash after it redelivers the old head, which is then known as old);
//! - messages kept in memory are unacknowledged, so a crash redelivers them.

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

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Hold {
    /// The event id of the head.
    head: String,
    parked: Vec<Position>,
    /// The highest consumer-stream position this hold has taken in: anything at or below
    /// it that is not the head was handled already.
    max_seq: u64,
}

/// What a per-key consumer does with a message it pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// It is its key's head: deliver it.
    Deliver,
    /// It was parked behind its key's head: ack it on the consumer, deliver nothing.
    Parked,
    /// A copy of something handled already: ack it, deliver nothing.
    Known,
}

/// What releasing a head did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Release {
    /// A parked message is the head now, published again; the messages behind were parked.
    Moved,
    /// The first message behind is the head now: deliver it.
    Next,
    /// Nothing was behind: the key is free.
    Ended,
    /// The message was not its key's head (any more): the messages behind are not taken.
    NotHead,
}

/// Adds `behind` to the parked messages, in stream order, once each.
fn park(hold: &mut Hold, behind: &[Position]) {
    for position in behind {
        if !hold.parked.iter().any(|p| p.id == position.id) {
            hold.parked.push(position.clone());
        }
        hold.max_seq = hold.max_seq.max(position.seq);
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

    /// Decides whether a per-key consumer's message at `seq` of its stream is delivered,
    /// parked or already known, recording it in its key's hold.
    pub(super) async fn admit(
        &self,
        consumer: &str,
        key: &str,
        id: &str,
        seq: u64,
    ) -> Result<Admission, BusError> {
        let bucket = self.hold_bucket().await?;
        let name = hold_key(consumer, key);
        for _ in 0..CAS_ROUNDS {
            let Some((mut hold, revision)) = self.hold(&bucket, &name).await? else {
                let hold = Hold { head: id.to_owned(), parked: Vec::new(), max_seq: seq };
                match bucket.create(&name, encode(&hold).into()).await {
                    Ok(_) => return Ok(Admission::Deliver),
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(unavailable(e)),
                }
            };
            if hold.head == id {
                return Ok(Admission::Deliver);
            }
            if hold.parked.iter().any(|p| p.id == id) || seq <= hold.max_seq {
                return Ok(Admission::Known);
            }
            hold.parked.push(Position { id: id.to_owned(), seq });
            hold.max_seq = seq;
            match bucket.update(&name, encode(&hold).into(), revision).await {
                Ok(_) => {
                    debug!(consumer, key, event = id, parked = hold.parked.len(), "parked behind its key");
                    return Ok(Admission::Parked);
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(lost_race())
    }

    /// Ends the hold of `id` on its key, given the messages this attachment pulled behind
    /// it (in order, not yet acknowledged on the server): the oldest parked message becomes
    /// the head and is delivered again, and `behind` is parked after it; or, with nothing
    /// parked, the first of `behind` becomes the head; or the hold goes.
    pub(super) async fn release(
        &self,
        consumer: &str,
        key: &str,
        id: &str,
        behind: &[Position],
    ) -> Result<Release, BusError> {
        let bucket = self.hold_bucket().await?;
        let name = hold_key(consumer, key);
        for _ in 0..CAS_ROUNDS {
            let Some((mut hold, revision)) = self.hold(&bucket, &name).await? else {
                return Ok(Release::NotHead);
            };
            if hold.head != id {
                return Ok(Release::NotHead);
            }
            let release = if !hold.parked.is_empty() {
                let next = hold.parked.remove(0);
                self.redeliver_parked(consumer, &next).await?;
                hold.head = next.id;
                park(&mut hold, behind);
                Release::Moved
            } else if let Some(next) = behind.first() {
                hold.head = next.id.clone();
                hold.max_seq = hold.max_seq.max(next.seq);
                Release::Next
            } else {
                match bucket.delete_expect_revision(&name, Some(revision)).await {
                    Ok(()) => return Ok(Release::Ended),
                    Err(_) if self.hold(&bucket, &name).await?.is_some_and(|(_, r)| r != revision) => {
                        continue;
                    }
                    Err(e) => return Err(unavailable(e)),
                }
            };
            match bucket.update(&name, encode(&hold).into(), revision).await {
                Ok(_) => {
                    debug!(consumer, key, event = %hold.head, parked = hold.parked.len(), "released the next of its key");
                    return Ok(release);
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(unavailable(e)),
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
            if hold.head != id {
                return Ok(false);
            }
            park(&mut hold, behind);
            match bucket.update(&name, encode(&hold).into(), revision).await {
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(unavailable(e)),
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
            Some((hold, _)) if hold.head == id => hold.parked.len() as u64,
            _ => 0,
        })
    }
}
