//! The dashboard as a picture, in a real headless Chromium against the whole shop started
//! in this process: the topology shows every part and the bus; cutting customer↔order on
//! it turns the link red and cuts it in the chaos state; replaying a dead letter makes the
//! count drop; a backup taken from it is listed; recent events show and filter; axe-core
//! finds no serious violation. An ignored test makes the screenshots of the dashboard and
//! the shop page in docs/ (`cargo test -p capshop-shop --test
//! dashboard -- --ignored`).

mod browser;

use browser::{Browser, TOKEN, eventually};
use reqwest::Client;
use serde_json::{Value, json};
use shop::launch::Shop;

const PARTS: [&str; 8] =
    ["customer", "catalog", "inventory-dc1", "inventory-dc2", "order", "payment", "shipping", "search"];

/// The gateway's chaos status, as `capshop chaos status` reads it.
async fn chaos_status(shop: &Shop) -> Value {
    let answer = Client::new().get(shop.url("/admin/chaos")).bearer_auth(TOKEN).send().await.unwrap();
    answer.json().await.unwrap()
}

fn link<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("{status}"))
}

/// Opens the dashboard with the admin token given once, and waits for the topology.
async fn open_dashboard(browser: &Browser, shop: &Shop) {
    browser.open(&shop.url("/dashboard")).await;
    browser.use_token(TOKEN).await;
    browser.element("#topology [data-node='order']").await;
}

#[tokio::test]
async fn the_topology_shows_every_part_and_cutting_customer_order_on_it_turns_the_link_red_and_cuts_it() {
    let Some((browser, shop, _dir)) = browser::with_shop().await else { return };
    open_dashboard(&browser, &shop).await;
    for part in PARTS {
        browser.has_attribute(&format!("#topology [data-node='{part}']"), "data-state", "running").await;
    }
    let bus = browser.eval("return document.querySelector('#topology .bus-label').textContent").await;
    assert_eq!(bus, "bus · embedded log (SQLite)");
    browser.shows("#mode", "embedded mode").await;
    let stored = browser.eval("return [sessionStorage.getItem('capshop-token'), localStorage.length]").await;
    assert_eq!(stored, json!([TOKEN, 0]), "the token is kept in the tab's session only");

    let handle = "#topology circle.handle[data-link='order->customer']";
    browser.has_attribute(handle, "data-state", "healthy").await;
    browser.click(handle).await;
    browser.shows("#link-name", "order->customer").await;
    browser.click("[data-link-act='cut']").await;
    browser.has_attribute(handle, "data-state", "cut").await;
    let line = "#topology line.link[data-link='order->customer']";
    browser.has_attribute(line, "data-state", "cut").await;
    let colour =
        browser.eval(&format!("return getComputedStyle(document.querySelector({line:?})).stroke")).await;
    assert_eq!(colour, "rgb(176, 0, 32)", "a cut link is drawn red");
    let status = chaos_status(&shop).await;
    let cut = link(&status, "order->customer");
    assert!(cut["cut_out"] == true && cut["cut_in"] == true, "cut both ways in the chaos state: {cut}");
    assert_eq!(link(&status, "order->catalog")["cut_out"], false, "only that link: {status}");

    // Slowing it from the keyboard: focus the handle, Enter, then the slow button.
    browser.eval(&format!("document.querySelector({handle:?}).focus(); return null")).await;
    browser
        .eval(&format!(
            "document.querySelector({handle:?}).dispatchEvent(new KeyboardEvent('keydown', {{ key: 'Enter' }})); return null"
        ))
        .await;
    browser.click("[data-link-act='heal']").await;
    browser.has_attribute(handle, "data-state", "healthy").await;
    browser.click("[data-link-act='latency']").await;
    browser.has_attribute(handle, "data-state", "slow").await;
    assert_eq!(link(&chaos_status(&shop).await, "order->customer")["latency_ms"], 500);

    // A part from the picture: stop search, see it stopped, start it again.
    browser.click("#topology [data-node='search']").await;
    browser.click("[data-node-act='stop']").await;
    browser.has_attribute("#topology [data-node='search']", "data-state", "stopped").await;
    browser.click("[data-node-act='start']").await;
    browser.has_attribute("#topology [data-node='search']", "data-state", "running").await;
    browser.click("#heal-all").await;
    browser.has_attribute(handle, "data-state", "healthy").await;
    shop.stop().await.unwrap();
}

