//! A small client of the controller API, for `apply`, `get`, `delete` and `status`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// How long one API call may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the controller is and how to authenticate.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Controller API URL.
    #[arg(
        long,
        env = "CAUSEWAY_SERVER",
        default_value = "http://127.0.0.1:15080"
    )]
    pub server: String,
    /// Bearer token; default: the `token` file in --data-dir.
    #[arg(long, env = "CAUSEWAY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The local controller's data directory, where its token is.
    #[arg(long, env = "CAUSEWAY_DATA_DIR", default_value = ".causeway")]
    pub data_dir: PathBuf,
}

/// An API answer.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// `x-causeway-outcome` of an apply.
    pub outcome: Option<String>,
    /// `Warning` headers.
    pub warnings: Vec<String>,
    /// The JSON body.
    pub body: Value,
}

impl Answer {
    /// The message of a Kubernetes `Status` body, or the status line.
    pub fn message(&self) -> String {
        self.body
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| self.status.to_string())
    }
}

/// A connection to the controller API.
pub struct ApiClient {
    base: String,
    token: Option<String>,
    http: Client<HttpConnector, Full<Bytes>>,
}

fn read_token(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join("token"))
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

impl ApiClient {
    /// A client for the server and token in `args`.
    pub fn new(args: &ServerArgs) -> anyhow::Result<Self> {
        let base = args.server.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") {
            bail!(
                "--server {base:?}: only http:// URLs are supported (the API listens on loopback)"
            );
        }
        let token = args.token.clone().or_else(|| read_token(&args.data_dir));
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let http = Client::builder(TokioExecutor::new()).build(connector);
        Ok(ApiClient { base, token, http })
    }

    /// Sends one request; a body is sent as JSON.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let url = format!("{}{path}", self.base);
        let mut req = Request::builder().method(method.clone()).uri(&url);
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let payload = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(b)?)
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(payload))
            .context("building the request")?;
        let send = async {
            let resp = self.http.request(req).await?;
            let status = resp.status();
            let header = |name: &str| {
                resp.headers()
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok().map(str::to_owned))
                    .collect::<Vec<_>>()
            };
            let outcome = header("x-causeway-outcome").into_iter().next();
            let warnings = header("warning");
            let bytes = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, outcome, warnings, bytes))
        };
        let (status, outcome, warnings, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, send)
            .await
            .with_context(|| format!("{method} {url}: no answer within {REQUEST_TIMEOUT:?}"))?
            .with_context(|| {
                format!(
                    "{method} {url}: cannot reach the controller (is `causeway controller` or \
                     `causeway up` running? set --server)"
                )
            })?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if status == StatusCode::UNAUTHORIZED {
            bail!(
                "the controller refused the token: pass --token, set CAUSEWAY_TOKEN, or point \
                 --data-dir at the controller's data directory"
            );
        }
        Ok(Answer {
            status,
            outcome,
            warnings,
            body,
        })
    }
}
