//! BGP-4 messages (RFC 4271) — only what announcing IPv4 unicast /32s needs: OPEN with the
//! multiprotocol (RFC 4760) and four-octet AS (RFC 6793) capabilities, KEEPALIVE, UPDATE and
//! NOTIFICATION. Encoding and decoding are pure functions.

use std::net::Ipv4Addr;

/// Message header length.
pub const HEADER_LEN: usize = 19;
/// Largest message (RFC 4271).
pub const MAX_LEN: usize = 4096;
/// AS_TRANS (RFC 6793): the 2-octet AS sent by speakers whose AS does not fit.
pub const AS_TRANS: u16 = 23_456;

/// A decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// OPEN.
    Open(Open),
    /// UPDATE (contents not needed: we import nothing).
    Update,
    /// NOTIFICATION.
    Notification {
        /// Error code.
        code: u8,
        /// Error subcode.
        subcode: u8,
    },
    /// KEEPALIVE.
    Keepalive,
}

/// The fields of an OPEN the speaker needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The sender's AS (from the four-octet capability when present).
    pub asn: u32,
    /// Proposed hold time in seconds.
    pub hold_time: u16,
    /// BGP identifier.
    pub router_id: Ipv4Addr,
    /// Whether the four-octet AS capability was sent.
    pub four_octet_as: bool,
}

/// Why bytes were not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Marker not all ones.
    #[error("bad BGP marker")]
    BadMarker,
    /// Length field out of range.
    #[error("bad BGP message length {0}")]
    BadLength(usize),
    /// Unknown type.
    #[error("unknown BGP message type {0}")]
    BadType(u8),
    /// A malformed body.
    #[error("malformed BGP {0} message")]
    Malformed(&'static str),
}

fn header(kind: u8, body_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body_len);
    out.extend_from_slice(&[0xff; 16]);
    out.extend_from_slice(&((HEADER_LEN + body_len) as u16).to_be_bytes());
    out.push(kind);
    out
}

/// An OPEN for `asn` with the multiprotocol (IPv4 unicast) and four-octet AS capabilities.
pub fn open(asn: u32, hold_time: u16, router_id: Ipv4Addr) -> Vec<u8> {
    let my_as = u16::try_from(asn).unwrap_or(AS_TRANS);
    let caps: Vec<u8> = [
        &[1u8, 4, 0, 1, 0, 1][..], // MP-BGP: AFI 1 (IPv4), SAFI 1 (unicast)
        &[65, 4][..],              // four-octet AS
        &asn.to_be_bytes()[..],
    ]
    .concat();
    let mut params = vec![2u8, caps.len() as u8];
    params.extend_from_slice(&caps);
    let mut body = vec![4u8];
    body.extend_from_slice(&my_as.to_be_bytes());
    body.extend_from_slice(&hold_time.to_be_bytes());
    body.extend_from_slice(&router_id.octets());
    body.push(params.len() as u8);
    body.extend_from_slice(&params);
    let mut out = header(1, body.len());
    out.extend_from_slice(&body);
    out
}

/// A KEEPALIVE.
pub fn keepalive() -> Vec<u8> {
    header(4, 0)
}

/// A NOTIFICATION with `code`/`subcode` and no data.
pub fn notification(code: u8, subcode: u8) -> Vec<u8> {
    let mut out = header(3, 2);
    out.push(code);
    out.push(subcode);
    out
}

/// What an UPDATE carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateSpec<'a> {
    /// /32s to withdraw.
    pub withdraw: &'a [Ipv4Addr],
    /// /32s to announce.
    pub announce: &'a [Ipv4Addr],
    /// Our AS.
    pub local_as: u32,
    /// Whether the session is iBGP (no AS prepended, LOCAL_PREF sent).
    pub ibgp: bool,
    /// Whether AS numbers are four octets in AS_PATH (both sides sent the capability).
    pub four_octet_as: bool,
    /// NEXT_HOP of the announced routes.
    pub next_hop: Ipv4Addr,
}

/// UPDATE messages for `spec`, split so that each stays under [`MAX_LEN`].
pub fn updates(spec: &UpdateSpec<'_>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    // 5 bytes per /32; stay well below 4096 with the attributes.
    for chunk in spec.withdraw.chunks(700) {
        out.push(update_one(chunk, &[], spec));
    }
    for chunk in spec.announce.chunks(700) {
        out.push(update_one(&[], chunk, spec));
    }
    out
}

