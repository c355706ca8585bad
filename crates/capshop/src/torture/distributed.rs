//! The nemesis of `capshop torture --distributed`, against `capshop up --distributed`:
//! every service a process of its own on PostgreSQL and nats-server, supervised. A link
//! fault goes to the chaos route of each process that owns a link between its ends
//! (`/api/<part>/admin/chaos`: a process controls its own outbound links); a crash is a
//! SIGKILL of one process, which its supervisor starts again, healed once it serves
//! again; a pause freezes one process with SIGSTOP until its heal (SIGCONT).

pub mod plan;
pub mod processes;

use anyhow::bail;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::time::{Duration, Instant};

use super::child::ChildShop;
use super::converge::PARTS;
use super::plan::Fault;
use super::workload::Bench;

/// How long the heal of every link may take before the run gives up on the schedule.
const HEAL_BOUND: Duration = Duration::from_secs(30);

/// Refuses, with how to install it, a run whose servers are not on PATH (before any
/// schedule starts a shop that would only exit).
pub fn servers_on_path() -> anyhow::Result<()> {
    use kit::servers::{NATS_INSTALL, POSTGRES_INSTALL, REDIS_INSTALL, on_path};
    for (program, install) in [
        ("nats-server", NATS_INSTALL),
        ("initdb", POSTGRES_INSTALL),
        ("postgres", POSTGRES_INSTALL),
        ("redis-server", REDIS_INSTALL),
    ] {
        if on_path(program).is_none() {
            bail!(
                "`{program}` is not on PATH; --distributed runs `capshop up --distributed`, which needs it: {install}"
            );
        }
    }
    Ok(())
}

/// Applies one fault; answers the status of its chaos calls (200 for a signal sent).
pub async fn inject(bench: &Bench, fault: &Fault) -> anyhow::Result<u16> {
    let shop = bench.shop.read().await;
    let processes = shop.processes()?;
    match fault {
        Fault::Crash { process } => Ok(signalled(processes.crash(process))),
        Fault::Pause { process } => Ok(signalled(processes.pause(process))),
        Fault::Stop { .. } | Fault::Kill | Fault::CrashPoint { .. } => {
            bail!("{fault}: the distributed plan draws a crash or a pause")
        }
        Fault::Bus { kind, fraction } => Ok(on_every_bus_link(&shop, fault, kind.route(), *fraction).await),
        // Named one by one: a new kind of fault must say how it is applied here.
        link @ (Fault::Cut { .. } | Fault::Latency { .. } | Fault::Loss { .. }) => {
            let (route, body) = chaos_call(link)?;
            Ok(through_owners(&shop, link, &route, &body).await)
        }
    }
}

