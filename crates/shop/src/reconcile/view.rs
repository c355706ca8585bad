//! The facts indexed by key, and the rule that classes a finding: which unapplied event
//! explains it.

use std::collections::{BTreeMap, BTreeSet};

use super::{Finding, Group, InFlight};
use crate::contracts::customer::Customer;
use crate::contracts::facts::{
    AddressCopy, AuthorizationFact, ConsumerPosition, DeadLetterFact, DocumentFact, LineFact, OrderCopy,
    PartFacts, ProductFact, ServiceFacts, ShopFacts,
};
use crate::contracts::inventory::{Site, StockCounters};
use crate::contracts::order::Order;
use crate::contracts::shipping::Shipment;
use crate::stores::StoreLocation;

/// What an inventory site holds: both sites' counters and every line, as it sees them.
#[derive(Default)]
pub struct SiteView<'a> {
    pub counters: Vec<&'a StockCounters>,
    pub lines: Vec<&'a LineFact>,
}

/// The facts of the whole shop by key.
#[derive(Default)]
pub struct View<'a> {
    pub live: bool,
    pub parts: BTreeMap<&'a str, &'a PartFacts>,
    pub customers: BTreeMap<&'a str, &'a Customer>,
    pub products: BTreeMap<&'a str, &'a ProductFact>,
    pub orders: BTreeMap<&'a str, &'a Order>,
    pub order_customers: BTreeMap<&'a str, &'a Customer>,
    pub order_products: BTreeMap<&'a str, &'a ProductFact>,
    /// The order ids of the order service's placements under way or abandoned.
    pub placing: BTreeSet<&'a str>,
    /// By order id.
    pub authorizations: BTreeMap<&'a str, &'a AuthorizationFact>,
    pub authorization_ids: BTreeMap<&'a str, &'a AuthorizationFact>,
    pub shipments: BTreeMap<&'a str, &'a Shipment>,
    pub shipping_orders: BTreeMap<&'a str, &'a OrderCopy>,
    pub shipping_addresses: BTreeMap<&'a str, &'a AddressCopy>,
    /// By (kind, id).
    pub documents: BTreeMap<(&'a str, &'a str), &'a DocumentFact>,
    /// Search's bestsellers counter: units ordered by product id.
    pub units_ordered: BTreeMap<&'a str, u64>,
    /// Whether that counter counted from the shop's first order, so it can be checked.
    pub counted_from_the_start: bool,
    pub sites: BTreeMap<Site, SiteView<'a>>,
    /// The committed head of each stream: its producer's outbox, else the bus.
    pub heads: BTreeMap<&'a str, u64>,
    pub bus_heads: BTreeMap<&'a str, u64>,
    pub positions: BTreeMap<(&'a str, &'a str), &'a ConsumerPosition>,
    pub dead_letters: &'a [DeadLetterFact],
}

impl<'a> View<'a> {
    pub fn of(facts: &'a ShopFacts) -> Self {
        let mut view = View { live: facts.live, dead_letters: &facts.bus.dead_letters, ..View::default() };
        for stream in &facts.bus.streams {
            view.bus_heads.insert(&stream.stream, stream.head);
        }
        for part in &facts.parts {
            view.parts.insert(&part.part, part);
            for outbox in &part.outbox {
                view.heads.insert(&outbox.stream, outbox.last_seq);
            }
            for position in &part.consumers {
                view.positions.insert((&position.consumer, &position.stream), position);
            }
            view.add_state(&part.state);
        }
        view
    }

