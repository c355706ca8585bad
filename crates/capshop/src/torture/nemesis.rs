//! The nemesis: applies a [`Plan`] to the shop on time — link faults, faults inside the bus
//! and stops through the gateway's `/admin/chaos`, SIGKILL and restart of the process
//! itself, at a random time or at one of the kit's crash points — records each action in
//! the history, and at the end heals everything. Against
//! `up --distributed`, [`super::distributed`] applies and heals each fault instead.

use anyhow::bail;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::time::Duration;

use super::child::ChildShop;
use super::plan::{Fault, ON_THE_BUS, Plan, Step};
use super::workload::Bench;

/// Runs `plan` on `bench`'s shop; returns when its last step is healed.
pub async fn run(bench: &Bench, plan: &Plan) -> anyhow::Result<()> {
    let mut actions: Vec<(f64, bool, usize)> = Vec::new();
    for (i, step) in plan.steps.iter().enumerate() {
        actions.push((step.at, true, i));
        if !step.fault.downs_the_process() {
            actions.push((step.heal_at, false, i));
        }
    }
    actions.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut began = vec![0.0; plan.steps.len()];
    for (at, apply, i) in actions {
        let wait = at - bench.history.now();
        if wait > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
        let fault = &plan.steps[i].fault;
        let invoke = bench.history.now();
        let status = if apply { inject(bench, &plan.steps[i]).await? } else { heal(bench, fault).await };
        let (action, label) = if apply { ("fault", fault.to_string()) } else { ("heal", fault.to_string()) };
        bench.history.nemesis(action, label.clone(), invoke, status);
        if apply {
            began[i] = invoke;
            if fault.downs_the_process() {
                bench.timeline.window(&label, invoke, bench.history.now());
            }
        } else {
            bench.timeline.window(&label, began[i], bench.history.now());
        }
    }
    Ok(())
}

/// Applies one step's fault; answers the HTTP status of the chaos call (200 for a kill).
async fn inject(bench: &Bench, step: &Step) -> anyhow::Result<u16> {
    let fault = &step.fault;
    if bench.shop.read().await.distributed() {
        return super::distributed::inject(bench, fault).await;
    }
    let (path, body) = match fault {
        Fault::Cut { a, b, oneway } => {
            ("/admin/chaos/cut".to_owned(), json!({ "a": a, "b": b, "oneway": oneway }))
        }
        Fault::Latency { a, b, ms } => {
            ("/admin/chaos/latency".to_owned(), json!({ "a": a, "b": b, "ms": ms }))
        }
        Fault::Loss { a, b, fraction } => {
            ("/admin/chaos/loss".to_owned(), json!({ "a": a, "b": b, "fraction": fraction }))
        }
        Fault::Stop { part } => (format!("/admin/chaos/services/{part}/stop"), Value::Null),
        Fault::Bus { kind, fraction } => return Ok(on_every_bus_link(bench, kind.route(), *fraction).await),
        Fault::Kill => {
            // Writers wait for the lock while the process is down: their calls in flight
            // at the kill end unknown, the next ones reach the restarted process.
            let mut shop = bench.shop.write().await;
            shop.kill_and_restart().await?;
            return Ok(200);
        }
        Fault::CrashPoint { point, after } => {
            crash_at(bench, point, *after, step.heal_at - step.at).await?;
            return Ok(200);
        }
        Fault::Crash { .. } | Fault::Pause { .. } => bail!("{fault}: only with --distributed"),
    };
    let shop = bench.shop.read().await;
    let body = (!body.is_null()).then_some(&body);
    Ok(shop.admin(Method::POST, &path, body).await.status)
}

