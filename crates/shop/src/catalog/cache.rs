//! The popularity cache in front of the ranking behind `GET /popular`, in one of two
//! places chosen by URL, as stores and buses are:
//!
//! - `memory` (the default, and the embedded shop's): a small map with a time to live in
//!   this process, standing in for a remote cache;
//! - `redis://HOST:PORT` (the distributed mode): a real Redis, reached over one
//!   multiplexed connection that reconnects by itself, with short timeouts.
//!
//! Either way every call passes the link [`LINK`] and the breaker [`BREAKER`], so chaos
//! can cut, slow or make it lossy, and a dead Redis costs a request at most the breaker's
//! call timeout (nothing at all once the breaker is open).
//!
//! When the cache cannot be asked, `/popular` ranks from the database behind a bulkhead
//! ([`FALLBACK_LIMIT`] concurrent reads, the rest refused at once) and a breaker of its
//! own ([`FALLBACK_BREAKER`]); beyond those it answers at once with the last ranking it
//! saw (stale) or none. See [`super::http`] and docs/shop.md.
//!
//! One cache belongs to one catalog [`Context`], which keeps it ([`of`]), so chaos
//! controls reach its link from the context alone ([`crate::catalog::cache_link`]); a new
//! context (a restarted service) gets a fresh cache with a healthy link and its breakers
//! registered on the new metrics.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use kit::breaker::{BreakerConfig, CircuitBreaker};
use kit::link::{Direction, Link};
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::model::Product;
use crate::service::Context;

/// The name of the link between the catalog and its cache.
pub const LINK: &str = "catalog->cache";
/// The name of the breaker guarding the cache (metric label `breaker="cache"`).
pub const BREAKER: &str = "cache";
/// The name of the breaker guarding the database reads made when the cache fails.
pub const FALLBACK_BREAKER: &str = "popular-db";
/// How many database reads may stand in for the cache at once; more are refused at once.
pub const FALLBACK_LIMIT: usize = 4;
/// How long a ranking stays cached: `/popular` may lag the quotes by this much.
pub const POPULAR_TTL: Duration = Duration::from_secs(5);
/// How long Redis may take to connect or answer before the call counts as failed.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(100);

/// A cache is worth a short wait only: open after 3 failures, probe after 5 s, and give
/// a call 100 ms (a healthy in-process call takes microseconds, a Redis one well under a
/// millisecond on a LAN).
pub fn breaker_config() -> BreakerConfig {
    BreakerConfig {
        failure_threshold: 3,
        open_for: Duration::from_secs(5),
        call_timeout: Duration::from_millis(100),
    }
}

/// The database reads standing in for the cache: open after 3 failures or slow reads
/// (500 ms), so a struggling database is left alone for 5 s rather than piled on.
pub fn fallback_breaker_config() -> BreakerConfig {
    BreakerConfig {
        failure_threshold: 3,
        open_for: Duration::from_secs(5),
        call_timeout: Duration::from_millis(500),
    }
}

/// The cache could not be asked: its link failed, the call timed out or its breaker is open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the cache is unavailable: {0}")]
pub struct CacheUnavailable(pub String);

/// A cache URL that names no cache capshop knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the cache URL {url:?} is not usable: {reason}; use memory or redis://HOST:PORT")]
pub struct BadCacheUrl {
    pub url: String,
    pub reason: String,
}

/// Where the entries live.
enum Backend<V> {
    Memory(Mutex<HashMap<String, (Instant, V)>>),
    Redis(redis::aio::ConnectionManager),
}

/// The Redis client `url` names, or `None` for this process's memory (`None`, `memory`).
fn parse(url: Option<&str>) -> Result<Option<redis::Client>, BadCacheUrl> {
    let url = url.map(str::trim).filter(|u| !u.is_empty()).unwrap_or("memory");
    if url == "memory" {
        return Ok(None);
    }
    let bad = |reason: String| BadCacheUrl { url: url.to_owned(), reason };
    if !url.starts_with("redis://") {
        return Err(bad("it is neither memory nor redis://".into()));
    }
    redis::Client::open(url).map(Some).map_err(|e| bad(e.to_string()))
}

