//! `capshop reconcile`: the cross-service checker. It takes the facts every service
//! publishes about its own database ([`crate::contracts::facts`]) and finds where they
//! disagree — pure functions, no I/O; gathering the facts is [`crate::facts`]'s.
//!
//! - [`links`]: broken links (an effect one service recorded and another lacks: an order
//!   confirmed without its reservation, without its authorization, a paid order without a
//!   shipment) and orphans (the reverse: a reservation or an authorization without its
//!   order, a shipment without a confirmed order).
//! - [`replicas`]: every replica record against its source (missing, behind, ahead, or
//!   different at the same version) and the stock of every product at every site.
//! - [`counters`]: search's bestsellers counter against the lines of the orders it counts
//!   (a redelivered OrderPlaced counted twice shows here).
//! - [`streams`]: per stream, the outbox head against the bus head against each
//!   consumer's applied position, and dead letters.
//!
//! Each finding is classed ([`view::View::explain`]): **in flight** when an event
//! committed but not yet applied by the consumer that would resolve it explains it (its
//! stream and first unapplied seq are named), else a **defect**.

mod counters;
mod links;
mod render;
mod replicas;
mod streams;
mod view;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::contracts::facts::ShopFacts;
pub use links::PLACING_MS;
pub use streams::CONSUMERS;

/// What a finding is about, for the counts of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// An effect recorded by one service and missing in another.
    BrokenLink,
    /// State in one service whose origin in another is missing.
    Orphan,
    /// A replica record that disagrees with its source.
    ReplicaMismatch,
    /// Stock that does not add up at a site.
    Stock,
    /// A counter that disagrees with the events it counts (one counted twice, or lost).
    Counter,
    /// Positions of a stream that do not agree (outbox, bus, consumers), dead letters.
    Stream,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Explained by an event committed but not yet applied; it resolves itself.
    InFlight,
    /// No event can explain it.
    Defect,
}

/// The event that explains an in-flight finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    pub stream: String,
    /// The consumer that has not applied it.
    pub consumer: Option<String>,
    /// The first seq of `stream` not yet applied (or the one read after its producer).
    pub seq: u64,
    /// How many events of `stream` are not applied by `consumer`.
    pub unapplied: u64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// e.g. `confirmed_without_reservation`, `replica_behind`, `consumer_behind`.
    pub kind: String,
    pub group: Group,
    /// The keys of what is wrong: `order`, `site`, `replica`, `key`, `stream`, ...
    pub keys: BTreeMap<String, String>,
    pub detail: String,
    pub class: Class,
    pub in_flight: Option<InFlight>,
}

impl Finding {
    fn new(
        kind: &str,
        group: Group,
        keys: &[(&str, &str)],
        detail: String,
        in_flight: Option<InFlight>,
    ) -> Self {
        Self {
            kind: kind.to_owned(),
            group,
            keys: keys.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            detail,
            class: if in_flight.is_some() { Class::InFlight } else { Class::Defect },
            in_flight,
        }
    }
}

/// Every finding, and how many there are of each: `broken_links`, `orphans`,
/// `replica_mismatches`, `stock`, `counters` and `streams` count defects, `in_flight` the findings an
/// unapplied event explains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Report {
    pub broken_links: usize,
    pub orphans: usize,
    pub replica_mismatches: usize,
    pub stock: usize,
    pub counters: usize,
    pub streams: usize,
    pub in_flight: usize,
    pub defects: usize,
    /// What the facts came from: `cut` (a running shop at one consistent cut), `live`
    /// (running parts, one transaction each) or `files`.
    pub source: String,
    /// Parts whose view of the bus is missing, with why.
    pub notes: Vec<String>,
    #[schema(value_type = Vec<Object>)]
    pub findings: Vec<Finding>,
}

impl Report {
    fn of(findings: Vec<Finding>, facts: &ShopFacts) -> Self {
        let defects =
            |group: Group| findings.iter().filter(|f| f.group == group && f.class == Class::Defect).count();
        Self {
            broken_links: defects(Group::BrokenLink),
            orphans: defects(Group::Orphan),
            replica_mismatches: defects(Group::ReplicaMismatch),
            stock: defects(Group::Stock),
            counters: defects(Group::Counter),
            streams: defects(Group::Stream),
            in_flight: findings.iter().filter(|f| f.class == Class::InFlight).count(),
            defects: findings.iter().filter(|f| f.class == Class::Defect).count(),
            source: match (facts.live, facts.cut) {
                (true, _) => "live",
                (false, true) => "cut",
                (false, false) => "files",
            }
            .to_owned(),
            notes: facts.bus.unreachable.clone(),
            findings,
        }
    }

    /// Whether no finding is a defect (exit status 0).
    pub fn is_clean(&self) -> bool {
        self.defects == 0
    }
}

/// Checks every relation between the services' facts.
pub fn check(facts: &ShopFacts) -> Report {
    let view = view::View::of(facts);
    let mut findings = view.missing_parts();
    findings.extend(links::check(&view));
    findings.extend(replicas::check(&view));
    findings.extend(counters::check(&view));
    findings.extend(streams::check(&view));
    Report::of(findings, facts)
}

#[cfg(test)]
mod tests;
