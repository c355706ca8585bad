//! The facts each service publishes to `capshop reconcile`: what its own database says,
//! read in one transaction, in shapes of its contract. A service's `facts.rs` reads them;
//! `crate::reconcile` checks them against each other without any I/O.

use serde::{Deserialize, Serialize};

use super::customer::{Address, Customer};
use super::inventory::{ReservationStatus, Site, StockCounters};
use super::order::{Order, OrderStatus};
use super::payment::AuthorizationStatus;
use super::shipping::Shipment;

/// Every part's facts and the bus's, as one checker input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShopFacts {
    /// Read from running parts, one transaction each (not from the files of a stopped
    /// shop or a backup): a part read later may have applied what an earlier one had not
    /// committed yet when it was read.
    #[serde(default)]
    pub live: bool,
    /// Read from a running shop at one consistent cut (docs/BACKUP.md): every part at the
    /// same moment, as strictly as files.
    #[serde(default)]
    pub cut: bool,
    #[schema(value_type = Vec<Object>)]
    pub parts: Vec<PartFacts>,
    #[schema(value_type = Object)]
    pub bus: BusFacts,
}

impl ShopFacts {
    /// Adds `other`'s parts and bus view to these: the highest head per stream, each dead
    /// letter once.
    pub fn merge(&mut self, other: ShopFacts) {
        self.live |= other.live;
        self.parts.extend(other.parts);
        self.bus.unreachable.extend(other.bus.unreachable);
        for stream in other.bus.streams {
            match self.bus.streams.iter_mut().find(|s| s.stream == stream.stream) {
                Some(known) => known.head = known.head.max(stream.head),
                None => self.bus.streams.push(stream),
            }
        }
        for letter in other.bus.dead_letters {
            if !self.bus.dead_letters.contains(&letter) {
                self.bus.dead_letters.push(letter);
            }
        }
    }
}

/// What one part (a service, or an inventory site) said about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartFacts {
    /// `order`, `inventory-dc1`, ...
    pub part: String,
    /// When its transaction read them (wall clock, ms).
    pub read_at_ms: u64,
    /// The streams it produces: what its outbox committed and relayed.
    pub outbox: Vec<OutboxPosition>,
    /// Where each of its consumers stands on each stream it reads.
    pub consumers: Vec<ConsumerPosition>,
    pub state: ServiceFacts,
}

/// A producer's positions on its stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxPosition {
    pub stream: String,
    /// The last seq committed.
    pub last_seq: u64,
    /// The last seq the relay published.
    pub relayed_seq: u64,
    /// The bus's head of this stream read just before the transaction (a live read only):
    /// a bus ahead of it holds events this producer never committed.
    pub bus_head_before: Option<u64>,
}

/// A consumer's applied position on one stream, from its inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerPosition {
    pub consumer: String,
    pub stream: String,
    /// Every seq at or below it is applied.
    pub floor: u64,
    /// The highest seq applied.
    pub applied: u64,
    /// Seqs above the floor that are applied (the rest above it are not).
    pub applied_above_floor: u64,
    /// The first seq above the floor not applied, if any is below `applied`.
    pub first_gap: Option<u64>,
}

impl ConsumerPosition {
    /// How many events of `head` this consumer has not applied, and the first of them.
    pub fn unapplied(&self, head: u64) -> Option<(u64, u64)> {
        let missing = head.saturating_sub(self.floor).saturating_sub(self.applied_above_floor);
        let first = self.first_gap.unwrap_or(self.applied.max(self.floor) + 1);
        (missing > 0 && first <= head).then_some((missing, first))
    }
}

/// The bus as a part, or the bus file, saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusFacts {
    pub streams: Vec<BusStream>,
    pub dead_letters: Vec<DeadLetterFact>,
    /// Parts that could not reach the bus, with why: their view of it is missing.
    #[serde(default)]
    pub unreachable: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusStream {
    pub stream: String,
    /// The highest seq the bus holds.
    pub head: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterFact {
    pub consumer: String,
    pub stream: String,
    pub seq: u64,
    pub key: String,
    pub event_id: String,
}

/// The state a service keeps, as far as another service's state depends on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "service", rename_all = "lowercase")]
pub enum ServiceFacts {
    Customer {
        customers: Vec<Customer>,
    },
    Catalog {
        products: Vec<ProductFact>,
    },
    Order {
        orders: Vec<Order>,
        customer_replicas: Vec<Customer>,
        product_replicas: Vec<ProductFact>,
        /// The order ids of placements under way or abandoned and not yet voided at payment.
        #[serde(default)]
        placing: Vec<String>,
    },
    Payment {
        authorizations: Vec<AuthorizationFact>,
    },
    Shipping {
        shipments: Vec<Shipment>,
        order_replicas: Vec<OrderCopy>,
        customer_addresses: Vec<AddressCopy>,
    },
    Search {
        documents: Vec<DocumentFact>,
        /// The bestsellers counter: units of each product in every order placed, as far as
        /// `search.orders` applied OrderPlaced events (absent from facts older than it).
        #[serde(default)]
        units_ordered: Vec<UnitsOrderedFact>,
        /// Whether the counter counted from the shop's first order (not in a shop upgraded
        /// to it with orders already placed, nor in facts older than it): only then can
        /// reconcile check it.
        #[serde(default)]
        counted_from_the_start: bool,
    },
    Inventory {
        site: Site,
        /// Both sites' counters as this site holds them.
        counters: Vec<StockCounters>,
        /// Every reservation line this site holds, its own and its copies of the other's.
        lines: Vec<LineFact>,
    },
}

/// A product's name and list price at a version (the catalog's, or a replica's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductFact {
    pub id: String,
    pub name: String,
    pub price_cents: u64,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationFact {
    pub id: String,
    pub order_id: String,
    pub status: AuthorizationStatus,
    pub created_at_ms: u64,
}

/// Shipping's replica of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCopy {
    pub id: String,
    pub status: OrderStatus,
    pub version: u64,
}

/// Shipping's replica of a customer's current address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressCopy {
    pub customer_id: String,
    pub address: Address,
    pub version: u64,
}

/// One document of the search index: a product or an order at a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentFact {
    /// `product` or `order`.
    pub kind: String,
    pub id: String,
    pub version: u64,
}

/// Units of one product in the orders placed, as search counts them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitsOrderedFact {
    pub product_id: String,
    pub units: u64,
}

/// One reservation line as a site holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineFact {
    pub order_id: String,
    pub product_id: String,
    /// The site that owns the order (and writes the line).
    pub site: Site,
    pub quantity: u32,
    pub status: ReservationStatus,
    pub version: u64,
}