impl<V> Backend<V> {
    /// The backend `url` names (see [`parse`]).
    fn open(url: Option<&str>) -> Result<Self, BadCacheUrl> {
        let Some(client) = parse(url)? else {
            return Ok(Self::Memory(Mutex::default()));
        };
        // Lazy: the catalog starts while Redis is down and connects when it is back.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager = client
            .get_connection_manager_lazy(config)
            .map_err(|e| BadCacheUrl { url: url.unwrap_or_default().to_owned(), reason: e.to_string() })?;
        Ok(Self::Redis(manager))
    }
}

/// Entries that expire after `ttl`, kept in memory or in Redis, reached through a link
/// and a breaker.
pub struct TtlCache<V> {
    link: Link,
    breaker: CircuitBreaker,
    ttl: Duration,
    backend: Backend<V>,
}

impl<V: Clone + Serialize + DeserializeOwned> TtlCache<V> {
    /// An in-process cache.
    pub fn new(link: Link, breaker: CircuitBreaker, ttl: Duration) -> Self {
        Self { link, breaker, ttl, backend: Backend::Memory(Mutex::default()) }
    }

    /// The cache `url` names (`memory`, `redis://HOST:PORT`; `None` is memory).
    pub fn open(
        url: Option<&str>,
        link: Link,
        breaker: CircuitBreaker,
        ttl: Duration,
    ) -> Result<Self, BadCacheUrl> {
        Ok(Self { link, breaker, ttl, backend: Backend::open(url)? })
    }

    pub fn link(&self) -> &Link {
        &self.link
    }

    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// Whether the entries live in Redis.
    pub fn is_remote(&self) -> bool {
        matches!(self.backend, Backend::Redis(_))
    }

    /// The live value under `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<V>, CacheUnavailable> {
        self.exchange(async {
            match &self.backend {
                Backend::Memory(entries) => {
                    let now = Instant::now();
                    let entries = entries.lock().unwrap_or_else(PoisonError::into_inner);
                    Ok(entries.get(key).filter(|(expires, _)| *expires > now).map(|(_, value)| value.clone()))
                }
                Backend::Redis(manager) => {
                    let mut connection = manager.clone();
                    let text: Option<String> = redis::cmd("GET")
                        .arg(key)
                        .query_async(&mut connection)
                        .await
                        .map_err(|e| format!("redis GET: {e}"))?;
                    // An entry this version cannot read is a miss: the ranking is made again.
                    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
                }
            }
        })
        .await
    }

    /// Stores `value` under `key` for the cache's time to live (memory: drops expired entries).
    pub async fn put(&self, key: &str, value: V) -> Result<(), CacheUnavailable> {
        self.exchange(async {
            match &self.backend {
                Backend::Memory(entries) => {
                    let now = Instant::now();
                    let mut entries = entries.lock().unwrap_or_else(PoisonError::into_inner);
                    entries.retain(|_, (expires, _)| *expires > now);
                    entries.insert(key.to_owned(), (now + self.ttl, value));
                    Ok(())
                }
                Backend::Redis(manager) => {
                    let text = serde_json::to_string(&value).map_err(|e| e.to_string())?;
                    let mut connection = manager.clone();
                    redis::cmd("SET")
                        .arg(key)
                        .arg(text)
                        .arg("PX")
                        .arg(u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX))
                        .query_async::<()>(&mut connection)
                        .await
                        .map_err(|e| format!("redis SET: {e}"))
                }
            }
        })
        .await
    }

    /// Runs `op` as a remote call: the request travels out over the link, the answer
    /// travels back in, and the whole exchange goes through the breaker.
    async fn exchange<T>(&self, op: impl Future<Output = Result<T, String>>) -> Result<T, CacheUnavailable> {
        let call = async {
            self.link.pass(Direction::Out).await.map_err(|e| e.to_string())?;
            let answer = op.await?;
            self.link.pass(Direction::In).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(answer)
        };
        self.breaker.call(call).await.map_err(|e| CacheUnavailable(e.to_string()))
    }
}

