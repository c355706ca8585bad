//! `capshop dlq`: list, show, replay and discard dead letters of a running shop, through
//! the gateway's admin routes.

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::admin::{Admin, AdminArgs};

const SERVICES: [&str; 7] = ["customer", "catalog", "inventory", "order", "payment", "shipping", "search"];

#[derive(Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,
    #[command(flatten)]
    admin: AdminArgs,
    /// Only this service's consumers (default: every service).
    #[arg(long, global = true)]
    service: Option<String>,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Lists dead letters (optionally only of one consumer, stream or key).
    List(Selection),
    /// Shows the dead letters of one event, with the original envelope.
    Show { event_id: String },
    /// Delivers dead letters again with fresh attempts.
    Replay(Selection),
    /// Drops dead letters, releasing what was parked behind them.
    Discard(Selection),
}

#[derive(Args)]
struct Selection {
    /// One event.
    #[arg(long)]
    event_id: Option<String>,
    #[arg(long)]
    consumer: Option<String>,
    #[arg(long)]
    stream: Option<String>,
    #[arg(long)]
    key: Option<String>,
    /// Every dead letter (replay and discard refuse an empty selection without it).
    #[arg(long)]
    all: bool,
}

impl Selection {
    fn body(&self) -> Value {
        json!({ "event_id": self.event_id, "consumer": self.consumer, "stream": self.stream, "key": self.key, "all": self.all })
    }
}

pub async fn run(args: DlqArgs) -> anyhow::Result<()> {
    let admin = Admin::connect(&args.admin)?;
    let services: Vec<&str> = match &args.service {
        Some(s) if SERVICES.contains(&s.as_str()) => vec![s.as_str()],
        Some(s) => bail!("unknown service {s:?}: use one of {}", SERVICES.join(", ")),
        None => SERVICES.to_vec(),
    };
    let mut total = 0;
    for service in services {
        let path = format!("/api/{service}/admin/dead-letters");
        let request = match &args.command {
            DlqCommand::List(s) => {
                let query: Vec<(&str, &String)> = [
                    ("event_id", &s.event_id),
                    ("consumer", &s.consumer),
                    ("stream", &s.stream),
                    ("key", &s.key),
                ]
                .into_iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
                .collect();
                admin.get(&path).query(&query)
            }
            DlqCommand::Show { event_id } => admin.get(&format!("{path}/{event_id}")),
            DlqCommand::Replay(s) => admin.post(&format!("{path}/replay"), &s.body()),
            DlqCommand::Discard(s) => admin.post(&format!("{path}/discard"), &s.body()),
        };
        let (status, body) = admin.send(request).await?;
        if status == 404 && matches!(args.command, DlqCommand::Show { .. }) {
            continue;
        }
        if !(200..300).contains(&status) {
            bail!("{service}: {status} {}", body["detail"].as_str().unwrap_or("failed"));
        }
        match &args.command {
            DlqCommand::Replay(_) | DlqCommand::Discard(_) => {
                let count = body["count"].as_u64().unwrap_or(0);
                total += count;
                if count > 0 {
                    println!("{service}: {count}");
                }
            }
            _ => {
                for letter in body.as_array().into_iter().flatten() {
                    total += 1;
                    if matches!(args.command, DlqCommand::Show { .. }) {
                        println!("{}", serde_json::to_string_pretty(letter)?);
                    } else {
                        println!(
                            "{}  {}  {}/{} #{}  attempts {}  parked {}  {}",
                            letter["event_id"].as_str().unwrap_or("?"),
                            letter["consumer"].as_str().unwrap_or("?"),
                            letter["stream"].as_str().unwrap_or("?"),
                            letter["key"].as_str().unwrap_or("?"),
                            letter["seq"],
                            letter["attempts"],
                            letter["parked"],
                            letter["error"].as_str().unwrap_or(""),
                        );
                    }
                }
            }
        }
    }
    match &args.command {
        DlqCommand::List(_) => println!("{total} dead letter(s)"),
        DlqCommand::Show { event_id } if total == 0 => bail!("no dead letter for event {event_id}"),
        DlqCommand::Show { .. } => {}
        DlqCommand::Replay(_) => println!("replayed {total}"),
        DlqCommand::Discard(_) => println!("discarded {total}"),
    }
    Ok(())
}
