//! The local CA of `causeway up` and the serving certificates it issues: made at first start in
//! the data directory (`ca.crt`, `ca.key`, `certs/NAMESPACE-NAME.yaml`) and reused afterwards,
//! so `curl --cacert DATA/ca.crt` keeps working across restarts. Nothing of it is committed.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::{Value, json};

use super::plan::CertRequest;

/// The CA's common name (also how a reloaded CA key is matched to its certificate's subject).
const CA_NAME: &str = "causeway up local CA";
/// The annotation that records which hosts a Secret was issued for.
const HOSTS_ANNOTATION: &str = "causeway.io/issued-for";

/// Why the local CA or a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// File I/O.
    #[error("{path}: {source} (is the data directory writable? pick another with --data-dir)")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// rcgen refused (a host name it cannot encode, a damaged key file).
    #[error("{what}: {source} (delete {dir}/ca.crt and ca.key to start a new CA)")]
    Generate {
        /// What was being made.
        what: String,
        /// The data directory.
        dir: String,
        /// The error.
        source: rcgen::Error,
    },
}

/// The CA of a data directory.
pub struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate's file (for `curl --cacert`).
    pub cert_path: PathBuf,
    dir: PathBuf,
}

fn write_private(path: &Path, text: &str) -> Result<(), CertError> {
    let io = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    std::fs::write(path, text).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    Ok(())
}

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    Ok(params)
}

impl LocalCa {
    /// Loads the CA of `dir`, or makes one.
    pub fn open(dir: &Path) -> Result<LocalCa, CertError> {
        let cert_path = dir.join("ca.crt");
        let key_path = dir.join("ca.key");
        let gen_err = |what: &str| {
            let dir = dir.display().to_string();
            let what = what.to_owned();
            move |source| CertError::Generate { what, dir, source }
        };
        let key = match std::fs::read_to_string(&key_path) {
            Ok(pem) if cert_path.exists() => {
                KeyPair::from_pem(&pem).map_err(gen_err("reading ca.key"))?
            }
            _ => {
                let key = KeyPair::generate().map_err(gen_err("making the CA key"))?;
                let cert = ca_params()
                    .and_then(|p| p.self_signed(&key))
                    .map_err(gen_err("making the CA certificate"))?;
                write_private(&key_path, &key.serialize_pem())?;
                std::fs::write(&cert_path, cert.pem()).map_err(|source| CertError::Io {
                    path: cert_path.clone(),
                    source,
                })?;
                key
            }
        };
        // Leaf certificates name the issuer by the CA's subject and key; both are what the
        // stored ca.crt holds, so rebuilding the parameters verifies against it.
        let params = ca_params().map_err(gen_err("the CA parameters"))?;
        Ok(LocalCa {
            issuer: Issuer::new(params, key),
            cert_path,
            dir: dir.to_owned(),
        })
    }

    /// The `kubernetes.io/tls` Secret for `req`: the stored one when it was issued for the
    /// same hosts, else a new certificate (written to `certs/NAMESPACE-NAME.yaml`).
    pub fn secret(&self, req: &CertRequest) -> Result<Value, CertError> {
        let certs = self.dir.join("certs");
        std::fs::create_dir_all(&certs).map_err(|source| CertError::Io {
            path: certs.clone(),
            source,
        })?;
        let path = certs.join(format!("{}-{}.yaml", req.namespace, req.name));
        let hosts = req.hosts.join(",");
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(v) = serde_yaml::from_str::<Value>(&text)
            && v.pointer(&format!(
                "/metadata/annotations/{}",
                HOSTS_ANNOTATION.replace('/', "~1")
            )) == Some(&Value::String(hosts.clone()))
        {
            return Ok(v);
        }
        let gen_err = |source| CertError::Generate {
            what: format!("a certificate for {hosts}"),
            dir: self.dir.display().to_string(),
            source,
        };
        let key = KeyPair::generate().map_err(gen_err)?;
        let mut params = CertificateParams::new(req.hosts.clone()).map_err(gen_err)?;
        if let Some(first) = req.hosts.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        let cert = params.signed_by(&key, &self.issuer).map_err(gen_err)?;
        let secret = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": req.name,
                "namespace": req.namespace,
                "annotations": {HOSTS_ANNOTATION: hosts},
            },
            "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": cert.pem(), "tls.key": key.serialize_pem()},
        });
        let text = format!(
            "# Made by `causeway up` from its local CA ({}); applied at every start.\n{}",
            self.cert_path.display(),
            serde_yaml::to_string(&secret).unwrap_or_default()
        );
        write_private(&path, &text)?;
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn made_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let req = CertRequest {
            namespace: "retail".into(),
            name: "shop-cert".into(),
            hosts: vec!["shop.example.com".into()],
        };
        let ca = LocalCa::open(dir.path()).unwrap();
        let first = ca.secret(&req).unwrap();
        let doc = causeway_crds::document::load_value(0, first.clone());
        assert!(doc.is_ok(), "{:?}", doc.report);
        let ca_pem = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();

        // A second start reuses the CA and the certificate.
        let ca = LocalCa::open(dir.path()).unwrap();
        assert_eq!(ca.secret(&req).unwrap(), first);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("ca.crt")).unwrap(),
            ca_pem
        );
        // Other hosts: a new certificate from the same CA.
        let other = CertRequest {
            hosts: vec!["shop.example.com".into(), "www.shop.example.com".into()],
            ..req
        };
        let second = ca.secret(&other).unwrap();
        assert_ne!(
            second["stringData"]["tls.crt"],
            first["stringData"]["tls.crt"]
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("ca.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the CA key is private");
        }
    }
}
