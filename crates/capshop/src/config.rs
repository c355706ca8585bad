//! `capshop.toml`: the settings of a distributed shop in one file every machine can share
//! (docs/DEPLOY.md). Top-level keys apply to every process; a `[<service>]` or
//! `[gateway]` table holds what differs per process; `[peers]` says where each service
//! listens. Flags and `CAPSHOP_*` variables override the file.
//!
//! ```toml
//! bus = "nats://10.0.0.9:4222"
//! admin_token = "change-me"
//! [peers]
//! customer = "http://10.0.0.1:7001"
//! [customer]
//! db = "postgres://capshop@10.0.0.20:5432/capshop_customer"
//! listen = "0.0.0.0:7001"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use shop::service::Part;
use toml_edit::{DocumentMut, Item, Table};

/// The default file, read when it exists and no `--config` is given.
pub const DEFAULT_PATH: &str = "capshop.toml";

const TOP_KEYS: [&str; 7] = ["bus", "admin_token", "address", "inventory_mode", "peers", "db", "cache"];
const PROCESS_KEYS: [&str; 6] = ["db", "bus", "listen", "address", "inventory_mode", "cache"];

/// A parsed `capshop.toml` (or none: every lookup answers `None`).
#[derive(Debug, Default)]
pub struct ConfigFile {
    path: Option<PathBuf>,
    doc: DocumentMut,
}

impl ConfigFile {
    /// Reads `path` when given (it must exist), else `./capshop.toml` when it exists, else
    /// an empty configuration.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let path = match path {
            Some(path) => path.to_owned(),
            None if Path::new(DEFAULT_PATH).is_file() => PathBuf::from(DEFAULT_PATH),
            None => return Ok(Self::default()),
        };
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!("cannot read the config file {}; fix --config (or CAPSHOP_CONFIG)", path.display())
        })?;
        Self::parse(&text, &path)
    }

    pub fn parse(text: &str, path: &Path) -> anyhow::Result<Self> {
        let doc: DocumentMut =
            text.parse().with_context(|| format!("{} is not valid TOML", path.display()))?;
        let file = Self { path: Some(path.to_owned()), doc };
        file.check()?;
        Ok(file)
    }

    /// Refuses unknown keys and tables, so a typo is an error rather than a default.
    fn check(&self) -> anyhow::Result<()> {
        for (key, item) in self.doc.iter() {
            let is_process = key == "gateway" || key.parse::<Part>().is_ok();
            if is_process {
                let table = self.table(key, item)?;
                for (inner, _) in table.iter() {
                    if !PROCESS_KEYS.contains(&inner) {
                        bail!(
                            "{}: unknown key `{inner}` in [{key}]; a process table takes {}",
                            self.name(),
                            PROCESS_KEYS.join(", ")
                        );
                    }
                }
            } else if key == "peers" {
                for (peer, _) in self.table(key, item)?.iter() {
                    peer.parse::<Part>().map_err(|e| anyhow::anyhow!("{}: [peers]: {e}", self.name()))?;
                }
            } else if !TOP_KEYS.contains(&key) {
                bail!(
                    "{}: unknown key `{key}`; use {} at the top, or a table named after a service or gateway",
                    self.name(),
                    TOP_KEYS.join(", ")
                );
            }
        }
        Ok(())
    }

    fn table<'a>(&self, key: &str, item: &'a Item) -> anyhow::Result<&'a Table> {
        item.as_table().with_context(|| format!("{}: `{key}` must be a table ([{key}])", self.name()))
    }

    /// The file's name for messages.
    pub fn name(&self) -> String {
        self.path.as_ref().map_or_else(|| "the configuration".to_owned(), |p| p.display().to_string())
    }

    /// `key` for `process` (`order`, `gateway`): from its table, else from the top level.
    pub fn get(&self, process: &str, key: &str) -> anyhow::Result<Option<String>> {
        let own = self.doc.get(process).and_then(|t| t.get(key));
        match own.or_else(|| self.doc.get(key)) {
            None => Ok(None),
            Some(item) => match item.as_str() {
                Some(text) => Ok(Some(text.to_owned())),
                None => bail!("{}: `{key}` must be a string in quotes", self.name()),
            },
        }
    }

    /// The `[peers]` table: where each part (a service, or an inventory site) listens.
    pub fn peers(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let mut peers = BTreeMap::new();
        if let Some(table) = self.doc.get("peers").and_then(Item::as_table) {
            for (name, url) in table.iter() {
                let url = url
                    .as_str()
                    .with_context(|| format!("{}: [peers] {name} must be a URL in quotes", self.name()))?;
                name.parse::<Part>().map_err(anyhow::Error::msg)?;
                peers.insert(name.to_owned(), url.to_owned());
            }
        }
        Ok(peers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
bus = "nats://nats:4222"
admin_token = "secret"
[peers]
customer = "http://10.0.0.1:7001"
[order]
db = "postgres://shop@db/capshop_order"
listen = "0.0.0.0:7004"
bus = "nats://other:4222"
"#;

    #[test]
    fn a_process_table_overrides_the_top_level_and_peers_are_read_by_service() {
        let file = ConfigFile::parse(EXAMPLE, Path::new("capshop.toml")).unwrap();
        assert_eq!(file.get("order", "bus").unwrap().as_deref(), Some("nats://other:4222"));
        assert_eq!(file.get("search", "bus").unwrap().as_deref(), Some("nats://nats:4222"));
        assert_eq!(file.get("search", "db").unwrap(), None);
        assert_eq!(file.peers().unwrap()["customer"], "http://10.0.0.1:7001");
    }

    #[test]
    fn a_misspelt_key_or_peer_is_an_error_that_names_it() {
        let typo = ConfigFile::parse("[order]\ndbb = \"x\"\n", Path::new("c.toml")).unwrap_err();
        assert!(typo.to_string().contains("unknown key `dbb` in [order]"), "{typo}");
        let peer = ConfigFile::parse("[peers]\ncustomers = \"x\"\n", Path::new("c.toml")).unwrap_err();
        assert!(peer.to_string().contains("unknown part \"customers\""), "{peer}");
        let number = ConfigFile::parse("[order]\nlisten = 7004\n", Path::new("c.toml")).unwrap();
        assert!(number.get("order", "listen").unwrap_err().to_string().contains("must be a string"));
    }
}
