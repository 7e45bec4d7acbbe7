//! etcd's access control for the HTTP/1.1 side of the client port (`--cors`,
//! `--host-whitelist`), as etcd 3.4 wraps its HTTP handlers (embed/serve.go's
//! `accessController`); gRPC requests pass untouched, as they never reach etcd's wrapper.
//!
//! - A request whose `Host` is not on `--host-whitelist` is refused with 421 and etcd's
//!   DNS-rebinding explanation; as etcd, only on connections without TLS (a TLS client has
//!   checked the server's name already).
//! - CORS headers go on every answer when `--cors` allows any origin (`*`, the default), or
//!   when it names the request's `Origin`.
//! - `OPTIONS` on any path is answered 200 with no body (a browser's preflight).
//! - A path no HTTP route serves gets Go's `404 page not found` (tonic's fallback would
//!   answer it as a gRPC call).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{HeaderValue, Method, StatusCode, header};

/// The parsed `--cors` and `--host-whitelist` lists (empty or `*`: everything allowed).
#[derive(Debug, Clone, Default)]
pub struct Access {
    origins: Vec<String>,
    hosts: Vec<String>,
    /// The listener serves TLS: `Host` is not checked.
    secure: bool,
}

impl Access {
    /// From the flags' comma-separated values.
    pub fn new(cors: &str, host_whitelist: &str) -> Self {
        let list = |s: &str| {
            s.split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .collect()
        };
        Self {
            origins: list(cors),
            hosts: list(host_whitelist),
            secure: false,
        }
    }

    /// The same lists, for a listener that serves TLS (`true`) or not.
    pub fn secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        allowed(&self.origins, origin)
    }

    fn host_allowed(&self, host: &str) -> bool {
        allowed(&self.hosts, host)
    }
}

fn allowed(list: &[String], value: &str) -> bool {
    list.is_empty() || list.iter().any(|v| v == "*" || v == value)
}

/// The access control as a tower layer of the client port's server: a gRPC request goes
/// straight to the inner service (no box, no copy of its future), an HTTP one is checked.
#[derive(Clone)]
pub struct AccessLayer(pub Arc<Access>);

impl<S> tower::Layer<S> for AccessLayer {
    type Service = AccessService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessService {
            inner,
            access: self.0.clone(),
        }
    }
}

/// See [`AccessLayer`].
#[derive(Clone)]
pub struct AccessService<S> {
    inner: S,
    access: Arc<Access>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type TonicResponse = http::Response<tonic::body::Body>;

impl<S> tower::Service<http::Request<tonic::body::Body>> for AccessService<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = TonicResponse>,
    S::Future: Send + 'static,
{
    type Response = TonicResponse;
    type Error = S::Error;
    type Future =
        futures_util::future::Either<S::Future, BoxFuture<Result<TonicResponse, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let grpc = req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if grpc {
            return futures_util::future::Either::Left(self.inner.call(req));
        }
        let (cors, refusal) = match self.access.check(&req) {
            Ok(cors) => (cors, None),
            Err(refusal) => (None, Some(refusal)),
        };
        let preflight = req.method() == Method::OPTIONS;
        let fut = (refusal.is_none() && !preflight).then(|| self.inner.call(req));
        futures_util::future::Either::Right(Box::pin(async move {
            let resp = match (refusal, fut) {
                (Some(host), _) => {
                    crate::http::go_error(StatusCode::MISDIRECTED_REQUEST, &rebinding_text(&host))
                        .map(tonic::body::Body::new)
                }
                (None, None) => http::Response::new(tonic::body::Body::empty()),
                (None, Some(fut)) => {
                    let resp = fut.await?;
                    // No HTTP route took it, so tonic's fallback answered as to a gRPC call:
                    // etcd's HTTP mux answers Go's 404 instead.
                    let grpc_answer = resp
                        .headers()
                        .get(header::CONTENT_TYPE)
                        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
                    if grpc_answer {
                        crate::http::go_error(StatusCode::NOT_FOUND, "404 page not found")
                            .map(tonic::body::Body::new)
                    } else {
                        resp
                    }
                }
            };
            Ok(with_cors(resp, cors))
        }))
    }
}

impl Access {
    /// The CORS origin to answer with, or the host refused (not on the whitelist).
    fn check<B>(&self, req: &http::Request<B>) -> Result<Option<HeaderValue>, String> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let host = hostname(&host);
        if !self.secure && !self.host_allowed(host) {
            tracing::warn!(
                host,
                "rejecting HTTP request to prevent DNS rebinding attacks"
            );
            return Err(host.to_string());
        }
        Ok(if self.origin_allowed("*") {
            Some(HeaderValue::from_static("*"))
        } else {
            req.headers()
                .get(header::ORIGIN)
                .filter(|o| o.to_str().is_ok_and(|o| self.origin_allowed(o)))
                .cloned()
        })
    }
}

fn with_cors<B>(mut resp: http::Response<B>, cors: Option<HeaderValue>) -> http::Response<B> {
    if let Some(origin) = cors {
        let headers = resp.headers_mut();
        headers.append(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
        );
        headers.append(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.append(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("accept, content-type, authorization"),
        );
    }
    resp
}

/// The host of a `Host` value without its port, as Go's `net.SplitHostPort` splits it (a
/// value it cannot split is taken whole).
fn hostname(host: &str) -> &str {
    crate::go_values::split_host_port(host).map_or(host, |(name, _)| name)
}

/// etcd's answer to a host not on the whitelist (Go's `%q` of the host).
fn rebinding_text(host: &str) -> String {
    let quoted = serde_json::to_string(host).unwrap_or_default();
    format!(
        "\netcd received your request, but the Host header was unrecognized.\n\n\
         To fix this, choose one of the following options:\n\
         - Enable TLS, then any HTTPS request will be allowed.\n\
         - Add the hostname you want to use to the whitelist in settings.\n  \
         - e.g. etcd --host-whitelist {quoted}\n\n\
         This requirement has been added to help prevent \"DNS Rebinding\" attacks (CVE-2018-5702).\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_split_as_go_splits_them() {
        for (value, want) in [
            ("127.0.0.1:2379", "127.0.0.1"),
            ("localhost", "localhost"),
            ("example.com:80", "example.com"),
            ("[::1]:2379", "::1"),
            ("[::1]", "[::1]"),
            ("::1", "::1"),
            ("", ""),
        ] {
            assert_eq!(hostname(value), want, "{value}");
        }
    }

    #[test]
    fn lists_allow_everything_when_empty_or_starred() {
        assert!(Access::new("", "").origin_allowed("http://x"));
        assert!(Access::new("*", "*").host_allowed("x"));
        let a = Access::new("http://a.example, http://b.example", "a.example,localhost");
        assert!(a.origin_allowed("http://b.example"));
        assert!(!a.origin_allowed("http://c.example"));
        assert!(!a.origin_allowed("*"));
        assert!(a.host_allowed("localhost"));
        assert!(!a.host_allowed("127.0.0.1"));
    }
}
