//! Reading the server name from a TLS ClientHello without terminating TLS (passthrough).
//!
//! The parser is fed whatever bytes have arrived so far and answers "need more", "here is the
//! SNI (or none)", or "this is not TLS". Every length is checked before it is used, nothing is
//! indexed unchecked, and the amount buffered is capped, so hostile input can only get a refusal.

/// The most ClientHello bytes we buffer; real ones are a few hundred bytes (post-quantum key
/// shares push them to ~1.8 KB), and the TLS record limit is 16 KiB per record.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024 + 5;

/// The outcome of looking at the first bytes of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek {
    /// More bytes are needed to decide.
    Incomplete,
    /// A complete ClientHello; its host_name, if it carried one.
    ClientHello(Option<String>),
}

/// Why the bytes are not a usable ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SniError {
    /// The first byte is not a TLS handshake record.
    #[error("not a TLS connection (first record is not a handshake)")]
    NotTls,
    /// The handshake is not a ClientHello or its structure is broken.
    #[error("malformed TLS ClientHello")]
    Malformed,
    /// The ClientHello is larger than we are willing to buffer.
    #[error("TLS ClientHello larger than {MAX_CLIENT_HELLO} bytes")]
    TooLarge,
}

/// Parses the ClientHello at the start of `buf` (which may be partial).
pub fn peek_sni(buf: &[u8]) -> Result<Peek, SniError> {
    // Reassemble the handshake message from as many handshake records as it spans.
    let mut handshake = Vec::new();
    let mut rest = buf;
    loop {
        if rest.is_empty() {
            return Ok(Peek::Incomplete);
        }
        if rest[0] != 0x16 {
            return Err(SniError::NotTls);
        }
        if rest.len() < 5 {
            return Ok(Peek::Incomplete);
        }
        if rest[1] != 0x03 {
            return Err(SniError::NotTls);
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len == 0 {
            return Err(SniError::Malformed);
        }
        let Some(fragment) = rest.get(5..5 + len) else {
            // Judge the handshake header early, so a hostile length is refused before we
            // wait for (and buffer) bytes that will never be accepted.
            let mut head = handshake.clone();
            head.extend(rest.iter().skip(5).take(4));
            if head.len() >= 4 {
                if head[0] != 0x01 {
                    return Err(SniError::Malformed);
                }
                let hlen = (usize::from(head[1]) << 16)
                    | (usize::from(head[2]) << 8)
                    | usize::from(head[3]);
                if hlen + 4 > MAX_CLIENT_HELLO {
                    return Err(SniError::TooLarge);
                }
            }
            if buf.len() >= MAX_CLIENT_HELLO {
                return Err(SniError::TooLarge);
            }
            return Ok(Peek::Incomplete);
        };
        handshake.extend_from_slice(fragment);
        rest = &rest[5 + len..];
        if handshake.len() >= 4 {
            if handshake[0] != 0x01 {
                return Err(SniError::Malformed);
            }
            let hlen = (usize::from(handshake[1]) << 16)
                | (usize::from(handshake[2]) << 8)
                | usize::from(handshake[3]);
            if hlen + 4 > MAX_CLIENT_HELLO {
                return Err(SniError::TooLarge);
            }
            if handshake.len() >= hlen + 4 {
                return client_hello_sni(&handshake[4..4 + hlen]).map(Peek::ClientHello);
            }
        }
        if buf.len() - rest.len() >= MAX_CLIENT_HELLO {
            return Err(SniError::TooLarge);
        }
    }
}

/// A cursor that refuses to read past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SniError> {
        if self.0.len() < n {
            return Err(SniError::Malformed);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<usize, SniError> {
        Ok(usize::from(self.take(1)?[0]))
    }

    fn u16(&mut self) -> Result<usize, SniError> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn vec8(&mut self) -> Result<&'a [u8], SniError> {
        let n = self.u8()?;
        self.take(n)
    }

    fn vec16(&mut self) -> Result<&'a [u8], SniError> {
        let n = self.u16()?;
        self.take(n)
    }
}

