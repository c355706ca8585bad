//! The workload: concurrent clients, each a shopper of its own registered at the start,
//! writing unique values through the gateway (addresses, orders placed with an
//! Idempotency-Key, a share of them sent again, cancels, new customers; restocks set low
//! counts or top up to a few units available, and a share tops up one unit at both sites
//! and orders it, so the sites contend for the last units; while the plan cuts the sites
//! from each other most calls order what a site still shows available (in the second
//! before, half top a product up at both sites), and the clients' customers alternate
//! between the sites, so both sell it) and
//! reading (orders, customers, checkout, stock at each site). Each call is one [`Op`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use reqwest::Method;
use serde_json::{Value, json};
use shop::inventory::sites::Site;
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

use super::child::{Answer, ChildShop};
use super::history::{History, Op, Outcome};
use crate::scenario::timeline::Timeline;

/// The products the clients order and restock: few, so the sites contend for them.
const PRODUCTS: [&str; 4] = ["p-001", "p-002", "p-003", "p-004"];
const SITES: [&str; 2] = ["inventory-dc1", "inventory-dc2"];
const PASSWORD: &str = "torture-secret-1";

/// The share of a client's operations that sell the last units its site shows while the
/// sites are cut from each other.
const SELL_WHILE_CUT: f64 = 0.8;

/// The share of a client's operations that top a product up at both sites in the second
/// before the sites are cut, so each site's view has units to sell while they are.
const STOCK_UP_BEFORE_CUT: f64 = 0.5;

/// How many customers a client registers at most to get one routed to its site.
const TRIES_FOR_A_SITE: usize = 8;

/// What every client shares: the shop (behind a lock the nemesis takes to kill and
/// restart it), the history, the timeline, when the plan cuts the sites from each other,
/// and a counter that makes values unique.
#[derive(Clone)]
pub struct Bench {
    pub shop: Arc<RwLock<ChildShop>>,
    pub history: History,
    pub timeline: Timeline,
    pub seed: u64,
    sites_cut: Arc<Vec<(f64, f64)>>,
    unique: Arc<AtomicU64>,
}

impl Bench {
    pub fn new(shop: Arc<RwLock<ChildShop>>, seed: u64) -> Self {
        let (history, timeline) = (History::new(), Timeline::new());
        Self { shop, history, timeline, seed, sites_cut: Arc::default(), unique: Arc::default() }
    }

    /// Aims the clients at the plan's partitions of the sites, (from, to) in seconds of the
    /// history: while one lasts, most of their operations contend for the last units.
    pub fn aim(&mut self, sites_cut: Vec<(f64, f64)>) {
        self.sites_cut = Arc::new(sites_cut);
    }

    /// Whether the plan has the sites cut from each other now.
    fn sites_are_cut(&self) -> bool {
        let now = self.history.now();
        self.sites_cut.iter().any(|(from, to)| (*from..*to).contains(&now))
    }

    /// Whether the plan cuts the sites from each other within the next second.
    fn sites_cut_soon(&self) -> bool {
        let now = self.history.now();
        self.sites_cut.iter().any(|(from, _)| (from - 1.0..*from).contains(&now))
    }

    fn next(&self) -> u64 {
        self.unique.fetch_add(1, Ordering::Relaxed)
    }

