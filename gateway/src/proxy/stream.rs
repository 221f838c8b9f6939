//! Byte-stream listeners: TLS passthrough routed by SNI, and plain TCP.

use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::upstream::{UpstreamCluster, random};
use super::{Shared, State};
use crate::config::{ListenerKind, SniRoute};
use crate::lb::outlier::Outcome;
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
    let (i, ep) = cluster
        .pick(random())
        .ok_or_else(|| StreamError::NoEndpoint(cluster.config.name.clone()))?;
    // Connect results feed outlier detection (a connect is the only signal a TCP proxy has).
    match cluster.connect_tcp(&ep.to_string()).await {
        Ok(s) => {
            cluster.record(i, Outcome::Status(200));
            Ok(s)
        }
        Err(e) => {
            cluster.record(i, Outcome::LocalFailure);
            Err(e.into())
        }
    }
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
            cluster.metrics().failures.inc();
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
    let peer = downstream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let (result, sent, received) =
        copy_with_idle_timeout(downstream, upstream, shared.limits.stream_idle_timeout).await;
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
        downstream_remote_address = %peer,
    );
    result.map_err(Into::into)
}

/// A stream that counts what is read from it and stamps the time of the last read.
struct Tracked<S> {
    inner: S,
    read: u64,
    last: Arc<AtomicU64>,
    epoch: Instant,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.read += n as u64;
            let now = u64::try_from(this.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
            this.last.store(now, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Copies both ways until both sides close, an error, or `idle` passes with no byte read from
/// either side. Returns the outcome and the bytes read from downstream and from upstream.
async fn copy_with_idle_timeout(
    downstream: TcpStream,
    upstream: TcpStream,
    idle: Duration,
) -> (std::io::Result<()>, u64, u64) {
    let epoch = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut down = Tracked {
        inner: downstream,
        read: 0,
        last: last.clone(),
        epoch,
    };
    let mut up = Tracked {
        inner: upstream,
        read: 0,
        last: last.clone(),
        epoch,
    };
    let result = {
        let copy = tokio::io::copy_bidirectional(&mut down, &mut up);
        tokio::pin!(copy);
        // Checking a few times per period bounds the overshoot to a quarter of it.
        let tick = (idle / 4).max(Duration::from_millis(10));
        loop {
            tokio::select! {
                r = &mut copy => break r.map(|_| ()),
                _ = tokio::time::sleep(tick) => {
                    let quiet = epoch.elapsed().saturating_sub(Duration::from_millis(
                        last.load(Ordering::Relaxed),
                    ));
                    if quiet >= idle {
                        break Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("idle for {idle:?}"),
                        ));
                    }
                }
            }
        }
    };
    (result, down.read, up.read)
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
