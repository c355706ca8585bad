//! The distributed mode as it is deployed: every service and the gateway a `capshop serve`
//! process of its own, on a real PostgreSQL server (a database per service) and a real
//! nats-server with JetStream. Processes and servers are killed with SIGKILL under load
//! and restarted (or, with two instances of a service, left dead while the other carries
//! on); afterwards every order is confirmed and shipped, and each consumer has applied
//! every committed event of its source exactly once.

mod deployment;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use deployment::{Deployment, eventually, support};
use shop::inventory::sites::Site;
use shop::service::{Part, ServiceName};
use tokio::sync::RwLock;

const ORDER: Part = Part::Service(ServiceName::Order);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_service_in_its_own_process_a_customer_moves_checks_out_gets_shipped_and_products_are_found()
 {
    let Some(shop) = Deployment::start().await else { return };
    shop.replicated().await;
    support::registers_moves_checks_out_and_ships(&shop).await;

    let found = eventually("the search index to hold the catalog", || async {
        let (_, answer) = shop.get("/api/search?q=baseball+cap").await;
        answer["results"].as_array().filter(|hits| !hits.is_empty()).cloned()
    })
    .await;
    assert_eq!(found[0]["id"], "p-001", "{found:?}");
    assert_eq!(shop.count(ORDER, "SELECT count(*) FROM orders").await, 1);
    // On PostgreSQL and NATS too, every relation between the services agrees.
    shop.reconciled().await;
}

/// The dashboard's picture in the distributed mode: every process with its PostgreSQL
/// database, the NATS bus, and each link with the chaos route of the process that owns it;
/// a cut through that route shows in the topology.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topology_names_every_process_its_database_and_the_bus_and_cuts_through_each_processes_chaos_route()
 {
    let Some(shop) = Deployment::start().await else { return };
    let client = reqwest::Client::new();
    let topology = || async {
        let url = format!("http://127.0.0.1:{}/admin/topology", shop.gateway_port);
        let answer = client.get(url).bearer_auth(deployment::TOKEN).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        answer.json::<serde_json::Value>().await.unwrap()
    };
    let seen = topology().await;
    assert_eq!(seen["mode"], "distributed");
    let nodes = seen["nodes"].as_array().unwrap();
    let node =
        |name: &str| nodes.iter().find(|n| n["name"] == name).unwrap_or_else(|| panic!("{name}: {seen}"));
    for part in Part::all() {
        let name = part.name();
        assert_eq!(node(&name)["state"], "running", "{name}");
        assert_eq!(node(&name)["stoppable"], false, "a process is stopped by its process manager");
        assert_eq!(node(&format!("db:{name}"))["detail"], "PostgreSQL");
    }
    assert_eq!(node("bus")["detail"], "NATS JetStream");
    let link = |seen: &serde_json::Value| {
        seen["links"].as_array().unwrap().iter().find(|l| l["name"] == "order->customer").cloned().unwrap()
    };
    let control = link(&seen)["control"].as_str().unwrap().to_owned();
    assert_eq!(control, "/api/order/admin/chaos");

    let cut = client
        .post(format!("http://127.0.0.1:{}{control}/cut", shop.gateway_port))
        .bearer_auth(deployment::TOKEN)
        .json(&serde_json::json!({ "a": "order", "b": "customer" }))
        .send()
        .await
        .unwrap();
    assert_eq!(cut.status(), 200, "{}", cut.text().await.unwrap());
    let after = link(&topology().await);
    assert!(after["cut_out"] == true && after["cut_in"] == true, "{after}");

    let (status, _) = shop.get("/admin/topology").await;
    assert_eq!(status, 401, "the topology needs the admin token");
}

