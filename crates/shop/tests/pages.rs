//! The shop page in a real browser: headless Chromium driven through chromedriver
//! ([`browser`]), against the whole shop started in this process. A signed-in shopper moves,
//! orders and watches the order reach "shipped"; during a partition the checkout says the
//! address may be out of date and "Ship this order elsewhere" goes into the order; a double
//! click places one order; without the catalog the page says prices cannot be confirmed
//! and will not place the order; without shipping an order still shows its own status; one
//! without stock shows it was rejected and why; it
//! works by keyboard and axe-core finds no serious violation. The dashboard's tests
//! (and the screenshots of both pages) are in `dashboard.rs`.

mod browser;
mod support;

use browser::{Browser, TOKEN};
use serde_json::Value;
use shop::chaos::BUS;
use shop::launch::Shop;
use shop::service::{Part, ServiceName};

/// Puts product `id` into the cart from the products list and waits for the checkout's total.
async fn add_to_cart(browser: &Browser, id: &str, shown: &str) {
    browser.click(&format!("button[data-product='{id}']")).await;
    browser.shows("#cart", shown).await;
    browser.shows("#total", "€").await;
}

/// The Enter key, as WebDriver types it.
const ENTER: &str = "\u{E007}";

/// Notes in `window.seen` each status the newest order's row shows, as it changes.
const FOLLOW_STATUS: &str = "window.seen = [];
    new MutationObserver(() => {
      const s = document.querySelector('#orders li[data-order] .status');
      if (s && window.seen[window.seen.length - 1] !== s.textContent) window.seen.push(s.textContent);
    }).observe(document.getElementById('orders'), { childList: true, subtree: true, characterData: true });
    return null";

/// A fresh shop and a browser in which Ada is signed in with product `id` in her cart and
/// Place order ready, or `None` without Chromium.
async fn ready_to_order(id: &str) -> Option<(Browser, Shop, tempfile::TempDir)> {
    let (browser, shop, dir) = browser::with_shop().await?;
    browser.sign_in_on_shop_page(&shop).await;
    add_to_cart(&browser, id, "1 × ").await;
    browser.has_property("#place", "disabled", false).await;
    Some((browser, shop, dir))
}

async fn orders_of_ada(shop: &Shop) -> Vec<Value> {
    support::orders_of(shop, "c-ada").await
}

#[tokio::test]
async fn a_signed_in_shopper_moves_orders_and_sees_the_order_shipped_to_the_new_address() {
    let Some((browser, shop, _dir)) = browser::with_shop().await else { return };
    browser.sign_in_on_shop_page(&shop).await;
    // The customer replica may still be catching up on a fresh shop; then the owner answers.
    browser.shows("#address", "12 St James's Square").await;
    browser.shows("#address-age", "as of").await;
    assert_eq!(browser.text("#payment").await, "card ending in 4242");
    browser.is_visible("#stale-badge", false).await;

    add_to_cart(&browser, "p-001", "1 × Classic Baseball Cap").await;
    browser.shows("#total", "€19.99").await;

    browser.fill_address("#address-form", ["9 Elm St", "Leeds", "LS1 1AA", "GB"]).await;
    browser.click("#address-form button").await;
    browser.shows("#message", "Address saved").await;
    let address = browser.shows("#address", "9 Elm St").await;
    assert_eq!(address, "9 Elm St, LS1 1AA Leeds, GB", "read-your-writes on the page");

    // Every status the order's row shows, in the order shown.
    browser.eval(FOLLOW_STATUS).await;
    browser.click("#place").await;
    browser.shows("#message", "Order placed; it is waiting for stock").await;
    let row = browser.shows("#orders li[data-order]", "shipped").await;
    let seen: Vec<String> = serde_json::from_value(browser.eval("return window.seen").await).unwrap();
    let moves = ["waiting for stock", "confirmed, waiting for shipping", "shipped"];
    let steps: Vec<usize> = seen.iter().map(|s| moves.iter().position(|m| m == s).unwrap_or(99)).collect();
    assert!(
        steps.first() == Some(&0) && steps.last() == Some(&2) && steps.is_sorted(),
        "the status moves forward only, in words: {seen:?}"
    );
    assert!(row.contains("1 × Classic Baseball Cap · €19.99 · to Leeds"), "{row}");
    browser.shows("#cart", "the cart is empty").await;
    let orders = orders_of_ada(&shop).await;
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(orders[0]["address"]["city"], "Leeds");

    browser.click("#sign-out").await;
    browser.shows("#message", "Signed out").await;
    browser.shows("#checkout-hint", "Sign in to see your cart").await;
    browser.is_visible("#sign-in", true).await;
    browser.is_visible("#checkout", false).await;
    let left = browser.eval("return [sessionStorage.getItem('capshop-session'), document.querySelector('#orders').children.length]").await;
    assert_eq!(left, serde_json::json!([null, 0]), "signing out forgets the session and the orders");
    shop.stop().await.unwrap();
}

