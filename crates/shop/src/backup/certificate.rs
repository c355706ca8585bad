//! The certificate a consistent backup must pass before it is called good, checked on the
//! copies themselves (after the bus copy was trimmed):
//! - every outbox holds exactly the seqs above its relayed position, with no gap;
//! - no consumer applied an event its producer had not committed (applied ≤ committed);
//! - every event a consumer has not applied is in the backup: in the bus copy, or still in
//!   its producer's outbox;
//! - the bus holds no event its producer had not committed;
//! - every payment authorization an order names is in the payment copy.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::BackupError;
use crate::contracts::facts::{ServiceFacts, ShopFacts};
use crate::contracts::payment::AuthorizationStatus;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Certificate {
    pub passed: bool,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Check {
    pub check: String,
    pub passed: bool,
    /// What failed, by stream, consumer, seq or key (empty when it passed).
    pub failures: Vec<String>,
}

impl Certificate {
    /// What failed, one line per failure, for the message that refuses the backup.
    pub fn failures(&self) -> Vec<String> {
        self.checks.iter().flat_map(|c| c.failures.iter().map(move |f| format!("{}: {f}", c.check))).collect()
    }
}

/// The seqs of each stream a backup holds: in the bus copy, and in the producers' outboxes.
pub(super) struct Held {
    bus: kit::bus::embedded_copy::Held,
    outbox: BTreeMap<String, BTreeSet<u64>>,
}

impl Held {
    /// Reads which seqs the copies in `dir` hold.
    pub(super) fn read(dir: &Path, parts: &[String]) -> Result<Self, BackupError> {
        let mut outbox = BTreeMap::new();
        for part in parts {
            let file = format!("{part}.db");
            outbox.extend(
                kit::store::copy::outbox_waiting(&dir.join(&file))
                    .map_err(|e| BackupError::damaged(&file, e))?,
            );
        }
        let bus = kit::bus::embedded_copy::held(&dir.join("bus.db"))
            .map_err(|e| BackupError::damaged("bus.db", e))?;
        Ok(Held { bus, outbox })
    }

    /// What a distributed backup holds: the events exported from the bus (`exported`) and
    /// those waiting in the outboxes at the cut; its consumers are every durable consumer
    /// of the shop ([`crate::reconcile::CONSUMERS`]).
    pub(super) fn exported(
        exported: BTreeMap<String, BTreeSet<u64>>,
        outbox: BTreeMap<String, BTreeSet<u64>>,
    ) -> Self {
        let consumers = crate::reconcile::CONSUMERS
            .iter()
            .map(|(consumer, streams)| {
                ((*consumer).to_owned(), streams.iter().map(|s| (*s).to_owned()).collect())
            })
            .collect();
        Held { bus: kit::bus::embedded_copy::Held { seqs: exported, consumers }, outbox }
    }

    /// Every durable consumer the bus copy knows, with its streams: one that never applied
    /// anything has no position in its store, and still needs every event of its streams.
    pub(super) fn consumers(&self) -> &[(String, Vec<String>)] {
        &self.bus.consumers
    }

    fn has(&self, stream: &str, seq: u64) -> bool {
        let within =
            |map: &BTreeMap<String, BTreeSet<u64>>| map.get(stream).is_some_and(|s| s.contains(&seq));
        within(&self.bus.seqs) || within(&self.outbox)
    }
}

/// At most this many failures are named per check.
const NAMED: usize = 10;

fn check(name: &str, failures: Vec<String>) -> Check {
    let mut failures = failures;
    let more = failures.len().saturating_sub(NAMED);
    failures.truncate(NAMED);
    if more > 0 {
        failures.push(format!("and {more} more"));
    }
    Check { check: name.into(), passed: failures.is_empty(), failures }
}

/// Checks the copies whose facts are `facts` and whose seqs are `held`.
pub(super) fn certify(facts: &ShopFacts, held: &Held) -> Certificate {
    let mut committed: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for part in &facts.parts {
        for outbox in &part.outbox {
            committed.insert(outbox.stream.as_str(), (outbox.last_seq, outbox.relayed_seq));
        }
    }
    let mut gaps = Vec::new();
    for (stream, (last, relayed)) in &committed {
        let rows = held.outbox.get(*stream).cloned().unwrap_or_default();
        let expected: BTreeSet<u64> = (relayed + 1..=*last).collect();
        if rows != expected {
            gaps.push(format!(
                "{stream}: the outbox holds {} seqs where ({relayed}, {last}] is {}",
                rows.len(),
                expected.len()
            ));
        }
    }
    let mut ahead = Vec::new();
    let mut floors: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for part in &facts.parts {
        for position in &part.consumers {
            let last = committed.get(position.stream.as_str()).map_or(0, |(last, _)| *last);
            if position.applied > last || position.floor > last {
                ahead.push(format!(
                    "{} applied {} seq {} but its producer committed {last}",
                    position.consumer, position.stream, position.applied
                ));
            }
            floors.insert((position.consumer.as_str(), position.stream.as_str()), position.floor);
        }
    }
    let mut missing = Vec::new();
    for (consumer, streams) in held.consumers() {
        for stream in streams {
            let floor = floors.get(&(consumer.as_str(), stream.as_str())).copied().unwrap_or(0);
            let last = committed.get(stream.as_str()).map_or(0, |(last, _)| *last);
            let absent: Vec<u64> = (floor + 1..=last).filter(|seq| !held.has(stream, *seq)).collect();
            if let Some(first) = absent.first() {
                missing.push(format!(
                    "{consumer} has not applied {stream} seq {first} (and {} more), which is neither on the bus copy nor in the outbox",
                    absent.len() - 1
                ));
            }
        }
    }
    let mut uncommitted = Vec::new();
    for (stream, seqs) in &held.bus.seqs {
        let last = committed.get(stream.as_str()).map_or(0, |(last, _)| *last);
        if let Some(top) = seqs.last().filter(|top| **top > last) {
            uncommitted.push(format!("{stream}: the bus holds seq {top}, its producer committed {last}"));
        }
    }
    let certificate = Certificate {
        passed: false,
        checks: vec![
            check("no gap in any outbox", gaps),
            check("no consumer applied what its producer had not committed", ahead),
            check("every unapplied event is in the backup", missing),
            check("the bus holds only committed events", uncommitted),
            check("every authorization an order names is in the payment copy", authorizations(facts)),
            check("every authorization without its order belongs to a placement held", placements(facts)),
        ],
    };
    Certificate { passed: certificate.checks.iter().all(|c| c.passed), ..certificate }
}

/// A placement notes itself in the order database before payment authorizes, and both
/// happen inside a passage of the pause with the order's commit; the order copy is pinned
/// before the payment copy. So an authorization whose order the order copy lacks must be
/// a placement that copy still holds (abandoned, to be voided), or the cut fell inside one.
fn placements(facts: &ShopFacts) -> Vec<String> {
    let mut known = HashSet::new();
    for part in &facts.parts {
        if let ServiceFacts::Order { orders, placing, .. } = &part.state {
            known.extend(orders.iter().map(|o| o.id.as_str()));
            known.extend(placing.iter().map(String::as_str));
        }
    }
    let mut orphans = Vec::new();
    for part in &facts.parts {
        if let ServiceFacts::Payment { authorizations } = &part.state {
            for a in authorizations {
                if a.status == AuthorizationStatus::Authorized && !known.contains(a.order_id.as_str()) {
                    orphans.push(format!(
                        "authorization {} is for order {}, which the order copy neither holds nor is placing",
                        a.id, a.order_id
                    ));
                }
            }
        }
    }
    orphans
}

fn authorizations(facts: &ShopFacts) -> Vec<String> {
    let mut held = HashSet::new();
    for part in &facts.parts {
        if let ServiceFacts::Payment { authorizations } = &part.state {
            held.extend(authorizations.iter().map(|a| a.id.as_str()));
        }
    }
    let mut missing = Vec::new();
    for part in &facts.parts {
        if let ServiceFacts::Order { orders, .. } = &part.state {
            for order in orders {
                if !held.contains(order.payment_authorization_id.as_str()) {
                    missing.push(format!(
                        "order {} names authorization {}",
                        order.id, order.payment_authorization_id
                    ));
                }
            }
        }
    }
    missing
}
