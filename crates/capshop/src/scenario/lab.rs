//! The bench a scenario runs on: fresh shops in a temporary directory (in this process,
//! on port 0), a client that talks to them through the gateway like a user and records
//! every write the shop acknowledges, load that records every attempt, and waiting for
//! convergence.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use reqwest::Method;
use serde_json::Value;
use shop::customer::DEMO_PASSWORD;
use shop::launch::{Shop, ShopConfig, launch};
use shop::service::{Choices, Part};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ledger::Ledger;
use super::measure::{Lost, Probe};
use super::timeline::Timeline;

const TOKEN: &str = "scenario-admin-token";

/// One scenario's run: where its shops live, how long its phases last, what happened.
pub struct Lab {
    dir: tempfile::TempDir,
    pub quick: bool,
    /// Drop one committed event on purpose (`--drop-event`), to show the loss figure fails.
    pub drop_event: bool,
    pub timeline: Timeline,
}

impl Lab {
    pub fn new(quick: bool, drop_event: bool) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("capshop-scenario-").tempdir()?;
        Ok(Self { dir, quick, drop_event, timeline: Timeline::new() })
    }

    /// Where the shop named `series` keeps its data (before or after it runs).
    pub fn data_dir(&self, series: &str) -> PathBuf {
        self.dir.path().join(series)
    }

    /// `quick` seconds with `--quick`, else `full`.
    pub fn phase(&self, quick: f64, full: f64) -> Duration {
        Duration::from_secs_f64(if self.quick { quick } else { full })
    }

    /// Starts the shop whose data is already in [`Lab::data_dir`]`(series)` (a restored
    /// backup) as it is: no wait for convergence, nobody signed in, no sampling.
    pub async fn bare_shop(&self, series: &str) -> anyhow::Result<Shop> {
        launch(self.config(series)).await.context("the shop did not start")
    }

    /// The configuration of the shop named `series`: its data dir, the lab's token, and no
    /// limiter in the way (the scenarios' load is what they measure; tests/limits.rs holds
    /// the limits to their word).
    fn config(&self, series: &str) -> ShopConfig {
        let mut config = ShopConfig::ephemeral(&self.data_dir(series), TOKEN, Choices::default());
        config.choices.limits = shop::service::limits::Limits::off();
        config
    }

    /// Starts a fresh shop named `series` with `choices`, and waits until the seed data has
    /// replicated everywhere.
    pub async fn shop(&self, series: &str, choices: Choices) -> anyhow::Result<Arc<LabShop>> {
        self.shop_with(series, |config| config.choices = choices).await
    }

    /// Like [`Lab::shop`], with the configuration adjusted by `adjust` (for scenarios that
    /// need more than the choices, e.g. another inventory mode).
    pub async fn shop_with(
        &self,
        series: &str,
        adjust: impl FnOnce(&mut ShopConfig),
    ) -> anyhow::Result<Arc<LabShop>> {
        let data_dir = self.data_dir(series);
        let mut config = self.config(series);
        adjust(&mut config);
        config.choices.limits = shop::service::limits::Limits::off();
        let shop = launch(config).await.context("the shop did not start")?;
        let probe = Probe::new(data_dir.join("bus.db"), shop.parts.clone());
        let sampling = CancellationToken::new();
        let (timeline, name, stop, sampler) =
            (self.timeline.clone(), series.to_owned(), sampling.clone(), probe.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let measured = (sampler.lag().await, sampler.backlog().await, sampler.dead_letters().await);
                if let (Ok(lag), Ok(backlog), Ok(dead)) = measured {
                    timeline.sample(&name, lag, backlog, dead);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let mut lab_shop = LabShop {
            shop,
            probe,
            client: reqwest::Client::new(),
            ledger: Ledger::default(),
            sessions: HashMap::new(),
            orders: std::sync::Mutex::new(HashMap::new()),
            sampling,
            timeline: self.timeline.clone(),
            series: series.to_owned(),
        };
        lab_shop.converge(Duration::from_secs(30)).await.context("the seed data did not replicate")?;
        // Signed in before any fault: a shopper who is signed in stays so while customer is down.
        for customer in SHOPPERS {
            let body = serde_json::json!({ "email": format!("{}@example.com", &customer[2..]), "password": DEMO_PASSWORD });
            let answer = lab_shop.post("/api/customer/sessions", &body).await;
            let answer = lab_shop.expect(&format!("signing {customer} in"), answer).await?;
            let token = answer.body["token"].as_str().context("a session token")?.to_owned();
            lab_shop.sessions.insert(customer.to_owned(), token);
        }
        Ok(Arc::new(lab_shop))
    }
}

/// The seeded customers, signed in by every lab shop.
const SHOPPERS: [&str; 3] = ["c-ada", "c-bob", "c-cyd"];

/// An answer from the shop.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    /// The `Consistency-Token` header, when the write answered with one.
    pub token: Option<String>,
    pub latency: Duration,
}

