//! Every replica record against its source, and the stock of every product at each site.

use std::collections::BTreeMap;

use super::view::View;
use super::{Finding, Group};
use crate::contracts::inventory::{ReservationStatus, Site};

/// One record at a version, with what a replica must agree on at the same version.
struct Record {
    version: u64,
    content: String,
}

/// A replica and its source, by key.
struct Pair {
    /// e.g. `order.customer_replica`.
    replica: String,
    stream: String,
    consumer: String,
    source: BTreeMap<String, Record>,
    copy: BTreeMap<String, Record>,
}

fn records<T>(
    items: impl IntoIterator<Item = T>,
    record: impl Fn(T) -> (String, u64, String),
) -> BTreeMap<String, Record> {
    items.into_iter().map(record).map(|(key, version, content)| (key, Record { version, content })).collect()
}

pub fn check(view: &View<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for pair in pairs(view) {
        findings.extend(compare(view, &pair));
    }
    findings.extend(stock(view));
    findings
}

fn pairs(view: &View<'_>) -> Vec<Pair> {
    let customers = |content: fn(&crate::contracts::customer::Customer) -> String| {
        records(view.customers.values(), move |c| (c.id.clone(), c.version, content(c)))
    };
    let whole = |c: &crate::contracts::customer::Customer| format!("{c:?}");
    let address = |c: &crate::contracts::customer::Customer| format!("{:?}", c.address);
    let product = |p: &&crate::contracts::facts::ProductFact| {
        (p.id.clone(), p.version, format!("{} {}", p.name, p.price_cents))
    };
    let bare = |id: &str, version: u64| (id.to_owned(), version, String::new());
    let mut pairs = vec![
        Pair {
            replica: "order.customer_replica".into(),
            stream: "customer".into(),
            consumer: "order.customer-replica".into(),
            source: customers(whole),
            copy: records(view.order_customers.values(), |c| (c.id.clone(), c.version, whole(c))),
        },
        Pair {
            replica: "shipping.customer_address".into(),
            stream: "customer".into(),
            consumer: "shipping.customer-replica".into(),
            source: customers(address),
            copy: records(view.shipping_addresses.values(), |a| {
                (a.customer_id.clone(), a.version, format!("{:?}", a.address))
            }),
        },
        Pair {
            replica: "order.product_replica".into(),
            stream: "catalog".into(),
            consumer: "order.product-replica".into(),
            source: records(view.products.values(), product),
            copy: records(view.order_products.values(), product),
        },
        Pair {
            replica: "search.product".into(),
            stream: "catalog".into(),
            consumer: "search.catalog".into(),
            source: records(view.products.values(), |p| bare(&p.id, p.version)),
            copy: records(view.documents.values().filter(|d| d.kind == "product"), |d| {
                bare(&d.id, d.version)
            }),
        },
        Pair {
            replica: "search.order".into(),
            stream: "order".into(),
            consumer: "search.orders".into(),
            source: records(view.orders.values(), |o| bare(&o.id, o.version)),
            copy: records(view.documents.values().filter(|d| d.kind == "order"), |d| bare(&d.id, d.version)),
        },
        Pair {
            replica: "shipping.order_replica".into(),
            stream: "order".into(),
            consumer: "shipping.order-replica".into(),
            source: records(view.orders.values(), |o| {
                (o.id.clone(), o.version, o.status.as_str().to_owned())
            }),
            copy: records(view.shipping_orders.values(), |o| {
                (o.id.clone(), o.version, o.status.as_str().to_owned())
            }),
        },
    ];
    for site in Site::ALL {
        pairs.extend(site_pairs(view, site, site.peer()));
    }
    pairs
}

