//! TLS on both ports, as etcd 3.4 sets it up (`pkg/transport/listener.go`'s `TLSInfo`,
//! `embed/etcd.go`'s `configurePeerListeners` and `configureClientListeners`):
//!
//! - Client port ([`ClientTls`]): `--cert-file` and `--key-file` (both, or neither) give the
//!   server's certificate chain and key; an `https://` client URL needs them, an `http://`
//!   one ignores them (with etcd's warning) and stays plaintext. `--trusted-ca-file` or
//!   `--client-cert-auth` makes the handshake require a client certificate signed by that
//!   CA (Go's `RequireAndVerifyClientCert` for either); `--client-crl-file` refuses revoked
//!   ones; `--client-cert-allowed-hostname` only those valid for that name. ALPN `h2` and
//!   `http/1.1`: gRPC and the HTTP/1.1 side share the listener as with etcd's cmux.
//! - Peer port ([`PeerTls`]): the same with `--peer-*` flags, plus `--peer-cert-allowed-cn`,
//!   and etcd's check of a peer certificate's SANs against the address it connects from
//!   ([`san`]; `--experimental-peer-skip-client-san-verification` turns it off). The same
//!   certificate is this member's client certificate when it dials `https://` peers, which
//!   it verifies against `--peer-trusted-ca-file` (the system's CAs without one).
//! - `--cipher-suites` ([`cipher`]) limits TLS 1.2 on both ports, as in Go.
//! - `--auto-tls` / `--peer-auto-tls` without certificate files: a self-signed certificate
//!   for the listen URLs' hosts, made once in `<data-dir>/fixtures/client` (or `peer`) and
//!   reused (etcd's `transport.SelfCert`; an ECDSA P-256 key where etcd uses P-521, which
//!   ring cannot sign with); peers then skip verifying each other, as etcd's do.
//! - Rotation ([`reload`]): the certificate and key files are read again on the first
//!   handshake after they change, on both ports and for the peer client; connections
//!   already open keep their session. Server-side session resumption is off, so every new
//!   connection is a full handshake that sees the current certificate, CRL and CA checks.
//!
//! Errors carry etcd's texts (Go's `open <file>: no such file or directory`, crypto/tls's
//! PEM and key-pair messages). The handshakes themselves run in `raftkv_raft::serve` (the
//! accept side) and `raftkv_raft::network` (the peer client).
//!
//! - `files` — reading the PEM files, Go's error texts, change stamps.
//! - `reload` — the certificate resolver that re-reads changed files.
//! - `verify` — the client- and server-certificate verifiers (CRL, allowed CN / hostname).
//! - [`x509`] — the common name and SANs of a certificate, Go's host-name matching.
//! - [`san`] — etcd's peer SAN check against the connecting address.
//! - [`cipher`] — Go's cipher-suite names.

pub mod cipher;
mod files;
mod reload;
pub mod san;
mod verify;
pub mod x509;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use raftkv_raft::serve::TlsAccept;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};

pub(crate) use files::go_io_error;
use reload::KeyPairFiles;
use verify::{Allowed, ClientVerifier, ServerVerifier};

/// Where Debian and its relatives keep the system's CA bundle (Go reads the same file).
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

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
    /// `--client-crl-file`: revoked client certificates (PEM or DER CRL), read again when
    /// the file changes.
    pub crl_file: String,
    /// `--client-cert-allowed-hostname`: only client certificates valid for this name.
    pub allowed_hostname: String,
}

impl ClientTls {
    /// Whether no certificate is configured (etcd's `TLSInfo.Empty`: neither cert nor key).
    pub fn is_empty(&self) -> bool {
        self.cert_file.is_empty() && self.key_file.is_empty()
    }

    /// The rustls server configuration (ALPN h2 and http/1.1), reading the files now; the
    /// certificate is read again whenever its files change.
    pub fn server_config(&self) -> anyhow::Result<Arc<ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        self.server_config_with(provider, &[b"h2", b"http/1.1"])
    }

    /// [`ClientTls::server_config`] with `provider`'s suites and these ALPN protocols.
    pub fn server_config_with(
        &self,
        provider: Arc<CryptoProvider>,
        alpn: &[&[u8]],
    ) -> anyhow::Result<Arc<ServerConfig>> {
        self.info().server_config(provider, alpn)
    }

    fn info(&self) -> Info<'_> {
        Info {
            cert_file: &self.cert_file,
            key_file: &self.key_file,
            trusted_ca_file: &self.trusted_ca_file,
            client_cert_auth: self.client_cert_auth,
            crl_file: &self.crl_file,
            allowed_cn: "",
            allowed_hostname: &self.allowed_hostname,
            self_cert: false,
            flags: ("--client-cert-auth", "--trusted-ca-file"),
        }
    }

    /// etcd's `transport.SelfCert`: the certificate and key in `dir` (`cert.pem`, `key.pem`)
    /// if both exist, else a new self-signed certificate (a year, for the hosts of `hosts`,
    /// `host:port` each) written there; the TLS settings that serve it (no client
    /// certificates asked for, as etcd's auto TLS).
    pub fn self_cert(dir: &Path, hosts: &[&str]) -> anyhow::Result<Self> {
        let (cert_file, key_file) = self_cert(dir, hosts)?;
        Ok(Self {
            cert_file,
            key_file,
            ..Self::default()
        })
    }
}

