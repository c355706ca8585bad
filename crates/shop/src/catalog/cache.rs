//! The popularity cache: a small in-process map with a time to live, standing in for a
//! remote cache (think Redis) in front of the ranking behind `GET /popular`. Every call
//! passes the link [`LINK`] and the breaker [`BREAKER`], so it can be cut, slowed or made
//! lossy like a remote one, and `/popular` then degrades to a limited answer at once.
//!
//! One cache belongs to one catalog [`Context`], which keeps it ([`of`]), so chaos
//! controls reach its link from the context alone ([`crate::catalog::cache_link`]); a new
//! context (a restarted service) gets a fresh cache with a healthy link and its breaker
//! registered on the new metrics.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use kit::breaker::{BreakerConfig, CircuitBreaker};
use kit::link::{Direction, Link};
use tokio::time::Instant;

use super::model::Product;
use crate::service::Context;

/// The name of the link between the catalog and its cache.
pub const LINK: &str = "catalog->cache";
/// The name of the breaker guarding the cache (metric label `breaker="cache"`).
pub const BREAKER: &str = "cache";
/// How long a ranking stays cached: `/popular` may lag the quotes by this much.
pub const POPULAR_TTL: Duration = Duration::from_secs(5);

/// A cache is worth a short wait only: open after 3 failures, probe after 5 s, and give
/// a call 100 ms (a healthy in-process call takes microseconds).
pub fn breaker_config() -> BreakerConfig {
    BreakerConfig {
        failure_threshold: 3,
        open_for: Duration::from_secs(5),
        call_timeout: Duration::from_millis(100),
    }
}

/// The cache could not be asked: its link failed, the call timed out or its breaker is open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the cache is unavailable: {0}")]
pub struct CacheUnavailable(pub String);

/// A map whose entries expire after `ttl`, reached through a link and a breaker.
pub struct TtlCache<V> {
    link: Link,
    breaker: CircuitBreaker,
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> TtlCache<V> {
    pub fn new(link: Link, breaker: CircuitBreaker, ttl: Duration) -> Self {
        Self { link, breaker, ttl, entries: Mutex::default() }
    }

    pub fn link(&self) -> &Link {
        &self.link
    }

    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The live value under `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<V>, CacheUnavailable> {
        self.exchange(|entries| {
            let now = Instant::now();
            entries.get(key).filter(|(expires, _)| *expires > now).map(|(_, value)| value.clone())
        })
        .await
    }

    /// Stores `value` under `key` for the cache's time to live; drops expired entries.
    pub async fn put(&self, key: &str, value: V) -> Result<(), CacheUnavailable> {
        self.exchange(|entries| {
            let now = Instant::now();
            entries.retain(|_, (expires, _)| *expires > now);
            entries.insert(key.to_owned(), (now + self.ttl, value));
        })
        .await
    }

    /// Runs `op` on the map as a remote cache would: the request travels out over the
    /// link, the answer travels back in, and the whole exchange goes through the breaker.
    async fn exchange<T>(
        &self,
        op: impl FnOnce(&mut HashMap<String, (Instant, V)>) -> T,
    ) -> Result<T, CacheUnavailable> {
        let call = async {
            self.link.pass(Direction::Out).await?;
            let answer = op(&mut self.entries.lock().unwrap_or_else(PoisonError::into_inner));
            self.link.pass(Direction::In).await?;
            Ok::<_, kit::link::LinkError>(answer)
        };
        self.breaker.call(call).await.map_err(|e| CacheUnavailable(e.to_string()))
    }
}

/// The cache of the ranking served by `GET /popular`.
pub type PopularCache = TtlCache<Vec<Product>>;

/// The popularity cache of `ctx`, kept in the catalog's [`Context::extension`] and made
/// (its breaker watched by `ctx.metrics`) on first use.
pub fn of(ctx: &Context) -> &PopularCache {
    debug_assert_eq!(
        ctx.name,
        crate::service::ServiceName::Catalog,
        "only the catalog has a popularity cache"
    );
    ctx.extension(|| {
        let breaker = CircuitBreaker::new(BREAKER, breaker_config());
        ctx.metrics.watch_breaker(&breaker);
        PopularCache::new(Link::new(LINK), breaker, POPULAR_TTL)
    })
}
