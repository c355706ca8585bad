//! The browser the page tests drive: headless Chromium through chromedriver, speaking the
//! W3C WebDriver protocol directly over HTTP; with axe-core (vendored in
//! `tests/vendor/axe-core`) for the accessibility check and screenshots for the docs.

#![allow(dead_code)] // each test binary uses its own part.

use std::process::{Child, Command, Stdio};

use reqwest::Client;
use serde_json::{Value, json};
use shop::launch::{Shop, ShopConfig, launch};
use shop::service::Choices;

pub const TOKEN: &str = "pages-admin-token";
const INSTALL: &str = "apt-get install chromium chromium-driver";
/// The key under which WebDriver returns an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session in it; both end when dropped.
pub struct Browser {
    driver: Child,
    client: Client,
    session: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session, or `None` when they are not
    /// installed (a loud skip; in CI a failure).
    pub async fn start() -> Option<Self> {
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

    /// Sends a WebDriver command and answers its whole answer, an error included.
    async fn send(&self, path: &str, body: Value) -> Value {
        let answer = self.client.post(format!("{}{path}", self.session)).json(&body).send().await.unwrap();
        answer.json().await.unwrap()
    }

    pub async fn command(&self, path: &str, body: Value) -> Value {
        let answer = self.send(path, body).await;
        assert!(answer["value"]["error"].is_null(), "webdriver {path}: {answer}");
        answer["value"].clone()
    }

    pub async fn open(&self, url: &str) {
        self.command("/url", json!({ "url": url })).await;
    }

    /// Runs `script` in the page and returns its value.
    pub async fn eval(&self, script: &str) -> Value {
        self.command("/execute/sync", json!({ "script": script, "args": [] })).await
    }

    /// The visible text of the element `css` selects ("" while there is none).
    pub async fn text(&self, css: &str) -> String {
        let script = format!("const e = document.querySelector({css:?}); return e ? e.innerText : '';");
        self.eval(&script).await.as_str().unwrap_or_default().to_owned()
    }

    /// Waits until the element `css` selects shows `wanted`; returns its text.
    pub async fn shows(&self, css: &str, wanted: &str) -> String {
        eventually(&format!("{css} to show {wanted:?}"), || async {
            let text = self.text(css).await;
            text.contains(wanted).then_some(text)
        })
        .await
    }

    pub async fn element(&self, css: &str) -> String {
        eventually(&format!("an element {css}"), || async {
            let answer = self.send("/element", json!({ "using": "css selector", "value": css })).await;
            answer["value"][ELEMENT].as_str().map(str::to_owned)
        })
        .await
    }

    /// Clicks the element `css` selects; the page redraws itself, so an element that goes
    /// stale between finding and clicking is found again.
    pub async fn click(&self, css: &str) {
        eventually(&format!("a click on {css}"), || async {
            let element = self.element(css).await;
            let answer = self.send(&format!("/element/{element}/click"), json!({})).await;
            match answer["value"]["error"].as_str() {
                None => Some(()),
                Some("stale element reference") => None,
                Some(_) => panic!("webdriver click on {css}: {answer}"),
            }
        })
        .await
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css).await;
        self.command(&format!("/element/{element}/value"), json!({ "text": text })).await;
    }
}

impl Browser {
    /// Gives the dashboard the admin token through its form, as a person does once per tab.
    pub async fn use_token(&self, token: &str) {
        self.type_into("#token", token).await;
        self.click("#token-form button[type='submit']").await;
        self.shows("#token-set", "Admin token set").await;
    }

    /// The value of attribute `name` of the element `css` selects ("" while there is none).
    pub async fn attribute(&self, css: &str, name: &str) -> String {
        let script =
            format!("const e = document.querySelector({css:?}); return e ? e.getAttribute({name:?}) : '';");
        self.eval(&script).await.as_str().unwrap_or_default().to_owned()
    }

    /// Waits until attribute `name` of the element `css` selects is `wanted`.
    pub async fn has_attribute(&self, css: &str, name: &str, wanted: &str) {
        eventually(&format!("{css} to have {name}={wanted:?}"), || async {
            (self.attribute(css, name).await == wanted).then_some(())
        })
        .await
    }

    /// Waits until the boolean property `name` (`hidden`, `disabled`) of the element `css`
    /// selects is `wanted`.
    pub async fn has_property(&self, css: &str, name: &str, wanted: bool) {
        let script = format!("return document.querySelector({css:?})?.{name} ?? null");
        eventually(&format!("{css}.{name} to be {wanted}"), || async {
            (self.eval(&script).await == Value::Bool(wanted)).then_some(())
        })
        .await
    }

    /// Waits until the element `css` selects is shown (`wanted`) or not: rendered, not
    /// hidden by its attribute, its style or an ancestor's.
    pub async fn is_visible(&self, css: &str, wanted: bool) {
        let script = format!("return document.querySelector({css:?})?.checkVisibility() ?? null");
        eventually(&format!("{css} to be {}", if wanted { "shown" } else { "hidden" }), || async {
            (self.eval(&script).await == Value::Bool(wanted)).then_some(())
        })
        .await
    }

