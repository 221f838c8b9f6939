//! TLS configuration: per-SNI server certificates and upstream origination.
//!
//! All crypto goes through one provider, ring, which is what the rest of the workspace uses; only
//! TLS 1.2 and 1.3 are offered.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{Pem, SecretPem, ServerTls, UpstreamTls};

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// No certificate in the PEM.
    #[error("{0}: no CERTIFICATE block found; expected a PEM certificate chain")]
    NoCertificate(String),
    /// Unparseable certificate PEM.
    #[error("{source_desc}: certificate PEM does not parse: {detail}")]
    BadCertificate {
        /// Where the PEM came from.
        source_desc: String,
        /// The parser's complaint.
        detail: String,
    },
    /// Unparseable or missing key.
    #[error("{0}: no usable private key (PKCS#8, PKCS#1 or SEC1 PEM) found")]
    BadKey(String),
    /// The key is not usable by the provider or does not belong to the certificate.
    #[error("certificate {cert} and key {key} do not form a usable pair: {detail}")]
    Mismatch {
        /// Certificate source.
        cert: String,
        /// Key source.
        key: String,
        /// rustls' reason.
        detail: String,
    },
    /// A CA certificate was refused by the trust store.
    #[error("{source_desc}: CA certificate refused: {detail}")]
    BadCa {
        /// Where the PEM came from.
        source_desc: String,
        /// The reason.
        detail: String,
    },
    /// rustls refused the assembled configuration.
    #[error("TLS configuration refused: {0}")]
    Config(#[from] rustls::Error),
}

/// The one crypto provider of the gateway.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a PEM certificate chain.
pub fn certs(pem: &Pem) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            source_desc: pem.source.clone(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(pem.source.clone()));
    }
    Ok(certs)
}

/// Builds a signing key and chain from PEM, checking that they belong together.
pub fn certified_key(cert: &Pem, key: &SecretPem) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = certs(cert)?;
    let der = PrivateKeyDer::from_pem_slice(key.0.pem.as_bytes())
        .map_err(|_| TlsError::BadKey(key.0.source.clone()))?;
    CertifiedKey::from_der(chain, der, &provider())
        .map(Arc::new)
        .map_err(|e| TlsError::Mismatch {
            cert: cert.source.clone(),
            key: key.0.source.clone(),
            detail: e.to_string(),
        })
}

/// A trust store holding exactly the CAs of `ca`.
pub fn root_store(ca: &Pem) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs(ca)? {
        store.add(c).map_err(|e| TlsError::BadCa {
            source_desc: ca.source.clone(),
            detail: e.to_string(),
        })?;
    }
    Ok(store)
}

/// Picks a certificate by SNI: exact name, then the longest matching `*.` wildcard, then the
/// default.
#[derive(Debug, Default)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the suffix after `*` (`.example.com`).
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    /// Builds the resolver for a listener's certificates.
    pub fn new(tls: &ServerTls) -> Result<SniResolver, TlsError> {
        let mut r = SniResolver::default();
        for c in &tls.certificates {
            let key = certified_key(&c.cert_chain, &c.private_key)?;
            for name in &c.server_names {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix('*') {
                    Some(suffix) => r.wildcard.insert(suffix.to_owned(), key.clone()),
                    None => r.exact.insert(name, key.clone()),
                };
            }
            if c.default {
                r.default = Some(key);
            }
        }
        Ok(r)
    }

    /// The certificate for `sni`.
    pub fn lookup(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = sni {
            let name = name.to_ascii_lowercase();
            if let Some(k) = self.exact.get(&name) {
                return Some(k.clone());
            }
            // A wildcard covers exactly one label, as in RFC 6125: `*.example.com` matches
            // `a.example.com`, not `a.b.example.com`.
            if let Some(dot) = name.find('.')
                && let Some(k) = self.wildcard.get(&name[dot..])
            {
                return Some(k.clone());
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.lookup(hello.server_name())
    }
}

/// The rustls server configuration of an HTTPS listener (ALPN h2 and http/1.1).
pub fn server_config(tls: &ServerTls) -> Result<Arc<ServerConfig>, TlsError> {
    let resolver = SniResolver::new(tls)?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The rustls client configuration for originating TLS to a cluster.
pub fn client_config(tls: &UpstreamTls, h2: bool) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = root_store(&tls.ca)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots);
    let mut cfg = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let chain = certs(cert)?;
            let der = PrivateKeyDer::from_pem_slice(key.0.pem.as_bytes())
                .map_err(|_| TlsError::BadKey(key.0.source.clone()))?;
            builder.with_client_auth_cert(chain, der)?
        }
        _ => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = if h2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(cfg))
}