#[tokio::test]
async fn cut_off_from_the_customer_the_checkout_says_the_address_may_be_out_of_date_and_ships_elsewhere() {
    let Some((browser, shop, _dir)) = ready_to_order("p-003").await else { return };
    browser.shows("#address", "12 St James's Square").await;
    browser.shows("#address-age", "the shop's copy").await;

    // order ✕ customer, cut on the dashboard's topology: the checkout cannot ask the
    // customer service. The customer's events reach the order service over the bus, so the
    // customer's link to the bus is cut too: the change then reaches no replica.
    browser.open(&shop.url("/dashboard")).await;
    browser.use_token(TOKEN).await;
    let handle = "#topology circle.handle[data-link='order->customer']";
    browser.click(handle).await;
    browser.click("[data-link-act='cut']").await;
    browser.has_attribute(handle, "data-state", "cut").await;
    shop.chaos.cut("customer", BUS, true).unwrap();

    browser.open(&shop.url("/")).await;
    browser.shows("#customer", "Ada Lovelace").await;
    let moved = ["10 Princes Street", "Edinburgh", "EH2 2AN", "GB"];
    browser.fill_address("#address-form", moved).await;
    browser.click("#address-form button").await;
    browser.shows("#message", "Address saved").await;
    browser.is_visible("#stale-badge", true).await;
    browser.shows("#stale-badge", "may be out of date").await;
    browser.assert_accessible("with the badge").await;
    browser.shows("#address", "12 St James's Square").await;

    browser.fill_address("#override-form", moved).await;
    browser.click("#place").await;
    browser.shows("#message", "Order placed").await;
    let orders = orders_of_ada(&shop).await;
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(orders[0]["address_source"], "override");
    assert_eq!(orders[0]["address"]["line1"], "10 Princes Street", "{}", orders[0]);
    browser.shows("#orders", "(shipped elsewhere)").await;
    // Shipping's copy of the customer has the old address: it holds the shipment and says why.
    browser.shows("#orders", "held: the address could not be confirmed: this order goes to Edinburgh, your profile says London").await;

    // The shopper confirms the order's own address: it ships while the profile's copies
    // still disagree.
    browser.click("#orders button[data-confirm]").await;
    browser.shows("#message", "address confirmed").await;
    browser.shows("#orders li[data-order] .status", "shipped").await;
    let confirmed = orders_of_ada(&shop).await;
    assert_eq!(confirmed[0]["address_confirmed"], true, "{}", confirmed[0]);

    shop.chaos.heal_all();
    browser.is_visible("#stale-badge", false).await;
    shop.stop().await.unwrap();
}

#[tokio::test]
async fn a_double_click_on_place_order_places_one_order() {
    let Some((browser, shop, _dir)) = ready_to_order("p-002").await else { return };
    browser.double_click("#place").await;
    browser.shows("#message", "Order placed").await;
    browser.shows("#orders li[data-order] .status", "shipped").await;
    let posts = browser
        .eval("return performance.getEntriesByType('resource').filter((e) => e.name.endsWith('/api/order/orders')).length")
        .await;
    let orders = orders_of_ada(&shop).await;
    assert_eq!(orders.len(), 1, "one order for a double click ({posts} requests sent): {orders:?}");
    assert_eq!(browser.eval("return document.querySelectorAll('#orders li[data-order]').length").await, 1);
    shop.stop().await.unwrap();
}

