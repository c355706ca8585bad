//! Gathering every part's facts for [`crate::reconcile`]: from the files of a stopped
//! embedded shop (or a directory of the same layout, such as a backup), from the parts
//! running in this process (the embedded shop's gateway), or from the running parts'
//! `GET /admin/facts` (the distributed gateway), one read transaction per part.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use kit::store::{Store, StoreError};

use crate::catalog::CatalogService;
use crate::contracts::facts::{BusFacts, BusStream, DeadLetterFact, ShopFacts};
use crate::customer::CustomerService;
use crate::inventory::InventoryService;
use crate::inventory::sites::Site;
use crate::order::OrderService;
use crate::payment::PaymentService;
use crate::search::SearchService;
use crate::service::facts::{self, StateReader};
use crate::service::{Context, Part, Service, ServiceName};
use crate::shipping::ShippingService;
use crate::stores::StoreLocation;

#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    #[error("{dir} holds no {file}: point --data-dir (or --backup) at a capshop data dir, one with {files}")]
    NotAShop { dir: String, file: String, files: String },
    #[error("cannot read {part}'s database: {reason}")]
    Store { part: String, reason: String },
    #[error("no address for {0}: the gateway does not route to it")]
    Unrouted(String),
    #[error("cannot get {part}'s facts: {reason}")]
    Part { part: String, reason: String },
}

/// Every database of the shop, in the order a live read takes them: the order service
/// before payment, so an order's authorization (committed before the order) is always in
/// the payment facts read after it.
pub fn parts() -> Vec<String> {
    let mut parts = StoreLocation::parts();
    parts.sort_by_key(|p| (p != "order", p.clone()));
    parts
}

/// How `part`'s state is read, and the inventory site it is, if one.
pub(crate) fn reader(part: &str) -> Option<(StateReader, Option<Site>)> {
    let part: Part = part.parse().ok()?;
    let site = match part {
        Part::Site(site) => Some(site),
        Part::Service(_) => None,
    };
    let reader: StateReader = match part.service() {
        ServiceName::Customer => CustomerService::facts,
        ServiceName::Catalog => CatalogService::facts,
        ServiceName::Inventory => InventoryService::facts,
        ServiceName::Order => OrderService::facts,
        ServiceName::Payment => PaymentService::facts,
        ServiceName::Shipping => ShippingService::facts,
        ServiceName::Search => SearchService::facts,
    };
    Some((reader, site))
}

/// The facts of the shop whose SQLite files are in `dir` (`<part>.db` and `bus.db`),
/// which must not be running: each file is read in one transaction, and nothing is written.
pub async fn from_files(dir: &Path) -> Result<ShopFacts, FactsError> {
    let mut files: Vec<String> = parts().iter().map(|p| format!("{p}.db")).collect();
    files.push("bus.db".into());
    if let Some(file) = files.iter().find(|f| !dir.join(f).is_file()) {
        return Err(FactsError::NotAShop {
            dir: dir.display().to_string(),
            file: file.clone(),
            files: files.join(", "),
        });
    }
    let mut shop = ShopFacts::default();
    for part in parts() {
        let failed = |e: StoreError| FactsError::Store { part: part.clone(), reason: e.to_string() };
        let (state, site) = reader(&part).ok_or_else(|| FactsError::Unrouted(part.clone()))?;
        let store = Store::open(&StoreLocation::Sqlite.url_of(&part, dir), &[]).await.map_err(failed)?;
        shop.parts.push(facts::read(&store, part.clone(), state, site).await.map_err(failed)?);
    }
    let failed = |e: StoreError| FactsError::Store { part: "bus".into(), reason: e.to_string() };
    let bus = Store::open(&format!("sqlite:{}", dir.join("bus.db").display()), &[]).await.map_err(failed)?;
    shop.bus = bus.transact(read_bus).await.map_err(failed)?;
    Ok(shop)
}

/// The embedded bus file's heads per stream and its dead letters.
pub(crate) fn read_bus(tx: &mut kit::store::Tx<'_>) -> Result<BusFacts, StoreError> {
    let streams = tx
        .query("SELECT stream, head_seq FROM bus_stream ORDER BY stream", &[])?
        .into_iter()
        .map(|mut r| Ok(BusStream { stream: r.take(0)?, head: r.get(1)? }))
        .collect::<Result<_, StoreError>>()?;
    let dead_letters = tx
        .query(
            "SELECT p.consumer, l.stream, l.seq, l.key, l.id FROM bus_pending p JOIN bus_log l ON l.pos = p.pos \
             WHERE p.state = 'dead' ORDER BY p.consumer, l.stream, l.seq",
            &[],
        )?
        .into_iter()
        .map(|mut r| {
            Ok(DeadLetterFact {
                consumer: r.take(0)?,
                stream: r.take(1)?,
                seq: r.get(2)?,
                key: r.take(3)?,
                event_id: r.take(4)?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(BusFacts { streams, dead_letters, unreachable: Vec::new() })
}

/// The facts of the running shop, asked from each part's `GET /admin/facts` at the
/// address `routes` gives it, one part after the other in [`parts`]' order.
pub async fn from_parts(
    client: &reqwest::Client,
    routes: &BTreeMap<String, String>,
    admin_token: &str,
) -> Result<ShopFacts, FactsError> {
    let mut shop = ShopFacts { live: true, ..ShopFacts::default() };
    for part in parts() {
        let base = routes.get(&part).ok_or_else(|| FactsError::Unrouted(part.clone()))?;
        let failed = |reason: String| FactsError::Part { part: part.clone(), reason };
        let answer = client
            .get(format!("{}/admin/facts", base.trim_end_matches('/')))
            .bearer_auth(admin_token)
            .send()
            .await
            .map_err(|e| failed(format!("unreachable: {e}")))?;
        let status = answer.status();
        if !status.is_success() {
            let body: serde_json::Value = answer.json().await.unwrap_or_default();
            return Err(failed(format!("{status}: {}", body["detail"].as_str().unwrap_or("no detail"))));
        }
        let facts: ShopFacts = answer.json().await.map_err(|e| failed(format!("unreadable facts: {e}")))?;
        shop.merge(facts);
    }
    Ok(shop)
}

/// The parts running in this process (the embedded shop), whose facts the gateway reads
/// from their stores directly; empty when the parts are processes of their own.
#[derive(Clone, Default)]
pub struct LocalParts(BTreeMap<String, Arc<Context>>);

impl LocalParts {
    pub fn new(parts: &BTreeMap<Part, Arc<Context>>) -> Self {
        Self(parts.iter().map(|(part, ctx)| (part.name(), ctx.clone())).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The facts of the parts running in this process, read from their own stores (and their
/// links to the bus) in [`parts`]' order, as their `/admin/facts` would answer. A part
/// stopped on purpose keeps its store, so it is read too.
pub async fn from_local(local: &LocalParts) -> Result<ShopFacts, FactsError> {
    let mut shop = ShopFacts { live: true, ..ShopFacts::default() };
    for part in parts() {
        let ctx = local.0.get(&part).ok_or_else(|| FactsError::Unrouted(part.clone()))?;
        let (state, _) = reader(&part).ok_or_else(|| FactsError::Unrouted(part.clone()))?;
        let facts = facts::live(ctx, state)
            .await
            .map_err(|problem| FactsError::Part { part: part.clone(), reason: problem.to_string() })?;
        shop.merge(facts);
    }
    Ok(shop)
}