/// The peer port's TLS files and policy (etcd's `PeerTLSInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerTls {
    /// `--peer-cert-file`: this member's certificate, served on the peer port and presented
    /// as its client certificate to the peers it dials.
    pub cert_file: String,
    /// `--peer-key-file`: its private key.
    pub key_file: String,
    /// `--peer-trusted-ca-file`: the CA that peers' certificates (both ways) chain to.
    pub trusted_ca_file: String,
    /// `--peer-client-cert-auth`: require a verified client certificate of every peer.
    pub client_cert_auth: bool,
    /// `--peer-auto-tls`: without certificate files, a self-signed certificate; peers then
    /// skip verifying each other.
    pub auto_tls: bool,
    /// `--peer-crl-file`: revoked peer certificates, read again when the file changes.
    pub crl_file: String,
    /// `--peer-cert-allowed-cn`: only peer certificates with this common name.
    pub allowed_cn: String,
    /// `--peer-cert-allowed-hostname`: only peer certificates valid for this name.
    pub allowed_hostname: String,
    /// `--experimental-peer-skip-client-san-verification`: accept peer certificates whose
    /// SANs do not name the address they connect from.
    pub skip_client_san_verify: bool,
}

impl PeerTls {
    /// Whether no certificate is configured.
    pub fn is_empty(&self) -> bool {
        self.cert_file.is_empty() && self.key_file.is_empty()
    }

    fn info(&self, self_cert: bool) -> Info<'_> {
        Info {
            cert_file: &self.cert_file,
            key_file: &self.key_file,
            trusted_ca_file: &self.trusted_ca_file,
            client_cert_auth: self.client_cert_auth,
            crl_file: &self.crl_file,
            allowed_cn: &self.allowed_cn,
            allowed_hostname: &self.allowed_hostname,
            self_cert,
            flags: ("--peer-client-cert-auth", "--peer-trusted-ca-file"),
        }
    }

    /// What the member runs with, checked as etcd's `configurePeerListeners` and its peer
    /// transport check them: `listen_url` is the peer listen URL, `bound` the address it is
    /// bound to, `data_dir` where `--peer-auto-tls` keeps its certificate.
    pub fn node_tls(
        &self,
        listen_url: &str,
        bound: SocketAddr,
        data_dir: &Path,
        provider: Arc<CryptoProvider>,
    ) -> anyhow::Result<raftkv_raft::PeerTls> {
        let mut tls = self.clone();
        let mut self_cert = false;
        if tls.auto_tls {
            if tls.is_empty() {
                let host = crate::config::host_port(listen_url)?;
                let (cert_file, key_file) =
                    self::self_cert(&data_dir.join("fixtures").join("peer"), &[host])
                        .context("could not get peer self-signed certs")?;
                // etcd replaces the whole peer TLS info with the self-signed one.
                tls = PeerTls {
                    cert_file,
                    key_file,
                    ..PeerTls::default()
                };
                self_cert = true;
            } else {
                tracing::warn!("ignoring peer auto TLS since certs given");
            }
        }
        if !tls.is_empty() {
            tracing::info!(
                "peerTLS: cert = {}, key = {}, trusted-ca = {}, client-cert-auth = {}, crl-file = {}",
                tls.cert_file,
                tls.key_file,
                tls.trusted_ca_file,
                tls.client_cert_auth,
                tls.crl_file
            );
        }
        let info = tls.info(self_cert);
        let accept = if crate::config::is_https(listen_url) {
            if tls.is_empty() {
                bail!("cannot listen on TLS for {bound}: KeyFile and CertFile are not presented");
            }
            let config = info.server_config(provider.clone(), &[b"h2"])?;
            let check: Option<raftkv_raft::serve::HandshakeCheck> =
                (!tls.skip_client_san_verify).then(san_check);
            Some(TlsAccept { config, check })
        } else {
            if !tls.is_empty() {
                tracing::warn!(
                    "The scheme of peer url {listen_url} is HTTP while peer key/cert files are presented. Ignored peer key/cert files."
                );
            }
            if tls.client_cert_auth {
                tracing::warn!(
                    "The scheme of peer url {listen_url} is HTTP while client cert auth (--peer-client-cert-auth) is enabled. Ignored client cert auth for this url."
                );
            }
            None
        };
        let dial = info.client_config(provider)?;
        Ok(raftkv_raft::PeerTls {
            accept,
            dial: Some(dial),
        })
    }
}

