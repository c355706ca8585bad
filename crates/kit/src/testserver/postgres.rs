//! A throwaway PostgreSQL server: `initdb` into a temporary directory, `postgres` on a
//! free loopback port, killed, frozen and restarted on demand, removed on drop.
//!
//! PostgreSQL refuses to run as root, so as root (CI runs so) both programs run as the
//! unprivileged `nobody`, in a directory it owns. A watchdog process outlives the test
//! process only to stop the server and remove the directory, so a server is not leaked
//! when the test process exits without dropping it (as with [`PgServer::shared`]).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::{binary, free_port};
use crate::servers::{POSTGRES_INSTALL as INSTALL, as_account, unprivileged_account};

/// How long a starting server may take to accept connections before the test fails.
const STARTUP: Duration = Duration::from_secs(60);

/// A PostgreSQL server of its own for a test, on `127.0.0.1`, with the superuser
/// `postgres` and trust authentication.
pub struct PgServer {
    dir: PathBuf,
    port: u16,
    postgres: PathBuf,
    account: Option<(u32, u32)>,
    server: Mutex<Option<Child>>,
    watchdog: Mutex<Option<Child>>,
}

impl PgServer {
    /// Initializes a cluster and starts it on a free port, waiting until it accepts
    /// connections. `None` when the binaries are missing outside CI (with a loud notice);
    /// in CI a missing binary panics.
    pub fn start() -> Option<PgServer> {
        let initdb = binary("initdb", INSTALL)?;
        let postgres = binary("postgres", INSTALL)?;
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "capshop-pg-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a directory for the test server");
        let account = unprivileged_account();
        if let Some((uid, gid)) = account {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("the server directory changes owner");
        }
        let mut init = Command::new(initdb);
        init.args(["-D", "data", "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"]);
        let output = as_account(&mut init, account).current_dir(&dir).output().expect("initdb runs");
        assert!(output.status.success(), "initdb failed: {}", String::from_utf8_lossy(&output.stderr));
        let server = PgServer {
            watchdog: Mutex::new(Some(watchdog(&dir))),
            dir,
            port: free_port(),
            postgres,
            account,
            server: Mutex::new(None),
        };
        server.launch();
        Some(server)
    }

    /// One server for the whole test process, started on first use and never killed by
    /// tests; a test takes a database of its own with [`PgServer::create_database`].
    pub fn shared() -> Option<&'static PgServer> {
        static SHARED: OnceLock<Option<PgServer>> = OnceLock::new();
        SHARED.get_or_init(PgServer::start).as_ref()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the server without a database: `postgres://postgres@127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// The URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("{}/{database}", self.base_url())
    }

    /// Creates the empty database `name` and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        let (admin, statement) = (self.url("postgres"), format!("CREATE DATABASE \"{name}\""));
        off_runtime(move || postgres::Client::connect(&admin, postgres::NoTls)?.batch_execute(&statement))
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        self.url(name)
    }

    /// Kills the server and every process of it with SIGKILL, as a crash would.
    pub fn kill(&self) {
        let Some(mut server) = self.server.lock().unwrap().take() else { return };
        let postmaster = server.id();
        let children = children_of(postmaster);
        let _ = server.kill();
        let _ = server.wait();
        if !children.is_empty() {
            let _ = Command::new("sh")
                .arg("-c")
                .arg("kill -KILL \"$@\" 2>/dev/null")
                .arg("sh")
                .args(&children)
                .status();
        }
        let deadline = Instant::now() + STARTUP;
        while children.iter().any(|pid| alive(pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Freezes the server and every process of it with SIGSTOP, as a hung machine would:
    /// its connections stay open and nothing on them answers. [`PgServer::cont`] lets it go on.
    pub fn stop(&self) {
        self.signal("STOP");
    }

    /// Lets a server frozen by [`PgServer::stop`] go on (SIGCONT).
    pub fn cont(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let Some(postmaster) = self.server.lock().unwrap().as_ref().map(Child::id) else { return };
        let mut pids = children_of(postmaster);
        pids.push(postmaster.to_string());
        let status = Command::new("kill").arg(format!("-{signal}")).args(&pids).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} {pids:?} failed");
    }

    /// Starts the server again on the same port and directory (after [`PgServer::kill`])
    /// and waits until it accepts connections.
    pub fn restart(&self) {
        self.kill();
        self.launch();
    }

    /// What the server has logged, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    fn launch(&self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("postgres.log"))
            .expect("the server log opens");
        let mut command = Command::new(&self.postgres);
        let socket_dir = self.dir.to_str().expect("a UTF-8 temp dir");
        let port = self.port.to_string();
        command.args(["-D", "data", "-p", &port, "-k", socket_dir]);
        command.args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"]);
        let child = as_account(&mut command, self.account)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log handle clones"))
            .stderr(log)
            .spawn()
            .expect("postgres starts");
        *self.server.lock().unwrap() = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + STARTUP;
        loop {
            let url = self.url("postgres");
            match off_runtime(move || postgres::Client::connect(&url, postgres::NoTls).map(drop)) {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("postgres did not start: {e}\n{}", self.log()),
                Err(_) => {}
            }
            if let Some(status) =
                self.server.lock().unwrap().as_mut().and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("postgres exited with {status}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
        // Closing its stdin ends the watchdog, which finds nothing left to do.
        if let Some(mut watchdog) = self.watchdog.lock().unwrap().take() {
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
    }
}

/// Starts a process that waits for this one to exit (its stdin closes), then stops the
/// server left in `dir` and removes it. In a process group of its own, so a Ctrl-C meant
/// for the tests does not stop it before it has cleaned up.
fn watchdog(dir: &Path) -> Child {
    let script = "cat >/dev/null; \
                  if pid=$(head -n 1 \"$1/data/postmaster.pid\" 2>/dev/null); then \
                  kill -QUIT \"$pid\" 2>/dev/null; sleep 1; fi; rm -rf \"$1\"";
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("watchdog")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("the server watchdog starts")
}

/// The pids of the processes whose parent is `parent`.
fn children_of(parent: u32) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            // Fields after the command name, which is in parentheses: state, ppid, ...
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
            rest.split_whitespace().nth(1).and_then(|ppid| ppid.parse::<u32>().ok()) == Some(parent)
        })
        .collect()
}

/// Whether `pid` still runs (a zombie does not).
fn alive(pid: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    state.is_some_and(|s| s != "Z" && s != "X")
}

/// Runs `f` on a thread of its own: the synchronous client starts a runtime of its own,
/// which cannot happen on a thread that already runs one (as in a `#[tokio::test]`).
fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f).join().expect("the client thread does not panic")
}
