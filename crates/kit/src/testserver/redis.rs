//! A real `redis-server` for tests: on a free loopback port, its working directory a
//! temporary one of its own and nothing persisted (`--save "" --appendonly no`, as the
//! distributed mode runs it), so a test can kill it (SIGKILL) and restart it on the same
//! port, empty, as a crashed cache comes back.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{binary, free_port};
use crate::servers::REDIS_INSTALL as INSTALL;

/// How long a starting server may take to answer PING.
const STARTUP: Duration = Duration::from_secs(30);

/// A redis-server process; killed (and its directory removed) on drop.
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server and waits until it answers PING; `None` (after a loud notice, a
    /// failure in CI) when `redis-server` is not on PATH.
    pub async fn start() -> Option<Self> {
        let binary = binary("redis-server", INSTALL)?;
        let port = free_port();
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("capshop-redis-{}-{port}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory for redis-server");
        let mut server = Self { binary, port, dir, child: None };
        server.spawn();
        server.wait_ready().await;
        Some(server)
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string(), "--save", "", "--appendonly", "no"])
            .args(["--bind", "127.0.0.1", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("server.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} failed: {e}", self.binary.display()));
        self.child = Some(child);
    }

    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + STARTUP;
        loop {
            let port = self.port;
            if tokio::task::spawn_blocking(move || answers_ping(port)).await.unwrap_or(false) {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "redis-server on port {} exited while starting ({status}); its log:\n{}",
                    self.port,
                    self.log()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server on port {} did not answer PING after {STARTUP:?}; its log:\n{}",
                self.port,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The URL the catalog's cache takes (`--cache`).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: nothing was persisted) and waits
    /// until it answers PING.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready().await;
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    #[allow(clippy::print_stderr, reason = "a failing test's output names where to look")]
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("redis-server on port {} left its files in {}", self.port, self.dir.display());
        }
    }
}

/// Whether a Redis on loopback `port` answers PING with PONG.
fn answers_ping(port: u16) -> bool {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&address, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut answer = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}
