//! The customer service's sign-in contract, published on the customer stream: the public
//! key its session tokens are signed with, and the sessions it revoked. Every service that
//! checks a shopper's sign-in replicates both ([`crate::service::session`]), so it verifies
//! tokens locally, also while the customer service is down.

use kit::envelope::NewEvent;
use serde::{Deserialize, Serialize};

pub const SIGNING_KEY_PUBLISHED: &str = "SigningKeyPublished";
pub const SESSION_REVOKED: &str = "SessionRevoked";

/// Every sign-in kind the customer service publishes.
pub const KINDS: [&str; 2] = [SIGNING_KEY_PUBLISHED, SESSION_REVOKED];

/// The schema version of both payloads.
pub const SCHEMA: u32 = 1;

/// The public half of a key session tokens are signed with (Ed25519).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKey {
    /// Named in every token's footer (`{"kid": ...}`), e.g. `k-0193…`.
    pub kid: String,
    /// The 32-byte Ed25519 public key, base64url without padding.
    pub public_key: String,
}

/// A session that no longer signs anyone in: its owner signed out or changed the password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRevoked {
    /// The token's `jti`.
    pub session_id: String,
    pub customer_id: String,
    /// When the token expires anyway; after that the revocation need not be kept.
    pub expires_at_ms: u64,
}

pub fn key_event(key: &SigningKey) -> NewEvent {
    NewEvent::new(SIGNING_KEY_PUBLISHED, key.kid.as_str(), 1, key).schema(SCHEMA)
}

pub fn revoked_event(revoked: &SessionRevoked) -> NewEvent {
    NewEvent::new(SESSION_REVOKED, revoked.customer_id.as_str(), 1, revoked).schema(SCHEMA)
}
