//! Serving a port to untrusted clients or peers without letting them exhaust the member.
//!
//! Both the client port (etcd API) and the peer port go through this:
//!
//! - [`raise_open_file_limit`] lifts the soft descriptor limit to the hard one at start (etcd
//!   does the same): the common soft limit of 1,024 let 1,100 idle connections lock every
//!   client out.
//! - [`incoming`] is the accept loop. An accept error (out of descriptors, say) is logged and
//!   waited out instead of ending — or spinning — the server; connections beyond
//!   [`ServeLimits::max_connections`] are closed at once, keeping descriptors for the WAL and
//!   the store; a connection must send its HTTP/2 preface within
//!   [`ServeLimits::handshake_timeout`]. [`client_incoming`] is the same loop for the client
//!   port, whose connections also go through [`crate::h2_authority`] (Go clients send a URL
//!   as `:authority`, which h2 refuses). With a TLS config ([`client_incoming_tls`],
//!   [`peer_incoming`]) each connection's TLS handshake (and the port's [`TlsAccept::check`]
//!   of the peer it authenticated) runs beside the accept loop — a slow handshake holds up no
//!   other connection — within the same handshake timeout, and the `:authority` repair reads
//!   the decrypted bytes.
//! - [`MessageBudget`] wraps every request body. tonic reserves a gRPC message's announced
//!   length as soon as it reads the 5-byte frame header, so 1,000 requests that announced
//!   2 MB and sent a little grew a member by 2 GB. The wrapper holds a message back until all
//!   of it has arrived (so tonic only ever reserves for bytes that exist), counts the bytes of
//!   every incomplete message against one budget for the whole port (when it is spent, bodies
//!   are not read and HTTP/2 flow control stops their senders), and fails a message that takes
//!   longer than [`ServeLimits::message_timeout`] to arrive.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::stream::FuturesUnordered;
use futures_util::{Stream, StreamExt};
use http_body::{Body as HttpBody, Frame};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tonic::body::Body;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::h2_authority::Rewriter;

/// The gRPC message header: a compression flag and a big-endian u32 length.
const GRPC_HEADER: usize = 5;
/// The content type of a TLS record that opens a handshake (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// The HTTP/2 connection preface plus the SETTINGS frame header every client sends first.
const HANDSHAKE_BYTES: usize = 24 + 9;
/// Bytes of incomplete messages each connection may hold outside the port's budget, so that
/// clients whose requests are small keep being served while the budget is spent.
const CONNECTION_ALLOWANCE: usize = 64 << 10;
/// Descriptors kept for the member's own files (WAL, store, snapshots) and peer links when
/// the connection cap is derived from the descriptor limit.
const RESERVED_FDS: u64 = 256;

/// Limits for one served port.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// Open connections beyond this are closed as soon as they are accepted.
    pub max_connections: usize,
    /// How long a new connection has to send its HTTP/2 preface.
    pub handshake_timeout: Duration,
    /// How long one gRPC message may take to arrive once its first byte has.
    pub message_timeout: Duration,
    /// Bytes of incomplete messages held at once, over all connections of the port.
    pub budget_bytes: usize,
    /// The largest message the port's services decode (larger ones are passed through for
    /// tonic to refuse, never buffered).
    pub max_message: usize,
}

impl ServeLimits {
    /// Limits for a port whose largest message is `max_message` bytes, under the process's
    /// current descriptor limit.
    pub fn new(max_message: usize) -> Self {
        Self {
            max_connections: connection_cap(),
            handshake_timeout: Duration::from_secs(10),
            message_timeout: Duration::from_secs(30),
            // Room for many ordinary requests and several of the largest at once.
            budget_bytes: (128 << 20).max(4 * max_message),
            max_message,
        }
    }
}

/// Raises the soft limit on open files to the hard limit, as etcd does at start; returns
/// the soft limit in force afterwards.
pub fn raise_open_file_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit.rlim_cur = limit.rlim_max;
    }
    Ok(limit.rlim_cur)
}

