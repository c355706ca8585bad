//! `capshop backup create|verify` and `capshop restore` (docs/BACKUP.md): a consistent
//! backup of a running shop (asked of its gateway) or of a stopped one's data dir, its
//! check, and its restore into a fresh data dir.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use shop::backup::{self, Kind, Manifest};

use crate::admin::{Admin, AdminArgs};

#[derive(Subcommand)]
pub enum BackupCommand {
    /// Takes a backup into DIR (new or empty): of the running shop through its gateway
    /// (DIR is on the shop's machine), or with --from of a stopped shop's data dir.
    Create(CreateArgs),
    /// Checks a backup: every file against its checksum, and its certificate.
    Verify(VerifyArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    dir: PathBuf,
    /// Copies each database on its own, one after another, without the cut: what seed 004
    /// warns about, kept to show the difference.
    #[arg(long)]
    naive: bool,
    /// The data dir of a stopped embedded shop to back up, instead of asking a running one.
    #[arg(long)]
    from: Option<PathBuf>,
    /// Prints the manifest's summary as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Args)]
pub struct VerifyArgs {
    dir: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The backup to restore.
    backup: PathBuf,
    /// Where to restore it: a new or empty directory; then `capshop up --data-dir` it
    /// (`capshop up --distributed --data-dir` for a backup of the distributed mode).
    #[arg(long, required_unless_present = "database_url")]
    data_dir: Option<PathBuf>,
    /// A backup of the distributed mode, into the fresh databases `capshop_<part>` of this
    /// PostgreSQL server (postgres://USER@HOST:PORT) instead of a data dir.
    #[arg(long, conflicts_with = "data_dir")]
    database_url: Option<String>,
    #[arg(long)]
    json: bool,
}

pub async fn run(command: BackupCommand) -> anyhow::Result<()> {
    match command {
        BackupCommand::Create(args) => create(args).await,
        BackupCommand::Verify(args) if backup::pg_restore::is_distributed(&args.dir)? => {
            let manifest = backup::pg_restore::verify(&args.dir)?;
            print_verified(&args, &manifest, &manifest.certificate)
        }
        BackupCommand::Verify(args) => {
            let verified = backup::verify(&args.dir).await?;
            print_verified(&args, &verified.manifest, &verified.certificate)
        }
    }
}

fn print_verified(
    args: &VerifyArgs,
    manifest: &Manifest,
    certificate: &backup::certificate::Certificate,
) -> anyhow::Result<()> {
    if args.json {
        let mut out = summary(&args.dir, manifest);
        out["verified"] = json!(true);
        out["certificate"] = serde_json::to_value(certificate)?;
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{}: {} backup of {} databases, every checksum matches",
            args.dir.display(),
            kind_name(manifest.kind),
            manifest.files.len()
        );
        for check in &certificate.checks {
            println!("  [{}] {}", if check.passed { "ok" } else { "FAILED" }, check.check);
            for failure in &check.failures {
                println!("        {failure}");
            }
        }
    }
    Ok(())
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let distributed = backup::pg_restore::is_distributed(&args.backup)?;
    let mut prefix = None;
    let (restored, then) = match (&args.data_dir, &args.database_url, distributed) {
        (Some(dir), None, false) => {
            (backup::restore(&args.backup, dir).await?, format!("capshop up --data-dir {}", dir.display()))
        }
        (Some(dir), None, true) => (
            crate::distributed::restore_into(&args.backup, dir).await?,
            format!("capshop up --distributed --data-dir {}", dir.display()),
        ),
        (None, Some(url), true) => {
            let restored = restore_onto(&args.backup, url).await?;
            let fresh = format!("restored{}", time::OffsetDateTime::now_utc().unix_timestamp());
            let then = format!(
                "run every service on these databases with a fresh stream prefix: --bus nats://HOST:PORT?prefix={fresh}"
            );
            prefix = Some(fresh);
            (restored, then)
        }
        (None, Some(_), false) => {
            bail!("{} is a backup of an embedded shop: restore it with --data-dir NEW", args.backup.display())
        }
        _ => bail!("name where to restore: --data-dir NEW, or --database-url for a distributed backup"),
    };
    if args.json {
        let mut out = serde_json::to_value(&restored)?;
        if let Some(prefix) = prefix {
            out["stream_prefix"] = json!(prefix);
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let into = args
            .data_dir
            .as_ref()
            .map_or_else(|| args.database_url.clone().unwrap_or_default(), |d| d.display().to_string());
        println!(
            "restored a {} backup into {} ({} files, {} events dropped that their producers had not committed) in {:.0} ms",
            kind_name(restored.kind),
            into,
            restored.files,
            restored.dropped_uncommitted,
            restored.restore_ms
        );
        println!(
            "{} events were in flight at the cut; they are delivered once the shop runs: {then}",
            restored.in_flight
        );
        if restored.kind == Kind::Naive {
            println!("a naive backup: `capshop reconcile` of the restored shop shows its damage");
        }
    }
    Ok(())
}

/// Restores a distributed backup into the databases `capshop_<part>` of the PostgreSQL
/// server at `url` (`postgres://USER@HOST:PORT`), creating those that do not exist yet;
/// one that already holds a table is refused.
async fn restore_onto(backup: &Path, url: &str) -> anyhow::Result<backup::Restored> {
    let server = url.trim_end_matches('/');
    let Some(address) = server.strip_prefix("postgres://").or_else(|| server.strip_prefix("postgresql://"))
    else {
        bail!("--database-url {url} is not a PostgreSQL server's URL: give postgres://USER@HOST:PORT");
    };
    if address.contains(['/', '?']) {
        bail!(
            "--database-url {url} names a database or settings; give the server only (postgres://USER@HOST:PORT): \
             the restore loads its databases capshop_<part>"
        );
    }
    // Checked before anything is created on the server.
    backup::pg_restore::verify(backup)?;
    let admin = format!("{server}/postgres");
    tokio::task::spawn_blocking(move || crate::distributed::create_databases(&admin))
        .await?
        .with_context(|| format!("cannot create the shop's databases on {server}"))?;
    Ok(backup::pg_restore::restore(backup, server).await?)
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let kind = if args.naive { Kind::Naive } else { Kind::Consistent };
    let dir = absolute(&args.dir)?;
    let progress = spinner(&format!("taking a {} backup into {}", kind_name(kind), dir.display()));
    let manifest = match &args.from {
        Some(data_dir) => {
            if !data_dir.join("bus.db").is_file() {
                bail!(
                    "{} holds no shop (no bus.db): point --from at a stopped shop's data dir",
                    data_dir.display()
                );
            }
            // A stopped shop has nothing under way: its own pause is the cut.
            let source = backup::Source::embedded(data_dir, kit::pause::Pause::new());
            source.create(&dir, kind).await?
        }
        None => {
            let admin = Admin::connect(&args.admin)?;
            let body = json!({ "dir": dir.display().to_string(), "kind": kind_name(kind) });
            let answer = admin.expect("backup", admin.post("/admin/backups", &body)).await?;
            serde_json::from_value(answer).context("the gateway's answer is not a backup manifest")?
        }
    };
    progress.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary(&dir, &manifest))?);
    } else {
        let bytes: u64 = manifest.files.iter().map(|f| f.bytes).sum();
        println!(
            "{} backup in {}: {} databases, {:.1} MB, consumers paused {:.1} ms, {:.0} ms in all",
            kind_name(kind),
            dir.display(),
            manifest.files.len(),
            bytes as f64 / 1e6,
            manifest.pause_ms,
            manifest.total_ms
        );
        let failed = manifest.certificate.checks.iter().filter(|c| !c.passed).count();
        match (kind, failed) {
            (Kind::Consistent, _) => println!("certificate: every check passed"),
            (Kind::Naive, 0) => println!("certificate (not required of a naive backup): every check passed"),
            (Kind::Naive, n) => println!("certificate (not required of a naive backup): {n} checks fail"),
        }
        println!("restore it with: capshop restore {} --data-dir NEW", dir.display());
    }
    Ok(())
}

/// The manifest without its per-file detail: the dashboard's summary of it, and where the
/// streams and consumers stood.
fn summary(dir: &Path, manifest: &Manifest) -> Value {
    let mut out = serde_json::to_value(backup::Summary::of(dir, manifest)).unwrap_or_default();
    out["capshop_version"] = json!(manifest.capshop_version);
    out["databases"] = json!(manifest.files.len());
    out["dropped_uncommitted"] = json!(manifest.dropped_uncommitted);
    out["positions"] = json!(manifest.positions);
    out
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Consistent => "consistent",
        Kind::Naive => "naive",
    }
}

fn absolute(dir: &Path) -> anyhow::Result<PathBuf> {
    if dir.is_absolute() {
        return Ok(dir.to_owned());
    }
    Ok(std::env::current_dir().context("cannot tell the current directory")?.join(dir))
}

fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("a valid template"));
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}
