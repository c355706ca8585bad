//! `capshop up` as a user runs it: a real process on a free port that prints where things
//! are, serves the shop, and stops cleanly on Ctrl-C (SIGINT); `capshop dlq` against it;
//! and a scenario run from its dashboard.

/// The browser of the shop's page tests.
#[path = "../../shop/tests/browser/mod.rs"]
mod browser;
mod deployment;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use deployment::eventually;
use serde_json::{Value, json};

const TOKEN: &str = "up-test-admin-token";

/// A running `capshop up` and the lines it printed up to "Press Ctrl-C to stop.".
struct Up {
    child: Child,
    banner: Vec<String>,
    lines: mpsc::Receiver<String>,
    url: String,
}

impl Up {
    fn start(dir: &std::path::Path) -> Self {
        Self::start_with(dir, &[])
    }

    fn start_with(dir: &std::path::Path, extra: &[&str]) -> Self {
        let port = kit::testserver::free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_capshop"))
            .args(["up", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(dir)
            .args(extra)
            .env("CAPSHOP_ADMIN_TOKEN", TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("capshop starts");
        let stdout = child.stdout.take().unwrap();
        let (seen, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = seen.send(line);
            }
        });
        let mut banner = Vec::new();
        while banner.last().is_none_or(|l: &String| !l.starts_with("Press Ctrl-C")) {
            let line = lines.recv_timeout(Duration::from_secs(60)).expect("capshop up prints its banner");
            banner.push(line);
        }
        Self { child, banner, lines, url: format!("http://127.0.0.1:{port}") }
    }

    fn line_with(&self, label: &str) -> &str {
        self.banner
            .iter()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("the banner names the {label}: {:#?}", self.banner))
    }

    /// Waits for the next printed line that starts with `prefix`.
    fn wait_for_line(&self, prefix: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("capshop up prints a line starting with {prefix:?}"));
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    /// Sends SIGINT, as Ctrl-C does, and waits for a clean exit.
    fn interrupt(mut self) -> Vec<String> {
        let up = &mut self;
        let pid = up.child.id().to_string();
        assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
        let status = up.child.wait().unwrap();
        assert!(status.success(), "capshop up exits cleanly on Ctrl-C: {status}");
        // Everything it printed until its stdout closed: the reader thread may still be
        // forwarding the last lines when the process has already exited.
        let mut after = Vec::new();
        while let Ok(line) = up.lines.recv_timeout(Duration::from_secs(10)) {
            after.push(line);
        }
        after
    }
}

