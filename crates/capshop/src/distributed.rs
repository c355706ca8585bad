//! `capshop up --distributed`: the distributed mode on one machine, from installed
//! binaries. It starts a nats-server with JetStream and a PostgreSQL server (initdb on
//! first start), both keeping their data in the data dir, and a redis-server (nothing
//! persisted: it is a cache) for the catalog's popularity cache; creates a database per service
//! when missing, then runs every service and the gateway as `capshop serve` processes of
//! its own binary. The children die with it (parent-death signal); Ctrl-C stops them all.

pub mod instances;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use kit::servers::{NATS_INSTALL, POSTGRES_INSTALL, REDIS_INSTALL, unprivileged_account};

/// How long a server or service may take to become ready.
const READY: Duration = Duration::from_secs(60);

/// What `up --distributed` needs from `up`'s arguments.
pub struct Settings<'a> {
    pub data_dir: &'a Path,
    pub gateway: std::net::SocketAddr,
    pub admin_token: String,
    pub address: &'a str,
    /// `ap` or `cp`, for both inventory sites.
    pub inventory_mode: &'a str,
    /// How many processes of each part.
    pub instances: instances::Instances,
}

/// A started process, stopped with SIGTERM (or `stop_signal`) at the end, and started
/// again from the same command when it exits by itself.
struct Started {
    what: String,
    url: String,
    child: Child,
    stop_signal: i32,
    command: Command,
    /// Restarts in a row without a calm spell between them (they lengthen the backoff).
    restarts: u32,
    running_since: tokio::time::Instant,
    /// When it exited by itself: the moment it is started again.
    restart_at: Option<tokio::time::Instant>,
}

impl Started {
    /// Spawns `command` (set up by [`prepare`]) as `what`.
    fn spawn(what: &str, url: String, mut command: Command, stop_signal: i32) -> anyhow::Result<Self> {
        let child = command.spawn().with_context(|| format!("cannot start {what}"))?;
        let running_since = tokio::time::Instant::now();
        Ok(Self {
            what: what.to_owned(),
            url,
            child,
            stop_signal,
            command,
            restarts: 0,
            running_since,
            restart_at: None,
        })
    }

    /// Says why it is down and when it is started again: later the more often in a row.
    fn restart_later(&mut self, backoff: &kit::backoff::Backoff, now: tokio::time::Instant, why: &str) {
        self.restarts += 1;
        let delay = backoff.delay(self.restarts);
        println!("{} {why}; restarting it in {} ms", self.what, delay.as_millis());
        self.restart_at = Some(now + delay);
    }
}

/// A child that ran this long before it exited counts as healthy: its next restart is quick.
const CALM: Duration = Duration::from_secs(60);

pub async fn run(settings: Settings<'_>) -> anyhow::Result<()> {
    let nats_server = on_path("nats-server", NATS_INSTALL)?;
    let (initdb, postgres) = (on_path("initdb", POSTGRES_INSTALL)?, on_path("postgres", POSTGRES_INSTALL)?);
    let redis_server = on_path("redis-server", REDIS_INSTALL)?;
    let dir = settings.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create the data dir {}", dir.display()))?;
    let dir = std::fs::canonicalize(dir)?;
    if let Some((uid, gid)) = unprivileged_account() {
        refuse_unreachable(&dir, uid, gid)?;
    }
    let mut started: Vec<Started> = Vec::new();
    let servers = Servers { nats: &nats_server, initdb: &initdb, postgres: &postgres, redis: &redis_server };
    let result = start_all(&settings, &dir, &servers, &mut started).await;
    if result.is_ok() {
        println!(
            "capshop is up, distributed: every service its own process on PostgreSQL, NATS JetStream and Redis"
        );
        println!();
        for s in &started {
            println!("  {:<13} {}   (pid {})", format!("{}:", s.what), s.url, s.child.id());
        }
        println!("  admin token:  {}", settings.admin_token);
        println!("  data:         {}", dir.display());
        println!();
        println!("Press Ctrl-C to stop.");
    }
    let outcome = match result {
        Err(e) => Err(e),
        Ok(()) => supervise(&mut started).await,
    };
    println!("stopping...");
    stop_all(&mut started);
    println!("stopped; the data is kept in {}", dir.display());
    outcome
}