/// etcd's check of a TLS peer's SANs against its address, for [`TlsAccept::check`].
pub fn san_check() -> raftkv_raft::serve::HandshakeCheck {
    Arc::new(|chain, peer| Box::pin(san::check(chain, peer)))
}

/// One port's settings as etcd's `transport.TLSInfo` holds them.
struct Info<'a> {
    cert_file: &'a str,
    key_file: &'a str,
    trusted_ca_file: &'a str,
    client_cert_auth: bool,
    crl_file: &'a str,
    allowed_cn: &'a str,
    allowed_hostname: &'a str,
    /// A self-signed certificate (auto TLS): the client side verifies nothing.
    self_cert: bool,
    /// The client-cert-auth and trusted-CA flags, for messages.
    flags: (&'static str, &'static str),
}

impl Info<'_> {
    fn is_empty(&self) -> bool {
        self.cert_file.is_empty() && self.key_file.is_empty()
    }

    /// etcd's `baseConfig`: both files, a usable pair (read again when the files change),
    /// and the allowed CN / hostname.
    fn base(&self, provider: &Arc<CryptoProvider>) -> anyhow::Result<(Arc<KeyPairFiles>, Allowed)> {
        if self.key_file.is_empty() || self.cert_file.is_empty() {
            bail!(
                "KeyFile and CertFile must both be present[key: {}, cert: {}]",
                self.key_file,
                self.cert_file
            );
        }
        let pair = KeyPairFiles::load(self.cert_file, self.key_file, provider.clone())?;
        let allowed = Allowed::from_flags(self.allowed_cn, self.allowed_hostname)?;
        Ok((pair, allowed))
    }

    /// etcd's `ServerConfig`: client certificates required (and verified) when a trusted CA
    /// or client-cert auth is set.
    fn server_config(
        &self,
        provider: Arc<CryptoProvider>,
        alpn: &[&[u8]],
    ) -> anyhow::Result<Arc<ServerConfig>> {
        let (pair, allowed) = self.base(&provider)?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = if self.trusted_ca_file.is_empty() && !self.client_cert_auth {
            builder.with_no_client_auth()
        } else {
            if self.trusted_ca_file.is_empty() {
                // Go would verify against the system's CAs; a certificate from a public CA
                // proves nothing about who may use this cluster, so raftkv wants the CA named.
                let (auth, ca) = self.flags;
                bail!("{auth} needs {ca} (the CA that signs client certificates)");
            }
            let roots = files::trusted_cas(self.trusted_ca_file)?;
            builder.with_client_cert_verifier(ClientVerifier::new(
                roots,
                self.crl_file,
                allowed,
                provider,
            )?)
        };
        let mut config = builder.with_cert_resolver(pair);
        // Every connection a full handshake: a resumed session would skip the certificate
        // (and CRL) checks and keep presenting the certificate it began with.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// etcd's `ClientConfig`: the certificate as client certificate (if any), the server
    /// verified against the trusted CA (the system's CAs without one; nothing for a
    /// self-signed setup).
    fn client_config(&self, provider: Arc<CryptoProvider>) -> anyhow::Result<Arc<ClientConfig>> {
        let identity = if self.is_empty() {
            None
        } else {
            Some(self.base(&provider)?)
        };
        let allowed = identity
            .as_ref()
            .map(|(_, a)| a.clone())
            .unwrap_or_default();
        let roots = if self.self_cert {
            None
        } else if self.trusted_ca_file.is_empty() {
            Some(system_roots())
        } else {
            Some(files::trusted_cas(self.trusted_ca_file)?)
        };
        let verifier = ServerVerifier::new(roots, allowed, provider.clone())?;
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match identity {
            Some((pair, _)) => builder.with_client_cert_resolver(pair),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The system's CA certificates (those webpki accepts; none if the bundle is missing).
fn system_roots() -> RootCertStore {
    let pem = std::fs::read(SYSTEM_CA_BUNDLE).unwrap_or_default();
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
        let _ = roots.add(cert);
    }
    roots
}

/// etcd's `transport.SelfCert` in `dir`: the existing `cert.pem` and `key.pem`, or a new
/// self-signed certificate for the hosts of `hosts` (`host:port` each); their paths.
fn self_cert(dir: &Path, hosts: &[&str]) -> anyhow::Result<(String, String)> {
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
        params.not_after =
            (std::time::SystemTime::now() + std::time::Duration::from_secs(365 * 24 * 3600)).into();
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyEncipherment,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().context("cannot generate ECDSA key")?;
        let cert = params
            .self_signed(&key)
            .context("cannot generate x509 certificate")?;
        files::write_private(&key_path, key.serialize_pem().as_bytes())?;
        files::write_private(&cert_path, cert.pem().as_bytes())?;
    }
    Ok((
        cert_path.display().to_string(),
        key_path.display().to_string(),
    ))
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
    }
}