fn client_hello_sni(body: &[u8]) -> Result<Option<String>, SniError> {
    let mut r = Reader(body);
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    r.vec8()?; // legacy_session_id
    r.vec16()?; // cipher_suites
    r.vec8()?; // legacy_compression_methods
    if r.0.is_empty() {
        return Ok(None); // no extensions at all
    }
    let mut exts = Reader(r.vec16()?);
    while !exts.0.is_empty() {
        let ty = exts.u16()?;
        let data = exts.vec16()?;
        if ty != 0 {
            continue;
        }
        let mut list = Reader(Reader(data).vec16()?);
        while !list.0.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec16()?;
            if name_type == 0 {
                let name = std::str::from_utf8(name).map_err(|_| SniError::Malformed)?;
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(SniError::Malformed);
                }
                return Ok(Some(name.to_ascii_lowercase()));
            }
        }
        return Ok(None);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal but well-formed ClientHello record carrying `sni`.
    pub(crate) fn hello(sni: Option<&str>) -> Vec<u8> {
        let mut exts = Vec::new();
        if let Some(name) = sni {
            let n = name.as_bytes();
            let mut entry = vec![0u8];
            entry.extend_from_slice(&(n.len() as u16).to_be_bytes());
            entry.extend_from_slice(n);
            let mut list = (entry.len() as u16).to_be_bytes().to_vec();
            list.extend_from_slice(&entry);
            exts.extend_from_slice(&0u16.to_be_bytes());
            exts.extend_from_slice(&(list.len() as u16).to_be_bytes());
            exts.extend_from_slice(&list);
        }
        // A second, unrelated extension (supported_versions) before the end.
        exts.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7u8; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[0x01, 0x00]); // null compression
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut hs = vec![0x01];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 0x03, 0x01];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn finds_sni_and_lowercases_it() {
        let rec = hello(Some("Shop.Example.com"));
        assert_eq!(
            peek_sni(&rec),
            Ok(Peek::ClientHello(Some("shop.example.com".into())))
        );
        assert_eq!(peek_sni(&hello(None)), Ok(Peek::ClientHello(None)));
    }

    #[test]
    fn every_prefix_is_incomplete_never_an_error() {
        let rec = hello(Some("a.example.com"));
        for n in 0..rec.len() {
            assert_eq!(peek_sni(&rec[..n]), Ok(Peek::Incomplete), "prefix {n}");
        }
    }

    #[test]
    fn handshake_split_across_records() {
        let rec = hello(Some("split.example.com"));
        let hs = &rec[5..];
        let (a, b) = hs.split_at(10);
        let mut two = Vec::new();
        for part in [a, b] {
            two.extend_from_slice(&[0x16, 0x03, 0x01]);
            two.extend_from_slice(&(part.len() as u16).to_be_bytes());
            two.extend_from_slice(part);
        }
        assert_eq!(
            peek_sni(&two),
            Ok(Peek::ClientHello(Some("split.example.com".into())))
        );
    }

    #[test]
    fn refuses_non_tls_and_garbage() {
        assert_eq!(peek_sni(b"GET / HTTP/1.1\r\n"), Err(SniError::NotTls));
        assert_eq!(peek_sni(&[0x16, 0x02, 0, 0, 1]), Err(SniError::NotTls));
        // Handshake type ServerHello.
        let mut rec = hello(Some("x.com"));
        rec[5] = 0x02;
        assert_eq!(peek_sni(&rec), Err(SniError::Malformed));
        // A length that points past the end of the extension block.
        let mut rec = hello(Some("x.com"));
        let n = rec.len();
        rec[n - 8] = 0xff;
        assert!(peek_sni(&rec).is_err() || peek_sni(&rec) == Ok(Peek::ClientHello(None)));
    }

    #[test]
    fn huge_declared_length_is_too_large() {
        let rec = [0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0xff, 0xff, 0xff];
        assert_eq!(peek_sni(&rec), Err(SniError::TooLarge));
    }

    #[test]
    fn fuzz_like_mutations_never_panic() {
        // Deterministic pseudo-random corruption of a valid hello: every outcome is fine except
        // a panic or an out-of-bounds read.
        let base = hello(Some("fuzz.example.com"));
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            let mut m = base.clone();
            for _ in 0..(x % 4 + 1) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x as usize) % m.len();
                m[i] = (x >> 32) as u8;
            }
            let cut = (x as usize >> 8) % (m.len() + 1);
            let _ = peek_sni(&m[..cut]);
            let _ = peek_sni(&m);
        }
    }
}
