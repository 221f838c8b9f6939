//! The userspace data paths: the balancer's (TUN in, IPIP raw socket out) and the gateway
//! host's decap agent (IPIP raw socket in, TUN out).
//!
//! The portable fallback for the XDP programs and their test oracle: the decisions are the pure
//! functions of [`crate::balancer`] and [`crate::packet`]; this module only moves bytes.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;

use crate::balancer::{Decision, Tables, pick};
use crate::conntrack::Conntrack;
use crate::metrics::{BackendLabels, Metrics, VipLabels};
use crate::packet;
use crate::sys::{RawIpip, Tun};

/// Largest packet read from a device or socket.
pub const BUFFER: usize = 65_536;

/// How often a data-path thread checks for shutdown while idle.
const POLL: Duration = Duration::from_millis(100);

/// Runs the balancer's forwarding loop on the calling thread until `stop` is set: packets
/// routed into `tun` are looked up, assigned a backend and sent IPIP-encapsulated through `raw`.
pub fn balance(
    tun: &Tun,
    raw: &RawIpip,
    tables: &ArcSwap<Tables>,
    conntrack: &mut Conntrack,
    metrics: &Metrics,
    stop: &AtomicBool,
) {
    let mut buf = vec![0u8; BUFFER];
    let mut counters: HashMap<(usize, Ipv4Addr), (Counter, Counter)> = HashMap::new();
    let mut next_sweep = Instant::now() + Duration::from_secs(1);
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next_sweep {
            conntrack.expire(now);
            metrics.conntrack_entries.set(conntrack.len() as i64);
            next_sweep = now + Duration::from_secs(1);
        }
        let n = match tun.recv(&mut buf, POLL) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, device = tun.name(), "reading the TUN device");
                metrics.drop_packet("read_error");
                std::thread::sleep(POLL);
                continue;
            }
        };
        let pkt = &buf[..n];
        let Ok((_, key)) = packet::flow_key(pkt) else {
            metrics.drop_packet("malformed");
            continue;
        };
        let t = tables.load();
        match pick(&t, conntrack, &key, now) {
            Decision::Forward {
                vip,
                backend,
                new_flow,
            } => {
                let name = t.vips.get(vip).map(|v| v.name.as_str()).unwrap_or("");
                if new_flow {
                    metrics
                        .new_flows
                        .get_or_create(&VipLabels {
                            vip: name.to_owned(),
                        })
                        .inc();
                }
                if let Err(e) = raw.send_to(pkt, backend) {
                    tracing::debug!(error = %e, %backend, "sending IPIP");
                    metrics.drop_packet("send_error");
                    continue;
                }
                let (p, b) = counters.entry((vip, backend)).or_insert_with(|| {
                    let l = BackendLabels {
                        vip: name.to_owned(),
                        backend: backend.to_string(),
                    };
                    (
                        metrics.packets.get_or_create(&l).clone(),
                        metrics.bytes.get_or_create(&l).clone(),
                    )
                });
                p.inc();
                b.inc_by(n as u64);
            }
            Decision::NoBackend { .. } => metrics.drop_packet("no_backend"),
            Decision::NotVip => metrics.drop_packet("not_vip"),
        }
    }
}

/// Runs the decap agent's loop on the calling thread until `stop` is set: IPIP packets
/// received on `raw` are stripped of their outer header and written, unchanged, into `tun`,
/// from where the kernel delivers them locally (the VIP is on `lo`). With a non-empty `vips`,
/// inner packets to other destinations are dropped.
pub fn decap(
    raw: &RawIpip,
    tun: &Tun,
    vips: &BTreeSet<Ipv4Addr>,
    metrics: &Metrics,
    stop: &AtomicBool,
) {
    let mut buf = vec![0u8; BUFFER];
    while !stop.load(Ordering::Relaxed) {
        let n = match raw.recv(&mut buf, POLL) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::warn!(error = %e, "reading the IPIP socket");
                metrics.drop_packet("read_error");
                std::thread::sleep(POLL);
                continue;
            }
        };
        let Some(inner) = packet::decapsulate(&buf[..n]) else {
            metrics.drop_packet("not_ipip");
            continue;
        };
        if !vips.is_empty() {
            match packet::parse_ipv4(inner) {
                Ok(h) if vips.contains(&h.dst) => {}
                _ => {
                    metrics.drop_packet("not_vip");
                    continue;
                }
            }
        }
        match tun.send(inner) {
            Ok(_) => {
                metrics.decap_packets.inc();
                metrics.decap_bytes.inc_by(inner.len() as u64);
            }
            Err(e) => {
                tracing::debug!(error = %e, "writing into the TUN device");
                metrics.drop_packet("send_error");
            }
        }
    }
}
