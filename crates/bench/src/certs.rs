//! Certificates for `compare --tls`, made with rcgen at the start of the run in a temporary
//! directory that is removed with it (no key outlives the run): a CA, one member certificate
//! for 127.0.0.1 and localhost that every member serves on both ports and presents when it
//! dials a peer, and a client certificate for the workloads.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The PEM files of one run.
pub struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    /// Writes `ca.crt`, `member.crt/key` (server and client use, SANs 127.0.0.1 and
    /// localhost) and `client.crt/key` (client use, CN "bench").
    pub fn make() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("raftkv-bench-certs-")
            .tempdir()?;
        let write = |name: &str, text: String| {
            std::fs::write(dir.path().join(name), text).with_context(|| format!("writing {name}"))
        };
        let ca = ca()?;
        write("ca.crt", ca.pem())?;
        let (cert, key) = leaf(
            &ca,
            "member",
            &["127.0.0.1", "localhost"],
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )?;
        write("member.crt", cert)?;
        write("member.key", key)?;
        let (cert, key) = leaf(&ca, "bench", &[], &[ExtendedKeyUsagePurpose::ClientAuth])?;
        write("client.crt", cert)?;
        write("client.key", key)?;
        Ok(Self { dir })
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// etcd's member flags for TLS with certificate authentication on the client and peer
    /// ports (the URLs must be `https://`).
    pub fn member_flags(&self) -> Vec<String> {
        let (ca, cert, key) = (
            self.file("ca.crt"),
            self.file("member.crt"),
            self.file("member.key"),
        );
        vec![
            format!("--cert-file={}", cert.display()),
            format!("--key-file={}", key.display()),
            format!("--trusted-ca-file={}", ca.display()),
            "--client-cert-auth".into(),
            format!("--peer-cert-file={}", cert.display()),
            format!("--peer-key-file={}", key.display()),
            format!("--peer-trusted-ca-file={}", ca.display()),
            "--peer-client-cert-auth".into(),
        ]
    }

    /// The workloads' TLS: trust the CA, present the client certificate.
    pub fn client_config(&self) -> Result<Arc<raftkv_client::tls::ClientConfig>> {
        let tls = raftkv_client::TlsConfig::from_files(
            Some(&self.file("ca.crt")),
            Some(&self.file("client.crt")),
            Some(&self.file("client.key")),
        )?;
        Ok(tls.client_config()?)
    }
}

fn ca() -> Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "raftkv-bench CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

/// A certificate and its key (both PEM) signed by `issuer`.
fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    cn: &str,
    sans: &[&str],
    usages: &[ExtendedKeyUsagePurpose],
) -> Result<(String, String)> {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = usages.to_vec();
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_load_and_flags_name_them() {
        let certs = Certs::make().unwrap();
        certs.client_config().unwrap();
        let flags = certs.member_flags();
        for flag in flags.iter().filter(|f| f.contains('=')) {
            let path = flag.split_once('=').unwrap().1;
            assert!(std::path::Path::new(path).is_file(), "{flag}");
        }
        assert!(flags.contains(&"--client-cert-auth".to_string()));
        assert!(flags.contains(&"--peer-client-cert-auth".to_string()));
        let dir = certs.dir.path().to_path_buf();
        drop(certs);
        assert!(!dir.exists(), "the keys go with the run");
    }
}
