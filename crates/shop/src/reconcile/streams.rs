//! Per stream: what its producer committed and relayed, what the bus holds, where each
//! consumer stands, and its dead letters.

use super::view::View;
use super::{Finding, Group, InFlight};

/// Every durable consumer of the shop and the streams it reads, as each service's
/// `consume` starts them (`<part>.<purpose>`); a consumer that never applied an event
/// has recorded no position, so the checker must know it is there.
pub const CONSUMERS: [(&str, &[&str]); 16] = [
    ("order.customer-replica", &["customer"]),
    ("order.product-replica", &["catalog"]),
    ("order.stock", &["inventory-dc1", "inventory-dc2"]),
    ("inventory-dc1.orders", &["order"]),
    ("inventory-dc2.orders", &["order"]),
    ("inventory-dc1.site-replica", &["inventory-dc2"]),
    ("inventory-dc2.site-replica", &["inventory-dc1"]),
    ("shipping.order-replica", &["order"]),
    ("shipping.customer-replica", &["customer"]),
    ("shipping.payments", &["payment"]),
    ("search.catalog", &["catalog"]),
    ("search.orders", &["order"]),
    ("customer.sessions", &["customer"]),
    ("order.sessions", &["customer"]),
    ("shipping.sessions", &["customer"]),
    ("search.sessions", &["customer"]),
];

pub fn check(view: &View<'_>) -> Vec<Finding> {
    let mut findings = producers(view);
    findings.extend(consumers(view));
    findings.extend(dead_letters(view));
    findings
}

/// The outbox against the bus: what is committed and not yet relayed is in flight; a bus
/// holding seqs its producer never committed, or lacking seqs the relay published, has
/// lost data on one side.
fn producers(view: &View<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for part in view.parts.values() {
        for outbox in &part.outbox {
            let stream = outbox.stream.as_str();
            let keys = [("stream", stream)];
            if outbox.relayed_seq < outbox.last_seq {
                let seq = outbox.relayed_seq + 1;
                let unapplied = outbox.last_seq - outbox.relayed_seq;
                let in_flight = InFlight {
                    stream: stream.to_owned(),
                    consumer: None,
                    seq,
                    unapplied,
                    reason: format!(
                        "{unapplied} event(s) of {stream} committed and not yet relayed, from seq {seq}"
                    ),
                };
                let detail = format!(
                    "{stream}: committed up to {}, relayed up to {}",
                    outbox.last_seq, outbox.relayed_seq
                );
                findings.push(Finding::new("unrelayed", Group::Stream, &keys, detail, Some(in_flight)));
            }
            // No part could see this stream on the bus: nothing to compare with.
            let Some(bus) = view.bus_heads.get(stream).copied() else { continue };
            let before = outbox.bus_head_before.unwrap_or(bus);
            if before > outbox.last_seq {
                let detail = format!(
                    "the bus holds {stream} up to seq {before}, its producer committed only {}",
                    outbox.last_seq
                );
                findings.push(Finding::new("bus_ahead_of_outbox", Group::Stream, &keys, detail, None));
            }
            if outbox.relayed_seq > bus {
                let detail = format!(
                    "{stream} was relayed up to seq {} but the bus holds only {bus}",
                    outbox.relayed_seq
                );
                findings.push(Finding::new("bus_behind_relay", Group::Stream, &keys, detail, None));
            }
        }
    }
    findings
}

/// Each consumer against its stream's committed head: behind is in flight; ahead means
/// the producer lost what the consumer applied (unless a live read met the consumer after
/// the producer).
fn consumers(view: &View<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (consumer, streams) in CONSUMERS {
        for stream in streams {
            let head = view.head(stream);
            let position = view.position(consumer, stream);
            let keys = [("consumer", consumer), ("stream", *stream)];
            if position.unapplied(head).is_some() {
                let detail = format!(
                    "{consumer} on {stream}: applied up to {} (all up to {}), committed {head}",
                    position.applied, position.floor
                );
                let in_flight = view.explain(&[(stream, consumer)]);
                findings.push(Finding::new("consumer_behind", Group::Stream, &keys, detail, in_flight));
            }
            let bus = view.bus_heads.get(stream).copied().unwrap_or(0);
            if position.applied > head {
                let detail = format!(
                    "{consumer} applied {stream} up to seq {} but its producer committed only {head}",
                    position.applied
                );
                let torn = view.live && position.applied <= bus;
                let in_flight = if torn { view.explain(&[(stream, consumer)]) } else { None };
                findings.push(Finding::new("consumer_ahead", Group::Stream, &keys, detail, in_flight));
            }
        }
    }
    findings
}

/// A dead letter waits for an operator (`capshop dlq`): replayed, it is applied; discarded,
/// its effect is gone for good.
fn dead_letters(view: &View<'_>) -> Vec<Finding> {
    view.dead_letters
        .iter()
        .map(|d| {
            let seq = d.seq.to_string();
            let keys = [
                ("consumer", d.consumer.as_str()),
                ("stream", d.stream.as_str()),
                ("seq", &seq),
                ("key", &d.key),
            ];
            let detail = format!(
                "{} dead-lettered {} seq {} (event {}, key {})",
                d.consumer, d.stream, d.seq, d.event_id, d.key
            );
            Finding::new("dead_letter", Group::Stream, &keys, detail, None)
        })
        .collect()
}
