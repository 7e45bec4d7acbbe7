//! TLS on the client port, as etcd 3.4 sets it up (`pkg/transport/listener.go`'s
//! `TLSInfo.ServerConfig`, `embed/etcd.go`'s `configureClientListeners`):
//!
//! - `--cert-file` and `--key-file` (both, or neither) give the server's certificate chain
//!   and key; an `https://` client URL needs them, an `http://` one ignores them (with etcd's
//!   warning) and stays plaintext.
//! - `--trusted-ca-file` or `--client-cert-auth` makes the handshake require a client
//!   certificate signed by that CA: etcd sets Go's `RequireAndVerifyClientCert` for either.
//! - TLS 1.2 and 1.3 (etcd's minimum is 1.2), ALPN `h2` and `http/1.1`: gRPC and the HTTP/1.1
//!   side share the listener as with etcd's cmux (a client offering no ALPN gets whatever it
//!   speaks, detected after the handshake).
//!
//! - `--auto-tls` without certificate files: a self-signed certificate for the client URLs'
//!   hosts, made once in `<data-dir>/fixtures/client` and reused (etcd's `transport.SelfCert`;
//!   an ECDSA P-256 key where etcd uses P-521, which ring cannot sign with).
//!
//! Errors carry etcd's texts (Go's `open <file>: no such file or directory`, crypto/tls's
//! PEM and key-pair messages). The handshakes themselves run in `raftkv_raft::serve`.

use std::path::Path;
use std::sync::Arc;

use anyhow::bail;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

/// The client port's TLS files and client-certificate policy (etcd's `ClientTLSInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// `--cert-file`: the server certificate (PEM, leaf first, then intermediates).
    pub cert_file: String,
    /// `--key-file`: the server certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// `--trusted-ca-file`: CA certificates (PEM) that client certificates must chain to.
    pub trusted_ca_file: String,
    /// `--client-cert-auth`: require a verified client certificate.
    pub client_cert_auth: bool,
    /// `--auto-tls`: without `cert_file` and `key_file`, a self-signed certificate made at
    /// start ([`ClientTls::self_cert`]).
    pub auto_tls: bool,
}

impl ClientTls {
    /// Whether no certificate is configured (etcd's `TLSInfo.Empty`: neither cert nor key).
    pub fn is_empty(&self) -> bool {
        self.cert_file.is_empty() && self.key_file.is_empty()
    }

    /// The rustls server configuration, reading the files now.
    pub fn server_config(&self) -> anyhow::Result<Arc<ServerConfig>> {
        if self.key_file.is_empty() || self.cert_file.is_empty() {
            bail!(
                "KeyFile and CertFile must both be present[key: {}, cert: {}]",
                self.key_file,
                self.cert_file
            );
        }
        let (chain, key) = key_pair(&self.cert_file, &self.key_file)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = if self.trusted_ca_file.is_empty() && !self.client_cert_auth {
            builder.with_no_client_auth()
        } else {
            let roots = trusted_cas(&self.trusted_ca_file)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| anyhow::anyhow!("client certificate verifier: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                anyhow::anyhow!("tls: private key does not match public key")
            }
            other => anyhow::anyhow!("tls: {other}"),
        })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ClientTls {
    /// etcd's `transport.SelfCert`: the certificate and key in `dir` (`cert.pem`, `key.pem`)
    /// if both exist, else a new self-signed certificate (a year, for the hosts of `hosts`,
    /// `host:port` each) written there; the TLS settings that serve it (no client
    /// certificates asked for, as etcd's auto TLS).
    pub fn self_cert(dir: &Path, hosts: &[&str]) -> anyhow::Result<Self> {
        use anyhow::Context;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create cert directory {}", dir.display()))?;
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        let found = |p: &Path| p.is_file();
        if !(found(&cert_path) && found(&key_path)) {
            let names: Vec<String> = hosts
                .iter()
                .map(|h| {
                    let host = h.rsplit_once(':').map_or(*h, |(host, _)| host);
                    host.trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_string()
                })
                .collect();
            let mut params =
                rcgen::CertificateParams::new(names).context("cannot generate x509 certificate")?;
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, "etcd");
            params.not_before = std::time::SystemTime::now().into();
            params.not_after = (std::time::SystemTime::now()
                + std::time::Duration::from_secs(365 * 24 * 3600))
            .into();
            params.key_usages = vec![
                rcgen::KeyUsagePurpose::KeyEncipherment,
                rcgen::KeyUsagePurpose::DigitalSignature,
            ];
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
            let key = rcgen::KeyPair::generate().context("cannot generate ECDSA key")?;
            let cert = params
                .self_signed(&key)
                .context("cannot generate x509 certificate")?;
            write_private(&key_path, key.serialize_pem().as_bytes())?;
            write_private(&cert_path, cert.pem().as_bytes())?;
        }
        Ok(Self {
            cert_file: cert_path.display().to_string(),
            key_file: key_path.display().to_string(),
            ..Self::default()
        })
    }
}