    /// Calls the shop and records the call as an op of `client`.
    #[allow(clippy::too_many_arguments, reason = "one op: what it is, what it sends, what it wrote")]
    async fn op(
        &self,
        client: &str,
        op: &str,
        key: &str,
        value: Value,
        request: (Method, &str, Option<&Value>),
        bearer: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Answer {
        let invoke = self.history.now();
        let (method, path, body) = request;
        let headers: Vec<(&str, &str)> =
            idempotency_key.map(|k| ("idempotency-key", k)).into_iter().collect();
        let answer = {
            let shop = self.shop.read().await;
            let bearer = bearer.unwrap_or(&shop.token).to_owned();
            shop.call(method, path, body, Some(&bearer), &headers).await
        };
        let outcome = Outcome::of(answer.status, idempotency_key.is_some());
        let ids = ids_of(&answer.body);
        self.history.push(Op {
            client: client.into(),
            op: op.into(),
            key: key.into(),
            value,
            idempotency_key: idempotency_key.map(str::to_owned),
            invoke,
            complete: self.history.now(),
            outcome,
            status: answer.status,
            ids,
        });
        self.timeline.attempt(
            "ops",
            outcome == Outcome::Ok,
            Duration::from_secs_f64(self.history.now() - invoke),
        );
        answer
    }
}

/// What of an answer the checker needs: ids, versions, the replica version a checkout saw.
fn ids_of(body: &Value) -> Value {
    let mut ids = serde_json::Map::new();
    for name in ["id", "customer_id", "version", "status", "on_hand", "available", "oversold"] {
        if !body[name].is_null() {
            ids.insert(name.into(), body[name].clone());
        }
    }
    if body["address_source"]["source"] == "replica" {
        ids.insert("replica_version".into(), body["address_source"]["version"].clone());
    }
    Value::Object(ids)
}

fn address(line1: &str) -> Value {
    json!({ "line1": line1, "city": "Springfield", "postcode": "12345", "country": "US" })
}

/// A registration body with a unique email.
fn registration(seed: u64, n: u64) -> Value {
    json!({
        "name": format!("Torture {n}"),
        "email": format!("t{seed}-{n}@example.com"),
        "payment_method": { "kind": "card", "last4": "4242" },
        "address": address(&format!("{n} Start St s{seed}")),
        "password": PASSWORD,
    })
}

/// Sets every product's stock at both sites to a few units before the clients start, so
/// the sites run out and contend from the first orders on.
pub async fn stock_low(bench: &Bench) {
    for site in SITES {
        for product in PRODUCTS {
            let body = json!({ "on_hand": 3 });
            let path = format!("/api/{site}/stock/{product}");
            let put = (Method::PUT, path.as_str(), Some(&body));
            bench.op("setup", "restock", &format!("{site}/{product}"), body.clone(), put, None, None).await;
        }
    }
}

/// A product's stock in one site's view, as a read answered it.
struct View {
    reserved: u64,
    available: u64,
    /// Units reserved beyond on hand.
    oversold: u64,
}

/// Registers a customer with a unique email as an op of `client`: the body sent and the answer.
async fn register_customer(bench: &Bench, client: &str) -> (Value, Answer) {
    let n = bench.next();
    let body = registration(bench.seed, n);
    let key = format!("reg-{}-{n}", bench.seed);
    let post = (Method::POST, "/api/customer/customers", Some(&body));
    let answer = bench.op(client, "register", "", body.clone(), post, None, Some(&key)).await;
    (body, answer)
}

/// One client's shopper: registered and signed in before the nemesis starts.
pub struct Shopper {
    name: String,
    customer: String,
    /// The inventory site its orders are routed to.
    site: Site,
    session: String,
    orders: Vec<String>,
    rng: StdRng,
}

impl Shopper {
    /// Registers the shopper of client `index`: a customer routed to dc1 for an even index,
    /// to dc2 for an odd one (a customer routed to the other site is left as registered), so
    /// the clients order at both sites.
    pub async fn register(bench: &Bench, index: usize) -> anyhow::Result<Self> {
        let name = format!("c{index}");
        let site = if index.is_multiple_of(2) { Site::Dc1 } else { Site::Dc2 };
        let (mut body, mut answer) = register_customer(bench, &name).await;
        for _ in 1..TRIES_FOR_A_SITE {
            if answer.body["id"].as_str().is_none_or(|id| Site::of_customer(id) == site) {
                break;
            }
            (body, answer) = register_customer(bench, &name).await;
        }
        let customer =
            answer.body["id"].as_str().with_context(|| format!("registering {name}: {answer:?}"))?;
        let sign_in = json!({ "email": body["email"], "password": PASSWORD });
        let post = (Method::POST, "/api/customer/sessions", Some(&sign_in));
        let answer = bench.op(&name, "sign-in", customer, Value::Null, post, None, None).await;
        let session =
            answer.body["token"].as_str().with_context(|| format!("signing {name} in: {answer:?}"))?;
        let rng = StdRng::seed_from_u64(bench.seed.wrapping_mul(1000).wrapping_add(index as u64));
        let site = Site::of_customer(customer);
        Ok(Self {
            name,
            customer: customer.to_owned(),
            site,
            session: session.to_owned(),
            orders: Vec::new(),
            rng,
        })
    }

