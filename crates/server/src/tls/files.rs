//! Reading TLS files as etcd reads them (Go's `tls.LoadX509KeyPair`, `tlsutil.NewCertPool`,
//! `x509.ParseCRL`), with Go's error texts, and the [`Stamp`] that tells whether a file
//! changed since it was read.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::bail;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer,
};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, RootCertStore};

/// What identifies one version of a set of files: for each, its device, inode, size and
/// change and modification times (ns). A file replaced by a rename gets a new inode; one
/// rewritten in place a new ctime. `None` in a slot: the file could not be stat'ed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp(Vec<Option<[i64; 7]>>);

impl Stamp {
    /// The stamp of `paths` now.
    pub fn of(paths: &[&str]) -> Self {
        Self(
            paths
                .iter()
                .map(|p| {
                    std::fs::metadata(p).ok().map(|m| {
                        [
                            m.dev() as i64,
                            m.ino() as i64,
                            m.size() as i64,
                            m.mtime(),
                            m.mtime_nsec(),
                            m.ctime(),
                            m.ctime_nsec(),
                        ]
                    })
                })
                .collect(),
        )
    }
}

/// The certificate chain and key of `cert_file` and `key_file` as one signing identity,
/// read as Go's `tls.LoadX509KeyPair` does (cert file first), with its error texts.
pub fn certified_key(
    cert_file: &str,
    key_file: &str,
    provider: &CryptoProvider,
) -> anyhow::Result<Arc<CertifiedKey>> {
    let (chain, key) = key_pair(cert_file, key_file)?;
    CertifiedKey::from_der(chain, key, provider)
        .map(Arc::new)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                anyhow::anyhow!("tls: private key does not match public key")
            }
            other => anyhow::anyhow!("tls: {other}"),
        })
}

/// The PEM certificate chain and private key of a key pair.
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

/// The CA certificates of a trusted-CA file (PEM). Go would accept a file without any
/// certificate (and then trust nothing); raftkv says so at start instead.
pub fn trusted_cas(file: &str) -> anyhow::Result<RootCertStore> {
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

/// The revocation lists of a CRL file: PEM `X509 CRL` blocks, or one DER-encoded list (Go's
/// `x509.ParseCRL` takes either).
pub fn crls(file: &str) -> anyhow::Result<Vec<CertificateRevocationListDer<'static>>> {
    let bytes = read(file)?;
    if !bytes.starts_with(b"-----BEGIN") {
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    let lists = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{file}: x509: {e}"))?;
    if lists.is_empty() {
        bail!("{file}: x509: no CRL found (expected PEM \"X509 CRL\" blocks or DER)");
    }
    Ok(lists)
}

/// Reads a file, with Go's error text (`open <path>: no such file or directory`).
pub fn read(path: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(Path::new(path)).map_err(|e| anyhow::anyhow!("{}", go_io_error(path, &e)))
}

/// Writes a file readable by its owner only (etcd writes its self-signed files 0600).
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
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

/// An I/O error as Go's `os` package words it: the operation, the path, and the lower-case
/// system message.
pub fn go_io_error(path: &str, e: &std::io::Error) -> String {
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
    fn go_words_io_errors() {
        assert_eq!(
            go_io_error("/d", &std::io::Error::from_raw_os_error(libc::EISDIR)),
            "read /d: is a directory"
        );
        assert_eq!(
            read("/nonexistent/x").unwrap_err().to_string(),
            "open /nonexistent/x: no such file or directory"
        );
    }

    #[test]
    fn a_stamp_changes_when_a_file_is_replaced_or_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, "one").unwrap();
        let path = a.to_str().unwrap();
        let first = Stamp::of(&[path]);
        assert_eq!(first, Stamp::of(&[path]));
        // Replaced by a rename: a new inode, whatever the times.
        let b = dir.path().join("b");
        std::fs::write(&b, "two").unwrap();
        std::fs::rename(&b, &a).unwrap();
        let second = Stamp::of(&[path]);
        assert_ne!(first, second);
        std::fs::remove_file(&a).unwrap();
        assert_eq!(Stamp::of(&[path]), Stamp(vec![None]));
    }

    #[test]
    fn garbage_is_refused_with_gos_words() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage");
        std::fs::write(&garbage, b"\x00\x01not pem").unwrap();
        let g = garbage.to_str().unwrap();
        let provider = rustls::crypto::ring::default_provider();
        assert_eq!(
            certified_key(g, g, &provider).unwrap_err().to_string(),
            "tls: failed to find any PEM data in certificate input"
        );
        assert!(
            trusted_cas(g)
                .unwrap_err()
                .to_string()
                .contains("no CA certificate found")
        );
        std::fs::write(&garbage, b"-----BEGIN X509 CRL-----\nnot base64\n").unwrap();
        assert!(crls(g).is_err());
    }
}
