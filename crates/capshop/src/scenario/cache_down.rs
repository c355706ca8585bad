//! Scenario "cache down" (seed 003): the catalog's popularity cache fails (its link is
//! cut). `GET /popular` degrades at once to `limited: true`; nothing else fails. After
//! the link heals, popular products come back in full.
//!
//! Then, when `redis-server` is on PATH, the same on a real Redis: a catalog with its
//! cache on a Redis of its own under concurrent `/popular` load, Redis SIGKILLed, once
//! with the bulkhead and once without, reporting the cache hit ratio, the database reads
//! per second that stood in for the cache, and the share of limited answers.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::json;
use shop::chaos::CACHE;
use shop::service::Choices;
use tokio::time::Instant;

use super::Report;
use super::lab::{Lab, LabShop, Load};
use super::timeline::ratio;

/// Everything else a shopper does: browse, check out, place the order.
async fn shop_around(shop: &LabShop, worker: usize, n: u64) -> bool {
    let customer = ["c-ada", "c-bob"][worker % 2];
    let products = shop.get("/api/catalog/products").await;
    let (cart, placed) = shop.checkout(customer, &format!("p-{:03}", 1 + n % 20), json!({})).await;
    products.ok() && cart.ok() && placed.status == 201
}

pub async fn run(lab: &Lab) -> anyhow::Result<Report> {
    let shop = lab.shop("shop", Choices::default()).await?;
    let limited = Arc::new(Mutex::new(Vec::<(f64, bool)>::new()));
    let popular = Load::start(&lab.timeline, "popular", 1, &shop, {
        let (limited, timeline) = (limited.clone(), lab.timeline.clone());
        move |shop, _, _| {
            let (limited, timeline) = (limited.clone(), timeline.clone());
            async move {
                let started = timeline.now();
                let answer = shop.get("/api/catalog/popular").await;
                let flag = answer.body["limited"] == true;
                limited.lock().unwrap_or_else(PoisonError::into_inner).push((started, flag));
                answer.ok()
            }
        }
    });
    let others = Load::start(&lab.timeline, "everything else", 2, &shop, |shop, worker, n| async move {
        shop_around(&shop, worker, n).await
    });
    tokio::time::sleep(lab.phase(0.5, 2.0)).await;
    shop.shop.chaos.cut("catalog", CACHE, false)?;
    let from = lab.timeline.fault_begins("catalog cache cut");
    tokio::time::sleep(lab.phase(1.5, 6.0)).await;
    let to = lab.timeline.now();
    shop.shop.chaos.heal("catalog", CACHE)?;
    lab.timeline.fault_ends();
    let healed = Instant::now();
    let mut recovered_after = None;
    while recovered_after.is_none() && healed.elapsed() < Duration::from_secs(30) {
        let last = limited.lock().unwrap_or_else(PoisonError::into_inner).last().copied();
        if last.is_some_and(|(t, flag)| t > to && !flag) {
            recovered_after = Some(healed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    popular.stop().await;
    others.stop().await;
    shop.converge(Duration::from_secs(60)).await?;
    let lost = shop.lost().await?;
    shop.stop().await?;

    let flags: Vec<bool> = limited
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|(t, _)| *t >= from && *t <= to)
        .map(|(_, flag)| *flag)
        .collect();
    let limited_ratio =
        if flags.is_empty() { 0.0 } else { flags.iter().filter(|f| **f).count() as f64 / flags.len() as f64 };
    let popular_ok = ratio(&lab.timeline.attempts("popular", from, to));
    let others_ok = ratio(&lab.timeline.attempts("everything else", from, to));
    let mut report = Report::default();
    report.line(format!("popular requests while the cache was cut  {}", flags.len()));
    report
        .line(format!("  answered                                {:.1}%", popular_ok.unwrap_or(0.0) * 100.0));
    report.line(format!("  limited: true                           {:.1}%", limited_ratio * 100.0));
    report.line(format!(
        "everything else meanwhile (browse, order) {} calls, {:.1}% succeeded",
        lab.timeline.attempts("everything else", from, to).len(),
        others_ok.unwrap_or(0.0) * 100.0
    ));
    report.line(format!(
        "popular in full again after the heal      {}",
        recovered_after.map_or("never".into(), |d| format!(
            "{:.3} s (its breaker probes 5 s after it opened)",
            d.as_secs_f64()
        ))
    ));
    report.line(format!("events lost                               {}", lost.lost));
    report.figure("popular_requests", flags.len());
    report.figure("limited_ratio", limited_ratio);
    report.figure("popular_success_ratio", popular_ok.unwrap_or(0.0));
    report.figure("other_success_ratio", others_ok.unwrap_or(0.0));
    report.figure("recovered_after_s", recovered_after.map_or(-1.0, |d| d.as_secs_f64()));
    report.check(
        "every popular request during the cut was answered, limited",
        popular_ok == Some(1.0) && limited_ratio == 1.0,
    );
    report.check("nothing else failed", others_ok == Some(1.0));
    report.check("popular products came back in full after the heal", recovered_after.is_some());
    report.losses(&lost);
    match kit::servers::on_path("redis-server") {
        Some(binary) => on_redis(lab, &binary, &mut report).await?,
        None => report.line(format!(
            "on Redis: not run, redis-server is not on PATH ({})",
            kit::servers::REDIS_INSTALL
        )),
    }
    Ok(report)
}

/// How many clients ask `/popular` at once in the Redis part: more than the bulkhead lets
/// through, so its limit shows.
const REDIS_WORKERS: usize = 16;

/// A catalog alone, its cache on a redis-server of its own.
struct RedisCatalog {
    redis: std::process::Child,
    binary: std::path::PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    base: String,
    ctx: Arc<shop::service::Context>,
    shutdown: tokio_util::sync::CancellationToken,
}

impl RedisCatalog {
    async fn start(binary: &std::path::Path) -> anyhow::Result<Self> {
        use shop::service::{Part, ServiceName};
        let dir = tempfile::Builder::new().prefix("capshop-cache-down-").tempdir()?;
        let port = kit::servers::free_port()?;
        let redis = spawn_redis(binary, port, dir.path()).await?;
        let bus = kit::bus::connect(&format!("embedded:{}", dir.path().join("bus.db").display())).await?;
        let part = Part::Service(ServiceName::Catalog);
        let store_url = format!("sqlite:{}", dir.path().join("catalog.db").display());
        let url = format!("redis://127.0.0.1:{port}");
        let wired = shop::wiring::Wiring {
            part,
            store_url: &store_url,
            bus,
            peer_urls: &std::collections::BTreeMap::new(),
            admin_token: "scenario-admin-token".into(),
            choices: Choices::default(),
            cache_url: Some(&url),
            pause: kit::pause::Pause::new(),
        }
        .open()
        .await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let shutdown = tokio_util::sync::CancellationToken::new();
        tokio::spawn(shop::wiring::run(part, wired.ctx.clone(), listener, shutdown.clone()));
        super::lab::until("the catalog on Redis answers", Duration::from_secs(30), || {
            let health = format!("{base}/health");
            async move { Ok(reqwest::get(health).await.ok().filter(|r| r.status().is_success()).map(|_| ())) }
        })
        .await?;
        let binary = binary.to_owned();
        Ok(Self { redis, binary, port, dir, base, ctx: wired.ctx, shutdown })
    }

    fn cache(&self) -> &shop::catalog::cache::PopularCache {
        shop::catalog::cache::of(&self.ctx)
    }

    fn kill_redis(&mut self) {
        let _ = self.redis.kill();
        let _ = self.redis.wait();
    }

    async fn restart_redis(&mut self) -> anyhow::Result<()> {
        self.kill_redis();
        self.redis = spawn_redis(&self.binary, self.port, self.dir.path()).await?;
        Ok(())
    }
}

impl Drop for RedisCatalog {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.kill_redis();
    }
}

/// Starts redis-server as `up --distributed` does and waits until it answers PING.
async fn spawn_redis(
    binary: &std::path::Path,
    port: u16,
    dir: &std::path::Path,
) -> anyhow::Result<std::process::Child> {
    let child = std::process::Command::new(binary)
        .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    super::lab::until("redis-server answers PING", Duration::from_secs(30), || async move {
        let answers = tokio::task::spawn_blocking(move || crate::distributed::redis_answers(port)).await;
        Ok(answers.unwrap_or(false).then_some(()))
    })
    .await?;
    Ok(child)
}

/// What `/popular` answered during one phase of load.
#[derive(Default, Clone, Copy)]
struct Tally {
    answers: u64,
    failed: u64,
    limited: u64,
}

/// Asks `/popular` from [`REDIS_WORKERS`] clients at once for `length`.
async fn load(base: &str, length: Duration) -> Tally {
    let client = reqwest::Client::new();
    let until = Instant::now() + length;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..REDIS_WORKERS {
        let (client, url) = (client.clone(), format!("{base}/popular"));
        workers.spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < until {
                let answer = client.get(&url).send().await;
                let body = match answer {
                    Ok(r) if r.status().is_success() => r.json::<serde_json::Value>().await.ok(),
                    _ => None,
                };
                tally.answers += 1;
                match body {
                    Some(body) => tally.limited += u64::from(body["limited"] == true),
                    None => tally.failed += 1,
                }
            }
            tally
        });
    }
    let mut total = Tally::default();
    while let Some(Ok(t)) = workers.join_next().await {
        (total.answers, total.failed, total.limited) =
            (total.answers + t.answers, total.failed + t.failed, total.limited + t.limited);
    }
    total
}

