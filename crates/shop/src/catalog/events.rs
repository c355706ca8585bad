//! What the catalog publishes: its contract ([`crate::contracts::catalog`]). The catalog
//! keeps no separate product record; the published product is what its store reads and
//! writes, validated on the way in by [`super::model`].

pub use crate::contracts::catalog::{
    KINDS, PRODUCT_ADDED, PRODUCT_PRICE_CHANGED, PRODUCT_RENAMED, Product, Quote, QuoteItem, QuoteLine,
    QuoteRequest, SCOPE, event, token,
};
