//! Where things live on the server: the names of streams, subjects and keys, the stream
//! and consumer configurations, and the headers that carry a message's identity.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};

use super::{NatsBus, unavailable};
use crate::bus::{BusError, ConsumerSpec, Message};

/// The event id; unlike `Nats-Msg-Id` it stays the same on released and replayed copies.
const ID: &str = "Capshop-Id";
const STREAM: &str = "Capshop-Stream";
const SEQ: &str = "Capshop-Seq";
const KEY: &str = "Capshop-Key";
/// On a released copy: the attempts the message had used before it was released, which
/// the copy's own delivered count continues from.
const ATTEMPTS_USED: &str = "Capshop-Attempts-Used";

/// The durable names of the JetStream consumers on a capshop consumer's stream: of the
/// sourced messages, and of the copies published on the consumer's own subject.
const DURABLE: &str = "bus";
const DURABLE_COPIES: &str = "copies";

/// Deliveries past `max_attempts` that the server still makes: the first of them only
/// turns the message into a dead letter; the others cover a crash in between.
const SPARE_DELIVERIES: i64 = 3;

/// How many deliveries may wait for an ack at once; parked messages do not count.
const MAX_ACK_PENDING: i64 = 100_000;

/// Encodes a name as one subject token, stream-name part or KV key token: letters and
/// digits stay, every other byte becomes `_XX`, so distinct names stay distinct.
pub(super) fn token(name: &str) -> String {
    if name.is_empty() {
        return "_".to_owned();
    }
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() {
            out.push(byte as char);
        } else {
            out.push_str(&format!("_{byte:02X}"));
        }
    }
    out
}

/// The names of one bus namespace (`prefix`) on the server.
#[derive(Debug, Clone)]
pub(super) struct Names {
    pub prefix: String,
}

impl Names {
    pub fn source_stream(&self, stream: &str) -> String {
        format!("{}_S_{}", self.prefix, token(stream))
    }

    pub fn source_subject(&self, stream: &str) -> String {
        format!("{}.s.{}", self.prefix, token(stream))
    }

    pub fn consumer_stream(&self, consumer: &str) -> String {
        format!("{}_C_{}", self.prefix, token(consumer))
    }

    /// Where released and replayed copies are published for one consumer.
    pub fn consumer_subject(&self, consumer: &str) -> String {
        format!("{}.c.{}", self.prefix, token(consumer))
    }

    pub fn dead_letter_stream(&self) -> String {
        format!("{}_DEAD", self.prefix)
    }

    pub fn dead_letter_subject(&self, consumer: Option<&str>) -> String {
        match consumer {
            Some(consumer) => format!("{}.dead.{}", self.prefix, token(consumer)),
            None => format!("{}.dead.>", self.prefix),
        }
    }

    pub fn parking_bucket(&self) -> String {
        format!("{}_PARKING", self.prefix)
    }
}

/// The headers that carry a message's identity next to its body.
pub(super) fn headers(message: &Message) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(ID, message.id.as_str());
    headers.insert(STREAM, message.stream.as_str());
    headers.insert(SEQ, message.seq.to_string().as_str());
    headers.insert(KEY, message.key.as_str());
    headers
}

/// Reads a message back from its headers and payload; `None` when it is not one of ours.
pub(super) fn message(headers: Option<&HeaderMap>, body: &[u8]) -> Option<Message> {
    let headers = headers?;
    let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
    Some(Message {
        id: get(ID)?,
        stream: get(STREAM)?,
        seq: get(SEQ)?.parse().ok()?,
        key: get(KEY).unwrap_or_default(),
        body: body.to_vec(),
    })
}

/// The attempts a released copy had used before its release (0 for any other message).
pub(super) fn attempts_used(headers: Option<&HeaderMap>) -> u32 {
    headers.and_then(|h| h.get(ATTEMPTS_USED)).and_then(|v| v.as_str().parse().ok()).unwrap_or(0)
}

/// The seq header of a stored message (the source side of lag).
pub(super) fn seq_of(headers: &HeaderMap) -> Option<u64> {
    headers.get(SEQ)?.as_str().parse().ok()
}

impl NatsBus {
    fn stream_config(&self, name: String, subjects: Vec<String>) -> stream::Config {
        stream::Config {
            name,
            subjects,
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            num_replicas: self.settings.replicas,
            duplicate_window: self.settings.dedup_window,
            allow_direct: true,
            ..Default::default()
        }
    }

    /// Creates the stream of a producing service unless this bus already did.
    pub(super) async fn source_stream(&self, stream: &str) -> Result<stream::Stream, BusError> {
        if let Some(found) = self.known.lock().expect("stream cache lock").get(stream) {
            return Ok(found.clone());
        }
        let config =
            self.stream_config(self.names.source_stream(stream), vec![self.names.source_subject(stream)]);
        let created = self.js.get_or_create_stream(config).await.map_err(unavailable)?;
        self.known.lock().expect("stream cache lock").insert(stream.to_owned(), created.clone());
        Ok(created)
    }

