//! cp: who writes a stock change. A change sets an absolute count, and a site computes
//! its counter's step from its own view; two sites doing that at once, each from a view
//! that does not yet hold the other's step, can count the stock below what is finally
//! reserved (or below zero). So in cp every change is made at one site, the arbiter
//! (dc1): the other site hands its changes on over the link between them and answers
//! what the arbiter answered. The arbiter's view holds every final reservation (each of
//! the other site's needed its acknowledgement, recorded there), so its refusal of a
//! count below what is reserved is exact, and the other site's later reservations are
//! acknowledged against the lowered count. Nothing is lost in availability: a cp site
//! that cannot reach the other refuses stock changes anyway.

use std::sync::Arc;

use axum::http::StatusCode;

use super::agreement;
use super::http::AdjustRequest;
use super::model::{ProductId, Stock};
use super::sites::Site;
use crate::service::{Context, PeerError, Problem, ServiceName};

/// Hands the change of `id`'s stock asked of `here` on to the arbiter and answers its
/// stock as the arbiter counted it; its refusal (a count below what is reserved, 409) is
/// the caller's, and an arbiter out of reach is cp's 503 with the reason.
pub async fn hand_on(
    ctx: &Arc<Context>,
    here: Site,
    id: &ProductId,
    request: &AdjustRequest,
) -> Result<Stock, Problem> {
    let path = format!("/stock/{}", id.as_str());
    let peer = ctx.peer(ServiceName::Inventory);
    peer.put_as(&path, request, &ctx.admin_token).await.map_err(|e| match e {
        PeerError::Refused { status, ref detail, .. } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::CONFLICT);
            Problem::new(status, format!("the arbiter site {} refused: {detail}", Site::arbiter()))
        }
        PeerError::Unavailable { .. } => Problem::unavailable(agreement::unreachable(here, &e)),
    })
}