/// Arms the crash point `point` to freeze the process at its `after`-th pass, waits for
/// that for `bound` seconds, kills the process there (or after `bound`, a plain kill) and
/// starts it again, disarmed; records whether the point was reached.
async fn crash_at(bench: &Bench, point: &str, after: u64, bound: f64) -> anyhow::Result<()> {
    let (invoke, mut crashed) = (bench.history.now(), bench.shop.read().await.arm(point, after)?);
    // The whole bound, also when the step begins late (behind the clients' sign-ups).
    let bound = Duration::from_secs_f64(bound);
    let reached =
        tokio::time::timeout(bound, crashed.wait_for(Option::is_some)).await.is_ok_and(|r| r.is_ok());
    // At once, not behind the clients' calls in flight: the process's other threads go on.
    bench.shop.read().await.sigkill();
    let action = if reached { "crash-point-reached" } else { "crash-point-not-reached" };
    bench.history.nemesis(action, point.to_owned(), invoke, 200);
    bench.shop.write().await.kill_and_restart().await
}

/// Sets the fault inside the bus of chaos route `route` to `fraction` on every part's bus
/// link, through the gateway's chaos routes; answers the first status that is not 200, or 200.
async fn on_every_bus_link(bench: &Bench, route: &str, fraction: f64) -> u16 {
    let shop = bench.shop.read().await;
    on_bus_links(&shop, &ON_THE_BUS, |_| String::new(), route, fraction).await
}

/// Sets the fault inside the bus of chaos route `route` to `fraction` on the bus link of
/// each of `parts`, through the chaos routes under `prefix(part)` (`""` for the embedded
/// gateway's own, `/api/<part>` for a process of its own); answers the first status that
/// is not 200, or 200.
pub(super) async fn on_bus_links(
    shop: &ChildShop,
    parts: &[&str],
    prefix: impl Fn(&str) -> String,
    route: &str,
    fraction: f64,
) -> u16 {
    let mut answer = 200;
    for part in parts {
        let body = json!({ "a": part, "b": "bus", "fraction": fraction });
        let path = format!("{}/admin/chaos/{route}", prefix(part));
        let status = shop.admin(Method::POST, &path, Some(&body)).await.status;
        if answer == 200 {
            answer = status;
        }
    }
    answer
}

/// Heals one fault (a link's faults, a fault inside the bus alone, or starts the part again).
async fn heal(bench: &Bench, fault: &Fault) -> u16 {
    if bench.shop.read().await.distributed() {
        return super::distributed::heal(bench, fault).await;
    }
    if let Fault::Bus { kind, .. } = fault {
        // Set to 0, so a fault of the other lane on a bus link stays.
        return on_every_bus_link(bench, kind.route(), 0.0).await;
    }
    let shop = bench.shop.read().await;
    match fault {
        Fault::Cut { a, b, .. } | Fault::Latency { a, b, .. } | Fault::Loss { a, b, .. } => {
            shop.admin(Method::POST, "/admin/chaos/heal", Some(&json!({ "a": a, "b": b }))).await.status
        }
        Fault::Stop { part } => {
            shop.admin(Method::POST, &format!("/admin/chaos/services/{part}/start"), None).await.status
        }
        Fault::Bus { .. } | Fault::Kill | Fault::CrashPoint { .. } => 200,
        // The embedded plan draws neither.
        Fault::Crash { .. } | Fault::Pause { .. } => 422,
    }
}

/// Heals every link and starts every stopped part: the end of the schedule's faults.
pub async fn heal_all(bench: &Bench) -> anyhow::Result<()> {
    if bench.shop.read().await.distributed() {
        return super::distributed::heal_all(bench).await;
    }
    let shop = bench.shop.read().await;
    shop.expect_admin("healing every link", Method::POST, "/admin/chaos/heal", Some(&json!({}))).await?;
    let status = shop.expect_admin("the chaos status", Method::GET, "/admin/chaos", None).await?;
    for service in status["services"].as_array().into_iter().flatten() {
        if service["state"] == "stopped" {
            let name = service["name"].as_str().unwrap_or_default();
            let path = format!("/admin/chaos/services/{name}/start");
            shop.expect_admin(&format!("starting {name}"), Method::POST, &path, None).await?;
        }
    }
    Ok(())
}
