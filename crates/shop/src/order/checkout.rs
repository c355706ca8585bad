//! The checkout's two choices (DESIGN §1): the address and payment method come from the
//! local replica (available; with read-your-writes by consistency token), the total from
//! a synchronous quote by the catalog (consistent).

use std::sync::Arc;

use kit::replica::Caught;
use kit::token::ConsistencyToken;
use serde::Serialize;

use super::model::OrderError;
use super::store::{self, CartLine};
use crate::contracts::catalog::{Quote, QuoteItem, QuoteLine, QuoteRequest};
use crate::contracts::customer as customer_events;
use crate::contracts::customer::{Address, Customer, PaymentMethod};
use crate::service::{AddressChoice, Context, PeerError, ServiceName, SignedIn};

/// Where the checkout's address came from, and how fresh it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Replica,
    Owner,
    Override,
    /// Neither the replica nor the customer service could say.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AddressSourceView {
    pub source: Source,
    /// The customer's version the answer reflects.
    pub version: Option<u64>,
    /// How long ago that version was written (0 when asked from the owner).
    pub age_ms: Option<u64>,
    /// True when the answer is known to be older than what the shopper last wrote.
    pub stale: bool,
}

/// The customer's address and payment method as the checkout shows them.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub customer: Option<Customer>,
    pub source: AddressSourceView,
}

impl Resolved {
    fn from_replica(replicated: Option<store::ReplicatedCustomer>, stale: bool) -> Self {
        match replicated {
            Some(r) => Self {
                source: AddressSourceView {
                    source: Source::Replica,
                    version: Some(r.customer.version),
                    age_ms: Some(store::age_ms(r.occurred_at_ms)),
                    stale,
                },
                customer: Some(r.customer),
            },
            None => Self {
                customer: None,
                source: AddressSourceView {
                    source: Source::Unknown,
                    version: None,
                    age_ms: None,
                    stale: true,
                },
            },
        }
    }

    fn from_owner(customer: Customer) -> Self {
        Self {
            source: AddressSourceView {
                source: Source::Owner,
                version: Some(customer.version),
                age_ms: Some(0),
                stale: false,
            },
            customer: Some(customer),
        }
    }

    pub fn address(&self) -> Option<&Address> {
        self.customer.as_ref().map(|c| &c.address)
    }

    pub fn payment_method(&self) -> Option<&PaymentMethod> {
        self.customer.as_ref().map(|c| &c.payment_method)
    }
}

async fn replica(ctx: &Context, customer_id: &str) -> Result<Option<store::ReplicatedCustomer>, OrderError> {
    let id = customer_id.to_owned();
    Ok(ctx.store.transact(move |tx| store::replicated_customer(tx, &id)).await?)
}

/// What a checkout or an order starts from, read in one transaction: the shopper's cart
/// and, with the replica choice, the replica's customer (what [`resolve`] answers from
/// unless a consistency token asks for newer).
pub struct Basket {
    pub cart: Vec<CartLine>,
    pub known: Option<store::ReplicatedCustomer>,
}

impl Basket {
    pub async fn read(ctx: &Context, customer_id: &str) -> Result<Self, OrderError> {
        let id = customer_id.to_owned();
        let replicated = ctx.choices.address == AddressChoice::Replica;
        let (cart, known) = ctx
            .store
            .transact(move |tx| {
                let known = if replicated { store::replicated_customer(tx, &id)? } else { None };
                Ok::<_, kit::store::StoreError>((store::cart(tx, &id)?, known))
            })
            .await?;
        Ok(Self { cart, known })
    }
}

/// Asks the customer service, on the shopper's behalf (with their token).
async fn owner(ctx: &Context, shopper: &SignedIn) -> Result<Customer, PeerError> {
    let path = format!("/customers/{}", shopper.customer_id());
    ctx.peer(ServiceName::Customer).get_as(&path, shopper.token()).await
}

