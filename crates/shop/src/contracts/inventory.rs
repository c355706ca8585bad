//! The inventory's contract: its answer to each placed order (key: order id) and the
//! adjustment counters of a product after every change at a site (key: product id,
//! state-carrying). The other site replicates both; order consumes the answers.
//!
//! Inventory runs as two sites; [`Site::of_customer`] is the published routing rule, so
//! every party finds the site of an order on its own.
//!
//! # Schema history of [`Reservation`]
//!
//! - 1: `order_id`, `lines`, `reason` — an answer from a single site.
//! - 2: adds `site`, `status`, `placed_at_ms` and `compensated`, so the other site can
//!   replicate the lines and order can tell a compensation from a rejection. A schema-1
//!   answer is read as one that reserved nothing it replicates (no site, no status, placed
//!   at 0) and is no compensation; see [`reservation_v1_to_v2`].

use kit::envelope::NewEvent;
use kit::schema::Schemas;
use kit::token::{ConsistencyToken, TokenEntry};
use serde::{Deserialize, Serialize};

pub const STOCK_RESERVED: &str = "StockReserved";
pub const STOCK_REJECTED: &str = "StockRejected";
pub const STOCK_RELEASED: &str = "StockReleased";
pub const STOCK_ADJUSTED: &str = "StockAdjusted";
pub const KINDS: [&str; 4] = [STOCK_RESERVED, STOCK_REJECTED, STOCK_RELEASED, STOCK_ADJUSTED];

/// The kinds that carry a [`Reservation`].
pub const RESERVATION_KINDS: [&str; 3] = [STOCK_RESERVED, STOCK_REJECTED, STOCK_RELEASED];

/// The schema version of the [`Reservation`] payload (see the module docs for its history).
pub const RESERVATION_SCHEMA: u32 = 2;

/// The schema version of the [`StockCounters`] payload.
pub const COUNTERS_SCHEMA: u32 = 1;

/// The scope of a product's stock in consistency tokens: `stock/<product id>@<version>`.
pub const SCOPE: &str = "stock";

/// One inventory site: its own database, outbox stream, port and consumers.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Site {
    Dc1,
    Dc2,
}

impl Site {
    pub const ALL: [Site; 2] = [Site::Dc1, Site::Dc2];

    pub fn as_str(self) -> &'static str {
        match self {
            Site::Dc1 => "dc1",
            Site::Dc2 => "dc2",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The other site.
    pub fn peer(self) -> Site {
        match self {
            Site::Dc1 => Site::Dc2,
            Site::Dc2 => Site::Dc1,
        }
    }

    /// The instance name: the site's stream, database file stem and consumer prefix.
    pub fn instance(self) -> String {
        format!("inventory-{}", self.as_str())
    }

    /// The site that arbitrates ap reservations (see the module docs of `inventory`): one
    /// place decides, so two sites never give the same units to two orders.
    pub fn arbiter() -> Site {
        Site::Dc1
    }

    /// The site an order of `customer_id` is routed to: FNV-1a of the customer id, even to
    /// dc1 and odd to dc2. Every party computes it alone, a customer's orders (and their
    /// cancellations) always meet the same site, and tests can pick customers per site.
    pub fn of_customer(customer_id: &str) -> Site {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in customer_id.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        if hash.is_multiple_of(2) { Site::Dc1 } else { Site::Dc2 }
    }
}

impl std::fmt::Display for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StockLine {
    pub product_id: String,
    pub quantity: u32,
}

/// Where the lines of a reservation stand at the site that owns the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReservationStatus {
    /// cp: reserved here, waiting for the other site's acknowledgement.
    Pending,
    /// ap: reserved and accepted, waiting for the arbiter's verdict against the other
    /// site's reservations.
    Provisional,
    /// Final: acknowledged (cp) or kept by the arbiter (ap); the order may ship.
    Reserved,
    /// No longer counts against the stock (cancelled, refused or compensated).
    Released,
}

