//! The processes of `capshop up --distributed` as the nemesis signals them. `up` prints
//! each process it starts with its pid (`  order:  http://...   (pid 4242)`) and each
//! restart of one (`order restarted (pid 4343)`); [`Processes`] reads that from its
//! stdout, so it always knows the pid the supervisor runs now. A crash is SIGKILL, a
//! pause SIGSTOP until SIGCONT; PostgreSQL is a postmaster with a process per connection,
//! so both reach every process of it, as a crashed or hung machine would.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};
use reqwest::Method;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::ChildStdout;
use tokio::time::Instant;

use super::super::child::ChildShop;

/// How long a crashed process may take to serve again (its supervisor's backoff, its
/// start, PostgreSQL's crash recovery) before its heal is a failure.
pub const RESTART_BOUND: Duration = Duration::from_secs(30);

/// A process `up` started: where it serves and its pid now.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Printed {
    url: String,
    pid: u32,
}

/// The processes of one `up --distributed` child, and the ones the nemesis froze.
#[derive(Default)]
pub struct Processes {
    printed: Arc<Mutex<BTreeMap<String, Printed>>>,
    /// The pids each pause froze, by process, until its heal lets them go on.
    paused: Mutex<BTreeMap<String, Vec<u32>>>,
    /// The pid each crash killed, by process, until it runs again.
    crashed: Mutex<BTreeMap<String, u32>>,
}

