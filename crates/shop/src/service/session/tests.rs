use kit::consumer::Handler;
use kit::store::{Store, StoreError};
use proptest::prelude::*;

use super::paseto::{self, Claims};
use super::replica::{self, SessionReplica};
use super::{Refusal, Sessions};
use crate::contracts::session::{self as contract, SessionRevoked, SigningKey};
use crate::service::testing::{envelope, scrambled};

const NOW_MS: u64 = 1_800_000_000_000;

fn claims(customer: &str, session: &str, expires_in_s: i64) -> Claims {
    let now = time::OffsetDateTime::from_unix_timestamp((NOW_MS / 1000) as i64).unwrap();
    Claims {
        sub: customer.into(),
        jti: session.into(),
        iat: now,
        exp: now + time::Duration::seconds(expires_in_s),
    }
}

fn invalid(result: Result<super::SignedIn, Refusal>) -> String {
    match result {
        Err(Refusal::Invalid(reason)) => reason,
        other => panic!("expected an invalid token, got {other:?}"),
    }
}

#[test]
fn a_token_signs_in_its_customer_until_it_expires_or_is_revoked() {
    let key = paseto::generate_key();
    let sessions = Sessions::default();
    let token = paseto::sign(&key, "k-1", &claims("c-ada", "s-1", 3600));
    assert!(invalid(sessions.verify(&token, NOW_MS)).contains("does not know"), "no key yet");

    sessions.learn_key("k-1".into(), key.verifying_key());
    let signed_in = sessions.verify(&token, NOW_MS).unwrap();
    assert_eq!(signed_in.customer_id(), "c-ada");
    assert_eq!(signed_in.session_id(), "s-1");
    assert!(signed_in.owns("c-ada", String::new).is_ok());
    assert_eq!(signed_in.owns("c-bob", || "no customer c-bob".into()).unwrap_err().status, 404);

    assert!(invalid(sessions.verify(&token, NOW_MS + 3_600_000)).contains("expired"));
    sessions.revoke("s-1".into(), NOW_MS + 3_600_000, NOW_MS);
    assert!(invalid(sessions.verify(&token, NOW_MS)).contains("ended"));
}

#[test]
fn a_token_of_another_key_under_a_known_name_is_refused() {
    let sessions = Sessions::default();
    sessions.learn_key("k-1".into(), paseto::generate_key().verifying_key());
    let forged = paseto::sign(&paseto::generate_key(), "k-1", &claims("c-ada", "s-1", 3600));
    assert!(invalid(sessions.verify(&forged, NOW_MS)).contains("signature"));
    assert!(invalid(sessions.verify("an-admin-token", NOW_MS)).contains("v4.public"));
}

#[test]
fn a_token_checked_once_is_still_judged_on_every_request_and_a_forged_copy_is_checked_anew() {
    let key = paseto::generate_key();
    let sessions = Sessions::default();
    sessions.learn_key("k-1".into(), key.verifying_key());
    let token = paseto::sign(&key, "k-1", &claims("c-ada", "s-1", 60));
    for _ in 0..3 {
        assert_eq!(sessions.verify(&token, NOW_MS).unwrap().customer_id(), "c-ada");
    }
    assert_eq!(sessions.0.read().unwrap().checked.len(), 1, "checked once, remembered");
    let forged = paseto::sign(&paseto::generate_key(), "k-1", &claims("c-ada", "s-1", 60));
    assert!(
        invalid(sessions.verify(&forged, NOW_MS)).contains("signature"),
        "the same claims, signed by another"
    );
    assert!(invalid(sessions.verify(&token, NOW_MS + 60_000)).contains("expired"));
    sessions.revoke("s-1".into(), NOW_MS + 60_000, NOW_MS);
    assert!(invalid(sessions.verify(&token, NOW_MS)).contains("ended"), "a remembered token is revoked too");
}