/// Finds the customer's address and payment method by the configured choice.
///
/// With the replica choice: a token naming this customer is waited for (bounded); if the
/// replica does not catch up in time the owner is asked through its breaker, and if that
/// fails too the replica answers marked stale. Never an error for an unreachable owner.
/// `known` is the replica's customer as [`Basket::read`] found it.
pub async fn resolve(
    ctx: &Context,
    shopper: &SignedIn,
    token: Option<&ConsistencyToken>,
    known: Option<store::ReplicatedCustomer>,
) -> Result<Resolved, OrderError> {
    let customer_id = shopper.customer_id();
    if ctx.choices.address == AddressChoice::Sync {
        return match owner(ctx, shopper).await {
            Ok(customer) => Ok(Resolved::from_owner(customer)),
            Err(PeerError::Refused { status: 404, .. }) => {
                Err(OrderError::UnknownCustomer(customer_id.to_owned()))
            }
            Err(e) => Err(OrderError::AddressUnknown(e.to_string())),
        };
    }
    let wanted = token.map(|t| {
        t.for_scope(customer_events::SCOPE)
            .filter(|e| e.key() == customer_id)
            .fold(ConsistencyToken::new(), |acc, e| acc.with(e.clone()))
    });
    let Some(wanted) = wanted.filter(|w| !w.entries().is_empty()) else {
        if known.is_some() {
            return Ok(Resolved::from_replica(known, false));
        }
        return match owner(ctx, shopper).await {
            Ok(customer) => Ok(Resolved::from_owner(customer)),
            Err(PeerError::Refused { status: 404, .. }) => {
                Err(OrderError::UnknownCustomer(customer_id.to_owned()))
            }
            Err(_) => Ok(Resolved::from_replica(None, true)),
        };
    };
    if let Caught::Up = ctx.gate.wait_for(&ctx.store, &wanted, ctx.choices.token_wait).await? {
        return Ok(Resolved::from_replica(replica(ctx, customer_id).await?, false));
    }
    match owner(ctx, shopper).await {
        Ok(customer) => Ok(Resolved::from_owner(customer)),
        Err(_) => Ok(Resolved::from_replica(replica(ctx, customer_id).await?, true)),
    }
}

/// The checkout's total: confirmed only by a fresh quote from the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Total {
    pub confirmed: bool,
    pub cents: Option<u64>,
    pub lines: Vec<QuoteLine>,
    /// Why the total could not be confirmed.
    pub reason: Option<String>,
}

/// Asks the catalog for a binding quote of the cart.
pub async fn quote(ctx: &Context, cart: &[CartLine]) -> Result<Quote, PeerError> {
    let request = QuoteRequest {
        items: cart
            .iter()
            .map(|l| QuoteItem { product_id: l.product_id.clone(), quantity: l.quantity })
            .collect(),
    };
    ctx.peer(ServiceName::Catalog).post("/quote", &request).await
}

pub async fn total(ctx: &Context, cart: &[CartLine]) -> Total {
    if cart.is_empty() {
        return Total { confirmed: true, cents: Some(0), lines: Vec::new(), reason: None };
    }
    match quote(ctx, cart).await {
        Ok(q) => Total { confirmed: true, cents: Some(q.total_cents), lines: q.lines, reason: None },
        Err(e) => Total { confirmed: false, cents: None, lines: Vec::new(), reason: Some(e.to_string()) },
    }
}

/// Everything the checkout page shows.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Checkout {
    pub customer_id: String,
    pub cart: Vec<CartLine>,
    pub address: Option<Address>,
    pub payment_method: Option<PaymentMethod>,
    pub address_source: AddressSourceView,
    pub total: Total,
}

pub async fn checkout(
    ctx: &Arc<Context>,
    shopper: &SignedIn,
    token: Option<&ConsistencyToken>,
) -> Result<Checkout, OrderError> {
    let customer_id = shopper.customer_id();
    let Basket { cart, known } = Basket::read(ctx, customer_id).await?;
    let (resolved, total) = tokio::join!(resolve(ctx, shopper, token, known), total(ctx, &cart));
    let resolved = resolved?;
    Ok(Checkout {
        customer_id: customer_id.to_owned(),
        address: resolved.address().cloned(),
        payment_method: resolved.payment_method().cloned(),
        address_source: resolved.source,
        cart,
        total,
    })
}
