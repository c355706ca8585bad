//! capshop-shop: the seven services of DESIGN §1 on the event kit.
//!
//! # Layout
//!
//! - [`contracts`]: what each service publishes to the others — event kinds, payloads
//!   and their schema versions, token scopes, synchronous DTOs; services depend on these,
//!   on [`service`] and on the kit, never on each other.
//! - [`service`]: what every service shares — its context, common routes, problem+json
//!   errors, peer calls through links and breakers, and `run`.
//! - [`launch`]: the embedded shop — every service in one process, the bus, the gateway;
//!   [`stores`]: where the services' databases live (SQLite files or PostgreSQL).
//! - [`wiring`]: how one service is wired (links, peers, context, its `run`), shared by
//!   [`launch`] and [`serve`] (the distributed mode: one service per process).
//! - [`reconcile`]: the cross-service checker, pure functions over the facts each service
//!   publishes about its own database ([`contracts::facts`]); [`facts`] gathers them, from
//!   a stopped shop's files or from the running parts' `/admin/facts`.
//! - [`backup`]: consistent backups of every database at one cut while writes go on,
//!   their certificate and manifest, and restore (`/admin/backups`).
//! - [`chaos`]: faults on purpose — the links and services of a running shop, and the
//!   gateway's `/admin/chaos` routes that drive them; [`topology`]: the shop as the graph
//!   the dashboard draws (`/admin/topology`), in either mode.
//! - One folder per service, each with the same rooms: `model.rs` (validated domain
//!   types), `store.rs` (its SQL), `http.rs` (routes, DTO ↔ domain), `events.rs` (what it
//!   publishes and how it applies what it consumes).
//! - [`inventory`] runs as two sites (dc1, dc2) and has more rooms for that: `sites.rs`
//!   (naming, routing, modes), `merge.rs` (commutative counting, the compensation rule),
//!   `agreement.rs` (cp: the other site acknowledges a reservation; ap: the arbiter site
//!   decides provisional ones) and `audit.rs` (scenario 6's figures).

pub mod backup;
pub mod catalog;
pub mod chaos;
pub mod contracts;
pub mod customer;
pub mod facts;
pub mod gateway;
pub mod inventory;
pub mod launch;
pub mod order;
pub mod payment;
pub mod reconcile;
pub mod search;
pub mod serve;
pub mod service;
pub mod shipping;
pub mod stores;
pub mod topology;
pub mod wiring;
