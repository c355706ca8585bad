//! Scenario 6 end to end: the whole shop with its two inventory sites, dc1 and dc2,
//! partitioned by cutting the links between them while customers routed to each site buy
//! the last units of one product, then healed. The figures come from
//! `shop::inventory::audit::Audit`, which `capshop scenario` can report as well.

#![allow(clippy::print_stdout, reason = "the partition tests report their audits")]

use std::collections::BTreeMap;
use std::path::Path;

mod support;

use reqwest::Client;
use serde_json::{Value, json};
use shop::inventory::audit::Audit;
use shop::inventory::sites::{Mode, Site};
use shop::launch::{Shop, ShopConfig, launch};
use shop::service::{Choices, ServiceName};

const TOKEN: &str = "sites-admin-token";
/// The product the partition fights over, and how many units it has.
const PRODUCT: &str = "p-010";
const UNITS: u64 = 3;
/// Orders of one unit each site takes during the partition.
const PER_SITE: usize = 3;

async fn start(dir: &Path, mode: Mode) -> Shop {
    let choices = Choices { inventory: mode, ..Choices::default() };
    launch(ShopConfig::ephemeral(dir, TOKEN, choices)).await.expect("the shop starts")
}

/// Polls `probe` until it returns `Some`, for at most 30 s.
async fn until<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    shop::service::testing::eventually_within(std::time::Duration::from_secs(30), what, probe).await
}

async fn call(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

/// A seeded customer whose orders go to `site`.
fn customer_of(site: Site) -> &'static str {
    ["c-ada", "c-bob", "c-cyd"]
        .into_iter()
        .find(|c| Site::of_customer(c) == site)
        .expect("seeded customers cover both sites")
}

/// The audit of the running shop.
async fn audit(shop: &Shop) -> Audit {
    let sites: BTreeMap<Site, kit::store::Store> =
        shop.sites.iter().map(|(site, s)| (*site, s.ctx.store.clone())).collect();
    Audit::measure(&sites, &shop.contexts[&ServiceName::Shipping].store).await.unwrap()
}

/// `PRODUCT` as `site` sees it.
async fn stock_at(shop: &Shop, site: Site) -> Value {
    let url = format!("http://{}/stock/{PRODUCT}", shop.sites[&site].addr);
    call(Client::new().get(url)).await.1
}

/// Waits for the order replica, then sets `PRODUCT` to `UNITS` and waits until both
/// sites see it.
async fn ready(shop: &Shop) {
    let client = Client::new();
    for customer in [customer_of(Site::Dc1), customer_of(Site::Dc2)] {
        until("the order service to know customers and products", || async {
            let item = json!({ "product_id": PRODUCT, "quantity": 1 });
            let (status, _) = support::post(shop, &format!("/api/order/carts/{customer}/items"), item).await;
            (status == 200).then_some(())
        })
        .await;
        let path = format!("/api/order/carts/{customer}/items/{PRODUCT}");
        support::send(shop, reqwest::Method::DELETE, &path, Value::Null).await;
        until("the checkout to show the replicated address", || async {
            let (_, checkout) = support::get(shop, &format!("/api/order/checkout/{customer}")).await;
            (checkout["address_source"]["source"] == "replica").then_some(())
        })
        .await;
    }
    let url = shop.url(&format!("/api/inventory/stock/{PRODUCT}"));
    let (status, set) = call(client.put(url).bearer_auth(TOKEN).json(&json!({ "on_hand": UNITS }))).await;
    assert_eq!(status, 200, "{set}");
    for site in Site::ALL {
        until("both sites to see the new stock", || async {
            (stock_at(shop, site).await["on_hand"] == UNITS).then_some(())
        })
        .await;
    }
}

/// Places an order of one unit of `PRODUCT` for `customer`; returns its id.
async fn buy(shop: &Shop, customer: &str) -> String {
    let item = json!({ "product_id": PRODUCT, "quantity": 1 });
    let (status, cart) = support::post(shop, &format!("/api/order/carts/{customer}/items"), item).await;
    assert_eq!(status, 200, "{cart}");
    let (status, order) = support::post(shop, "/api/order/orders", json!({ "customer_id": customer })).await;
    assert_eq!(status, 201, "{order}");
    order["id"].as_str().unwrap().to_owned()
}

/// Waits until the order leaves pending stock; returns it.
async fn answered(shop: &Shop, order_id: &str) -> Value {
    until(&format!("order {order_id} to be answered"), || async {
        let (_, order) = support::get(shop, &format!("/api/order/orders/{order_id}")).await;
        (order["status"] != "pending_stock" && order["status"].is_string()).then_some(order)
    })
    .await
}

/// When the order was placed as its inventory site recorded it, and its id: the order in
/// which the compensation rule gives units back.
async fn placed(shop: &Shop, order: &Value) -> (u64, String) {
    let id = order["id"].as_str().unwrap().to_owned();
    let url = shop.url(&format!("/api/inventory/reservations?order_id={id}"));
    let (_, lines) = call(Client::new().get(url)).await;
    (lines[0]["placed_at_ms"].as_u64().unwrap(), id)
}

