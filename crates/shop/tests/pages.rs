//! The web pages in a real browser: headless Chromium driven through chromedriver (the
//! W3C WebDriver protocol, spoken directly over HTTP), against the whole shop started in
//! this process. A shopper adds to the cart, moves, places an order and sees it shipped;
//! the dashboard shows every service and inventory site up and, with the admin token, the dead letters.

mod support;

use std::process::{Child, Command, Stdio};

use reqwest::Client;
use serde_json::{Value, json};
use shop::launch::{Shop, ShopConfig, launch};
use shop::service::Choices;

const TOKEN: &str = "pages-admin-token";
const INSTALL: &str = "apt-get install chromium chromium-driver";
/// The key under which WebDriver returns an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session in it; both end when dropped.
struct Browser {
    driver: Child,
    client: Client,
    session: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session, or `None` when they are not
    /// installed (a loud skip; in CI a failure).
    async fn start() -> Option<Self> {
        let chromium = kit::testserver::binary("chromium", INSTALL)?;
        let chromedriver = kit::testserver::binary("chromedriver", INSTALL)?;
        let port = kit::testserver::free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let client = Client::new();
        let base = format!("http://127.0.0.1:{port}");
        eventually("chromedriver to listen", || async {
            client.get(format!("{base}/status")).send().await.ok().map(|_| ())
        })
        .await;
        let capabilities = json!({ "capabilities": { "alwaysMatch": { "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless", "--no-sandbox", "--disable-background-networking", "--disable-gpu", "--window-size=1300,1000"],
        }}}});
        let created: Value = client
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver opens a session: {created}"))
            .to_owned();
        Some(Self { driver, client, session: format!("{base}/session/{session}") })
    }

    async fn command(&self, path: &str, body: Value) -> Value {
        let answer: Value = self
            .client
            .post(format!("{}{path}", self.session))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(answer["value"]["error"].is_null(), "webdriver {path}: {answer}");
        answer["value"].clone()
    }

    async fn open(&self, url: &str) {
        self.command("/url", json!({ "url": url })).await;
    }

    /// Runs `script` in the page and returns its value.
    async fn eval(&self, script: &str) -> Value {
        self.command("/execute/sync", json!({ "script": script, "args": [] })).await
    }

    /// The visible text of the element `css` selects ("" while there is none).
    async fn text(&self, css: &str) -> String {
        let script = format!("const e = document.querySelector({css:?}); return e ? e.innerText : '';");
        self.eval(&script).await.as_str().unwrap_or_default().to_owned()
    }

    /// Waits until the element `css` selects shows `wanted`; returns its text.
    async fn shows(&self, css: &str, wanted: &str) -> String {
        eventually(&format!("{css} to show {wanted:?}"), || async {
            let text = self.text(css).await;
            text.contains(wanted).then_some(text)
        })
        .await
    }

    async fn element(&self, css: &str) -> String {
        eventually(&format!("an element {css}"), || async {
            let answer: Value = self
                .client
                .post(format!("{}/element", self.session))
                .json(&json!({ "using": "css selector", "value": css }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            answer["value"][ELEMENT].as_str().map(str::to_owned)
        })
        .await
    }

    async fn click(&self, css: &str) {
        let element = self.element(css).await;
        self.command(&format!("/element/{element}/click"), json!({})).await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css).await;
        self.command(&format!("/element/{element}/value"), json!({ "text": text })).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Polls `probe` until it returns `Some`, for at most 30 s.
async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    shop::service::testing::eventually_within(std::time::Duration::from_secs(30), what, probe).await
}

async fn spawn_shop(dir: &std::path::Path) -> Shop {
    launch(ShopConfig::ephemeral(dir, TOKEN, Choices::default())).await.expect("the shop starts")
}

#[tokio::test]
async fn a_shopper_adds_to_the_cart_moves_and_sees_the_order_shipped_to_the_new_address() {
    let Some(browser) = Browser::start().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;

    browser.open(&shop.url("/")).await;
    browser.shows("#products", "Classic Baseball Cap").await;
    browser.type_into("#sign-in input[name='password']", support::PASSWORD).await;
    browser.click("#sign-in button").await;
    browser.shows("#customer", "Ada Lovelace").await;
    // The customer replica may still be catching up on a fresh shop; then the owner answers.
    browser.shows("#checkout", "St James's Square").await;

    browser.click("button[data-product='p-001']").await;
    browser.shows("#checkout", "1 × Classic Baseball Cap").await;
    browser.shows("#checkout", "19.99").await;

    browser.click("details:has(#address-form) > summary").await;
    for (field, value) in
        [("line1", "9 Elm St"), ("city", "Leeds"), ("postcode", "LS1 1AA"), ("country", "GB")]
    {
        browser.type_into(&format!("#address-form input[name='{field}']"), value).await;
    }
    browser.click("#address-form button").await;
    browser.shows("#message", "address saved (customer/c-ada@2)").await;
    let address = browser.shows("#address", "9 Elm St").await;
    assert_eq!(address, "9 Elm St, LS1 1AA Leeds, GB", "read-your-writes on the page");

    browser.click("#place").await;
    browser.shows("#message", "placed: pending_stock").await;
    let orders = browser.shows("#orders", "shipment shipped").await;
    assert!(
        orders.contains("confirmed · shipment shipped"),
        "the page never shows an older order than its shipment: {orders}"
    );
    assert!(orders.contains("19.99"), "{orders}");
    shop.stop().await.unwrap();
}

#[tokio::test]
async fn a_double_click_on_place_order_places_one_order() {
    let Some(browser) = Browser::start().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    browser.open(&shop.url("/")).await;
    browser.type_into("#sign-in input[name='password']", support::PASSWORD).await;
    browser.click("#sign-in button").await;
    browser.shows("#customer", "Ada Lovelace").await;
    browser.click("button[data-product='p-002']").await;
    browser.shows("#checkout", "1 × ").await;
    // Two clicks before the first answer arrives, as an impatient shopper makes them.
    browser
        .eval(
            "document.getElementById('place').click(); document.getElementById('place').click(); return true",
        )
        .await;
    browser.shows("#message", "placed: pending_stock").await;
    browser.shows("#orders", "confirmed").await;
    let (_, orders) = support::get(&shop, "/api/order/orders?customer_id=c-ada").await;
    assert_eq!(orders.as_array().unwrap().len(), 1, "one order for two clicks: {orders}");
    shop.stop().await.unwrap();
}

#[tokio::test]
async fn the_dashboard_shows_every_service_and_site_up_and_the_dead_letters_with_the_admin_token() {
    let Some(browser) = Browser::start().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;

    browser.open(&shop.url("/dashboard")).await;
    let services = browser.shows("#services", "search").await;
    let parts =
        ["customer", "catalog", "inventory-dc1", "inventory-dc2", "order", "payment", "shipping", "search"];
    for service in parts {
        let row = services.lines().find(|l| l.starts_with(service)).unwrap_or_else(|| panic!("{services}"));
        assert!(row.contains("up"), "{row}");
    }
    browser.shows("#lag", "order.customer-replica").await;
    browser.shows("#dead", "enter the admin token").await;
    browser.type_into("#token", TOKEN).await;
    browser.eval("document.getElementById('token').dispatchEvent(new Event('change')); return null;").await;
    browser.shows("#dead", "none").await;
    shop.stop().await.unwrap();
}