#[tokio::test]
async fn with_the_catalog_stopped_the_page_says_prices_cannot_be_confirmed_and_will_not_place_the_order() {
    let Some((browser, shop, _dir)) = ready_to_order("p-004").await else { return };

    shop.chaos.stop(Part::Service(ServiceName::Catalog)).await.unwrap();
    browser.shows("#total", "prices cannot be confirmed right now, please try again").await;
    browser.has_property("#place", "disabled", true).await;
    browser.eval("document.getElementById('place').click(); return null").await;
    assert!(orders_of_ada(&shop).await.is_empty(), "a disabled Place order places nothing");

    shop.chaos.start(Part::Service(ServiceName::Catalog)).await.unwrap();
    browser.shows("#total", "€").await;
    browser.has_property("#place", "disabled", false).await;
    shop.stop().await.unwrap();
}

#[tokio::test]
async fn with_shipping_stopped_an_order_still_shows_its_own_status_and_ships_once_it_is_back() {
    let Some((browser, shop, _dir)) = ready_to_order("p-005").await else { return };
    let shipping = Part::Service(ServiceName::Shipping);
    shop.chaos.stop(shipping).await.unwrap();
    browser.click("#place").await;
    browser.shows("#orders li[data-order] .status", "confirmed, waiting for shipping").await;
    shop.chaos.start(shipping).await.unwrap();
    browser.shows("#orders li[data-order] .status", "shipped").await;
    shop.stop().await.unwrap();
}

#[tokio::test]
async fn an_order_without_stock_is_shown_rejected_with_the_reason() {
    let Some((browser, shop, _dir)) = ready_to_order("p-006").await else { return };
    let client = reqwest::Client::new();
    let none = serde_json::json!({ "on_hand": 0 });
    let set = client.put(shop.url("/api/inventory/stock/p-006")).bearer_auth(TOKEN).json(&none);
    assert_eq!(set.send().await.unwrap().status(), 200);
    for site in ["inventory-dc1", "inventory-dc2"] {
        browser::eventually(&format!("{site} to have none of p-006"), || async {
            let url = shop.url(&format!("/api/{site}/stock/p-006"));
            let stock: Value = client.get(url).send().await.ok()?.json().await.ok()?;
            (stock["on_hand"] == 0).then_some(())
        })
        .await;
    }
    browser.click("#place").await;
    let status = browser.shows("#orders li[data-order] .status", "rejected, out of stock").await;
    let orders = orders_of_ada(&shop).await;
    assert_eq!(orders[0]["status"], "rejected", "{}", orders[0]);
    let reason = orders[0]["reason"].as_str().unwrap();
    assert_eq!(status, format!("rejected, out of stock: {reason}"), "the page gives the reason");
    shop.stop().await.unwrap();
}

#[tokio::test]
async fn the_shop_page_works_by_keyboard_and_axe_finds_no_serious_or_critical_violation_on_it() {
    let Some((browser, shop, _dir)) = browser::with_shop().await else { return };
    browser.open(&shop.url("/")).await;
    browser.shows("#products", "Classic Baseball Cap").await;
    browser.assert_accessible("signed out").await;

    // By keyboard: Enter in the password field signs in, Enter on a button presses it.
    browser.type_into("#sign-in input[name='password']", &format!("{}{ENTER}", support::PASSWORD)).await;
    browser.shows("#customer", "Ada Lovelace").await;
    browser.type_into("button[data-product='p-001']", ENTER).await;
    browser.shows("#cart", "1 × Classic Baseball Cap").await;
    browser.has_property("#place", "disabled", false).await;
    browser.type_into("#place", ENTER).await;
    browser.shows("#orders li[data-order]", "shipped").await;
    add_to_cart(&browser, "p-002", "1 × ").await;
    // The checkout refreshes itself; a refresh leaves the keyboard focus where it was.
    let remove = "#cart button[data-remove='p-002']";
    browser.eval(&format!("document.querySelector({remove:?}).focus(); return null")).await;
    let checkouts = "return performance.getEntriesByType('resource').filter((e) => e.name.includes('/api/order/checkout/')).length";
    let before = browser.eval(checkouts).await.as_u64().unwrap();
    browser::eventually("two more refreshes of the checkout", || async {
        (browser.eval(checkouts).await.as_u64().unwrap() >= before + 2).then_some(())
    })
    .await;
    let focused = browser.eval("return document.activeElement.getAttribute('aria-label')").await;
    assert_eq!(focused, "Remove Wool Beanie from the cart", "the focus stays on the Remove button");
    browser.eval("document.querySelectorAll('details').forEach((d) => d.open = true); return null").await;
    browser.assert_accessible("signed in by keyboard, with an order and both forms open").await;
    shop.stop().await.unwrap();
}
