//! Verifying the other side's certificate as etcd does.
//!
//! - [`ClientVerifier`] (a server checking client certificates): chains to the trusted CA
//!   (webpki), not revoked by the CRL file — read again when it changes, as etcd reads it on
//!   every connection — and, with `--*-cert-allowed-cn` / `--*-cert-allowed-hostname`, the
//!   leaf's common name or SANs as allowed (etcd's `VerifyPeerCertificate`).
//! - [`ServerVerifier`] (a member dialing a peer): chains to the peer CA (or anything, with
//!   `--peer-auto-tls`, as etcd's self-signed setup skips verification), with the same
//!   allowed CN / hostname check, which etcd applies on both sides.
//!
//! etcd checks the CRL only against serial numbers, whoever signed the list; webpki checks
//! lists signed by the certificate's issuer (and a certificate no list speaks for passes,
//! as in etcd).

use std::sync::{Arc, Mutex};

use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::{
    self, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};

use super::files::{Stamp, crls};
use super::x509;

/// Which leaf certificates are allowed beyond chaining to the CA (etcd's `AllowedCN` and
/// `AllowedHostname`, which exclude each other).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Allowed {
    /// Any.
    #[default]
    Any,
    /// Those whose subject common name is this.
    CommonName(String),
    /// Those valid for this host name or IP address.
    Hostname(String),
}

impl Allowed {
    /// etcd's settings: an error if both are given, with etcd's text.
    pub fn from_flags(cn: &str, hostname: &str) -> anyhow::Result<Self> {
        match (cn.is_empty(), hostname.is_empty()) {
            (true, true) => Ok(Self::Any),
            (false, true) => Ok(Self::CommonName(cn.to_string())),
            (true, false) => Ok(Self::Hostname(hostname.to_string())),
            (false, false) => anyhow::bail!(
                "AllowedCN and AllowedHostname are mutually exclusive (cn={cn:?}, hostname={hostname:?})"
            ),
        }
    }

    /// Checks a verified leaf, with Go's error text.
    fn check(&self, leaf: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let ok = match self {
            Self::Any => true,
            Self::CommonName(cn) => x509::common_name(leaf).as_deref() == Some(cn.as_str()),
            Self::Hostname(host) => x509::valid_for_host(&x509::alt_names(leaf), host),
        };
        if ok {
            Ok(())
        } else {
            Err(rustls::Error::General(
                "client certificate authentication failed".into(),
            ))
        }
    }
}

/// A verifier built with a CRL file's lists, or why none could be.
type Built = Result<Arc<dyn ClientCertVerifier>, String>;

/// The CRL file and the verifier built with its lists, rebuilt when the file changes.
#[derive(Debug)]
struct CrlFile {
    file: String,
    cache: Mutex<(Stamp, Built)>,
}

/// Client certificates: required, chained to the trusted CA, not revoked, allowed.
#[derive(Debug)]
pub struct ClientVerifier {
    roots: Arc<RootCertStore>,
    hints: Vec<DistinguishedName>,
    provider: Arc<CryptoProvider>,
    /// Without a CRL file.
    plain: Arc<dyn ClientCertVerifier>,
    crl: Option<CrlFile>,
    allowed: Allowed,
}

impl ClientVerifier {
    /// A verifier for `roots`; `crl_file` (if not empty) is read now, its errors returned.
    pub fn new(
        roots: RootCertStore,
        crl_file: &str,
        allowed: Allowed,
        provider: Arc<CryptoProvider>,
    ) -> anyhow::Result<Arc<Self>> {
        let roots = Arc::new(roots);
        let plain = build(&roots, Vec::new(), &provider)?;
        let crl = if crl_file.is_empty() {
            None
        } else {
            let stamp = Stamp::of(&[crl_file]);
            let verifier = build(&roots, crls(crl_file)?, &provider)?;
            Some(CrlFile {
                file: crl_file.to_string(),
                cache: Mutex::new((stamp, Ok(verifier))),
            })
        };
        Ok(Arc::new(Self {
            hints: roots.subjects(),
            roots,
            provider,
            plain,
            crl,
            allowed,
        }))
    }

