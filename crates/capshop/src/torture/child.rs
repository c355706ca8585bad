//! The shop under torture: `capshop up` as a child process on a data dir of its own, so the
//! nemesis can SIGKILL it and start it again on the same files and port, and a client that
//! reaches it only through its gateway, like any user. The embedded shop can be armed to
//! freeze at one of the kit's crash points (`kit::crashpoint`, through a file it names);
//! its stdout says when one is reached. With `--distributed` it is `capshop up
//! --distributed`, whose printed processes the nemesis signals one by one.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::watch;
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
    /// The file whose text arms a crash point in the running embedded process.
    crash_file: PathBuf,
    /// The line of the crash point the running process reached, once it has.
    crashed: watch::Receiver<Option<String>>,
}

impl ChildShop {
    /// Starts `capshop up` (`--distributed` when `distributed`) on `data_dir` in inventory
    /// `mode` and waits until it serves.
    pub async fn start(data_dir: &Path, mode: &str, distributed: bool) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let token: String = (0..32).map(|_| format!("{:x}", rand::random::<u8>() % 16)).collect();
        let client = reqwest::Client::builder().timeout(TIMEOUT).build()?;
        let (data_dir, mode) = (data_dir.to_owned(), mode.to_owned());
        let crash_file = data_dir.with_extension("crashpoint");
        let crashed = watch::channel(None).1;
        let mut shop = Self {
            data_dir,
            port,
            mode,
            token,
            child: None,
            client,
            processes: None,
            distributed,
            crash_file,
            crashed,
        };
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
            .env_remove("CAPSHOP_CRASHPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if self.distributed {
            command.arg("--distributed");
        } else {
            // Started disarmed: a crash point is armed by writing the file, when its fault begins.
            match std::fs::remove_file(&self.crash_file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    bail!("cannot disarm {}: {e}", self.crash_file.display())
                }
                _ => {}
            }
            command.env("CAPSHOP_CRASHPOINT_FILE", &self.crash_file);
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
        let stdout = child.stdout.take().context("no stdout of capshop up")?;
        if self.distributed {
            self.processes = Some(Processes::read(stdout));
        } else {
            let (reached, crashed) = watch::channel(None);
            self.crashed = crashed;
            tokio::spawn(crash_points_reached(stdout, reached));
        }
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

    /// Arms the kit's crash point `point` in the running embedded process: it freezes the
    /// `after`-th time it passes it from now on. Answers what holds the point's line once
    /// it is reached (and closes when the process's stdout does).
    pub fn arm(&self, point: &str, after: u64) -> anyhow::Result<watch::Receiver<Option<String>>> {
        if self.distributed {
            bail!("crash points are armed in the embedded shop only");
        }
        // Written whole, then renamed: the process never reads half of it.
        let armed = self.crash_file.with_extension("armed");
        std::fs::write(&armed, format!("{point}:{after}"))
            .and_then(|()| std::fs::rename(&armed, &self.crash_file))
            .with_context(|| format!("cannot arm the crash point in {}", self.crash_file.display()))?;
        Ok(self.crashed.clone())
    }

    /// Sends SIGKILL to the process at once, without the lock [`ChildShop::kill`] needs: a
    /// process frozen at a crash point has other threads that go on until it dies.
    pub fn sigkill(&self) {
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            // SAFETY: kill(2) on our own child's pid, which it keeps until it is waited for.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
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

/// Reads the embedded shop's stdout until it ends, and puts the line of a crash point it
/// reached in `reached`.
async fn crash_points_reached(stdout: ChildStdout, reached: watch::Sender<Option<String>>) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.starts_with("crashpoint ") && line.ends_with(" reached") {
            reached.send_replace(Some(line));
        }
    }
}
