//! The NATS JetStream bus: the kit's bus semantics on JetStream, for more than one machine.
//!
//! # How each semantic is mapped, and why
//!
//! - **Durable append, dedup.** A stream per producing service (`{prefix}_S_{stream}`,
//!   subject `{prefix}.s.{stream}`), file storage, `replicas` copies. Each message is
//!   published with `Nats-Msg-Id` = event id, so a relay that publishes again after a crash
//!   is deduplicated by the server within the stream's duplicate window. The event's id,
//!   stream, seq and key travel in `Capshop-*` headers; the body is the envelope's bytes.
//! - **Named durable consumers.** A JetStream consumer reads one stream, a capshop
//!   consumer reads several. So each capshop consumer gets a stream of its own
//!   (`{prefix}_C_{name}`) that *sources* the producing streams it reads (server-side,
//!   durable, in each source's order, from the first message), with two durable pull
//!   consumers on it, explicit ack: `bus` for the sourced messages and `copies` for the
//!   released and replayed messages published on the consumer's subject. A fetch pulls
//!   copies first, so a released key does not wait behind the backlog; with nothing due
//!   it long-polls `bus` (answered by the server as soon as a publish, an ack wait or a
//!   delayed retry makes a message due) and a core subscription on the consumer's
//!   subject wakes it for a copy: no polling.
//! - **Attempts.** The delivery's attempt is the server's delivered count for the message
//!   (`info().delivered`), kept by the server, so it survives a consumer's crash and
//!   re-attachment.
//! - **Ack wait and redelivery.** The consumer's `ack_wait`; the server redelivers what a
//!   crashed or slow consumer left unacknowledged once it runs out.
//! - **Delayed retry.** `nak` with the delay the caller chose (the kit's consumer computes
//!   exponential backoff with jitter, so the consumer-level `backoff` list is not used).
//! - **Max deliver and dead letters.** `max_deliver` is finite: `max_attempts` plus a few
//!   spare deliveries. The last failed attempt (a retry with attempts used up, a reject,
//!   or the first delivery past `max_attempts` after ack waits ran out) publishes a dead
//!   letter to the namespace's dead-letter stream (`{prefix}_DEAD`, subject
//!   `{prefix}.dead.{consumer}`, with the error, the attempts and the original message)
//!   and then terminates the message (`term`). Publishing first means a crash in between
//!   at worst leaves a duplicate dead letter, never a lost message. Listing reads that
//!   stream; replay and discard delete from it.
//! - **Replay.** The dead letter's message is published again on the consumer's own
//!   subject: a new message of the consumer's stream, so its delivered count (its
//!   attempts) starts at 1.
//! - **Per-key ordering and parking.** JetStream has no per-key in-flight limit, so the
//!   bus keeps one *parking* per consumer and key in a KV bucket (`{prefix}_PARKING`): the head
//!   (the one message of the key being delivered, retried or dead), the messages *kept*
//!   behind it in the memory of the head's attachment (unacknowledged, recorded once per
//!   fetch so a crash cannot reorder them) and the messages *parked* behind it (recorded,
//!   then acknowledged, when the head is retried or dies). The next head is the oldest
//!   kept or parked message; a parked one is published again on the consumer's subject
//!   (attempt 1). Every change is a compare-and-set on the parking's revision, so concurrent
//!   attachments and crashes between steps leave at worst a duplicate delivery (which the
//!   consumer's inbox absorbs), never a lost, stuck or reordered message (details in
//!   `parking.rs`).
//! - **Stream head.** The `Capshop-Seq` of the last message on the producing stream.

mod dead_letters;
mod parking;
mod streams;
mod subscription;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_trait::async_trait;
use futures_util::future::try_join_all;
use tokio::sync::OnceCell;
use tracing::{debug, instrument};

use super::{Bus, BusError, ConsumerSpec, DeadLetter, DeadLetterFilter, Message, Subscription};
use streams::Names;

/// How a bus namespace is laid out on the server; set by the URL's query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSettings {
    /// Prefix of every stream, subject and bucket name (letters and digits).
    pub prefix: String,
    /// Copies of every stream and consumer (3 in production clusters).
    pub replicas: usize,
    /// How long the server remembers published event ids to drop duplicates.
    pub dedup_window: Duration,
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self { prefix: "capshop".into(), replicas: 1, dedup_window: Duration::from_secs(120) }
    }
}

