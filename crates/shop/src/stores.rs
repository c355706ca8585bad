//! Where the services' databases live: a SQLite file each (the embedded mode), or a
//! PostgreSQL database each on one server (the distributed mode's store).

use std::path::Path;

use crate::service::ServiceName;

/// Where each service's store is opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StoreLocation {
    /// `<data_dir>/<service>.db`.
    #[default]
    Sqlite,
    /// `<base_url>/capshop_<service>` (e.g. base `postgres://shop@db:5432`); the
    /// databases must exist, and each service creates its tables on start.
    Postgres { base_url: String },
}

impl StoreLocation {
    /// The store URL of `service`.
    pub fn url(&self, service: ServiceName, data_dir: &Path) -> String {
        match self {
            StoreLocation::Sqlite => format!("sqlite:{}", data_dir.join(format!("{service}.db")).display()),
            StoreLocation::Postgres { base_url } => {
                format!("{}/{}", base_url.trim_end_matches('/'), Self::database(service))
            }
        }
    }

    /// The PostgreSQL database name of `service`.
    pub fn database(service: ServiceName) -> String {
        format!("capshop_{service}")
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
    }
}