/// One run on Redis: warm (hits), then Redis killed (the fallback). Answers the hit
/// ratio while Redis was up, the database reads per second and the share of answers
/// given at once without one while it was down, and what `/popular` answered meanwhile.
async fn redis_outage(catalog: &mut RedisCatalog, lab: &Lab) -> (f64, f64, f64, Tally) {
    let cache = catalog.cache();
    let (hits, misses) = (cache.metrics.hits.get(), cache.metrics.misses.get());
    load(&catalog.base, lab.phase(0.5, 2.0)).await;
    let cache = catalog.cache();
    let (hits, misses) = (cache.metrics.hits.get() - hits, cache.metrics.misses.get() - misses);
    let hit_ratio = if hits + misses == 0 { 0.0 } else { hits as f64 / (hits + misses) as f64 };
    catalog.kill_redis();
    let cache = catalog.cache();
    let (fallbacks, limited) = (cache.metrics.fallbacks.get(), cache.metrics.limited.get());
    let started = Instant::now();
    let tally = load(&catalog.base, lab.phase(1.5, 5.0)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let cache = catalog.cache();
    let db_per_s = (cache.metrics.fallbacks.get() - fallbacks) as f64 / elapsed;
    let at_once = cache.metrics.limited.get() - limited;
    let at_once_ratio = if tally.answers == 0 { 0.0 } else { at_once as f64 / tally.answers as f64 };
    (hit_ratio, db_per_s, at_once_ratio, tally)
}

/// The Redis part of the scenario (see the module's doc).
async fn on_redis(lab: &Lab, binary: &std::path::Path, report: &mut Report) -> anyhow::Result<()> {
    let mut guarded = RedisCatalog::start(binary).await?;
    let (hit_ratio, db_guarded, at_once_guarded, down) = redis_outage(&mut guarded, lab).await;
    guarded.restart_redis().await?;
    let healed = Instant::now();
    let client = reqwest::Client::new();
    let mut recovered_after = None;
    while recovered_after.is_none() && healed.elapsed() < Duration::from_secs(30) {
        let answer = client.get(format!("{}/popular", guarded.base)).send().await;
        if let Ok(answer) = answer
            && answer.json::<serde_json::Value>().await.is_ok_and(|body| body["limited"] == false)
        {
            recovered_after = Some(healed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(guarded);

    let mut unguarded = RedisCatalog::start(binary).await?;
    // Without the bulkhead: as many database reads at once as there are requests.
    unguarded.cache().bulkhead.add_permits(REDIS_WORKERS * 1024);
    let (_, db_unguarded, at_once_unguarded, down_unguarded) = redis_outage(&mut unguarded, lab).await;
    drop(unguarded);

    let limit = shop::catalog::cache::FALLBACK_LIMIT;
    let limited_ratio = if down.answers == 0 { 0.0 } else { down.limited as f64 / down.answers as f64 };
    report.line(format!("on a real Redis, {REDIS_WORKERS} clients asking /popular at once:"));
    report.line(format!("  cache hit ratio while Redis was up         {:.1}%", hit_ratio * 100.0));
    report.line(format!(
        "  Redis SIGKILLed: database reads/s for /popular  {db_guarded:.0} with the bulkhead ({limit} at once), \
         {db_unguarded:.0} without"
    ));
    report.line(format!(
        "  answers limited: true                      {:.1}% ({} of {}; {} failed)",
        limited_ratio * 100.0,
        down.limited,
        down.answers,
        down.failed
    ));
    report.line(format!(
        "  answered at once, no database read         {:.1}% with the bulkhead, {:.1}% without",
        at_once_guarded * 100.0,
        at_once_unguarded * 100.0
    ));
    report.line(format!(
        "  popular in full again after Redis restarted {}",
        recovered_after.map_or("never".into(), |d| format!("{:.3} s (the cache breaker probes 5 s after it opened)", d.as_secs_f64()))
    ));
    report.figure("redis_hit_ratio", hit_ratio);
    report.figure("redis_db_reads_per_s_bulkhead", db_guarded);
    report.figure("redis_db_reads_per_s_unguarded", db_unguarded);
    report.figure("redis_limited_ratio", limited_ratio);
    report.figure("redis_at_once_ratio_bulkhead", at_once_guarded);
    report.figure("redis_at_once_ratio_unguarded", at_once_unguarded);
    report.figure("redis_recovered_after_s", recovered_after.map_or(-1.0, |d| d.as_secs_f64()));
    report.check("on Redis, popular was served from Redis while it was up", hit_ratio > 0.0);
    report.check(
        "on Redis, every popular request while Redis was down was answered, limited",
        down.answers > 0 && down.failed == 0 && down.limited == down.answers && down_unguarded.failed == 0,
    );
    report.check("on Redis, popular came back in full after Redis restarted", recovered_after.is_some());
    Ok(())
}
