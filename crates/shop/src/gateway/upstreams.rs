//! The instances behind each name under `/api`, and which one a request goes to: round
//! robin over the healthy ones. An instance is marked down when connecting to it fails or
//! its `/health` does not answer 200, and up again when its `/health` does; a request is
//! tried on the next instance when the one it went to could not be reached.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often the instances of a service with several are asked for `/health`.
pub const HEALTH_EVERY: Duration = Duration::from_secs(1);
/// How long a `/health` may take before the instance counts as down.
const HEALTH_TIMEOUT: Duration = Duration::from_millis(800);

/// One process serving a service.
#[derive(Debug)]
pub struct Instance {
    pub url: String,
    /// Where `url` connects: a service of this process there is called directly.
    pub addr: Option<std::net::SocketAddr>,
    down: AtomicBool,
}

impl Instance {
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    pub fn mark(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }
}

/// The instances of one service, taken in turn.
#[derive(Debug)]
struct Pool {
    instances: Vec<Arc<Instance>>,
    next: AtomicUsize,
}

/// Every service's instances.
#[derive(Debug, Default)]
pub struct Upstreams {
    pools: BTreeMap<String, Pool>,
}

impl Upstreams {
    pub fn new(instances: &BTreeMap<String, Vec<String>>) -> Self {
        let pools = instances
            .iter()
            .filter(|(_, urls)| !urls.is_empty())
            .map(|(name, urls)| {
                let instances = urls
                    .iter()
                    .map(|url| {
                        Arc::new(Instance {
                            url: url.clone(),
                            addr: crate::service::local::address_of(url),
                            down: AtomicBool::new(false),
                        })
                    })
                    .collect();
                (name.clone(), Pool { instances, next: AtomicUsize::new(0) })
            })
            .collect();
        Self { pools }
    }

    /// The names requests can go to.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.pools.keys()
    }

    /// The instances of `service` in the order to try them: from the next in turn, the
    /// healthy ones first, then those marked down (they may be back before their check).
    pub fn in_turn(&self, service: &str) -> Option<Vec<Arc<Instance>>> {
        let pool = self.pools.get(service)?;
        let n = pool.instances.len();
        let start = pool.next.fetch_add(1, Ordering::Relaxed);
        let turn = (0..n).map(|i| pool.instances[(start + i) % n].clone());
        let (up, down): (Vec<_>, Vec<_>) = turn.partition(|i| !i.is_down());
        Some(up.into_iter().chain(down).collect())
    }

    /// One instance of each service to ask for what every instance shares (its database's
    /// facts): a healthy one when there is one.
    pub fn one_of_each(&self) -> BTreeMap<String, String> {
        self.pools
            .keys()
            .filter_map(|name| Some((name.clone(), self.in_turn(name)?.first()?.url.clone())))
            .collect()
    }

    /// Checks `/health` of every instance of the services that have several, every
    /// [`HEALTH_EVERY`], until the upstreams are dropped.
    pub fn watch(upstreams: Weak<Upstreams>, client: reqwest::Client) {
        tokio::spawn(async move {
            loop {
                let Some(upstreams) = upstreams.upgrade() else { return };
                let watched = upstreams.pools.values().filter(|p| p.instances.len() > 1);
                let mut checks = tokio::task::JoinSet::new();
                for instance in watched.flat_map(|p| p.instances.iter()).cloned() {
                    let client = client.clone();
                    checks.spawn(async move {
                        let answer = client
                            .get(format!("{}/health", instance.url))
                            .timeout(HEALTH_TIMEOUT)
                            .send()
                            .await;
                        instance.mark(!answer.is_ok_and(|a| a.status().is_success()));
                    });
                }
                checks.join_all().await;
                drop(upstreams);
                tokio::time::sleep(HEALTH_EVERY).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstreams() -> Upstreams {
        let urls = ["http://a", "http://b", "http://c"].map(String::from).to_vec();
        Upstreams::new(&BTreeMap::from([("order".to_owned(), urls)]))
    }

    fn urls(instances: &[Arc<Instance>]) -> Vec<&str> {
        instances.iter().map(|i| i.url.as_str()).collect()
    }

    #[test]
    fn requests_go_round_robin_over_the_instances() {
        let upstreams = upstreams();
        let firsts: Vec<String> =
            (0..6).map(|_| upstreams.in_turn("order").unwrap()[0].url.clone()).collect();
        assert_eq!(firsts, ["http://a", "http://b", "http://c", "http://a", "http://b", "http://c"]);
        assert!(upstreams.in_turn("payment").is_none());
    }

    #[test]
    fn an_instance_marked_down_is_tried_last_and_first_again_once_up() {
        let upstreams = upstreams();
        upstreams.in_turn("order").unwrap()[0].mark(true); // a
        for _ in 0..3 {
            let turn = upstreams.in_turn("order").unwrap();
            assert_eq!(turn.last().unwrap().url, "http://a");
            assert_eq!(turn.len(), 3, "a down instance is still a last resort");
        }
        let turn = upstreams.in_turn("order").unwrap();
        turn.iter().for_each(|i| i.mark(false));
        assert_eq!(urls(&upstreams.in_turn("order").unwrap()), ["http://c", "http://a", "http://b"]);
    }
}
