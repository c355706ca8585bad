//! Payload schema versions and the upcasters that read old payloads as new ones.

use std::collections::HashMap;

use crate::envelope::{Envelope, EnvelopeError};

type Upcaster = Box<dyn Fn(serde_json::Value) -> Result<serde_json::Value, String> + Send + Sync>;

/// The payload schemas a consumer understands: the current version per event kind and
/// one upcaster per older version, applied step by step (v1 → v2 → … → current).
///
/// Kinds it does not know pass through untouched; a handler ignores kinds it does not
/// consume. A known kind with a newer or unreachable version is an error, so the event
/// goes to dead letters instead of being misread.
#[derive(Default)]
pub struct Schemas {
    current: HashMap<String, u32>,
    upcasters: HashMap<(String, u32), Upcaster>,
}

impl Schemas {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares the schema version this build writes and reads for `kind`.
    pub fn current(mut self, kind: &str, version: u32) -> Self {
        self.current.insert(kind.to_owned(), version);
        self
    }

    /// Registers the conversion of a `kind` payload from schema `from` to `from + 1`.
    pub fn upcast(
        mut self,
        kind: &str,
        from: u32,
        f: impl Fn(serde_json::Value) -> Result<serde_json::Value, String> + Send + Sync + 'static,
    ) -> Self {
        self.upcasters.insert((kind.to_owned(), from), Box::new(f));
        self
    }

    /// Parses bytes read from the bus and upcasts the payload to the current schema.
    pub fn decode(&self, bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        let envelope: Envelope =
            serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        self.upcast_envelope(envelope)
    }

    fn upcast_envelope(&self, mut envelope: Envelope) -> Result<Envelope, EnvelopeError> {
        let Some(&current) = self.current.get(&envelope.kind) else {
            return Ok(envelope);
        };
        if envelope.schema > current || envelope.schema == 0 {
            return Err(EnvelopeError::UnknownSchema {
                kind: envelope.kind,
                schema: envelope.schema,
                current,
            });
        }
        while envelope.schema < current {
            let from = envelope.schema;
            let step = self
                .upcasters
                .get(&(envelope.kind.clone(), from))
                .ok_or_else(|| EnvelopeError::MissingUpcaster { kind: envelope.kind.clone(), from })?;
            envelope.payload = step(envelope.payload).map_err(|reason| EnvelopeError::Upcast {
                kind: envelope.kind.clone(),
                from,
                reason,
            })?;
            envelope.schema = from + 1;
        }
        Ok(envelope)
    }
}
