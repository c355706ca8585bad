//! The shapes of the ids the services accept, for their OpenAPI documents: each rule is
//! written here once and named by every field or parameter that carries such an id (with
//! `#[schema(value_type = ids::OrderId)]` or `("order_id" = ids::OrderId, Query, ..)`), so
//! a schema-valid request is one the services take. The services check the same rules
//! when they parse an id (e.g. `inventory::model::OrderId::parse`).

/// A product id: `p-` and 1 to 60 of a-z, 0-9, `-`, e.g. `p-001`.
#[derive(utoipa::ToSchema)]
#[schema(pattern = "^p-[a-z0-9-]{1,60}$", example = "p-001")]
pub struct ProductId(pub String);

/// An order id: `o-` and 1 to 62 of a-z, 0-9, `-`, e.g. `o-0193…`.
#[derive(utoipa::ToSchema)]
#[schema(pattern = "^o-[a-z0-9-]{1,62}$", example = "o-01936f1c2b7d7c3a")]
pub struct OrderId(pub String);

/// A customer id: `c-` and 1 to 60 of a-z, 0-9, `-`, e.g. `c-ada`.
#[derive(utoipa::ToSchema)]
#[schema(pattern = "^c-[a-z0-9-]{1,60}$", example = "c-ada")]
pub struct CustomerId(pub String);
