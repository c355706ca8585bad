//! Where the services' databases live: a SQLite file each (the embedded mode), or a
//! PostgreSQL database each on one server (the distributed mode's store).

use std::path::Path;

use crate::inventory::sites::Site;
use crate::service::ServiceName;

/// Where each service's store is opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StoreLocation {
    /// `<data_dir>/<service>.db`.
    #[default]
    Sqlite,
    /// `<base_url>/capshop_<service>` (e.g. base `postgres://shop@db:5432`); the
    /// databases must exist, and each service creates its tables on start. A base with
    /// several hosts and a query (`postgres://shop@pg1:5432,pg2:5432?target_session_attrs=read-write`)
    /// keeps its query after the database name.
    Postgres { base_url: String },
    /// The parts in `parts` on PostgreSQL at `base_url` (as [`StoreLocation::Postgres`]),
    /// every other part in SQLite (as [`StoreLocation::Sqlite`]): one service's database
    /// on a replicated server while the rest stay local, as scenario db-failover runs.
    Split { base_url: String, parts: Vec<String> },
}

impl StoreLocation {
    /// The store URL of `service`.
    pub fn url(&self, service: ServiceName, data_dir: &Path) -> String {
        self.url_of(service.as_str(), data_dir)
    }

    /// The store URL of one database of the shop: a service's, or an inventory site's
    /// (`inventory-dc1`).
    pub fn url_of(&self, part: &str, data_dir: &Path) -> String {
        match self {
            StoreLocation::Sqlite => format!("sqlite:{}", data_dir.join(format!("{part}.db")).display()),
            StoreLocation::Postgres { base_url } => {
                let (base, query) = match base_url.split_once('?') {
                    Some((base, query)) => (base, format!("?{query}")),
                    None => (base_url.as_str(), String::new()),
                };
                format!("{}/{}{query}", base.trim_end_matches('/'), Self::database(part))
            }
            StoreLocation::Split { base_url, parts } if parts.iter().any(|p| p == part) => {
                StoreLocation::Postgres { base_url: base_url.clone() }.url_of(part, data_dir)
            }
            StoreLocation::Split { .. } => StoreLocation::Sqlite.url_of(part, data_dir),
        }
    }

    /// The PostgreSQL database name of a part of the shop (`-` becomes `_`, so the name
    /// needs no quoting).
    pub fn database(part: &str) -> String {
        format!("capshop_{}", part.replace('-', "_"))
    }

    /// Every database the shop opens: one per service, inventory's being one per site.
    pub fn parts() -> Vec<String> {
        let services = ServiceName::ALL.into_iter().filter(|s| *s != ServiceName::Inventory);
        services.map(|s| s.as_str().to_owned()).chain(Site::ALL.map(Site::instance)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_gets_a_sqlite_file_in_the_data_dir_or_a_postgres_database_of_its_own() {
        let dir = Path::new("/var/capshop");
        assert_eq!(StoreLocation::Sqlite.url(ServiceName::Order, dir), "sqlite:/var/capshop/order.db");
        let postgres = StoreLocation::Postgres { base_url: "postgres://shop@db:5432/".into() };
        assert_eq!(postgres.url(ServiceName::Search, dir), "postgres://shop@db:5432/capshop_search");
        assert_eq!(postgres.url_of("inventory-dc2", dir), "postgres://shop@db:5432/capshop_inventory_dc2");
        let failover = StoreLocation::Postgres {
            base_url: "postgres://shop@pg1:5432,pg2:5432/?target_session_attrs=read-write".into(),
        };
        assert_eq!(
            failover.url(ServiceName::Order, dir),
            "postgres://shop@pg1:5432,pg2:5432/capshop_order?target_session_attrs=read-write"
        );
        let order_only =
            StoreLocation::Split { base_url: "postgres://shop@pg1:5432".into(), parts: vec!["order".into()] };
        assert_eq!(order_only.url(ServiceName::Order, dir), "postgres://shop@pg1:5432/capshop_order");
        assert_eq!(order_only.url(ServiceName::Payment, dir), "sqlite:/var/capshop/payment.db");
        assert_eq!(StoreLocation::parts().len(), 8, "six services and two inventory sites");
    }
}
