//! The dead-letter stream: one message per dead letter, on the subject of its consumer,
//! holding the original message, the error and the attempts.

use async_nats::jetstream::{self, stream};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{NatsBus, unavailable};
use crate::bus::{BusError, DeadLetter, DeadLetterFilter, Message};

/// A dead letter as stored: JSON, because an error text may hold anything a header cannot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Record {
    pub consumer: String,
    pub message: StoredMessage,
    pub attempts: u32,
    pub error: String,
    pub failed_at_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StoredMessage {
    pub id: String,
    pub stream: String,
    pub seq: u64,
    pub key: String,
    pub body: Vec<u8>,
}

impl Record {
    pub fn new(consumer: &str, message: &Message, attempts: u32, error: &str) -> Self {
        Self {
            consumer: consumer.to_owned(),
            message: StoredMessage {
                id: message.id.clone(),
                stream: message.stream.clone(),
                seq: message.seq,
                key: message.key.clone(),
                body: message.body.clone(),
            },
            attempts,
            error: error.to_owned(),
            failed_at_ms: crate::clock::now_ms(),
        }
    }

    pub fn message(&self) -> Message {
        let m = &self.message;
        Message {
            id: m.id.clone(),
            stream: m.stream.clone(),
            seq: m.seq,
            key: m.key.clone(),
            body: m.body.clone(),
        }
    }

    pub fn into_dead_letter(self, parked: u64) -> DeadLetter {
        DeadLetter {
            message: self.message(),
            consumer: self.consumer,
            attempts: self.attempts,
            error: self.error,
            failed_at_ms: self.failed_at_ms,
            parked,
        }
    }

    fn matches(&self, filter: &DeadLetterFilter) -> bool {
        let is = |wanted: &Option<String>, value: &str| wanted.as_deref().is_none_or(|w| w == value);
        is(&filter.consumer, &self.consumer)
            && is(&filter.event_id, &self.message.id)
            && is(&filter.stream, &self.message.stream)
            && is(&filter.key, &self.message.key)
    }
}

impl NatsBus {
    /// Stores a dead letter; `letter_id` makes storing the same one twice a no-op.
    pub(super) async fn store_dead_letter(&self, record: &Record, letter_id: &str) -> Result<(), BusError> {
        self.dead_letter_stream().await?;
        let body = serde_json::to_vec(record).expect("a dead letter serializes");
        let publish = jetstream::message::PublishMessage::build().message_id(letter_id).payload(body.into());
        self.js
            .send_publish(self.names.dead_letter_subject(Some(&record.consumer)), publish)
            .await
            .map_err(unavailable)?
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The stored dead letters matching `filter`, with their positions in the stream, in
    /// the order they died.
    pub(super) async fn matching_dead_letters(
        &self,
        filter: &DeadLetterFilter,
    ) -> Result<Vec<(u64, Record)>, BusError> {
        let dead = self.dead_letter_stream().await?;
        let subject = self.names.dead_letter_subject(filter.consumer.as_deref());
        let mut found = Vec::new();
        let mut from = 1;
        loop {
            let stored =
                match dead.raw_message_builder().sequence(from).next_by_subject(&subject).send().await {
                    Ok(stored) => stored,
                    Err(e) if matches!(e.kind(), stream::LastRawMessageErrorKind::NoMessageFound) => break,
                    Err(e) => return Err(unavailable(e)),
                };
            from = stored.sequence + 1;
            match serde_json::from_slice::<Record>(&stored.payload) {
                Ok(record) if record.matches(filter) => found.push((stored.sequence, record)),
                Ok(_) => {}
                Err(e) => warn!(seq = stored.sequence, error = %e, "skipping an unreadable dead letter"),
            }
        }
        Ok(found)
    }

    pub(super) async fn delete_dead_letter(&self, seq: u64) -> Result<(), BusError> {
        self.dead_letter_stream().await?.delete_message(seq).await.map_err(unavailable)?;
        Ok(())
    }
}
