//! Customers, their addresses and payment methods, validated once at the edge.

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum CustomerError {
    #[error("{field} {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("no customer {0}")]
    NotFound(String),
    #[error("a customer with email {0} is already registered")]
    EmailTaken(String),
    #[error(transparent)]
    Store(#[from] kit::store::StoreError),
}

impl From<CustomerError> for crate::service::Problem {
    fn from(e: CustomerError) -> Self {
        use crate::service::Problem;
        match e {
            CustomerError::Invalid { .. } => Problem::unprocessable(e.to_string()),
            CustomerError::NotFound(_) => Problem::not_found(e.to_string()),
            CustomerError::EmailTaken(_) => Problem::conflict(e.to_string()),
            CustomerError::Store(e) => e.into(),
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> CustomerError {
    CustomerError::Invalid { field, reason: reason.into() }
}

/// Trims `value` and checks it is 1..=max characters.
pub(crate) fn text(field: &'static str, value: &str, max: usize) -> Result<String, CustomerError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(invalid(field, format!("must be at most {max} characters")));
    }
    Ok(value.to_owned())
}

/// A customer id: `c-` and 1–60 of a-z, 0-9, `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CustomerId(String);

impl CustomerId {
    pub fn parse(id: &str) -> Result<Self, CustomerError> {
        let ok = id.len() <= 62
            && id.strip_prefix("c-").is_some_and(|rest| {
                !rest.is_empty()
                    && rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            });
        if ok {
            Ok(Self(id.to_owned()))
        } else {
            Err(invalid("customer id", format!("{id:?} is not of the form c-<letters, digits, ->")))
        }
    }

    /// A fresh id for a new customer.
    pub fn generate() -> Self {
        Self(format!("c-{}", uuid::Uuid::now_v7().simple()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CustomerId {
    type Error = CustomerError;
    fn try_from(id: String) -> Result<Self, Self::Error> {
        Self::parse(&id)
    }
}

impl From<CustomerId> for String {
    fn from(id: CustomerId) -> Self {
        id.0
    }
}

impl std::fmt::Display for CustomerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A postal address; also what orders and shipments carry and compare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Address {
    pub line1: String,
    pub city: String,
    pub postcode: String,
    /// ISO 3166-1 alpha-2, upper case.
    pub country: String,
}

impl Address {
    /// Validates and normalizes an address given by a client.
    pub fn parse(line1: &str, city: &str, postcode: &str, country: &str) -> Result<Self, CustomerError> {
        let country = country.trim().to_ascii_uppercase();
        if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(invalid("country", "must be a two-letter country code, e.g. DE"));
        }
        Ok(Self {
            line1: text("line1", line1, 100)?,
            city: text("city", city, 60)?,
            postcode: text("postcode", postcode, 16)?,
            country,
        })
    }

    /// Checks an address that arrived as a DTO.
    pub fn validated(self) -> Result<Self, CustomerError> {
        Self::parse(&self.line1, &self.city, &self.postcode, &self.country)
    }
}

/// How a customer pays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PaymentMethod {
    Card { last4: String },
    Invoice,
}

impl PaymentMethod {
    pub fn validated(self) -> Result<Self, CustomerError> {
        match self {
            PaymentMethod::Card { last4 }
                if last4.len() != 4 || !last4.bytes().all(|b| b.is_ascii_digit()) =>
            {
                Err(invalid("payment_method.last4", "must be the last four digits of the card"))
            }
            other => Ok(other),
        }
    }

    pub(crate) fn columns(&self) -> (&'static str, Option<&str>) {
        match self {
            PaymentMethod::Card { last4 } => ("card", Some(last4)),
            PaymentMethod::Invoice => ("invoice", None),
        }
    }

    pub(crate) fn from_columns(kind: &str, last4: Option<String>) -> Self {
        match (kind, last4) {
            ("card", Some(last4)) => PaymentMethod::Card { last4 },
            _ => PaymentMethod::Invoice,
        }
    }
}

/// A customer as the customer service owns it, and as its events carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Customer {
    #[schema(value_type = String)]
    pub id: CustomerId,
    pub name: String,
    pub email: String,
    pub address: Address,
    pub payment_method: PaymentMethod,
    /// Grows by one with every change; replicas keep the highest they have seen.
    pub version: u64,
}

/// A new customer, validated.
#[derive(Debug, Clone)]
pub struct Registration {
    pub name: String,
    pub email: String,
    pub address: Address,
    pub payment_method: PaymentMethod,
}

impl Registration {
    pub fn parse(
        name: &str,
        email: &str,
        address: Address,
        payment_method: PaymentMethod,
    ) -> Result<Self, CustomerError> {
        let email = text("email", email, 254)?.to_ascii_lowercase();
        let well_formed =
            email.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
        if !well_formed {
            return Err(invalid("email", "must look like name@example.com"));
        }
        Ok(Self {
            name: text("name", name, 100)?,
            email,
            address: address.validated()?,
            payment_method: payment_method.validated()?,
        })
    }
}
