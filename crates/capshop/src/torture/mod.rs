//! `capshop torture`: randomized fault schedules against the real shop with a checker over
//! the whole history (docs/RELIABILITY.md). Each schedule starts `capshop up` as a child on
//! a fresh data dir, prints its seeded nemesis [`plan`], runs the concurrent [`workload`]
//! while the [`nemesis`] applies the plan, heals everything, waits (bounded) until the shop
//! has settled ([`converge`]), and lets [`check`] judge the [`history`] against the final
//! state. `--seed S` replays a schedule's plan; the [`report`] names the seed of a failure.
//!
//! With `CAPSHOP_CANARY=<name>` in the environment (and a binary built with the `canary`
//! feature) the shop carries a deliberate bug, and the report gives the share of
//! schedules that caught it.

mod check;
mod child;
mod converge;
mod distributed;
mod history;
mod nemesis;
mod plan;
mod report;
mod stock;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use shop::inventory::sites::Mode;
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

use self::check::Final;
use self::plan::Plan;
use self::report::Schedule;
use self::workload::{Bench, Shopper};

#[derive(Args)]
pub struct TortureArgs {
    /// The first schedule's seed (the next ones count up); default: a random one.
    #[arg(long)]
    seed: Option<u64>,
    /// How many schedules to run.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    schedules: u64,
    /// How long each schedule's workload and nemesis run, in seconds.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Runs each schedule against `capshop up --distributed` (a process per service on
    /// PostgreSQL and nats-server; both must be on PATH), crashing and pausing processes.
    #[arg(long)]
    distributed: bool,
    /// The inventory sites' mode (ap or cp), passed to `capshop up`.
    #[arg(long, default_value = "ap")]
    inventory_mode: Mode,
    /// Concurrent clients, each a shopper of its own.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(1..=32))]
    clients: u64,
    /// How long the shop may take to settle after the heal before it is a liveness failure.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    settle_seconds: u64,
    /// Counts the shop's known, not yet fixed defects (docs/RELIABILITY.md) as violations.
    #[arg(long)]
    strict: bool,
    /// Prints the report as JSON (passed, counts per rule and per schedule).
    #[arg(long)]
    json: bool,
    /// Where each schedule's history (JSON lines) and plot are written.
    #[arg(long, default_value = "capshop-torture")]
    out: PathBuf,
}

pub async fn run(args: TortureArgs) -> anyhow::Result<()> {
    if !(2.0..=3600.0).contains(&args.seconds) {
        bail!("--seconds must be between 2 and 3600, not {}", args.seconds);
    }
    if args.distributed {
        distributed::servers_on_path()?;
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let canary = std::env::var("CAPSHOP_CANARY").ok().filter(|c| !c.is_empty());
    if let Some(canary) = &canary {
        let names: Vec<&str> = kit::canary::CANARIES.iter().map(|(name, _)| *name).collect();
        if !kit::canary::COMPILED {
            bail!(
                "CAPSHOP_CANARY={canary}, but this binary has no canaries: the capshop tests build one that has (cargo test -p capshop --test torture)"
            );
        }
        if !names.contains(&canary.as_str()) {
            bail!("no canary {canary:?}: use one of {}", names.join(", "));
        }
    }
    let first = args.seed.unwrap_or_else(|| rand::random::<u32>().into());
    let mut schedules = Vec::new();
    for seed in first..first + args.schedules {
        let schedule =
            one(&args, seed).await.with_context(|| format!("schedule of seed {seed} could not run"))?;
        if args.json {
            eprint!("{}", schedule.text());
        } else {
            print!("{}", schedule.text());
        }
        schedules.push(schedule);
    }
    let mut summary = report::summary(&schedules, canary.as_deref());
    summary["distributed"] = args.distributed.into();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", report::summary_text(&summary));
        println!("{}", if summary["passed"] == true { "PASSED" } else { "FAILED" });
    }
    if summary["passed"] != true {
        bail!("the checker found violations: replay a failed seed with --seed S --schedules 1");
    }
    Ok(())
}

