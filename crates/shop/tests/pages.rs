//! The shop page in a real browser: headless Chromium driven through chromedriver
//! ([`browser`]), against the whole shop started in this process. A shopper adds to the
//! cart, moves, places an order and sees it shipped. The dashboard's tests are in
//! `dashboard.rs`.

mod browser;
mod support;

#[tokio::test]
async fn a_shopper_adds_to_the_cart_moves_and_sees_the_order_shipped_to_the_new_address() {
    let Some((browser, shop, _dir)) = browser::with_shop().await else { return };

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
    let Some((browser, shop, _dir)) = browser::with_shop().await else { return };
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