/// Connections a port may hold: the descriptor limit less what the member needs for itself.
fn connection_cap() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed in.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        1024
    };
    usize::try_from(soft.saturating_sub(RESERVED_FDS).max(64)).unwrap_or(usize::MAX)
}

/// Logs at most one line per second for a recurring condition, with how often it happened.
struct Throttled {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttled {
    fn new() -> Self {
        Self {
            last: None,
            suppressed: 0,
        }
    }

    /// Whether to log now; returns how many occurrences were not logged since.
    fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// The accepted connections of `listener`, for tonic's `serve_with_incoming`: never ends and
/// never yields an error (see the module docs). `port` names the port in log lines.
pub fn incoming(
    listener: TcpListener,
    limits: &ServeLimits,
    port: &'static str,
) -> impl Stream<Item = Result<Conn, io::Error>> + Send + 'static {
    accept_loop(listener, limits, port, false, None)
}

/// [`incoming`] for the client port: each connection's HTTP/2 `:authority` is also repaired
/// ([`crate::h2_authority`]).
pub fn client_incoming(
    listener: TcpListener,
    limits: &ServeLimits,
) -> impl Stream<Item = Result<Conn, io::Error>> + Send + 'static {
    accept_loop(listener, limits, "client", true, None)
}

/// [`client_incoming`] over TLS when `tls` is given: only connections whose handshake
/// succeeds (within the handshake timeout) are yielded; a failed one is logged at debug
/// level and closed, as Go's server does (etcd does not log handshake errors either).
pub fn client_incoming_tls(
    listener: TcpListener,
    limits: &ServeLimits,
    tls: Option<TlsAccept>,
) -> impl Stream<Item = Result<Conn, io::Error>> + Send + 'static {
    accept_loop(listener, limits, "client", true, tls)
}

/// [`incoming`] for the peer port, over TLS when `tls` is given (as
/// [`client_incoming_tls`], without the `:authority` repair): a peer whose handshake or
/// [`TlsAccept::check`] fails is closed before any of its bytes reach the peer service.
pub fn peer_incoming(
    listener: TcpListener,
    limits: &ServeLimits,
    tls: Option<TlsAccept>,
) -> impl Stream<Item = Result<Conn, io::Error>> + Send + 'static {
    accept_loop(listener, limits, "peer", false, tls)
}

/// A check of a TLS peer after its handshake: its certificate chain (leaf first; empty if it
/// presented none) and its address; `Err` with the reason closes the connection.
pub type HandshakeCheck = Arc<
    dyn Fn(
            Vec<rustls::pki_types::CertificateDer<'static>>,
            std::net::SocketAddr,
        ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

/// TLS on a served port: the rustls configuration for the handshakes, and an optional check
/// of each handshake's peer (etcd's check of a peer certificate's SANs against the peer's
/// address).
#[derive(Clone)]
pub struct TlsAccept {
    /// The server configuration (certificate, client-certificate verifier, ALPN).
    pub config: Arc<rustls::ServerConfig>,
    /// Run after a successful handshake, within the handshake timeout.
    pub check: Option<HandshakeCheck>,
}

impl std::fmt::Debug for TlsAccept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAccept")
            .field("alpn", &self.config.alpn_protocols)
            .field("check", &self.check.is_some())
            .finish()
    }
}

impl From<Arc<rustls::ServerConfig>> for TlsAccept {
    fn from(config: Arc<rustls::ServerConfig>) -> Self {
        Self {
            config,
            check: None,
        }
    }
}

type Handshake = Pin<Box<dyn Future<Output = Option<Conn>> + Send>>;