/// Writes a file readable by its owner only (etcd writes its self-signed files 0600).
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("{}", go_io_error(&path.display().to_string(), &e)))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// The certificate chain and key, read as Go's `tls.LoadX509KeyPair` does (cert file first).
fn key_pair(
    cert_file: &str,
    key_file: &str,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let cert_pem = read(cert_file)?;
    let key_pem = read(key_file)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("tls: failed to parse certificate PEM data: {e}"))?;
    if chain.is_empty() {
        bail!("tls: failed to find any PEM data in certificate input");
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            anyhow::anyhow!("tls: failed to find any PEM data in key input")
        }
        other => anyhow::anyhow!("tls: failed to parse private key: {other}"),
    })?;
    Ok((chain, key))
}

/// The CA certificates of `--trusted-ca-file`.
fn trusted_cas(file: &str) -> anyhow::Result<RootCertStore> {
    if file.is_empty() {
        // Go would verify against the system's CAs; a client certificate from a public CA
        // proves nothing about who may use this cluster, so raftkv wants the CA named.
        bail!("--client-cert-auth needs --trusted-ca-file (the CA that signs client certificates)");
    }
    let pem = read(file)?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| anyhow::anyhow!("{file}: x509: {e}"))?;
    }
    if roots.is_empty() {
        bail!("{file}: no CA certificate found (expected PEM \"CERTIFICATE\" blocks)");
    }
    Ok(roots)
}

/// Reads a file, with Go's error text (`open <path>: no such file or directory`).
fn read(path: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(Path::new(path)).map_err(|e| anyhow::anyhow!("{}", go_io_error(path, &e)))
}

/// An I/O error as Go's `os` package words it: the operation, the path, and the lower-case
/// system message.
pub(crate) fn go_io_error(path: &str, e: &std::io::Error) -> String {
    let op = if e.raw_os_error() == Some(libc::EISDIR) {
        "read"
    } else {
        "open"
    };
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    let lower = chars
        .next()
        .map(|c| c.to_lowercase().chain(chars).collect::<String>())
        .unwrap_or_default();
    format!("{op} {path}: {lower}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_get_gos_errors() {
        let tls = ClientTls {
            cert_file: "/nonexistent/c.crt".into(),
            key_file: "/nonexistent/c.key".into(),
            ..Default::default()
        };
        assert_eq!(
            tls.server_config().unwrap_err().to_string(),
            "open /nonexistent/c.crt: no such file or directory"
        );
        let half = ClientTls {
            cert_file: "/nonexistent/c.crt".into(),
            ..Default::default()
        };
        assert!(!half.is_empty());
        assert_eq!(
            half.server_config().unwrap_err().to_string(),
            "KeyFile and CertFile must both be present[key: , cert: /nonexistent/c.crt]"
        );
    }

    #[test]
    fn self_signed_certificates_are_made_once_and_served() {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = dir.path().join("fixtures/client");
        let tls = ClientTls::self_cert(&fixtures, &["127.0.0.1:2379", "localhost:2379"]).unwrap();
        assert!(tls.server_config().is_ok());
        let first = std::fs::read(&tls.cert_file).unwrap();
        let again = ClientTls::self_cert(&fixtures, &["127.0.0.1:2379"]).unwrap();
        assert_eq!(std::fs::read(&again.cert_file).unwrap(), first);
    }

    #[test]
    fn files_without_pem_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage");
        std::fs::write(&garbage, b"\x00\x01not pem").unwrap();
        let g = garbage.to_str().unwrap().to_string();
        let tls = ClientTls {
            cert_file: g.clone(),
            key_file: g.clone(),
            ..Default::default()
        };
        assert_eq!(
            tls.server_config().unwrap_err().to_string(),
            "tls: failed to find any PEM data in certificate input"
        );
        assert_eq!(
            go_io_error("/d", &std::io::Error::from_raw_os_error(libc::EISDIR)),
            "read /d: is a directory"
        );
    }
}
