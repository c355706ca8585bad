//! What shipping publishes (key: order id).

use kit::envelope::NewEvent;
use serde::{Deserialize, Serialize};

use crate::customer::model::Address;

pub const SHIPMENT_CREATED: &str = "ShipmentCreated";
pub const SHIPMENT_HELD: &str = "ShipmentHeld";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ShipmentStatus {
    /// Waiting until the order is confirmed, paid and its address agrees; `reason` says which.
    Held,
    Shipped,
}

/// A shipment as shipping owns it and as its events carry it.
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
    NewEvent::new(kind, shipment.order_id.as_str(), shipment.version, shipment)
}