    /// Runs `script` (which must call `done(value)` at the end) in the page; its value.
    pub async fn eval_async(&self, script: &str) -> Value {
        let wrapped = format!("const done = arguments[arguments.length - 1]; {script}");
        self.command("/execute/async", json!({ "script": wrapped, "args": [] })).await
    }

    /// The violations axe-core finds on the page with impact serious or critical.
    pub async fn serious_accessibility_violations(&self) -> Vec<Value> {
        let axe = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shop/tests/vendor/axe-core/axe.min.js"
        ))
        .expect("the vendored axe-core is in tests/vendor/axe-core");
        self.command("/timeouts", json!({ "script": 60_000 })).await;
        self.eval(&format!("{axe}\n;return typeof axe;")).await;
        let result = self
            .eval_async(
                "axe.run(document).then((r) => done(r.violations), (e) => done({ error: String(e) }));",
            )
            .await;
        let violations = result.as_array().unwrap_or_else(|| panic!("axe ran: {result}")).clone();
        violations.into_iter().filter(|v| v["impact"] == "serious" || v["impact"] == "critical").collect()
    }

    /// Fails the test, saying `when`, if axe-core finds a serious or critical violation.
    pub async fn assert_accessible(&self, when: &str) {
        let violations = self.serious_accessibility_violations().await;
        assert!(violations.is_empty(), "{when}: {}", Value::from(violations));
    }

    /// Sizes the window to `width` × `height` CSS pixels.
    pub async fn resize(&self, width: u32, height: u32) {
        self.command("/window/rect", json!({ "width": width, "height": height })).await;
    }

    /// Saves what the window shows as a PNG at `path`.
    pub async fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine as _;
        let answer: Value = self
            .client
            .get(format!("{}/screenshot", self.session))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(answer["value"].as_str().unwrap_or_else(|| panic!("a screenshot: {answer}")))
            .expect("a screenshot is base64");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
}

impl Browser {
    /// Double-clicks the element `css` selects with the pointer, as a person does: two
    /// presses in a row, the second before the page has answered the first.
    pub async fn double_click(&self, css: &str) {
        let element = self.element(css).await;
        let origin = json!({ ELEMENT: element });
        let press = |kind: &str| json!({ "type": kind, "button": 0 });
        let actions = json!({ "actions": [{
            "type": "pointer", "id": "mouse", "parameters": { "pointerType": "mouse" },
            "actions": [
                { "type": "pointerMove", "origin": origin, "x": 0, "y": 0 },
                press("pointerDown"), press("pointerUp"), press("pointerDown"), press("pointerUp"),
            ],
        }]});
        self.command("/actions", actions).await;
    }

    /// Fills the shop page's address form `form` (`#address-form` or `#override-form`) with
    /// street, city, postcode and country, after opening its `<details>`.
    pub async fn fill_address(&self, form: &str, address: [&str; 4]) {
        self.click(&format!("details:has({form}) > summary")).await;
        for (field, value) in ["line1", "city", "postcode", "country"].into_iter().zip(address) {
            self.type_into(&format!("{form} input[name='{field}']"), value).await;
        }
    }

    /// Opens the shop page at `shop` and signs the seeded Ada in with the demo password.
    pub async fn sign_in_on_shop_page(&self, shop: &Shop) {
        self.open(&shop.url("/")).await;
        self.shows("#products", "Classic Baseball Cap").await;
        self.type_into("#sign-in input[name='password']", shop::customer::DEMO_PASSWORD).await;
        self.click("#sign-in button").await;
        self.shows("#customer", "Ada Lovelace").await;
        self.is_visible("#sign-in", false).await;
        self.is_visible("#checkout", true).await;
    }
}

/// A browser and a fresh shop on temporary dirs (with [`TOKEN`] as its admin token), or
/// `None` when Chromium is not installed (a loud skip; in CI a failure).
pub async fn with_shop() -> Option<(Browser, Shop, tempfile::TempDir)> {
    let browser = Browser::start().await?;
    let dir = tempfile::tempdir().unwrap();
    let shop =
        launch(ShopConfig::ephemeral(dir.path(), TOKEN, Choices::default())).await.expect("the shop starts");
    Some((browser, shop, dir))
}

impl Drop for Browser {
    /// Ends the WebDriver session first, so chromedriver closes its Chromium: killing
    /// chromedriver alone leaves the browser's processes running, orphaned.
    fn drop(&mut self) {
        end_session(&self.session);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `DELETE <session>` over a plain socket (a drop cannot await), waiting for the answer.
fn end_session(session: &str) {
    use std::io::{Read, Write};
    let Some((host, path)) = session.strip_prefix("http://").and_then(|rest| rest.split_once('/')) else {
        return;
    };
    let Ok(mut stream) = std::net::TcpStream::connect(host) else { return };
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    let request =
        format!("DELETE /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_ok() {
        let _ = stream.read_to_end(&mut Vec::new());
    }
}

/// Polls `probe` until it returns `Some`, for at most 30 s.
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    shop::service::testing::eventually_within(std::time::Duration::from_secs(30), what, probe).await
}
