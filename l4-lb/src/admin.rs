//! The admin server (loopback by default): `/metrics` (also `/stats/prometheus`), `/ready` and
//! `/state` (a JSON summary: VIPs, healthy backends, announcements, conntrack size).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics;

/// Produces the `/state` document.
pub type StateFn = Arc<dyn Fn() -> String + Send + Sync>;

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Answers one admin request.
pub fn handle(registry: &Registry, state: &StateFn, path: &str) -> Response<Full<Bytes>> {
    match path {
        "/metrics" | "/stats/prometheus" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics::encode(registry),
        ),
        "/ready" => reply(StatusCode::OK, "text/plain", "LIVE\n".into()),
        "/state" => reply(StatusCode::OK, "application/json", state()),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /metrics, /ready or /state\n".into(),
        ),
    }
}

/// Binds `addr` and serves until `shutdown` turns true. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    state: StateFn,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = shutdown.changed() => return,
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let registry = registry.clone();
            let state = state.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let r = handle(&registry, &state, req.uri().path());
                    async move { Ok::<_, Infallible>(r) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{BackendLabels, Metrics};
    use http_body_util::BodyExt;

    async fn body(r: Response<Full<Bytes>>) -> (StatusCode, String) {
        let status = r.status();
        let b = r.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&b).into_owned())
    }

    #[tokio::test]
    async fn endpoints() {
        let m = Metrics::default();
        let mut registry = Registry::default();
        m.register(&mut registry);
        m.packets
            .get_or_create(&BackendLabels {
                vip: "web".into(),
                backend: "10.1.0.21".into(),
            })
            .inc_by(3);
        m.conntrack_entries.set(7);
        let state: StateFn = Arc::new(|| "{\"vips\":[]}\n".to_owned());
        let (s, text) = body(handle(&registry, &state, "/metrics")).await;
        assert_eq!(s, StatusCode::OK);
        assert!(
            text.contains("causeway_l4lb_packets_total{vip=\"web\",backend=\"10.1.0.21\"} 3"),
            "{text}"
        );
        assert!(text.contains("causeway_l4lb_conntrack_entries 7"), "{text}");
        assert_eq!(
            body(handle(&registry, &state, "/ready")).await.0,
            StatusCode::OK
        );
        assert_eq!(
            body(handle(&registry, &state, "/state")).await.1,
            "{\"vips\":[]}\n"
        );
        assert_eq!(
            body(handle(&registry, &state, "/nope")).await.0,
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn serves_on_loopback_until_shutdown() {
        let registry = Arc::new(Registry::default());
        let state: StateFn = Arc::new(String::new);
        let (tx, rx) = watch::channel(false);
        let addr = serve("127.0.0.1:0".parse().unwrap(), registry, state, rx)
            .await
            .unwrap();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.ends_with("LIVE\n"), "{out}");
        tx.send(true).unwrap();
    }
}
