//! The shop under torture: `capshop up` as a child process on a data dir of its own, so the
//! nemesis can SIGKILL it and start it again on the same files and port, and a client that
//! reaches it only through its gateway, like any user. With `--distributed` it is `capshop
//! up --distributed`, whose printed processes the nemesis signals one by one.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use reqwest::Method;
use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::distributed::processes::Processes;

/// How long one request may take before its outcome is unknown.
const TIMEOUT: Duration = Duration::from_secs(5);

/// An answer from the shop; status 0 when there was none (a timeout, a reset, a refusal).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

/// A running (or killed) `capshop up` child.
pub struct ChildShop {
    data_dir: PathBuf,
    port: u16,
    mode: String,
    pub token: String,
    child: Option<Child>,
    client: reqwest::Client,
    /// With `--distributed`: the processes `up` started, read from what it prints.
    processes: Option<Processes>,
    distributed: bool,
}

impl ChildShop {
    /// Starts `capshop up` (`--distributed` when `distributed`) on `data_dir` in inventory
    /// `mode` and waits until it serves.
    pub async fn start(data_dir: &Path, mode: &str, distributed: bool) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let token: String = (0..32).map(|_| format!("{:x}", rand::random::<u8>() % 16)).collect();
        let client = reqwest::Client::builder().timeout(TIMEOUT).build()?;
        let (data_dir, mode) = (data_dir.to_owned(), mode.to_owned());
        let mut shop =
            Self { data_dir, port, mode, token, child: None, client, processes: None, distributed };
        shop.spawn().await?;
        Ok(shop)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("cannot find the capshop binary")?;
        let mut command = Command::new(exe);
        command
            .args(["up", "--listen", &format!("127.0.0.1:{}", self.port), "--inventory-mode", &self.mode])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("CAPSHOP_ADMIN_TOKEN", &self.token)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(if self.distributed { Stdio::piped() } else { Stdio::null() })
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if self.distributed {
            command.arg("--distributed");
        }
        // SAFETY: prctl only sets this child's own parent-death signal before it execs.
        // A torture run that is killed itself takes its shop with it, leaving no orphan.
        #[cfg(target_os = "linux")]
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command.spawn().context("cannot start capshop up")?;
        self.processes = child.stdout.take().map(Processes::read);
        self.child = Some(child);
        // The distributed mode starts a server and a process per part, one after another.
        let bound = Duration::from_secs(if self.distributed { 180 } else { 60 });
        let started = Instant::now();
        loop {
            if self.call(Method::GET, "/api/catalog/products", None, None, &[]).await.status == 200 {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("capshop up exited at start ({status}); is {} usable?", self.data_dir.display());
            }
            if started.elapsed() > bound {
                bail!("capshop up did not serve within {bound:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the process with SIGKILL (no shutdown, no flush) and starts it again on the
    /// same files and port.
    pub async fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        self.kill().await;
        self.spawn().await
    }

    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Stops the shop as Ctrl-C does (`up --distributed` stops its processes and servers
    /// in order), or with SIGKILL when it has not stopped within a minute.
    pub async fn stop(&mut self) {
        if let Some(processes) = &self.processes {
            let _ = processes.resume_all();
        }
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            // SAFETY: kill(2) on our own child's pid, which it keeps until it is waited for.
            unsafe { libc::kill(pid as i32, libc::SIGINT) };
            if let Some(child) = self.child.as_mut() {
                let _ = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
            }
        }
        self.kill().await;
    }

    /// The processes of `up --distributed`; an error in the embedded mode.
    pub fn processes(&self) -> anyhow::Result<&Processes> {
        self.processes.as_ref().context("only `capshop up --distributed` has processes of its own")
    }

    pub fn distributed(&self) -> bool {
        self.distributed
    }

    /// Sends `method path` through the gateway with a JSON body, a bearer token and headers.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        bearer: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self.client.request(method, format!("http://127.0.0.1:{}{path}", self.port));
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                // JSON when it is JSON (metrics are text: kept as a string).
                let text = response.text().await.unwrap_or_default();
                let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
                Answer { status, body }
            }
            Err(e) => Answer { status: 0, body: Value::String(e.to_string()) },
        }
    }

    /// An admin call (the admin token).
    pub async fn admin(&self, method: Method, path: &str, body: Option<&Value>) -> Answer {
        self.call(method, path, body, Some(&self.token), &[]).await
    }

    /// Like [`ChildShop::admin`], but anything but a 2xx is an error naming `what`.
    pub async fn expect_admin(
        &self,
        what: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let answer = self.admin(method, path, body).await;
        if !(200..300).contains(&answer.status) {
            bail!("{what}: {} {}", answer.status, answer.body);
        }
        Ok(answer.body)
    }
}
