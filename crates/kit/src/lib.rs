//! capshop-kit: the event plumbing of services that stay available through failures.
//! It knows nothing of shops.
//!
//! # Layout
//!
//! The event path, in the order an event travels it:
//! - [`envelope`]: the event envelope (id, stream, seq, kind, key, version, schema, payload)
//!   and [`schema`]: payload schema versions and upcasters.
//! - [`store`]: a database handle where a transaction is one closure on the database's own
//!   thread; SQLite on rusqlite or PostgreSQL on the `postgres` crate, chosen by URL scheme.
//! - [`outbox`]: events appended in the caller's transaction, with a per-stream `seq`
//!   contiguous in commit order.
//! - [`relay`]: moves committed outbox events to the bus, in batches, at least once.
//! - [`bus`]: the bus trait, the embedded durable log and the NATS JetStream bus
//!   (`bus::nats`).
//! - [`consumer`]: applies each event exactly once (inbox in the same transaction),
//!   retries with backoff, dead letters; [`inbox`]: which applied ids dedup still needs,
//!   and pruning the rest; [`replica`]: the version gate and waiting for a
//!   [`token::ConsistencyToken`].
//!
//! Around it:
//! - [`breaker`]: the circuit breaker of every synchronous call.
//! - [`link`]: the seam where faults are injected between a service and the bus.
//! - [`metrics`]: lag, backlog and dead letters as Prometheus metrics (`capshop_*`).
//! - [`crashpoint`]: named points where a test process kills itself, for crash tests.
//! - [`canary`]: deliberate bugs (feature `canary` only) that `capshop torture` must catch.
//! - [`servers`]: the server programs run beside capshop (PostgreSQL, nats-server): found
//!   on PATH, on free ports, as the account PostgreSQL may run as.
//! - [`clock`]: wall-clock milliseconds on `tokio::time`, so paused-time tests hold.
//!
//! Test support, compiled only with the `test-support` feature (which the workspace's
//! dev-dependencies turn on) or for the kit's own unit tests:
//! - `bus::conformance`: the one suite every bus implementation passes
//!   (`bus_conformance_tests!`).
//! - `testserver`: real servers for tests — their binaries (skipped loudly, never in CI),
//!   `PgServer` (a PostgreSQL server of the test's own) and `NatsServer` (a nats-server
//!   that can be killed and restarted).

pub mod backoff;
pub mod breaker;
pub mod bus;
pub mod canary;
pub mod clock;
pub mod consumer;
pub mod crashpoint;
#[cfg(any(test, feature = "test-support"))]
pub mod delivery;
pub mod envelope;
pub mod inbox;
pub mod lag;
pub mod link;
pub mod metrics;
pub mod outbox;
pub mod pause;
pub mod relay;
pub mod replica;
pub mod schema;
pub mod servers;
pub mod store;
#[cfg(test)]
mod testkit;
#[cfg(any(test, feature = "test-support"))]
pub mod testserver;
pub mod token;
