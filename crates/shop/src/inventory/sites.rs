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

pub use crate::contracts::inventory::Site;

/// How the sites write when they cannot reach each other (DESIGN §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Both sites accept reservations from their own view; the arbiter decides oversell
    /// after the sites see each other again, and the latest placed orders are compensated.
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
