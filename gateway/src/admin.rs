//! The admin server: readiness, configuration dump, Prometheus stats and the log level.
//!
//! It runs beside the data path on its own socket (default 127.0.0.1:15000); like Envoy's admin
//! port it is for operators on the host, not for the network.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::proxy::Gateway;

/// Changes the log filter at run time (`/logging?level=debug`); returns why a filter was refused.
pub type LogControl = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

/// Answers one admin request.
pub fn handle(
    gateway: &Gateway,
    log: Option<&LogControl>,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Response<Full<Bytes>> {
    match path {
        // Load balancers take a draining gateway out of rotation by this answer.
        "/ready" if gateway.draining() => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "DRAINING\n".into(),
        ),
        "/ready" => reply(StatusCode::OK, "text/plain", "LIVE\n".into()),
        "/config_dump" => match serde_json::to_string_pretty(&*gateway.config()) {
            Ok(json) => reply(StatusCode::OK, "application/json", json + "\n"),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("cannot serialize the configuration: {e}\n"),
            ),
        },
        "/stats/prometheus" | "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            gateway.metrics().encode(),
        ),
        "/logging" => {
            let Some(level) = crate::route::query_value(query, "level") else {
                return reply(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "usage: /logging?level=LEVEL (trace, debug, info, warn, error, or a filter \
                     such as causeway=debug)\n"
                        .into(),
                );
            };
            if method != Method::POST && method != Method::GET {
                return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", String::new());
            }
            match log {
                None => reply(
                    StatusCode::NOT_IMPLEMENTED,
                    "text/plain",
                    "log level control is not wired in this process\n".into(),
                ),
                Some(set) => match set(&level) {
                    Ok(()) => reply(
                        StatusCode::OK,
                        "text/plain",
                        format!("log level set to {level}\n"),
                    ),
                    Err(e) => reply(
                        StatusCode::BAD_REQUEST,
                        "text/plain",
                        format!("invalid level {level:?}: {e}\n"),
                    ),
                },
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "admin endpoints: /ready /config_dump /stats/prometheus /logging?level=\n".into(),
        ),
    }
}

/// Serves the admin endpoints on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>, log: Option<LogControl>) {
    serve_with_readiness(listener, gateway, log, None).await;
}

/// [`serve`], with `/ready` answering 503 `NO CONFIG` while `ready` is false (an xDS gateway
/// before its first complete configuration).
pub async fn serve_with_readiness(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    log: Option<LogControl>,
    ready: Option<Arc<AtomicBool>>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let gateway = gateway.clone();
        let log = log.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let waiting = ready.as_ref().is_some_and(|r| !r.load(Ordering::SeqCst));
                let res = if waiting && req.uri().path() == "/ready" && !gateway.draining() {
                    reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        "NO CONFIG\n".into(),
                    )
                } else {
                    handle(
                        &gateway,
                        log.as_ref(),
                        req.method(),
                        req.uri().path(),
                        req.uri().query(),
                    )
                };
                async move { Ok::<_, Infallible>(res) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
