//! `capshop chaos`: faults on purpose in a running shop, through the gateway's
//! `/admin/chaos` routes — cut, heal, slow or make lossy the link between two services
//! (or a service and the bus), give a service's bus link faults inside the bus (deliveries
//! duplicated, acks lost, deliveries delayed), and stop or start a service. The inventory sites are parts
//! of their own (`inventory-dc1`, `inventory-dc2`); `inventory` names both.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::admin::{Admin, AdminArgs};

#[derive(Args)]
pub struct ChaosArgs {
    #[command(subcommand)]
    command: ChaosCommand,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Subcommand)]
enum ChaosCommand {
    /// Cuts the links between A and B (services, inventory-dc1, inventory-dc2, `bus` or
    /// `cache`; `inventory` is both sites): both ways, or only A to B.
    Cut {
        a: String,
        b: String,
        /// Only traffic from A to B fails; answers from B to A still pass.
        #[arg(long)]
        oneway: bool,
    },
    /// Removes every fault of the link between A and B, or of every link.
    Heal {
        a: Option<String>,
        #[arg(requires = "a")]
        b: Option<String>,
    },
    /// Adds MS milliseconds to every pass over the link between A and B (0 removes it).
    Latency { a: String, b: String, ms: u64 },
    /// Makes FRACTION (0 to 1) of the passes over the link between A and B fail.
    Loss { a: String, b: String, fraction: f64 },
    /// Hands FRACTION (0 to 1) of the deliveries over a bus link (`order bus`) to the
    /// consumer a second time, after the first was settled (0 removes it).
    Duplicate { a: String, b: String, fraction: f64 },
    /// Reports FRACTION (0 to 1) of the acks over a bus link done without forwarding them:
    /// the bus delivers those messages again after its ack wait (0 removes it).
    LostAck { a: String, b: String, fraction: f64 },
    /// Holds FRACTION (0 to 1) of the deliveries over a bus link back (1.5 s at least), behind
    /// the later ones of other keys, and of the same key for an unordered consumer (0 removes it).
    Delay { a: String, b: String, fraction: f64 },
    /// Stops a service or an inventory site (`inventory` stops both): it neither serves nor
    /// consumes; its data stays.
    Stop { service: String },
    /// Starts a stopped service or inventory site again on its port.
    Start { service: String },
    /// Shows every link with its faults and every service and site with its state.
    Status,
}

pub async fn run(args: ChaosArgs) -> anyhow::Result<()> {
    let admin = Admin::connect(&args.admin)?;
    let (what, request) = match &args.command {
        ChaosCommand::Cut { a, b, oneway } => {
            ("cut", admin.post("/admin/chaos/cut", &json!({ "a": a, "b": b, "oneway": oneway })))
        }
        ChaosCommand::Heal { a: Some(a), b: Some(b) } => {
            ("heal", admin.post("/admin/chaos/heal", &json!({ "a": a, "b": b })))
        }
        ChaosCommand::Heal { a: Some(a), b: None } => {
            anyhow::bail!(
                "heal needs both ends of a link (capshop chaos heal {a} B), or none to heal every link"
            )
        }
        ChaosCommand::Heal { .. } => ("heal", admin.post("/admin/chaos/heal", &json!({}))),
        ChaosCommand::Latency { a, b, ms } => {
            ("latency", admin.post("/admin/chaos/latency", &json!({ "a": a, "b": b, "ms": ms })))
        }
        ChaosCommand::Loss { a, b, fraction } => {
            ("loss", admin.post("/admin/chaos/loss", &json!({ "a": a, "b": b, "fraction": fraction })))
        }
        ChaosCommand::Duplicate { a, b, fraction } => {
            ("duplicate", bus_fault(&admin, "duplicate", a, b, *fraction))
        }
        ChaosCommand::LostAck { a, b, fraction } => {
            ("lost-ack", bus_fault(&admin, "lost-ack", a, b, *fraction))
        }
        ChaosCommand::Delay { a, b, fraction } => ("delay", bus_fault(&admin, "delay", a, b, *fraction)),
        ChaosCommand::Stop { service } => {
            ("stop", admin.post(&format!("/admin/chaos/services/{service}/stop"), &json!({})))
        }
        ChaosCommand::Start { service } => {
            ("start", admin.post(&format!("/admin/chaos/services/{service}/start"), &json!({})))
        }
        ChaosCommand::Status => ("status", admin.get("/admin/chaos")),
    };
    let status = admin.expect(what, request).await?;
    print!("{}", render(&status));
    Ok(())
}

/// Sets the bus fault `fault` (the route's name) on the bus link between `a` and `b`.
fn bus_fault(admin: &Admin, fault: &str, a: &str, b: &str, fraction: f64) -> reqwest::RequestBuilder {
    admin.post(&format!("/admin/chaos/{fault}"), &json!({ "a": a, "b": b, "fraction": fraction }))
}

/// The status as two small tables: links with a fault first, then services.
fn render(status: &Value) -> String {
    let mut out = String::from("links:\n");
    for link in status["links"].as_array().into_iter().flatten() {
        let mut faults = Vec::new();
        match (link["cut_out"].as_bool(), link["cut_in"].as_bool()) {
            (Some(true), Some(true)) => faults.push("cut both ways".to_owned()),
            (Some(true), _) => faults.push(format!(
                "cut {} -> {}",
                link["from"].as_str().unwrap_or("?"),
                link["to"].as_str().unwrap_or("?")
            )),
            (_, Some(true)) => faults.push(format!(
                "cut {} -> {}",
                link["to"].as_str().unwrap_or("?"),
                link["from"].as_str().unwrap_or("?")
            )),
            _ => {}
        }
        if let Some(ms) = link["latency_ms"].as_u64().filter(|ms| *ms > 0) {
            faults.push(format!("+{ms} ms"));
        }
        if let Some(loss) = link["loss"].as_f64().filter(|l| *l > 0.0) {
            faults.push(format!("{:.0}% lost", loss * 100.0));
        }
        for (field, what) in [("duplicate", "duplicated"), ("lost_ack", "of acks lost"), ("delay", "delayed")]
        {
            if let Some(fraction) = link[field].as_f64().filter(|f| *f > 0.0) {
                faults.push(format!("{:.0}% {what}", fraction * 100.0));
            }
        }
        let faults = if faults.is_empty() { "healthy".to_owned() } else { faults.join(", ") };
        out.push_str(&format!("  {:<30} {faults}\n", link["name"].as_str().unwrap_or("?")));
    }
    out.push_str("services:\n");
    for service in status["services"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:<30} {:<8} {}\n",
            service["name"].as_str().unwrap_or("?"),
            service["state"].as_str().unwrap_or("?"),
            service["url"].as_str().unwrap_or("")
        ));
    }
    out
}