    fn add_state(&mut self, state: &'a ServiceFacts) {
        match state {
            ServiceFacts::Customer { customers } => {
                self.customers.extend(customers.iter().map(|c| (c.id.as_str(), c)))
            }
            ServiceFacts::Catalog { products } => {
                self.products.extend(products.iter().map(|p| (p.id.as_str(), p)))
            }
            ServiceFacts::Order { orders, customer_replicas, product_replicas, placing } => {
                self.orders.extend(orders.iter().map(|o| (o.id.as_str(), o)));
                self.placing.extend(placing.iter().map(String::as_str));
                self.order_customers.extend(customer_replicas.iter().map(|c| (c.id.as_str(), c)));
                self.order_products.extend(product_replicas.iter().map(|p| (p.id.as_str(), p)));
            }
            ServiceFacts::Payment { authorizations } => {
                self.authorizations.extend(authorizations.iter().map(|a| (a.order_id.as_str(), a)));
                self.authorization_ids.extend(authorizations.iter().map(|a| (a.id.as_str(), a)));
            }
            ServiceFacts::Shipping { shipments, order_replicas, customer_addresses } => {
                self.shipments.extend(shipments.iter().map(|s| (s.order_id.as_str(), s)));
                self.shipping_orders.extend(order_replicas.iter().map(|o| (o.id.as_str(), o)));
                self.shipping_addresses
                    .extend(customer_addresses.iter().map(|a| (a.customer_id.as_str(), a)));
            }
            ServiceFacts::Search { documents, units_ordered, counted_from_the_start } => {
                self.documents.extend(documents.iter().map(|d| ((d.kind.as_str(), d.id.as_str()), d)));
                self.units_ordered.extend(units_ordered.iter().map(|u| (u.product_id.as_str(), u.units)));
                self.counted_from_the_start = *counted_from_the_start;
            }
            ServiceFacts::Inventory { site, counters, lines } => {
                let held = self.sites.entry(*site).or_default();
                held.counters.extend(counters);
                held.lines.extend(lines);
            }
        }
    }

    /// A finding for every database of the shop that gave no facts: nothing about it can
    /// be checked, so the report cannot be clean.
    pub fn missing_parts(&self) -> Vec<Finding> {
        StoreLocation::parts()
            .into_iter()
            .filter(|part| !self.parts.contains_key(part.as_str()))
            .map(|part| {
                let detail = format!("no facts from {part}: its relations were not checked");
                Finding::new("part_missing", Group::Stream, &[("part", &part)], detail, None)
            })
            .collect()
    }

    /// The committed head of `stream`: what its producer committed, else what the bus holds.
    pub fn head(&self, stream: &str) -> u64 {
        self.heads.get(stream).or_else(|| self.bus_heads.get(stream)).copied().unwrap_or(0)
    }

    /// Where `consumer` stands on `stream` (nothing applied when it never recorded a position).
    pub fn position(&self, consumer: &str, stream: &str) -> ConsumerPosition {
        self.positions.get(&(consumer, stream)).map(|p| (*p).clone()).unwrap_or(ConsumerPosition {
            consumer: consumer.to_owned(),
            stream: stream.to_owned(),
            floor: 0,
            applied: 0,
            applied_above_floor: 0,
            first_gap: None,
        })
    }

    /// The unapplied event that explains a finding, if one does: `via` names each (stream,
    /// consumer) whose next events could resolve it. An event is unapplied when its
    /// producer committed it (relayed or not) and the consumer has not applied it. On a
    /// live read a consumer may also have applied what its producer had not committed when
    /// the producer was read before it: that too is explained, by the event read later.
    pub fn explain(&self, via: &[(&str, &str)]) -> Option<InFlight> {
        via.iter().find_map(|(stream, consumer)| {
            let head = self.head(stream);
            let position = self.position(consumer, stream);
            if let Some((unapplied, seq)) = position.unapplied(head) {
                return Some(InFlight {
                    stream: (*stream).to_owned(),
                    consumer: Some((*consumer).to_owned()),
                    seq,
                    unapplied,
                    reason: format!("{consumer} has not applied {unapplied} event(s) of {stream} from seq {seq}"),
                });
            }
            (self.live && position.applied > head).then(|| InFlight {
                stream: (*stream).to_owned(),
                consumer: Some((*consumer).to_owned()),
                seq: position.applied,
                unapplied: 0,
                reason: format!(
                    "{consumer} was read after {stream}'s producer and had applied seq {} beyond its head {head}",
                    position.applied
                ),
            })
        })
    }
}
