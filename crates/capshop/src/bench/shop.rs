//! The whole embedded shop (`shop::launch` on a temporary directory, every service in
//! this process), driven through its gateway by the bench's load generator: checkout
//! while healthy and while the customer service is stopped (through the shop's chaos
//! handle), the synchronous address design during the same outage, and orders end to
//! end, placed → confirmed → shipped.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use indicatif::ProgressBar;
use serde_json::{Value, json};
use shop::launch::{Shop, ShopConfig, launch};
use shop::service::{AddressChoice, Choices, Part, ServiceName};
use tokio::time::Instant;

use super::load::{self, Outcome};
use super::{Figures, Phases, Spread, round};

const TOKEN: &str = "bench-admin-token";
const CUSTOMERS: [&str; 3] = ["c-ada", "c-bob", "c-cyd"];
const PRODUCTS: u64 = 20;
/// How many segments each of the checkout's healthy and outage spans is cut into.
const SEGMENTS: u32 = 6;

/// A running shop and a client for its gateway.
struct Bench {
    shop: Shop,
    client: reqwest::Client,
    address: AddressChoice,
    /// The embedded bus's file, read to count what the orders cost in events.
    bus_file: std::path::PathBuf,
    /// Each shopper's session token, by customer id.
    sessions: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl Bench {
    async fn start(dir: &Path, address: AddressChoice, connections: usize) -> anyhow::Result<Self> {
        // The bench measures the shop's capacity: no limiter in the way.
        let choices = Choices { address, limits: shop::service::limits::Limits::off(), ..Choices::default() };
        let shop =
            launch(ShopConfig::ephemeral(dir, TOKEN, choices)).await.context("the shop did not start")?;
        let bench = Self {
            shop,
            client: load::client(connections),
            address,
            bus_file: dir.join("bus.db"),
            sessions: Default::default(),
        };
        for customer in CUSTOMERS {
            bench.sign_in(customer, &format!("{}@example.com", &customer[2..])).await?;
            bench.known_to_orders(customer).await?;
            let item = json!({ "product_id": "p-001", "quantity": 1 });
            bench.until_ok(&format!("/api/order/carts/{customer}/items"), Some(&item)).await?;
        }
        Ok(bench)
    }

    fn url(&self, path: &str) -> String {
        self.shop.url(path)
    }

    /// Signs `customer` in with the demo password, as every shopper of the bench signs in.
    async fn sign_in(&self, customer: &str, email: &str) -> anyhow::Result<()> {
        let body = json!({ "email": email, "password": shop::customer::DEMO_PASSWORD });
        let answer = self.until_ok("/api/customer/sessions", Some(&body)).await?;
        let token = answer["token"].as_str().context("a session token")?.to_owned();
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(customer.to_owned(), token);
        Ok(())
    }

    /// The session token of `customer` (signed in before).
    fn session(&self, customer: &str) -> String {
        let sessions = self.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        sessions.get(customer).cloned().unwrap_or_default()
    }

    /// Sends a request (POST with a body, else GET); answers the status and the JSON. Stock
    /// is set with the admin token; a request naming a customer (`c-...` in the path, or the
    /// body's `customer_id`) goes with that shopper's session.
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let named = path.split(['/', '?', '&', '=']).find(|w| w.starts_with("c-")).map(str::to_owned);
        let named = named.or_else(|| body.and_then(|b| b["customer_id"].as_str()).map(str::to_owned));
        let token = match named {
            _ if path.starts_with("/api/inventory/stock") => TOKEN.to_owned(),
            Some(customer) => self.session(&customer),
            None => TOKEN.to_owned(),
        };
        let mut request = self.client.request(method, self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        match request.send().await {
            Ok(answer) => (answer.status().as_u16(), answer.json().await.unwrap_or(Value::Null)),
            Err(_) => (0, Value::Null),
        }
    }

    /// Repeats a request until it succeeds, for at most 30 s.
    async fn until_ok(&self, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let method = if body.is_some() { reqwest::Method::POST } else { reqwest::Method::GET };
        let started = Instant::now();
        loop {
            let (status, answer) = self.send(method.clone(), path, body).await;
            if (200..300).contains(&status) {
                return Ok(answer);
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("{path} still answers {status} {answer} after 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the order service's replica knows `customer` (with the replica design).
    async fn known_to_orders(&self, customer: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let (status, answer) =
                self.send(reqwest::Method::GET, &format!("/api/order/checkout/{customer}"), None).await;
            // The synchronous design always asks the owner: there the customer only needs to exist.
            let from_replica =
                answer["address_source"]["source"] == "replica" || self.address == AddressChoice::Sync;
            if status == 200 && from_replica {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("the order service has not replicated {customer} after 30 s: {status} {answer}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Shows the checkout of the seed customers from `connections` loops for `span`.
    async fn checkouts(&self, connections: usize, span: Duration) -> Outcome {
        let (client, base) = (self.client.clone(), self.url(""));
        let tokens: Arc<Vec<String>> = Arc::new(CUSTOMERS.map(|c| self.session(c)).to_vec());
        load::drive(connections, span, move |connection, _| {
            let url = format!("{base}/api/order/checkout/{}", CUSTOMERS[connection % CUSTOMERS.len()]);
            let (client, tokens) = (client.clone(), tokens.clone());
            async move {
                match client.get(&url).bearer_auth(&tokens[connection % tokens.len()]).send().await {
                    Ok(answer) => answer.status().is_success() && answer.bytes().await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await
    }

    /// The checkout while healthy and while the customer service is stopped, in
    /// [`SEGMENTS`] short segments each, alternating healthy, outage, outage, healthy, ...
    /// so that both see the machine in the same minutes (a load that comes and goes falls
    /// on both alike); together each lasts the measuring span. A healthy segment starts
    /// once the customer service answers again.
    async fn checkouts_interleaved(&self, phases: Phases) -> anyhow::Result<(Outcome, Outcome)> {
        let customer = Part::Service(ServiceName::Customer);
        let segment = phases.measure / SEGMENTS;
        let (mut healthy, mut outage) = (Outcome::default(), Outcome::default());
        for n in 0..2 * SEGMENTS {
            // H O O H H O O H ...: the outage in segments 1, 2, 5, 6, 9, 10, ...
            if (n + 1) % 4 >= 2 {
                self.shop.chaos.stop(customer).await?;
                outage.absorb(self.checkouts(phases.connections, segment).await);
            } else {
                self.shop.chaos.start(customer).await?;
                self.until_ok("/api/customer/health", None).await?;
                healthy.absorb(self.checkouts(phases.connections, segment).await);
            }
        }
        self.shop.chaos.start(customer).await?;
        Ok((healthy, outage))
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shop.stop().await.context("the shop failed while stopping")
    }
}

/// Measures every shop figure into `figures`.
pub async fn measure(
    dir: &Path,
    phases: Phases,
    progress: &ProgressBar,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    let bench = Bench::start(&dir.join("shop"), AddressChoice::Replica, phases.connections).await?;
    let customer = Part::Service(ServiceName::Customer);
    let (healthy, outage) = bench.checkouts_interleaved(phases).await?;
    figures.checkout_ms_healthy = Spread::of(&mut healthy.latencies_us.clone());
    figures.checkout_ms_outage = Spread::of(&mut outage.latencies_us.clone());
    figures.checkout_errors_outage = Some(outage.errors);
    if let (Some(h), Some(o)) = (figures.checkout_ms_healthy, figures.checkout_ms_outage) {
        figures.detail("checkout_p99_outage_over_healthy", round(o.p99 / h.p99.max(1e-9), 3));
    }
    figures.detail("checkout_rps_healthy", healthy.requests_per_s().round());
    figures.detail("checkout_rps_outage", outage.requests_per_s().round());
    figures.detail("checkout_errors_healthy", healthy.errors);
    figures.detail("checkout_segments_each", SEGMENTS);
    progress.inc(1);

    progress.set_message("shop: orders end to end");
    let orders = orders_end_to_end(&bench, phases).await?;
    figures.orders_per_s = Some(orders.per_s);
    figures.detail("orders_placed", orders.placed);
    figures.detail("orders_shipped", orders.shipped);
    figures.detail("orders_refused", orders.refused);
    if let Some((events, deliveries)) = orders.bus {
        figures.detail("bus_events_per_order", round(events, 2));
        figures.detail("bus_deliveries_per_order", round(deliveries, 2));
    }
    bench.stop().await?;
    progress.inc(1);

    progress.set_message("shop: the synchronous address design during the outage");
    let sync = Bench::start(&dir.join("shop-sync"), AddressChoice::Sync, phases.connections).await?;
    sync.shop.chaos.stop(customer).await?;
    let during = sync.checkouts(phases.connections, phases.measure).await;
    sync.shop.chaos.start(customer).await?;
    figures.sync_design_error_ratio = during.error_ratio();
    figures.detail("sync_design_attempts_outage", during.attempts());
    sync.stop().await?;
    progress.inc(1);
    Ok(())
}

struct Orders {
    per_s: f64,
    placed: u64,
    shipped: u64,
    refused: u64,
    /// Events published on the bus, and deliveries they owe its consumers, per shipped order.
    bus: Option<(f64, f64)>,
}

/// Places orders from `connections` customers of their own for the measuring span, then
/// waits until shipping has shipped them; the rate is shipped orders over the time from
/// the first placement to the last shipment.
async fn orders_end_to_end(bench: &Bench, phases: Phases) -> anyhow::Result<Orders> {
    for n in 1..=PRODUCTS {
        let stock = json!({ "on_hand": 1_000_000u64 });
        let (status, answer) =
            bench.send(reqwest::Method::PUT, &format!("/api/inventory/stock/p-{n:03}"), Some(&stock)).await;
        if !(200..300).contains(&status) {
            bail!("could not stock p-{n:03} for the order run: {status} {answer}");
        }
    }
    let mut customers = Vec::new();
    for n in 0..phases.connections {
        let registration = json!({
            "name": format!("Bench Shopper {n}"),
            "email": format!("shopper{n}@bench.example"),
            "address": { "line1": format!("{} Bench Street", n + 1), "city": "Leeds", "postcode": "LS1 4AP", "country": "GB" },
            "payment_method": { "kind": "card", "last4": "4242" },
            "password": shop::customer::DEMO_PASSWORD,
        });
        let created = bench.until_ok("/api/customer/customers", Some(&registration)).await?;
        let id = created["id"].as_str().context("a registered customer without an id")?.to_owned();
        bench.sign_in(&id, &format!("shopper{n}@bench.example")).await?;
        customers.push((id.clone(), bench.session(&id)));
    }
    for (customer, _) in &customers {
        bench.known_to_orders(customer).await?;
    }
    let shipping =
        bench.shop.contexts.get(&ServiceName::Shipping).context("no shipping service")?.store.clone();
    let shipped_before = shipped(&shipping).await?;
    let bus_before = bus_position(&bench.bus_file)?;

    let customers = Arc::new(customers);
    let (client, base) = (bench.client.clone(), bench.url(""));
    let started = Instant::now();
    let placed = load::drive(phases.connections, phases.measure, move |connection, n| {
        let (client, base, customers) = (client.clone(), base.clone(), customers.clone());
        async move {
            let (customer, token) = &customers[connection];
            let item = json!({ "product_id": format!("p-{:03}", 1 + n % PRODUCTS), "quantity": 1 });
            let cart = format!("{base}/api/order/carts/{customer}/items");
            let added = client.post(cart).bearer_auth(token).json(&item).send().await;
            if !added.is_ok_and(|a| a.status().is_success()) {
                return false;
            }
            let order = json!({ "customer_id": customer });
            let placed =
                client.post(format!("{base}/api/order/orders")).bearer_auth(token).json(&order).send().await;
            placed.is_ok_and(|p| p.status().as_u16() == 201)
        }
    })
    .await;
    let placed_ok = placed.latencies_us.len() as u64;
    // Until every placed order shipped, or nothing more shipped for 10 s.
    let (mut last, mut last_change) = (0, Instant::now());
    let finished = loop {
        let now = shipped(&shipping).await? - shipped_before;
        if now != last {
            (last, last_change) = (now, Instant::now());
        }
        if now >= placed_ok || last_change.elapsed() > Duration::from_secs(10) {
            break last_change;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let took = finished.saturating_duration_since(started);
    let bus = (last > 0)
        .then(|| bus_traffic_since(&bench.bus_file, bus_before))
        .transpose()?
        .map(|(events, deliveries)| (events as f64 / last as f64, deliveries as f64 / last as f64));
    Ok(Orders {
        per_s: last as f64 / took.as_secs_f64().max(1e-9),
        placed: placed_ok,
        shipped: last,
        refused: placed.errors,
        bus,
    })
}

/// The embedded bus log's last position, read from its file.
fn bus_position(bus_file: &Path) -> anyhow::Result<u64> {
    let conn = rusqlite::Connection::open_with_flags(bus_file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("cannot read the bus log {}", bus_file.display()))?;
    Ok(conn.query_row("SELECT coalesce(max(pos), 0) FROM bus_log", [], |r| r.get(0))?)
}

/// Messages logged after `since`, and how many deliveries they owe (one per consumer of
/// their stream).
fn bus_traffic_since(bus_file: &Path, since: u64) -> anyhow::Result<(u64, u64)> {
    let conn = rusqlite::Connection::open_with_flags(bus_file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("cannot read the bus log {}", bus_file.display()))?;
    let events: u64 = conn.query_row("SELECT count(*) FROM bus_log WHERE pos > ?1", [since], |r| r.get(0))?;
    let deliveries: u64 = conn.query_row(
        "SELECT count(*) FROM bus_log l JOIN bus_consumer c \
         ON instr(',' || c.streams || ',', ',' || l.stream || ',') > 0 WHERE l.pos > ?1",
        [since],
        |r| r.get(0),
    )?;
    Ok((events, deliveries))
}

async fn shipped(store: &kit::store::Store) -> anyhow::Result<u64> {
    Ok(store
        .transact(|tx| {
            tx.query_one("SELECT count(*) FROM shipment WHERE status = 'shipped'", &[])?.get::<u64>(0)
        })
        .await?)
}
