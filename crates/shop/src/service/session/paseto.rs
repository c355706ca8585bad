//! Session tokens in the PASETO v4.public format: the claims as JSON, signed with Ed25519
//! over PASETO's pre-authentication encoding, the signing key named in the footer.
//!
//! Built on `ed25519-dalek` (already in the build for the NATS client's keys) instead of a
//! PASETO crate: the format is three lines of encoding, the signature is the crate's, and
//! any PASETO v4 library can verify these tokens with the published public key.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

const HEADER: &str = "v4.public.";

/// What a session token says: who is signed in, by which session, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The customer, e.g. `c-ada`.
    pub sub: String,
    /// The session, so it can be revoked on its own.
    pub jti: String,
    /// When it was issued and when it expires, RFC 3339 as PASETO's registered claims.
    #[serde(with = "time::serde::rfc3339")]
    pub iat: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub exp: time::OffsetDateTime,
}

#[derive(Debug, Serialize, Deserialize)]
struct Footer {
    kid: String,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a v4.public session token")]
    Malformed,
    #[error("the token is signed with key {0}, which this service does not know (yet)")]
    UnknownKey(String),
    #[error("the token's signature is wrong")]
    BadSignature,
}

/// A fresh Ed25519 key from the operating system's randomness.
pub fn generate_key() -> SigningKey {
    SigningKey::from_bytes(&rand::random::<[u8; 32]>())
}

pub fn encode_key(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A public key as [`encode_key`] wrote it.
pub fn decode_public(text: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = URL_SAFE_NO_PAD.decode(text).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// A secret key as [`encode_key`] wrote it.
pub fn decode_secret(text: &str) -> Option<SigningKey> {
    let bytes: [u8; 32] = URL_SAFE_NO_PAD.decode(text).ok()?.try_into().ok()?;
    Some(SigningKey::from_bytes(&bytes))
}

/// PASETO's pre-authentication encoding: the count and each piece, length-prefixed.
fn pae(pieces: &[&[u8]]) -> Vec<u8> {
    let le64 = |n: usize| (n as u64 & (u64::MAX >> 1)).to_le_bytes();
    let mut out = le64(pieces.len()).to_vec();
    for piece in pieces {
        out.extend_from_slice(&le64(piece.len()));
        out.extend_from_slice(piece);
    }
    out
}

/// Signs `claims` with `key`, named `kid` in the footer.
pub fn sign(key: &SigningKey, kid: &str, claims: &Claims) -> String {
    let message = serde_json::to_vec(claims).expect("claims serialize");
    let footer = serde_json::to_vec(&Footer { kid: kid.to_owned() }).expect("a footer serializes");
    let signature = key.sign(&pae(&[HEADER.as_bytes(), &message, &footer, b""]));
    let mut body = message;
    body.extend_from_slice(&signature.to_bytes());
    format!("{HEADER}{}.{}", URL_SAFE_NO_PAD.encode(body), URL_SAFE_NO_PAD.encode(footer))
}

/// The key id a token names, read before its signature is checked (to pick the key).
pub fn kid(token: &str) -> Result<String, TokenError> {
    let (_, footer) = split(token)?;
    let footer: Footer = serde_json::from_slice(&footer).map_err(|_| TokenError::Malformed)?;
    Ok(footer.kid)
}

/// The claims of `token` if `key` signed it. Expiry is the caller's to check.
pub fn verify(key: &VerifyingKey, token: &str) -> Result<Claims, TokenError> {
    let (body, footer) = split(token)?;
    if body.len() < Signature::BYTE_SIZE {
        return Err(TokenError::Malformed);
    }
    let (message, signature) = body.split_at(body.len() - Signature::BYTE_SIZE);
    let signature = Signature::from_slice(signature).map_err(|_| TokenError::Malformed)?;
    key.verify(&pae(&[HEADER.as_bytes(), message, &footer, b""]), &signature)
        .map_err(|_| TokenError::BadSignature)?;
    serde_json::from_slice(message).map_err(|_| TokenError::Malformed)
}

/// The decoded body (message and signature) and footer of a token.
fn split(token: &str) -> Result<(Vec<u8>, Vec<u8>), TokenError> {
    let rest = token.strip_prefix(HEADER).ok_or(TokenError::Malformed)?;
    let (body, footer) = rest.split_once('.').ok_or(TokenError::Malformed)?;
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Malformed);
    Ok((decode(body)?, decode(footer)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        Claims { sub: "c-ada".into(), jti: "s-1".into(), iat: now, exp: now + time::Duration::hours(1) }
    }

    #[test]
    fn a_signed_token_verifies_with_its_public_key_and_names_its_key() {
        let key = generate_key();
        let token = sign(&key, "k-1", &claims());
        assert!(token.starts_with("v4.public."));
        assert_eq!(kid(&token).unwrap(), "k-1");
        assert_eq!(verify(&key.verifying_key(), &token).unwrap(), claims());
    }

    #[test]
    fn another_key_or_a_changed_claim_or_footer_is_refused() {
        let key = generate_key();
        let token = sign(&key, "k-1", &claims());
        assert_eq!(verify(&generate_key().verifying_key(), &token), Err(TokenError::BadSignature));
        let forged_footer =
            format!("{}.{}", token.rsplit_once('.').unwrap().0, URL_SAFE_NO_PAD.encode(br#"{"kid":"k-2"}"#));
        assert_eq!(verify(&key.verifying_key(), &forged_footer), Err(TokenError::BadSignature));
        let mut other = claims();
        other.sub = "c-bob".into();
        let theirs = sign(&generate_key(), "k-1", &other);
        let spliced = format!("{}.{}", theirs.rsplit_once('.').unwrap().0, token.rsplit_once('.').unwrap().1);
        assert_eq!(verify(&key.verifying_key(), &spliced), Err(TokenError::BadSignature));
        assert_eq!(verify(&key.verifying_key(), "v4.public.!!"), Err(TokenError::Malformed));
        assert_eq!(kid("Bearer abc"), Err(TokenError::Malformed));
    }

    #[test]
    fn keys_survive_their_text_form() {
        let key = generate_key();
        let public = decode_public(&encode_key(key.verifying_key().as_bytes())).unwrap();
        assert_eq!(public, key.verifying_key());
        let secret = decode_secret(&encode_key(&key.to_bytes())).unwrap();
        assert_eq!(secret.to_bytes(), key.to_bytes());
    }
}
