//! The shipping service's contract: every event carries the whole shipment at its new
//! version (key: order id).

use kit::envelope::NewEvent;
use serde::{Deserialize, Serialize};

use super::customer::Address;

pub const SHIPMENT_CREATED: &str = "ShipmentCreated";
pub const SHIPMENT_HELD: &str = "ShipmentHeld";
pub const KINDS: [&str; 2] = [SHIPMENT_CREATED, SHIPMENT_HELD];

/// The schema version of the [`Shipment`] payload.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ShipmentStatus {
    /// Waiting until the order is confirmed, paid and its address agrees; `reason` says which.
    Held,
    Shipped,
}

/// A shipment as shipping publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Shipment {
    pub order_id: String,
    pub customer_id: String,
    pub status: ShipmentStatus,
    pub address: Address,
    pub reason: Option<String>,
    pub version: u64,
}

pub fn event(shipment: &Shipment) -> NewEvent {
    let kind = match shipment.status {
        ShipmentStatus::Held => SHIPMENT_HELD,
        ShipmentStatus::Shipped => SHIPMENT_CREATED,
    };
    NewEvent::new(kind, shipment.order_id.as_str(), shipment.version, shipment).schema(SCHEMA)
}