/// Waits for Ctrl-C (a clean stop), restarting any child that exits by itself with
/// backoff (0.5 s doubling to 30 s), so one crashed process never stops the rest.
async fn supervise(started: &mut [Started]) -> anyhow::Result<()> {
    let backoff = kit::backoff::Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tick.tick() => {}
        }
        let now = tokio::time::Instant::now();
        for s in started.iter_mut() {
            match s.restart_at {
                None => {
                    let Some(status) = s.child.try_wait()? else { continue };
                    if now.duration_since(s.running_since) >= CALM {
                        s.restarts = 0;
                    }
                    s.restart_later(&backoff, now, &format!("exited by itself ({status})"));
                }
                Some(at) if now >= at => match s.command.spawn() {
                    Ok(child) => {
                        println!("{} restarted (pid {})", s.what, child.id());
                        (s.child, s.running_since, s.restart_at) = (child, now, None);
                    }
                    Err(e) => s.restart_later(&backoff, now, &format!("could not be restarted ({e})")),
                },
                Some(_) => {}
            }
        }
    }
}

/// The server programs found on PATH.
struct Servers<'a> {
    nats: &'a Path,
    initdb: &'a Path,
    postgres: &'a Path,
    redis: &'a Path,
}

async fn start_all(
    settings: &Settings<'_>,
    dir: &Path,
    servers: &Servers<'_>,
    started: &mut Vec<Started>,
) -> anyhow::Result<()> {
    let nats_url = start_nats(servers.nats, dir, started).await?;
    let pg_base = start_postgres(servers.initdb, servers.postgres, dir, started).await?;
    let cache_url = start_redis(servers.redis, dir, started).await?;
    // Processes per part (one unless --instances): every service, inventory as its two sites.
    let planned = settings.instances.plan(&kit::servers::free_ports(settings.instances.total())?);
    let (peers, every_instance) = (instances::first_peers(&planned), instances::all_peers(&planned));
    let me = std::env::current_exe().context("cannot find capshop's own binary to start the services")?;
    let mut processes: Vec<(String, String, std::net::SocketAddr)> =
        planned.into_iter().map(|p| (p.part, p.instance_id, p.listen)).collect();
    processes.push(("gateway".to_owned(), "gateway".to_owned(), settings.gateway));
    for (process, instance_id, listen) in processes {
        let mut command = Command::new(&me);
        command.args(["serve", &process, "--listen", &listen.to_string(), "--address", settings.address]);
        command.args(["--inventory-mode", settings.inventory_mode]);
        let peers = if process == "gateway" { &every_instance } else { &peers };
        command.args(peers).env("CAPSHOP_ADMIN_TOKEN", &settings.admin_token);
        // Every setting is given above: no capshop.toml of the caller's may add to them.
        command.env_remove("CAPSHOP_CONFIG").current_dir(dir);
        if process != "gateway" {
            let db = format!("{pg_base}/{}", shop::stores::StoreLocation::database(&process));
            command.args(["--db", &db, "--bus", &nats_url, "--instance-id", &instance_id]);
        } else {
            // The gateway takes backups: it reaches every database and the bus too.
            command.args(["--db", &pg_base, "--bus", &nats_url]);
        }
        if process == "catalog" {
            command.args(["--cache", &cache_url]);
        }
        command.stdout(Stdio::null());
        prepare(&mut command, None);
        let url = format!("http://{listen}");
        started.push(Started::spawn(&instance_id, url.clone(), command, libc::SIGTERM)?);
        wait_http(&format!("{url}/health"), started.last_mut().expect("just pushed")).await?;
    }
    Ok(())
}

/// Starts nats-server with JetStream on a free port, its store in `dir/nats`.
async fn start_nats(binary: &Path, dir: &Path, started: &mut Vec<Started>) -> anyhow::Result<String> {
    let ports = kit::servers::free_ports(2)?;
    let (port, monitor) = (ports[0], ports[1]);
    let store = dir.join("nats");
    std::fs::create_dir_all(&store)?;
    let config = format!(
        "listen: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{monitor}\"\nlog_file: \"{log}\"\n\
         jetstream {{\n  store_dir: \"{store}\"\n  sync_interval: always\n}}\n",
        log = dir.join("nats.log").display(),
        store = store.display(),
    );
    let path = dir.join("nats.conf");
    std::fs::write(&path, config)?;
    let mut command = Command::new(binary);
    prepare(command.arg("-c").arg(&path), None);
    let url = format!("nats://127.0.0.1:{port}");
    started.push(Started::spawn("nats", url.clone(), command, libc::SIGTERM)?);
    let health = format!("http://127.0.0.1:{monitor}/healthz");
    wait_http(&health, started.last_mut().expect("just pushed"))
        .await
        .with_context(|| format!("see {}", dir.join("nats.log").display()))?;
    Ok(url)
}