impl Answer {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A running shop in a lab.
pub struct LabShop {
    pub shop: Shop,
    pub probe: Probe,
    client: reqwest::Client,
    /// Every write the shop acknowledged through [`LabShop::call`].
    pub ledger: Ledger,
    /// The session token of each seeded shopper, signed in when the shop started.
    sessions: HashMap<String, String>,
    /// Whose each order placed through [`LabShop::call`] is.
    orders: std::sync::Mutex<HashMap<String, String>>,
    sampling: CancellationToken,
    timeline: Timeline,
    series: String,
}

impl LabShop {
    /// Sends `method path` through the gateway with an optional JSON body and headers; a
    /// transport failure is an answer with status 0. A write the shop acknowledges (2xx
    /// with a `Consistency-Token`) goes into the ledger.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let started = Instant::now();
        let write = method != Method::GET;
        let placing = method == Method::POST && path == "/api/order/orders";
        let mut request = self.client.request(method, self.shop.url(path)).timeout(Duration::from_secs(10));
        if let Some(body) = body {
            request = request.json(body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if path.contains("/admin")
            || path.starts_with("/api/catalog/products")
            || path.starts_with("/api/inventory/stock")
            || path.starts_with("/api/shipping/held")
        {
            request = request.bearer_auth(TOKEN);
        } else if let Some(token) = self.owner_named(path, body).and_then(|c| self.sessions.get(&c)) {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let token = response
                    .headers()
                    .get("consistency-token")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = response.json().await.unwrap_or(Value::Null);
                let answer = Answer { status, body, token, latency: started.elapsed() };
                if let (true, true, Some(token)) = (write, answer.ok(), &answer.token) {
                    self.ledger.record(token, &answer.body);
                }
                if let (true, true, Some(id), Some(customer)) =
                    (placing, answer.ok(), answer.body["id"].as_str(), answer.body["customer_id"].as_str())
                {
                    let mut orders = self.orders.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    orders.insert(id.to_owned(), customer.to_owned());
                }
                answer
            }
            Err(e) => Answer {
                status: 0,
                body: Value::String(e.to_string()),
                token: None,
                latency: started.elapsed(),
            },
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None, &[]).await
    }

