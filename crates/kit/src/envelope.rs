//! The event envelope of DESIGN §2 and the validated names it carries.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// A stream name: the producing service, also used as a bus subject token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamName(String);

impl StreamName {
    /// Accepts lowercase letters, digits, `-` and `_`, 1 to 64 characters.
    pub fn parse(name: &str) -> Result<Self, EnvelopeError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if valid { Ok(Self(name.to_owned())) } else { Err(EnvelopeError::InvalidStream(name.to_owned())) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StreamName {
    type Error = EnvelopeError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<StreamName> for String {
    fn from(value: StreamName) -> Self {
        value.0
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An event's identity and dedup key: a UUID v7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(Uuid);

impl EventId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn parse(text: &str) -> Result<Self, EnvelopeError> {
        Uuid::parse_str(text).map(Self).map_err(|_| EnvelopeError::InvalidId(text.to_owned()))
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A committed domain event as it travels between services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: EventId,
    pub stream: StreamName,
    /// Position in the producing stream, contiguous in commit order.
    pub seq: u64,
    pub kind: String,
    /// The aggregate id; events of one key keep their order.
    pub key: String,
    /// The aggregate's version after this change.
    pub version: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    /// The payload's schema version, upcast on read when older than the current one.
    pub schema: u32,
    pub payload: serde_json::Value,
}

impl Envelope {
    /// Serializes the envelope as the JSON carried by the outbox and the bus.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope always serializes")
    }

    /// Deserializes a payload into the handler's type, naming the event on failure.
    pub fn payload_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, EnvelopeError> {
        serde_json::from_value(self.payload.clone()).map_err(|e| EnvelopeError::Payload {
            kind: self.kind.clone(),
            schema: self.schema,
            reason: e.to_string(),
        })
    }

    /// Deserializes a payload that must be about this event's aggregate: `key_of` names the
    /// aggregate the payload describes, and it must be the event's key (the ordering key),
    /// else the event is malformed.
    pub fn keyed_payload<T: serde::de::DeserializeOwned>(
        &self,
        key_of: impl FnOnce(&T) -> &str,
    ) -> Result<T, EnvelopeError> {
        let payload = self.payload_as()?;
        let about = key_of(&payload);
        if about != self.key {
            return Err(EnvelopeError::KeyMismatch {
                kind: self.kind.clone(),
                key: self.key.clone(),
                about: about.to_owned(),
            });
        }
        Ok(payload)
    }

    /// Milliseconds since the Unix epoch at which the event occurred.
    pub fn occurred_at_ms(&self) -> u64 {
        (self.occurred_at.unix_timestamp_nanos() / 1_000_000).max(0) as u64
    }
}

/// An event a service is about to commit; the outbox gives it id, stream, seq and time.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub kind: String,
    pub key: String,
    pub version: u64,
    pub schema: u32,
    pub payload: serde_json::Value,
    pub correlation_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
}

impl NewEvent {
    /// Builds a schema-1 event from any serializable payload.
    pub fn new(
        kind: impl Into<String>,
        key: impl Into<String>,
        version: u64,
        payload: impl Serialize,
    ) -> Self {
        Self {
            kind: kind.into(),
            key: key.into(),
            version,
            schema: 1,
            payload: serde_json::to_value(payload).expect("payloads serialize to json"),
            correlation_id: None,
            causation_id: None,
        }
    }

    pub fn schema(mut self, schema: u32) -> Self {
        self.schema = schema;
        self
    }

    /// Marks the event as caused by `cause`, continuing its correlation.
    pub fn caused_by(mut self, cause: &Envelope) -> Self {
        self.correlation_id = Some(cause.correlation_id);
        self.causation_id = Some(cause.id.as_uuid());
        self
    }

    pub fn correlated(mut self, correlation_id: Uuid) -> Self {
        self.correlation_id = Some(correlation_id);
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("invalid stream name {0:?}: expected 1-64 of [a-z0-9_-]")]
    InvalidStream(String),
    #[error("invalid event id {0:?}: expected a uuid")]
    InvalidId(String),
    #[error("malformed envelope: {0}")]
    Malformed(String),
    #[error("unknown schema version {schema} for event kind {kind:?} (this build reads up to {current})")]
    UnknownSchema { kind: String, schema: u32, current: u32 },
    #[error("no upcaster for event kind {kind:?} from schema {from}")]
    MissingUpcaster { kind: String, from: u32 },
    #[error("upcasting {kind:?} from schema {from} failed: {reason}")]
    Upcast { kind: String, from: u32, reason: String },
    #[error("payload of {kind:?} (schema {schema}) does not fit: {reason}")]
    Payload { kind: String, schema: u32, reason: String },
    #[error("{kind} has key {key:?} but its payload is about {about:?}")]
    KeyMismatch { kind: String, key: String, about: String },
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn envelope(key: &str, payload: serde_json::Value) -> Envelope {
        Envelope {
            id: EventId::new(),
            stream: StreamName::parse("orders").unwrap(),
            seq: 1,
            kind: "OrderPlaced".into(),
            key: key.into(),
            version: 1,
            occurred_at: OffsetDateTime::now_utc(),
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            schema: 1,
            payload,
        }
    }

    #[derive(Debug, serde::Deserialize)]
    struct Order {
        id: String,
    }

    #[test]
    fn a_keyed_payload_must_be_about_the_events_key() {
        fn about(o: &Order) -> &str {
            &o.id
        }
        let fits = envelope("o-1", json!({ "id": "o-1" })).keyed_payload(about).unwrap();
        assert_eq!(fits.id, "o-1");
        let misfiled = envelope("o-1", json!({ "id": "o-2" })).keyed_payload(about).unwrap_err();
        assert_eq!(misfiled.to_string(), "OrderPlaced has key \"o-1\" but its payload is about \"o-2\"");
        let unreadable = envelope("o-1", json!({ "name": "x" })).keyed_payload(about).unwrap_err();
        assert!(matches!(unreadable, EnvelopeError::Payload { .. }), "{unreadable}");
    }
}
