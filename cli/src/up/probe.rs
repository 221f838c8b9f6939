//! Readiness probes: a TCP connect, and a bounded HTTP/1.1 GET — each with a short timeout,
//! so one hung process never stalls the supervisor's loop.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The most of an answer a probe reads.
const MAX_ANSWER: u64 = 64 * 1024;

/// Whether something accepts connections on `addr`.
pub async fn accepts(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// `GET path` with `Host: host` on `addr`: the status code and body, or None when nothing
/// answered in time.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Option<(u16, String)> {
    let work = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.take(MAX_ANSWER).read_to_end(&mut buf).await.ok()?;
        parse(&buf)
    };
    tokio::time::timeout(PROBE_TIMEOUT, work)
        .await
        .ok()
        .flatten()
}

/// Status and body of an HTTP/1.1 answer (a body with `Transfer-Encoding: chunked` is kept as
/// is: the probes only look for words in it).
fn parse(buf: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(buf);
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or_default();
    Some((code, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
            Some((200, "ok".into()))
        );
        assert_eq!(parse(b"garbage"), None);
    }
}
