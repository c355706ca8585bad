//! A distributed shop for tests: a PostgreSQL server and a nats-server of the test's own
//! (free ports, temp dirs), and every service and the gateway as its own `capshop serve`
//! process, which a test can kill with SIGKILL and start again.

#![allow(dead_code)] // each test uses its own part.

/// The shop's own end-to-end helpers, which reach it through [`support::Gateway`].
#[path = "../../../shop/tests/support/mod.rs"]
pub mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kit::testserver::{NatsServer, PgServer, free_port};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use shop::service::Part;
use shop::stores::StoreLocation;

pub const TOKEN: &str = "distributed-test-token";

/// The shop's processes and the servers they use.
pub struct Deployment {
    pub pg: PgServer,
    pub nats: NatsServer,
    /// What every process is given as `--bus`: `nats`'s URL, with a stream prefix maybe.
    bus: String,
    /// The port of each part's process, by part name (`order`, `inventory-dc2`).
    ports: BTreeMap<String, u16>,
    /// More instances of a part, by instance id (`order-2`), with the part and port.
    extra: BTreeMap<String, (Part, u16)>,
    pub gateway_port: u16,
    processes: BTreeMap<String, Child>,
    client: Client,
}

impl Deployment {
    /// Starts both servers, a database per part and every process; waits until every
    /// process answers `/health`. `None` when a server binary is missing (outside CI).
    pub async fn start() -> Option<Self> {
        Self::start_with(&[]).await
    }

    /// Like [`Deployment::start`], with `n` instances of each part in `instances`: the
    /// first named after its part (`order`), the others `order-2`, ...; the gateway
    /// balances over them, the services call the first.
    pub async fn start_with(instances: &[(Part, usize)]) -> Option<Self> {
        let pg = PgServer::start()?;
        let nats = NatsServer::start().await?;
        for part in StoreLocation::parts() {
            pg.create_database(&StoreLocation::database(&part));
        }
        let bus = nats.url();
        Some(Self::start_on(pg, nats, bus, instances).await)
    }

    /// A shop restored from the distributed backup in `backup` as an operator restores one
    /// onto a server of their own: `capshop restore --database-url --json` into a
    /// PostgreSQL server the test starts (the restore creates the databases), every
    /// service then on a NATS server of its own with the stream prefix the restore gave.
    /// Answers the shop and what the restore printed.
    pub async fn restored(backup: &std::path::Path) -> Option<(Self, Value)> {
        let pg = PgServer::start()?;
        let nats = NatsServer::start().await?;
        let done = Command::new(env!("CARGO_BIN_EXE_capshop"))
            .arg("restore")
            .arg(backup)
            .args(["--database-url", &pg.base_url(), "--json"])
            .output()
            .expect("capshop restore runs");
        let said = String::from_utf8_lossy(&done.stderr).into_owned();
        assert!(done.status.success(), "the backup restores: {said}");
        let restored: Value = serde_json::from_slice(&done.stdout).expect("the restore prints JSON");
        let prefix =
            restored["stream_prefix"].as_str().expect("a restore onto a server gives a stream prefix");
        let bus = format!("{}?prefix={prefix}", nats.url());
        Some((Self::start_on(pg, nats, bus, &[]).await, restored))
    }

    /// Every process started on `pg` (whose databases exist) and `nats`, reached as `bus`.
    async fn start_on(pg: PgServer, nats: NatsServer, bus: String, instances: &[(Part, usize)]) -> Self {
        let ports = Part::all().into_iter().map(|part| (part.name(), free_port())).collect();
        let mut deployment = Self {
            pg,
            nats,
            bus,
            ports,
            extra: instances
                .iter()
                .flat_map(|(part, n)| {
                    (2..=*n).map(move |i| (format!("{}-{i}", part.name()), (*part, free_port())))
                })
                .collect(),
            gateway_port: free_port(),
            processes: BTreeMap::new(),
            client: Client::builder().timeout(Duration::from_secs(10)).build().unwrap(),
        };
        for part in Part::all() {
            deployment.start_part(part).await;
        }
        for (id, (part, port)) in deployment.extra.clone() {
            deployment.start_process(&part.name(), Some(&id), port).await;
        }
        deployment.start_process("gateway", None, deployment.gateway_port).await;
        deployment
    }

    /// The first instance of every part; for the gateway, every instance.
    fn peer_args(&self, gateway: bool) -> Vec<String> {
        let extra = self.extra.values().filter(|_| gateway).map(|(part, port)| (part.name(), *port));
        self.ports
            .iter()
            .map(|(name, port)| (name.clone(), *port))
            .chain(extra)
            .flat_map(|(name, port)| ["--peer".into(), format!("{name}=http://127.0.0.1:{port}")])
            .collect()
    }

