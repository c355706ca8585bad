//! How the operations commands (`dlq`, `chaos`, `reconcile --url`) reach a running shop: the gateway's URL
//! and the admin token, and one way to send a request and turn its failure into a clear
//! message.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::Value;

#[derive(Args)]
pub struct AdminArgs {
    /// The gateway of the running shop.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080", env = "CAPSHOP_URL")]
    url: String,
    /// The admin token (default: the one `capshop up` stored in the data dir).
    #[arg(long, global = true, env = "CAPSHOP_ADMIN_TOKEN")]
    token: Option<String>,
    /// The data dir whose stored admin token to use when --token is not given.
    #[arg(long, global = true, default_value = "capshop-data", env = "CAPSHOP_DATA_DIR")]
    data_dir: PathBuf,
}

/// A client of the gateway's admin routes.
pub struct Admin {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Admin {
    /// A client of the gateway at `url` with `token`.
    pub fn new(url: &str, token: &str) -> Self {
        Self {
            base: url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            client: reqwest::Client::new(),
        }
    }

    pub fn connect(args: &AdminArgs) -> anyhow::Result<Self> {
        let token = match &args.token {
            Some(token) => token.clone(),
            None => std::fs::read_to_string(args.data_dir.join("admin-token"))
                .map(|t| t.trim().to_owned())
                .with_context(|| {
                    format!(
                        "no admin token: pass --token, set CAPSHOP_ADMIN_TOKEN, or point --data-dir at the shop's data ({} has none)",
                        args.data_dir.display()
                    )
                })?,
        };
        Ok(Self::new(&args.url, &token))
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.base))
    }

    pub fn post(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.client.post(format!("{}{path}", self.base)).json(body)
    }

    /// Sends `request` with the token; answers the status and the JSON body (null when
    /// there is none).
    pub async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach capshop at {}; is it up (capshop up)?", self.base))?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Like [`Admin::send`], but a failure answer becomes an error with its detail.
    pub async fn expect(&self, what: &str, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let (status, body) = self.send(request).await?;
        if !(200..300).contains(&status) {
            bail!("{what}: {status} {}", body["detail"].as_str().unwrap_or("failed"));
        }
        Ok(body)
    }
}
