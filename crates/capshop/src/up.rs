//! `capshop up`: the whole shop in this process on the embedded default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use shop::inventory::sites::Mode;
use shop::launch::{ShopConfig, StoreLocation, launch};
use shop::service::{AddressChoice, Choices};

#[derive(Args)]
pub struct UpArgs {
    /// Where the databases and the bus are kept across restarts.
    #[arg(long, default_value = "capshop-data", env = "CAPSHOP_DATA_DIR")]
    data_dir: PathBuf,
    /// Where the gateway listens.
    #[arg(long, default_value = "127.0.0.1:8080", env = "CAPSHOP_LISTEN")]
    listen: SocketAddr,
    /// Where checkout takes the address from: `replica` (available) or `sync` (consistent).
    #[arg(long, default_value = "replica", value_parser = parse_address_choice, env = "CAPSHOP_ADDRESS")]
    address: AddressChoice,
    /// How the two inventory sites write during a partition: `ap` (both keep selling,
    /// oversell is compensated after) or `cp` (a site that cannot reach the other refuses).
    #[arg(long, default_value = "ap", env = "CAPSHOP_INVENTORY_MODE")]
    inventory_mode: Mode,
    /// Runs every service as its own process on PostgreSQL and NATS JetStream (both found
    /// on PATH and kept in the data dir) instead of all in this process on SQLite.
    #[arg(long)]
    distributed: bool,
    /// With --distributed: how many processes of each service, `N` for every one or
    /// `order=2,shipping=2` for those named (the gateway balances over them).
    #[arg(long, value_parser = crate::distributed::instances::parse, requires = "distributed")]
    instances: Option<crate::distributed::instances::Instances>,
}

pub(crate) fn parse_address_choice(text: &str) -> Result<AddressChoice, String> {
    match text {
        "replica" => Ok(AddressChoice::Replica),
        "sync" => Ok(AddressChoice::Sync),
        other => Err(format!("{other:?} is not an address choice: use replica or sync")),
    }
}

/// The admin token: `CAPSHOP_ADMIN_TOKEN`, else the one stored in the data dir, else a new
/// one, stored there for the next start.
fn admin_token(data_dir: &Path) -> anyhow::Result<String> {
    if let Ok(token) = std::env::var("CAPSHOP_ADMIN_TOKEN")
        && !token.trim().is_empty()
    {
        return Ok(token.trim().to_owned());
    }
    let path = data_dir.join("admin-token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        return Ok(token.trim().to_owned());
    }
    let token: String = (0..32).map(|_| format!("{:x}", rand::random::<u8>() % 16)).collect();
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    std::fs::write(&path, &token)
        .with_context(|| format!("cannot store the admin token in {}", path.display()))?;
    Ok(token)
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let admin_token = admin_token(&args.data_dir)?;
    if args.distributed {
        let address = match args.address {
            AddressChoice::Replica => "replica",
            AddressChoice::Sync => "sync",
        };
        let settings = crate::distributed::Settings {
            data_dir: &args.data_dir,
            gateway: args.listen,
            admin_token,
            address,
            inventory_mode: args.inventory_mode.as_str(),
            instances: args.instances.clone().unwrap_or_default(),
        };
        return crate::distributed::run(settings).await;
    }
    let choices = Choices { address: args.address, inventory: args.inventory_mode, ..Choices::default() };
    // Scenarios from the dashboard: each runs on fresh shops of its own, not on this one.
    let operations = crate::scenario::http::router(admin_token.clone());
    let config = ShopConfig {
        data_dir: args.data_dir.clone(),
        gateway: args.listen,
        admin_token,
        choices,
        stores: StoreLocation::Sqlite,
        operations: Some(operations),
    };
    let mut shop = launch(config).await.with_context(|| {
        format!(
            "capshop could not start; is another capshop using {} or port {}?",
            args.data_dir.display(),
            args.listen.port()
        )
    })?;
    println!(
        "capshop is up: seven services on SQLite files and the embedded bus in {}",
        args.data_dir.display()
    );
    println!();
    println!("  shop page:    {}/", shop.url(""));
    println!("  dashboard:    {}/dashboard", shop.url(""));
    println!(
        "  api:          {}/api/<service>/...   e.g. {}/api/catalog/products",
        shop.url(""),
        shop.url("")
    );
    for (name, addr) in &shop.services {
        println!("  {:<13} http://{addr}   (metrics: /metrics, openapi: /openapi.json)", format!("{name}:"));
    }
    for (site, running) in &shop.sites {
        println!(
            "  {:<13} http://{}   (inventory site, {} mode)",
            format!("{site}:"),
            running.addr,
            args.inventory_mode.as_str()
        );
    }
    println!("  admin token:  {}", shop.admin_token);
    println!(
        "  sign in:      ada@example.com, bob@example.com or cyd@example.com, password {:?} (demo)",
        shop::customer::DEMO_PASSWORD
    );
    println!();
    println!("Press Ctrl-C to stop.");
    tokio::select! {
        stopped = shop.stopped() => stopped.context("a service stopped unexpectedly")?,
        _ = tokio::signal::ctrl_c() => {
            println!("stopping...");
            shop.stop().await.context("a service failed while stopping")?;
            println!("stopped; the data is kept in {}", args.data_dir.display());
        }
    }
    Ok(())
}
