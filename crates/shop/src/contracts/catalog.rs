//! The catalog's contract: every event carries the whole product at its version, and the
//! synchronous quote (`POST /quote`) is the binding price of a cart.

use kit::envelope::NewEvent;
use kit::token::{ConsistencyToken, TokenEntry};
use serde::{Deserialize, Serialize};

pub const PRODUCT_ADDED: &str = "ProductAdded";
pub const PRODUCT_PRICE_CHANGED: &str = "ProductPriceChanged";
pub const PRODUCT_RENAMED: &str = "ProductRenamed";
pub const KINDS: [&str; 3] = [PRODUCT_ADDED, PRODUCT_PRICE_CHANGED, PRODUCT_RENAMED];

/// The schema version of the [`Product`] payload.
pub const SCHEMA: u32 = 1;

/// The scope of product aggregates in replica versions and tokens.
pub const SCOPE: &str = "product";

/// A product as the catalog publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Product {
    /// e.g. `p-001`.
    pub id: String,
    pub name: String,
    pub description: String,
    pub price_cents: u64,
    pub version: u64,
}

pub fn event(kind: &str, product: &Product) -> NewEvent {
    NewEvent::new(kind, product.id.as_str(), product.version, product).schema(SCHEMA)
}

/// The token a write of product `id` at `version` answers with: `product/<id>@<version>`.
pub fn token(id: &str, version: u64) -> ConsistencyToken {
    let entry = TokenEntry::new(SCOPE, id, version).expect("product ids are token-safe");
    ConsistencyToken::new().with(entry)
}

/// One line of a quote request: `POST /quote`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QuoteItem {
    #[schema(value_type = super::ids::ProductId)]
    pub product_id: String,
    /// 1 to 1000.
    #[schema(minimum = 1, maximum = 1000)]
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QuoteRequest {
    /// At least one.
    #[schema(min_items = 1)]
    pub items: Vec<QuoteItem>,
}

/// A priced line of a quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QuoteLine {
    pub product_id: String,
    pub name: String,
    pub quantity: u32,
    pub unit_price_cents: u64,
    pub line_cents: u64,
}

/// The catalog's binding answer to "what does this cart cost now".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Quote {
    pub lines: Vec<QuoteLine>,
    pub total_cents: u64,
}
