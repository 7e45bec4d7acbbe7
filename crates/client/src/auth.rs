//! Credentials and tokens, as clientv3 handles them (`client.go`'s `getToken`,
//! `retry_interceptor.go`'s `shouldRefreshToken` / `refreshToken`).
//!
//! - A client with a user name and a password (both non-empty: clientv3 ignores credentials
//!   with either empty) asks `Auth/Authenticate` for a token the first time it connects, and
//!   sends it as the gRPC metadata `token` with every request from then on, streams included.
//!   A server whose authentication is off answers `authentication is not enabled`: the
//!   client then sends no token (and calls go on as they would without credentials).
//! - A call refused with `invalid auth token` or `revision of auth store is old` (or, with
//!   credentials, `user name is empty`) gets a new token and is sent once more, on the same
//!   member; if the new token cannot be had, the call fails with the reason.
//! - Every stream (Watch, LeaseKeepAlive, Snapshot) is opened with a fresh token, as
//!   clientv3's stream interceptor does: a stream cannot be sent again the way a unary call
//!   can, and a token the member forgot (simple tokens expire when unused) would refuse it.
//! - A client without credentials sends no token.
//!
//! The token lives in a [`TokenCache`] that every clone of a client, and every connection it
//! made, share; a generation number keeps concurrent calls that all saw the same token
//! refused from authenticating once each.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use raftkv_proto::etcdserverpb::AuthenticateRequest;
use raftkv_proto::etcdserverpb::auth_client::AuthClient;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::Channel;

use crate::Error;

/// The gRPC metadata key etcd reads a token from (`rpctypes.TokenFieldNameGRPC`).
pub const TOKEN_METADATA_KEY: &str = "token";

/// etcd's `ErrGRPCInvalidAuthToken` (code Unauthenticated).
pub const INVALID_AUTH_TOKEN: &str = "etcdserver: invalid auth token";
/// etcd's `ErrGRPCAuthOldRevision` (code InvalidArgument).
pub const AUTH_OLD_REVISION: &str = "etcdserver: revision of auth store is old";
/// etcd's `ErrGRPCUserEmpty` (code InvalidArgument): a request without a token while
/// authentication is on.
pub const USER_EMPTY: &str = "etcdserver: user name is empty";
/// etcd's `ErrGRPCAuthNotEnabled` (code FailedPrecondition).
pub const AUTH_NOT_ENABLED: &str = "etcdserver: authentication is not enabled";

/// A watch create refused because of its stream's token carries the whole gRPC error text
/// as its cancel reason (etcd's `v3rpc/watch.go`); clientv3 then opens a new stream, with a
/// new token, and sends the create again (`shouldRetryWatch`).
pub(crate) const WATCH_INVALID_AUTH_TOKEN: &str =
    "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token";
/// See [`WATCH_INVALID_AUTH_TOKEN`].
pub(crate) const WATCH_AUTH_OLD_REVISION: &str =
    "rpc error: code = InvalidArgument desc = etcdserver: revision of auth store is old";

/// Whether a watch create's cancel reason asks for a new stream with a new token.
pub(crate) fn is_watch_token_refusal(cancel_reason: &str) -> bool {
    cancel_reason == WATCH_INVALID_AUTH_TOKEN || cancel_reason == WATCH_AUTH_OLD_REVISION
}

/// What a client knows of its token.
#[derive(Clone, PartialEq, Eq)]
enum Token {
    /// Not asked for yet (or the last attempt failed).
    Unknown,
    /// The server's authentication is off: nothing to send.
    NotEnabled,
    /// The token to send.
    Known(String),
}

/// A user's credentials and the token they got; shared by a client's clones and
/// connections.
pub(crate) struct TokenCache {
    user: String,
    password: String,
    /// The token, and a generation bumped each time it is replaced.
    token: RwLock<(Token, u64)>,
    /// Held while authenticating, so that concurrent refreshes make one request.
    authenticating: tokio::sync::Mutex<()>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Which token a call was sent with (see [`TokenCache::generation`]).
pub(crate) type Generation = u64;

impl TokenCache {
    /// A cache for `user` and `password`; `None` when either is empty, as clientv3 then
    /// authenticates not at all.
    pub(crate) fn new(user: &str, password: &str) -> Option<Arc<Self>> {
        if user.is_empty() || password.is_empty() {
            return None;
        }
        Some(Arc::new(Self {
            user: user.to_string(),
            password: password.to_string(),
            token: RwLock::new((Token::Unknown, 0)),
            authenticating: tokio::sync::Mutex::new(()),
        }))
    }

