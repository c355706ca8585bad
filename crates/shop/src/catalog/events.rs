//! What the catalog publishes ([`crate::contracts::catalog`]): every event carries the
//! whole product at its version, converted from the catalog's own record.

use kit::envelope::NewEvent;
use kit::token::ConsistencyToken;

use super::model::Product;
use crate::contracts::catalog as contract;

pub use contract::{
    KINDS, PRODUCT_ADDED, PRODUCT_PRICE_CHANGED, PRODUCT_RENAMED, Quote, QuoteItem, QuoteLine, QuoteRequest,
    SCOPE,
};

/// The event of `kind` carrying `product` as its contract publishes it.
pub fn event(kind: &str, product: &Product) -> NewEvent {
    contract::event(kind, &contract::Product::from(product))
}

/// The token a write of `product` answers with: `product/<id>@<version>`.
pub fn token(product: &Product) -> ConsistencyToken {
    contract::token(&product.id, product.version)
}
