//! `capshop bench`: the figures of issue 12 in one run, each beside the ceiling it is
//! measured against in the same run.
//!
//! Layout: `ceilings.rs` (raw SQLite batched inserts with capshop's pragmas, an axum hello
//! route), `pipeline.rs` (producer commit → relay → embedded bus → replica applied:
//! throughput and lag at fixed offered rates), `shop.rs` (the whole embedded shop:
//! checkout healthy and during a customer outage, the synchronous design's error ratio,
//! orders end to end), `convergence.rs` (a broker outage under a steady 1,000 events/s),
//! `rss.rs` (peak resident memory), `load.rs` (the one load generator every HTTP figure
//! uses). This file holds the report, the table, and the results log.

mod backends;
mod ceilings;
mod convergence;
mod load;
mod pipeline;
mod rss;
mod shop;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::{Map, Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    Embedded,
    Nats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DbKind {
    Sqlite,
    Postgres,
}

#[derive(Args)]
pub struct BenchArgs {
    /// The bus under measurement.
    #[arg(long, value_enum, default_value_t = BusKind::Embedded)]
    bus: BusKind,
    /// The databases under measurement.
    #[arg(long, value_enum, default_value_t = DbKind::Sqlite)]
    db: DbKind,
    /// Short phases: the whole run in under a minute (for tests and a first look).
    #[arg(long)]
    quick: bool,
    /// Prints the figures as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Where each run is appended as one JSON line (`<date>.jsonl`).
    #[arg(long, default_value = "bench/results")]
    results: PathBuf,
}

/// How long each phase lasts.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Phases {
    /// A throughput or latency measurement.
    #[serde(serialize_with = "seconds")]
    pub measure: Duration,
    /// The broker outage of the convergence figure.
    #[serde(serialize_with = "seconds")]
    pub outage: Duration,
    /// Events committed as fast as possible for the pipeline's highest sustained rate.
    pub pipeline_events: u64,
    /// Concurrent connections of the load generator.
    pub connections: usize,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Phases {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                measure: Duration::from_millis(1500),
                outage: Duration::from_secs(5),
                pipeline_events: 20_000,
                connections: 8,
            }
        } else {
            Self {
                measure: Duration::from_secs(10),
                outage: Duration::from_secs(60),
                pipeline_events: 200_000,
                connections: 8,
            }
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Spread {
    /// The percentiles of `micros` (any order); `None` when there are none.
    pub fn of(micros: &mut [u64]) -> Option<Self> {
        if micros.is_empty() {
            return None;
        }
        micros.sort_unstable();
        let at = |q: f64| {
            let index = ((micros.len() as f64 * q).ceil() as usize).clamp(1, micros.len()) - 1;
            micros[index] as f64 / 1000.0
        };
        Some(Self { p50: at(0.50), p99: at(0.99), max: at(1.0) })
    }

    fn without_max(self) -> Value {
        json!({ "p50": round(self.p50, 3), "p99": round(self.p99, 3) })
    }

    fn with_max(self) -> Value {
        json!({ "p50": round(self.p50, 3), "p99": round(self.p99, 3), "max": round(self.max, 3) })
    }
}

fn round(x: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (x * scale).round() / scale
}

/// The figures of one run; a figure not measured stays `None` and is printed as null.
#[derive(Debug, Default)]
pub struct Figures {
    pub ceiling_events_per_s: Option<f64>,
    pub http_ceiling_rps: Option<f64>,
    pub pipeline_events_per_s: Option<f64>,
    pub lag_ms_1k: Option<Spread>,
    pub lag_ms_10k: Option<Spread>,
    pub checkout_ms_healthy: Option<Spread>,
    pub checkout_ms_outage: Option<Spread>,
    pub checkout_errors_outage: Option<u64>,
    pub sync_design_error_ratio: Option<f64>,
    pub orders_per_s: Option<f64>,
    pub convergence_s: Option<f64>,
    pub peak_rss_mb: Option<f64>,
    /// What the figures are made of (requests/s, counts), for the table and the log.
    pub details: Map<String, Value>,
}

impl Figures {
    /// The object of `--json`: exactly the keys.
    pub fn to_json(&self) -> Value {
        let num = |x: Option<f64>| x.map_or(Value::Null, |x| json!(round(x, 3)));
        json!({
            "ceiling_events_per_s": num(self.ceiling_events_per_s.map(f64::round)),
            "pipeline_events_per_s": num(self.pipeline_events_per_s.map(f64::round)),
            "lag_ms_1k": self.lag_ms_1k.map_or(Value::Null, Spread::with_max),
            "lag_ms_10k": self.lag_ms_10k.map_or(Value::Null, Spread::with_max),
            "checkout_ms_healthy": self.checkout_ms_healthy.map_or(Value::Null, Spread::without_max),
            "checkout_ms_outage": self.checkout_ms_outage.map_or(Value::Null, Spread::without_max),
            "checkout_errors_outage": self.checkout_errors_outage.map_or(Value::Null, |n| json!(n)),
            "sync_design_error_ratio": num(self.sync_design_error_ratio),
            "orders_per_s": num(self.orders_per_s),
            "http_ceiling_rps": num(self.http_ceiling_rps.map(f64::round)),
            "convergence_s": num(self.convergence_s),
            "peak_rss_mb": num(self.peak_rss_mb),
        })
    }

    fn detail(&mut self, name: &str, value: impl Into<Value>) {
        self.details.insert(name.to_owned(), value.into());
    }

    /// The table people read: each figure, and the target beside it.
    fn table(&self) -> String {
        let n = |x: Option<f64>| x.map_or("not measured".to_owned(), |x| format!("{x:.0}"));
        let f = |x: Option<f64>, p: usize| x.map_or("not measured".to_owned(), |x| format!("{x:.p$}"));
        let spread = |s: Option<Spread>, max: bool| {
            s.map_or("not measured".to_owned(), |s| {
                if max {
                    format!("p50 {:.2} / p99 {:.2} / max {:.2} ms", s.p50, s.p99, s.max)
                } else {
                    format!("p50 {:.2} / p99 {:.2} ms", s.p50, s.p99)
                }
            })
        };
        let share = match (self.pipeline_events_per_s, self.ceiling_events_per_s) {
            (Some(p), Some(c)) if c > 0.0 => format!(" ({:.1} % of the ceiling)", 100.0 * p / c),
            _ => String::new(),
        };
        let rows = [
            ("ceiling_events_per_s", n(self.ceiling_events_per_s), "(the ceiling)"),
            ("http_ceiling_rps", n(self.http_ceiling_rps), "(the ceiling)"),
            (
                "pipeline_events_per_s",
                format!("{}{share}", n(self.pipeline_events_per_s)),
                "≥ 30 % of the ceiling",
            ),
            ("lag_ms_1k", spread(self.lag_ms_1k, true), "p50 ≤ 1, p99 ≤ 5 ms"),
            ("lag_ms_10k", spread(self.lag_ms_10k, true), "—"),
            ("checkout_ms_healthy", spread(self.checkout_ms_healthy, false), "—"),
            ("checkout_ms_outage", spread(self.checkout_ms_outage, false), "p99 ≤ 1.2× healthy"),
            (
                "checkout_errors_outage",
                self.checkout_errors_outage.map_or("not measured".into(), |e| e.to_string()),
                "0",
            ),
            ("sync_design_error_ratio", f(self.sync_design_error_ratio, 3), "(the other design)"),
            ("orders_per_s", f(self.orders_per_s, 0), "≥ 2,000"),
            ("convergence_s", f(self.convergence_s, 2), "≤ 3 s (60 s outage)"),
            ("peak_rss_mb", f(self.peak_rss_mb, 1), "≤ 100 MB"),
        ];
        let mut out = format!("{:<26} {:<46} {}\n", "figure", "measured", "target");
        for (name, value, target) in rows {
            out.push_str(&format!("{name:<26} {value:<46} {target}\n"));
        }
        if !self.details.is_empty() {
            out.push_str("\ndetails:\n");
            for (name, value) in &self.details {
                out.push_str(&format!("  {name:<40} {value}\n"));
            }
        }
        out
    }
}

/// The steps of a run, for the progress bar.
const STEPS: u64 = 9;

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let phases = Phases::new(args.quick);
    let dir =
        tempfile::Builder::new().prefix("capshop-bench-").tempdir().context("no temporary directory")?;
    // PostgreSQL runs as an unprivileged user when capshop runs as root: it must reach its data.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let progress = progress_bar(args.json);
    progress.set_message("starting the servers under measurement");
    let backends = backends::Backends::start(dir.path(), args.bus, args.db).await?;
    let mut figures = Figures::default();

    ceilings(&backends, dir.path(), phases, &progress, &mut figures).await?;
    progress.set_message("ceiling: axum hello route");
    let http = ceilings::http_hello(phases).await?;
    figures.http_ceiling_rps = Some(http.requests_per_s());
    figures.detail(
        "http_ceiling_ms",
        Spread::of(&mut http.latencies_us.clone()).map_or(Value::Null, Spread::with_max),
    );
    progress.inc(1);

    progress.set_message("pipeline: highest sustained rate");
    let sustained = pipeline::sustained(&backends, "sustained", phases.pipeline_events).await?;
    figures.pipeline_events_per_s = Some(sustained);
    progress.inc(1);

    for (rate, slot) in [(1_000, &mut figures.lag_ms_1k), (10_000, &mut figures.lag_ms_10k)] {
        progress.set_message(format!("pipeline: lag at {rate} events/s"));
        let lag = pipeline::lag_at(&backends, &format!("lag-{rate}"), rate, phases.measure).await?;
        *slot = Some(lag);
        progress.inc(1);
    }

    if (args.bus, args.db) == (BusKind::Embedded, DbKind::Sqlite) {
        progress.set_message("shop: checkout healthy and with the customer service stopped");
        shop::measure(dir.path(), phases, &progress, &mut figures).await?;
    } else {
        figures.detail(
            "shop",
            "not measured with --bus nats / --db postgres: the shop figures (checkout, orders/s, \
             the whole stack's RSS) are measured on the embedded shop only so far",
        );
        progress.inc(2);
    }

    progress.set_message("convergence after a broker outage");
    let convergence = convergence::after_outage(&backends, phases.outage).await?;
    figures.convergence_s = Some(convergence.seconds);
    figures.detail("convergence_backlog_events", convergence.backlog);
    progress.inc(1);

    if (args.bus, args.db) == (BusKind::Embedded, DbKind::Sqlite) {
        figures.peak_rss_mb = rss::peak_mb();
    }
    progress.finish_and_clear();

    let settings = json!({ "bus": args.bus, "db": args.db, "quick": args.quick, "phases": phases });
    append_result(&args.results, &figures, &settings)?;
    if args.json {
        println!("{}", figures.to_json());
    } else {
        print!("{}", figures.table());
        println!("\nappended to {}", args.results.display());
    }
    Ok(())
}