fn prefixes(list: &[Ipv4Addr]) -> Vec<u8> {
    let mut out = Vec::with_capacity(list.len() * 5);
    for a in list {
        out.push(32);
        out.extend_from_slice(&a.octets());
    }
    out
}

fn update_one(withdraw: &[Ipv4Addr], announce: &[Ipv4Addr], spec: &UpdateSpec<'_>) -> Vec<u8> {
    let withdrawn = prefixes(withdraw);
    let mut attrs = Vec::new();
    if !announce.is_empty() {
        attrs.extend_from_slice(&[0x40, 1, 1, 0]); // ORIGIN IGP
        if spec.ibgp {
            attrs.extend_from_slice(&[0x40, 2, 0]); // empty AS_PATH
        } else if spec.four_octet_as {
            attrs.extend_from_slice(&[0x40, 2, 6, 2, 1]);
            attrs.extend_from_slice(&spec.local_as.to_be_bytes());
        } else {
            attrs.extend_from_slice(&[0x40, 2, 4, 2, 1]);
            let a = u16::try_from(spec.local_as).unwrap_or(AS_TRANS);
            attrs.extend_from_slice(&a.to_be_bytes());
        }
        attrs.extend_from_slice(&[0x40, 3, 4]); // NEXT_HOP
        attrs.extend_from_slice(&spec.next_hop.octets());
        if spec.ibgp {
            attrs.extend_from_slice(&[0x40, 5, 4, 0, 0, 0, 100]); // LOCAL_PREF 100
        }
    }
    let nlri = prefixes(announce);
    let body_len = 2 + withdrawn.len() + 2 + attrs.len() + nlri.len();
    let mut out = header(2, body_len);
    out.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    out.extend_from_slice(&withdrawn);
    out.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    out.extend_from_slice(&attrs);
    out.extend_from_slice(&nlri);
    out
}

/// The total length of the message whose header starts `buf`, once 19 bytes are there.
pub fn message_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[..16].iter().any(|b| *b != 0xff) {
        return Err(DecodeError::BadMarker);
    }
    let len = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
    if !(HEADER_LEN..=MAX_LEN).contains(&len) {
        return Err(DecodeError::BadLength(len));
    }
    Ok(Some(len))
}

/// Decodes one whole message.
pub fn decode(msg: &[u8]) -> Result<Message, DecodeError> {
    let len = message_len(msg)?.ok_or(DecodeError::BadLength(msg.len()))?;
    if len != msg.len() {
        return Err(DecodeError::BadLength(msg.len()));
    }
    let body = &msg[HEADER_LEN..];
    match msg[18] {
        1 => decode_open(body).map(Message::Open),
        2 => Ok(Message::Update),
        3 => {
            if body.len() < 2 {
                return Err(DecodeError::Malformed("NOTIFICATION"));
            }
            Ok(Message::Notification {
                code: body[0],
                subcode: body[1],
            })
        }
        4 => {
            if !body.is_empty() {
                return Err(DecodeError::Malformed("KEEPALIVE"));
            }
            Ok(Message::Keepalive)
        }
        t => Err(DecodeError::BadType(t)),
    }
}

