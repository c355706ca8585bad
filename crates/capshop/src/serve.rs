//! `capshop serve SERVICE`: one service, or the gateway, as its own process (the
//! distributed mode). Settings come from flags, else `CAPSHOP_*` variables, else
//! `capshop.toml`, else defaults; a missing one is an error that says how to give it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;
use shop::serve::{ServeConfig, serve, serve_gateway};
use shop::service::{Choices, Part};
use tokio_util::sync::CancellationToken;

use crate::config::ConfigFile;

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// The part to run (customer, catalog, inventory-dc1, inventory-dc2, order, payment,
    /// shipping, search) or `gateway`.
    pub service: String,
    /// The config file (default: ./capshop.toml when it exists).
    #[arg(long, env = "CAPSHOP_CONFIG")]
    pub config: Option<PathBuf>,
    /// The service's own database, e.g. postgres://capshop@db:5432/capshop_order.
    #[arg(long, env = "CAPSHOP_DB")]
    pub db: Option<String>,
    /// The bus, e.g. nats://nats1:4222,nats2:4222?replicas=3.
    #[arg(long, env = "CAPSHOP_BUS")]
    pub bus: Option<String>,
    /// Where this process listens (the gateway's default: 127.0.0.1:8080).
    #[arg(long, env = "CAPSHOP_LISTEN")]
    pub listen: Option<String>,
    /// Where a peer service listens, as NAME=URL (repeatable; in CAPSHOP_PEERS joined by
    /// commas). The same NAME again adds an instance, which the gateway balances over.
    #[arg(long = "peer", env = "CAPSHOP_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Which instance of the service this process is, when several run (default: the
    /// service's name and this process's id); named in its relay lease and its logs.
    #[arg(long, env = "CAPSHOP_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Where checkout takes the address from: replica or sync (default replica).
    #[arg(long, env = "CAPSHOP_ADDRESS")]
    pub address: Option<String>,
    /// How the inventory sites write during a partition: ap or cp (default ap; give every
    /// process the same).
    #[arg(long, env = "CAPSHOP_INVENTORY_MODE")]
    pub inventory_mode: Option<String>,
    /// The catalog's popularity cache: memory (the default) or redis://HOST:PORT. Only the
    /// catalog reads it.
    #[arg(long, env = "CAPSHOP_CACHE")]
    pub cache: Option<String>,
    /// The admin token every process of the shop shares (better given as CAPSHOP_ADMIN_TOKEN).
    #[arg(long, env = "CAPSHOP_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

/// What `serve` runs, with every setting resolved.
#[derive(Debug)]
pub enum Served {
    Service {
        config: ServeConfig,
        listen: SocketAddr,
    },
    /// The gateway, with every instance of each service.
    Gateway {
        services: BTreeMap<String, Vec<String>>,
        admin_token: String,
        listen: SocketAddr,
        /// `--db` (the server holding every `capshop_<part>` database, as
        /// postgres://USER@HOST:PORT) and `--bus`: given both, the gateway takes backups.
        backups: Option<shop::serve::GatewayBackups>,
    },
}

/// The parts a process needs peers for: what it calls (the other site, for a site), or
/// every one for the gateway.
fn needed_peers(part: Option<Part>) -> Vec<String> {
    match part {
        Some(part) => shop::wiring::peers_of(part),
        None => Part::all().into_iter().map(Part::name).collect(),
    }
}