    /// The shopper whose resource a request names (a `c-...` segment or parameter, the
    /// body's `customer_id`, or the customer of a `o-...` order placed here): whose session
    /// it is sent with, as each shopper's own client would.
    fn owner_named(&self, path: &str, body: Option<&Value>) -> Option<String> {
        let words: Vec<&str> = path.split(['/', '?', '&', '=']).collect();
        if let Some(customer) = words.iter().find(|w| w.starts_with("c-")) {
            return Some((*customer).to_owned());
        }
        if let Some(customer) = body.and_then(|b| b["customer_id"].as_str()) {
            return Some(customer.to_owned());
        }
        let orders = self.orders.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        words.iter().find(|w| w.starts_with("o-")).and_then(|o| orders.get(*o).cloned())
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.call(Method::POST, path, Some(body), &[]).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Answer {
        self.call(Method::PUT, path, Some(body), &[]).await
    }

    /// Like [`LabShop::call`], but anything but a 2xx is an error naming `what`.
    pub async fn expect(&self, what: &str, answer: Answer) -> anyhow::Result<Answer> {
        if !answer.ok() {
            bail!("{what}: {} {}", answer.status, answer.body);
        }
        Ok(answer)
    }

    /// Puts one item in `customer`'s cart and places the order: the shop's checkout.
    pub async fn checkout(&self, customer: &str, product: &str, extra: Value) -> (Answer, Answer) {
        let item = serde_json::json!({ "product_id": product, "quantity": 1 });
        let cart = self.post(&format!("/api/order/carts/{customer}/items"), &item).await;
        let mut order = serde_json::json!({ "customer_id": customer });
        if let (Some(order), Some(extra)) = (order.as_object_mut(), extra.as_object()) {
            order.extend(extra.clone());
        }
        let placed = self.post("/api/order/orders", &order).await;
        (cart, placed)
    }

    /// Waits until nothing is in an outbox, every consumer has applied every published
    /// event and no delivery is in flight, retrying or parked; answers how long that took.
    /// Not getting there within `within` is a liveness failure. Loss is not part of it:
    /// [`LabShop::lost`] counts it afterwards, independently.
    pub async fn converge(&self, within: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            let progress = self.probe.progress().await?;
            if progress.converged() {
                let took = started.elapsed();
                // The moment of convergence belongs in the plot, whatever the sampler's pace.
                self.timeline.sample(&self.series, 0, 0, self.probe.dead_letters().await?);
                return Ok(took);
            }
            if started.elapsed() > within {
                bail!(
                    "liveness failure: no convergence within {within:?}: {} events still in outboxes, \
                     {} published events not applied, {} deliveries in flight, retrying or parked, \
                     {} dead letters (a dead letter at a stream's head holds its lag above 0 until \
                     it is replayed; `capshop dlq` and the consumers' lag metrics show which)",
                    progress.backlog,
                    progress.lag,
                    progress.unsettled,
                    self.probe.dead_letters().await?
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Counts what is lost now: committed events missing from the bus or without their
    /// effect, and acknowledged writes missing at a replica (after [`LabShop::converge`]).
    pub async fn lost(&self) -> anyhow::Result<Lost> {
        self.probe.lost(&self.ledger).await
    }

    /// Deletes the oldest event of `kind` still waiting in `part`'s outbox, by writing its
    /// database directly, as a broken disk or a bug would: the loss the figures must show.
    /// A later event must be waiting too (the relay then moves past the gap); answers the
    /// dropped event as `stream #seq`, and its key. The kind is chosen by the caller so the
    /// loss is one a client was told about (an OrderPlaced, not a later OrderConfirmed whose
    /// order the replicas already hold).
    pub async fn drop_committed_event(&self, part: Part, kind: &str) -> anyhow::Result<(String, String)> {
        let ctx = self.shop.parts.get(&part).with_context(|| format!("the shop runs no {part}"))?;
        let stream = ctx.outbox.stream().to_string();
        let name = stream.clone();
        let pattern = format!("%\"kind\":\"{kind}\"%");
        let dropped = ctx
            .store
            .transact(move |tx| {
                let row = tx.query_one(
                    "SELECT count(*), coalesce(min(seq), 0) FROM kit_outbox \
                     WHERE stream = $1 AND CAST(body AS TEXT) LIKE $2",
                    &[name.as_str().into(), pattern.as_str().into()],
                )?;
                let (waiting, seq): (u64, u64) = (row.get(0)?, row.get(1)?);
                if waiting < 2 {
                    return Ok(None);
                }
                let key: String = tx
                    .query_one(
                        "SELECT key FROM kit_outbox WHERE stream = $1 AND seq = $2",
                        &[name.as_str().into(), seq.into()],
                    )?
                    .get(0)?;
                tx.execute(
                    "DELETE FROM kit_outbox WHERE stream = $1 AND seq = $2",
                    &[name.as_str().into(), seq.into()],
                )?;
                Ok::<_, kit::store::StoreError>(Some((seq, key)))
            })
            .await?;
        let (seq, key) = dropped.with_context(|| {
            format!("fewer than two {kind} events wait in the {stream} outbox: cut {part} off the bus and write more first")
        })?;
        Ok((format!("{stream} #{seq}"), key))
    }

    /// Stops the shop once every load on it has stopped (the last holder stops it).
    pub async fn stop(self: Arc<Self>) -> anyhow::Result<()> {
        self.sampling.cancel();
        match Arc::try_unwrap(self) {
            Ok(lab_shop) => lab_shop.shop.stop().await.context("the shop failed while stopping"),
            Err(_) => bail!("the shop is still in use by a load"),
        }
    }
}

/// Polls `probe` until it answers `Some`, for at most `within`; the error names `what`.
pub async fn until<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let started = Instant::now();
    loop {
        if let Some(found) = probe().await? {
            return Ok(found);
        }
        if started.elapsed() > within {
            bail!("gave up after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Load on a shop: `workers` loops calling one operation and recording each attempt.
pub struct Load {
    stop: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

impl Load {
    /// Starts `workers` loops on `shop`; worker `w` calls `attempt(shop, w, n)` for
    /// n = 0, 1, ... and records whether it succeeded under `series`.
    pub fn start<F, Fut>(
        timeline: &Timeline,
        series: &str,
        workers: usize,
        shop: &Arc<LabShop>,
        attempt: F,
    ) -> Self
    where
        F: Fn(Arc<LabShop>, usize, u64) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = bool> + Send,
    {
        let stop = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..workers {
            let (stop, timeline, series, shop, attempt) =
                (stop.clone(), timeline.clone(), series.to_owned(), shop.clone(), attempt.clone());
            tasks.spawn(async move {
                let mut n = 0;
                while !stop.is_cancelled() {
                    let started = Instant::now();
                    let ok = attempt(shop.clone(), worker, n).await;
                    timeline.attempt(&series, ok, started.elapsed());
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        }
        Self { stop, tasks }
    }

    /// Stops the loops after their current attempt.
    pub async fn stop(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}