    /// The user name.
    pub(crate) fn user(&self) -> &str {
        &self.user
    }

    fn read(&self) -> (Token, u64) {
        // A poisoned lock only means a panic elsewhere while it was held; the value is whole.
        self.token.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn store(&self, token: Token) {
        let mut slot = self.token.write().unwrap_or_else(|e| e.into_inner());
        slot.1 += 1;
        slot.0 = token;
    }

    /// Whether a token, or the news that authentication is off, is known.
    pub(crate) fn is_settled(&self) -> bool {
        self.read().0 != Token::Unknown
    }

    /// The token to send, if there is one.
    pub(crate) fn token(&self) -> Option<String> {
        match self.read().0 {
            Token::Known(token) => Some(token),
            Token::Unknown | Token::NotEnabled => None,
        }
    }

    /// The generation of the current token: a call that fails because of its token passes
    /// it to [`TokenCache::refresh`].
    pub(crate) fn generation(&self) -> Generation {
        self.read().1
    }

    /// Authenticates through `channel` unless a token (or the news that authentication is
    /// off) is already known: clientv3's `getToken` when it dials.
    pub(crate) async fn ensure(&self, channel: &Channel, timeout: Duration) -> Result<(), Error> {
        if self.is_settled() {
            return Ok(());
        }
        let _one = self.authenticating.lock().await;
        if self.is_settled() {
            return Ok(());
        }
        self.authenticate(channel, timeout).await
    }

    /// A new token after the one of generation `seen` was refused (clientv3's
    /// `refreshToken`), unless another call replaced it meanwhile.
    pub(crate) async fn refresh(
        &self,
        channel: &Channel,
        seen: Generation,
        timeout: Duration,
    ) -> Result<(), Error> {
        let _one = self.authenticating.lock().await;
        if self.generation() != seen {
            return Ok(());
        }
        self.authenticate(channel, timeout).await
    }

    /// A new token, whatever is known: before a stream opens.
    pub(crate) async fn renew(&self, channel: &Channel, timeout: Duration) -> Result<(), Error> {
        let _one = self.authenticating.lock().await;
        self.authenticate(channel, timeout).await
    }

    /// Auth/Authenticate within `timeout`. "Not enabled" is no error: there is no token to
    /// send. On any other failure the old token is dropped (clientv3 clears it too).
    async fn authenticate(&self, channel: &Channel, timeout: Duration) -> Result<(), Error> {
        let request = AuthenticateRequest {
            name: self.user.clone(),
            password: self.password.clone(),
        };
        let mut auth = AuthClient::new(channel.clone());
        let answer = match tokio::time::timeout(timeout, auth.authenticate(request)).await {
            Err(_) => Err(Error::Timeout),
            Ok(Ok(response)) => Ok(Token::Known(response.into_inner().token)),
            Ok(Err(status)) if is(&status, tonic::Code::FailedPrecondition, AUTH_NOT_ENABLED) => {
                Ok(Token::NotEnabled)
            }
            Ok(Err(status)) => Err(Error::Status(status)),
        };
        match answer {
            Ok(token) => {
                self.store(token);
                Ok(())
            }
            Err(e) => {
                self.store(Token::Unknown);
                Err(e)
            }
        }
    }
}

fn is(status: &tonic::Status, code: tonic::Code, message: &str) -> bool {
    status.code() == code && status.message() == message
}

/// What clientv3 does after a call failed with `status` (`shouldRefreshToken`): `None` to
/// give up, `Some(true)` to get a new token and send the call again, `Some(false)` to send it
/// again as it is (a client without credentials told its auth revision is old: nothing to
/// refresh, the member checks again).
pub(crate) fn after_refusal(status: &tonic::Status, has_credentials: bool) -> Option<bool> {
    use tonic::Code::{InvalidArgument, Unauthenticated};
    if is(status, InvalidArgument, USER_EMPTY) {
        return has_credentials.then_some(true);
    }
    if is(status, Unauthenticated, INVALID_AUTH_TOKEN)
        || is(status, InvalidArgument, AUTH_OLD_REVISION)
    {
        return Some(has_credentials);
    }
    None
}

/// Adds the current token, if any, to every request as the metadata `token`.
#[derive(Clone, Default)]
pub struct TokenInterceptor(Option<Arc<TokenCache>>);

impl TokenInterceptor {
    pub(crate) fn new(cache: Option<Arc<TokenCache>>) -> Self {
        Self(cache)
    }
}

impl fmt::Debug for TokenInterceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TokenInterceptor")
            .field(&self.0.as_ref().map(|c| c.user()))
            .finish()
    }
}

