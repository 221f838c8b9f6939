//! A minimal BGP speaker: announces the VIP /32s to each configured peer and withdraws them.
//!
//! Why our own speaker rather than driving gobgpd or bird (see `docs/l4lb.md`): announcing a
//! handful of /32s needs four message types and an active-open session, a few hundred lines
//! that are unit-tested here; the balancer then has no second daemon to install, configure,
//! supervise and keep in step (a balancer that died must not leave a daemon announcing its
//! VIPs), and the session state is visible in our own metrics.
//!
//! The speaker only originates routes: it opens the TCP session (port 179 of the peer), ignores
//! received UPDATEs, and on shutdown withdraws everything and sends a Cease NOTIFICATION.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, watch};

use crate::config::{BgpConfig, BgpPeer};
use crate::metrics::{Metrics, PeerLabels};

pub mod message;

use message::Message;

/// BGP finite-state-machine states (RFC 4271 §8.2.2), as exported in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not connected, waiting to retry.
    Idle = 1,
    /// TCP connecting.
    Connect = 2,
    /// (Unused: we never listen.)
    Active = 3,
    /// OPEN sent.
    OpenSent = 4,
    /// OPEN received, waiting for KEEPALIVE.
    OpenConfirm = 5,
    /// Session up; routes exchanged.
    Established = 6,
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// TCP failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Bad bytes from the peer.
    #[error("{0}")]
    Decode(#[from] message::DecodeError),
    /// The peer sent a NOTIFICATION.
    #[error("peer sent NOTIFICATION {code}/{subcode}")]
    Notification {
        /// Error code.
        code: u8,
        /// Error subcode.
        subcode: u8,
    },
    /// The peer's OPEN names another AS than configured.
    #[error("peer AS is {got}, configured remoteAs is {want}")]
    BadPeerAs {
        /// AS in the OPEN.
        got: u32,
        /// Configured.
        want: u32,
    },
    /// No message within the hold time.
    #[error("hold timer expired")]
    HoldTimerExpired,
    /// Unexpected message for the state.
    #[error("unexpected {0} in state {1:?}")]
    Unexpected(&'static str, State),
    /// The peer closed the connection.
    #[error("peer closed the connection")]
    Closed,
}

/// Runs the session with `peer` until `shutdown` turns true, announcing the addresses in
/// `announce` (and only those) whenever the session is established, reconnecting with backoff.
/// On shutdown every announced route is withdrawn before the Cease.
pub async fn run_peer(
    cfg: BgpConfig,
    peer: BgpPeer,
    announce: watch::Receiver<BTreeSet<Ipv4Addr>>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let labels = PeerLabels {
        peer: peer.address.to_string(),
    };
    let set_state = |s: State| {
        metrics.bgp_state.get_or_create(&labels).set(s as i64);
    };
    let mut backoff = Duration::from_millis(500);
    loop {
        if *shutdown.borrow() {
            set_state(State::Idle);
            return;
        }
        set_state(State::Connect);
        let result = session(
            &cfg,
            &peer,
            announce.clone(),
            &metrics,
            &labels,
            &mut shutdown,
        )
        .await;
        set_state(State::Idle);
        match result {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(peer = %peer.address, error = %e, "BGP session down; retrying in {backoff:?}");
            }
        }
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

async fn send(w: &mut OwnedWriteHalf, m: &[u8]) -> Result<(), SessionError> {
    w.write_all(m).await?;
    Ok(())
}

/// One session: Ok(()) when it ended because of shutdown.
async fn session(
    cfg: &BgpConfig,
    peer: &BgpPeer,
    mut announce: watch::Receiver<BTreeSet<Ipv4Addr>>,
    metrics: &Metrics,
    labels: &PeerLabels,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), SessionError> {
    let set_state = |s: State| {
        metrics.bgp_state.get_or_create(labels).set(s as i64);
    };
    let addr = SocketAddr::from((peer.address, peer.port));
    let stream = tokio::select! {
        _ = shutdown.changed() => return Ok(()),
        r = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)) => match r {
            Ok(s) => s?,
            Err(_) => return Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
        },
    };
    stream.set_nodelay(true)?;
    let local = match stream.local_addr()? {
        SocketAddr::V4(a) => *a.ip(),
        SocketAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    };
    let next_hop = cfg.next_hop.unwrap_or(local);
    let (mut r, mut w) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Result<Message, SessionError>>(16);
    let reader = tokio::spawn(async move {
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 4096];
        loop {
            loop {
                match message::message_len(&buf) {
                    Ok(Some(len)) if buf.len() >= len => {
                        let m = message::decode(&buf[..len]).map_err(SessionError::from);
                        buf.drain(..len);
                        if tx.send(m).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => break,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
            }
            match r.read(&mut chunk).await {
                Ok(0) => {
                    let _ = tx.send(Err(SessionError::Closed)).await;
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            }
        }
    });
    let result = established_loop(
        cfg,
        peer,
        next_hop,
        &mut w,
        &mut rx,
        &mut announce,
        metrics,
        labels,
        shutdown,
        &set_state,
    )
    .await;
    reader.abort();
    let _ = w.shutdown().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn established_loop(
    cfg: &BgpConfig,
    peer: &BgpPeer,
    next_hop: Ipv4Addr,
    w: &mut OwnedWriteHalf,
    rx: &mut mpsc::Receiver<Result<Message, SessionError>>,
    announce: &mut watch::Receiver<BTreeSet<Ipv4Addr>>,
    metrics: &Metrics,
    labels: &PeerLabels,
    shutdown: &mut watch::Receiver<bool>,
    set_state: &(dyn Fn(State) + Sync),
) -> Result<(), SessionError> {
    send(
        w,
        &message::open(cfg.local_as, cfg.hold_time, cfg.router_id),
    )
    .await?;
    set_state(State::OpenSent);
    // Before the OPEN exchange, wait at most 4 minutes (RFC 4271's large hold time); in
    // practice the peer answers at once.
    let mut hold = Duration::from_secs(240);
    let mut state = State::OpenSent;
    let mut four_octet_as = false;
    let mut sent: BTreeSet<Ipv4Addr> = BTreeSet::new();
    let mut keepalive_every: Option<Duration> = None;
    let mut next_keepalive = tokio::time::Instant::now() + Duration::from_secs(3600);
    let mut deadline = tokio::time::Instant::now() + hold;
    loop {
        let hold_on = hold != Duration::ZERO;
        tokio::select! {
            biased;
            _ = shutdown.changed() => {
                if state == State::Established && !sent.is_empty() {
                    let withdraw: Vec<Ipv4Addr> = sent.iter().copied().collect();
                    for m in message::updates(&update_spec(cfg, peer, &withdraw, &[], four_octet_as, next_hop)) {
                        send(w, &m).await?;
                    }
                }
                // Cease / Administrative Shutdown (RFC 4486).
                send(w, &message::notification(6, 2)).await?;
                return Ok(());
            }
            m = rx.recv() => {
                let m = match m {
                    Some(m) => m?,
                    None => return Err(SessionError::Closed),
                };
                if hold_on {
                    deadline = tokio::time::Instant::now() + hold;
                }
                match (m, state) {
                    (Message::Notification { code, subcode }, _) => {
                        return Err(SessionError::Notification { code, subcode });
                    }
                    (Message::Open(o), State::OpenSent) => {
                        if o.asn != peer.remote_as {
                            // OPEN error / Bad Peer AS.
                            let _ = send(w, &message::notification(2, 2)).await;
                            return Err(SessionError::BadPeerAs { got: o.asn, want: peer.remote_as });
                        }
                        four_octet_as = o.four_octet_as;
                        let h = o.hold_time.min(cfg.hold_time);
                        hold = Duration::from_secs(u64::from(h));
                        if h > 0 {
                            keepalive_every = Some(hold / 3);
                            deadline = tokio::time::Instant::now() + hold;
                        }
                        send(w, &message::keepalive()).await?;
                        next_keepalive = tokio::time::Instant::now() + keepalive_every.unwrap_or(Duration::from_secs(3600));
                        state = State::OpenConfirm;
                        set_state(state);
                    }
                    (Message::Keepalive, State::OpenConfirm) => {
                        state = State::Established;
                        set_state(state);
                        metrics.bgp_established.get_or_create(labels).inc();
                        tracing::info!(peer = %peer.address, "BGP session established");
                        let want = announce.borrow_and_update().clone();
                        sync(w, cfg, peer, &mut sent, &want, four_octet_as, next_hop).await?;
                    }
                    (Message::Keepalive | Message::Update, State::Established) => {}
                    (Message::Open(_), s) => return Err(SessionError::Unexpected("OPEN", s)),
                    (Message::Keepalive, s) => return Err(SessionError::Unexpected("KEEPALIVE", s)),
                    (Message::Update, s) => return Err(SessionError::Unexpected("UPDATE", s)),
                }
            }
            r = announce.changed(), if state == State::Established => {
                if r.is_err() {
                    return Ok(());
                }
                let want = announce.borrow_and_update().clone();
                sync(w, cfg, peer, &mut sent, &want, four_octet_as, next_hop).await?;
            }
            _ = tokio::time::sleep_until(next_keepalive), if keepalive_every.is_some() && state != State::OpenSent => {
                send(w, &message::keepalive()).await?;
                next_keepalive = tokio::time::Instant::now() + keepalive_every.unwrap_or(Duration::from_secs(3600));
            }
            _ = tokio::time::sleep_until(deadline), if hold_on => {
                let _ = send(w, &message::notification(4, 0)).await;
                return Err(SessionError::HoldTimerExpired);
            }
        }
    }
}

fn update_spec<'a>(
    cfg: &BgpConfig,
    peer: &BgpPeer,
    withdraw: &'a [Ipv4Addr],
    announce: &'a [Ipv4Addr],
    four_octet_as: bool,
    next_hop: Ipv4Addr,
) -> message::UpdateSpec<'a> {
    message::UpdateSpec {
        withdraw,
        announce,
        local_as: cfg.local_as,
        ibgp: cfg.local_as == peer.remote_as,
        four_octet_as,
        next_hop,
    }
}

/// What to send to go from `sent` to `want`: (withdraw, announce).
pub fn diff(
    sent: &BTreeSet<Ipv4Addr>,
    want: &BTreeSet<Ipv4Addr>,
) -> (Vec<Ipv4Addr>, Vec<Ipv4Addr>) {
    (
        sent.difference(want).copied().collect(),
        want.difference(sent).copied().collect(),
    )
}

async fn sync(
    w: &mut OwnedWriteHalf,
    cfg: &BgpConfig,
    peer: &BgpPeer,
    sent: &mut BTreeSet<Ipv4Addr>,
    want: &BTreeSet<Ipv4Addr>,
    four_octet_as: bool,
    next_hop: Ipv4Addr,
) -> Result<(), SessionError> {
    let (withdraw, add) = diff(sent, want);
    if withdraw.is_empty() && add.is_empty() {
        return Ok(());
    }
    for m in message::updates(&update_spec(
        cfg,
        peer,
        &withdraw,
        &add,
        four_octet_as,
        next_hop,
    )) {
        send(w, &m).await?;
    }
    tracing::info!(peer = %peer.address, announced = ?add, withdrawn = ?withdraw, "BGP update sent");
    *sent = want.clone();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn diffs() {
        let a = |l: &[u8]| -> BTreeSet<Ipv4Addr> {
            l.iter().map(|x| Ipv4Addr::new(10, 9, 0, *x)).collect()
        };
        let (w, n) = diff(&a(&[1, 2, 3]), &a(&[2, 3, 4]));
        assert_eq!(w, [Ipv4Addr::new(10, 9, 0, 1)]);
        assert_eq!(n, [Ipv4Addr::new(10, 9, 0, 4)]);
        assert_eq!(diff(&a(&[1]), &a(&[1])), (vec![], vec![]));
    }

    async fn read_msg(s: &mut TcpStream) -> (u8, Vec<u8>) {
        let mut h = [0u8; 19];
        s.read_exact(&mut h).await.unwrap();
        let len = usize::from(u16::from_be_bytes([h[16], h[17]]));
        let mut body = vec![0u8; len - 19];
        s.read_exact(&mut body).await.unwrap();
        (h[18], body)
    }

    /// A scripted peer on loopback: the whole session, announce → withdraw → shutdown.
    #[tokio::test]
    async fn session_announces_withdraws_and_ceases() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let cfg = BgpConfig {
            local_as: 65001,
            router_id: Ipv4Addr::new(1, 1, 1, 1),
            hold_time: 9,
            next_hop: None,
            peers: vec![],
        };
        let peer = BgpPeer {
            address: Ipv4Addr::LOCALHOST,
            port,
            remote_as: 65000,
        };
        let vip = Ipv4Addr::new(10, 9, 0, 10);
        let (ann_tx, ann_rx) = watch::channel(BTreeSet::from([vip]));
        let (stop_tx, stop_rx) = watch::channel(false);
        let metrics = Arc::new(Metrics::default());
        let task = tokio::spawn(run_peer(cfg, peer, ann_rx, metrics.clone(), stop_rx));

        let (mut s, _) = l.accept().await.unwrap();
        let (t, body) = read_msg(&mut s).await;
        assert_eq!(t, 1, "OPEN first");
        assert_eq!(u16::from_be_bytes([body[1], body[2]]), 65001);
        s.write_all(&message::open(65000, 30, Ipv4Addr::new(2, 2, 2, 2)))
            .await
            .unwrap();
        assert_eq!(read_msg(&mut s).await.0, 4, "KEEPALIVE after our OPEN");
        s.write_all(&message::keepalive()).await.unwrap();
        let (t, body) = read_msg(&mut s).await;
        assert_eq!(t, 2);
        assert!(body.ends_with(&[32, 10, 9, 0, 10]), "{body:?}");
        // Next hop: the session's local address.
        assert!(body.windows(7).any(|w| w == [0x40, 3, 4, 127, 0, 0, 1]));
        let labels = PeerLabels {
            peer: "127.0.0.1".into(),
        };
        assert_eq!(metrics.bgp_state.get_or_create(&labels).get(), 6);

        ann_tx.send(BTreeSet::new()).unwrap();
        let (t, body) = read_msg(&mut s).await;
        assert_eq!(t, 2);
        assert_eq!(body, [0, 5, 32, 10, 9, 0, 10, 0, 0]);

        ann_tx.send(BTreeSet::from([vip])).unwrap();
        assert_eq!(read_msg(&mut s).await.0, 2);
        stop_tx.send(true).unwrap();
        let (t, body) = read_msg(&mut s).await;
        assert_eq!((t, body), (2, vec![0, 5, 32, 10, 9, 0, 10, 0, 0]));
        let (t, body) = read_msg(&mut s).await;
        assert_eq!((t, body), (3, vec![6, 2]));
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(metrics.bgp_state.get_or_create(&labels).get(), 1);
    }

    #[tokio::test]
    async fn wrong_peer_as_is_refused_and_retried() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let cfg = BgpConfig {
            local_as: 65001,
            router_id: Ipv4Addr::new(1, 1, 1, 1),
            hold_time: 9,
            next_hop: Some(Ipv4Addr::new(10, 0, 0, 1)),
            peers: vec![],
        };
        let peer = BgpPeer {
            address: Ipv4Addr::LOCALHOST,
            port,
            remote_as: 65000,
        };
        let (_ann_tx, ann_rx) = watch::channel(BTreeSet::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run_peer(
            cfg,
            peer,
            ann_rx,
            Arc::new(Metrics::default()),
            stop_rx,
        ));
        let (mut s, _) = l.accept().await.unwrap();
        assert_eq!(read_msg(&mut s).await.0, 1);
        s.write_all(&message::open(64999, 30, Ipv4Addr::new(2, 2, 2, 2)))
            .await
            .unwrap();
        let (t, body) = read_msg(&mut s).await;
        assert_eq!((t, body), (3, vec![2, 2]), "Bad Peer AS");
        // It reconnects.
        let (mut s2, _) = tokio::time::timeout(Duration::from_secs(10), l.accept())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read_msg(&mut s2).await.0, 1);
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
