//! Customers, their addresses and payment methods, validated once at the edge.

use serde::{Deserialize, Serialize};

pub use crate::contracts::customer::{Address, PaymentMethod};
use crate::contracts::{self, customer::text};

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

impl From<contracts::Invalid> for CustomerError {
    fn from(e: contracts::Invalid) -> Self {
        CustomerError::Invalid { field: e.field, reason: e.reason }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> CustomerError {
    CustomerError::Invalid { field, reason: reason.into() }
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

/// A customer as the customer service owns it.
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

impl From<&Customer> for contracts::customer::Customer {
    fn from(customer: &Customer) -> Self {
        Self {
            id: customer.id.to_string(),
            name: customer.name.clone(),
            email: customer.email.clone(),
            address: customer.address.clone(),
            payment_method: customer.payment_method.clone(),
            version: customer.version,
        }
    }
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
