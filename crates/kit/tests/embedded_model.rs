//! A model-based test of the embedded bus: random sequences of publish (new and
//! duplicate), fetch, ack, retry, reject, replay, discard, advancing the clock, a
//! consumer re-attaching, and the bus dropped and reopened on its file — checked after
//! every step against a small in-memory model of what the bus promises: what each fetch
//! returns (which messages, at which attempt, byte for byte), per-key order and parking,
//! attempts counted across re-attachments and reopenings, dead letters with their errors
//! and parked counts, and each stream's head.
//!
//! Time is tokio's paused clock, moved only by the test's `Advance` steps, so ack waits
//! and retry delays run out exactly when the model says. A fetch is only called when the
//! model expects it to return something (a fetch with nothing due waits), and always
//! with room for everything due, so its answer is determined.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::Path;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use kit::bus::{
    Bus, ConsumerSpec, DeadLetterFilter, DeliveryTag, Disposition, EmbeddedBus, Message, Ordering,
    Subscription,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;

const ACK_WAIT_MS: u64 = 2_000;
const STREAMS: [&str; 2] = ["orders", "customers"];
const KEYS: [&str; 3] = ["k1", "k2", "k3"];
/// Room in every fetch: more than a case ever has due.
const FETCH_MAX: usize = 1_000;

/// The consumers under test: one per key on one stream, one unordered on both.
struct Consumer {
    name: &'static str,
    streams: &'static [&'static str],
    ordering: Ordering,
    max_attempts: u32,
}

const CONSUMERS: [Consumer; 2] = [
    Consumer { name: "packer", streams: &["orders"], ordering: Ordering::PerKey, max_attempts: 3 },
    Consumer {
        name: "replica",
        streams: &["orders", "customers"],
        ordering: Ordering::Unordered,
        max_attempts: 2,
    },
];

impl Consumer {
    fn spec(&self) -> ConsumerSpec {
        ConsumerSpec::new(self.name, self.streams)
            .ordering(self.ordering)
            .max_attempts(self.max_attempts)
            .ack_wait(Duration::from_millis(ACK_WAIT_MS))
    }

    fn per_key(&self) -> bool {
        self.ordering == Ordering::PerKey
    }
}

#[derive(Debug, Clone)]
enum Filter {
    All,
    Consumer(usize),
    Key(usize),
    Stream(usize),
    /// The event of one of the current dead letters.
    Event(Index),
}

#[derive(Debug, Clone)]
enum Op {
    /// Publishes new messages, one batch: (stream, key) each.
    Publish(Vec<(usize, usize)>),
    /// Publishes an already published message again.
    PublishAgain(Index),
    Fetch(usize),
    Ack(usize, Index),
    Retry(usize, Index, u64),
    Reject(usize, Index),
    Replay(Filter),
    Discard(Filter),
    Advance(u64),
    /// The consumer's subscription is dropped and it attaches again.
    Reattach(usize),
    /// Every subscription and the bus are dropped, and the bus reopened on its file.
    Reopen,
}