    /// Starts (again) the process of `part` and waits until it is healthy.
    pub async fn start_part(&mut self, part: Part) {
        self.start_process(&part.name(), None, self.ports[&part.name()]).await;
    }

    /// Starts `process` (a part, or the gateway) as instance `id` (default: named after
    /// the part) on `port`, and waits until it is healthy.
    async fn start_process(&mut self, process: &str, id: Option<&str>, port: u16) {
        let id = id.unwrap_or(process).to_owned();
        let mut command = Command::new(env!("CARGO_BIN_EXE_capshop"));
        command
            .args(["serve", process, "--listen", &format!("127.0.0.1:{port}")])
            .args(self.peer_args(process == "gateway"));
        if process != "gateway" {
            command.args(["--instance-id", &id]);
            command.args(["--db", &self.pg.url(&StoreLocation::database(process)), "--bus", &self.bus]);
        } else {
            // The gateway takes backups: it reaches every database and the bus.
            command.args(["--db", &self.pg.base_url(), "--bus", &self.bus]);
        }
        let child = command
            .env("CAPSHOP_ADMIN_TOKEN", TOKEN)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("capshop serve starts");
        self.processes.insert(id.clone(), child);
        let url = format!("http://127.0.0.1:{port}/health");
        let mut child_exited = None;
        eventually(&format!("{id} to answer /health"), || {
            let health = self.client.get(&url).send();
            if let Some(status) = self.processes.get_mut(&id).and_then(|c| c.try_wait().ok().flatten()) {
                child_exited = Some(status);
            }
            async move { health.await.ok().filter(|r| r.status() == 200).map(drop) }
        })
        .await;
        assert!(child_exited.is_none(), "{id} exited: {child_exited:?}");
    }

    /// Kills the process of `part` with SIGKILL, as a crash would.
    pub fn kill_part(&mut self, part: Part) {
        self.kill_instance(&part.name());
    }

    /// Kills the process of instance `id` (`order`, `order-2`) with SIGKILL.
    pub fn kill_instance(&mut self, id: &str) {
        let mut child = self.processes.remove(id).expect("the instance runs");
        child.kill().expect("SIGKILL is delivered");
        child.wait().expect("the killed process is reaped");
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        support::get(self, path).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        support::post(self, path, body).await
    }