/// A failed test must not leave the shop running.
impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dlq(up: &Up, args: &[&str], token: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_capshop"))
        .arg("dlq")
        .args(args)
        .args(["--url", &up.url, "--token", token])
        .output()
        .expect("capshop dlq runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn up_prints_where_everything_is_serves_the_shop_and_stops_cleanly_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path());
    assert_eq!(up.line_with("shop page:").split_whitespace().last(), Some(format!("{}/", up.url).as_str()));
    assert!(up.line_with("dashboard:").ends_with(&format!("{}/dashboard", up.url)));
    assert!(up.line_with("admin token:").ends_with(TOKEN));
    assert!(up.line_with("sign in:").contains(shop::customer::DEMO_PASSWORD), "the demo sign-in is printed");
    for service in ["customer", "catalog", "inventory", "order", "payment", "shipping", "search"] {
        up.line_with(&format!("{service}:"));
    }

    let client = reqwest::Client::new();
    let page = client.get(format!("{}/", up.url)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("<title>capshop</title>"));
    let products: Value =
        client.get(format!("{}/api/catalog/products", up.url)).send().await.unwrap().json().await.unwrap();
    assert!(products.as_array().unwrap().len() >= 20, "seeded products: {products}");
    let customers = client.get(format!("{}/api/customer/customers", up.url)).bearer_auth(TOKEN).send().await;
    let customers: Value = customers.unwrap().json().await.unwrap();
    assert_eq!(customers.as_array().unwrap().len(), 3);
    let sign_in = json!({ "email": "ada@example.com", "password": shop::customer::DEMO_PASSWORD });
    let session =
        client.post(format!("{}/api/customer/sessions", up.url)).json(&sign_in).send().await.unwrap();
    assert_eq!(session.status(), 201, "Ada signs in with the printed demo password");

    let after = up.interrupt();
    assert!(after.iter().any(|l| l.starts_with("stopped; the data is kept in")), "{after:?}");
    for file in ["bus.db", "customer.db", "catalog.db", "order.db"] {
        assert!(dir.path().join(file).is_file(), "{file} is kept in the data dir");
    }
}

#[tokio::test]
async fn dlq_lists_shows_and_discards_the_dead_letters_of_the_running_shop() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path());
    let client = reqwest::Client::new();
    let poisoned = json!({ "id": "p-900", "name": "Cursed Lamp #poison", "description": "it bites", "price_cents": 999 });
    let response = client
        .post(format!("{}/api/catalog/products", up.url))
        .bearer_auth(TOKEN)
        .json(&poisoned)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    let listed = eventually("the poisoned product to become a dead letter", || async {
        let out = dlq(&up, &["list"], TOKEN);
        let stdout = text(&out.stdout);
        (out.status.success() && stdout.contains("search.catalog")).then_some(stdout)
    })
    .await;
    let line = listed.lines().find(|l| l.contains("search.catalog")).unwrap();
    assert!(line.contains("catalog/p-900"), "{line}");
    assert!(line.contains("attempts 3"), "{line}");
    assert!(line.contains("cannot index product p-900"), "{line}");
    let event_id = line.split_whitespace().next().unwrap();

    let shown = dlq(&up, &["show", event_id], TOKEN);
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["envelope"]["payload"]["name"], "Cursed Lamp #poison");

    let refused = dlq(&up, &["list"], "not-the-token");
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("the admin token is wrong"), "{}", text(&refused.stderr));
    let unselected = dlq(&up, &["discard"], TOKEN);
    assert!(!unselected.status.success(), "an empty selection discards nothing");
    assert!(text(&unselected.stderr).contains("\"all\": true"), "{}", text(&unselected.stderr));

    let discarded = dlq(&up, &["discard", "--event-id", event_id], TOKEN);
    assert!(discarded.status.success(), "{}", text(&discarded.stderr));
    assert_eq!(text(&discarded.stdout).lines().collect::<Vec<_>>(), ["search: 1", "discarded 1"]);
    let after = dlq(&up, &["list"], TOKEN);
    assert!(!text(&after.stdout).contains("search.catalog"), "{}", text(&after.stdout));
    up.interrupt();
}

#[tokio::test]
async fn a_scenario_run_from_the_dashboard_shows_its_report_and_plot_when_it_finishes() {
    let Some(browser) = browser::Browser::start().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path());
    browser.open(&format!("{}/dashboard", up.url)).await;
    browser.use_token(TOKEN).await;
    browser.shows("#scenarios", "read-your-writes").await;
    browser.click("#scenario-quick").await;
    browser.click("#scenarios button[data-scenario='read-your-writes']").await;
    browser.shows("#message", "scenario read-your-writes started").await;
    let report = browser.shows("#scenarios", "report of read-your-writes").await;
    assert!(report.contains("passed (short)"), "{report}");
    assert!(report.contains("[ok]"), "{report}");
    browser.element("#scenarios img[alt='plot of the read-your-writes run']").await;
    let violations = browser.serious_accessibility_violations().await;
    assert!(violations.is_empty(), "with a report shown: {}", serde_json::Value::from(violations));
    up.interrupt();
}