#[tokio::test]
async fn replaying_a_fixed_dead_letter_from_the_dashboard_makes_the_count_drop() {
    let Some((browser, shop, _dir)) = browser::with_shop().await else { return };
    let client = Client::new();
    let poison = json!({ "name": "Storm Cap #poison", "description": "A cap the index cannot take.", "price_cents": 2599 });
    let added: Value = client
        .post(shop.url("/api/catalog/products"))
        .bearer_auth(TOKEN)
        .json(&poison)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = added["id"].as_str().unwrap_or_else(|| panic!("a product id: {added}")).to_owned();

    open_dashboard(&browser, &shop).await;
    let dead = browser.shows("#dead", "search.catalog").await;
    assert!(dead.contains(&format!("catalog/{id}")), "{dead}");
    browser.shows("#services tr[data-service='search'] .dead-count", "1").await;
    browser.click("#dead button[data-act='inspect']").await;
    browser.shows("#dead-envelope", "Storm Cap #poison").await;

    // Fixed (renamed) and indexed, so the replayed old version is a harmless no-op.
    let renamed = client
        .put(shop.url(&format!("/api/catalog/products/{id}/name")))
        .bearer_auth(TOKEN)
        .json(&json!({ "name": "Storm Cap" }))
        .send()
        .await
        .unwrap();
    assert!(renamed.status().is_success(), "{}", renamed.text().await.unwrap());
    eventually("the fixed name to be indexed", || async {
        let found: Value =
            client.get(shop.url("/api/search/search?q=Storm")).send().await.ok()?.json().await.ok()?;
        found["results"].as_array()?.iter().any(|h| h["title"] == "Storm Cap").then_some(())
    })
    .await;

    browser.click("#dead button[data-act='replay']").await;
    browser.shows("#message", "replay").await;
    browser.shows("#dead", "none").await;
    browser.shows("#services tr[data-service='search'] .dead-count", "0").await;
    shop.stop().await.unwrap();
}

#[tokio::test]
async fn a_backup_taken_from_the_dashboard_is_listed_with_its_certificate() {
    let Some((browser, shop, dir)) = browser::with_shop().await else { return };
    open_dashboard(&browser, &shop).await;
    browser.shows("#backups", "No backup taken").await;
    let target = dir.path().join("dashboard-backup");
    browser.eval("document.getElementById('backup-dir').value = ''").await;
    browser.type_into("#backup-dir", target.to_str().unwrap()).await;
    browser.click("#backup-form button[type='submit']").await;
    browser.shows("#message", "consumers paused").await;
    let listed = browser.shows("#backups", "dashboard-backup").await;
    assert!(listed.contains("consistent") && listed.contains("passed"), "{listed}");
    assert!(target.join("manifest.json").is_file(), "the backup is on disk");
    shop.stop().await.unwrap();
}

#[tokio::test]
async fn recent_events_show_and_filter_by_kind() {
    let Some((browser, shop, _dir)) = browser::with_shop().await else { return };
    open_dashboard(&browser, &shop).await;
    browser.shows("#events", "CustomerRegistered").await;
    browser.shows("#events", "ProductAdded").await;
    browser.type_into("#event-filter", "CustomerRegistered").await;
    let rows = eventually("the filter to apply", || async {
        let text = browser.text("#events tbody").await;
        (!text.contains("ProductAdded") && text.contains("CustomerRegistered")).then_some(text)
    })
    .await;
    assert!(rows.lines().all(|l| l.contains("CustomerRegistered")), "{rows}");
    // This shop runs no scenarios (`capshop up` adds them); the page says how to run one.
    browser.shows("#scenarios", "capshop scenario NAME").await;
    // The gateway reconciles the shop's databases: a settled shop has no defect.
    browser.click("#reconcile-run").await;
    browser.shows("#reconcile", "0 defects").await;
    shop.stop().await.unwrap();
}

#[tokio::test]
async fn axe_finds_no_serious_or_critical_violation_on_the_dashboard_healthy_or_cut() {
    let Some((browser, shop, _dir)) = browser::with_shop().await else { return };
    browser.open(&shop.url("/dashboard")).await;
    browser.shows("#services", "search").await;
    let violations = browser.serious_accessibility_violations().await;
    assert!(violations.is_empty(), "before the token: {}", Value::from(violations));

    browser.use_token(TOKEN).await;
    browser.element("#topology [data-node='order']").await;
    shop.chaos.cut("order", "customer", false).unwrap();
    browser.has_attribute("#topology circle.handle[data-link='order->customer']", "data-state", "cut").await;
    browser.click("#topology circle.handle[data-link='order->customer']").await;
    browser.shows("#events", "ProductAdded").await;
    browser.shows("#lag-legend", "order.customer-replica").await;
    let violations = browser.serious_accessibility_violations().await;
    assert!(violations.is_empty(), "with the token and a cut link: {}", Value::from(violations));
    shop.stop().await.unwrap();
}

