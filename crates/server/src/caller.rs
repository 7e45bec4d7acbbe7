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

/// The subject common name of a DER certificate (the first CN attribute, as Go's
/// `Subject.CommonName`), read with bounds on every length; `None` if there is none or the
/// certificate does not parse.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (cert, _) = Der::new(der).next(0x30)?;
    let (mut tbs, _) = cert.next(0x30)?;
    // [0] EXPLICIT version, if present.
    if tbs.peek() == Some(0xa0) {
        tbs = tbs.next(0xa0)?.1;
    }
    let (_, tbs) = tbs.next(0x02)?; // serialNumber
    let (_, tbs) = tbs.next(0x30)?; // signature
    let (_, tbs) = tbs.next(0x30)?; // issuer
    let (_, tbs) = tbs.next(0x30)?; // validity
    let (mut subject, _) = tbs.next(0x30)?;
    // Name: SEQUENCE OF SET OF AttributeTypeAndValue.
    while !subject.is_empty() {
        let (mut set, rest) = subject.next(0x31)?;
        subject = rest;
        while !set.is_empty() {
            let (atv, rest) = set.next(0x30)?;
            set = rest;
            let (oid, value) = atv.next(0x06)?;
            if oid.0 == [0x55, 0x04, 0x03] {
                let tag = value.peek()?;
                let (text, _) = value.next(tag)?;
                return match tag {
                    // UTF8String, PrintableString, IA5String, TeletexString (as Latin-1 is
                    // not worth guessing, only when it is ASCII).
                    0x0c | 0x13 | 0x16 | 0x14 => {
                        std::str::from_utf8(text.0).ok().map(str::to_string)
                    }
                    // BMPString: UTF-16BE.
                    0x1e if text.0.len() % 2 == 0 => {
                        let units: Vec<u16> = text
                            .0
                            .chunks_exact(2)
                            .map(|c| u16::from_be_bytes([c[0], c[1]]))
                            .collect();
                        String::from_utf16(&units).ok()
                    }
                    _ => None,
                };
            }
        }
    }
    None
}

/// A DER cursor: the bytes not read yet.
#[derive(Clone, Copy)]
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self(bytes)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }

    /// The contents of the next element if its tag is `tag`, and what follows it.
    fn next(self, tag: u8) -> Option<(Der<'a>, Der<'a>)> {
        let (&t, rest) = self.0.split_first()?;
        if t != tag {
            return None;
        }
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let mut len = 0usize;
            for &b in &rest[..n] {
                len = (len << 8) | usize::from(b);
            }
            rest = &rest[n..];
            len
        };
        if rest.len() < len {
            return None;
        }
        let (content, after) = rest.split_at(len);
        Some((Der(content), Der(after)))
    }
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
