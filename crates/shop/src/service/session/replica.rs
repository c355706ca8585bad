//! The replica of sign-in in a service's own database: the customer service's public keys
//! and its revoked sessions, applied from the customer stream by [`SessionReplica`]. Both
//! are sets, so duplicates and any order of delivery end in the same state.

use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use kit::bus::ConsumerSpec;
use kit::consumer::{Handler, HandlerError};
use kit::envelope::Envelope;
use kit::store::{Migrations, StoreError, Tx};

use super::{Sessions, paseto};
use crate::contracts::session::{self, SESSION_REVOKED, SIGNING_KEY_PUBLISHED, SessionRevoked, SigningKey};
use crate::service::{Consumers, Context};

/// The replicated keys and revocations, in every service's database.
pub const MIGRATIONS: Migrations = Migrations {
    component: "session",
    sqlite: &[include_str!("../../../migrations/sqlite/session.sql")],
    postgres: &[include_str!("../../../migrations/postgres/session.sql")],
};

/// Starts the consumer `<service>.sessions` of the customer stream, which keeps this
/// service's [`Sessions`] (and their tables) up to date.
pub fn replicate(ctx: &Arc<Context>, consumers: &mut Consumers) {
    consumers.start(
        ConsumerSpec::new(ctx.consumer_name("sessions"), &["customer"]),
        SessionReplica { sessions: ctx.sessions.clone() },
    );
}

/// How often a service on a shared database reads the sign-in replica again: revocations
/// another instance applied are refused here within this long.
pub const REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads the sign-in replica into `ctx.sessions` every [`REFRESH`] until `shutdown`.
pub async fn refresh_every(ctx: Arc<Context>, shutdown: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REFRESH) => {}
            _ = shutdown.cancelled() => return,
        }
        if let Err(e) = ctx.sessions.refresh(&ctx.store).await {
            tracing::debug!(error = %e, "cannot refresh the sign-in replica");
        }
    }
}

/// The keys, and the revocations of tokens not expired at `now_ms`.
pub(super) type Known = (Vec<(String, VerifyingKey)>, Vec<(String, u64)>);

pub(super) fn known(tx: &mut Tx<'_>, now_ms: u64) -> Result<Known, StoreError> {
    let mut keys = Vec::new();
    for mut row in tx.query("SELECT kid, public_key FROM session_key", &[])? {
        let kid: String = row.take(0)?;
        let text: String = row.take(1)?;
        let key = paseto::decode_public(&text)
            .ok_or_else(|| StoreError::Database(format!("the stored public key {kid} is not one")))?;
        keys.push((kid, key));
    }
    let revoked = tx
        .query(
            "SELECT session_id, expires_at_ms FROM revoked_session WHERE expires_at_ms > $1",
            &[now_ms.into()],
        )?
        .into_iter()
        .map(|mut row| Ok((row.take(0)?, row.get(1)?)))
        .collect::<Result<_, StoreError>>()?;
    Ok((keys, revoked))
}

/// Applies SigningKeyPublished and SessionRevoked; every other customer event is not its.
pub struct SessionReplica {
    pub sessions: Sessions,
}

impl Handler for SessionReplica {
    fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        match event.kind.as_str() {
            SIGNING_KEY_PUBLISHED => {
                let key: SigningKey = event.payload_as()?;
                let public = paseto::decode_public(&key.public_key).ok_or_else(|| {
                    HandlerError::permanent(format!("the public key of {} is not an Ed25519 key", key.kid))
                })?;
                tx.execute(
                    "INSERT INTO session_key (kid, public_key) VALUES ($1, $2) ON CONFLICT (kid) DO NOTHING",
                    &[key.kid.as_str().into(), key.public_key.as_str().into()],
                )?;
                // Learning a true key before the commit is harmless; a redelivery learns it again.
                self.sessions.learn_key(key.kid, public);
            }
            SESSION_REVOKED => {
                let revoked: SessionRevoked = event.payload_as()?;
                let now = kit::clock::now_ms();
                tx.execute("DELETE FROM revoked_session WHERE expires_at_ms <= $1", &[now.into()])?;
                if revoked.expires_at_ms > now {
                    tx.execute(
                        "INSERT INTO revoked_session (session_id, customer_id, expires_at_ms) VALUES ($1, $2, $3) \
                         ON CONFLICT (session_id) DO NOTHING",
                        &[
                            revoked.session_id.as_str().into(),
                            revoked.customer_id.as_str().into(),
                            revoked.expires_at_ms.into(),
                        ],
                    )?;
                }
                self.sessions.revoke(revoked.session_id, revoked.expires_at_ms, now);
            }
            _ => debug_assert!(!session::KINDS.contains(&event.kind.as_str())),
        }
        Ok(())
    }
}