/// Cuts (or heals) both links between the sites, both ways, as `capshop chaos cut
/// inventory-dc1 inventory-dc2` does.
fn partition(shop: &Shop, cut: bool) {
    let (dc1, dc2) = (Site::Dc1.instance(), Site::Dc2.instance());
    let links = if cut { shop.chaos.cut(&dc1, &dc2, false) } else { shop.chaos.heal(&dc1, &dc2) };
    assert_eq!(links.expect("the sites are linked").len(), 2, "one link each way");
}

/// Places `PER_SITE` orders for customers of each site, alternating sites.
async fn buy_on_both_sites(shop: &Shop) -> BTreeMap<Site, Vec<String>> {
    let mut orders: BTreeMap<Site, Vec<String>> = BTreeMap::new();
    for _ in 0..PER_SITE {
        for site in Site::ALL {
            orders.entry(site).or_default().push(buy(shop, customer_of(site)).await);
        }
    }
    orders
}

#[tokio::test]
async fn in_ap_both_sites_sell_during_a_partition_and_the_latest_oversold_orders_are_compensated_before_shipping()
 {
    let dir = tempfile::tempdir().unwrap();
    let shop = start(dir.path(), Mode::Ap).await;
    ready(&shop).await;

    partition(&shop, true);
    let orders = buy_on_both_sites(&shop).await;
    let during = until("both sites to reserve every order routed to them", || async {
        let a = audit(&shop).await;
        a.sites.values().all(|s| s.waiting == PER_SITE as u64).then_some(a)
    })
    .await;
    println!("ap, during the partition: {during:#?}");
    for site in Site::ALL {
        assert_eq!(during.sites[&site].accepted, PER_SITE as u64, "{site} kept selling from its own view");
        assert_eq!(
            stock_at(&shop, site).await["reserved"],
            PER_SITE as u64,
            "{site} sees only its own reservations"
        );
    }
    for id in orders.values().flatten() {
        let (_, order) = support::get(&shop, &format!("/api/order/orders/{id}")).await;
        assert_eq!(order["status"], "pending_stock", "nothing ships before the arbiter decides: {order}");
    }

    partition(&shop, false);
    let all: Vec<String> = orders.values().flatten().cloned().collect();
    let mut outcomes = Vec::new();
    for id in &all {
        outcomes.push(answered(&shop, id).await);
    }
    let after = until("the sites to converge", || async {
        let a = audit(&shop).await;
        (a.divergence == 0 && a.sites.values().all(|s| s.waiting == 0)).then_some(a)
    })
    .await;
    println!("ap, after the heal: {after:#?}");

    let confirmed: Vec<&Value> = outcomes.iter().filter(|o| o["status"] == "confirmed").collect();
    let compensated: Vec<&Value> = outcomes.iter().filter(|o| o["status"] == "cancelled").collect();
    assert_eq!(confirmed.len() as u64, UNITS, "exactly the stock was sold");
    assert_eq!(compensated.len(), 2 * PER_SITE - UNITS as usize);
    for order in &compensated {
        assert!(order["reason"].as_str().unwrap().starts_with("sorry:"), "an apology: {order}");
    }
    let mut kept = Vec::new();
    for order in &confirmed {
        kept.push(placed(&shop, order).await);
    }
    let mut given_back = Vec::new();
    for order in &compensated {
        given_back.push(placed(&shop, order).await);
    }
    assert!(
        kept.iter().max() < given_back.iter().min(),
        "the latest placed were compensated: {kept:?} {given_back:?}"
    );
    assert_eq!(after.oversold_units, 2 * PER_SITE as u64 - UNITS);
    assert_eq!(after.compensated_orders, compensated.len() as u64);
    assert_eq!((after.oversold_uncompensated, after.oversold_unshipped_uncompensated), (0, 0));
    assert_eq!(after.reserved_beyond_stock, 0);
    assert_eq!(stock_at(&shop, Site::Dc1).await, stock_at(&shop, Site::Dc2).await, "one view after the heal");
    assert_eq!(stock_at(&shop, Site::Dc1).await["available"], 0);

    for order in &confirmed {
        let id = order["id"].as_str().unwrap();
        until(&format!("{id} to ship"), || async {
            let (_, shipments) = support::get(&shop, &format!("/api/shipping/shipments?order_id={id}")).await;
            (shipments[0]["status"] == "shipped").then_some(())
        })
        .await;
    }
    assert_eq!(audit(&shop).await.oversold_shipped, 0, "nothing oversold shipped");
    shop.stop().await.unwrap();
}