/// What `/popular` counts (Prometheus, on the catalog's `/metrics`).
#[derive(Default)]
pub struct PopularMetrics {
    /// Rankings served from the cache.
    pub hits: Counter,
    /// Cache asked, nothing there: ranked by the database and cached.
    pub misses: Counter,
    /// Cache unavailable: ranked by the database behind the bulkhead.
    pub fallbacks: Counter,
    /// Answered at once with `limited: true` and no database read.
    pub limited: Counter,
}

/// The catalog's popularity cache with what stands in when it fails.
pub struct PopularCache {
    pub cache: TtlCache<Vec<Product>>,
    /// Guards the database reads made when the cache fails.
    pub fallback_breaker: CircuitBreaker,
    /// At most [`FALLBACK_LIMIT`] such reads at once.
    pub bulkhead: Semaphore,
    /// The last ranking made, served (stale) when neither cache nor database may be asked.
    pub last: Mutex<Option<Vec<Product>>>,
    pub metrics: PopularMetrics,
}

impl std::ops::Deref for PopularCache {
    type Target = TtlCache<Vec<Product>>;
    fn deref(&self) -> &Self::Target {
        &self.cache
    }
}

impl PopularCache {
    fn make(ctx: &Context, url: Option<&str>) -> Result<Self, BadCacheUrl> {
        let backend = Backend::open(url)?;
        let breaker = CircuitBreaker::new(BREAKER, breaker_config());
        ctx.metrics.watch_breaker(&breaker);
        let fallback_breaker = CircuitBreaker::new(FALLBACK_BREAKER, fallback_breaker_config());
        ctx.metrics.watch_breaker(&fallback_breaker);
        let metrics = PopularMetrics::default();
        {
            let mut registry = ctx.registry.lock().unwrap_or_else(PoisonError::into_inner);
            registry.register(
                "capshop_popular_cache_hits",
                "GET /popular answers served from the popularity cache",
                metrics.hits.clone(),
            );
            registry.register(
                "capshop_popular_cache_misses",
                "GET /popular cache misses: ranked by the database, then cached",
                metrics.misses.clone(),
            );
            registry.register(
                "capshop_popular_db_fallbacks",
                "GET /popular rankings read from the database because the cache was unavailable",
                metrics.fallbacks.clone(),
            );
            registry.register(
                "capshop_popular_limited",
                "GET /popular answers given at once with limited: true (bulkhead full or its breaker open)",
                metrics.limited.clone(),
            );
        }
        Ok(Self {
            cache: TtlCache { link: Link::new(LINK), breaker, ttl: POPULAR_TTL, backend },
            fallback_breaker,
            bulkhead: Semaphore::new(FALLBACK_LIMIT),
            last: Mutex::new(None),
            metrics,
        })
    }

    /// Remembers `ranking` as the last one made.
    pub fn remember(&self, ranking: &[Product]) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(ranking.to_vec());
    }

    /// The last ranking made, if any (stale).
    pub fn stale(&self) -> Option<Vec<Product>> {
        self.last.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Makes the popularity cache of `ctx` on the cache `url` names (`None`: in memory).
/// Call it before anything asks [`of`]; once made, the cache stays as it is.
pub fn open<'a>(ctx: &'a Context, url: Option<&str>) -> Result<&'a PopularCache, BadCacheUrl> {
    let mut failed = None;
    let cache = ctx.extension(|| match PopularCache::make(ctx, url) {
        Ok(cache) => cache,
        Err(e) => {
            failed = Some(e);
            PopularCache::make(ctx, None).expect("the in-memory cache always opens")
        }
    });
    failed.map_or(Ok(cache), Err)
}

/// Checks a cache URL without opening anything (for settings given at start).
pub fn check_url(url: &str) -> Result<(), BadCacheUrl> {
    parse(Some(url)).map(|_| ())
}

/// The popularity cache of `ctx`, kept in the catalog's [`Context::extension`] and made
/// in memory on first use unless [`open`] made it first.
pub fn of(ctx: &Context) -> &PopularCache {
    debug_assert_eq!(
        ctx.name,
        crate::service::ServiceName::Catalog,
        "only the catalog has a popularity cache"
    );
    ctx.extension(|| PopularCache::make(ctx, None).expect("the in-memory cache always opens"))
}
