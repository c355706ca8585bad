//! `capshop scenario`: the experiments of DESIGN §4. Each starts fresh shops in a
//! temporary directory, drives load, injects its fault, heals, waits for convergence,
//! prints a report with its figures, writes a plot, and fails when its invariant fails.
//!
//! One scenario is one file with an `async fn run(&Lab) -> anyhow::Result<Report>` and
//! one line in the [`scenarios!`] table below, which declares its module and lists it.

pub mod http;
mod lab;
mod ledger;
mod measure;
pub(crate) mod plot;
pub(crate) mod timeline;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::{Map, Value, json};

pub use lab::Lab;
use measure::Lost;

/// The scenarios that can drop a committed event on purpose (`--drop-event`).
const DROPS_AN_EVENT: &[&str] = &["broker-down"];

type Run = for<'a> fn(&'a Lab) -> Pin<Box<dyn Future<Output = anyhow::Result<Report>> + 'a>>;

/// One experiment: its name on the command line, what it shows, and how to run it.
pub struct Scenario {
    pub name: &'static str,
    pub summary: &'static str,
    run: Run,
}

/// Declares each scenario's module (`module.rs` beside this file) and lists it in
/// [`SCENARIOS`], so adding one is one line.
macro_rules! scenarios {
    ($($module:ident => $name:literal, $summary:literal;)*) => {
        $(mod $module;)*

        /// Every scenario, in the order of DESIGN §4.
        pub const SCENARIOS: &[Scenario] = &[
            $(Scenario { name: $name, summary: $summary, run: |lab| Box::pin($module::run(lab)) },)*
        ];
    };
}

scenarios! {
    customer_down => "customer-down",
        "the customer service stops during checkouts: replica vs synchronous address";
    broker_down => "broker-down",
        "every service loses the bus: writes go on, outboxes grow, all converges";
    stale_address => "stale-address",
        "an address change does not propagate: stale checkout, override, shipment held";
    poison_event => "poison-event",
        "search cannot index a product: retries with backoff, dead letter, fix, replay";
    read_your_writes => "read-your-writes",
        "replication is slow: the consistency token still shows the new address";
    inventory_partition => "inventory-partition",
        "dc1 and dc2 cannot see each other: ap sells and compensates, cp refuses";
    breaker => "breaker",
        "the catalog is slow: the breaker opens, answers degrade at once, it closes again";
    cache_down => "cache-down",
        "the popularity cache fails: popular products degrade to limited, nothing else fails";
    backup => "backup",
        "backups under checkout load: the consistent cut restores clean, a naive copy does not";
    db_failover => "db-failover",
        "the database primary dies under checkouts: async vs sync standby, promoted, lost writes listed";
}

#[derive(Args)]
pub struct ScenarioArgs {
    /// The scenario to run (see --list).
    #[arg(required_unless_present = "list")]
    name: Option<String>,
    /// Lists the scenarios.
    #[arg(long)]
    list: bool,
    /// Prints the report as JSON (scenario, passed, figures, checks, plot).
    #[arg(long)]
    json: bool,
    /// Where the plot is written.
    #[arg(long, default_value = "capshop-scenarios")]
    out: PathBuf,
    /// Short phases (a few seconds per scenario), for tests.
    #[arg(long)]
    quick: bool,
    /// Deletes one committed event from a producer's outbox before it is relayed, to show
    /// that the loss figure catches it (the scenario then fails). broker-down only.
    #[arg(long)]
    drop_event: bool,
}

/// What a scenario found: human lines, named figures, and the checks of its invariant.
#[derive(Default)]
pub struct Report {
    lines: Vec<String>,
    figures: Map<String, Value>,
    checks: Vec<(String, bool)>,
}

impl Report {
    pub fn line(&mut self, text: impl Into<String>) {
        self.lines.push(text.into());
    }

    pub fn figure(&mut self, name: &str, value: impl Into<Value>) {
        self.figures.insert(name.to_owned(), value.into());
    }

    /// Records one part of the invariant.
    pub fn check(&mut self, what: impl Into<String>, holds: bool) {
        self.checks.push((what.into(), holds));
    }

    /// Reports what the loss check found: `events_lost` and its two parts, the examples by
    /// key, and the check that nothing is lost.
    pub fn losses(&mut self, lost: &Lost) {
        self.line(format!(
            "loss check: {} committed events missing ({} deliveries checked by their effect), \
             {} acknowledged writes missing (of {} checked at every replica)",
            lost.events, lost.deliveries, lost.writes, lost.acknowledged
        ));
        for example in &lost.missing {
            self.line(format!("  lost: {example}"));
        }
        self.figure("events_lost", lost.lost);
        self.figure("lost_events", lost.events);
        self.figure("lost_writes", lost.writes);
        self.figure("writes_acknowledged", lost.acknowledged);
        self.figure("deliveries_checked", lost.deliveries);
        self.figure("lost_examples", lost.missing.clone());
        self.check(
            "no event is lost: every committed event is on the bus and had its effect, every acknowledged write is at every replica",
            lost.lost == 0,
        );
    }

    /// The report as `capshop scenario` prints it: its lines, then each check.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            out.push_str(&format!("  {line}\n"));
        }
        out.push('\n');
        for (what, holds) in &self.checks {
            out.push_str(&format!("  [{}] {what}\n", if *holds { "ok" } else { "FAILED" }));
        }
        out
    }

    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|(_, holds)| *holds)
    }
}

pub async fn run(args: ScenarioArgs) -> anyhow::Result<()> {
    if args.list {
        for scenario in SCENARIOS {
            println!("{:<18} {}", scenario.name, scenario.summary);
        }
        return Ok(());
    }
    let name = args.name.as_deref().unwrap_or_default();
    let Some(scenario) = SCENARIOS.iter().find(|s| s.name == name) else {
        let names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        bail!("no scenario {name:?}: use one of {} (capshop scenario --list)", names.join(", "));
    };
    if args.drop_event && !DROPS_AN_EVENT.contains(&scenario.name) {
        bail!("--drop-event works with {} only", DROPS_AN_EVENT.join(", "));
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let lab = Lab::new(args.quick, args.drop_event)?;
    if !args.json {
        println!("scenario {}: {}", scenario.name, scenario.summary);
    }
    let report =
        (scenario.run)(&lab).await.with_context(|| format!("scenario {} could not run", scenario.name))?;
    let plot = args.out.join(format!("{}.svg", scenario.name));
    std::fs::write(
        &plot,
        plot::svg(&format!("capshop scenario {}", scenario.name), &lab.timeline.snapshot()),
    )
    .with_context(|| format!("cannot write {}", plot.display()))?;
    let passed = report.passed();
    if args.json {
        let checks: Vec<Value> =
            report.checks.iter().map(|(what, holds)| json!({ "check": what, "passed": holds })).collect();
        let out = json!({
            "scenario": scenario.name,
            "passed": passed,
            "figures": report.figures,
            "checks": checks,
            "plot": plot.display().to_string(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!();
        print!("{}", report.text());
        println!();
        println!("plot: {}", plot.display());
        println!("{}", if passed { "PASSED" } else { "FAILED" });
    }
    if !passed {
        bail!("scenario {} failed its invariant", scenario.name);
    }
    Ok(())
}
