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
