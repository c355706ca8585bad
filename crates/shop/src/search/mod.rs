//! The search service: a full-text index of products and orders, fed by events.