/// Parses `nats://HOST:PORT[,HOST:PORT...][?replicas=3&prefix=shop&dedup_window=120]`
/// into the server addresses and the settings.
pub fn parse_url(url: &str) -> Result<(Vec<String>, NatsSettings), BusError> {
    let bad = |why: &str| BusError::UnsupportedUrl(format!("{url} ({why})"));
    let rest = url.strip_prefix("nats://").ok_or_else(|| bad("expected nats://"))?;
    let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
    let servers: Vec<String> =
        hosts.split(',').filter(|h| !h.is_empty()).map(|h| format!("nats://{h}")).collect();
    if servers.is_empty() {
        return Err(bad("no server address"));
    }
    let mut settings = NatsSettings::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').ok_or_else(|| bad("a setting without a value"))?;
        match name {
            "prefix" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                settings.prefix = value.to_owned();
            }
            "replicas" => settings.replicas = value.parse().map_err(|_| bad("replicas is not a number"))?,
            "dedup_window" => {
                let seconds: u64 = value.parse().map_err(|_| bad("dedup_window is not seconds"))?;
                settings.dedup_window = Duration::from_secs(seconds);
            }
            _ => return Err(bad(&format!("unknown or invalid setting {name:?}"))),
        }
    }
    Ok((servers, settings))
}

/// A NATS error as a bus error: the broker did not do what was asked, retry later.
fn unavailable(error: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(error.to_string())
}

/// How long a request to the server may take before the bus counts it as unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Awaits `work` for at most `limit`: a request lost with a connection is never answered.
async fn bounded<F: Future>(what: &str, limit: Duration, work: F) -> Result<F::Output, BusError> {
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| BusError::Unavailable(format!("{what} got no answer within {limit:?}")))
}

/// The JetStream bus; cloning shares the connection.
#[derive(Clone)]
pub struct NatsBus {
    js: jetstream::Context,
    names: Names,
    settings: NatsSettings,
    /// Producing streams this bus has created or found, by capshop stream name.
    known: Arc<Mutex<HashMap<String, stream::Stream>>>,
    dead: Arc<OnceCell<stream::Stream>>,
    parking: Arc<OnceCell<jetstream::kv::Store>>,
}

impl NatsBus {
    /// Sends `wave` pipelined and waits until the server stored each message.
    async fn publish_wave(&self, wave: &[Message]) -> Result<(), BusError> {
        let mut acks = Vec::with_capacity(wave.len());
        for message in wave {
            self.source_stream(&message.stream).await?;
            let publish = jetstream::message::PublishMessage::build()
                .headers(streams::headers(message))
                .message_id(&message.id)
                .payload(message.body.clone().into());
            let ack = self
                .js
                .send_publish(self.names.source_subject(&message.stream), publish)
                .await
                .map_err(unavailable)?;
            acks.push(ack.into_future());
        }
        try_join_all(acks).await.map_err(unavailable)?;
        Ok(())
    }

    /// Connects to the servers of a `nats://` URL (see [`parse_url`]).
    pub async fn connect(url: &str) -> Result<Self, BusError> {
        let (servers, settings) = parse_url(url)?;
        let addresses = servers
            .iter()
            .map(|s| s.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BusError::UnsupportedUrl(format!("{url} ({e})")))?;
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(REQUEST_TIMEOUT)
            .connect(addresses)
            .await
            .map_err(unavailable)?;
        let js = jetstream::ContextBuilder::new().timeout(REQUEST_TIMEOUT).build(client);
        debug!(servers = ?servers, prefix = %settings.prefix, replicas = settings.replicas, "nats bus connected");
        Ok(Self {
            js,
            names: Names { prefix: settings.prefix.clone() },
            settings,
            known: Arc::default(),
            dead: Arc::default(),
            parking: Arc::default(),
        })
    }

    pub fn settings(&self) -> &NatsSettings {
        &self.settings
    }
}

#[async_trait]
impl Bus for NatsBus {
    /// Publishes in waves: each wave is the longest run of the batch with no two messages
    /// of one key, pipelined, and the next wave is sent only once the server stored every
    /// message of this one. So when a message fails, no later message of its key was sent:
    /// the batch stops there, and publishing it again (as the relay does) stores the rest in
    /// order, the ones already stored dropped as duplicates by id.
    #[instrument(skip_all, fields(messages = batch.len()))]
    async fn publish(&self, batch: &[Message]) -> Result<(), BusError> {
        let mut rest = batch;
        while !rest.is_empty() {
            let mut keys = HashSet::new();
            let wave = rest.iter().take_while(|m| keys.insert((&m.stream, &m.key))).count();
            self.publish_wave(&rest[..wave]).await?;
            rest = &rest[wave..];
        }
        Ok(())
    }