fn decode_open(b: &[u8]) -> Result<Open, DecodeError> {
    let bad = DecodeError::Malformed("OPEN");
    if b.len() < 10 || b[0] != 4 {
        return Err(bad);
    }
    let mut asn = u32::from(u16::from_be_bytes([b[1], b[2]]));
    let hold_time = u16::from_be_bytes([b[3], b[4]]);
    let router_id = Ipv4Addr::new(b[5], b[6], b[7], b[8]);
    let opt_len = usize::from(b[9]);
    let params = b.get(10..10 + opt_len).ok_or(bad.clone())?;
    let mut four_octet_as = false;
    let mut i = 0;
    while i + 2 <= params.len() {
        let (ptype, plen) = (params[i], usize::from(params[i + 1]));
        let p = params.get(i + 2..i + 2 + plen).ok_or(bad.clone())?;
        if ptype == 2 {
            let mut j = 0;
            while j + 2 <= p.len() {
                let (code, clen) = (p[j], usize::from(p[j + 1]));
                let c = p.get(j + 2..j + 2 + clen).ok_or(bad.clone())?;
                if code == 65 && clen == 4 {
                    four_octet_as = true;
                    asn = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
                }
                j += 2 + clen;
            }
        }
        i += 2 + plen;
    }
    Ok(Open {
        asn,
        hold_time,
        router_id,
        four_octet_as,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RID: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 11);

    #[test]
    fn open_round_trips() {
        let m = open(65001, 9, RID);
        assert_eq!(message_len(&m).unwrap(), Some(m.len()));
        assert_eq!(
            decode(&m).unwrap(),
            Message::Open(Open {
                asn: 65001,
                hold_time: 9,
                router_id: RID,
                four_octet_as: true
            })
        );
        // A 4-byte AS travels as AS_TRANS plus the capability.
        let m = open(4_200_000_000, 90, RID);
        assert_eq!(u16::from_be_bytes([m[20], m[21]]), AS_TRANS);
        let Message::Open(o) = decode(&m).unwrap() else {
            panic!()
        };
        assert_eq!(o.asn, 4_200_000_000);
    }

    #[test]
    fn small_messages() {
        assert_eq!(decode(&keepalive()).unwrap(), Message::Keepalive);
        assert_eq!(
            decode(&notification(6, 2)).unwrap(),
            Message::Notification {
                code: 6,
                subcode: 2
            }
        );
    }

    #[test]
    fn update_layout() {
        let vip = Ipv4Addr::new(10, 9, 0, 10);
        let nh = Ipv4Addr::new(10, 1, 0, 11);
        let spec = UpdateSpec {
            withdraw: &[],
            announce: &[vip],
            local_as: 65001,
            ibgp: false,
            four_octet_as: true,
            next_hop: nh,
        };
        let u = updates(&spec);
        assert_eq!(u.len(), 1);
        let m = &u[0];
        assert_eq!(decode(m).unwrap(), Message::Update);
        let body = &m[HEADER_LEN..];
        assert_eq!(&body[0..2], &[0, 0]); // no withdrawn routes
        let attr_len = usize::from(u16::from_be_bytes([body[2], body[3]]));
        let attrs = &body[4..4 + attr_len];
        assert_eq!(
            attrs,
            &[
                0x40, 1, 1, 0, // ORIGIN
                0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9, // AS_PATH [65001]
                0x40, 3, 4, 10, 1, 0, 11 // NEXT_HOP
            ]
        );
        assert_eq!(&body[4 + attr_len..], &[32, 10, 9, 0, 10]);

        let w = updates(&UpdateSpec {
            withdraw: &[vip],
            announce: &[],
            ..spec
        });
        assert_eq!(
            &w[0][HEADER_LEN..],
            &[0, 5, 32, 10, 9, 0, 10, 0, 0],
            "withdraw only, no attributes"
        );
        let ibgp = updates(&UpdateSpec {
            ibgp: true,
            ..spec.clone()
        });
        assert!(ibgp[0].windows(3).any(|w| w == [0x40, 2, 0]));
        assert!(ibgp[0].windows(3).any(|w| w == [0x40, 5, 4]));
        let two = updates(&UpdateSpec {
            four_octet_as: false,
            ..spec
        });
        assert!(two[0].windows(5).any(|w| w == [0x40, 2, 4, 2, 1]));
    }

    #[test]
    fn many_prefixes_are_split() {
        let many: Vec<Ipv4Addr> = (0..2000u32)
            .map(|i| Ipv4Addr::from(0x0a09_0000 + i))
            .collect();
        let u = updates(&UpdateSpec {
            withdraw: &[],
            announce: &many,
            local_as: 1,
            ibgp: false,
            four_octet_as: true,
            next_hop: RID,
        });
        assert_eq!(u.len(), 3);
        for m in u {
            assert!(m.len() <= MAX_LEN);
            assert_eq!(message_len(&m).unwrap(), Some(m.len()));
        }
    }

    #[test]
    fn malformed_input() {
        assert_eq!(message_len(&[0xff; 10]), Ok(None));
        let mut m = keepalive();
        m[0] = 0;
        assert_eq!(decode(&m), Err(DecodeError::BadMarker));
        let mut m = keepalive();
        m[17] = 5;
        assert_eq!(message_len(&m), Err(DecodeError::BadLength(5)));
        let mut m = keepalive();
        m[18] = 9;
        assert_eq!(decode(&m), Err(DecodeError::BadType(9)));
        // OPEN whose parameters run past the end.
        let mut m = open(1, 9, RID);
        m[28] = 200;
        assert!(decode(&m).is_err());
        // Truncated capability.
        let mut m = open(1, 9, RID);
        let l = m.len();
        m[l - 5] = 50;
        assert!(decode(&m).is_err());
    }
}