/// Runs the schedule of `seed` on a fresh shop.
async fn one(args: &TortureArgs, seed: u64) -> anyhow::Result<Schedule> {
    let plan =
        if args.distributed { Plan::distributed(seed, args.seconds) } else { Plan::of(seed, args.seconds) };
    let mode = args.inventory_mode.as_str();
    // Printed before the run, so a schedule that never ends is still replayable.
    if args.json {
        eprint!("{}", plan.text());
    } else {
        print!("{}", plan.text());
    }
    let dir = tempfile::Builder::new().prefix("capshop-torture-").tempdir()?;
    if args.distributed {
        // PostgreSQL runs as nobody when capshop runs as root: it must reach its data dir.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let child = child::ChildShop::start(&dir.path().join("data"), mode, args.distributed).await?;
    // The seed data replicating is the first thing to settle; a shop that cannot is judged
    // by the final wait (rule 4), like any other.
    let bound = Duration::from_secs(args.settle_seconds);
    let seeded = converge::settle(&child, bound).await;
    let mut bench = Bench::new(Arc::new(RwLock::new(child)), seed);
    if let Err(why) = seeded {
        bench.history.nemesis("seed-not-settled", why, 0.0, 0);
    }
    workload::stock_low(&bench).await;
    let mut shoppers = Vec::new();
    for index in 0..args.clients as usize {
        shoppers.push(Shopper::register(&bench, index).await?);
    }
    // The plan counts from here, where the workload starts (registering took seconds).
    let started = bench.history.now();
    let timed = plan.after(started);
    bench.aim(timed.sites_cut());
    let stop = CancellationToken::new();
    let sampling = CancellationToken::new();
    let sampler = tokio::spawn(sample(bench.clone(), sampling.clone()));
    let mut clients = tokio::task::JoinSet::new();
    for shopper in shoppers {
        clients.spawn(shopper.run(bench.clone(), stop.clone()));
    }
    let nemesis = nemesis::run(&bench, &timed).await;
    let left = started + args.seconds - bench.history.now();
    if left > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(left)).await;
    }
    stop.cancel();
    while clients.join_next().await.is_some() {}
    nemesis?;
    nemesis::heal_all(&bench).await?;
    let settled = {
        let child = bench.shop.read().await;
        converge::settle(&child, bound).await
    };
    sampling.cancel();
    let _ = sampler.await;
    let (facts, reconcile) = converge::final_state(&*bench.shop.read().await).await?;
    let ops = bench.history.snapshot();
    let end = Final {
        facts: &facts,
        reconcile: &reconcile,
        converged: settled.clone().map(|_| ()),
        strict: args.strict,
        inventory_mode: args.inventory_mode,
    };
    let mut rules = check::check(&ops, &end);
    let audit = stock::audit_of(&mut *bench.shop.write().await, &dir.path().join("data"))
        .await
        .context("cannot audit the inventory sites")?;
    rules.insert(4, stock::rule(args.inventory_mode, &audit, &ops));
    let mut schedule = Schedule::new(seed, mode, plan, &ops, rules, settled.ok().map(|d| d.as_secs_f64()));
    schedule.distributed = args.distributed;
    let name = format!("{}{mode}-seed-{seed}", if args.distributed { "distributed-" } else { "" });
    let history = args.out.join(format!("{name}.jsonl"));
    std::fs::write(&history, bench.history.json_lines())
        .with_context(|| format!("cannot write {}", history.display()))?;
    let final_state = args.out.join(format!("{name}-final.json"));
    let saved = serde_json::to_string(&serde_json::json!({ "facts": facts, "reconcile": reconcile }))?;
    std::fs::write(&final_state, saved).with_context(|| format!("cannot write {}", final_state.display()))?;
    let plot = args.out.join(format!("{name}.svg"));
    let svg = crate::scenario::plot::svg(
        &format!("capshop torture, {mode}, seed {seed}"),
        &bench.timeline.snapshot(),
    );
    std::fs::write(&plot, svg).with_context(|| format!("cannot write {}", plot.display()))?;
    (schedule.history, schedule.plot) = (history.display().to_string(), plot.display().to_string());
    Ok(schedule)
}

/// Samples lag, backlog and dead letters for the plot until `stop`.
async fn sample(bench: Bench, stop: CancellationToken) {
    while !stop.is_cancelled() {
        if let Some(b) = converge::backlog(&*bench.shop.read().await).await {
            bench.timeline.sample("shop", b.lag, b.backlog, b.dead);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