    async fn subscribe(&self, spec: &ConsumerSpec) -> Result<Box<dyn Subscription>, BusError> {
        spec.validate()?;
        let stream = self.consumer_stream(spec).await?;
        let (sourced, copies) = self.pull_consumers(&stream, spec).await?;
        // Copies are published by whoever releases or replays; this wakes a waiting fetch.
        let published = self.names.consumer_subject(&spec.name);
        let copied = self.js.client().subscribe(published).await.map_err(unavailable)?;
        Ok(Box::new(subscription::NatsSubscription::new(self.clone(), spec.clone(), sourced, copies, copied)))
    }

    async fn stream_head(&self, stream: &str) -> Result<u64, BusError> {
        let source = self.source_stream(stream).await?;
        match source.get_last_raw_message_by_subject(&self.names.source_subject(stream)).await {
            Ok(last) => Ok(streams::seq_of(&last.headers).unwrap_or_default()),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(0),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The producing streams have no limits: JetStream keeps every message, so each stream
    /// is retained from its first seq.
    async fn retained_from(&self, _stream: &str) -> Result<u64, BusError> {
        Ok(1)
    }

    /// Reads the producing stream backwards from its last message; it has no limits, so
    /// every JetStream seq down to the first is there.
    async fn recent(&self, stream: &str, limit: usize) -> Result<Vec<Message>, BusError> {
        let mut source = self.source_stream(stream).await?;
        let state = source.info().await.map_err(unavailable)?.state.clone();
        let mut found = Vec::new();
        let mut seq = state.last_sequence;
        while found.len() < limit && state.messages > 0 && seq >= state.first_sequence.max(1) {
            match source.get_raw_message(seq).await {
                Ok(stored) => found.extend(streams::message(Some(&stored.headers), &stored.payload)),
                Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => {}
                Err(e) => return Err(unavailable(e)),
            }
            seq -= 1;
        }
        Ok(found)
    }

    async fn dead_letters(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>, BusError> {
        let stored = self.matching_dead_letters(filter).await?;
        let mut letters = Vec::with_capacity(stored.len());
        for (_, record) in stored {
            let parked =
                self.parked_behind(&record.consumer, &record.message.key, &record.message.id).await?;
            letters.push(record.into_dead_letter(parked));
        }
        Ok(letters)
    }

    async fn replay(&self, filter: &DeadLetterFilter) -> Result<usize, BusError> {
        let stored = self.matching_dead_letters(filter).await?;
        for (seq, record) in &stored {
            self.redeliver(&record.consumer, &record.message(), &format!("replay-{seq}")).await?;
            self.delete_dead_letter(*seq).await?;
        }
        Ok(stored.len())
    }

    async fn discard(&self, filter: &DeadLetterFilter) -> Result<usize, BusError> {
        let stored = self.matching_dead_letters(filter).await?;
        for (seq, record) in &stored {
            self.delete_dead_letter(*seq).await?;
            self.release(&record.consumer, &record.message.key, &record.message.id, &[], None).await?;
        }
        Ok(stored.len())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{NatsSettings, parse_url};

    #[test]
    fn a_url_names_its_servers_and_settings() {
        let (servers, settings) =
            parse_url("nats://10.0.0.1:4222,10.0.0.2:4222?replicas=3&prefix=shop&dedup_window=600").unwrap();
        assert_eq!(servers, ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]);
        assert_eq!(
            settings,
            NatsSettings { prefix: "shop".into(), replicas: 3, dedup_window: Duration::from_secs(600) }
        );
        assert_eq!(parse_url("nats://127.0.0.1:4222").unwrap().1, NatsSettings::default());
    }

    #[test]
    fn a_url_with_an_unknown_or_invalid_setting_is_refused() {
        for url in [
            "nats://h:1?replica=3",
            "nats://h:1?replicas=x",
            "nats://h:1?prefix=a.b",
            "nats://",
            "embedded:x",
        ] {
            assert!(parse_url(url).is_err(), "{url} was accepted");
        }
    }
}