/// Heals one fault: removes a link's faults, waits until a crashed process serves again
/// (bounded), lets a paused one go on; answers 200 when it is healed.
pub async fn heal(bench: &Bench, fault: &Fault) -> u16 {
    let shop = bench.shop.read().await;
    let Ok(processes) = shop.processes() else { return 500 };
    match fault {
        Fault::Crash { process } => match processes.restarted(&shop, process).await {
            Ok(_) => 200,
            Err(e) => {
                tracing::error!(error = %e, "a crashed process did not come back");
                503
            }
        },
        Fault::Pause { process } => signalled(processes.resume(process)),
        Fault::Stop { .. } | Fault::Kill | Fault::CrashPoint { .. } => 422,
        // Set to 0, so a fault of the other lane on a bus link stays.
        Fault::Bus { kind, .. } => on_every_bus_link(&shop, fault, kind.route(), 0.0).await,
        link @ (Fault::Cut { .. } | Fault::Latency { .. } | Fault::Loss { .. }) => {
            let ends = json!({ "a": ends(link).0, "b": ends(link).1 });
            let started = Instant::now();
            // A process busy catching up may miss one call: the heal is retried, bounded.
            loop {
                let status = through_owners(&shop, link, "heal", &ends).await;
                if status == 200 || started.elapsed() > HEAL_BOUND {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Lets every paused process go on and heals every link of every process: the end of the
/// schedule's faults. A crashed process is back already (its heal waited for it); one
/// that is not is judged by the bounded wait that follows (rule 4).
pub async fn heal_all(bench: &Bench) -> anyhow::Result<()> {
    let shop = bench.shop.read().await;
    shop.processes()?.resume_all()?;
    let started = Instant::now();
    for part in PARTS {
        let path = format!("/api/{part}/admin/chaos/heal");
        loop {
            let answer = shop.admin(Method::POST, &path, Some(&json!({}))).await;
            if answer.status == 200 {
                break;
            }
            if started.elapsed() > HEAL_BOUND {
                bail!("healing every link of {part}: {} {}", answer.status, answer.body);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// 200 for a signal sent; a failure is logged and recorded as 500 (its heal fails too).
fn signalled(sent: anyhow::Result<()>) -> u16 {
    match sent {
        Ok(()) => 200,
        Err(e) => {
            tracing::error!(error = %e, "the nemesis could not signal a process");
            500
        }
    }
}

/// A link fault as its chaos route and body: the fault's own fields but its name, which
/// is the route (`cut`, `latency`, `loss`).
fn chaos_call(fault: &Fault) -> anyhow::Result<(String, Value)> {
    let mut body = serde_json::to_value(fault)?;
    let route = body.as_object_mut().and_then(|fields| fields.remove("fault"));
    match route {
        Some(Value::String(route)) => Ok((route, body)),
        _ => bail!("{fault} has no chaos route"),
    }
}

fn ends(fault: &Fault) -> (&str, &str) {
    match fault {
        Fault::Cut { a, b, .. } | Fault::Latency { a, b, .. } | Fault::Loss { a, b, .. } => (a, b),
        _ => ("", ""),
    }
}

/// Sends `body` to `route` of the chaos of each process that owns a link of `fault`;
/// answers 200 when one of them had such a link and none failed (a process without one
/// answers 404), else the first failure's status.
async fn through_owners(shop: &ChildShop, fault: &Fault, route: &str, body: &Value) -> u16 {
    let mut owned = false;
    for owner in plan::owners(fault) {
        let path = format!("/api/{owner}/admin/chaos/{route}");
        match shop.admin(Method::POST, &path, Some(body)).await.status {
            200 => owned = true,
            404 => {}
            failed => return failed,
        }
    }
    if owned { 200 } else { 404 }
}

/// Sets the fault inside the bus of chaos route `route` to `fraction` on the bus link of
/// every service process, each through its own chaos routes.
async fn on_every_bus_link(shop: &ChildShop, fault: &Fault, route: &str, fraction: f64) -> u16 {
    let prefix = |part: &str| format!("/api/{part}");
    super::nemesis::on_bus_links(shop, &plan::owners(fault), prefix, route, fraction).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_fault_is_sent_as_its_chaos_route_with_the_fields_the_route_takes() {
        let cut = Fault::Cut { a: "order".into(), b: "customer".into(), oneway: true };
        let (route, body) = chaos_call(&cut).unwrap();
        assert_eq!((route.as_str(), body), ("cut", json!({ "a": "order", "b": "customer", "oneway": true })));
        let loss = Fault::Loss { a: "inventory-dc1".into(), b: "bus".into(), fraction: 0.5 };
        let (route, body) = chaos_call(&loss).unwrap();
        assert_eq!(
            (route.as_str(), body),
            ("loss", json!({ "a": "inventory-dc1", "b": "bus", "fraction": 0.5 }))
        );
        assert_eq!(plan::owners(&loss), ["inventory-dc1"], "the bus has no chaos route of its own");
        let sites = Fault::Cut { a: "inventory-dc1".into(), b: "inventory-dc2".into(), oneway: false };
        assert_eq!(plan::owners(&sites), ["inventory-dc1", "inventory-dc2"], "each site owns its way");
    }
}