#[tokio::test]
async fn up_distributed_runs_a_process_per_service_restarts_one_that_crashes_and_ctrl_c_stops_them_all() {
    use kit::testserver::{NatsServer, POSTGRES_INSTALL, REDIS_INSTALL, binary};
    // Checks the nats-server version too (and skips loudly, or fails in CI).
    let Some(nats) = NatsServer::start().await else { return };
    drop(nats);
    if binary("initdb", POSTGRES_INSTALL).is_none() || binary("postgres", POSTGRES_INSTALL).is_none() {
        return;
    }
    // The catalog's cache.
    if binary("redis-server", REDIS_INSTALL).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // As root, PostgreSQL runs as nobody, who must be able to reach the data dir.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let up = Up::start_with(dir.path(), &["--distributed"]);
    let mut pids: Vec<u32> = Vec::new();
    for process in [
        "nats",
        "postgres",
        "customer",
        "catalog",
        "inventory-dc1",
        "inventory-dc2",
        "order",
        "payment",
        "shipping",
        "search",
        "gateway",
    ] {
        let line = up.line_with(&format!("{process}:"));
        let pid = line.rsplit_once("(pid ").and_then(|(_, p)| p.trim_end_matches(')').parse::<u32>().ok());
        pids.push(pid.unwrap_or_else(|| panic!("the banner names the pid of {process}: {line}")));
    }
    assert!(up.line_with("gateway:").contains(&up.url), "{:#?}", up.banner);

    let client = reqwest::Client::new();
    let products: Value =
        client.get(format!("{}/api/catalog/products", up.url)).send().await.unwrap().json().await.unwrap();
    assert!(products.as_array().unwrap().len() >= 20, "seeded products: {products}");
    let order_health: Value = eventually("the order service behind the gateway", || async {
        let response = client.get(format!("{}/api/order/health", up.url)).send().await.ok()?;
        response.json().await.ok()
    })
    .await;
    assert_eq!(order_health["service"], "order");

    // A crashed service is restarted; the rest keeps serving and checkouts go on.
    let order_pid = pids[6];
    assert!(Command::new("kill").args(["-KILL", &order_pid.to_string()]).status().unwrap().success());
    up.wait_for_line("order exited by itself");
    let restarted = up.wait_for_line("order restarted (pid ");
    let new_pid =
        restarted.rsplit_once("(pid ").and_then(|(_, p)| p.trim_end_matches(')').parse::<u32>().ok());
    pids.push(new_pid.unwrap_or_else(|| panic!("the restart names the new pid: {restarted}")));
    let api = |path: &str| format!("{}/api/order{path}", up.url);
    let sign_in = json!({ "email": "bob@example.com", "password": shop::customer::DEMO_PASSWORD });
    let bob: String = eventually("Bob to sign in", || async {
        let answer =
            client.post(format!("{}/api/customer/sessions", up.url)).json(&sign_in).send().await.ok()?;
        let answer: Value = answer.json().await.ok()?;
        answer["token"].as_str().map(str::to_owned)
    })
    .await;
    let order: Value = eventually("an order placed after the restart", || async {
        let added = client
            .post(api("/carts/c-bob/items"))
            .bearer_auth(&bob)
            .json(&json!({"product_id": "p-003", "quantity": 1}))
            .send()
            .await
            .ok()?;
        if !added.status().is_success() {
            return None;
        }
        let placed = client.post(api("/orders")).bearer_auth(&bob).json(&json!({"customer_id": "c-bob"}));
        let placed = placed.send().await.ok()?;
        placed.status().is_success().then_some(())?;
        placed.json().await.ok()
    })
    .await;
    let id = order["id"].as_str().expect("the order has an id").to_owned();
    eventually("the order placed after the restart to be confirmed", || async {
        let shown = client.get(api(&format!("/orders/{id}"))).bearer_auth(&bob).send().await.ok()?;
        let shown: Value = shown.json().await.ok()?;
        (shown["status"] == "confirmed" || shown["status"] == "shipped").then_some(())
    })
    .await;

    let after = up.interrupt();
    assert!(after.iter().any(|l| l.starts_with("stopped; the data is kept in")), "{after:?}");
    for pid in pids {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "process {pid} was stopped");
    }
    assert!(dir.path().join("postgres/PG_VERSION").is_file(), "PostgreSQL's data is in the data dir");
    assert!(dir.path().join("nats").is_dir(), "NATS's store is in the data dir");
}

#[test]
fn up_distributed_refuses_a_data_dir_postgres_cannot_reach_and_says_what_to_do() {
    use kit::servers::NATS_INSTALL;
    use kit::testserver::{POSTGRES_INSTALL, binary};
    if kit::servers::unprivileged_account().is_none() {
        return; // Only root hands PostgreSQL to nobody; any other user runs it as itself.
    }
    let found = ["nats-server", "initdb", "postgres"]
        .iter()
        .all(|b| binary(b, if *b == "nats-server" { NATS_INSTALL } else { POSTGRES_INSTALL }).is_some());
    if !found {
        return;
    }
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let data = private.path().join("shop");
    let output = Command::new(env!("CARGO_BIN_EXE_capshop"))
        .args(["up", "--distributed", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .expect("capshop runs");
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "refused: {stderr}");
    assert!(stderr.contains("cannot enter") && stderr.contains("chmod o+x"), "says what to do: {stderr}");
    assert!(!data.join("postgres").exists(), "nothing was started or written: {stderr}");
}
