//! A real `nats-server` with JetStream for tests: on free loopback ports, with its store in
//! a directory of its own, so a test can kill it (SIGKILL) and restart it on the same port
//! and store, alone or as a node of a cluster.
//!
//! It runs with `sync_interval: always`, as production should (docs/nats.md): a message
//! the server acknowledged is on disk, so a killed server loses nothing it confirmed.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{binary, skip, version};
use crate::servers::NATS_INSTALL as INSTALL;

/// The oldest server the NATS bus is tested against (2.10 added what the tests rely on).
const OLDEST: (u32, u32) = (2, 10);

/// How long a starting server may take to report itself healthy.
const STARTUP: Duration = Duration::from_secs(30);

/// A nats-server process with JetStream; stopped (and its directory removed) on drop.
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    monitor_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// The ports of one cluster node: client, monitoring and cluster routes.
struct Ports {
    client: u16,
    monitor: u16,
    route: u16,
}

impl Ports {
    fn free() -> Self {
        let ports = crate::servers::free_ports(3).expect("free loopback ports");
        Self { client: ports[0], monitor: ports[1], route: ports[2] }
    }
}

/// The nats-server on PATH, when it is there and new enough; else `None` after a loud
/// notice (a failure in CI).
fn server_binary() -> Option<PathBuf> {
    let path = binary("nats-server", INSTALL)?;
    let found = version(&path);
    if parse_version(&found).is_some_and(|v| v >= OLDEST) {
        return Some(path);
    }
    let notice = format!(
        "{} is {found:?}, older than {}.{} (the NATS bus needs JetStream features of 2.10 and later); \
         install a current one with: {INSTALL}",
        path.display(),
        OLDEST.0,
        OLDEST.1
    );
    skip(&notice);
    None
}

/// `(major, minor)` of a `nats-server: v2.10.4` line.
fn parse_version(line: &str) -> Option<(u32, u32)> {
    let v = line.rsplit(' ').next()?.trim_start_matches('v');
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn scratch_dir(port: u16) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("capshop-nats-{}-{port}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory for nats-server");
    dir
}

impl NatsServer {
    /// Starts one JetStream server and waits until it is healthy; `None` when skipped.
    pub async fn start() -> Option<Self> {
        let binary = server_binary()?;
        let mut server = Self::configure(binary, Ports::free(), None);
        server.spawn();
        server.wait_healthy().await;
        Some(server)
    }

    /// Starts a JetStream cluster of `size` nodes routed to one another and waits until
    /// every node is healthy (which needs a meta leader); `None` when skipped.
    pub async fn cluster(size: usize) -> Option<Vec<Self>> {
        let binary = server_binary()?;
        let ports: Vec<Ports> = (0..size).map(|_| Ports::free()).collect();
        let routes: Vec<u16> = ports.iter().map(|p| p.route).collect();
        let mut nodes = Vec::with_capacity(size);
        for node in ports {
            let cluster = Some((node.route, routes.as_slice()));
            nodes.push(Self::configure(binary.clone(), node, cluster));
        }
        for node in &mut nodes {
            node.spawn();
        }
        for node in &nodes {
            node.wait_healthy().await;
        }
        Some(nodes)
    }

    /// Writes the configuration into a fresh directory.
    fn configure(binary: PathBuf, ports: Ports, cluster: Option<(u16, &[u16])>) -> Self {
        let dir = scratch_dir(ports.client);
        let mut config = format!(
            "listen: \"127.0.0.1:{client}\"\nhttp: \"127.0.0.1:{monitor}\"\nserver_name: \"n{client}\"\n\
             log_file: \"{log}\"\njetstream {{\n  store_dir: \"{store}\"\n  sync_interval: always\n}}\n",
            client = ports.client,
            monitor = ports.monitor,
            log = dir.join("server.log").display(),
            store = dir.join("store").display(),
        );
        if let Some((route, all)) = cluster {
            let routes: Vec<String> = all.iter().map(|p| format!("\"nats-route://127.0.0.1:{p}\"")).collect();
            config.push_str(&format!(
                "cluster {{\n  name: \"capshop\"\n  listen: \"127.0.0.1:{route}\"\n  routes: [{}]\n}}\n",
                routes.join(", ")
            ));
        }
        std::fs::write(dir.join("server.conf"), config).expect("writing the nats-server config");
        Self { binary, port: ports.client, monitor_port: ports.monitor, dir, child: None }
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(self.dir.join("server.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} failed: {e}", self.binary.display()));
        self.child = Some(child);
    }

    /// Waits until the server's health endpoint answers 200 (JetStream ready).
    async fn wait_healthy(&self) {
        let deadline = tokio::time::Instant::now() + STARTUP;
        loop {
            if healthy(self.monitor_port).await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server on port {} was not healthy after {STARTUP:?}; its log:\n{}",
                self.port,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The client URL, for `kit::bus::connect` (append `?...` settings as needed).
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("store")
    }

    /// Kills the server with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports and store and waits until it is healthy.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_healthy().await;
    }

    /// The name it has in a cluster (`n` and its client port).
    pub fn name(&self) -> String {
        format!("n{}", self.port)
    }

    /// The name of the server that leads JetStream stream `stream`, as this server sees it.
    pub async fn leader_of(&self, stream: &str) -> Option<String> {
        let body = http_get(self.monitor_port, "/jsz?streams=true").await?;
        let jsz: serde_json::Value = serde_json::from_str(&body).ok()?;
        jsz["account_details"].as_array()?.iter().find_map(|account| {
            account["stream_detail"].as_array()?.iter().find_map(|detail| {
                (detail["name"] == stream).then(|| detail["cluster"]["leader"].as_str().map(str::to_owned))?
            })
        })
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    #[allow(clippy::print_stderr, reason = "a failing test's output names where to look")]
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("nats-server on port {} left its files in {}", self.port, self.dir.display());
        }
    }
}

/// Whether `GET /healthz` on the monitoring port answers 200.
async fn healthy(monitor_port: u16) -> bool {
    http_get(monitor_port, "/healthz").await.is_some()
}

/// The body of `GET path` on the loopback port, when it answers 200.
async fn http_get(port: u16, path: &str) -> Option<String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_millis(500)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n");
        stream.write_all(request.as_bytes()).ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        let ok = head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200");
        ok.then(|| body.to_owned())
    })
    .await
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn versions_are_read_from_the_servers_version_line() {
        assert_eq!(parse_version("nats-server: v2.15.1"), Some((2, 15)));
        assert_eq!(parse_version("nats-server: v2.9.10"), Some((2, 9)));
        assert_eq!(parse_version(""), None);
    }
}
