//! Per-key holds: what keeps a per-key consumer's messages of one key one at a time, in
//! order, and parks them behind a retried or dead one.
//!
//! A hold is one KV entry per consumer and key: the head (the event being delivered,
//! retried or dead) and the events parked behind it, as positions in the consumer's own
//! stream. A parked message is acknowledged on the consumer once the hold records it, so
//! the server does not redeliver it; releasing publishes it again on the consumer's
//! subject, where it arrives as the head. Each step is a compare-and-set on the entry's
//! revision and the order of steps makes every crash point safe:
//! - park: record in the hold, then ack (a crash redelivers it; it is found parked);
//! - release: publish the next copy, then move the head, then ack the old head (a crash
//!   before moving the head drops the copy as parked and publishes another on the next
//!   release; a crash after it redelivers the old head, which is then a known old one).

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use tracing::debug;

use super::streams::token;
use super::{NatsBus, unavailable};
use crate::bus::BusError;

/// How often a compare-and-set is tried again after losing a race.
const CAS_ROUNDS: usize = 16;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Parked {
    id: String,
    /// Position in the consumer's stream.
    seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Hold {
    /// The event id of the head.
    head: String,
    parked: Vec<Parked>,
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
            hold.parked.push(Parked { id: id.to_owned(), seq });
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

    /// Ends the hold of `id` on its key: the next parked message becomes the head and is
    /// delivered again, or the hold goes when nothing is parked. Does nothing when `id` is
    /// not the head (it was released already).
    pub(super) async fn release(&self, consumer: &str, key: &str, id: &str) -> Result<(), BusError> {
        let bucket = self.hold_bucket().await?;
        let name = hold_key(consumer, key);
        for _ in 0..CAS_ROUNDS {
            let Some((mut hold, revision)) = self.hold(&bucket, &name).await? else { return Ok(()) };
            if hold.head != id {
                return Ok(());
            }
            if hold.parked.is_empty() {
                match bucket.delete_expect_revision(&name, Some(revision)).await {
                    Ok(()) => return Ok(()),
                    Err(_) if self.hold(&bucket, &name).await?.is_some_and(|(_, r)| r != revision) => {
                        continue;
                    }
                    Err(e) => return Err(unavailable(e)),
                }
            }
            let next = hold.parked.remove(0);
            let stored = self
                .js
                .get_stream_no_info(self.names.consumer_stream(consumer))
                .await
                .map_err(unavailable)?
                .get_raw_message(next.seq)
                .await
                .map_err(unavailable)?;
            let message =
                super::streams::message(Some(&stored.headers), &stored.payload).ok_or_else(|| {
                    BusError::Unavailable(format!("parked message {} lost its headers", next.seq))
                })?;
            self.redeliver(consumer, &message, &uuid::Uuid::now_v7().to_string()).await?;
            hold.head = next.id;
            match bucket.update(&name, encode(&hold).into(), revision).await {
                Ok(_) => {
                    debug!(consumer, key, event = %hold.head, parked = hold.parked.len(), "released the next of its key");
                    return Ok(());
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(lost_race())
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
