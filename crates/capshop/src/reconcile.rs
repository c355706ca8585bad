//! `capshop reconcile`: checks that the services' databases agree with each other — of a
//! running shop through its gateway, of a stopped shop's data dir, or of a backup — and
//! exits 1 when a finding is a defect (see docs/BACKUP.md, "Reconcile").

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{ArgGroup, Args};
use shop::reconcile::{self, Report};

use crate::admin::Admin;

#[derive(Args)]
#[command(group(ArgGroup::new("source").required(true).args(["url", "data_dir", "backup"])))]
pub struct ReconcileArgs {
    /// The gateway of a running shop: asks its `GET /admin/reconcile` (admin token).
    #[arg(long)]
    url: Option<String>,
    /// The data dir of a stopped embedded shop (its `<service>.db` files and `bus.db`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A backup directory (the same layout as a data dir).
    #[arg(long)]
    backup: Option<PathBuf>,
    /// The admin token for --url (default: the one `capshop up` stored in capshop-data).
    #[arg(long, env = "CAPSHOP_ADMIN_TOKEN")]
    token: Option<String>,
    /// Prints the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs the check and prints the report; answers whether it found no defect.
pub async fn run(args: ReconcileArgs) -> anyhow::Result<bool> {
    let report = match (&args.url, args.data_dir.as_ref().or(args.backup.as_ref())) {
        (Some(url), _) => live(url, args.token.as_deref()).await?,
        (None, Some(dir)) => {
            let facts = shop::facts::from_files(dir).await?;
            reconcile::check(&facts)
        }
        (None, None) => bail!("name what to check: --url GATEWAY, --data-dir DIR or --backup DIR"),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(report.is_clean())
}

async fn live(url: &str, token: Option<&str>) -> anyhow::Result<Report> {
    let token = match token {
        Some(token) => token.to_owned(),
        None => std::fs::read_to_string("capshop-data/admin-token").map(|t| t.trim().to_owned()).context(
            "no admin token: pass --token or set CAPSHOP_ADMIN_TOKEN (capshop up prints it and stores it in its data dir)",
        )?,
    };
    let admin = Admin::new(url, &token);
    let body = admin.expect("reconcile", admin.get("/admin/reconcile")).await?;
    serde_json::from_value(body).context("the gateway's answer is not a reconcile report")
}
