//! Backend health: the threshold state machine (pure) and the probes (TCP connect, HTTP GET).
//!
//! A backend starts unhealthy and becomes healthy on its first successful probe (so a fresh
//! balancer fills its tables within one interval); after that it takes `unhealthy_threshold`
//! consecutive failures to leave and `healthy_threshold` consecutive successes to come back.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::config::{HealthCheck, ProbeKind};

/// The health of one backend under one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HealthState {
    healthy: bool,
    probed: bool,
    successes: u32,
    failures: u32,
}

impl HealthState {
    /// Whether the backend currently counts as healthy.
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// Records one probe result; returns the new state when it changed.
    pub fn observe(&mut self, ok: bool, check: &HealthCheck) -> Option<bool> {
        let first = !self.probed;
        self.probed = true;
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if !self.healthy && (first || self.successes >= check.healthy_threshold) {
                self.healthy = true;
                return Some(true);
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.healthy && self.failures >= check.unhealthy_threshold {
                self.healthy = false;
                return Some(false);
            }
        }
        None
    }
}

/// What one prober checks: a backend address under one health check.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// The backend.
    pub address: Ipv4Addr,
    /// The check.
    pub check: HealthCheck,
}

/// A health transition reported by a prober.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// Which target.
    pub target: Target,
    /// Its new state.
    pub healthy: bool,
    /// Why (the last probe's error, or "ok").
    pub detail: String,
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No answer in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Connecting, writing or reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The HTTP answer was not 2xx.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The answer was not HTTP.
    #[error("not an HTTP response: {0:?}")]
    BadResponse(String),
}

/// Runs one probe of `kind` against `address`, bounded by `timeout`.
pub async fn probe(
    address: Ipv4Addr,
    kind: &ProbeKind,
    timeout: Duration,
) -> Result<(), ProbeError> {
    match tokio::time::timeout(timeout, probe_inner(address, kind)).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout(timeout)),
    }
}

