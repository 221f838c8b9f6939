//! Packet parsing and rewriting as pure functions on byte slices: IPv4 headers, the flow key,
//! IPIP encapsulation and decapsulation, checksums, the TCP MSS clamp and ICMP
//! "fragmentation needed".
//!
//! The inner packet is never modified by encapsulation: the gateway sees the client's own
//! source address and ports, which is what makes direct server return work.

use std::net::Ipv4Addr;

use crate::flow::FlowKey;

/// IP protocol number of IP-in-IP.
pub const IPPROTO_IPIP: u8 = 4;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// Length of the outer IPv4 header IPIP adds.
pub const IPIP_OVERHEAD: usize = 20;

/// Why a packet was not understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Shorter than its headers say.
    #[error("truncated packet")]
    Truncated,
    /// Not IPv4.
    #[error("not an IPv4 packet (version {0})")]
    NotIpv4(u8),
    /// Header length below 20 bytes.
    #[error("bad IPv4 header length {0}")]
    BadHeaderLength(usize),
}

/// The fields of an IPv4 header the balancer needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header {
    /// Header length in bytes.
    pub header_len: usize,
    /// Total length from the header (bytes).
    pub total_len: usize,
    /// Protocol of the payload.
    pub protocol: u8,
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Don't-fragment flag.
    pub dont_fragment: bool,
    /// More-fragments flag.
    pub more_fragments: bool,
    /// Fragment offset in 8-byte units.
    pub fragment_offset: u16,
    /// Time to live.
    pub ttl: u8,
}

impl Ipv4Header {
    /// Whether this packet is a fragment other than the first (it carries no L4 header).
    pub fn is_later_fragment(&self) -> bool {
        self.fragment_offset != 0
    }
}

/// Parses the IPv4 header at the start of `p`.
pub fn parse_ipv4(p: &[u8]) -> Result<Ipv4Header, ParseError> {
    let first = *p.first().ok_or(ParseError::Truncated)?;
    let version = first >> 4;
    if version != 4 {
        return Err(ParseError::NotIpv4(version));
    }
    let header_len = usize::from(first & 0x0f) * 4;
    if header_len < 20 {
        return Err(ParseError::BadHeaderLength(header_len));
    }
    if p.len() < header_len {
        return Err(ParseError::Truncated);
    }
    let total_len = usize::from(u16::from_be_bytes([p[2], p[3]]));
    if total_len < header_len || p.len() < total_len {
        return Err(ParseError::Truncated);
    }
    let flags = u16::from_be_bytes([p[6], p[7]]);
    Ok(Ipv4Header {
        header_len,
        total_len,
        protocol: p[9],
        src: Ipv4Addr::new(p[12], p[13], p[14], p[15]),
        dst: Ipv4Addr::new(p[16], p[17], p[18], p[19]),
        dont_fragment: flags & 0x4000 != 0,
        more_fragments: flags & 0x2000 != 0,
        fragment_offset: flags & 0x1fff,
        ttl: p[8],
    })
}

/// The flow key of an IPv4 packet: ports for TCP/UDP first fragments, zero ports otherwise.
pub fn flow_key(p: &[u8]) -> Result<(Ipv4Header, FlowKey), ParseError> {
    let h = parse_ipv4(p)?;
    let mut key = FlowKey {
        src: h.src,
        dst: h.dst,
        src_port: 0,
        dst_port: 0,
        protocol: h.protocol,
    };
    if matches!(h.protocol, IPPROTO_TCP | IPPROTO_UDP) && !h.is_later_fragment() {
        let l4 = &p[h.header_len..h.total_len];
        if l4.len() < 4 {
            return Err(ParseError::Truncated);
        }
        key.src_port = u16::from_be_bytes([l4[0], l4[1]]);
        key.dst_port = u16::from_be_bytes([l4[2], l4[3]]);
    }
    Ok((h, key))
}

/// The Internet checksum (RFC 1071) of `data`, folded and complemented.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data, 0))
}