impl ReservationStatus {
    pub const ALL: [ReservationStatus; 4] =
        [Self::Pending, Self::Provisional, Self::Reserved, Self::Released];

    pub fn as_str(self) -> &'static str {
        match self {
            ReservationStatus::Pending => "pending",
            ReservationStatus::Provisional => "provisional",
            ReservationStatus::Reserved => "reserved",
            ReservationStatus::Released => "released",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether the lines count against the stock: every status but `released`.
    pub fn counts_against_stock(self) -> bool {
        self != ReservationStatus::Released
    }

    /// Whether this is a final answer to the order: reserved or given back, not a
    /// reservation still waiting (pending or provisional).
    pub fn answers(self) -> bool {
        !self.counts_against_stock() || self == ReservationStatus::Reserved
    }
}

/// Payload of StockReserved, StockRejected (with `reason`) and StockReleased. With
/// `site` and `status` it also carries the order's reservation lines as its site now has
/// them, at the event's version, for the other site to replicate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reservation {
    pub order_id: String,
    pub lines: Vec<StockLine>,
    pub reason: Option<String>,
    /// The site that owns the order; absent when nothing was ever reserved.
    pub site: Option<Site>,
    /// The status of every line after this event; absent when nothing was ever reserved.
    pub status: Option<ReservationStatus>,
    pub placed_at_ms: u64,
    /// StockRejected only: the reservation was given back because its product was oversold, so
    /// the order is cancelled with the apology rather than rejected.
    pub compensated: bool,
}

impl Reservation {
    /// An answer that never reserved anything (a rejection from the site's own view).
    pub fn unreserved(order_id: &str, lines: Vec<StockLine>, reason: Option<String>) -> Self {
        Self {
            order_id: order_id.to_owned(),
            lines,
            reason,
            site: None,
            status: None,
            placed_at_ms: 0,
            compensated: false,
        }
    }
}

/// Payload of StockAdjusted: one site's adjustment counters of a product (key: product
/// id, version: the counters' version at that site).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StockCounters {
    pub site: Site,
    pub product_id: String,
    /// Units this site ever added to the product's stock.
    pub added: u64,
    /// Units this site ever took away from it.
    pub removed: u64,
    pub version: u64,
}

pub fn reservation_event(kind: &str, reservation: &Reservation, version: u64) -> NewEvent {
    NewEvent::new(kind, reservation.order_id.as_str(), version, reservation).schema(RESERVATION_SCHEMA)
}

pub fn counters_event(counters: &StockCounters) -> NewEvent {
    NewEvent::new(STOCK_ADJUSTED, counters.product_id.as_str(), counters.version, counters)
        .schema(COUNTERS_SCHEMA)
}

/// The token a stock write answers with: the product at its view version.
pub fn token(product_id: &str, version: u64) -> ConsistencyToken {
    let entry = TokenEntry::new(SCOPE, product_id, version).expect("product ids are token-safe");
    ConsistencyToken::new().with(entry)
}

/// Reads a schema-1 [`Reservation`] as schema 2: no site, no status, placed at 0, not a
/// compensation. Fields a payload already has are kept.
pub fn reservation_v1_to_v2(mut payload: serde_json::Value) -> Result<serde_json::Value, String> {
    let fields = payload.as_object_mut().ok_or("a reservation is a json object")?;
    fields.entry("site").or_insert(serde_json::Value::Null);
    fields.entry("status").or_insert(serde_json::Value::Null);
    fields.entry("placed_at_ms").or_insert(0.into());
    fields.entry("compensated").or_insert(false.into());
    Ok(payload)
}

/// Registers the upcasters of this contract's older payloads on `schemas`.
pub fn upcasters(schemas: Schemas) -> Schemas {
    RESERVATION_KINDS.into_iter().fold(schemas, |s, kind| s.upcast(kind, 1, reservation_v1_to_v2))
}
