//! TLS for `https://` endpoints, as clientv3 and etcdctl set it up: the CA to trust
//! (`--cacert`; without it the system's CAs, as Go uses), a client certificate and key
//! (`--cert`, `--key`), and `--insecure-skip-tls-verify`.
//!
//! rustls with the ring provider through tokio-rustls, in a connector handed to tonic's
//! `Endpoint::connect_with_connector`: tonic's own `ClientTlsConfig` cannot skip server
//! verification, which `--insecure-skip-tls-verify` needs, and one path for both is simpler.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::WebPkiSupportedAlgorithms;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{self, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::Error;

/// rustls's client configuration, as [`TlsConfig::client_config`] builds it.
pub use tokio_rustls::rustls::ClientConfig;

/// Where Debian and its relatives keep the system's CA bundle (Go reads the same file).
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// TLS settings for `https://` endpoints; [`crate::Client::with_tls`] takes one.
#[derive(Clone, Default)]
pub struct TlsConfig {
    ca_pem: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    insecure_skip_verify: bool,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.identity.is_some())
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .finish()
    }
}

impl TlsConfig {
    /// Trusting the system's CAs, with no client certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trust these CA certificates (PEM) instead of the system's.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Present this certificate chain and key (both PEM) when the server asks for one.
    pub fn identity_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.identity = Some((cert.into(), key.into()));
        self
    }

    /// Accept any server certificate (etcdctl's `--insecure-skip-tls-verify`).
    pub fn insecure_skip_verify(mut self, skip: bool) -> Self {
        self.insecure_skip_verify = skip;
        self
    }

    /// etcdctl's `--cacert`, `--cert` and `--key` files (each optional, but cert and key
    /// together), with etcd's error texts.
    pub fn from_files(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Self, Error> {
        let mut config = Self::new();
        match (cert, key) {
            (Some(cert), Some(key)) => config = config.identity_pem(read(cert)?, read(key)?),
            (None, None) => {}
            (cert, key) => {
                return Err(Error::Tls(format!(
                    "KeyFile and CertFile must both be present[key: {}, cert: {}]",
                    key.map(|k| k.display().to_string()).unwrap_or_default(),
                    cert.map(|c| c.display().to_string()).unwrap_or_default(),
                )));
            }
        }
        if let Some(ca) = ca {
            config = config.ca_pem(read(ca)?);
        }
        Ok(config)
    }

    /// The rustls configuration: ALPN h2, TLS 1.2 and 1.3.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?;
        let builder = if self.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServer(
                    provider.signature_verification_algorithms,
                )))
        } else {
            builder.with_root_certificates(self.roots()?)
        };
        let mut config = match &self.identity {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| Error::Tls(format!("client certificate: {e}")))?;
                if chain.is_empty() {
                    return Err(Error::Tls(
                        "tls: failed to find any PEM data in certificate input".into(),
                    ));
                }
                let key = PrivateKeyDer::from_pem_slice(key).map_err(|_| {
                    Error::Tls("tls: failed to find any PEM data in key input".into())
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| Error::Tls(e.to_string()))?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    fn roots(&self) -> Result<RootCertStore, Error> {
        let system;
        let pem = match &self.ca_pem {
            Some(pem) => pem.as_slice(),
            None => {
                system = std::fs::read(SYSTEM_CA_BUNDLE).unwrap_or_default();
                system.as_slice()
            }
        };
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| Error::Tls(format!("CA certificate: {e}")))?;
            // The system bundle may hold certificates webpki refuses; skip those, as Go does.
            if roots.add(cert).is_err() && self.ca_pem.is_some() {
                return Err(Error::Tls("CA certificate: not a valid certificate".into()));
            }
        }
        Ok(roots)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| {
        let text = e.to_string();
        let text = text
            .split(" (os error")
            .next()
            .unwrap_or(&text)
            .to_lowercase();
        Error::Tls(format!("open {}: {text}", path.display()))
    })
}

/// A connection to an endpoint: TLS or plain TCP.
pub type Stream = tokio_util_either::Either<TlsStream<TcpStream>, TcpStream>;

mod tokio_util_either {
    //! A byte stream that is one of two kinds.
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    /// One of two streams.
    pub enum Either<A, B> {
        /// The first kind.
        Left(A),
        /// The second kind.
        Right(B),
    }

    impl<A: AsyncRead + Unpin, B: AsyncRead + Unpin> AsyncRead for Either<A, B> {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            match self.get_mut() {
                Either::Left(a) => Pin::new(a).poll_read(cx, buf),
                Either::Right(b) => Pin::new(b).poll_read(cx, buf),
            }
        }
    }

    impl<A: AsyncWrite + Unpin, B: AsyncWrite + Unpin> AsyncWrite for Either<A, B> {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            match self.get_mut() {
                Either::Left(a) => Pin::new(a).poll_write(cx, buf),
                Either::Right(b) => Pin::new(b).poll_write(cx, buf),
            }
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            match self.get_mut() {
                Either::Left(a) => Pin::new(a).poll_flush(cx),
                Either::Right(b) => Pin::new(b).poll_flush(cx),
            }
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            match self.get_mut() {
                Either::Left(a) => Pin::new(a).poll_shutdown(cx),
                Either::Right(b) => Pin::new(b).poll_shutdown(cx),
            }
        }
    }
}

type ConnectFuture = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<Stream>>> + Send>>;

/// A connector for tonic's `Endpoint::connect_with_connector`: TCP (no delay) to the URI's
/// host and port, then TLS when `tls` is given, naming the URI's host to the server.
pub fn connector(
    tls: Option<Arc<ClientConfig>>,
) -> impl tower::Service<
    http::Uri,
    Response = TokioIo<Stream>,
    Error = std::io::Error,
    Future = ConnectFuture,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |uri: http::Uri| -> ConnectFuture {
        let tls = tls.clone();
        Box::pin(async move {
            let invalid =
                |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m.to_string());
            let host = uri
                .host()
                .ok_or_else(|| invalid("endpoint without a host"))?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(2379);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let Some(tls) = tls else {
                return Ok(TokioIo::new(tokio_util_either::Either::Right(tcp)));
            };
            let name = ServerName::try_from(host).map_err(|e| invalid(&e.to_string()))?;
            let stream = TlsConnector::from(tls).connect(name, tcp).await?;
            Ok(TokioIo::new(tokio_util_either::Either::Left(stream)))
        })
    })
}

/// Accepts any server certificate, still checking that the handshake is signed by its key.
#[derive(Debug)]
struct AnyServer(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
