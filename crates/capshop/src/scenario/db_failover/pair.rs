//! A PostgreSQL primary with one streaming standby on loopback, in a directory of their
//! own: the primary made by initdb, the standby by `pg_basebackup` through a physical
//! replication slot, replicating asynchronously or as the primary's synchronous standby.
//!
//! The standby starts fenced (`default_transaction_read_only` in its `fence.conf`), so
//! that once promoted it refuses the services' `target_session_attrs=read-write` until
//! the failover step ([`super::failover`]) has made it safe to write and lifts the fence.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use kit::servers::{POSTGRES_INSTALL, unprivileged_account};

use crate::distributed::{create_databases, prepare};

/// How long a starting server may take to accept connections.
const READY: Duration = Duration::from_secs(60);

/// The standby's name: its `application_name`, its slot, and what the primary's
/// `synchronous_standby_names` names in the synchronous choice.
const STANDBY: &str = "standby";

/// How the primary waits for its standby.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    /// A commit is acknowledged once the primary has it; the standby follows behind.
    Async,
    /// A commit is acknowledged once the standby has flushed it too
    /// (`synchronous_standby_names`, `synchronous_commit = on`).
    Sync,
}

impl Replication {
    pub fn as_str(self) -> &'static str {
        match self {
            Replication::Async => "async",
            Replication::Sync => "sync",
        }
    }
}

/// One server of the pair.
pub struct Node {
    name: &'static str,
    data: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl Node {
    /// An admin URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The pids of the server's own processes (backends, walsender, walreceiver, ...) with
    /// their titles.
    fn processes(&self) -> Vec<(u32, String)> {
        let Some(postmaster) = self.child.as_ref().map(Child::id) else { return Vec::new() };
        children_of(postmaster)
    }

    fn kill(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let others = children_of(child.id());
        let _ = child.kill();
        let _ = child.wait();
        for (pid, _) in others {
            // SAFETY: kill(2) on a pid that was a child of our own child a moment ago.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// A primary and its streaming standby, stopped and removed on drop.
pub struct Pair {
    dir: tempfile::TempDir,
    pub primary: Node,
    pub standby: Node,
    pub replication: Replication,
}

impl Pair {
    /// Makes the primary, a database per part of the shop on it, and the standby from a
    /// base backup; answers once the standby streams (as the synchronous standby, in the
    /// synchronous choice).
    pub async fn start(replication: Replication) -> anyhow::Result<Self> {
        let program = |name: &str| {
            kit::servers::on_path(name)
                .with_context(|| format!("`{name}` is not on PATH; scenario db-failover needs it: {POSTGRES_INSTALL}"))
        };
        let (initdb, postgres, basebackup) = (program("initdb")?, program("postgres")?, program("pg_basebackup")?);
        let dir = tempfile::Builder::new().prefix("capshop-db-failover-").tempdir()?;
        let account = unprivileged_account();
        if let Some((uid, gid)) = account {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        }
        let ports = kit::servers::free_ports(2)?;
        let node = |name: &'static str, port: u16| Node { name, data: dir.path().join(name), port, child: None };
        let mut pair = Pair { primary: node("primary", ports[0]), standby: node(STANDBY, ports[1]), replication, dir };

        let mut init = Command::new(initdb);
        init.arg("-D").arg(&pair.primary.data);
        init.args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"]);
        run(&mut init, account, "initdb")?;
        append(
            &pair.primary.data.join("postgresql.conf"),
            "listen_addresses = '127.0.0.1'\nwal_level = replica\nmax_wal_senders = 4\n\
             max_replication_slots = 4\nmax_connections = 100\nfsync = off\n\
             include_if_exists = 'fence.conf'\n",
        )?;
        pair.launch(&postgres, account, true).await?;
        let admin = pair.primary.url("postgres");
        blocking(move || create_databases(&admin)).await.context("cannot create the shop's databases")?;

        let mut backup = Command::new(basebackup);
        backup.args(["-h", "127.0.0.1", "-p", &pair.primary.port.to_string(), "-U", "postgres"]);
        backup.arg("-D").arg(&pair.standby.data).args(["-X", "stream", "-C", "-S", STANDBY, "-R", "--no-sync", "--checkpoint=fast"]);
        run(&mut backup, account, "pg_basebackup")?;
        // Later lines win: the standby names itself, so the primary can wait for it.
        append(
            &pair.standby.data.join("postgresql.auto.conf"),
            &format!(
                "primary_conninfo = 'host=127.0.0.1 port={} user=postgres application_name={STANDBY}'\n",
                pair.primary.port
            ),
        )?;
        write_owned(&pair.standby.data.join("fence.conf"), "default_transaction_read_only = on\n", account)?;
        pair.launch(&postgres, account, false).await?;
        if replication == Replication::Sync {
            let admin = pair.primary.url("postgres");
            blocking(move || {
                let mut client = postgres::Client::connect(&admin, postgres::NoTls)?;
                // Two statements: ALTER SYSTEM refuses to run in a transaction block.
                client.batch_execute(&format!("ALTER SYSTEM SET synchronous_standby_names = '{STANDBY}'"))?;
                client.batch_execute("SELECT pg_reload_conf()")
            })
            .await
            .context("cannot make the standby synchronous")?;
        }
        pair.wait_streaming().await?;
        Ok(pair)
    }

    /// The multi-host base URL the services are given: both servers, and only a session
    /// that may write is taken.
    pub fn base_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}?target_session_attrs=read-write",
            self.primary.port, self.standby.port
        )
    }

    /// Freezes the primary's WAL sender (SIGSTOP): from now on the standby receives
    /// nothing, as with a replica that lags behind a stalled network. Answers its pid.
    pub fn stall_replication(&self) -> anyhow::Result<u32> {
        let Some((pid, _)) = self.primary.processes().into_iter().find(|(_, title)| title.contains("walsender"))
        else {
            bail!("the primary has no walsender: the standby does not stream");
        };
        // SAFETY: kill(2) on a process of the server this pair started.
        if unsafe { libc::kill(pid as i32, libc::SIGSTOP) } != 0 {
            bail!("cannot stop the walsender {pid}: {}", std::io::Error::last_os_error());
        }
        Ok(pid)
    }

    /// SIGKILLs the primary and every process of it, as a crash of its machine would.
    pub fn kill_primary(&mut self) {
        self.primary.kill();
    }

    /// What a server has logged, for error messages.
    pub fn log(&self, node: &Node) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", node.name))).unwrap_or_default()
    }

