//! The two inventory sites of seed 000, dc1 and dc2, the mode they write in, the rule
//! that routes an order to one of them, and how a site is opened.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kit::bus::Bus;
use kit::link::{Link, LinkedBus};
use kit::store::StoreError;
use serde::{Deserialize, Serialize};

use super::InventoryService;
use crate::service::{Choices, Context, Peer, Service, ServiceName, peer};

/// One inventory site: its own database, outbox stream, port and consumers.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Site {
    Dc1,
    Dc2,
}

impl Site {
    pub const ALL: [Site; 2] = [Site::Dc1, Site::Dc2];

    pub fn as_str(self) -> &'static str {
        match self {
            Site::Dc1 => "dc1",
            Site::Dc2 => "dc2",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The other site.
    pub fn peer(self) -> Site {
        match self {
            Site::Dc1 => Site::Dc2,
            Site::Dc2 => Site::Dc1,
        }
    }

    /// The instance name: the site's stream, database file stem and consumer prefix.
    pub fn instance(self) -> String {
        format!("inventory-{}", self.as_str())
    }

    /// The site that settles ap reservations (see the module docs of `inventory`): one
    /// place decides, so two sites never settle the same units twice.
    pub fn arbiter() -> Site {
        Site::Dc1
    }

    /// The site an order of `customer_id` is routed to: FNV-1a of the customer id, even to
    /// dc1 and odd to dc2. Every party computes it alone, a customer's orders (and their
    /// cancellations) always meet the same site, and tests can pick customers per site.
    pub fn of_customer(customer_id: &str) -> Site {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in customer_id.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        if hash.is_multiple_of(2) { Site::Dc1 } else { Site::Dc2 }
    }
}

impl std::fmt::Display for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the sites write when they cannot reach each other (DESIGN §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Both sites accept reservations from their own view; oversell is settled after the
    /// sites see each other again, and the latest placed orders are compensated.
    Ap,
    /// A reservation commits only once the other site has acknowledged it; a site that
    /// cannot reach the other refuses.
    Cp,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Ap => "ap",
            Mode::Cp => "cp",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "ap" => Ok(Mode::Ap),
            "cp" => Ok(Mode::Cp),
            other => Err(format!("{other:?} is not an inventory mode: use ap or cp")),
        }
    }
}

/// Opens site `site` with its own database at `store_url`, its link to the bus
/// (`inventory-dc1->bus`) and its link to the other site at `other_url`
/// (`inventory-dc1->inventory-dc2`), which carries both its calls to that site and its
/// replication from it; both links are added to `links`.
pub async fn open(
    store_url: &str,
    admin_token: String,
    choices: Choices,
    site: Site,
    other_url: &str,
    bus: &Arc<dyn Bus>,
    links: &mut BTreeMap<String, Link>,
) -> Result<Arc<Context>, StoreError> {
    let (me, other) = (site.instance(), site.peer().instance());
    let bus_link = Link::new(&format!("{me}->bus"));
    let between = Link::new(&format!("{me}->{other}"));
    links.insert(bus_link.name().to_owned(), bus_link.clone());
    links.insert(between.name().to_owned(), between.clone());
    let peers = HashMap::from([(
        ServiceName::Inventory,
        Peer::new(&other, other_url, between, peer::default_breaker()),
    )]);
    let bus: Arc<dyn Bus> = Arc::new(LinkedBus::new(bus.clone(), bus_link));
    let migrations = InventoryService::migrations();
    Context::open(site, store_url, migrations, bus, peers, admin_token, choices).await
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn routing_is_a_pure_function_of_the_customer() {
        for customer in ["c-ada", "c-bob", "c-cyd", "c-0193f2aa"] {
            assert_eq!(Site::of_customer(customer), Site::of_customer(customer));
        }
        let sites: std::collections::BTreeSet<Site> =
            (0..16).map(|n| Site::of_customer(&format!("c-{n}"))).collect();
        assert_eq!(sites.len(), 2, "customers spread over both sites");
    }

    #[test]
    fn modes_parse_from_their_names_only() {
        assert_eq!("ap".parse::<Mode>(), Ok(Mode::Ap));
        assert_eq!("cp".parse::<Mode>(), Ok(Mode::Cp));
        assert!("CP".parse::<Mode>().unwrap_err().contains("use ap or cp"));
    }
}