    /// Creates or updates a consumer's own stream: it sources the producing streams the
    /// consumer reads and takes released and replayed copies on the consumer's subject.
    pub(super) async fn consumer_stream(&self, spec: &ConsumerSpec) -> Result<stream::Stream, BusError> {
        let mut sources = Vec::new();
        for name in &spec.streams {
            self.source_stream(name).await?;
            sources.push(stream::Source { name: self.names.source_stream(name), ..Default::default() });
        }
        sources.sort_by(|a, b| a.name.cmp(&b.name));
        sources.dedup_by(|a, b| a.name == b.name);
        let mut config = self.stream_config(
            self.names.consumer_stream(&spec.name),
            vec![self.names.consumer_subject(&spec.name)],
        );
        config.sources = Some(sources);
        self.js.create_or_update_stream(config.clone()).await.map_err(unavailable)?;
        self.js.get_stream(config.name).await.map_err(unavailable)
    }

    /// Creates or updates the two durable pull consumers on a consumer's stream: one for
    /// the messages sourced from the producing streams, one for the copies published on
    /// the consumer's own subject (released and replayed messages), which are pulled
    /// first: a copy must not wait behind the backlog for its key to move on.
    pub(super) async fn pull_consumers(
        &self,
        stream: &stream::Stream,
        spec: &ConsumerSpec,
    ) -> Result<(consumer::PullConsumer, consumer::PullConsumer), BusError> {
        let config = |durable: &str, filter: String| consumer::pull::Config {
            durable_name: Some(durable.to_owned()),
            filter_subject: filter,
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: spec.ack_wait,
            max_deliver: i64::from(spec.max_attempts) + SPARE_DELIVERIES,
            max_ack_pending: MAX_ACK_PENDING,
            num_replicas: self.settings.replicas,
            ..Default::default()
        };
        let sourced = config(DURABLE, format!("{}.s.>", self.names.prefix));
        let copies = config(DURABLE_COPIES, self.names.consumer_subject(&spec.name));
        let sourced = stream.create_consumer(sourced).await.map_err(unavailable)?;
        let copies = stream.create_consumer(copies).await.map_err(unavailable)?;
        Ok((sourced, copies))
    }

    /// Publishes a copy of `message` on a consumer's own subject, where it arrives as a new
    /// message of the consumer's stream (attempt 1). `copy_id` dedups the copy itself.
    pub(super) async fn redeliver(
        &self,
        consumer: &str,
        message: &Message,
        copy_id: &str,
    ) -> Result<(), BusError> {
        self.publish_copy(consumer, message, headers(message), copy_id).await
    }

    /// Publishes a copy of a released message that goes on from the attempts it had used.
    pub(super) async fn redeliver_released(
        &self,
        consumer: &str,
        message: &Message,
        attempts_used: u32,
        copy_id: &str,
    ) -> Result<(), BusError> {
        let mut headers = headers(message);
        headers.insert(ATTEMPTS_USED, attempts_used.to_string().as_str());
        self.publish_copy(consumer, message, headers, copy_id).await
    }

    async fn publish_copy(
        &self,
        consumer: &str,
        message: &Message,
        headers: HeaderMap,
        copy_id: &str,
    ) -> Result<(), BusError> {
        let publish = jetstream::message::PublishMessage::build()
            .headers(headers)
            .message_id(copy_id)
            .payload(message.body.clone().into());
        self.js
            .send_publish(self.names.consumer_subject(consumer), publish)
            .await
            .map_err(unavailable)?
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The dead-letter stream of this namespace.
    pub(super) async fn dead_letter_stream(&self) -> Result<stream::Stream, BusError> {
        self.dead
            .get_or_try_init(|| async {
                let config = self.stream_config(
                    self.names.dead_letter_stream(),
                    vec![self.names.dead_letter_subject(None)],
                );
                self.js.get_or_create_stream(config).await.map_err(unavailable)
            })
            .await
            .cloned()
    }

    /// The bucket of per-key parkings of this namespace.
    pub(super) async fn parking_bucket(&self) -> Result<jetstream::kv::Store, BusError> {
        self.parking
            .get_or_try_init(|| async {
                let config = jetstream::kv::Config {
                    bucket: self.names.parking_bucket(),
                    history: 1,
                    storage: stream::StorageType::File,
                    num_replicas: self.settings.replicas,
                    ..Default::default()
                };
                self.js.create_or_update_key_value(config).await.map_err(unavailable)
            })
            .await
            .cloned()
    }
}

/// How long a waiting fetch's pull request stays on the server before it is renewed.
pub(super) const PULL_EXPIRES: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::token;

    #[test]
    fn tokens_keep_letters_and_digits_and_escape_the_rest_distinctly() {
        assert_eq!(token("orders"), "orders");
        assert_eq!(token("order.placed"), "order_2Eplaced");
        assert_eq!(token(""), "_");
        let names = ["a-b", "a_b", "a_2Db", "a.b", "a b", "a>b", "a*b"];
        let mut tokens: Vec<_> = names.iter().map(|n| token(n)).collect();
        tokens.sort();
        tokens.dedup();
        assert_eq!(tokens.len(), names.len(), "two names share a token: {tokens:?}");
        assert!(tokens.iter().all(|t| t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')));
    }
}
