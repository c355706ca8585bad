//! Calls to a service that runs in this process, without a socket. While a service serves
//! (`run`), its router is listed here under the address it listens on; a caller about to
//! open a connection to that address (the gateway, a [`super::Peer`]) calls the router
//! directly instead: no TCP, no HTTP encoding, no thread hops through the sockets.
//!
//! An address nobody in this process serves — another process (the distributed mode), a
//! service stopped, or one still starting — is not listed, and the caller goes over TCP
//! as before: a stopped service refuses the connection exactly as it did, a starting one's
//! listener queues it. Links and breakers sit in the callers, so faults are unchanged.
//! A listener's address belongs to one process at a time, so a process-wide list keyed
//! by it cannot name another process's service.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, PoisonError, RwLock};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use tower::ServiceExt;

/// Every router served in this process, by the address its service listens on.
static SERVED: LazyLock<RwLock<HashMap<SocketAddr, Arc<Served>>>> = LazyLock::new(Default::default);

/// One service's router while it serves.
struct Served {
    router: Router,
    /// False once the service stops: no new call is let in.
    open: AtomicBool,
    /// Held shared by every call in flight; taken whole to wait for them at the stop.
    in_flight: tokio::sync::RwLock<()>,
}

/// A service's answer to an in-process call, its body read whole (as the callers read
/// an answer over HTTP).
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body, or why it broke off.
    pub body: Result<Bytes, String>,
}

/// The address `url` (`http://127.0.0.1:4101`) connects to, when it is an IP address a
/// service of this process could listen on.
pub fn address_of(url: &str) -> Option<SocketAddr> {
    let url = reqwest::Url::parse(url).ok()?;
    if url.scheme() != "http" {
        return None;
    }
    let ip: std::net::IpAddr = url.host_str()?.trim_matches(['[', ']']).parse().ok()?;
    Some(SocketAddr::new(ip, url.port_or_known_default()?))
}

/// Calls the service serving `addr` in this process with `request`; `None` when none
/// serves there now (not in this process, stopped, or stopping): then go over TCP.
pub async fn call(addr: SocketAddr, request: Request<Body>) -> Option<Answer> {
    let served = SERVED.read().unwrap_or_else(PoisonError::into_inner).get(&addr).cloned()?;
    // A stopping service lets no call in (its writer is queued or holds the lock), as a
    // closed listener lets no connection in.
    let _flight = served.in_flight.try_read().ok()?;
    if !served.open.load(Ordering::Acquire) {
        return None;
    }
    let answer = served.router.clone().oneshot(request).await;
    let (parts, body) = answer.unwrap_or_else(|never| match never {}).into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.map_err(|e| e.to_string());
    Some(Answer { status: parts.status, headers: parts.headers, body })
}

/// A service's router listed under its address while the service serves; closed when
/// the service stops (or this is dropped).
pub struct Serving {
    addr: SocketAddr,
    served: Arc<Served>,
}

impl Serving {
    /// Lists `router` under `addr` (where its service's listener is bound).
    pub fn list(addr: SocketAddr, router: Router) -> Self {
        let served =
            Arc::new(Served { router, open: AtomicBool::new(true), in_flight: tokio::sync::RwLock::new(()) });
        SERVED.write().unwrap_or_else(PoisonError::into_inner).insert(addr, served.clone());
        Self { addr, served }
    }

    /// Lets no new call in: callers go to the address over TCP from now on.
    pub fn close(&self) {
        self.served.open.store(false, Ordering::Release);
        let mut served = SERVED.write().unwrap_or_else(PoisonError::into_inner);
        if served.get(&self.addr).is_some_and(|listed| Arc::ptr_eq(listed, &self.served)) {
            served.remove(&self.addr);
        }
    }

    /// Closes, then waits for the calls in flight to be answered (as a graceful shutdown
    /// waits for the requests in flight).
    pub async fn drain(&self) {
        self.close();
        drop(self.served.in_flight.write().await);
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::routing::get;
    use kit::link::{Faults, Link};
    use tokio::sync::Notify;

    use super::*;
    use crate::service::peer::{Peer, PeerError, default_breaker};

    /// An address nothing listens on, so only an in-process call can be answered there.
    async fn unheard_address() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    }

    fn request(path: &str) -> Request<Body> {
        Request::builder().uri(path).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn a_peer_reaches_a_service_of_this_process_without_a_connection_and_through_its_link() {
        let addr = unheard_address().await;
        let router =
            Router::new().route("/answer", get(|| async { axum::Json(serde_json::json!({ "n": 42 })) }));
        let link = Link::new("test->answer");
        let peer = Peer::new("answer", &format!("http://{addr}"), link.clone(), default_breaker());
        let serving = Serving::list(addr, router);

        let answer: serde_json::Value = peer.get("/answer").await.expect("answered in process");
        assert_eq!(answer["n"], 42);
        link.set(Faults { cut_out: true, ..Faults::default() });
        assert!(matches!(peer.get::<serde_json::Value>("/answer").await, Err(PeerError::Unavailable { .. })));
        link.heal();

        drop(serving);
        let refused = peer.get::<serde_json::Value>("/answer").await;
        assert!(
            matches!(&refused, Err(PeerError::Unavailable { reason, .. }) if reason.contains("error sending request")),
            "once it stops, the address is tried over TCP and refuses: {refused:?}"
        );
    }

    #[tokio::test]
    async fn a_stopping_service_lets_no_new_call_in_and_waits_for_those_in_flight() {
        let addr = unheard_address().await;
        let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let (e, r) = (entered.clone(), release.clone());
        let router = Router::new().route(
            "/slow",
            get(move || {
                let (e, r) = (e.clone(), r.clone());
                async move {
                    e.notify_one();
                    r.notified().await;
                    "done"
                }
            }),
        );
        let serving = Arc::new(Serving::list(addr, router));
        let in_flight = tokio::spawn(call(addr, request("/slow")));
        entered.notified().await;

        let draining = tokio::spawn({
            let serving = serving.clone();
            async move { serving.drain().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!draining.is_finished(), "the stop waits for the call in flight");
        assert!(call(addr, request("/slow")).await.is_none(), "a stopping service lets no new call in");

        release.notify_one();
        let answer = in_flight.await.unwrap().expect("the call in flight is answered");
        assert_eq!((answer.status, answer.body.unwrap()), (StatusCode::OK, Bytes::from("done")));
        tokio::time::timeout(Duration::from_secs(5), draining).await.expect("drained").unwrap();
    }
}