fn sum(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Whether the IPv4 header checksum of `p` is correct.
pub fn ipv4_checksum_ok(p: &[u8]) -> bool {
    match parse_ipv4(p) {
        Ok(h) => fold(sum(&p[..h.header_len], 0)) == 0xffff,
        Err(_) => false,
    }
}

/// Whether the TCP or UDP checksum of an IPv4 packet is correct (pseudo-header included).
pub fn l4_checksum_ok(p: &[u8]) -> bool {
    let Ok(h) = parse_ipv4(p) else { return false };
    let l4 = &p[h.header_len..h.total_len];
    if h.protocol == IPPROTO_UDP && l4.get(6..8) == Some(&[0, 0]) {
        return true;
    }
    fold(sum(l4, pseudo_header_sum(&h, l4.len()))) == 0xffff
}

fn pseudo_header_sum(h: &Ipv4Header, l4_len: usize) -> u32 {
    let mut acc = sum(&h.src.octets(), 0);
    acc = sum(&h.dst.octets(), acc);
    acc = acc.wrapping_add(u32::from(h.protocol));
    acc.wrapping_add(l4_len as u32)
}

/// Writes an outer IPv4 header (`src` → `dst`, protocol 4, TTL 64, DF copied from the inner
/// packet) followed by `inner`, unchanged, into `out`. Returns the encapsulated length, or
/// `None` when `out` is too small or the result would exceed 65535 bytes.
///
/// The XDP program does the same in place; the userspace path lets the kernel build the outer
/// header (an `IPPROTO_IPIP` raw socket) and uses this as its oracle in tests.
pub fn encapsulate(inner: &[u8], src: Ipv4Addr, dst: Ipv4Addr, out: &mut [u8]) -> Option<usize> {
    let total = inner.len() + IPIP_OVERHEAD;
    if total > usize::from(u16::MAX) || out.len() < total {
        return None;
    }
    let df = parse_ipv4(inner).map(|h| h.dont_fragment).unwrap_or(false);
    let hdr = &mut out[..IPIP_OVERHEAD];
    hdr[0] = 0x45;
    hdr[1] = 0;
    hdr[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    hdr[4..6].copy_from_slice(&[0, 0]);
    hdr[6..8].copy_from_slice(&(if df { 0x4000u16 } else { 0 }).to_be_bytes());
    hdr[8] = 64;
    hdr[9] = IPPROTO_IPIP;
    hdr[10..12].copy_from_slice(&[0, 0]);
    hdr[12..16].copy_from_slice(&src.octets());
    hdr[16..20].copy_from_slice(&dst.octets());
    let c = checksum(hdr);
    hdr[10..12].copy_from_slice(&c.to_be_bytes());
    out[IPIP_OVERHEAD..total].copy_from_slice(inner);
    Some(total)
}

/// The inner packet of an IPIP packet (outer IPv4 header with protocol 4), or `None` for
/// anything else. The inner packet is checked to be IPv4 and returned exactly as carried.
pub fn decapsulate(outer: &[u8]) -> Option<&[u8]> {
    let h = parse_ipv4(outer).ok()?;
    if h.protocol != IPPROTO_IPIP || h.is_later_fragment() || h.more_fragments {
        return None;
    }
    let inner = &outer[h.header_len..h.total_len];
    let ih = parse_ipv4(inner).ok()?;
    Some(&inner[..ih.total_len])
}

/// If `p` is a TCP SYN whose MSS option exceeds `max_mss`, lowers it to `max_mss` and fixes the
/// TCP checksum incrementally (RFC 1624). Returns whether the packet changed.
pub fn clamp_mss(p: &mut [u8], max_mss: u16) -> bool {
    let Ok(h) = parse_ipv4(p) else { return false };
    if h.protocol != IPPROTO_TCP || h.is_later_fragment() {
        return false;
    }
    let tcp_start = h.header_len;
    let tcp = &p[tcp_start..h.total_len];
    if tcp.len() < 20 || tcp[13] & 0x02 == 0 {
        return false;
    }
    let data_off = usize::from(tcp[12] >> 4) * 4;
    if data_off < 20 || data_off > tcp.len() {
        return false;
    }
    let mut i = 20;
    while i < data_off {
        match tcp[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let Some(&len) = tcp.get(i + 1) else { break };
                let len = usize::from(len);
                if len < 2 || i + len > data_off {
                    break;
                }
                if kind == 2 && len == 4 {
                    let at = tcp_start + i + 2;
                    let old = u16::from_be_bytes([p[at], p[at + 1]]);
                    if old <= max_mss {
                        return false;
                    }
                    p[at..at + 2].copy_from_slice(&max_mss.to_be_bytes());
                    let csum_at = tcp_start + 16;
                    let old_csum = u16::from_be_bytes([p[csum_at], p[csum_at + 1]]);
                    let new_csum = update_checksum(old_csum, old, max_mss);
                    p[csum_at..csum_at + 2].copy_from_slice(&new_csum.to_be_bytes());
                    return true;
                }
                i += len;
            }
        }
    }
    false
}

/// RFC 1624 incremental update: the checksum after one 16-bit word changed from `old` to `new`.
pub fn update_checksum(csum: u16, old: u16, new: u16) -> u16 {
    // HC' = ~(~HC + ~m + m')
    let acc = u32::from(!csum) + u32::from(!old) + u32::from(new);
    !fold(acc)
}

/// An ICMP "fragmentation needed" (type 3, code 4) from `from` to the sender of `packet`,
/// announcing `mtu`, quoting the packet's IP header and first 8 payload bytes (RFC 1191). The
/// XDP path answers oversized DF packets with this instead of fragmenting.
pub fn frag_needed(packet: &[u8], from: Ipv4Addr, mtu: u16) -> Option<Vec<u8>> {
    let h = parse_ipv4(packet).ok()?;
    let quote_len = (h.header_len + 8).min(h.total_len);
    let quote = &packet[..quote_len];
    let total = 20 + 8 + quote.len();
    let mut out = vec![0u8; total];
    out[0] = 0x45;
    out[1] = 0xc0;
    out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    out[8] = 64;
    out[9] = IPPROTO_ICMP;
    out[12..16].copy_from_slice(&from.octets());
    out[16..20].copy_from_slice(&h.src.octets());
    let c = checksum(&out[..20]);
    out[10..12].copy_from_slice(&c.to_be_bytes());
    out[20] = 3;
    out[21] = 4;
    out[26..28].copy_from_slice(&mtu.to_be_bytes());
    out[28..].copy_from_slice(quote);
    let c = checksum(&out[20..]);
    out[22..24].copy_from_slice(&c.to_be_bytes());
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A TCP/IPv4 packet with correct checksums; `options` must be a multiple of 4 bytes.
    pub(crate) fn tcp_packet(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        sport: u16,
        dport: u16,
        flags: u8,
        options: &[u8],
        payload: &[u8],
    ) -> Vec<u8> {
        let tcp_len = 20 + options.len() + payload.len();
        let total = 20 + tcp_len;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = IPPROTO_TCP;
        p[12..16].copy_from_slice(&src.octets());
        p[16..20].copy_from_slice(&dst.octets());
        let c = checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let t = &mut p[20..];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[4..8].copy_from_slice(&1u32.to_be_bytes());
        t[12] = (((20 + options.len()) / 4) as u8) << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&65535u16.to_be_bytes());
        t[20..20 + options.len()].copy_from_slice(options);
        t[20 + options.len()..].copy_from_slice(payload);
        let h = parse_ipv4(&p).unwrap();
        let c = !fold(sum(&p[20..], pseudo_header_sum(&h, tcp_len)));
        p[36..38].copy_from_slice(&c.to_be_bytes());
        p
    }

    const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);
    const VIP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 10);
    const LB: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 11);
    const GW: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 21);

    #[test]
    fn parses_and_keys_tcp() {
        let p = tcp_packet(CLIENT, VIP, 40000, 80, 0x02, &[], b"hi");
        assert!(ipv4_checksum_ok(&p));
        assert!(l4_checksum_ok(&p));
        let (h, k) = flow_key(&p).unwrap();
        assert!(h.dont_fragment);
        assert_eq!(h.total_len, p.len());
        assert_eq!(
            k,
            FlowKey {
                src: CLIENT,
                dst: VIP,
                src_port: 40000,
                dst_port: 80,
                protocol: 6
            }
        );
    }

    #[test]
    fn later_fragments_have_no_ports() {
        let mut p = tcp_packet(CLIENT, VIP, 40000, 80, 0x10, &[], b"data");
        p[6] = 0x00;
        p[7] = 0x10; // offset 16 × 8 bytes
        let (h, k) = flow_key(&p).unwrap();
        assert!(h.is_later_fragment());
        assert_eq!((k.src_port, k.dst_port), (0, 0));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_ipv4(&[]), Err(ParseError::Truncated));
        assert_eq!(parse_ipv4(&[0x60; 40]), Err(ParseError::NotIpv4(6)));
        assert_eq!(
            parse_ipv4(&[0x44; 40]),
            Err(ParseError::BadHeaderLength(16))
        );
        let p = tcp_packet(CLIENT, VIP, 1, 2, 0x02, &[], &[]);
        assert_eq!(parse_ipv4(&p[..30]), Err(ParseError::Truncated));
        // A header claiming more than the buffer holds.
        let mut q = p.clone();
        q[3] = q[3].wrapping_add(10);
        assert_eq!(parse_ipv4(&q), Err(ParseError::Truncated));
        // TCP with fewer than 4 bytes of header.
        let mut r = p[..22].to_vec();
        r[2..4].copy_from_slice(&22u16.to_be_bytes());
        assert_eq!(flow_key(&r), Err(ParseError::Truncated));
    }

    #[test]
    fn encapsulation_keeps_the_inner_packet_and_round_trips() {
        let inner = tcp_packet(CLIENT, VIP, 40000, 80, 0x18, &[], &[7u8; 1000]);
        let mut buf = vec![0u8; 2048];
        let n = encapsulate(&inner, LB, GW, &mut buf).unwrap();
        let outer = &buf[..n];
        assert_eq!(n, inner.len() + 20);
        assert!(ipv4_checksum_ok(outer));
        let h = parse_ipv4(outer).unwrap();
        assert_eq!((h.src, h.dst, h.protocol), (LB, GW, IPPROTO_IPIP));
        assert!(h.dont_fragment);
        assert_eq!(&outer[20..], &inner[..]);
        assert_eq!(decapsulate(outer), Some(&inner[..]));
        // The inner checksums are untouched and still valid.
        assert!(l4_checksum_ok(decapsulate(outer).unwrap()));
        assert_eq!(encapsulate(&inner, LB, GW, &mut buf[..100]), None);
    }

    #[test]
    fn decapsulate_refuses_non_ipip_and_fragments() {
        let inner = tcp_packet(CLIENT, VIP, 1, 2, 0x02, &[], &[]);
        assert_eq!(decapsulate(&inner), None);
        let mut buf = vec![0u8; 200];
        let n = encapsulate(&inner, LB, GW, &mut buf).unwrap();
        let mut frag = buf[..n].to_vec();
        frag[6] |= 0x20;
        assert_eq!(decapsulate(&frag), None);
        // Inner garbage.
        let mut bad = buf[..n].to_vec();
        bad[20] = 0x60;
        assert_eq!(decapsulate(&bad), None);
    }

    #[test]
    fn full_size_packet_encapsulates_to_mtu_plus_20() {
        let inner = tcp_packet(CLIENT, VIP, 40000, 80, 0x10, &[], &[1u8; 1460]);
        assert_eq!(inner.len(), 1500);
        let mut buf = vec![0u8; 1520];
        assert_eq!(encapsulate(&inner, LB, GW, &mut buf), Some(1520));
    }

    #[test]
    fn mss_clamp_rewrites_syn_and_keeps_checksum_valid() {
        // MSS 1460, NOP, NOP, SACK-permitted... then window scale with padding.
        let opts = [2, 4, 0x05, 0xb4, 1, 1, 4, 2, 1, 3, 3, 7];
        let mut p = tcp_packet(CLIENT, VIP, 40000, 80, 0x02, &opts, &[]);
        assert!(clamp_mss(&mut p, 1440));
        assert_eq!(&p[42..44], &1440u16.to_be_bytes());
        assert!(l4_checksum_ok(&p));
        // Already small enough: untouched.
        let before = p.clone();
        assert!(!clamp_mss(&mut p, 1440));
        assert_eq!(p, before);
        // Not a SYN: untouched.
        let mut ack = tcp_packet(CLIENT, VIP, 40000, 80, 0x10, &opts, &[]);
        assert!(!clamp_mss(&mut ack, 1000));
        // MSS option after other options.
        let opts2 = [1, 1, 4, 2, 2, 4, 0x23, 0x28];
        let mut q = tcp_packet(CLIENT, VIP, 40000, 80, 0x02, &opts2, &[]);
        assert!(clamp_mss(&mut q, 1400));
        assert!(l4_checksum_ok(&q));
        // Malformed option length does not loop or panic.
        let opts3 = [2, 0, 0, 0];
        let mut r = tcp_packet(CLIENT, VIP, 1, 2, 0x02, &opts3, &[]);
        assert!(!clamp_mss(&mut r, 1000));
    }

    #[test]
    fn incremental_checksum_matches_full_recompute() {
        for (old, new) in [
            (0x05b4u16, 0x05a0u16),
            (0xffff, 0),
            (0, 0xffff),
            (1234, 4321),
        ] {
            let mut data = vec![0x12, 0x34, 0xab, 0xcd];
            data.extend_from_slice(&old.to_be_bytes());
            let c = checksum(&data);
            data.truncate(4);
            data.extend_from_slice(&new.to_be_bytes());
            let want = checksum(&data);
            let got = update_checksum(c, old, new);
            // 0x0000 and 0xffff are the same value in ones' complement.
            assert!(
                got == want || (got ^ want) == 0xffff,
                "{old:x}->{new:x}: {got:x} vs {want:x}"
            );
        }
    }

    #[test]
    fn frag_needed_quotes_the_packet() {
        let p = tcp_packet(CLIENT, VIP, 40000, 80, 0x10, &[], &[0u8; 1480]);
        let icmp = frag_needed(&p, LB, 1480).unwrap();
        assert!(ipv4_checksum_ok(&icmp));
        let h = parse_ipv4(&icmp).unwrap();
        assert_eq!((h.src, h.dst, h.protocol), (LB, CLIENT, IPPROTO_ICMP));
        assert_eq!(checksum(&icmp[20..]), 0);
        assert_eq!((icmp[20], icmp[21]), (3, 4));
        assert_eq!(u16::from_be_bytes([icmp[26], icmp[27]]), 1480);
        assert_eq!(&icmp[28..], &p[..28]);
    }
}