/// The ceilings: the database's raw batched insert and, with NATS, JetStream's pipelined
/// publish (which `ceiling_events_per_s` is then); the HTTP hello route.
async fn ceilings(
    backends: &backends::Backends,
    dir: &std::path::Path,
    phases: Phases,
    progress: &ProgressBar,
    figures: &mut Figures,
) -> anyhow::Result<()> {
    let rows = match backends.db {
        DbKind::Sqlite => {
            progress.set_message("ceiling: raw batched SQLite inserts");
            ceilings::sqlite_inserts(&dir.join("ceiling.db"), phases.pipeline_events).await?
        }
        DbKind::Postgres => {
            progress.set_message("ceiling: raw batched PostgreSQL inserts");
            let url = backends.store("ceiling", "inserts").await?;
            ceilings::postgres_inserts(&url, phases.pipeline_events).await?
        }
    };
    figures.detail("ceiling_insert_rows_per_s", rows.round());
    figures.ceiling_events_per_s = Some(rows);
    if let Some(nats) = &backends.servers.nats {
        progress.set_message("ceiling: pipelined JetStream publish");
        let (published, consumed) = ceilings::jetstream(nats, phases.pipeline_events).await?;
        figures.detail("ceiling_jetstream_publish_per_s", published.round());
        figures.detail("ceiling_jetstream_consume_per_s", consumed.round());
        figures.ceiling_events_per_s = Some(published);
    }
    progress.inc(1);
    Ok(())
}