#[tokio::test]
async fn in_cp_a_site_cut_off_from_the_other_refuses_with_the_reason_and_stock_never_goes_below_zero() {
    let dir = tempfile::tempdir().unwrap();
    let shop = start(dir.path(), Mode::Cp).await;
    ready(&shop).await;

    partition(&shop, true);
    let orders = buy_on_both_sites(&shop).await;
    for id in orders.values().flatten() {
        let order = answered(&shop, id).await;
        assert_eq!(order["status"], "rejected", "{order}");
        let reason = order["reason"].as_str().unwrap();
        assert!(reason.contains("cannot reach") && reason.contains("cp mode"), "a clear reason: {reason}");
    }
    let during = audit(&shop).await;
    println!("cp, during the partition: {during:#?}");
    for site in Site::ALL {
        assert_eq!(during.sites[&site].refused_unreachable, PER_SITE as u64, "{site} refused");
        assert_eq!(during.sites[&site].oversold_in_view, 0);
    }
    let url = shop.url(&format!("/api/inventory/stock/{PRODUCT}"));
    let (status, problem) =
        call(Client::new().put(url).bearer_auth(TOKEN).json(&json!({ "on_hand": 9 }))).await;
    assert_eq!(status, 503, "stock changes are refused too: {problem}");

    partition(&shop, false);
    for site in Site::ALL {
        until(&format!("{site} to reach the other site again"), || async {
            let url = format!("http://{}/stock/{PRODUCT}", shop.sites[&site].addr);
            let set = Client::new().put(url).bearer_auth(TOKEN).json(&json!({ "on_hand": UNITS }));
            (call(set).await.0 == 200).then_some(())
        })
        .await;
    }
    // Once healed, both sites sell again, concurrently, and never more than the stock.
    let orders = buy_on_both_sites(&shop).await;
    let mut confirmed = 0;
    for id in orders.values().flatten() {
        let order = answered(&shop, id).await;
        confirmed += u64::from(order["status"] == "confirmed");
    }
    let after = until("the sites to converge", || async {
        let a = audit(&shop).await;
        (a.divergence == 0 && a.sites.values().all(|s| s.waiting == 0)).then_some(a)
    })
    .await;
    println!("cp, after the heal: {after:#?}");
    assert_eq!(confirmed, UNITS, "healed sites sell every unit, and not one more");
    for site in Site::ALL {
        assert_eq!(after.sites[&site].oversold_in_view, 0, "stock never below zero at {site}");
    }
    assert_eq!((after.oversold_units, after.compensated_orders, after.reserved_beyond_stock), (0, 0, 0));
    assert_eq!(stock_at(&shop, Site::Dc1).await, stock_at(&shop, Site::Dc2).await);
    shop.stop().await.unwrap();
}

/// Sets `PRODUCT` to `on_hand` at both sites at the same moment; answers both answers.
async fn set_at_both_sites_at_once(shop: &Shop, on_hand: u64) -> [(u16, Value); 2] {
    let set = |site: Site| {
        let url = format!("http://{}/stock/{PRODUCT}", shop.sites[&site].addr);
        call(Client::new().put(url).bearer_auth(TOKEN).json(&json!({ "on_hand": on_hand })))
    };
    let (dc1, dc2) = tokio::join!(set(Site::Dc1), set(Site::Dc2));
    [dc1, dc2]
}

/// A stock change sets an absolute count; were each site to count its own step from its own
/// view, two changes at once would each take their step away and leave less on hand than
/// was asked, or than is finally reserved. In cp the arbiter site makes every change.
#[tokio::test]
async fn in_cp_stock_changes_at_both_sites_at_once_count_once_and_never_below_what_is_reserved() {
    let dir = tempfile::tempdir().unwrap();
    let shop = start(dir.path(), Mode::Cp).await;
    ready(&shop).await;
    for site in Site::ALL {
        let id = buy(&shop, customer_of(site)).await;
        assert_eq!(answered(&shop, &id).await["status"], "confirmed");
    }
    for round in 0..4 {
        for on_hand in [6, 2] {
            let answers = set_at_both_sites_at_once(&shop, on_hand).await;
            let written = answers.iter().map(|(status, stock)| {
                assert_eq!(*status, 200, "round {round}: {stock}");
                stock["version"].as_u64().unwrap()
            });
            let written = written.max().unwrap();
            let seen = until("both sites to hold both changes", || async {
                let (dc1, dc2) = (stock_at(&shop, Site::Dc1).await, stock_at(&shop, Site::Dc2).await);
                (dc1 == dc2 && dc1["version"].as_u64() >= Some(written)).then_some(dc1)
            })
            .await;
            assert_eq!(seen["on_hand"], on_hand, "round {round}: both asked for {on_hand}: {seen}");
            assert_eq!(seen["reserved"], 2, "{seen}");
        }
    }
    let refused = set_at_both_sites_at_once(&shop, 1).await;
    for (status, problem) in &refused {
        assert_eq!(*status, 409, "below what is reserved is refused at both sites: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains("reserved"), "{problem}");
    }
    let audit = audit(&shop).await;
    assert_eq!((audit.oversold_units, audit.reserved_beyond_stock), (0, 0), "{audit:#?}");
    shop.stop().await.unwrap();
}