impl Processes {
    /// Reads `up`'s stdout until it closes, keeping the table of pids current.
    pub fn read(stdout: ChildStdout) -> Self {
        let processes = Self::default();
        let printed = processes.printed.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut table = printed.lock().unwrap_or_else(PoisonError::into_inner);
                update(&mut table, &line);
            }
        });
        processes
    }

    fn printed(&self, process: &str) -> Option<Printed> {
        self.printed.lock().unwrap_or_else(PoisonError::into_inner).get(process).cloned()
    }

    /// The base URL of PostgreSQL (`postgres://capshop@127.0.0.1:PORT`), once printed.
    pub fn postgres_base(&self) -> Option<String> {
        self.printed("postgres").map(|p| p.url)
    }

    /// The pid `process` runs as now.
    fn pid(&self, process: &str) -> anyhow::Result<u32> {
        Ok(self.printed(process).with_context(|| format!("capshop up printed no pid of {process}"))?.pid)
    }

    /// Kills `process` (and every process of it) with SIGKILL.
    pub fn crash(&self, process: &str) -> anyhow::Result<()> {
        let pid = self.pid(process)?;
        // Frozen first, so a postmaster forks no new process while its own are listed.
        signal(&[pid], libc::SIGSTOP)?;
        let mut all = children(pid);
        all.push(pid);
        signal(&all, libc::SIGKILL)?;
        self.crashed.lock().unwrap_or_else(PoisonError::into_inner).insert(process.to_owned(), pid);
        Ok(())
    }

    /// Freezes `process` (and every process of it) with SIGSTOP until [`Processes::resume`].
    pub fn pause(&self, process: &str) -> anyhow::Result<()> {
        let pid = self.pid(process)?;
        signal(&[pid], libc::SIGSTOP)?;
        let mut all = children(pid);
        signal(&all, libc::SIGSTOP)?;
        all.push(pid);
        self.paused.lock().unwrap_or_else(PoisonError::into_inner).insert(process.to_owned(), all);
        Ok(())
    }

    /// Lets the pids the pause of `process` froze go on (SIGCONT); nothing when none is frozen.
    pub fn resume(&self, process: &str) -> anyhow::Result<()> {
        let frozen = self.paused.lock().unwrap_or_else(PoisonError::into_inner).remove(process);
        signal(&frozen.unwrap_or_default(), libc::SIGCONT)
    }

    /// Lets every frozen process go on.
    pub fn resume_all(&self) -> anyhow::Result<()> {
        let paused: Vec<String> =
            self.paused.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect();
        paused.iter().try_for_each(|process| self.resume(process))
    }

    /// Waits, bounded by [`RESTART_BOUND`], until a crashed `process` runs under another
    /// pid than the one killed and serves: a service answers through the gateway,
    /// nats-server takes a connection, PostgreSQL a session.
    pub async fn restarted(&self, shop: &ChildShop, process: &str) -> anyhow::Result<Duration> {
        let killed = self.crashed.lock().unwrap_or_else(PoisonError::into_inner).remove(process);
        let killed = killed.with_context(|| format!("{process} was not crashed"))?;
        let started = Instant::now();
        loop {
            if let Some(now) = self.printed(process).filter(|p| p.pid != killed)
                && serves(shop, process, &now.url).await
            {
                return Ok(started.elapsed());
            }
            if started.elapsed() > RESTART_BOUND {
                bail!("{process} did not serve again within {RESTART_BOUND:?} of its SIGKILL");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Processes {
    /// A frozen process would ignore the end of its parent: it goes on first.
    fn drop(&mut self) {
        let _ = self.resume_all();
    }
}

/// Takes one line of `up`'s stdout into `table`: a process it started, or restarted.
fn update(table: &mut BTreeMap<String, Printed>, line: &str) {
    let Some((before, pid)) = line.trim_end().strip_suffix(')').and_then(|l| l.rsplit_once("(pid ")) else {
        return;
    };
    let Ok(pid) = pid.parse::<u32>() else { return };
    if let Some(process) = before.trim().strip_suffix(" restarted") {
        if let Some(printed) = table.get_mut(process) {
            printed.pid = pid;
        }
    } else if let Some((process, url)) = before.trim().split_once(": ") {
        table.insert(process.to_owned(), Printed { url: url.trim().to_owned(), pid });
    }
}

/// Whether `process` (at `url`, as `up` printed it) serves.
async fn serves(shop: &ChildShop, process: &str, url: &str) -> bool {
    match process {
        "nats" => {
            let address = url.trim_start_matches("nats://").to_owned();
            tokio::net::TcpStream::connect(address).await.is_ok()
        }
        "postgres" => {
            let admin = format!("{url}/postgres");
            let connects = tokio::task::spawn_blocking(move || {
                postgres::Client::connect(&admin, postgres::NoTls)
                    .and_then(|mut c| c.simple_query("SELECT 1"))
            });
            connects.await.is_ok_and(|r| r.is_ok())
        }
        part => shop.admin(Method::GET, &format!("/api/{part}/health"), None).await.status == 200,
    }
}

/// The children of `parent` (read while it is frozen, as the kernel asks for a list that
/// holds still).
fn children(parent: u32) -> Vec<u32> {
    let listed =
        std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).unwrap_or_default();
    listed.split_whitespace().filter_map(|pid| pid.parse().ok()).collect()
}

fn signal(pids: &[u32], signal: i32) -> anyhow::Result<()> {
    for pid in pids {
        // SAFETY: kill(2) with a pid of a process of the shop under torture.
        if unsafe { libc::kill(*pid as i32, signal) } != 0 {
            let e = std::io::Error::last_os_error();
            // A process of a frozen group may have ended by itself meanwhile.
            if e.raw_os_error() != Some(libc::ESRCH) {
                bail!("cannot send signal {signal} to pid {pid}: {e}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_takes_each_started_process_and_follows_its_restarts() {
        let mut table = BTreeMap::new();
        for line in [
            "capshop is up, distributed: every service its own process on PostgreSQL, NATS JetStream and Redis",
            "  nats:         nats://127.0.0.1:4222   (pid 100)",
            "  postgres:     postgres://capshop@127.0.0.1:5432   (pid 101)",
            "  inventory-dc1: http://127.0.0.1:9001   (pid 102)",
            "  admin token:  abc",
            "postgres exited by itself (signal: 9 (SIGKILL)); restarting it in 400 ms",
            "postgres restarted (pid 201)",
            "nobody restarted (pid 7)",
        ] {
            update(&mut table, line);
        }
        let pid = |p: &str| table.get(p).map(|p: &Printed| p.pid);
        assert_eq!((pid("nats"), pid("postgres"), pid("inventory-dc1")), (Some(100), Some(201), Some(102)));
        assert_eq!(table["postgres"].url, "postgres://capshop@127.0.0.1:5432");
        assert_eq!(table.len(), 3, "{table:?}");
    }
}