    /// Waits until `capshop reconcile` through the gateway finds nothing at all: every
    /// service's database agrees with the others' and every event is applied.
    pub async fn reconciled(&self) {
        eventually("reconcile to find nothing", || async {
            let response = self
                .client
                .get(support::Gateway::url(self, "/admin/reconcile"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .ok()?;
            let report: Value = response.json().await.ok()?;
            report["findings"].as_array().is_some_and(Vec::is_empty).then_some(())
        })
        .await;
    }

    /// Waits until the order service's replicas know the seeded customers and products.
    pub async fn replicated(&self) {
        eventually("the order service to know the seeded products", || async {
            let (status, cart) = self
                .post("/api/order/carts/c-ada/items", json!({ "product_id": "p-001", "quantity": 1 }))
                .await;
            (status == 200 && cart.as_array().is_some_and(|c| !c.is_empty())).then_some(())
        })
        .await;
        support::send(self, reqwest::Method::DELETE, "/api/order/carts/c-ada/items/p-001", Value::Null).await;
        for customer in ["c-ada", "c-bob", "c-cyd"] {
            eventually("the order service's customer replica", || async {
                let (_, checkout) = self.get(&format!("/api/order/checkout/{customer}")).await;
                (checkout["address_source"]["source"] == "replica").then_some(())
            })
            .await;
        }
    }

    /// Puts one unit of `product` in `customer`'s cart and places the order; answers its id.
    pub async fn place_order(&self, customer: &str, product: &str) -> String {
        let line = json!({ "product_id": product, "quantity": 1 });
        let (status, cart) = self.post(&format!("/api/order/carts/{customer}/items"), line).await;
        assert_eq!(status, 200, "{cart}");
        let (status, order) = self.post("/api/order/orders", json!({ "customer_id": customer })).await;
        assert_eq!(status, 201, "an order is accepted: {order}");
        order["id"].as_str().unwrap().to_owned()
    }

    pub async fn order_status(&self, id: &str, wanted: &str) -> Value {
        eventually(&format!("order {id} to be {wanted}"), || async {
            let (_, order) = self.get(&format!("/api/order/orders/{id}")).await;
            (order["status"] == wanted).then_some(order)
        })
        .await
    }

    pub async fn shipment(&self, order_id: &str, wanted: &str) -> Value {
        eventually(&format!("the shipment of {order_id} to be {wanted}"), || async {
            let (_, shipments) = self.get(&format!("/api/shipping/shipments?order_id={order_id}")).await;
            shipments.as_array().and_then(|s| s.first()).filter(|s| s["status"] == wanted).cloned()
        })
        .await
    }

    /// One number from `sql` in the database of `part`.
    pub async fn count(&self, part: Part, sql: &'static str) -> i64 {
        self.number(&part.name(), sql, Vec::new()).await.expect("a row")
    }

    /// The first column of the first row `sql` answers with `params` in the database of
    /// the part named `part`, if there is a row.
    pub async fn number(&self, part: &str, sql: &'static str, params: Vec<String>) -> Option<i64> {
        let store = kit::store::Store::open(&self.pg.url(&StoreLocation::database(part)), &[]).await.unwrap();
        let row = store
            .transact(move |tx| {
                let params: Vec<kit::store::Param<'_>> = params.iter().map(|p| p.as_str().into()).collect();
                tx.query_opt(sql, &params)
            })
            .await
            .unwrap();
        row.map(|r| r.get::<i64>(0).unwrap())
    }

    /// Who holds the relay lease of `stream` in the database of the part named `part`:
    /// the holder's instance id (what comes before the lease's unique suffix).
    pub async fn relay_holder(&self, part: &str, stream: &str) -> Option<String> {
        let store = kit::store::Store::open(&self.pg.url(&StoreLocation::database(part)), &[]).await.unwrap();
        let stream = stream.to_owned();
        let held = store.transact(move |tx| kit::relay::lease::holder(tx, &stream)).await.unwrap();
        held.map(|(holder, _)| holder.rsplit_once('/').map_or(holder.clone(), |(id, _)| id.to_owned()))
    }

    /// Checks, from every part's database, that each consumer applied every event its
    /// sources committed: per source, its highest applied seq and its inbox floor (every seq
    /// at or below it applied, each once — a copy at or below it is skipped) both reach that
    /// source's last committed seq.
    pub async fn nothing_lost_nothing_twice(&self) {
        for (part, consumer, sources) in CONSUMERS {
            for source in sources {
                let last_seq = "SELECT last_seq FROM kit_outbox_head WHERE stream = $1";
                let head = self.number(source, last_seq, vec![source.to_string()]).await.unwrap_or(0);
                let params = vec![consumer.to_owned(), source.to_string()];
                for (what, sql) in [
                    ("apply", "SELECT seq FROM kit_applied WHERE consumer = $1 AND stream = $2"),
                    ("settle", "SELECT seq FROM kit_inbox_floor WHERE consumer = $1 AND stream = $2"),
                ] {
                    eventually(&format!("{consumer} to {what} {source} up to {head}"), || async {
                        let seq = self.number(part, sql, params.clone()).await.unwrap_or(0);
                        (seq >= head).then_some(())
                    })
                    .await;
                }
            }
        }
    }
}

/// Every consumer of the shop: the part it runs in, its name, the streams it reads.
pub const CONSUMERS: [(&str, &str, &[&str]); 16] = [
    ("customer", "customer.sessions", &["customer"]),
    ("order", "order.sessions", &["customer"]),
    ("shipping", "shipping.sessions", &["customer"]),
    ("search", "search.sessions", &["customer"]),
    ("order", "order.customer-replica", &["customer"]),
    ("order", "order.product-replica", &["catalog"]),
    ("order", "order.stock", &["inventory-dc1", "inventory-dc2"]),
    ("inventory-dc1", "inventory-dc1.orders", &["order"]),
    ("inventory-dc2", "inventory-dc2.orders", &["order"]),
    ("inventory-dc1", "inventory-dc1.site-replica", &["inventory-dc2"]),
    ("inventory-dc2", "inventory-dc2.site-replica", &["inventory-dc1"]),
    ("shipping", "shipping.order-replica", &["order"]),
    ("shipping", "shipping.customer-replica", &["customer"]),
    ("shipping", "shipping.payments", &["payment"]),
    ("search", "search.catalog", &["catalog"]),
    ("search", "search.orders", &["order"]),
];

impl support::Gateway for Deployment {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.gateway_port)
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for child in self.processes.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `probe` until it answers `Some`, for at most 120 s. A healthy run takes
/// seconds, but after a crash what was in flight comes back only after the consumers' ack
/// wait, and on a loaded machine that can happen more than once.
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    shop::service::testing::eventually_within(Duration::from_secs(120), what, probe).await
}