#[tokio::test]
async fn the_dashboard_shows_every_service_and_site_up_and_the_dead_letters_with_the_admin_token() {
    let Some((browser, shop, _dir)) = browser::with_shop().await else { return };

    browser.open(&shop.url("/dashboard")).await;
    let services = browser.shows("#services", "search").await;
    for service in PARTS {
        let row = services.lines().find(|l| l.starts_with(service)).unwrap_or_else(|| panic!("{services}"));
        assert!(row.contains("up"), "{row}");
    }
    browser.shows("#lag-legend", "order.customer-replica").await;
    browser.shows("#dead", "enter the admin token").await;
    browser.use_token(TOKEN).await;
    browser.shows("#dead", "none").await;
    shop.stop().await.unwrap();
}

/// Writes docs/dashboard-healthy.png, docs/dashboard-partition.png, docs/shop-healthy.png
/// and docs/shop-partition.png (linked from the README); rerun after changing a page.
#[tokio::test]
#[ignore = "writes the screenshots in docs/; run with --ignored"]
async fn screenshots_of_the_dashboard_and_the_shop_page_healthy_and_during_a_partition() {
    let Some((browser, shop, _dir)) = browser::with_shop().await else { return };
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    browser.resize(1400, 2600).await;
    open_dashboard(&browser, &shop).await;
    browser.shows("#events", "ProductAdded").await;
    // Some samples for the charts.
    tokio::time::sleep(std::time::Duration::from_secs(12)).await;
    browser.screenshot(&docs.join("dashboard-healthy.png")).await;

    // The shop page, healthy: an order shipped, another in the cart.
    browser.resize(1300, 1100).await;
    browser.sign_in_on_shop_page(&shop).await;
    browser.click("button[data-product='p-001']").await;
    browser.shows("#total", "€").await;
    browser.click("#place").await;
    browser.shows("#orders li[data-order] .status", "shipped").await;
    browser.click("button[data-product='p-004']").await;
    browser.shows("#total", "€").await;
    browser.screenshot(&docs.join("shop-healthy.png")).await;
    browser.resize(1400, 2600).await;
    // The tab keeps the admin token: the dashboard opens with it.
    browser.open(&shop.url("/dashboard")).await;
    browser.element("#topology [data-node='order']").await;

    shop.chaos.cut("inventory-dc1", "inventory-dc2", false).unwrap();
    shop.chaos.cut("order", "customer", false).unwrap();
    shop.chaos.latency("search", "bus", std::time::Duration::from_millis(800)).unwrap();
    shop.chaos.loss("shipping", "bus", 0.3).unwrap();
    shop.chaos.cut("order", "bus", false).unwrap();
    let client = Client::new();
    // Writes during the partition, so lag and backlog have something to show.
    for n in 0..200u64 {
        let change = json!({ "line1": format!("{n} Elm St"), "city": "Leeds", "postcode": "LS1 1AA", "country": "GB" });
        let _ = client.put(shop.url("/api/customer/customers/c-ada/address")).json(&change).send().await;
        let price = json!({ "price_cents": 1000 + n });
        let product = format!("/api/catalog/products/p-{:03}/price", 2 + n % 9);
        let _ = client.put(shop.url(&product)).bearer_auth(TOKEN).json(&price).send().await;
    }
    browser.has_attribute("#topology circle.handle[data-link='order->customer']", "data-state", "cut").await;
    browser.click("#topology circle.handle[data-link='inventory-dc1->inventory-dc2']").await;
    tokio::time::sleep(std::time::Duration::from_secs(12)).await;
    browser.screenshot(&docs.join("dashboard-partition.png")).await;

    // The shop page during the same partition: the address change reaches no replica and the
    // customer service cannot be asked, so the checkout says it may be out of date.
    browser.resize(1300, 1100).await;
    browser.open(&shop.url("/")).await;
    browser.shows("#customer", "Ada Lovelace").await;
    let moved = ["10 Princes Street", "Edinburgh", "EH2 2AN", "GB"];
    browser.fill_address("#address-form", moved).await;
    browser.click("#address-form button").await;
    browser.is_visible("#stale-badge", true).await;
    browser.fill_address("#override-form", moved).await;
    browser.screenshot(&docs.join("shop-partition.png")).await;
    shop.chaos.heal_all();
    shop.stop().await.unwrap();
}