fn filter() -> impl Strategy<Value = Filter> {
    prop_oneof![
        Just(Filter::All),
        (0..CONSUMERS.len()).prop_map(Filter::Consumer),
        (0..KEYS.len()).prop_map(Filter::Key),
        (0..STREAMS.len()).prop_map(Filter::Stream),
        any::<Index>().prop_map(Filter::Event),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let consumer = 0..CONSUMERS.len();
    prop_oneof![
        5 => prop::collection::vec((0..STREAMS.len(), 0..KEYS.len()), 1..4).prop_map(Op::Publish),
        1 => any::<Index>().prop_map(Op::PublishAgain),
        6 => consumer.clone().prop_map(Op::Fetch),
        4 => (consumer.clone(), any::<Index>()).prop_map(|(c, i)| Op::Ack(c, i)),
        2 => (consumer.clone(), any::<Index>(), prop::sample::select(vec![0u64, 1_000, 3_000]))
            .prop_map(|(c, i, d)| Op::Retry(c, i, d)),
        1 => (consumer.clone(), any::<Index>()).prop_map(|(c, i)| Op::Reject(c, i)),
        1 => filter().prop_map(Op::Replay),
        1 => filter().prop_map(Op::Discard),
        2 => prop::sample::select(vec![1u64, 999, 1_000, 1_999, 2_000, 2_500, 5_000]).prop_map(Op::Advance),
        1 => consumer.prop_map(Op::Reattach),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Inflight,
    Ready,
    Parked,
    Dead,
}

/// A message a consumer has taken and not yet settled for good.
#[derive(Debug, Clone)]
struct Pending {
    key: String,
    state: State,
    attempts: u32,
    visible_at: u64,
    error: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct ModelConsumer {
    /// How many log entries the consumer has looked at.
    taken: usize,
    /// By log index.
    pending: BTreeMap<usize, Pending>,
}

/// What the bus should hold.
#[derive(Debug, Clone, Default)]
struct Model {
    log: Vec<Message>,
    consumers: Vec<ModelConsumer>,
    seqs: BTreeMap<&'static str, u64>,
    /// Messages made so far (published or about to be), for fresh ids.
    made: usize,
}

impl Model {
    fn new() -> Self {
        Self { consumers: vec![ModelConsumer::default(); CONSUMERS.len()], ..Self::default() }
    }

    fn message(&mut self, stream: usize, key: usize) -> Message {
        let stream = STREAMS[stream];
        let seq = self.seqs.entry(stream).or_default();
        *seq += 1;
        self.made += 1;
        let id = format!("m-{}", self.made);
        let mut body = format!("{stream} #{seq} of {}", KEYS[key]).into_bytes();
        body.extend_from_slice(&[0x00, 0xff]);
        Message { id, stream: stream.to_owned(), seq: *seq, key: KEYS[key].to_owned(), body }
    }

    /// Takes everything due for consumer `c` at `now`; answers (log index, attempt) of
    /// each delivery, redeliveries first.
    fn fetch(&mut self, c: usize, now: u64) -> Vec<(usize, u32)> {
        let spec = &CONSUMERS[c];
        let log = &self.log;
        let consumer = &mut self.consumers[c];
        let mut out = Vec::new();
        for (&at, p) in consumer.pending.iter_mut() {
            if !matches!(p.state, State::Inflight | State::Ready) || p.visible_at > now {
                continue;
            }
            if p.attempts >= spec.max_attempts {
                let earlier = p.error.take().map(|e| format!("{e}; ")).unwrap_or_default();
                p.error = Some(format!("{earlier}not acknowledged after {} deliveries", p.attempts));
                p.state = State::Dead;
                continue;
            }
            p.state = State::Inflight;
            p.attempts += 1;
            p.visible_at = now + ACK_WAIT_MS;
            out.push((at, p.attempts));
        }
        for (at, m) in log.iter().enumerate().skip(consumer.taken) {
            if !spec.streams.contains(&m.stream.as_str()) {
                continue;
            }
            let parked = spec.per_key() && consumer.pending.values().any(|p| p.key == m.key);
            let (state, attempts, visible_at) =
                if parked { (State::Parked, 0, 0) } else { (State::Inflight, 1, now + ACK_WAIT_MS) };
            consumer
                .pending
                .insert(at, Pending { key: m.key.clone(), state, attempts, visible_at, error: None });
            if !parked {
                out.push((at, 1));
            }
        }
        consumer.taken = log.len();
        out
    }

    /// Makes the oldest message of `key` deliverable when it is parked.
    fn release_next(&mut self, c: usize, key: &str) {
        let consumer = &mut self.consumers[c];
        if let Some(p) = consumer.pending.values_mut().find(|p| p.key == key)
            && p.state == State::Parked
        {
            p.state = State::Ready;
            p.visible_at = 0;
        }
    }

    /// A new attachment: what the previous one had in flight is due now.
    fn reattach(&mut self, c: usize) {
        for p in self.consumers[c].pending.values_mut() {
            if p.state == State::Inflight {
                p.state = State::Ready;
                p.visible_at = 0;
            }
        }
    }

    /// The dead letters matching `filter`, as (consumer, log index).
    fn matching(&self, filter: &DeadLetterFilter) -> Vec<(usize, usize)> {
        let mut found = Vec::new();
        for (c, consumer) in self.consumers.iter().enumerate() {
            for (&at, p) in &consumer.pending {
                let m = &self.log[at];
                let wanted = p.state == State::Dead
                    && filter.consumer.as_deref().is_none_or(|n| n == CONSUMERS[c].name)
                    && filter.key.as_deref().is_none_or(|k| k == m.key)
                    && filter.stream.as_deref().is_none_or(|s| s == m.stream)
                    && filter.event_id.as_deref().is_none_or(|e| e == m.id);
                if wanted {
                    found.push((c, at));
                }
            }
        }
        found
    }

    fn dead_letters(&self) -> Vec<(String, String, u32, String, u64)> {
        let mut letters: Vec<_> = self
            .matching(&DeadLetterFilter::all())
            .into_iter()
            .map(|(c, at)| {
                let consumer = &self.consumers[c];
                let p = &consumer.pending[&at];
                let parked =
                    consumer.pending.values().filter(|h| h.key == p.key && h.state == State::Parked).count()
                        as u64;
                let error = p.error.clone().unwrap_or_default();
                (CONSUMERS[c].name.to_owned(), self.log[at].id.clone(), p.attempts, error, parked)
            })
            .collect();
        letters.sort();
        letters
    }
}

/// Awaits `work`, failing when it has not finished after 10 s of real time (a watchdog
/// thread, not a tokio timer, which the paused clock would jump to).
async fn within<F: Future>(what: &str, work: F) -> Result<F::Output, TestCaseError> {
    let (expire, expired) = tokio::sync::oneshot::channel::<()>();
    let (_finished, finish) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if finish.recv_timeout(Duration::from_secs(10)) == Err(RecvTimeoutError::Timeout) {
            let _ = expire.send(());
        }
    });
    tokio::select! {
        biased;
        output = work => Ok(output),
        Ok(()) = expired => Err(TestCaseError::fail(format!("{what} did not return within 10 s"))),
    }
}

/// The bus under test and one subscription per consumer, with the tags of the latest
/// delivery of each message.
struct Harness {
    path: String,
    bus: Option<EmbeddedBus>,
    subscriptions: Vec<Option<Box<dyn Subscription>>>,
    tags: Vec<HashMap<usize, DeliveryTag>>,
}

fn failed(what: &str, e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(format!("{what} failed: {e}"))
}

impl Harness {
    async fn open(path: &Path) -> Result<Self, TestCaseError> {
        let mut harness = Self {
            path: path.display().to_string(),
            bus: None,
            subscriptions: (0..CONSUMERS.len()).map(|_| None).collect(),
            tags: vec![HashMap::new(); CONSUMERS.len()],
        };
        harness.reopen().await?;
        Ok(harness)
    }

    fn bus(&self) -> &EmbeddedBus {
        self.bus.as_ref().expect("the bus is open between steps")
    }

    async fn attach(&mut self, c: usize) -> Result<(), TestCaseError> {
        self.subscriptions[c] = None;
        self.tags[c].clear();
        let subscription = within("subscribe", self.bus().subscribe(&CONSUMERS[c].spec()))
            .await?
            .map_err(|e| failed("subscribe", e))?;
        self.subscriptions[c] = Some(subscription);
        Ok(())
    }

    async fn reopen(&mut self) -> Result<(), TestCaseError> {
        self.subscriptions.iter_mut().for_each(|s| *s = None);
        self.bus = None;
        let bus = within("open", EmbeddedBus::open(&self.path)).await?.map_err(|e| failed("open", e))?;
        self.bus = Some(bus);
        for c in 0..CONSUMERS.len() {
            self.attach(c).await?;
        }
        Ok(())
    }

    fn subscription(&mut self, c: usize) -> &mut Box<dyn Subscription> {
        self.subscriptions[c].as_mut().expect("every consumer is attached between steps")
    }
}

fn bus_filter(model: &Model, pick: &Filter) -> DeadLetterFilter {
    match pick {
        Filter::All => DeadLetterFilter::all(),
        Filter::Consumer(c) => DeadLetterFilter::all().consumer(CONSUMERS[*c].name),
        Filter::Key(k) => DeadLetterFilter::all().key(KEYS[*k]),
        Filter::Stream(s) => DeadLetterFilter::all().stream(STREAMS[*s]),
        Filter::Event(i) => {
            let dead = model.matching(&DeadLetterFilter::all());
            match dead.get(i.index(dead.len().max(1))) {
                Some((_, at)) => DeadLetterFilter::all().event(&model.log[*at].id),
                None => DeadLetterFilter::all().event("no-such-event"),
            }
        }
    }
}

/// The messages consumer `c` may settle now: delivered, in flight, ack wait not run out.
fn settleable(model: &Model, harness: &Harness, c: usize, now: u64) -> Vec<usize> {
    let mut live: Vec<usize> = harness.tags[c]
        .keys()
        .copied()
        .filter(|at| {
            model.consumers[c]
                .pending
                .get(at)
                .is_some_and(|p| p.state == State::Inflight && p.visible_at > now)
        })
        .collect();
    live.sort();
    live
}

async fn step(model: &mut Model, harness: &mut Harness, op: &Op) -> Result<(), TestCaseError> {
    let now = kit::clock::now_ms();
    match op {
        Op::Publish(items) => {
            let batch: Vec<Message> = items.iter().map(|&(s, k)| model.message(s, k)).collect();
            within("publish", harness.bus().publish(&batch)).await?.map_err(|e| failed("publish", e))?;
            model.log.extend(batch);
        }
        Op::PublishAgain(pick) => {
            if let Some(m) = model.log.get(pick.index(model.log.len().max(1))).cloned() {
                within("publish", harness.bus().publish(&[m]))
                    .await?
                    .map_err(|e| failed("publish again", e))?;
            }
        }
        Op::Fetch(c) => {
            let mut trial = model.clone();
            let expected = trial.fetch(*c, now);
            if expected.is_empty() {
                return Ok(());
            }
            let deliveries = within("fetch", harness.subscription(*c).fetch(FETCH_MAX))
                .await?
                .map_err(|e| failed("fetch", e))?;
            let by_id: HashMap<&str, usize> =
                model.log.iter().enumerate().map(|(at, m)| (m.id.as_str(), at)).collect();
            let mut got = Vec::new();
            for d in &deliveries {
                let at = *by_id.get(d.message.id.as_str()).ok_or_else(|| {
                    TestCaseError::fail(format!("delivered an unknown message {:?}", d.message))
                })?;
                prop_assert_eq!(
                    &d.message,
                    &model.log[at],
                    "the delivered message differs from the published one"
                );
                got.push((at, d.attempt));
                harness.tags[*c].insert(at, d.tag);
            }
            got.sort();
            let mut wanted = expected;
            wanted.sort();
            prop_assert_eq!(
                got,
                wanted,
                "{} fetched other (message, attempt) pairs than the model",
                CONSUMERS[*c].name
            );
            *model = trial;
        }
        Op::Ack(c, pick) | Op::Retry(c, pick, _) | Op::Reject(c, pick) => {
            let live = settleable(model, harness, *c, now);
            let Some(&at) = live.get(pick.index(live.len().max(1))) else { return Ok(()) };
            let tag = harness.tags[*c][&at];
            let error = format!("{} cannot use {}", CONSUMERS[*c].name, model.log[at].id);
            let spec = &CONSUMERS[*c];
            match op {
                Op::Ack(..) => {
                    within("ack", harness.subscription(*c).ack(&[tag]))
                        .await?
                        .map_err(|e| failed("ack", e))?;
                    let p = model.consumers[*c].pending.remove(&at).expect("a live delivery is pending");
                    if spec.per_key() {
                        model.release_next(*c, &p.key);
                    }
                }
                Op::Retry(_, _, delay) => {
                    let retried = harness.subscription(*c).retry(tag, Duration::from_millis(*delay), &error);
                    let disposition = within("retry", retried).await?.map_err(|e| failed("retry", e))?;
                    let p = model.consumers[*c].pending.get_mut(&at).expect("a live delivery is pending");
                    p.error = Some(error);
                    let expected = if p.attempts >= spec.max_attempts {
                        p.state = State::Dead;
                        Disposition::DeadLettered
                    } else {
                        p.state = State::Ready;
                        p.visible_at = now + delay;
                        Disposition::Retrying
                    };
                    prop_assert_eq!(disposition, expected, "retry at attempt {}", p.attempts);
                }
                _ => {
                    let rejected = harness.subscription(*c).reject(tag, &error);
                    within("reject", rejected).await?.map_err(|e| failed("reject", e))?;
                    let p = model.consumers[*c].pending.get_mut(&at).expect("a live delivery is pending");
                    p.error = Some(error);
                    p.state = State::Dead;
                }
            }
            harness.tags[*c].remove(&at);
        }
        Op::Replay(pick) => {
            let filter = bus_filter(model, pick);
            let replayed =
                within("replay", harness.bus().replay(&filter)).await?.map_err(|e| failed("replay", e))?;
            let matching = model.matching(&filter);
            for &(c, at) in &matching {
                let p = model.consumers[c].pending.get_mut(&at).expect("a dead letter is pending");
                (p.state, p.attempts, p.visible_at) = (State::Ready, 0, 0);
            }
            prop_assert_eq!(replayed, matching.len(), "dead letters replayed by {:?}", filter);
        }
        Op::Discard(pick) => {
            let filter = bus_filter(model, pick);
            let discarded =
                within("discard", harness.bus().discard(&filter)).await?.map_err(|e| failed("discard", e))?;
            let matching = model.matching(&filter);
            for &(c, at) in &matching {
                let p = model.consumers[c].pending.remove(&at).expect("a dead letter is pending");
                model.release_next(c, &p.key);
            }
            prop_assert_eq!(discarded, matching.len(), "dead letters discarded by {:?}", filter);
        }
        Op::Advance(ms) => tokio::time::advance(Duration::from_millis(*ms)).await,
        Op::Reattach(c) => {
            harness.attach(*c).await?;
            model.reattach(*c);
        }
        Op::Reopen => {
            harness.reopen().await?;
            (0..CONSUMERS.len()).for_each(|c| model.reattach(c));
        }
    }
    Ok(())
}

/// What every step must leave as the model says: the dead letters and the stream heads.
async fn check(model: &Model, harness: &Harness, after: &Op) -> Result<(), TestCaseError> {
    let letters = within("dead_letters", harness.bus().dead_letters(&DeadLetterFilter::all()))
        .await?
        .map_err(|e| failed("dead_letters", e))?;
    let by_id: HashMap<&str, &Message> = model.log.iter().map(|m| (m.id.as_str(), m)).collect();
    for letter in &letters {
        prop_assert_eq!(
            Some(&&letter.message),
            by_id.get(letter.message.id.as_str()),
            "a dead letter's message changed"
        );
    }
    let mut got: Vec<_> =
        letters.into_iter().map(|l| (l.consumer, l.message.id, l.attempts, l.error, l.parked)).collect();
    got.sort();
    prop_assert_eq!(got, model.dead_letters(), "dead letters after {:?}", after);
    for stream in STREAMS {
        let head = within("stream_head", harness.bus().stream_head(stream))
            .await?
            .map_err(|e| failed("stream_head", e))?;
        prop_assert_eq!(
            head,
            model.seqs.get(stream).copied().unwrap_or(0),
            "the head of {} after {:?}",
            stream,
            after
        );
    }
    Ok(())
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| failed("a temporary directory", e))?;
    // The clock's origin is fixed on first use; step past it so whole-millisecond
    // advances move the bus's clock by exactly as much.
    kit::clock::now_ms();
    tokio::time::advance(Duration::from_secs(1)).await;
    let mut harness = Harness::open(&dir.path().join("bus.db")).await?;
    let mut model = Model::new();
    for op in &ops {
        step(&mut model, &mut harness, op).await?;
        check(&model, &harness, op).await?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest-regressions/embedded_model.txt",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_embedded_bus_does_what_its_model_says_after_every_step(ops in prop::collection::vec(op(), 1..80)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime");
        runtime.block_on(run(ops))?;
    }
}
