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
    #[error("the email or password is wrong")]
    WrongPassword,
    #[error("sessions cannot be signed yet: the signing key is missing, try again")]
    NoSigningKey,
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
            CustomerError::WrongPassword => Problem::new(axum::http::StatusCode::UNAUTHORIZED, e.to_string()),
            CustomerError::NoSigningKey => Problem::unavailable(e.to_string()),
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

/// A new customer, validated; the password already hashed.
#[derive(Debug, Clone)]
pub struct Registration {
    pub name: String,
    pub email: String,
    pub address: Address,
    pub payment_method: PaymentMethod,
    pub password_hash: PasswordHash,
}

/// A password as a client chose it: 8 to 128 characters. Never stored, logged or shown.
pub struct Password(String);

impl Password {
    pub fn parse(field: &'static str, password: String) -> Result<Self, CustomerError> {
        match password.chars().count() {
            8..=128 => Ok(Self(password)),
            _ => Err(invalid(field, "must be 8 to 128 characters")),
        }
    }

    /// Its argon2id hash (OWASP's parameters: 19 MiB, 2 passes) with a fresh salt; slow on
    /// purpose, so call it off the async threads.
    pub fn hash(&self) -> PasswordHash {
        use argon2::PasswordHasher;
        let salt = argon2::password_hash::SaltString::encode_b64(&rand::random::<[u8; 16]>())
            .expect("16 bytes make a salt");
        let hash = argon2::Argon2::default().hash_password(self.0.as_bytes(), &salt).expect("argon2 hashes");
        PasswordHash(hash.to_string())
    }

    /// Whether `hash` is this password's; a missing hash (no such customer, no password)
    /// costs the same time, so a guess cannot tell which emails exist.
    pub fn matches(&self, hash: Option<&PasswordHash>) -> bool {
        use argon2::PasswordVerifier;
        static UNKNOWN: std::sync::LazyLock<PasswordHash> =
            std::sync::LazyLock::new(|| Password("no password matches this".into()).hash());
        let stored = hash.unwrap_or(&UNKNOWN);
        let matched = argon2::password_hash::PasswordHash::new(&stored.0).is_ok_and(|parsed| {
            argon2::Argon2::default().verify_password(self.0.as_bytes(), &parsed).is_ok()
        });
        matched && hash.is_some()
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

/// An argon2id hash in the PHC string format, as the customer table keeps it.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(pub String);

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

/// An email as customers are found by: trimmed and lower case.
pub fn normalized_email(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

impl Registration {
    pub fn parse(
        name: &str,
        email: &str,
        address: Address,
        payment_method: PaymentMethod,
        password_hash: PasswordHash,
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
            password_hash,
        })
    }
}
