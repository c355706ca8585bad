//! Products, prices and quote requests, validated once at the edge.

use serde::{Deserialize, Serialize};

use super::events::{QuoteItem, QuoteRequest};
use crate::contracts::catalog as contract;

/// A product as the catalog keeps it and answers it over HTTP. Its events publish it
/// converted to [`contract::Product`], so the record may change apart from the contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Product {
    /// e.g. `p-001`.
    pub id: String,
    pub name: String,
    pub description: String,
    pub price_cents: u64,
    pub version: u64,
}

impl From<&Product> for contract::Product {
    fn from(p: &Product) -> Self {
        Self {
            id: p.id.clone(),
            name: p.name.clone(),
            description: p.description.clone(),
            price_cents: p.price_cents,
            version: p.version,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{field} {reason}")]
    Invalid { field: String, reason: String },
    #[error("no product {0}")]
    NotFound(String),
    /// A quote named products the catalog does not sell; every one is listed.
    #[error("unknown {} {}", if .0.len() == 1 { "product" } else { "products" }, .0.join(", "))]
    UnknownProducts(Vec<String>),
    #[error("a product with id {0} already exists")]
    Exists(String),
    #[error(transparent)]
    Store(#[from] kit::store::StoreError),
}

impl From<CatalogError> for crate::service::Problem {
    fn from(e: CatalogError) -> Self {
        use crate::service::Problem;
        match e {
            CatalogError::Invalid { .. } | CatalogError::UnknownProducts(_) => {
                Problem::unprocessable(e.to_string())
            }
            CatalogError::NotFound(_) => Problem::not_found(e.to_string()),
            CatalogError::Exists(_) => Problem::conflict(e.to_string()),
            CatalogError::Store(e) => e.into(),
        }
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> CatalogError {
    CatalogError::Invalid { field: field.into(), reason: reason.into() }
}

/// Trims `value` and checks it is 1..=max characters.
fn text(field: &'static str, value: &str, max: usize) -> Result<String, CatalogError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(invalid(field, format!("must be at most {max} characters")));
    }
    Ok(value.to_owned())
}

/// A product id: `p-` and 1–60 of a-z, 0-9, `-` (the seed uses `p-001` … `p-020`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProductId(String);

impl ProductId {
    pub fn parse(id: &str) -> Result<Self, CatalogError> {
        let ok = id.len() <= 62
            && id.strip_prefix("p-").is_some_and(|rest| {
                !rest.is_empty()
                    && rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            });
        if ok {
            Ok(Self(id.to_owned()))
        } else {
            Err(invalid("product id", format!("{id:?} is not of the form p-<letters, digits, ->")))
        }
    }

    /// The numbered id `p-NNN`, as the seed and generated ids have.
    pub fn numbered(n: u64) -> Self {
        Self(format!("p-{n:03}"))
    }

    /// The number of a `p-NNN` id, if it is one.
    pub fn number(&self) -> Option<u64> {
        self.0.strip_prefix("p-").filter(|n| n.bytes().all(|b| b.is_ascii_digit()))?.parse().ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ProductId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A price in cents: more than zero and at most 1,000,000.00.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriceCents(u64);

impl PriceCents {
    pub const MAX: u64 = 100_000_000;

    pub fn new(cents: u64) -> Result<Self, CatalogError> {
        if (1..=Self::MAX).contains(&cents) {
            Ok(Self(cents))
        } else {
            Err(invalid("price_cents", format!("must be between 1 and {}", Self::MAX)))
        }
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

/// A new product, validated; its id is chosen by the store when not given.
#[derive(Debug, Clone)]
pub struct NewProduct {
    pub id: Option<ProductId>,
    pub name: String,
    pub description: String,
    pub price: PriceCents,
}

impl NewProduct {
    pub fn parse(
        id: Option<&str>,
        name: &str,
        description: &str,
        price_cents: u64,
    ) -> Result<Self, CatalogError> {
        Ok(Self {
            id: id.map(ProductId::parse).transpose()?,
            name: ProductName::parse(name)?.0,
            description: text("description", description, 1000)?,
            price: PriceCents::new(price_cents)?,
        })
    }
}

/// A product's name: trimmed, 1 to 100 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductName(String);

impl ProductName {
    pub fn parse(name: &str) -> Result<Self, CatalogError> {
        text("name", name, 100).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How many of one product a quote line may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(u32);

impl Quantity {
    pub const MAX: u32 = 1000;

    pub fn get(self) -> u32 {
        self.0
    }
}

/// The lines of a quote request, validated: 1 to [`Basket::MAX_LINES`] lines, each a
/// well-formed product id and a quantity of 1 to [`Quantity::MAX`]. Whether the
/// products exist is the store's question.
#[derive(Debug, Clone)]
pub struct Basket(Vec<(ProductId, Quantity)>);

impl Basket {
    pub const MAX_LINES: usize = 500;

    pub fn lines(&self) -> &[(ProductId, Quantity)] {
        &self.0
    }
}

impl TryFrom<QuoteRequest> for Basket {
    type Error = CatalogError;

    fn try_from(request: QuoteRequest) -> Result<Self, Self::Error> {
        if request.items.is_empty() {
            return Err(invalid("items", "must not be empty"));
        }
        if request.items.len() > Self::MAX_LINES {
            return Err(invalid("items", format!("must be at most {} lines", Self::MAX_LINES)));
        }
        let lines = request
            .items
            .iter()
            .enumerate()
            .map(|(i, QuoteItem { product_id, quantity })| {
                let id = ProductId::parse(product_id)
                    .map_err(|_| CatalogError::UnknownProducts(vec![product_id.clone()]))?;
                if !(1..=Quantity::MAX).contains(quantity) {
                    let reason = format!("must be between 1 and {}", Quantity::MAX);
                    return Err(invalid(format!("items[{i}].quantity"), reason));
                }
                Ok((id, Quantity(*quantity)))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self(lines))
    }
}
