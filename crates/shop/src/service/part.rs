//! The parts of a running shop: what publishes on its own stream, listens on its own port
//! and can be stopped and started on its own — a service, or one inventory site.

use crate::inventory::sites::Site;

use super::ServiceName;

/// One running part: every service but inventory, and each inventory site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    Service(ServiceName),
    Site(Site),
}

impl Part {
    /// Every part of the embedded shop, in the order of DESIGN §1.
    pub fn all() -> Vec<Part> {
        ServiceName::ALL.into_iter().flat_map(Part::of).collect()
    }

    /// The parts service `name` runs as: inventory runs as its two sites.
    pub fn of(name: ServiceName) -> Vec<Part> {
        match name {
            ServiceName::Inventory => Site::ALL.into_iter().map(Part::Site).collect(),
            other => vec![Part::Service(other)],
        }
    }

    /// The service this part is (an inventory site is the inventory service).
    pub fn service(self) -> ServiceName {
        match self {
            Part::Service(name) => name,
            Part::Site(_) => ServiceName::Inventory,
        }
    }

    /// Its name: the service (`order`) or the site (`inventory-dc1`), which is also the
    /// stream it publishes on and the prefix of its consumers.
    pub fn name(self) -> String {
        match self {
            Part::Service(name) => name.as_str().to_owned(),
            Part::Site(site) => site.instance(),
        }
    }

    /// The parts `text` names: a part (`inventory-dc2`) or a service, which means all of
    /// its parts (`inventory`: both sites).
    pub fn named(text: &str) -> Result<Vec<Part>, UnknownPart> {
        if let Some(part) = Self::all().into_iter().find(|p| p.name() == text) {
            return Ok(vec![part]);
        }
        text.parse::<ServiceName>().map(Part::of).map_err(|_| UnknownPart(text.to_owned()))
    }

    /// The part a durable consumer (`inventory-dc2.orders`) belongs to.
    pub fn of_consumer(consumer: &str) -> Option<Part> {
        let prefix = consumer.split('.').next()?;
        Self::all().into_iter().find(|p| p.name() == prefix)
    }
}

/// One part by its name; a service of several parts (inventory) must name one of them.
impl std::str::FromStr for Part {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match Self::named(text).map_err(|e| e.to_string())?.as_slice() {
            [part] => Ok(*part),
            several => {
                let names: Vec<String> = several.iter().map(|p| p.name()).collect();
                Err(format!("{text} runs as {}: name one of them", names.join(" and ")))
            }
        }
    }
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl From<Part> for super::Instance {
    fn from(part: Part) -> Self {
        match part {
            Part::Service(name) => name.into(),
            Part::Site(site) => site.into(),
        }
    }
}

/// A name that is neither a part nor a service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown part {0:?}: use a service or an inventory site ({names})", names = known())]
pub struct UnknownPart(pub String);

/// Every name [`Part::named`] accepts.
pub fn known() -> String {
    let mut names: Vec<String> = Part::all().into_iter().map(Part::name).collect();
    names.push(ServiceName::Inventory.as_str().to_owned() + " (both sites)");
    names.join(", ")
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn inventory_names_both_sites_and_a_site_names_itself() {
        assert_eq!(Part::named("inventory"), Ok(vec![Part::Site(Site::Dc1), Part::Site(Site::Dc2)]));
        assert_eq!(Part::named("inventory-dc2"), Ok(vec![Part::Site(Site::Dc2)]));
        assert_eq!(Part::named("order"), Ok(vec![Part::Service(ServiceName::Order)]));
        let unknown = Part::named("inventory-dc3").unwrap_err().to_string();
        assert!(unknown.contains("inventory-dc1") && unknown.contains("both sites"), "{unknown}");
    }

    #[test]
    fn a_consumer_belongs_to_the_part_it_is_prefixed_with() {
        assert_eq!(Part::of_consumer("inventory-dc2.orders"), Some(Part::Site(Site::Dc2)));
        assert_eq!(Part::of_consumer("order.customer-replica"), Some(Part::Service(ServiceName::Order)));
        assert_eq!(Part::of_consumer("nobody.x"), None);
    }
}
