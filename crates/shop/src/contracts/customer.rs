//! The customer service's contract: every event carries the whole customer at its new
//! version, so replicas apply it with the version gate and need no ordering. It also owns
//! the shapes other services carry and compare: [`Address`] and [`PaymentMethod`].

use kit::envelope::NewEvent;
use kit::token::{ConsistencyToken, TokenEntry};
use serde::{Deserialize, Serialize};

use super::Invalid;

pub const REGISTERED: &str = "CustomerRegistered";
pub const ADDRESS_CHANGED: &str = "CustomerAddressChanged";
pub const PAYMENT_METHOD_CHANGED: &str = "PaymentMethodChanged";

/// Every kind this service publishes; all carry a [`Customer`] payload.
pub const KINDS: [&str; 3] = [REGISTERED, ADDRESS_CHANGED, PAYMENT_METHOD_CHANGED];

/// The schema version of the [`Customer`] payload.
pub const SCHEMA: u32 = 1;

/// The scope of customer aggregates in consistency tokens and replica versions.
pub const SCOPE: &str = "customer";

/// A customer as its events publish it. The order service also reads the customer
/// service's `GET /customers/{id}` in this shape when its replica cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Customer {
    /// e.g. `c-42`.
    pub id: String,
    pub name: String,
    pub email: String,
    pub address: Address,
    pub payment_method: PaymentMethod,
    /// Grows by one with every change; replicas keep the highest they have seen.
    pub version: u64,
}

/// A postal address; also what orders and shipments carry and compare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Address {
    /// 1 to 100 characters, not all blank (trimmed).
    #[schema(pattern = "\\S", max_length = 100)]
    pub line1: String,
    /// 1 to 60 characters, not all blank (trimmed).
    #[schema(pattern = "\\S", max_length = 60)]
    pub city: String,
    /// 1 to 16 characters, not all blank (trimmed).
    #[schema(pattern = "\\S", max_length = 16)]
    pub postcode: String,
    /// ISO 3166-1 alpha-2, answered in upper case (trimmed; `de` is taken as `DE`).
    #[schema(pattern = "^\\s*[A-Za-z]{2}\\s*$")]
    pub country: String,
}

impl Address {
    /// Validates and normalizes an address given by a client.
    pub fn parse(line1: &str, city: &str, postcode: &str, country: &str) -> Result<Self, Invalid> {
        let country = country.trim().to_ascii_uppercase();
        if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(Invalid::new("country", "must be a two-letter country code, e.g. DE"));
        }
        Ok(Self {
            line1: text("line1", line1, 100)?,
            city: text("city", city, 60)?,
            postcode: text("postcode", postcode, 16)?,
            country,
        })
    }

    /// Checks an address that arrived as a DTO.
    pub fn validated(self) -> Result<Self, Invalid> {
        Self::parse(&self.line1, &self.city, &self.postcode, &self.country)
    }
}

/// How a customer pays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PaymentMethod {
    Card {
        /// The last four digits of the card.
        #[schema(pattern = "^[0-9]{4}$")]
        last4: String,
    },
    Invoice,
}

impl PaymentMethod {
    pub fn validated(self) -> Result<Self, Invalid> {
        match self {
            PaymentMethod::Card { last4 }
                if last4.len() != 4 || !last4.bytes().all(|b| b.is_ascii_digit()) =>
            {
                Err(Invalid::new("payment_method.last4", "must be the last four digits of the card"))
            }
            other => Ok(other),
        }
    }

    /// The method as two columns (`card`/`invoice`, last four digits), for any store.
    pub fn columns(&self) -> (&'static str, Option<&str>) {
        match self {
            PaymentMethod::Card { last4 } => ("card", Some(last4)),
            PaymentMethod::Invoice => ("invoice", None),
        }
    }

    pub fn from_columns(kind: &str, last4: Option<String>) -> Self {
        match (kind, last4) {
            ("card", Some(last4)) => PaymentMethod::Card { last4 },
            _ => PaymentMethod::Invoice,
        }
    }
}

/// Checks `value` is at most `max` characters as sent (the documents' `maxLength`) and
/// not blank, and trims it.
pub fn text(field: &'static str, value: &str, max: usize) -> Result<String, Invalid> {
    if value.chars().count() > max {
        return Err(Invalid::new(field, format!("must be at most {max} characters")));
    }
    let value = value.trim();
    if value.is_empty() {
        return Err(Invalid::new(field, "must not be empty"));
    }
    Ok(value.to_owned())
}

pub fn event(kind: &str, customer: &Customer) -> NewEvent {
    NewEvent::new(kind, customer.id.as_str(), customer.version, customer).schema(SCHEMA)
}

/// The token a write of customer `id` at `version` answers with: `customer/<id>@<version>`.
pub fn token(id: &str, version: u64) -> ConsistencyToken {
    let entry = TokenEntry::new(SCOPE, id, version).expect("customer ids are token-safe");
    ConsistencyToken::new().with(entry)
}
