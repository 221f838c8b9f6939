//! Byte-stream listeners: TLS passthrough routed by SNI, and plain TCP.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::upstream::{UpstreamCluster, connect_tcp, random};
use super::{Shared, State};
use crate::config::{ListenerKind, SniRoute};
use crate::sni::{MAX_CLIENT_HELLO, Peek, peek_sni};

/// How long a client may take to send its ClientHello.
pub const CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a stream connection was closed without being forwarded.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Reading the ClientHello failed or timed out.
    #[error("reading the TLS ClientHello failed: {0}")]
    Hello(String),
    /// No route for the SNI.
    #[error("no sniRoute matches server name {0:?}")]
    NoRoute(Option<String>),
    /// The cluster is unknown or has no endpoint.
    #[error("cluster {0:?} has no endpoint")]
    NoEndpoint(String),
    /// Connecting upstream failed.
    #[error(transparent)]
    Connect(#[from] super::upstream::ConnectError),
    /// Copying failed.
    #[error("stream I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Whether `name` matches an SNI pattern: exact, `*.suffix` (one or more labels), or `*`.
pub fn sni_matches(pattern: &str, name: Option<&str>) -> bool {
    if pattern == "*" {
        return true;
    }
    let Some(name) = name else {
        return false;
    };
    match pattern.strip_prefix('*') {
        Some(suffix) => name.len() > suffix.len() && name.ends_with(suffix),
        None => pattern.eq_ignore_ascii_case(name),
    }
}

/// The first route whose names match `sni`.
pub fn sni_route<'a>(routes: &'a [SniRoute], sni: Option<&str>) -> Option<&'a SniRoute> {
    routes
        .iter()
        .find(|r| r.server_names.iter().any(|p| sni_matches(p, sni)))
}

/// Reads until a complete ClientHello has arrived; returns the bytes read and the SNI.
async fn read_hello(stream: &mut TcpStream) -> Result<(Vec<u8>, Option<String>), StreamError> {
    let mut buf = Vec::with_capacity(2048);
    let read = async {
        loop {
            let mut chunk = [0u8; 4096];
            let want = chunk
                .len()
                .min(MAX_CLIENT_HELLO.saturating_sub(buf.len()).max(1));
            let n = stream.read(&mut chunk[..want]).await?;
            if n == 0 {
                return Err(StreamError::Hello(
                    "client closed before ClientHello".into(),
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
            match peek_sni(&buf) {
                Ok(Peek::Incomplete) => continue,
                Ok(Peek::ClientHello(sni)) => return Ok(sni),
                Err(e) => return Err(StreamError::Hello(e.to_string())),
            }
        }
    };
    let sni = tokio::time::timeout(CLIENT_HELLO_TIMEOUT, read)
        .await
        .map_err(|_| StreamError::Hello("timed out".into()))??;
    Ok((buf, sni))
}

async fn connect(cluster: &UpstreamCluster) -> Result<TcpStream, StreamError> {
    let (_, ep) = cluster
        .pick(random())
        .ok_or_else(|| StreamError::NoEndpoint(cluster.config.name.clone()))?;
    Ok(connect_tcp(&ep.to_string(), cluster.config.connect_timeout).await?)
}

/// Serves one connection of a TLS_PASSTHROUGH or TCP listener.
pub async fn serve(
    shared: Arc<Shared>,
    state: Arc<State>,
    listener: Arc<str>,
    mut downstream: TcpStream,
) -> Result<(), StreamError> {
    let Some(l) = state.config.listener(&listener) else {
        return Ok(());
    };
    let protocol = if matches!(l.kind, ListenerKind::Tcp { .. }) {
        "TCP"
    } else {
        "TLS"
    };
    let (prefix, cluster_name, sni) = match &l.kind {
        ListenerKind::TlsPassthrough { sni_routes } => {
            let (buf, sni) = read_hello(&mut downstream).await?;
            let route = sni_route(sni_routes, sni.as_deref())
                .ok_or_else(|| StreamError::NoRoute(sni.clone()))?;
            (buf, route.cluster.clone(), sni)
        }
        ListenerKind::Tcp { cluster } => (Vec::new(), cluster.clone(), None),
        _ => return Ok(()),
    };
    let cluster = state
        .clusters
        .get(&cluster_name)
        .ok_or_else(|| StreamError::NoEndpoint(cluster_name.clone()))?;
    let mut upstream = match connect(cluster).await {
        Ok(u) => u,
        Err(e) => {
            shared
                .metrics
                .upstream_failures
                .get_or_create(&crate::metrics::ClusterLabels {
                    cluster: cluster_name.clone(),
                })
                .inc();
            return Err(e);
        }
    };
    let upstream_host = upstream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    drop(state);
    upstream.write_all(&prefix).await?;
    let start = std::time::Instant::now();
    let result = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await;
    let (sent, received) = result.as_ref().map(|(a, b)| (*a, *b)).unwrap_or((0, 0));
    tracing::info!(
        target: "causeway::access",
        listener = %listener,
        protocol,
        requested_server_name = sni.as_deref().unwrap_or(""),
        upstream_cluster = %cluster_name,
        upstream_host = %upstream_host,
        bytes_received = sent + prefix.len() as u64,
        bytes_sent = received,
        duration_ms = start.elapsed().as_secs_f64() * 1000.0,
        downstream_remote_address = %downstream.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
    );
    result.map(|_| ()).map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_patterns() {
        assert!(sni_matches("a.example.com", Some("a.example.com")));
        assert!(sni_matches("*.example.com", Some("a.example.com")));
        assert!(sni_matches("*.example.com", Some("a.b.example.com")));
        assert!(!sni_matches("*.example.com", Some("example.com")));
        assert!(!sni_matches("a.example.com", None));
        assert!(sni_matches("*", None));
        let routes = vec![
            SniRoute {
                server_names: vec!["db.example.com".into()],
                cluster: "db".into(),
            },
            SniRoute {
                server_names: vec!["*".into()],
                cluster: "rest".into(),
            },
        ];
        assert_eq!(
            sni_route(&routes, Some("db.example.com")).map(|r| &r.cluster[..]),
            Some("db")
        );
        assert_eq!(
            sni_route(&routes, None).map(|r| &r.cluster[..]),
            Some("rest")
        );
    }
}