fn accept_loop(
    listener: TcpListener,
    limits: &ServeLimits,
    port: &'static str,
    fix_authority: bool,
    tls: Option<TlsAccept>,
) -> impl Stream<Item = Result<Conn, io::Error>> + Send + 'static {
    struct State {
        listener: TcpListener,
        open: Arc<AtomicUsize>,
        max: usize,
        handshake: Duration,
        accept_errors: Throttled,
        refusals: Throttled,
        tls: Option<(TlsAcceptor, Option<HandshakeCheck>)>,
        /// TLS handshakes under way (at most one per open connection, so bounded by the cap).
        handshakes: FuturesUnordered<Handshake>,
    }
    let state = State {
        listener,
        open: Arc::new(AtomicUsize::new(0)),
        max: limits.max_connections,
        handshake: limits.handshake_timeout,
        accept_errors: Throttled::new(),
        refusals: Throttled::new(),
        tls: tls.map(|t| (TlsAcceptor::from(t.config), t.check)),
        handshakes: FuturesUnordered::new(),
    };
    futures_util::stream::unfold(state, move |mut s| async move {
        loop {
            let accepted = tokio::select! {
                Some(done) = s.handshakes.next(), if !s.handshakes.is_empty() => {
                    match done {
                        Some(conn) => return Some((Ok(conn), s)),
                        None => continue,
                    }
                }
                accepted = s.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => {
                    if s.open.load(Ordering::Relaxed) >= s.max {
                        if let Some(more) = s.refusals.due() {
                            tracing::warn!(
                                port,
                                open = s.max,
                                refused_since_last_line = more,
                                "too many open connections; closing new ones"
                            );
                        }
                        continue;
                    }
                    // serve_with_incoming does not apply the builder's tcp_nodelay: without
                    // it, Nagle's algorithm meets delayed ACKs and small replies wait 40 ms.
                    let _ = stream.set_nodelay(true);
                    let slot = Slot::new(s.open.clone());
                    let deadline = Instant::now() + s.handshake;
                    let Some((acceptor, check)) = s.tls.clone() else {
                        let conn = Conn::new(Io::Plain(stream), slot, deadline, fix_authority);
                        return Some((Ok(conn), s));
                    };
                    s.handshakes.push(Box::pin(async move {
                        let peer = stream.peer_addr().ok();
                        // Not a TLS handshake record (plain HTTP, say): closed without an
                        // alert, as Go's crypto/tls does (curl then reports an empty reply
                        // rather than an HTTP/0.9 answer).
                        let mut first = [0u8; 1];
                        let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut first));
                        if !matches!(peeked.await, Ok(Ok(1))) || first[0] != TLS_HANDSHAKE_RECORD {
                            tracing::debug!(port, ?peer, "not a TLS handshake");
                            // Read what arrived (as Go's record reader has) so that closing
                            // sends a FIN, not a reset.
                            let _ = stream.try_read(&mut [0u8; 4096]);
                            return None;
                        }
                        match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => {
                                if let Some(check) = check {
                                    let Some(peer) = peer else {
                                        return None; // no address to check the certificate against
                                    };
                                    let chain = tls
                                        .get_ref()
                                        .1
                                        .peer_certificates()
                                        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                                        .unwrap_or_default();
                                    match tokio::time::timeout_at(deadline, check(chain, peer)).await {
                                        Ok(Ok(())) => {}
                                        Ok(Err(reason)) => {
                                            tracing::debug!(port, ?peer, %reason, "TLS peer refused after the handshake");
                                            return None;
                                        }
                                        Err(_) => {
                                            tracing::debug!(port, ?peer, "TLS peer check timed out");
                                            return None;
                                        }
                                    }
                                }
                                let io = Io::Tls(Box::new(tls));
                                Some(Conn::new(io, slot, deadline, fix_authority))
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(port, ?peer, error = %e, "TLS handshake failed");
                                None
                            }
                            Err(_) => {
                                tracing::debug!(port, ?peer, "TLS handshake timed out");
                                None
                            }
                        }
                    }));
                }
                Err(e) => {
                    if let Some(more) = s.accept_errors.due() {
                        tracing::warn!(port, error = %e, failed_since_last_line = more, "accepting a connection failed");
                    }
                    // Out of descriptors or memory: give closing connections time instead of
                    // spinning on the same error.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
}

/// One open connection of a port, counted until dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn new(open: Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self(open)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The bytes of a connection: TCP, or TLS over TCP.
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Io {
    fn tcp(&self) -> &TcpStream {
        match self {
            Io::Plain(s) => s,
            Io::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// An accepted connection: counted while open, and closed if it does not start talking
/// HTTP/2 within the handshake timeout.
pub struct Conn {
    stream: Io,
    _slot: Slot,
    allowance: Arc<Semaphore>,
    /// Handshake bytes still expected, and the deadline for them.
    handshake: Option<(usize, Pin<Box<Sleep>>)>,
    /// The `:authority` repair, on the client port.
    authority: Option<Box<Rewriter>>,
}

impl Conn {
    fn new(stream: Io, slot: Slot, deadline: Instant, fix_authority: bool) -> Self {
        Self {
            stream,
            _slot: slot,
            allowance: Arc::new(Semaphore::new(CONNECTION_ALLOWANCE)),
            handshake: Some((
                HANDSHAKE_BYTES,
                Box::pin(tokio::time::sleep_until(deadline)),
            )),
            authority: fix_authority.then(Box::default),
        }
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Io::Tls(_))
    }
}

/// What tonic records about a connection in each of its requests: the TCP addresses, and the
/// connection's own allowance for incomplete messages.
#[derive(Clone)]
pub struct ConnInfo {
    /// Local and remote addresses.
    pub tcp: TcpConnectInfo,
    /// The client's certificate chain, leaf first, when it presented one over TLS (verified
    /// by the handshake against the trusted CA).
    pub peer_certificates: Option<Arc<Vec<rustls::pki_types::CertificateDer<'static>>>>,
    allowance: Arc<Semaphore>,
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        let peer_certificates = match &self.stream {
            Io::Tls(s) => s
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| Arc::new(c.iter().map(|c| c.clone().into_owned()).collect())),
            Io::Plain(_) => None,
        };
        ConnInfo {
            tcp: self.stream.tcp().connect_info(),
            peer_certificates,
            allowance: self.allowance.clone(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = match &mut this.authority {
            Some(rewriter) => rewriter.poll_read(Pin::new(&mut this.stream), cx, buf),
            None => Pin::new(&mut this.stream).poll_read(cx, buf),
        };
        match polled {
            Poll::Ready(Ok(())) => {
                if let Some((left, _)) = &mut this.handshake {
                    *left = left.saturating_sub(buf.filled().len() - before);
                    if *left == 0 {
                        this.handshake = None;
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = match &mut this.handshake {
                    Some((_, deadline)) => deadline.as_mut().poll(cx).is_ready(),
                    None => false,
                };
                if expired {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no HTTP/2 preface in time",
                    )));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The byte budget of one port's incomplete request messages (see the module docs).
#[derive(Clone)]
pub struct MessageBudget {
    permits: Arc<Semaphore>,
    max_message: usize,
    timeout: Duration,
}

impl MessageBudget {
    /// A budget as `limits` say.
    pub fn new(limits: &ServeLimits) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(
                limits.budget_bytes.min(Semaphore::MAX_PERMITS),
            )),
            max_message: limits.max_message,
            timeout: limits.message_timeout,
        }
    }

    /// Bytes of the budget not in use.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// Wraps a request body whose connection is not known (no allowance of its own).
    pub fn wrap(&self, inner: Body) -> Body {
        self.wrap_with(inner, None)
    }

    /// Wraps a request body that came on a connection with `allowance` (if known).
    fn wrap_with(&self, inner: Body, allowance: Option<Arc<Semaphore>>) -> Body {
        Body::new(Budgeted {
            inner,
            budget: self.clone(),
            allowance,
            ready: VecDeque::new(),
            partial: VecDeque::new(),
            partial_len: 0,
            expected: None,
            held: Vec::new(),
            waiting: None,
            deadline: None,
            passthrough: false,
            finished: false,
        })
    }

    /// A tower layer that wraps every request body of a tonic server.
    pub fn layer(
        &self,
    ) -> tower::util::MapRequestLayer<
        impl Fn(http::Request<Body>) -> http::Request<Body> + Clone + use<>,
    > {
        let budget = self.clone();
        tower::util::MapRequestLayer::new(move |req: http::Request<Body>| {
            let allowance = req
                .extensions()
                .get::<ConnInfo>()
                .map(|info| info.allowance.clone());
            req.map(|body| budget.wrap_with(body, allowance))
        })
    }
}

type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// A request body that releases gRPC messages only once they are complete (see the module
/// docs).
struct Budgeted {
    inner: Body,
    budget: MessageBudget,
    /// The connection's own allowance, used before the port's budget.
    allowance: Option<Arc<Semaphore>>,
    /// Bytes ready for tonic: whole messages, or anything after a header tonic will refuse.
    ready: VecDeque<Bytes>,
    /// The message being received, in the chunks it came in.
    partial: VecDeque<Bytes>,
    partial_len: usize,
    /// Its whole length (header included), once the header has arrived.
    expected: Option<usize>,
    /// The budget and allowance held for `partial`.
    held: Vec<OwnedSemaphorePermit>,
    /// A chunk that arrived while the budget was spent, and the wait for its share.
    waiting: Option<(Bytes, Acquire)>,
    /// When the message being received must be complete.
    deadline: Option<Pin<Box<Sleep>>>,
    /// After a message larger than tonic accepts, bytes go straight through.
    passthrough: bool,
    /// The inner body has ended.
    finished: bool,
}

impl Budgeted {
    /// Takes in a chunk whose share of the budget is `permit`.
    fn accept(&mut self, chunk: Bytes, permit: OwnedSemaphorePermit) {
        if self.partial_len == 0 && self.deadline.is_none() {
            self.deadline = Some(Box::pin(tokio::time::sleep(self.budget.timeout)));
        }
        self.partial_len += chunk.len();
        self.partial.push_back(chunk);
        match self
            .held
            .iter_mut()
            .find(|h| Arc::ptr_eq(h.semaphore(), permit.semaphore()))
        {
            Some(held) => held.merge(permit),
            None => self.held.push(permit),
        }
        self.release_complete();
    }

    /// Moves every complete message from `partial` to `ready`, returning its share of the
    /// budget.
    fn release_complete(&mut self) {
        loop {
            if self.expected.is_none() && self.partial_len >= GRPC_HEADER {
                let mut header = [0u8; GRPC_HEADER];
                let mut filled = 0;
                for chunk in &self.partial {
                    let n = (GRPC_HEADER - filled).min(chunk.len());
                    header[filled..filled + n].copy_from_slice(&chunk[..n]);
                    filled += n;
                    if filled == GRPC_HEADER {
                        break;
                    }
                }
                let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
                if len > self.budget.max_message {
                    // tonic refuses it from the header alone: hand everything over as it
                    // comes, holding nothing.
                    self.passthrough = true;
                    self.ready.extend(self.partial.drain(..));
                    self.partial_len = 0;
                    self.held.clear();
                    self.deadline = None;
                    return;
                }
                self.expected = Some(GRPC_HEADER + len);
            }
            let Some(expected) = self.expected.filter(|&e| self.partial_len >= e) else {
                return;
            };
            let mut left = expected;
            while left > 0 {
                let Some(mut chunk) = self.partial.pop_front() else {
                    break;
                };
                if chunk.len() > left {
                    let rest = chunk.split_off(left);
                    self.partial.push_front(rest);
                }
                left -= chunk.len();
                self.ready.push_back(chunk);
            }
            self.partial_len -= expected;
            self.give_back(expected);
            self.expected = None;
            self.deadline = if self.partial_len == 0 {
                None
            } else {
                Some(Box::pin(tokio::time::sleep(self.budget.timeout)))
            };
        }
    }

    /// Returns `bytes` of what is held, the port's budget first.
    fn give_back(&mut self, mut bytes: usize) {
        self.held
            .sort_by_key(|h| !Arc::ptr_eq(h.semaphore(), &self.budget.permits));
        for held in &mut self.held {
            let n = bytes.min(held.num_permits());
            drop(held.split(n));
            bytes -= n;
        }
        self.held.retain(|h| h.num_permits() > 0);
    }

    /// A share of `n` bytes: from the connection's allowance if it has room, else from the
    /// port's budget; `Err` with a wait for whichever frees up first if neither has.
    fn share(&self, n: u32) -> Result<OwnedSemaphorePermit, Acquire> {
        if let Some(permit) = self
            .allowance
            .as_ref()
            .and_then(|a| a.clone().try_acquire_many_owned(n).ok())
        {
            return Ok(permit);
        }
        if let Ok(permit) = self.budget.permits.clone().try_acquire_many_owned(n) {
            return Ok(permit);
        }
        let budget = self.budget.permits.clone().acquire_many_owned(n);
        Err(match self.allowance.clone() {
            Some(allowance) => Box::pin(async move {
                tokio::select! {
                    p = allowance.acquire_many_owned(n) => p,
                    p = budget => p,
                }
            }),
            None => Box::pin(budget),
        })
    }

    fn timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline
            .as_mut()
            .is_some_and(|d| d.as_mut().poll(cx).is_ready())
    }
}

fn message_timeout() -> tonic::Status {
    tonic::Status::deadline_exceeded("raftkv: request message not received in time")
}

impl HttpBody for Budgeted {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        loop {
            if let Some(chunk) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if let Some((_, acquire)) = &mut this.waiting {
                match acquire.as_mut().poll(cx) {
                    Poll::Ready(Ok(permit)) => {
                        let (chunk, _) = this.waiting.take().expect("checked above");
                        this.accept(chunk, permit);
                        continue;
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(Some(Err(message_timeout()))),
                    Poll::Pending if this.timed_out(cx) => {
                        return Poll::Ready(Some(Err(message_timeout())));
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            if this.finished {
                // An incomplete message at the end: tonic reports it as such.
                if this.partial_len > 0 {
                    this.ready.extend(this.partial.drain(..));
                    this.partial_len = 0;
                    this.held.clear();
                    continue;
                }
                return Poll::Ready(None);
            }
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => {
                    if this.timed_out(cx) {
                        return Poll::Ready(Some(Err(message_timeout())));
                    }
                    return Poll::Pending;
                }
                Poll::Ready(None) => {
                    this.finished = true;
                    continue;
                }
                Poll::Ready(Some(frame)) => ready!(Poll::Ready(frame))?,
            };
            let chunk = match frame.into_data() {
                Ok(chunk) => chunk,
                // Trailers: after the data, as they came.
                Err(frame) => return Poll::Ready(Some(Ok(frame))),
            };
            if this.passthrough || chunk.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            let n = u32::try_from(chunk.remaining()).unwrap_or(u32::MAX);
            match this.share(n) {
                Ok(permit) => this.accept(chunk, permit),
                Err(acquire) => {
                    if this.partial_len == 0 && this.deadline.is_none() {
                        this.deadline = Some(Box::pin(tokio::time::sleep(this.budget.timeout)));
                    }
                    this.waiting = Some((chunk, acquire));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished && self.ready.is_empty() && self.partial.is_empty() && self.waiting.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn limits(budget: usize) -> ServeLimits {
        ServeLimits {
            max_connections: 16,
            handshake_timeout: Duration::from_secs(1),
            message_timeout: Duration::from_millis(200),
            budget_bytes: budget,
            max_message: 1 << 20,
        }
    }

    fn message(len: usize, fill: u8) -> Vec<u8> {
        let mut out = vec![0u8];
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.resize(GRPC_HEADER + len, fill);
        out
    }

    /// A body that yields `chunks`, then stays open (`hang`) or ends.
    fn body_of(chunks: Vec<Bytes>, hang: bool) -> Body {
        use futures_util::StreamExt;
        let frames = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, tonic::Status>(Frame::data(c))),
        );
        let rest = if hang {
            futures_util::stream::pending().boxed()
        } else {
            futures_util::stream::empty().boxed()
        };
        Body::new(http_body_util::StreamBody::new(frames.chain(rest)))
    }

    #[tokio::test]
    async fn messages_pass_whole_in_any_chunking() {
        let budget = MessageBudget::new(&limits(1 << 20));
        let mut all = message(1000, 1);
        all.extend(message(0, 0));
        all.extend(message(70_000, 2));
        for size in [1, 3, 5, 7, 4096, all.len()] {
            let chunks: Vec<Bytes> = all.chunks(size).map(Bytes::copy_from_slice).collect();
            let out = budget
                .wrap(body_of(chunks, false))
                .collect()
                .await
                .expect("complete")
                .to_bytes();
            assert_eq!(out, all, "chunks of {size}");
            assert_eq!(budget.available(), 1 << 20, "budget returned");
        }
    }

    #[tokio::test]
    async fn an_announced_message_is_held_back_until_it_arrives() {
        let budget = MessageBudget::new(&limits(1 << 20));
        let half = message(100_000, 7)[..50_000].to_vec();
        let mut body = budget.wrap(body_of(vec![Bytes::from(half)], true));
        let first = tokio::time::timeout(
            Duration::from_millis(50),
            std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)),
        )
        .await;
        assert!(
            first.is_err(),
            "nothing may reach tonic before the message is whole"
        );
        assert_eq!(budget.available(), (1 << 20) - 50_000);
        // And it is given up on after the message timeout, returning its share.
        let end = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(matches!(end, Some(Err(s)) if s.code() == tonic::Code::DeadlineExceeded));
        drop(body);
        assert_eq!(budget.available(), 1 << 20);
    }

    #[tokio::test]
    async fn a_spent_budget_stops_reading_until_it_is_returned() {
        let budget = MessageBudget::new(&limits(64 * 1024));
        let held = budget.wrap(body_of(
            vec![Bytes::from(message(200_000, 1)[..60_000].to_vec())],
            true,
        ));
        // tonic keeps polling a body while it waits for a message; so does this task.
        let first = tokio::spawn(held.collect());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(budget.available(), 64 * 1024 - 60_000);
        // A second sender has to wait for budget; it completes once the first gives up.
        let whole = message(10_000, 3);
        let second = budget.wrap(body_of(vec![Bytes::from(whole.clone())], false));
        let out = second.collect().await.expect("completes").to_bytes();
        assert_eq!(out, whole);
        assert!(first.await.expect("joined").is_err(), "the first timed out");
    }

    #[tokio::test]
    async fn a_connection_allowance_serves_small_requests_while_the_budget_is_spent() {
        let budget = MessageBudget::new(&limits(64 * 1024));
        let hog = budget.wrap(body_of(
            vec![Bytes::from(message(200_000, 1)[..64 * 1024].to_vec())],
            true,
        ));
        let _hog = tokio::spawn(hog.collect());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(budget.available(), 0);
        let allowance = Arc::new(Semaphore::new(CONNECTION_ALLOWANCE));
        let small = message(100, 5);
        let body = budget.wrap_with(
            body_of(vec![Bytes::from(small.clone())], false),
            Some(allowance.clone()),
        );
        let out = tokio::time::timeout(Duration::from_millis(100), body.collect())
            .await
            .expect("served without waiting for the budget")
            .expect("complete");
        assert_eq!(out.to_bytes(), small);
        assert_eq!(allowance.available_permits(), CONNECTION_ALLOWANCE);
    }

    #[tokio::test]
    async fn an_oversized_announcement_is_passed_through_unbuffered() {
        let budget = MessageBudget::new(&limits(1 << 20));
        let mut big = vec![0u8];
        big.extend_from_slice(&(10u32 << 20).to_be_bytes());
        big.extend_from_slice(&[9; 100]);
        let mut body = budget.wrap(body_of(vec![Bytes::from(big.clone())], true));
        let frame = body.frame().await.expect("a frame").expect("data");
        assert_eq!(frame.into_data().expect("data"), big);
        assert_eq!(budget.available(), 1 << 20);
    }
}
