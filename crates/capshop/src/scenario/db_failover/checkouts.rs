//! The checkout load of the failover and what its client was told: every attempt with
//! when it started and ended, and the id of every order the shop acknowledged (201), so
//! the orders can be read back after the failover and the missing ones listed by key.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::bail;
use serde_json::json;
use tokio::time::Instant;

use crate::scenario::lab::LabShop;

const CUSTOMERS: [&str; 3] = ["c-ada", "c-bob", "c-cyd"];

/// How many shoppers check out at once.
pub const WORKERS: usize = CUSTOMERS.len();

/// One checkout attempt.
#[derive(Debug, Clone)]
pub struct Checkout {
    pub started: Instant,
    pub ended: Instant,
    /// The cart took the item and the order was placed (201).
    pub ok: bool,
    /// The order the shop acknowledged.
    pub order: Option<String>,
    /// How long placing the order took (the write measured).
    pub placing: Duration,
}

/// Every checkout attempt of one run, in the order they ended.
#[derive(Clone, Default)]
pub struct Checkouts(Arc<Mutex<Vec<Checkout>>>);

impl Checkouts {
    /// One checkout by worker `worker`: an item in the cart, then the order placed.
    pub async fn attempt(&self, shop: &LabShop, worker: usize, n: u64) -> bool {
        let started = Instant::now();
        let product = format!("p-{:03}", 1 + n % 20);
        let (cart, placed) = shop.checkout(CUSTOMERS[worker % CUSTOMERS.len()], &product, json!({})).await;
        let ok = cart.ok() && placed.status == 201;
        let order = placed.body["id"].as_str().filter(|_| placed.status == 201).map(str::to_owned);
        let checkout = Checkout { started, ended: Instant::now(), ok, order, placing: placed.latency };
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(checkout);
        ok
    }

    pub fn all(&self) -> Vec<Checkout> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// When the first checkout that started at or after `from` succeeded.
    pub fn first_success_since(&self, from: Instant) -> Option<Instant> {
        self.all().iter().filter(|c| c.ok && c.started >= from).map(|c| c.ended).min()
    }
}

/// What the order service holds now of the orders it acknowledged.
#[derive(Debug, Default)]
pub struct ReadBack {
    /// Acknowledged, and not there any more: the lost writes, by order id.
    pub lost: Vec<String>,
    /// There, still waiting for inventory's answer.
    pub pending: Vec<String>,
    /// There (whatever their status).
    pub present: Vec<String>,
}

/// Reads each of `orders` back through the gateway (404: lost).
pub async fn read_back(shop: &LabShop, orders: &[String]) -> anyhow::Result<ReadBack> {
    let mut found = ReadBack::default();
    for id in orders {
        let mut tries = 0;
        let answer = loop {
            let answer = shop.get(&format!("/api/order/orders/{id}")).await;
            tries += 1;
            if answer.ok() || answer.status == 404 || tries == 20 {
                break answer;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        match answer.status {
            404 => found.lost.push(id.clone()),
            200..300 => {
                if answer.body["status"] == "pending_stock" {
                    found.pending.push(id.clone());
                }
                found.present.push(id.clone());
            }
            status => bail!("order {id} could not be read back: {status} {}", answer.body),
        }
    }
    Ok(found)
}