#[test]
fn the_checked_tokens_a_process_remembers_are_bounded() {
    let key = paseto::generate_key();
    let sessions = Sessions::default();
    sessions.learn_key("k-1".into(), key.verifying_key());
    for n in 0..=super::CHECKED_MAX {
        let token = paseto::sign(&key, "k-1", &claims("c-ada", &format!("s-{n}"), 60));
        sessions.verify(&token, NOW_MS).unwrap();
    }
    assert!(sessions.0.read().unwrap().checked.len() <= super::CHECKED_MAX);
}

#[test]
fn revocations_of_expired_tokens_are_not_kept() {
    let sessions = Sessions::default();
    sessions.revoke("s-old".into(), NOW_MS - 1, NOW_MS);
    sessions.revoke("s-1".into(), NOW_MS + 10, NOW_MS);
    sessions.revoke("s-2".into(), NOW_MS + 1_000, NOW_MS + 20);
    let known = sessions.0.read().unwrap();
    assert_eq!(known.revoked.keys().collect::<Vec<_>>(), vec!["s-2"]);
}

/// Two keys and five revocations (one of an expired token), in publishing order.
fn history() -> Vec<kit::envelope::Envelope> {
    let mut events: Vec<_> = ["k-1", "k-2"]
        .into_iter()
        .map(|kid| {
            let public = paseto::encode_key(paseto::generate_key().verifying_key().as_bytes());
            contract::key_event(&SigningKey { kid: kid.into(), public_key: public })
        })
        .collect();
    let far = kit::clock::now_ms() + 3_600_000;
    for (n, expires) in [far, far, 1, far, far].into_iter().enumerate() {
        let revoked = SessionRevoked {
            session_id: format!("s-{n}"),
            customer_id: "c-ada".into(),
            expires_at_ms: expires,
        };
        events.push(contract::revoked_event(&revoked));
    }
    events.iter().zip(1..).map(|(e, seq)| envelope("customer", e, seq)).collect()
}

/// Applies `batches` in a fresh store and reads back what it knows.
fn replicate(batches: &[Vec<kit::envelope::Envelope>]) -> (Vec<String>, Vec<String>) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("s.db").display());
        let store = Store::open(&url, &[&replica::MIGRATIONS]).await.unwrap();
        let handler = SessionReplica { sessions: Sessions::default() };
        let handler = std::sync::Arc::new(handler);
        for batch in batches {
            let (handler, batch) = (handler.clone(), batch.clone());
            store
                .transact(move |tx| {
                    for event in &batch {
                        handler.handle(tx, event).map_err(|e| StoreError::Database(e.to_string()))?;
                    }
                    Ok::<_, StoreError>(())
                })
                .await
                .unwrap();
        }
        let now = kit::clock::now_ms();
        let (keys, revoked) = store.transact(move |tx| replica::known(tx, now)).await.unwrap();
        let mut keys: Vec<String> = keys.into_iter().map(|(kid, _)| kid).collect();
        let mut revoked: Vec<String> = revoked.into_iter().map(|(s, _)| s).collect();
        keys.sort();
        revoked.sort();
        let memory = handler.sessions.0.read().unwrap();
        let mut in_memory: Vec<String> = memory.revoked.keys().cloned().collect();
        in_memory.sort();
        assert_eq!(in_memory, revoked, "memory and database agree");
        assert_eq!(memory.keys.len(), keys.len());
        (keys, revoked)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn shuffled_and_duplicated_deliveries_end_as_in_order_delivery(
        (events, batches) in scrambled(Just(history()).prop_map(|h| h))
    ) {
        let in_order = replicate(&[events]);
        prop_assert_eq!(&in_order.0, &vec!["k-1".to_owned(), "k-2".to_owned()]);
        prop_assert_eq!(in_order.1.len(), 4, "the expired token's revocation is not kept");
        prop_assert_eq!(replicate(&batches), in_order);
    }
}