/// Resolves the settings: flags and variables (already merged by clap), then the file.
pub fn resolve(args: &ServeArgs) -> anyhow::Result<Served> {
    let service = match args.service.as_str() {
        "gateway" => None,
        other => Some(other.parse::<Part>().map_err(|e| anyhow::anyhow!("{e}, or gateway"))?),
    };
    let process = args.service.as_str();
    let file = ConfigFile::load(args.config.as_deref())?;
    let setting = |flag: &Option<String>, key: &str| -> anyhow::Result<Option<String>> {
        match flag {
            Some(value) => Ok(Some(value.clone())),
            None => file.get(process, key),
        }
    };
    let file_name = if file.name() == "the configuration" { "capshop.toml".to_owned() } else { file.name() };
    let missing = |flag: &str, env: &str, key: &str| {
        let place =
            if key == "admin_token" { "at the top of".to_owned() } else { format!("under [{process}] in") };
        anyhow::anyhow!(
            "{process} needs {flag}: pass it, set {env}, or put `{key} = \"...\"` {place} {file_name}"
        )
    };
    let listen = match setting(&args.listen, "listen")? {
        Some(text) => text,
        None if service.is_none() => "127.0.0.1:8080".to_owned(),
        None => return Err(missing("--listen ADDR", "CAPSHOP_LISTEN", "listen")),
    };
    let listen: SocketAddr = listen.parse().map_err(|_| {
        anyhow::anyhow!("--listen {listen:?} is not an address: use HOST:PORT, e.g. 0.0.0.0:7001")
    })?;
    let admin_token =
        setting(&args.admin_token, "admin_token")?.filter(|t| !t.trim().is_empty()).ok_or_else(|| {
            missing("--admin-token TOKEN (the same in every process)", "CAPSHOP_ADMIN_TOKEN", "admin_token")
        })?;
    let mut peers: BTreeMap<String, Vec<String>> =
        file.peers()?.into_iter().map(|(name, url)| (name, vec![url])).collect();
    let mut given: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in &args.peers {
        let (name, url) = pair.split_once('=').with_context(|| {
            format!("--peer {pair:?} is not NAME=URL, e.g. --peer customer=http://10.0.0.1:7001")
        })?;
        name.parse::<Part>().map_err(|e| anyhow::anyhow!("--peer {pair:?}: {e}"))?;
        given.entry(name.to_owned()).or_default().push(url.to_owned());
    }
    peers.extend(given);
    for needed in needed_peers(service) {
        let Some(urls) = peers.get(&needed) else {
            bail!(
                "{process} calls {needed}: pass --peer {needed}=http://HOST:PORT, add it to CAPSHOP_PEERS, or set `{needed} = \"http://HOST:PORT\"` under [peers] in {file_name}"
            );
        };
        if let Some(url) = urls.iter().find(|u| !u.starts_with("http://") && !u.starts_with("https://")) {
            bail!("the peer {needed} is {url:?}: give its base URL, e.g. http://10.0.0.1:7001");
        }
    }
    let Some(name) = service else {
        let backups = match (setting(&args.db, "db")?, setting(&args.bus, "bus")?) {
            (Some(database_base), Some(bus_url)) => {
                Some(shop::serve::GatewayBackups { database_base, bus_url })
            }
            _ => None,
        };
        return Ok(Served::Gateway { services: peers, admin_token, listen, backups });
    };
    let store_url = setting(&args.db, "db")?.ok_or_else(|| missing("--db URL", "CAPSHOP_DB", "db"))?;
    let bus_url = setting(&args.bus, "bus")?.ok_or_else(|| missing("--bus URL", "CAPSHOP_BUS", "bus"))?;
    let address = match setting(&args.address, "address")? {
        Some(text) => crate::up::parse_address_choice(&text).map_err(anyhow::Error::msg)?,
        None => Choices::default().address,
    };
    let inventory = match setting(&args.inventory_mode, "inventory_mode")? {
        Some(text) => text.parse().map_err(anyhow::Error::msg)?,
        None => Choices::default().inventory,
    };
    let choices = Choices { address, inventory, ..Choices::default() };
    let cache_url = setting(&args.cache, "cache")?;
    if let Some(url) = &cache_url {
        shop::catalog::cache::check_url(url).map_err(|e| anyhow::anyhow!("--cache: {e}"))?;
    }
    let cache_url = cache_url.filter(|_| name == Part::Service(shop::service::ServiceName::Catalog));
    let instance_id = args.instance_id.clone().unwrap_or_else(|| format!("{process}-{}", std::process::id()));
    // A service calls the first instance of each peer it needs.
    let peers = peers.into_iter().filter_map(|(name, urls)| Some((name, urls.into_iter().next()?))).collect();
    let config =
        ServeConfig { part: name, store_url, bus_url, peers, admin_token, choices, cache_url, instance_id };
    Ok(Served::Service { config, listen })
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let served = resolve(&args)?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        stop.cancel();
    });
    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr}; is another process using it? choose another --listen")
        })
    };
    match served {
        Served::Gateway { services, admin_token, listen, backups } => {
            let listener = bind(listen).await?;
            println!("capshop gateway: listening on http://{}", listener.local_addr()?);
            serve_gateway(services, admin_token, backups, listener, shutdown)
                .await
                .context("the gateway failed")
        }
        Served::Service { config, listen } => {
            let listener = bind(listen).await?;
            let name = config.part;
            println!("capshop {name}: listening on http://{}", listener.local_addr()?);
            serve(config, listener, shutdown).await.with_context(|| {
                format!(
                    "capshop serve {name} failed; its database (--db) and the bus (--bus) must be reachable when it starts"
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn resolve_with(file: &str, argv: &[&str]) -> anyhow::Result<Served> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("capshop.toml");
        std::fs::write(&path, file).unwrap();
        let mut args = Cli::try_parse_from([&["serve"], argv].concat()).unwrap().serve;
        args.config = Some(path);
        resolve(&args)
    }

    const FILE: &str = r#"
bus = "nats://file:4222"
admin_token = "from-file"
[peers]
customer = "http://c:1"
catalog = "http://k:2"
payment = "http://p:3"
[order]
db = "postgres://file/capshop_order"
listen = "127.0.0.1:7004"
"#;

    #[test]
    fn the_inventory_mode_comes_from_the_flag_or_the_file_and_a_bad_one_is_refused() {
        let with_cp = format!("inventory_mode = \"cp\"\n{FILE}");
        let Served::Service { config, .. } = resolve_with(&with_cp, &["order"]).unwrap() else { panic!() };
        assert_eq!(config.choices.inventory, shop::inventory::sites::Mode::Cp);
        let Served::Service { config, .. } =
            resolve_with(&with_cp, &["order", "--inventory-mode", "ap"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(config.choices.inventory, shop::inventory::sites::Mode::Ap);
        let bad = resolve_with(FILE, &["order", "--inventory-mode", "xp"]).unwrap_err().to_string();
        assert!(bad.contains("\"xp\" is not an inventory mode: use ap or cp"), "{bad}");
    }

    #[test]
    fn flags_override_the_config_file_and_the_file_fills_the_rest() {
        let served =
            resolve_with(FILE, &["order", "--bus", "nats://flag:4222", "--peer", "payment=http://p2:3"]);
        let Served::Service { config, listen } = served.unwrap() else { panic!("a service") };
        assert_eq!(config.bus_url, "nats://flag:4222");
        assert_eq!(config.store_url, "postgres://file/capshop_order");
        assert_eq!(config.peers["payment"], "http://p2:3");
        assert_eq!(config.peers["customer"], "http://c:1");
        assert_eq!(listen.port(), 7004);
    }

    #[test]
    fn the_catalog_takes_its_cache_from_the_flag_or_the_file_and_a_bad_url_is_refused() {
        let file = format!(
            "{FILE}[catalog]\ndb = \"postgres://file/capshop_catalog\"\nlisten = \"127.0.0.1:7002\"\ncache = \"redis://cache:6379\"\n"
        );
        let Served::Service { config, .. } = resolve_with(&file, &["catalog"]).unwrap() else { panic!() };
        assert_eq!(config.cache_url.as_deref(), Some("redis://cache:6379"));
        let Served::Service { config, .. } =
            resolve_with(&file, &["catalog", "--cache", "redis://other:6380"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(config.cache_url.as_deref(), Some("redis://other:6380"));
        let Served::Service { config, .. } = resolve_with(FILE, &["order"]).unwrap() else { panic!() };
        assert_eq!(config.cache_url, None, "only the catalog has a cache");
        let bad = resolve_with(&file, &["catalog", "--cache", "memcached://x:1"]).unwrap_err().to_string();
        assert!(bad.contains("use memory or redis://HOST:PORT"), "{bad}");
    }

    #[test]
    fn a_missing_setting_says_which_flag_variable_or_key_gives_it() {
        let no_db = resolve_with(FILE, &["search", "--listen", "127.0.0.1:1"]).unwrap_err().to_string();
        assert!(
            no_db.contains("--db URL") && no_db.contains("CAPSHOP_DB") && no_db.contains("[search]"),
            "{no_db}"
        );
        let no_peer = resolve_with("admin_token = \"t\"\n", &["gateway"]).unwrap_err().to_string();
        assert!(no_peer.contains("--peer customer=http://HOST:PORT"), "{no_peer}");
        let unknown = resolve_with(FILE, &["warehouse"]).unwrap_err().to_string();
        assert!(unknown.contains("unknown part \"warehouse\"") && unknown.contains("gateway"), "{unknown}");
        let both = resolve_with(FILE, &["inventory"]).unwrap_err().to_string();
        assert!(
            both.contains("inventory runs as inventory-dc1 and inventory-dc2: name one of them"),
            "{both}"
        );
    }
}
