//! What the payment service publishes, and its synchronous authorization contract.

pub use crate::contracts::payment::{
    Authorization, AuthorizationRequest, AuthorizationStatus, KINDS, PAYMENT_AUTHORIZED, PAYMENT_DECLINED,
    PAYMENT_VOIDED, SCHEMA, VoidRequest, event,
};
