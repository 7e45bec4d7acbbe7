//! Certificate rotation without a restart. etcd re-reads `--cert-file` / `--key-file` (and
//! the peer pair) on every handshake (`TLSInfo.baseConfig`'s `GetCertificate` and
//! `GetClientCertificate`), so that files replaced on disk are served from the next
//! connection on. [`KeyPairFiles`] does the same for rustls, as the server's certificate
//! resolver and as the peer client's: each handshake stats the two files, and reads and
//! parses them again only when their [`Stamp`] changed.
//!
//! One difference, on purpose: when the new files do not make a usable pair (a half-written
//! replacement, a key that does not match), etcd fails the handshake; raftkv logs it and
//! keeps serving the last good pair until the files change again, so that a rotation done
//! in two steps never takes the member off the network in between.

use std::sync::{Arc, Mutex};

use tokio_rustls::rustls::SignatureScheme;
use tokio_rustls::rustls::client::ResolvesClientCert;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

use super::files::{Stamp, certified_key};

/// A certificate and key read from files, read again when the files change.
#[derive(Debug)]
pub struct KeyPairFiles {
    cert_file: String,
    key_file: String,
    provider: Arc<CryptoProvider>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The files' stamp when last read (whether or not that read gave a usable pair).
    stamp: Stamp,
    /// The last usable pair.
    current: Arc<CertifiedKey>,
}

impl KeyPairFiles {
    /// Reads the pair now: an error (with Go's text) if it is not usable, as etcd checks the
    /// files at start.
    pub fn load(
        cert_file: &str,
        key_file: &str,
        provider: Arc<CryptoProvider>,
    ) -> anyhow::Result<Arc<Self>> {
        let stamp = Stamp::of(&[cert_file, key_file]);
        let current = certified_key(cert_file, key_file, &provider)?;
        Ok(Arc::new(Self {
            cert_file: cert_file.to_string(),
            key_file: key_file.to_string(),
            provider,
            state: Mutex::new(State { stamp, current }),
        }))
    }

    /// The pair to present now: the files' if they changed and make a usable pair, else the
    /// last usable one.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let stamp = Stamp::of(&[&self.cert_file, &self.key_file]);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.stamp != stamp {
            state.stamp = stamp;
            match certified_key(&self.cert_file, &self.key_file, &self.provider) {
                Ok(pair) => {
                    tracing::info!(
                        cert_file = %self.cert_file,
                        key_file = %self.key_file,
                        "certificate files changed; presenting the new certificate"
                    );
                    state.current = pair;
                }
                Err(e) => tracing::warn!(
                    cert_file = %self.cert_file,
                    key_file = %self.key_file,
                    error = %e,
                    "certificate files changed but do not make a usable pair; presenting the previous certificate"
                ),
            }
        }
        state.current.clone()
    }
}

impl ResolvesServerCert for KeyPairFiles {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for KeyPairFiles {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn replaced_files_are_served_from_the_next_handshake_and_broken_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        let (c1, k1) = pair("one.example");
        std::fs::write(&cert, &c1).unwrap();
        std::fs::write(&key, &k1).unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let files =
            KeyPairFiles::load(cert.to_str().unwrap(), key.to_str().unwrap(), provider).unwrap();
        let first = files.current();
        assert!(
            Arc::ptr_eq(&first, &files.current()),
            "cached while unchanged"
        );

        // A new certificate whose key is not written yet: the old pair stays.
        let (c2, k2) = pair("two.example");
        let tmp = dir.path().join("tmp");
        std::fs::write(&tmp, &c2).unwrap();
        std::fs::rename(&tmp, &cert).unwrap();
        assert_eq!(files.current().cert, first.cert);
        // Then the key: the new pair.
        std::fs::write(&tmp, &k2).unwrap();
        std::fs::rename(&tmp, &key).unwrap();
        let second = files.current();
        assert_ne!(second.cert, first.cert);
        assert_eq!(second.cert[0].as_ref(), {
            let der =
                tokio_rustls::rustls::pki_types::CertificateDer::from_pem_slice(c2.as_bytes());
            der.unwrap().as_ref().to_vec()
        });
        // Files gone: the last good pair is still presented.
        std::fs::remove_file(&cert).unwrap();
        assert_eq!(files.current().cert, second.cert);
    }

    use tokio_rustls::rustls::pki_types::pem::PemObject;
}
