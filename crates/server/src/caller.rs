//! Who is calling: the credentials a request carries, and etcd's rules for turning them into
//! a user (`auth/store.go` `AuthInfoFromCtx`, `AuthInfoFromTLS`).
//!
//! A tower layer on the client port ([`CredentialsLayer`]) reads each request's credentials
//! and runs the request's handler inside a task-local scope holding them, so every path that
//! serves it (gRPC, the JSON gateway, Lock and Election calling the KV code) finds the same
//! caller through [`current`] without threading it through every signature. Streams that
//! outlive their handler (Watch) take their credentials with them when they open.
//!
//! - A token comes in the `token` header (gRPC metadata, as clientv3 sends it) or in
//!   `authorization` (the gateway's `Authorization` header, which grpc-gateway forwards as
//!   that metadata key). etcd looks at `token` first.
//! - Without a token, and only with `--client-cert-auth`, the common name of the verified
//!   client certificate is the user — for gRPC calls only: etcd ignores it on gateway calls.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use raftkv_raft::serve::ConnInfo;
use tokio::task::futures::TaskLocalFuture;

tokio::task_local! {
    static CREDENTIALS: Arc<Credentials>;
}

/// What a request says about its caller, before it is checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The auth token, if the request carried one.
    pub token: Option<String>,
    /// The common name of the client's verified certificate, where etcd would use it.
    pub common_name: Option<String>,
}

/// Longest token accepted from a header (etcd's simple tokens are about 30 bytes; JWTs a
/// few hundred). A longer one is an invalid token.
pub const MAX_TOKEN_BYTES: usize = 8 << 10;

/// The credentials of the request being served (none outside a request, e.g. for what a
/// member does on its own).
pub fn current() -> Arc<Credentials> {
    CREDENTIALS
        .try_with(Arc::clone)
        .unwrap_or_else(|_| Arc::new(Credentials::default()))
}

/// Runs `fut` as a request with `credentials`.
pub fn scope<F: Future>(
    credentials: Arc<Credentials>,
    fut: F,
) -> TaskLocalFuture<Arc<Credentials>, F> {
    CREDENTIALS.scope(credentials, fut)
}

/// `tokio::spawn` for work a request hands off: the task keeps the request's credentials.
pub fn spawn<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(scope(current(), fut))
}

impl Credentials {
    /// The credentials `req` carries. `cert_auth`: whether `--client-cert-auth` is on.
    pub fn of<B>(req: &http::Request<B>, cert_auth: bool) -> Self {
        let headers = req.headers();
        let token = headers
            .get("token")
            .or_else(|| headers.get("authorization"))
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let grpc = headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let common_name = if token.is_none() && cert_auth && grpc {
            req.extensions()
                .get::<ConnInfo>()
                .and_then(|c| c.peer_certificates.as_ref())
                .and_then(|chain| chain.first())
                .and_then(|leaf| common_name(leaf.as_ref()))
        } else {
            None
        };
        Self { token, common_name }
    }
}

/// Wraps every request of a tonic server in the scope of its credentials.
#[derive(Clone, Copy, Debug)]
pub struct CredentialsLayer {
    /// `--client-cert-auth`.
    pub cert_auth: bool,
}

impl<S> tower::Layer<S> for CredentialsLayer {
    type Service = WithCredentials<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WithCredentials {
            inner,
            cert_auth: self.cert_auth,
        }
    }
}

/// The service [`CredentialsLayer`] makes.
#[derive(Clone, Debug)]
pub struct WithCredentials<S> {
    inner: S,
    cert_auth: bool,
}

impl<S, B> tower::Service<http::Request<B>> for WithCredentials<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TaskLocalFuture<Arc<Credentials>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let credentials = Arc::new(Credentials::of(&req, self.cert_auth));
        scope(credentials, self.inner.call(req))
    }
}

/// The subject common name of a DER certificate, as Go's `Subject.CommonName` gives it;
/// `None` if there is none or the certificate does not parse (read by
/// [`crate::tls::x509::common_name`], which `--peer-cert-allowed-cn` uses too).
pub fn common_name(der: &[u8]) -> Option<String> {
    crate::tls::x509::common_name(der)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(dn: rcgen::DistinguishedName) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.distinguished_name = dn;
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_subject_common_name_is_read_and_others_are_not_mistaken_for_it() {
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "org");
        dn.push(rcgen::DnType::CommonName, "alice");
        assert_eq!(common_name(&cert_with(dn)).as_deref(), Some("alice"));
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "only-an-org");
        assert_eq!(common_name(&cert_with(dn)), None);
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, "bób ✓");
        assert_eq!(common_name(&cert_with(dn)).as_deref(), Some("bób ✓"));
    }

    #[test]
    fn damaged_certificates_give_no_name_and_never_panic() {
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, "carol");
        let good = cert_with(dn);
        for cut in 0..good.len() {
            let _ = common_name(&good[..cut]);
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0xff;
            let _ = common_name(&bad);
        }
        assert_eq!(common_name(&[]), None);
        assert_eq!(common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }
}
