//! ADS client for Causeway's own gateway and L4 balancer.
//!
//! It speaks state of the world: every response carries the complete set of a type, which the
//! caller's [`Handler`] applies as a whole or rejects as a whole. That keeps the apply side to
//! "build a new config, swap it in" with no per-resource bookkeeping; delta would save bandwidth
//! on the controller → gateway hop, which carries at most one group's config. All types are
//! subscribed as wildcards (no names): a gateway wants every resource of its group, and the
//! server then needs no dependency tracking to know what to send.

use std::collections::BTreeMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tracing::{info, warn};

use crate::{Any, Node, type_url};

/// Applies what the controller sends.
pub trait Handler: Send {
    /// Applies the complete set of resources of `type_url` at `version`. `Err(reason)` rejects
    /// the whole set: the caller must then keep serving what it had (the client NACKs with the
    /// reason and the controller shows it in the proxy's status).
    fn apply(&mut self, type_url: &str, version: &str, resources: &[Any]) -> Result<(), String>;
}

impl<F> Handler for F
where
    F: FnMut(&str, &str, &[Any]) -> Result<(), String> + Send,
{
    fn apply(&mut self, type_url: &str, version: &str, resources: &[Any]) -> Result<(), String> {
        self(type_url, version, resources)
    }
}

/// Settings of an [`AdsClient`].
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The controller's ADS, e.g. `http://127.0.0.1:15010`.
    pub endpoint: String,
    /// The node sent on the first request: id, cluster, locality and metadata
    /// (`cluster`, `role`, `namespace`), as in `docs/xds.md`.
    pub node: Node,
    /// Types to subscribe to, in this order.
    pub type_urls: Vec<String>,
    /// First reconnect delay.
    pub initial_backoff: Duration,
    /// Longest reconnect delay.
    pub max_backoff: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Largest response accepted.
    pub max_decoding_message_size: usize,
}

impl ClientOptions {
    /// Subscribes to CDS, EDS, LDS, SRDS, RDS and SDS; backoff from 100 ms doubling to 5 s.
    pub fn new(endpoint: impl Into<String>, node: Node) -> Self {
        ClientOptions {
            endpoint: endpoint.into(),
            node,
            type_urls: type_url::PUSH_ORDER
                .iter()
                .map(|t| (*t).to_owned())
                .collect(),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            max_decoding_message_size: 64 * 1024 * 1024,
        }
    }
}

/// A rejected response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// The rejected version.
    pub version: String,
    /// The handler's reason.
    pub message: String,
}

/// What the client has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClientStatus {
    /// A stream to the controller is open.
    pub connected: bool,
    /// Streams opened so far (1 + reconnects).
    pub connects: u64,
    /// Type URL -> the version applied last (kept across reconnects; the config it names stays
    /// in force while the controller is away).
    pub accepted: BTreeMap<String, String>,
    /// Type URL -> the last rejected response, until a later one of that type is accepted.
    pub rejected: BTreeMap<String, Rejection>,
    /// Why the last stream ended or failed.
    pub last_error: Option<String>,
}

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint is not a valid URI.
    #[error("invalid xDS endpoint {endpoint:?}: {source} (expected e.g. http://127.0.0.1:15010)")]
    Endpoint {
        /// The endpoint.
        endpoint: String,
        /// The parse error.
        source: tonic::transport::Error,
    },
    /// No connection.
    #[error(
        "cannot connect to the controller's xDS at {endpoint}: {source} (is the controller \
         running? retrying with backoff; the last good config stays in force)"
    )]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// The stream failed.
    #[error("xDS stream to {endpoint} failed: {status}")]
    Stream {
        /// The endpoint.
        endpoint: String,
        /// The gRPC status.
        status: tonic::Status,
    },
    /// The controller closed the stream.
    #[error("the controller at {0} closed the xDS stream (restarting?)")]
    Closed(String),
}

/// A state-of-the-world ADS client that reconnects forever.
#[derive(Debug)]
pub struct AdsClient {
    opts: ClientOptions,
    status: watch::Sender<ClientStatus>,
}

impl AdsClient {
    /// A client; nothing happens until [`AdsClient::run`].
    pub fn new(opts: ClientOptions) -> Self {
        AdsClient {
            opts,
            status: watch::Sender::new(ClientStatus::default()),
        }
    }

    /// Watches the client's status.
    pub fn status(&self) -> watch::Receiver<ClientStatus> {
        self.status.subscribe()
    }

