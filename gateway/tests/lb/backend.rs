//! A controllable backend for the load-balancing tests: it can fail its next requests, answer
//! a fixed status, delay, fail its health path, be stopped (listener and every connection
//! closed) and started again on the same port; it records the Host of every request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::{AbortHandle, JoinSet};

pub struct Ctl {
    pub name: String,
    pub addr: SocketAddr,
    /// Answer this many next requests with `fail_status`.
    pub fail_next: AtomicUsize,
    pub fail_status: AtomicU16,
    /// Answer every request with this status (0: 200).
    pub status: AtomicU16,
    pub delay_ms: AtomicU64,
    /// The status of `/healthz`.
    pub health_status: AtomicU16,
    /// Requests served (health checks not counted).
    pub hits: AtomicUsize,
    pub health_checks: AtomicUsize,
    pub hosts: Mutex<Vec<String>>,
    task: Mutex<Option<AbortHandle>>,
}

impl Ctl {
    pub async fn start(name: &str) -> Arc<Ctl> {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ctl = Arc::new(Ctl {
            name: name.to_owned(),
            addr: l.local_addr().unwrap(),
            fail_next: AtomicUsize::new(0),
            fail_status: AtomicU16::new(503),
            status: AtomicU16::new(0),
            delay_ms: AtomicU64::new(0),
            health_status: AtomicU16::new(200),
            hits: AtomicUsize::new(0),
            health_checks: AtomicUsize::new(0),
            hosts: Mutex::new(Vec::new()),
            task: Mutex::new(None),
        });
        ctl.serve(l);
        ctl
    }

    fn serve(self: &Arc<Self>, l: TcpListener) {
        let me = self.clone();
        let task = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every connection.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    r = l.accept() => {
                        let Ok((s, _)) = r else { continue };
                        let me = me.clone();
                        conns.spawn(async move {
                            let svc = service_fn(move |req| me.clone().answer(req));
                            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(s), svc)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next() => {}
                }
            }
        });
        *self.task.lock().unwrap() = Some(task.abort_handle());
    }

    /// Closes the listener and every open connection.
    pub async fn stop(&self) {
        if let Some(t) = self.task.lock().unwrap().take() {
            t.abort();
        }
        // Wait until the port refuses connections.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(self.addr).await.is_ok() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} did not stop",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Listens on the same port again.
    pub async fn restart(self: &Arc<Self>) {
        let l = TcpListener::bind(self.addr).await.unwrap();
        self.serve(l);
    }

    async fn answer(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let status = if req.uri().path() == "/healthz" {
            self.health_checks.fetch_add(1, Ordering::Relaxed);
            self.health_status.load(Ordering::Relaxed)
        } else {
            self.hits.fetch_add(1, Ordering::Relaxed);
            let host = req
                .headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("")
                .to_owned();
            self.hosts.lock().unwrap().push(host);
            let delay = self.delay_ms.load(Ordering::Relaxed);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let failing = self
                .fail_next
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok();
            if failing {
                self.fail_status.load(Ordering::Relaxed)
            } else {
                self.status.load(Ordering::Relaxed)
            }
        };
        let mut res = Response::new(Full::new(Bytes::from(format!("{}\n", self.name))));
        if status != 0 {
            *res.status_mut() = http::StatusCode::from_u16(status).unwrap();
        }
        res.headers_mut()
            .insert("x-backend", self.name.parse().unwrap());
        Ok(res)
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        if let Ok(mut t) = self.task.lock()
            && let Some(t) = t.take()
        {
            t.abort();
        }
    }
}