/// Orders placed by three shoppers at once, each one after the other; `on_placed` runs
/// after each order with the number placed so far (the test's faults are keyed to it,
/// and take the deployment for themselves while they kill or restart something).
async fn place_orders<F, Fut>(shop: &Arc<RwLock<Deployment>>, per_shopper: usize, on_placed: F) -> Vec<String>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let placed = Arc::new(AtomicUsize::new(0));
    let on_placed = Arc::new(on_placed);
    let mut shoppers = tokio::task::JoinSet::new();
    for (n, customer) in ["c-ada", "c-bob", "c-cyd"].into_iter().enumerate() {
        let (shop, placed, on_placed) = (shop.clone(), placed.clone(), on_placed.clone());
        shoppers.spawn(async move {
            let mut ids = Vec::new();
            for i in 0..per_shopper {
                let product = format!("p-{:03}", 1 + (n * per_shopper + i) % 20);
                ids.push(shop.read().await.place_order(customer, &product).await);
                on_placed(placed.fetch_add(1, Ordering::SeqCst) + 1).await;
            }
            ids
        });
    }
    let mut ids = Vec::new();
    while let Some(done) = shoppers.join_next().await {
        ids.extend(done.expect("a shopper places every order"));
    }
    ids
}

/// After the faults: every order confirmed and shipped, one reservation and one shipment
/// each, the stock reserved once per unit, and every event applied once.
async fn converged(shop: &Deployment, orders: &[String]) {
    for id in orders {
        shop.order_status(id, "confirmed").await;
        shop.shipment(id, "shipped").await;
    }
    // Every consumer caught up first: after a broker crash, what was in flight returns
    // only after the ack wait, and the counts below read the consumers' own databases.
    shop.nothing_lost_nothing_twice().await;
    shop.reconciled().await;
    let n = orders.len() as i64;
    assert_eq!(shop.count(ORDER, "SELECT count(*) FROM orders").await, n);
    for site in Site::ALL {
        // Each site holds every order's lines: its own, and the other's replicated.
        let lines = "SELECT count(DISTINCT order_id) FROM reservation";
        assert_eq!(shop.count(Part::Site(site), lines).await, n, "{site:?} knows one reservation per order");
        let reserved =
            "SELECT CAST(COALESCE(sum(quantity), 0) AS BIGINT) FROM reservation WHERE status = 'reserved'";
        assert_eq!(shop.count(Part::Site(site), reserved).await, n, "one unit reserved per order, once");
    }
    assert_eq!(
        shop.count(
            Part::Service(ServiceName::Shipping),
            "SELECT count(*) FROM shipment WHERE status = 'shipped'"
        )
        .await,
        n
    );
}

/// What a test breaks while orders are being placed.
#[derive(Clone, Copy)]
enum Fault {
    /// These service processes are killed with SIGKILL, then started again.
    KillServices(&'static [Part]),
    /// The nats-server is killed with SIGKILL, then started again on the same store.
    KillNats,
}

impl Fault {
    async fn inject(self, shop: &mut Deployment) {
        match self {
            Fault::KillServices(names) => names.iter().for_each(|part| shop.kill_part(*part)),
            Fault::KillNats => shop.nats.kill(),
        }
    }