    /// Connects, applies what arrives, ACKs or NACKs, and reconnects with exponential backoff
    /// and jitter whenever the stream ends, until `shutdown` completes. The handler is never
    /// called with anything but a complete response, so what it applied last stays in force
    /// while the controller is unreachable.
    pub async fn run(&self, mut handler: impl Handler, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut backoff = self.opts.initial_backoff;
        loop {
            let mut got_response = false;
            let result = tokio::select! {
                () = &mut shutdown => return,
                r = self.session(&mut handler, &mut got_response) => r,
            };
            if got_response {
                backoff = self.opts.initial_backoff;
            }
            let message = match result {
                Ok(()) => ClientError::Closed(self.opts.endpoint.clone()).to_string(),
                Err(e) => e.to_string(),
            };
            let delay = jitter(backoff);
            warn!(error = %message, retry_in_ms = delay.as_millis() as u64, "xDS stream ended");
            self.status.send_modify(|s| {
                s.connected = false;
                s.last_error = Some(message);
            });
            backoff = (backoff * 2).min(self.opts.max_backoff);
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn session(
        &self,
        handler: &mut impl Handler,
        got_response: &mut bool,
    ) -> Result<(), ClientError> {
        let endpoint = &self.opts.endpoint;
        let channel = Endpoint::from_shared(endpoint.clone())
            .map_err(|source| ClientError::Endpoint {
                endpoint: endpoint.clone(),
                source,
            })?
            .connect_timeout(self.opts.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                endpoint: endpoint.clone(),
                source,
            })?;
        let mut client = AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(self.opts.max_decoding_message_size);
        // Room for one request per type plus an ACK per response in flight; the stream task
        // never holds more than that.
        let (tx, rx) = mpsc::channel(self.opts.type_urls.len() + 16);
        let accepted = self.status.borrow().accepted.clone();
        for (i, t) in self.opts.type_urls.iter().enumerate() {
            let req = DiscoveryRequest {
                node: (i == 0).then(|| self.opts.node.clone()),
                // After a reconnect the server learns what we hold.
                version_info: accepted.get(t).cloned().unwrap_or_default(),
                type_url: t.clone(),
                ..Default::default()
            };
            let _ = tx.try_send(req);
        }
        let stream_err = |status| ClientError::Stream {
            endpoint: endpoint.clone(),
            status,
        };
        let mut inbound = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .map_err(stream_err)?
            .into_inner();
        info!(%endpoint, node = %self.opts.node.id, "xDS stream open");
        self.status.send_modify(|s| {
            s.connected = true;
            s.connects += 1;
        });
        while let Some(resp) = inbound.message().await.map_err(stream_err)? {
            *got_response = true;
            let t = resp.type_url.clone();
            let outcome = handler.apply(&t, &resp.version_info, &resp.resources);
            let mut req = DiscoveryRequest {
                type_url: t.clone(),
                response_nonce: resp.nonce.clone(),
                ..Default::default()
            };
            self.status.send_modify(|s| match &outcome {
                Ok(()) => {
                    s.accepted.insert(t.clone(), resp.version_info.clone());
                    s.rejected.remove(&t);
                    req.version_info = resp.version_info.clone();
                }
                Err(message) => {
                    warn!(r#type = type_url::short(&t), version = %resp.version_info,
                        error = %message, "rejected xDS config (NACK); keeping the last good one");
                    s.rejected.insert(
                        t.clone(),
                        Rejection {
                            version: resp.version_info.clone(),
                            message: message.clone(),
                        },
                    );
                    req.version_info = s.accepted.get(&t).cloned().unwrap_or_default();
                    req.error_detail = Some(RpcStatus {
                        // INVALID_ARGUMENT, as Envoy uses for rejected config.
                        code: 3,
                        message: message.clone(),
                        details: Vec::new(),
                    });
                }
            });
            if tx.send(req).await.is_err() {
                break;
            }
        }
        Ok(())
    }
}

/// A delay in [d/2, d]: reconnecting proxies of a restarted controller spread out instead of
/// arriving in one wave.
fn jitter(d: Duration) -> Duration {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let half = d / 2;
    let extra_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    half + Duration::from_millis(if extra_ms == 0 {
        0
    } else {
        random % (extra_ms + 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range() {
        for ms in [0u64, 1, 100, 5000] {
            let d = Duration::from_millis(ms);
            for _ in 0..50 {
                let j = jitter(d);
                assert!(j >= d / 2 && j <= d, "{j:?} for {d:?}");
            }
        }
    }
}