/// A bar on a terminal (stderr); hidden when stderr is not one or the output is JSON.
fn progress_bar(json: bool) -> ProgressBar {
    let bar = ProgressBar::new(STEPS);
    if json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed} {msg}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Appends one line: when, which commit, which machine, which settings, the figures.
fn append_result(dir: &std::path::Path, figures: &Figures, settings: &Value) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let now = time::OffsetDateTime::now_utc();
    let date = format!("{:04}-{:02}-{:02}", now.year(), u8::from(now.month()), now.day());
    let line = json!({
        "at": now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "commit": commit(),
        "machine": machine(),
        "settings": settings,
        "figures": figures.to_json(),
        "details": figures.details,
    });
    let path = dir.join(format!("{date}.jsonl"));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot append to {}", path.display()))?;
    std::io::Write::write_all(&mut file, format!("{line}\n").as_bytes())
        .with_context(|| format!("cannot append to {}", path.display()))?;
    Ok(())
}

fn commit() -> Value {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or(Value::Null, |s| Value::String(s.trim().to_owned()))
}

fn machine() -> Value {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_mb = std::fs::read_to_string("/proc/meminfo").ok().and_then(|info| {
        info.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb / 1024)
    });
    json!({ "nproc": cpus, "memory_mb": memory_mb, "os": std::env::consts::OS, "arch": std::env::consts::ARCH })
}