    /// The standby's fence file: present, its sessions are read-only.
    pub fn fence(&self) -> PathBuf {
        self.standby.data.join("fence.conf")
    }

    async fn launch(&mut self, program: &Path, account: Option<(u32, u32)>, primary: bool) -> anyhow::Result<()> {
        let node = if primary { &mut self.primary } else { &mut self.standby };
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", node.name)))?;
        let mut command = Command::new(program);
        command.arg("-D").arg(&node.data).args(["-p", &node.port.to_string()]);
        command.arg("-k").arg(self.dir.path()).stdout(log.try_clone()?).stderr(log);
        node.child = Some(prepare(&mut command, account).spawn().context("cannot start postgres")?);
        let url = node.url("postgres");
        let deadline = tokio::time::Instant::now() + READY;
        loop {
            let url = url.clone();
            if blocking(move || postgres::Client::connect(&url, postgres::NoTls).map(drop)).await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                let node = if primary { &self.primary } else { &self.standby };
                bail!("the {} did not accept connections:\n{}", node.name, self.log(node));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the primary sees its standby streaming, with the sync state asked for.
    async fn wait_streaming(&self) -> anyhow::Result<()> {
        let wanted = if self.replication == Replication::Sync { "sync" } else { "async" };
        let deadline = tokio::time::Instant::now() + READY;
        loop {
            let admin = self.primary.url("postgres");
            let state = blocking(move || {
                let mut client = postgres::Client::connect(&admin, postgres::NoTls)?;
                let row = client.query_opt(
                    "SELECT sync_state FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'",
                    &[&STANDBY],
                )?;
                Ok::<_, postgres::Error>(row.map(|r| r.get::<_, String>(0)))
            })
            .await;
            if state.as_ref().is_ok_and(|s| s.as_deref() == Some(wanted)) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the standby does not stream as {wanted} ({state:?}):\n{}", self.log(&self.standby));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.primary.kill();
        self.standby.kill();
    }
}

/// Runs a synchronous PostgreSQL client call off the async runtime.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("the client thread does not panic")
}

/// Runs a setup program as `account` and fails with its stderr when it fails.
fn run(command: &mut Command, account: Option<(u32, u32)>, what: &str) -> anyhow::Result<()> {
    let output = prepare(command.stdout(Stdio::piped()).stderr(Stdio::piped()), account).spawn()?.wait_with_output()?;
    if !output.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

fn append(file: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(file).with_context(|| format!("cannot open {}", file.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// Writes `file` as `account` owns files in the cluster, so the server can read it.
fn write_owned(file: &Path, text: &str, account: Option<(u32, u32)>) -> anyhow::Result<()> {
    std::fs::write(file, text)?;
    if let Some((uid, gid)) = account {
        std::os::unix::fs::chown(file, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// The processes whose parent is `parent`, with their titles (PostgreSQL names each
/// process by its role in its title: `postgres: walsender ...`).
fn children_of(parent: u32) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // After the command name, in parentheses: state, ppid, ...
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse::<u32>().ok()?;
            let title = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).ok()?;
            (ppid == parent).then(|| (pid, title.replace('\0', " ")))
        })
        .collect()
}