impl Interceptor for TokenInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = self.0.as_ref().and_then(|cache| cache.token()) {
            // A token that is not valid metadata (never one etcd makes) is left out: the
            // member then answers as to a request without one.
            if let Ok(value) = MetadataValue::try_from(token.as_str()) {
                request.metadata_mut().insert(TOKEN_METADATA_KEY, value);
            }
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_names_or_passwords_mean_no_credentials() {
        assert!(TokenCache::new("", "pw").is_none());
        assert!(TokenCache::new("root", "").is_none());
        let cache = TokenCache::new("root", "pw").expect("credentials");
        assert_eq!(cache.user(), "root");
        assert_eq!(cache.token(), None);
        assert!(!format!("{cache:?}").contains("pw\""), "{cache:?}");
    }

    #[test]
    fn refusals_that_ask_for_a_new_token() {
        let s = |code, message: &str| tonic::Status::new(code, message);
        let invalid = s(tonic::Code::Unauthenticated, INVALID_AUTH_TOKEN);
        let old = s(tonic::Code::InvalidArgument, AUTH_OLD_REVISION);
        let empty = s(tonic::Code::InvalidArgument, USER_EMPTY);
        assert_eq!(after_refusal(&invalid, true), Some(true));
        assert_eq!(after_refusal(&old, true), Some(true));
        assert_eq!(after_refusal(&empty, true), Some(true));
        assert_eq!(after_refusal(&invalid, false), Some(false));
        assert_eq!(after_refusal(&old, false), Some(false));
        assert_eq!(after_refusal(&empty, false), None);
        let denied = s(
            tonic::Code::PermissionDenied,
            "etcdserver: permission denied",
        );
        assert_eq!(after_refusal(&denied, true), None);
        // The text alone is not enough: etcd's code goes with it.
        let wrong_code = s(tonic::Code::Unknown, INVALID_AUTH_TOKEN);
        assert_eq!(after_refusal(&wrong_code, true), None);
    }

    #[test]
    fn the_interceptor_sends_the_token_it_has() {
        let cache = TokenCache::new("root", "pw").expect("credentials");
        let mut with = TokenInterceptor::new(Some(cache.clone()));
        let sent = with.call(tonic::Request::new(())).expect("intercepted");
        assert!(
            sent.metadata().get(TOKEN_METADATA_KEY).is_none(),
            "no token yet"
        );
        let before = cache.generation();
        cache.store(Token::Known("abc.1".into()));
        assert_ne!(cache.generation(), before);
        let sent = with.call(tonic::Request::new(())).expect("intercepted");
        assert_eq!(sent.metadata().get(TOKEN_METADATA_KEY).unwrap(), "abc.1");
        cache.store(Token::Known("bad\ntoken".into()));
        let sent = with.call(tonic::Request::new(())).expect("intercepted");
        assert!(sent.metadata().get(TOKEN_METADATA_KEY).is_none());
        let mut without = TokenInterceptor::default();
        let sent = without.call(tonic::Request::new(())).expect("intercepted");
        assert!(sent.metadata().is_empty());
    }

    #[test]
    fn watch_refusals_carry_the_whole_grpc_text() {
        assert!(is_watch_token_refusal(WATCH_INVALID_AUTH_TOKEN));
        assert!(is_watch_token_refusal(WATCH_AUTH_OLD_REVISION));
        assert!(!is_watch_token_refusal(
            "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
        ));
        assert!(!is_watch_token_refusal(INVALID_AUTH_TOKEN));
    }
}
