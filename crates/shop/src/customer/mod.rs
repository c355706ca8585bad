//! The customer service: the source of truth for customers, their addresses and payment
//! methods. It consumes nothing; order and shipping replicate what it publishes.

pub mod events;
pub mod facts;
pub mod http;
pub mod model;
pub mod sign_in;
pub mod store;

use std::sync::Arc;

use kit::store::StoreError;
use utoipa_axum::router::OpenApiRouter;

use crate::service::{Consumers, Context, Service, ServiceName, session};
use model::{Address, CustomerId, Password, PaymentMethod, Registration};

/// The password of the seeded customers (`capshop up` prints it): for demonstrations only.
pub const DEMO_PASSWORD: &str = "capshop-demo";

pub struct CustomerService;

/// One customer of a fresh shop: id, name, email, line1, city, postcode, country, card.
type SeedCustomer = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
);

/// The three customers of a fresh shop.
const SEED: [SeedCustomer; 3] = [
    (
        "c-ada",
        "Ada Lovelace",
        "ada@example.com",
        "12 St James's Square",
        "London",
        "SW1Y 4JH",
        "GB",
        Some("4242"),
    ),
    ("c-bob", "Bob Kahn", "bob@example.com", "1 Infinite Loop", "Cupertino", "95014", "US", None),
    ("c-cyd", "Cyd Charisse", "cyd@example.com", "Friedrichstr. 43", "Berlin", "10117", "DE", Some("1881")),
];

impl Service for CustomerService {
    const NAME: ServiceName = ServiceName::Customer;

    fn facts(
        tx: &mut kit::store::Tx<'_>,
        _: Option<crate::contracts::inventory::Site>,
    ) -> Result<crate::contracts::facts::ServiceFacts, kit::store::StoreError> {
        facts::read(tx)
    }

    fn routes(_: &Arc<Context>) -> OpenApiRouter<Arc<Context>> {
        http::routes()
    }

    fn consume(ctx: &Arc<Context>, consumers: &mut Consumers) {
        // Its own tokens are checked like everywhere else, revocations included.
        session::replicate(ctx, consumers);
    }

    /// The seed customers (with the demo password), and the signing key: made and
    /// published on first start, and known to this service's own sessions at once.
    async fn seed(ctx: Arc<Context>) -> Result<(), StoreError> {
        let outbox = ctx.outbox.clone();
        let password = Password::parse("password", DEMO_PASSWORD.into()).expect("the demo password is valid");
        let hash = tokio::task::spawn_blocking(move || password.hash())
            .await
            .map_err(|e| StoreError::Database(e.to_string()))?;
        let now = kit::clock::now_ms();
        let (kid, key) = ctx
            .store
            .transact(move |tx| {
                let key =
                    store::signing_key(tx, &outbox, now).map_err(|e| StoreError::Database(e.to_string()))?;
                let ids = SEED.map(|(id, ..)| id);
                if store::count(tx)? > 0 {
                    store::set_missing_password(tx, &ids, &hash)?;
                    return Ok(key);
                }
                for (id, name, email, line1, city, postcode, country, card) in SEED {
                    let address =
                        Address::parse(line1, city, postcode, country).expect("seed addresses are valid");
                    let method = card
                        .map_or(PaymentMethod::Invoice, |last4| PaymentMethod::Card { last4: last4.into() });
                    let new = Registration::parse(name, email, address, method, hash.clone())
                        .expect("seed customers are valid");
                    let id = CustomerId::parse(id).expect("seed ids are valid");
                    store::register(tx, &outbox, id, new).map_err(|e| StoreError::Database(e.to_string()))?;
                }
                Ok(key)
            })
            .await?;
        ctx.sessions.learn_key(kid, key.verifying_key());
        Ok(())
    }
}

#[cfg(test)]
mod tests;