/// `holder`'s copies of `owner`'s counters and reservation lines.
fn site_pairs(view: &View<'_>, owner: Site, holder: Site) -> Vec<Pair> {
    let (Some(owned), Some(held)) = (view.sites.get(&owner), view.sites.get(&holder)) else {
        return Vec::new();
    };
    let counters = |rows: &[&crate::contracts::inventory::StockCounters]| {
        records(rows.iter().filter(|c| c.site == owner), |c| {
            (c.product_id.clone(), c.version, format!("added {} removed {}", c.added, c.removed))
        })
    };
    let lines = |rows: &[&crate::contracts::facts::LineFact]| {
        records(rows.iter().filter(|l| l.site == owner), |l| {
            (
                format!("{}/{}", l.order_id, l.product_id),
                l.version,
                format!("{} {}", l.quantity, l.status.as_str()),
            )
        })
    };
    let consumer = format!("{}.site-replica", holder.instance());
    vec![
        Pair {
            replica: format!("{}.counters_of_{owner}", holder.instance()),
            stream: owner.instance(),
            consumer: consumer.clone(),
            source: counters(&owned.counters),
            copy: counters(&held.counters),
        },
        Pair {
            replica: format!("{}.lines_of_{owner}", holder.instance()),
            stream: owner.instance(),
            consumer,
            source: lines(&owned.lines),
            copy: lines(&held.lines),
        },
    ]
}

fn compare(view: &View<'_>, pair: &Pair) -> Vec<Finding> {
    let mut findings = Vec::new();
    let via = [(pair.stream.as_str(), pair.consumer.as_str())];
    let mut found = |kind: &str, key: &str, detail: String, explained: bool| {
        let in_flight = if explained { view.explain(&via) } else { None };
        let keys = [("replica", pair.replica.as_str()), ("key", key)];
        findings.push(Finding::new(kind, Group::ReplicaMismatch, &keys, detail, in_flight));
    };
    for (key, source) in &pair.source {
        let (kind, detail) = match pair.copy.get(key) {
            None => (
                "replica_missing",
                format!("{} has no {key}; the source is at version {}", pair.replica, source.version),
            ),
            Some(copy) if copy.version < source.version => (
                "replica_behind",
                format!(
                    "{} holds {key} at version {}, the source at {}",
                    pair.replica, copy.version, source.version
                ),
            ),
            Some(copy) if copy.version > source.version => (
                "replica_ahead",
                format!(
                    "{} holds {key} at version {}, beyond the source's {}",
                    pair.replica, copy.version, source.version
                ),
            ),
            Some(copy) if copy.content != source.content => (
                "replica_differs",
                format!(
                    "{} holds {key} at the source's version {} with other content: {} vs {}",
                    pair.replica, source.version, copy.content, source.content
                ),
            ),
            Some(_) => continue,
        };
        // Behind or missing resolves when the consumer applies its events; ahead only when a
        // live read met the replica after the source; different content at one version never.
        let explained = kind != "replica_differs";
        found(kind, key, detail, explained);
    }
    for (key, copy) in pair.copy.iter().filter(|(key, _)| !pair.source.contains_key(*key)) {
        let detail = format!(
            "{} holds {key} at version {}, which its source does not have",
            pair.replica, copy.version
        );
        found("replica_without_source", key, detail, true);
    }
    findings
}

/// Per product and site view: the counters never remove more than they added, and the
/// final reservations fit in what is on hand (on hand = Σ added − Σ removed of both sites).
fn stock(view: &View<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (site, held) in &view.sites {
        let mut products: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
        for c in &held.counters {
            let entry = products.entry(&c.product_id).or_default();
            entry.0 += c.added;
            entry.1 += c.removed;
        }
        for l in held.lines.iter().filter(|l| l.status == ReservationStatus::Reserved) {
            products.entry(&l.product_id).or_default().2 += u64::from(l.quantity);
        }
        let other = site.peer();
        let via = [(other.instance(), format!("{}.site-replica", site.instance()))];
        let via: Vec<(&str, &str)> = via.iter().map(|(s, c)| (s.as_str(), c.as_str())).collect();
        for (product, (added, removed, reserved)) in products {
            let keys = [("product", product), ("site", site.as_str())];
            if removed > added {
                let detail =
                    format!("{site} counts {removed} units of {product} removed but only {added} added");
                findings.push(Finding::new(
                    "stock_negative",
                    Group::Stock,
                    &keys,
                    detail,
                    view.explain(&via),
                ));
            } else if reserved > added - removed {
                let on_hand = added - removed;
                let detail = format!(
                    "{site} holds {reserved} units of {product} finally reserved but {on_hand} on hand"
                );
                findings.push(Finding::new(
                    "stock_overdrawn",
                    Group::Stock,
                    &keys,
                    detail,
                    view.explain(&via),
                ));
            }
        }
    }
    findings
}