/// Starts redis-server on a free loopback port, its working dir `dir/redis`, persisting
/// nothing (a cache is rebuilt from the database); answers its URL once it answers PING.
async fn start_redis(binary: &Path, dir: &Path, started: &mut Vec<Started>) -> anyhow::Result<String> {
    let port = free_port()?;
    let data = dir.join("redis");
    std::fs::create_dir_all(&data)?;
    let log = dir.join("redis.log");
    let mut command = Command::new(binary);
    command.args(["--port", &port.to_string(), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]);
    command.arg("--dir").arg(&data).arg("--logfile").arg(&log).args(["--daemonize", "no"]);
    prepare(command.stdout(Stdio::null()).stderr(Stdio::null()), None);
    let url = format!("redis://127.0.0.1:{port}");
    started.push(Started::spawn("redis", url.clone(), command, libc::SIGTERM)?);
    let process = started.last_mut().expect("just pushed");
    let deadline = tokio::time::Instant::now() + READY;
    while !redis_answers(port) {
        if let Some(status) = process.child.try_wait()? {
            bail!("redis exited while starting ({status}); see {}", log.display());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("redis did not answer PING on port {port} within {READY:?}; see {}", log.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(url)
}

/// Whether a Redis on loopback `port` answers PING.
pub(crate) fn redis_answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut answer = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}

/// Starts PostgreSQL on a free port with its cluster in `dir/postgres` (made by initdb on
/// first start) and creates each service's database when missing; answers the base URL.
async fn start_postgres(
    initdb: &Path,
    postgres: &Path,
    dir: &Path,
    started: &mut Vec<Started>,
) -> anyhow::Result<String> {
    let data = dir.join("postgres");
    let account = unprivileged_account();
    if !data.join("PG_VERSION").exists() {
        std::fs::create_dir_all(&data)?;
        if let Some((uid, gid)) = account {
            std::os::unix::fs::chown(&data, Some(uid), Some(gid))?;
        }
        let mut command = Command::new(initdb);
        command.arg("-D").arg(&data).args(["-U", "capshop", "--auth=trust", "-E", "UTF8", "--locale=C"]);
        let output = prepare(command.stdout(Stdio::piped()).stderr(Stdio::piped()), account)
            .spawn()?
            .wait_with_output()?;
        if !output.status.success() {
            bail!("initdb failed in {}: {}", data.display(), String::from_utf8_lossy(&output.stderr));
        }
    }
    let port = free_port()?;
    let log = std::fs::File::create(dir.join("postgres.log"))?;
    let mut command = Command::new(postgres);
    command.arg("-D").arg(&data).args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"]);
    command.arg("-k").arg(&data).stdout(log.try_clone()?).stderr(log);
    prepare(&mut command, account);
    let base = format!("postgres://capshop@127.0.0.1:{port}");
    // SIGINT is PostgreSQL's fast shutdown: it does not wait for clients to leave.
    started.push(Started::spawn("postgres", base.clone(), command, libc::SIGINT)?);
    let admin = format!("{base}/postgres");
    let deadline = tokio::time::Instant::now() + READY;
    loop {
        let admin = admin.clone();
        let created = std::thread::spawn(move || create_databases(&admin)).join().expect("no panic");
        match created {
            Ok(()) => return Ok(base),
            Err(e) if tokio::time::Instant::now() > deadline => {
                bail!(
                    "PostgreSQL did not accept connections: {e}; see {}",
                    dir.join("postgres.log").display()
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// PostgreSQL refuses to run as root, so as root it runs as `nobody`, who must be able to
/// enter every folder down to the data dir; refuse up front, with what to do, rather than
/// fail later with initdb's permission error.
fn refuse_unreachable(dir: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    for folder in dir.ancestors() {
        let meta = std::fs::metadata(folder)?;
        let search = match (meta.uid() == uid, meta.gid() == gid) {
            (true, _) => 0o100,
            (false, true) => 0o010,
            (false, false) => 0o001,
        };
        if meta.mode() & search == 0 {
            bail!(
                "PostgreSQL runs as the unprivileged user nobody (uid {uid}), who cannot enter {} (mode {:o}) \
                 on the way to the data dir {}; choose a data dir nobody can reach (e.g. --data-dir /tmp/capshop) \
                 or allow it: chmod o+x {}",
                folder.display(),
                meta.mode() & 0o7777,
                dir.display(),
                folder.display()
            );
        }
    }
    Ok(())
}

/// Creates `capshop_<part>` for every part (service or inventory site) that has none yet.
pub(crate) fn create_databases(admin_url: &str) -> Result<(), postgres::Error> {
    let mut client = postgres::Client::connect(admin_url, postgres::NoTls)?;
    for part in shop::stores::StoreLocation::parts() {
        let name = shop::stores::StoreLocation::database(&part);
        if client.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])?.is_none() {
            client.batch_execute(&format!("CREATE DATABASE \"{name}\""))?;
        }
    }
    Ok(())
}

/// Prepares `command` so that what it spawns dies with this process (and, with `account`,
/// runs as that user); it can be spawned again with the same settings.
pub(crate) fn prepare(command: &mut Command, account: Option<(u32, u32)>) -> &mut Command {
    kit::servers::as_account(command, account);
    // SAFETY: prctl is async-signal-safe and touches only the child being started.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.stdin(Stdio::null())
}

/// Waits until `url` answers 200, failing early when the process exits.
async fn wait_http(url: &str, process: &mut Started) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let deadline = tokio::time::Instant::now() + READY;
    loop {
        if client.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        if let Some(status) = process.child.try_wait()? {
            bail!("{} exited while starting ({status})", process.what);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{} did not become ready at {url} within {READY:?}", process.what);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops the services first, then the servers they use, and waits for each.
fn stop_all(started: &mut Vec<Started>) {
    while let Some(mut s) = started.pop() {
        if s.restart_at.is_some() {
            continue; // It exited and was reaped: its pid may belong to another process now.
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(s.child.id() as i32, s.stop_signal) };
        let _ = s.child.wait();
    }
}

/// The program `name` on PATH, or an error naming how to install it.
fn on_path(name: &str, install: &str) -> anyhow::Result<PathBuf> {
    kit::servers::on_path(name)
        .with_context(|| format!("`{name}` is not on PATH; the distributed mode needs it: {install}"))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(kit::servers::free_port()?)
}

/// Restores the distributed backup in `backup` into the new or empty data dir `dir`: a
/// PostgreSQL cluster made there as `up --distributed` makes it, the databases loaded from
/// the backup; the server is stopped again. `up --distributed --data-dir` then starts its
/// own NATS in `dir`, so the restored shop runs on fresh streams.
pub(crate) async fn restore_into(backup: &Path, dir: &Path) -> anyhow::Result<shop::backup::Restored> {
    if dir.exists() && std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_some()) {
        bail!("{} already holds a shop: restore into a new or empty directory", dir.display());
    }
    shop::backup::pg_restore::verify(backup)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let restored = async {
        let servers = BenchServers::start(dir, false, true).await?;
        let base = servers.postgres.clone().context("PostgreSQL was asked for")?;
        Ok::<_, anyhow::Error>(shop::backup::pg_restore::restore(backup, &base).await?)
    }
    .await;
    if restored.is_err() {
        // Nothing half-restored stays where a shop would start from it.
        let _ = std::fs::remove_dir_all(dir);
    }
    restored
}

/// A NATS JetStream and a PostgreSQL server started in a directory of their own, for
/// measuring the distributed mode's pieces (`capshop bench --bus nats --db postgres`);
/// both are stopped when this is dropped.
pub(crate) struct BenchServers {
    started: Vec<Started>,
    /// `nats://...`, when NATS was asked for.
    pub nats: Option<String>,
    /// `postgres://user@host:port`, without a database, when PostgreSQL was asked for.
    pub postgres: Option<String>,
}

impl BenchServers {
    /// Starts the servers asked for, as `up --distributed` starts them, in `dir`.
    pub(crate) async fn start(dir: &Path, nats: bool, postgres: bool) -> anyhow::Result<Self> {
        let dir = std::fs::canonicalize(dir)?;
        if let (true, Some((uid, gid))) = (postgres, unprivileged_account()) {
            refuse_unreachable(&dir, uid, gid)?;
        }
        let mut servers = Self { started: Vec::new(), nats: None, postgres: None };
        if nats {
            let binary = on_path("nats-server", NATS_INSTALL)?;
            servers.nats = Some(start_nats(&binary, &dir, &mut servers.started).await?);
        }
        if postgres {
            let (initdb, server) =
                (on_path("initdb", POSTGRES_INSTALL)?, on_path("postgres", POSTGRES_INSTALL)?);
            servers.postgres = Some(start_postgres(&initdb, &server, &dir, &mut servers.started).await?);
        }
        Ok(servers)
    }
}

impl Drop for BenchServers {
    fn drop(&mut self) {
        stop_all(&mut self.started);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_cache_server_answers_on_loopback_keeps_its_files_in_the_data_dir_and_stops() {
        let Some(binary) = kit::testserver::binary("redis-server", REDIS_INSTALL) else { return };
        let dir = tempfile::tempdir().unwrap();
        let mut started = Vec::new();
        let url = start_redis(&binary, dir.path(), &mut started).await.unwrap();
        let port: u16 = url.strip_prefix("redis://127.0.0.1:").unwrap().parse().unwrap();
        assert!(redis_answers(port), "{url} answers PING");
        assert!(dir.path().join("redis").is_dir() && dir.path().join("redis.log").is_file());
        stop_all(&mut started);
        assert!(!redis_answers(port), "stopped with the rest");
    }

    #[test]
    fn a_missing_redis_server_names_the_package_to_install() {
        let e = on_path("redis-server-that-is-not-there", REDIS_INSTALL).unwrap_err().to_string();
        assert!(e.contains("apt-get install redis-server"), "{e}");
    }
}