    /// Calls one operation after another until `stop`.
    pub async fn run(mut self, bench: Bench, stop: CancellationToken) {
        while !stop.is_cancelled() {
            if bench.sites_are_cut() && self.rng.random_bool(SELL_WHILE_CUT) {
                self.sell_the_last_units(&bench).await;
            } else if bench.sites_cut_soon() && self.rng.random_bool(STOCK_UP_BEFORE_CUT) {
                self.stock_up(&bench).await;
            } else {
                self.one_of_the_mix(&bench).await;
            }
            tokio::time::sleep(Duration::from_millis(self.rng.random_range(5..40))).await;
        }
    }

    /// One operation of the mix, drawn by its share.
    async fn one_of_the_mix(&mut self, bench: &Bench) {
        match self.rng.random_range(0..100) {
            0..=24 => self.change_address(bench).await,
            25..=54 => self.place(bench).await,
            55..=61 => self.cancel(bench).await,
            62..=71 => self.restock(bench).await,
            72..=73 => self.register_another(bench).await,
            74..=78 => self.contend(bench).await,
            _ => self.read(bench).await,
        }
    }

    fn session(&self) -> Option<&str> {
        Some(&self.session)
    }

    async fn change_address(&mut self, bench: &Bench) {
        let n = bench.next();
        let body = address(&format!("{n} Moved St s{}", bench.seed));
        let path = format!("/api/customer/customers/{}/address", self.customer);
        let put = (Method::PUT, path.as_str(), Some(&body));
        bench.op(&self.name, "address", &self.customer, body.clone(), put, self.session(), None).await;
    }

    async fn place(&mut self, bench: &Bench) {
        let product = PRODUCTS[self.rng.random_range(0..PRODUCTS.len())];
        self.place_one(bench, product).await;
    }

    /// Makes sure a product has a unit available at both sites and orders it at once:
    /// clients doing so together contend for the last unit at both sites, where cp must
    /// refuse one of them and ap must compensate an oversell. (In cp a site refuses to
    /// restock while it cannot reach the other: then the order contends for what is left.)
    async fn contend(&mut self, bench: &Bench) {
        let product = PRODUCTS[self.rng.random_range(0..PRODUCTS.len())];
        for site in SITES {
            self.top_up(bench, site, product, 1).await;
        }
        self.place_one(bench, product).await;
    }

    /// Tops a product up to a few units available at both sites (before the sites are cut).
    async fn stock_up(&mut self, bench: &Bench) {
        let product = PRODUCTS[self.rng.random_range(0..PRODUCTS.len())];
        for site in SITES {
            self.top_up(bench, site, product, 4).await;
        }
    }

    /// While the sites are cut from each other: orders the first product (in a random
    /// order) that the client's site still shows units of, so the clients of both sites
    /// sell the units each site's view still shows, which the other site cannot see.
    async fn sell_the_last_units(&mut self, bench: &Bench) {
        let mut products = PRODUCTS;
        products.shuffle(&mut self.rng);
        for product in products {
            let stock = self.stock_at(bench, &self.site.instance(), product).await;
            if stock.is_some_and(|v| v.available > 0) {
                return self.place_one(bench, product).await;
            }
        }
    }

    /// Adds one `product` to the cart and places the order (sent again as `place` says).
    async fn place_one(&mut self, bench: &Bench, product: &str) {
        let item = json!({ "product_id": product, "quantity": 1 });
        let path = format!("/api/order/carts/{}/items", self.customer);
        let post = (Method::POST, path.as_str(), Some(&item));
        bench.op(&self.name, "cart", &self.customer, item.clone(), post, self.session(), None).await;
        let key = format!("ord-{}-{}", bench.seed, bench.next());
        let body = json!({ "customer_id": self.customer });
        let mut sends = 0;
        loop {
            let post = (Method::POST, "/api/order/orders", Some(&body));
            let answer = bench
                .op(&self.name, "place", &self.customer, body.clone(), post, self.session(), Some(&key))
                .await;
            if let Some(id) =
                answer.body["id"].as_str().filter(|_| Outcome::of(answer.status, true) == Outcome::Ok)
            {
                self.orders.push(id.to_owned());
            }
            sends += 1;
            // A share is sent again: always once more after an unknown outcome (as a
            // careful client does), and a quarter of the time after an ok one.
            let again = match Outcome::of(answer.status, true) {
                Outcome::Unknown => sends < 3,
                Outcome::Ok => sends == 1 && self.rng.random_bool(0.25),
                _ => false,
            };
            if !again {
                break;
            }
        }
    }

