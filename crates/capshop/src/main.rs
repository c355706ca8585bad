//! The capshop binary: parses arguments and hands over to the command's `run`.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program: what it prints is its output"
)]

mod admin;
mod after_promote;
mod backup;
mod bench;
mod chaos;
mod config;
mod distributed;
mod dlq;
mod lab;
mod reconcile;
mod scenario;
mod serve;
mod torture;
mod up;

use clap::{Parser, Subcommand};

/// capshop: an online-shop backend whose microservices stay available through failures.
#[derive(Parser)]
#[command(name = "capshop", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Starts the whole shop on this machine: every service, the embedded bus and the gateway.
    Up(up::UpArgs),
    /// Runs one service, or the gateway, as its own process on PostgreSQL and NATS
    /// (the distributed mode; see docs/DEPLOY.md).
    Serve(serve::ServeArgs),
    /// Lists, shows, replays or discards dead letters of the running shop (admin token).
    Dlq(dlq::DlqArgs),
    /// Checks that the services' databases agree: broken links, orphans, replica
    /// mismatches, stock and streams; exits 1 when a finding is a defect.
    Reconcile(reconcile::ReconcileArgs),
    /// Takes a consistent backup of every service database while writes go on, or
    /// verifies one (docs/BACKUP.md).
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// Restores a backup into a fresh data dir; `capshop up --data-dir` it afterwards.
    Restore(backup::RestoreArgs),
    /// After a PostgreSQL standby is promoted, before the services write to it: raises each
    /// service's outbox head to the bus's (docs/DEPLOY.md, the failover choices).
    AfterPromote(after_promote::AfterPromoteArgs),
    /// Cuts, heals, slows or makes lossy a link, or stops and starts a service (admin token).
    Chaos(chaos::ChaosArgs),
    /// Runs an experiment of DESIGN §4 on a fresh shop and reports its figures.
    Scenario(scenario::ScenarioArgs),
    /// Runs randomized fault schedules against the shop and checks the whole history:
    /// nothing acknowledged lost, nothing unexpected, no double effect, convergence
    /// (see docs/RELIABILITY.md); exits 1 on a violation, naming the seed to replay.
    Torture(torture::TortureArgs),
    /// Measures throughput, lag, latency and memory against ceilings measured in the same
    /// run (see BENCHMARKS.md); appends each run to bench/results/.
    Bench(bench::BenchArgs),
    /// Experiments on the bare event path (used by the crash tests and benchmarks).
    #[command(subcommand, hide = true)]
    Lab(lab::LabCommand),
}

fn main() -> anyhow::Result<()> {
    return_large_blocks_to_the_system();
    let cli = Cli::parse();
    // A scenario or a bench provokes failures on purpose; its report says what they were.
    let quiet = if matches!(cli.command, Command::Scenario(_) | Command::Bench(_) | Command::Torture(_)) {
        "error"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| quiet.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Up(args) => runtime.block_on(up::run(args)),
        Command::Serve(args) => runtime.block_on(serve::run(args)),
        Command::Dlq(args) => runtime.block_on(dlq::run(args)),
        Command::Chaos(args) => runtime.block_on(chaos::run(args)),
        Command::Backup(command) => runtime.block_on(backup::run(command)),
        Command::Restore(args) => runtime.block_on(backup::restore(args)),
        Command::AfterPromote(args) => runtime.block_on(after_promote::run(args)),
        Command::Reconcile(args) => match runtime.block_on(reconcile::run(args)) {
            Ok(true) => Ok(()),
            Ok(false) => std::process::exit(1),
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::exit(2)
            }
        },
        Command::Scenario(args) => runtime.block_on(scenario::run(args)),
        Command::Bench(args) => runtime.block_on(bench::run(args)),
        Command::Torture(args) => runtime.block_on(torture::run(args)),
        Command::Lab(command) => runtime.block_on(lab::run(command)),
    }
}

/// Every password hash (argon2id) takes a 19 MiB block. glibc serves blocks that large from
/// a thread's arena once one of them was freed (its mmap threshold grows), and keeps them
/// there: with a hash on each of a runtime's threads the process held ~300 MB it no longer
/// used (`capshop bench`'s peak RSS). A fixed threshold maps every block of 4 MiB or more on
/// its own and gives it back when it is freed.
fn return_large_blocks_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes an allocator setting; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}