    async fn heal(self, shop: &mut Deployment) {
        match self {
            Fault::KillServices(names) => {
                for part in names {
                    shop.start_part(*part).await;
                }
            }
            Fault::KillNats => {
                // The orders placed since the kill (at least 10 of the 12 counted since
                // then; two may have been in flight at it) wait in the order outbox.
                let waiting = shop.count(ORDER, "SELECT count(*) FROM kit_outbox").await;
                assert!(waiting >= 10, "the outbox grows while the bus is down: {waiting} events waiting");
                shop.nats.restart().await;
            }
        }
    }
}

/// Places 30 orders, with `fault` injected after the 8th and healed after the 20th, and
/// checks that everything converged.
async fn orders_survive(fault: Fault) {
    let Some(shop) = Deployment::start().await else { return };
    shop.replicated().await;
    let shop = Arc::new(RwLock::new(shop));
    let faults = shop.clone();
    let orders = place_orders(&shop, 10, move |placed| {
        let shop = faults.clone();
        async move {
            match placed {
                8 => fault.inject(&mut *shop.write().await).await,
                20 => fault.heal(&mut *shop.write().await).await,
                _ => {}
            }
        }
    })
    .await;
    converged(&*shop.read().await, &orders).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_and_shipping_killed_with_sigkill_under_load_and_restarted_lose_nothing_and_apply_nothing_twice()
 {
    orders_survive(Fault::KillServices(&[
        Part::Site(Site::Dc1),
        Part::Site(Site::Dc2),
        Part::Service(ServiceName::Shipping),
    ]))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_killed_under_load_keeps_writes_accepted_and_everything_converges_after_its_restart() {
    orders_survive(Fault::KillNats).await;
}

/// The instance ids that answer `/api/<service>/health` through the gateway in `tries` requests.
async fn answering(shop: &Deployment, service: &str, tries: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..tries {
        let (status, health) = shop.get(&format!("/api/{service}/health")).await;
        assert_eq!(status, 200, "{health}");
        seen.insert(health["instance"].as_str().expect("a served process names its instance").to_owned());
    }
    seen
}

/// Two processes each of order and shipping on the same databases, the gateway balancing
/// over them. Under load the order instance that holds the order stream's relay lease and
/// one shipping instance are killed with SIGKILL and not started again: the other instances
/// go on serving, the survivor takes the relay over, and the deliveries the dead ones held
/// (the order service's per-key stock consumer among them) come back to the survivors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_instances_of_order_and_shipping_one_of_each_killed_under_load_the_others_carry_on_losing_nothing()
 {
    let shipping = Part::Service(ServiceName::Shipping);
    let Some(shop) = Deployment::start_with(&[(ORDER, 2), (shipping, 2)]).await else { return };
    shop.replicated().await;
    let both: BTreeSet<String> = ["order".to_owned(), "order-2".to_owned()].into();
    assert_eq!(answering(&shop, "order", 4).await, both, "the gateway sends requests to both instances");
    let holder =
        eventually("an order instance to hold the relay lease", || shop.relay_holder("order", "order")).await;
    let survivor = both.iter().find(|id| **id != holder).expect("two instances").clone();

    let shop = Arc::new(RwLock::new(shop));
    let (faults, killed) = (shop.clone(), holder.clone());
    let orders = place_orders(&shop, 10, move |placed| {
        let (shop, killed) = (faults.clone(), killed.clone());
        async move {
            if placed == 8 {
                // Taken for writing: no request is under way at either instance.
                let mut shop = shop.write().await;
                shop.kill_instance(&killed);
                shop.kill_instance("shipping");
            }
        }
    })
    .await;
    let shop = shop.read().await;
    converged(&shop, &orders).await;
    let after = shop.relay_holder("order", "order").await;
    assert_eq!(after.as_ref(), Some(&survivor), "the surviving instance took the relay lease over");
    assert_eq!(answering(&shop, "order", 3).await, [survivor].into(), "only the survivor answers now");
}

#[test]
fn serve_without_its_settings_exits_with_a_message_that_says_how_to_give_them() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |args: &[&str], env: &[(&str, &str)]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_capshop"))
            .arg("serve")
            .args(args)
            .env_remove("CAPSHOP_ADMIN_TOKEN")
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(!output.status.success(), "serve {args:?} refuses to start");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let no_db = serve(&["search", "--listen", "127.0.0.1:0"], &[("CAPSHOP_ADMIN_TOKEN", "t")]);
    assert!(no_db.contains("search needs --db URL: pass it, set CAPSHOP_DB"), "{no_db}");

    // The variable beats the file; the file's other settings still count.
    std::fs::write(
        dir.path().join("capshop.toml"),
        "admin_token = \"t\"\n[peers]\ncustomer = \"http://c:1\"\n",
    )
    .unwrap();
    let bad_peer = serve(&["order", "--listen", "127.0.0.1:0"], &[("CAPSHOP_PEERS", "customer=c:1")]);
    assert!(bad_peer.contains("the peer customer is \"c:1\": give its base URL"), "{bad_peer}");
    let no_catalog = serve(&["order", "--listen", "127.0.0.1:0"], &[]);
    assert!(no_catalog.contains("order calls catalog: pass --peer catalog=http://HOST:PORT"), "{no_catalog}");
}
