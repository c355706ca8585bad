//! `capshop dlq`: list, show, replay and discard dead letters of a running shop, through
//! the gateway's admin routes.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

const SERVICES: [&str; 7] = ["customer", "catalog", "inventory", "order", "payment", "shipping", "search"];

#[derive(Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,
    /// The gateway of the running shop.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080", env = "CAPSHOP_URL")]
    url: String,
    /// The admin token (default: the one `capshop up` stored in the data dir).
    #[arg(long, global = true, env = "CAPSHOP_ADMIN_TOKEN")]
    token: Option<String>,
    /// The data dir whose stored admin token to use when --token is not given.
    #[arg(long, global = true, default_value = "capshop-data", env = "CAPSHOP_DATA_DIR")]
    data_dir: PathBuf,
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
    let token = match &args.token {
        Some(token) => token.clone(),
        None => std::fs::read_to_string(args.data_dir.join("admin-token"))
            .map(|t| t.trim().to_owned())
            .with_context(|| {
                format!("no admin token: pass --token, set CAPSHOP_ADMIN_TOKEN, or point --data-dir at the shop's data ({} has none)", args.data_dir.display())
            })?,
    };
    let services: Vec<&str> = match &args.service {
        Some(s) if SERVICES.contains(&s.as_str()) => vec![s.as_str()],
        Some(s) => bail!("unknown service {s:?}: use one of {}", SERVICES.join(", ")),
        None => SERVICES.to_vec(),
    };
    let client = reqwest::Client::new();
    let base = args.url.trim_end_matches('/');
    let mut total = 0;
    for service in services {
        let admin = format!("{base}/api/{service}/admin/dead-letters");
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
                client.get(&admin).query(&query)
            }
            DlqCommand::Show { event_id } => client.get(format!("{admin}/{event_id}")),
            DlqCommand::Replay(s) => client.post(format!("{admin}/replay")).json(&s.body()),
            DlqCommand::Discard(s) => client.post(format!("{admin}/discard")).json(&s.body()),
        };
        let response = request
            .bearer_auth(&token)
            .send()
            .await
            .with_context(|| format!("cannot reach capshop at {base}; is it up?"))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status == 404 && matches!(args.command, DlqCommand::Show { .. }) {
            continue;
        }
        if !status.is_success() {
            bail!("{service}: {} {}", status.as_u16(), body["detail"].as_str().unwrap_or("failed"));
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