    /// The webpki verifier to use now: with the CRL file's current lists, if there is one.
    fn current(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        let Some(crl) = &self.crl else {
            return Ok(self.plain.clone());
        };
        let stamp = Stamp::of(&[&crl.file]);
        let mut cache = crl.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.0 != stamp {
            let rebuilt = crls(&crl.file)
                .and_then(|lists| build(&self.roots, lists, &self.provider))
                .map_err(|e| e.to_string());
            match &rebuilt {
                Ok(_) => {
                    tracing::info!(crl_file = %crl.file, "revocation list changed; read again")
                }
                // As etcd, a list that cannot be read refuses every certificate until it can.
                Err(e) => {
                    tracing::warn!(crl_file = %crl.file, error = %e, "cannot read the revocation list; refusing client certificates")
                }
            }
            *cache = (stamp, rebuilt);
        }
        cache
            .1
            .clone()
            .map_err(|e| rustls::Error::General(format!("revocation list: {e}")))
    }
}

/// webpki's client verifier over `roots` with `crls`: a certificate no list covers passes.
fn build(
    roots: &Arc<RootCertStore>,
    crls: Vec<rustls::pki_types::CertificateRevocationListDer<'static>>,
    provider: &Arc<CryptoProvider>,
) -> anyhow::Result<Arc<dyn ClientCertVerifier>> {
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
    if !crls.is_empty() {
        builder = builder.with_crls(crls).allow_unknown_revocation_status();
    }
    builder
        .build()
        .map_err(|e| anyhow::anyhow!("client certificate verifier: {e}"))
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .current()?
            .verify_client_cert(end_entity, intermediates, now)?;
        self.allowed.check(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A peer's server certificate, seen from the member dialing it.
#[derive(Debug)]
pub struct ServerVerifier {
    /// webpki over the peer CA; `None`: any certificate (`--peer-auto-tls`).
    webpki: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
    allowed: Allowed,
}

impl ServerVerifier {
    /// Verifying against `roots`, or nothing at all when `roots` is `None`.
    pub fn new(
        roots: Option<RootCertStore>,
        allowed: Allowed,
        provider: Arc<CryptoProvider>,
    ) -> anyhow::Result<Arc<Self>> {
        let webpki = match roots {
            Some(roots) => Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| anyhow::anyhow!("server certificate verifier: {e}"))?,
            ),
            None => None,
        };
        Ok(Arc::new(Self {
            webpki,
            provider,
            allowed,
        }))
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        let verified = webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        self.allowed.check(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, sans: &[&str]) -> CertificateDer<'static> {
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn allowed_names_are_checked_as_etcd_checks_them() {
        let leaf = cert("member-1", &["m1.example", "10.0.0.1"]);
        assert!(Allowed::Any.check(&leaf).is_ok());
        assert!(Allowed::CommonName("member-1".into()).check(&leaf).is_ok());
        let refused = Allowed::CommonName("member-2".into())
            .check(&leaf)
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "unexpected error: client certificate authentication failed"
        );
        assert!(Allowed::Hostname("m1.example".into()).check(&leaf).is_ok());
        assert!(Allowed::Hostname("10.0.0.1".into()).check(&leaf).is_ok());
        // The common name is not a host name, as in Go since 1.15.
        assert!(Allowed::Hostname("member-1".into()).check(&leaf).is_err());
        assert_eq!(Allowed::from_flags("", "").unwrap(), Allowed::Any);
        assert_eq!(
            Allowed::from_flags("a", "b").unwrap_err().to_string(),
            "AllowedCN and AllowedHostname are mutually exclusive (cn=\"a\", hostname=\"b\")"
        );
    }
}