    async fn cancel(&mut self, bench: &Bench) {
        if self.orders.is_empty() {
            return self.read(bench).await;
        }
        let order = self.orders[self.rng.random_range(0..self.orders.len())].clone();
        let path = format!("/api/order/orders/{order}/cancel");
        let post = (Method::POST, path.as_str(), None);
        bench.op(&self.name, "cancel", &order, Value::Null, post, self.session(), None).await;
    }

    async fn restock(&mut self, bench: &Bench) {
        let product = PRODUCTS[self.rng.random_range(0..PRODUCTS.len())];
        let site = SITES[self.rng.random_range(0..SITES.len())];
        // Low counts, so the sites run out and contend for the last units: half the time an
        // absolute count, which may take units away (refused below what the view has
        // reserved, which only grows), else a top-up to a few units available.
        let absolute = self.rng.random_bool(0.5).then(|| self.rng.random_range(1..=8));
        let units = self.rng.random_range(1..=4);
        match absolute {
            Some(on_hand) => {
                if self.restockable(bench, site, product).await.is_some() {
                    self.restock_to(bench, site, product, on_hand).await;
                }
            }
            None => self.top_up(bench, site, product, units).await,
        }
    }

    /// The stock of `product` in `site`'s view, read as an op, or `None` when the site did
    /// not answer.
    async fn stock_at(&self, bench: &Bench, site: &str, product: &str) -> Option<View> {
        let path = format!("/api/{site}/stock/{product}");
        let get = (Method::GET, path.as_str(), None);
        let key = format!("{site}/{product}");
        let answer = bench.op(&self.name, "read-stock", &key, Value::Null, get, self.session(), None).await;
        let body = Some(&answer.body).filter(|_| answer.status == 200)?;
        let units = |name: &str| body[name].as_u64();
        Some(View {
            reserved: units("reserved")?,
            available: units("available")?,
            oversold: units("oversold")?,
        })
    }

    /// The view of `product` at `site`, read as an op, if it may be restocked: not when it
    /// shows units reserved beyond on hand, an oversell the sites are still deciding, which
    /// units added now would cover up, for the checker too (rule 5 judges the final stock).
    async fn restockable(&self, bench: &Bench, site: &str, product: &str) -> Option<View> {
        self.stock_at(bench, site, product).await.filter(|v| v.oversold == 0)
    }

    /// Tops `product` up at `site` to `units` available in its view, if it shows fewer. It
    /// only adds units: two sites topping up on views that have not seen each other's
    /// top-up yet add more than meant, but never take the stock below what is reserved.
    async fn top_up(&self, bench: &Bench, site: &str, product: &str, units: u64) {
        if let Some(view) = self.restockable(bench, site, product).await.filter(|v| v.available < units) {
            self.restock_to(bench, site, product, view.reserved + units).await;
        }
    }

    async fn restock_to(&self, bench: &Bench, site: &str, product: &str, on_hand: u64) {
        let body = json!({ "on_hand": on_hand });
        let path = format!("/api/{site}/stock/{product}");
        let put = (Method::PUT, path.as_str(), Some(&body));
        bench.op(&self.name, "restock", &format!("{site}/{product}"), body.clone(), put, None, None).await;
    }

    async fn register_another(&mut self, bench: &Bench) {
        register_customer(bench, &self.name).await;
    }

    async fn read(&mut self, bench: &Bench) {
        let customer = self.customer.clone();
        let (op, key, path) = match self.rng.random_range(0..4) {
            0 if !self.orders.is_empty() => {
                let order = self.orders[self.rng.random_range(0..self.orders.len())].clone();
                ("read-order", order.clone(), format!("/api/order/orders/{order}"))
            }
            1 => ("read-customer", customer.clone(), format!("/api/customer/customers/{customer}")),
            2 => {
                let site = SITES[self.rng.random_range(0..SITES.len())];
                let product = PRODUCTS[self.rng.random_range(0..PRODUCTS.len())];
                ("read-stock", format!("{site}/{product}"), format!("/api/{site}/stock/{product}"))
            }
            _ => ("checkout", customer.clone(), format!("/api/order/checkout/{customer}")),
        };
        let get = (Method::GET, path.as_str(), None);
        bench.op(&self.name, op, &key, Value::Null, get, self.session(), None).await;
    }
}