async fn probe_inner(address: Ipv4Addr, kind: &ProbeKind) -> Result<(), ProbeError> {
    match kind {
        ProbeKind::None => Ok(()),
        ProbeKind::Tcp { port } => {
            TcpStream::connect(SocketAddr::from((address, *port))).await?;
            Ok(())
        }
        ProbeKind::Http { port, path, host } => {
            let mut s = TcpStream::connect(SocketAddr::from((address, *port))).await?;
            s.set_nodelay(true)?;
            let host = if host.is_empty() {
                format!("{address}:{port}")
            } else {
                host.clone()
            };
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: causeway-l4lb\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await?;
            let mut buf = Vec::with_capacity(256);
            let mut chunk = [0u8; 256];
            loop {
                if let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") {
                    let status = parse_status_line(&buf[..line_end])?;
                    return if (200..300).contains(&status) {
                        Ok(())
                    } else {
                        Err(ProbeError::Status(status))
                    };
                }
                if buf.len() > 1024 {
                    return Err(ProbeError::BadResponse(
                        String::from_utf8_lossy(&buf[..64]).into_owned(),
                    ));
                }
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Err(ProbeError::BadResponse(
                        String::from_utf8_lossy(&buf).into_owned(),
                    ));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

/// The status code of an HTTP/1.x status line (`HTTP/1.1 200 OK`).
pub fn parse_status_line(line: &[u8]) -> Result<u16, ProbeError> {
    let bad = || ProbeError::BadResponse(String::from_utf8_lossy(line).into_owned());
    let text = std::str::from_utf8(line).map_err(|_| bad())?;
    let mut parts = text.splitn(3, ' ');
    let version = parts.next().ok_or_else(bad)?;
    if !version.starts_with("HTTP/1.") {
        return Err(bad());
    }
    let code = parts.next().ok_or_else(bad)?;
    if code.len() != 3 {
        return Err(bad());
    }
    code.parse().map_err(|_| bad())
}

/// Probes `target` forever, every `interval`, and sends each health transition to `events`.
/// Ends when the receiver is gone.
pub async fn run_prober(target: Target, events: mpsc::Sender<Transition>) {
    let mut state = HealthState::default();
    let mut ticker = tokio::time::interval(target.check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let result = probe(target.address, &target.check.kind, target.check.timeout).await;
        let detail = match &result {
            Ok(()) => "ok".to_owned(),
            Err(e) => e.to_string(),
        };
        if let Some(healthy) = state.observe(result.is_ok(), &target.check) {
            let t = Transition {
                target: target.clone(),
                healthy,
                detail,
            };
            if events.send(t).await.is_err() {
                return;
            }
        } else if events.is_closed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn check(rise: u32, fall: u32) -> HealthCheck {
        HealthCheck {
            kind: ProbeKind::None,
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(100),
            healthy_threshold: rise,
            unhealthy_threshold: fall,
        }
    }

    #[test]
    fn thresholds() {
        let c = check(3, 2);
        let mut s = HealthState::default();
        assert!(!s.is_healthy());
        // First success: healthy at once.
        assert_eq!(s.observe(true, &c), Some(true));
        assert_eq!(s.observe(false, &c), None);
        assert_eq!(s.observe(true, &c), None); // resets the failure count
        assert_eq!(s.observe(false, &c), None);
        assert_eq!(s.observe(false, &c), Some(false));
        assert_eq!(s.observe(false, &c), None);
        assert_eq!(s.observe(true, &c), None);
        assert_eq!(s.observe(true, &c), None);
        assert_eq!(s.observe(false, &c), None); // resets the success count
        assert_eq!(s.observe(true, &c), None);
        assert_eq!(s.observe(true, &c), None);
        assert_eq!(s.observe(true, &c), Some(true));
        assert!(s.is_healthy());
    }

    #[test]
    fn first_failure_does_not_transition() {
        let c = check(1, 1);
        let mut s = HealthState::default();
        assert_eq!(s.observe(false, &c), None);
        assert!(!s.is_healthy());
        assert_eq!(s.observe(true, &c), Some(true));
        assert_eq!(s.observe(false, &c), Some(false));
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK").unwrap(), 200);
        assert_eq!(
            parse_status_line(b"HTTP/1.0 503 Service Unavailable").unwrap(),
            503
        );
        assert_eq!(parse_status_line(b"HTTP/1.1 204").unwrap(), 204);
        for bad in [
            &b"SSH-2.0-OpenSSH"[..],
            b"HTTP/1.1 2000 OK",
            b"HTTP/2 200",
            b"",
            b"\xff",
        ] {
            assert!(parse_status_line(bad).is_err(), "{bad:?}");
        }
    }

    async fn http_server(status: &'static str) -> (u16, tokio::task::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let h = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let ok = got.starts_with(b"GET /ready HTTP/1.1\r\n");
                    let line = if ok { status } else { "404 Not Found" };
                    let _ = s
                        .write_all(
                            format!("HTTP/1.1 {line}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                        )
                        .await;
                });
            }
        });
        (port, h)
    }

    const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;

    #[tokio::test]
    async fn tcp_probe() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let t = Duration::from_secs(2);
        probe(LO, &ProbeKind::Tcp { port }, t).await.unwrap();
        drop(l);
        let e = probe(LO, &ProbeKind::Tcp { port }, t).await.unwrap_err();
        assert!(matches!(e, ProbeError::Io(_)), "{e}");
    }

    #[tokio::test]
    async fn http_probe() {
        let t = Duration::from_secs(2);
        let (port, h) = http_server("200 OK").await;
        let kind = |path: &str| ProbeKind::Http {
            port,
            path: path.into(),
            host: String::new(),
        };
        probe(LO, &kind("/ready"), t).await.unwrap();
        let e = probe(LO, &kind("/other"), t).await.unwrap_err();
        assert!(matches!(e, ProbeError::Status(404)), "{e}");
        h.abort();
        let (port, h) = http_server("503 Service Unavailable").await;
        let e = probe(
            LO,
            &ProbeKind::Http {
                port,
                path: "/ready".into(),
                host: "gw".into(),
            },
            t,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, ProbeError::Status(503)), "{e}");
        h.abort();
    }

    #[tokio::test]
    async fn http_probe_times_out_on_a_silent_server() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let kind = ProbeKind::Http {
            port,
            path: "/".into(),
            host: String::new(),
        };
        // Accepted by the kernel's backlog, never answered.
        let e = probe(LO, &kind, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(e, ProbeError::Timeout(_)), "{e}");
        drop(l);
    }

    #[tokio::test]
    async fn prober_reports_down_and_up() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let target = Target {
            address: LO,
            check: HealthCheck {
                kind: ProbeKind::Tcp { port },
                interval: Duration::from_millis(50),
                timeout: Duration::from_millis(50),
                healthy_threshold: 2,
                unhealthy_threshold: 2,
            },
        };
        let (tx, mut rx) = mpsc::channel(8);
        let task = tokio::spawn(run_prober(target, tx));
        let wait = Duration::from_secs(10);
        let t = tokio::time::timeout(wait, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(t.healthy);
        drop(l);
        let t = tokio::time::timeout(wait, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(!t.healthy, "{t:?}");
        assert_ne!(t.detail, "ok");
        // The same port again (it may have been taken meanwhile; then skip the rise check).
        if let Ok(_l2) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            let t = tokio::time::timeout(wait, rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert!(t.healthy);
        }
        task.abort();
    }
}
