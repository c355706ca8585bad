//! Placing an order: a binding quote from the catalog and a payment authorization, both
//! synchronous (consistent), then the order and its events in one transaction. If either
//! call cannot be made, no order and no event is written; an authorization payment may have
//! made meanwhile is voided once the placement is abandoned ([`super::placing`]).

use std::sync::Arc;

use kit::token::ConsistencyToken;

use super::checkout::{self, Basket, Source};
use super::events::{AddressSource, ORDER_ADDRESS_OVERRIDDEN, ORDER_PLACED, OrderLine, OrderStatus};
use super::model::{Order, OrderError, new_order_id};
use super::placing::{self, ABANDON_AFTER_MS};
use super::store;
use crate::contracts::customer::Address;
use crate::contracts::payment::{Authorization, AuthorizationRequest, AuthorizationStatus};
use crate::service::idempotency::{Claim, Written};
use crate::service::{Context, ServiceName, SignedIn};

pub async fn place(
    ctx: &Arc<Context>,
    shopper: &SignedIn,
    address_override: Option<Address>,
    token: Option<&ConsistencyToken>,
    claim: Option<Claim>,
) -> Result<Order, OrderError> {
    let customer_id = shopper.customer_id();
    let Basket { cart, known } = Basket::read(ctx, customer_id).await?;
    if cart.is_empty() {
        return Err(OrderError::EmptyCart(customer_id.to_owned()));
    }
    let quote = checkout::quote(ctx, &cart)
        .await
        .map_err(|e| OrderError::from_peer(e, OrderError::TotalUnconfirmed))?;
    let resolved = checkout::resolve(ctx, shopper, token, known).await?;
    let unknown = || {
        OrderError::AddressUnknown(format!(
            "customer {customer_id} is not replicated yet and the customer service is unavailable"
        ))
    };
    let payment_method = resolved.payment_method().cloned().ok_or_else(unknown)?;
    let (address, address_source) = match address_override {
        Some(address) => (address, AddressSource::Override),
        None => {
            let source = match resolved.source.source {
                Source::Owner => AddressSource::Owner,
                _ => AddressSource::Replica,
            };
            (resolved.address().cloned().ok_or_else(unknown)?, source)
        }
    };

    // The authorization and the order it is for are committed in two databases, and a
    // consistent cut pins the order service's before payment's (backup/). Of the placement
    // only the note needs the cut's pause (kit::pause): a hold either comes before the note
    // (the authorization then commits after every snapshot) or after it (the note is in the
    // order snapshot, and an authorization without its order there is one in flight). An
    // order the order snapshot holds was authorized before it, so the later payment
    // snapshot holds its authorization: the payment call and the commit need no pause.
    let order_id = new_order_id();
    let id = order_id.clone();
    let started = kit::clock::now_ms();
    let passage = ctx.pause().enter().await;
    ctx.store.transact(move |tx| placing::begin(tx, &id, started)).await?;
    drop(passage);
    let request = AuthorizationRequest {
        order_id: order_id.clone(),
        customer_id: customer_id.to_owned(),
        amount_cents: quote.total_cents,
        payment_method,
    };
    let authorization: Authorization = ctx
        .peer(ServiceName::Payment)
        .post("/authorizations", &request)
        .await
        .map_err(|e| OrderError::from_peer(e, OrderError::PaymentUnavailable))?;
    let reason = || authorization.reason.clone().unwrap_or_else(|| "no reason given".into());
    match authorization.status {
        AuthorizationStatus::Authorized => {}
        AuthorizationStatus::Declined => return Err(OrderError::PaymentDeclined(reason())),
        AuthorizationStatus::Voided => return Err(OrderError::PaymentUnavailable(reason())),
    }

    let overridden = address_source == AddressSource::Override;
    let order = Order {
        id: order_id,
        customer_id: customer_id.to_owned(),
        status: OrderStatus::PendingStock,
        lines: quote
            .lines
            .into_iter()
            .map(|l| OrderLine {
                product_id: l.product_id,
                name: l.name,
                quantity: l.quantity,
                unit_price_cents: l.unit_price_cents,
            })
            .collect(),
        total_cents: quote.total_cents,
        address,
        address_source,
        address_confirmed: false,
        payment_authorization_id: authorization.authorization_id,
        reason: None,
        version: 0,
    };
    let kinds: &'static [&'static str] =
        if overridden { &[ORDER_PLACED, ORDER_ADDRESS_OVERRIDDEN] } else { &[ORDER_PLACED] };
    let outbox = ctx.outbox.clone();
    let now = kit::clock::now_ms();
    ctx.store
        .transact(move |tx| {
            if !placing::finish(tx, &order.id)? {
                return Err(OrderError::PaymentUnavailable(format!(
                    "the placement took longer than {} s and was abandoned; its payment is voided",
                    ABANDON_AFTER_MS / 1000
                )));
            }
            let order = store::place(tx, &outbox, order, kinds, now)?;
            if let Some(claim) = &claim {
                claim.complete(tx, &answer(&order))?;
            }
            Ok(order)
        })
        .await
}

/// What placing `order` answers; recorded under the request's Idempotency-Key with the order.
pub fn answer(order: &Order) -> Written {
    Written::new(axum::http::StatusCode::CREATED, order, &super::events::token(order))
}
