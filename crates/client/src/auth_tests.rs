//! The token logic of [`crate::auth`] against a tiny etcd of its own: a tonic server with
//! etcd's Auth, KV, Watch and Lease services that checks the `token` metadata as etcd does
//! (no token while auth is on: `user name is empty`; an unknown one: `invalid auth token`)
//! and can forget its tokens, refuse a request once, or refuse watch creates the way etcd's
//! watch server does.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::Stream;
use raftkv_proto::etcdserverpb::auth_server::{Auth, AuthServer};
use raftkv_proto::etcdserverpb::kv_server::{Kv, KvServer};
use raftkv_proto::etcdserverpb::lease_server::{Lease, LeaseServer};
use raftkv_proto::etcdserverpb::watch_server::{Watch, WatchServer};
use raftkv_proto::etcdserverpb::*;
use raftkv_proto::mvccpb::KeyValue;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::{
    AUTH_NOT_ENABLED, AUTH_OLD_REVISION, INVALID_AUTH_TOKEN, USER_EMPTY, WATCH_INVALID_AUTH_TOKEN,
};
use crate::{Client, Error, WatchOptions};

const USER: &str = "root";
const PASSWORD: &str = "secret";
const AUTH_FAILED: &str = "etcdserver: authentication failed, invalid user ID or password";

/// What the fake etcd knows and has seen.
#[derive(Default)]
struct State {
    /// Authentication is on.
    enabled: AtomicBool,
    /// Tokens it accepts.
    valid: Mutex<HashSet<String>>,
    /// Authenticate requests answered with a token.
    tokens_issued: AtomicUsize,
    /// Authenticate requests, whatever their answer.
    authenticates: AtomicUsize,
    /// Every request's (or stream's) token, in order, with its method.
    seen: Mutex<Vec<(&'static str, Option<String>)>>,
    /// The next request that passes the token check (if any) fails with this instead.
    refuse_next: Mutex<Option<Status>>,
    /// Every token the fake issues is forgotten at once (a token refused every time).
    forget_every_token: AtomicBool,
    /// Watch creates to refuse with etcd's invalid-token cancel reason.
    refuse_watch_creates: AtomicUsize,
}

#[derive(Clone, Default)]
struct Fake(Arc<State>);

fn header() -> Option<ResponseHeader> {
    Some(ResponseHeader {
        cluster_id: 1,
        member_id: 1,
        revision: 1,
        raft_term: 1,
    })
}

impl Fake {
    /// etcd's check of a request's token (`AuthInfoFromCtx` and the permission check).
    fn check(
        &self,
        method: &'static str,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<(), Status> {
        let token = metadata
            .get(crate::auth::TOKEN_METADATA_KEY)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.0.seen.lock().unwrap().push((method, token.clone()));
        if self.0.enabled.load(Ordering::SeqCst) {
            match token {
                None => return Err(Status::invalid_argument(USER_EMPTY)),
                Some(t) if !self.0.valid.lock().unwrap().contains(&t) => {
                    return Err(Status::unauthenticated(INVALID_AUTH_TOKEN));
                }
                Some(_) => {}
            }
        }
        match self.0.refuse_next.lock().unwrap().take() {
            Some(status) => Err(status),
            None => Ok(()),
        }
    }

    fn authenticate(&self, request: AuthenticateRequest) -> Result<AuthenticateResponse, Status> {
        self.0.authenticates.fetch_add(1, Ordering::SeqCst);
        if !self.0.enabled.load(Ordering::SeqCst) {
            return Err(Status::failed_precondition(AUTH_NOT_ENABLED));
        }
        if request.name != USER || request.password != PASSWORD {
            return Err(Status::invalid_argument(AUTH_FAILED));
        }
        let n = self.0.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
        let token = format!("token{n}.{n}");
        if !self.0.forget_every_token.load(Ordering::SeqCst) {
            self.0.valid.lock().unwrap().insert(token.clone());
        }
        Ok(AuthenticateResponse {
            header: header(),
            token,
        })
    }

    fn forget_tokens(&self) {
        self.0.valid.lock().unwrap().clear();
    }

    fn seen(&self) -> Vec<(&'static str, Option<String>)> {
        self.0.seen.lock().unwrap().clone()
    }

    fn authenticates(&self) -> usize {
        self.0.authenticates.load(Ordering::SeqCst)
    }
}

macro_rules! auth_service {
    ($($name:ident: $req:ident => $resp:ident),* $(,)?) => {
        #[tonic::async_trait]
        impl Auth for Fake {
            async fn authenticate(
                &self,
                request: Request<AuthenticateRequest>,
            ) -> Result<Response<AuthenticateResponse>, Status> {
                self.authenticate(request.into_inner()).map(Response::new)
            }
            $(
                async fn $name(&self, _: Request<$req>) -> Result<Response<$resp>, Status> {
                    Err(Status::unimplemented(stringify!($name)))
                }
            )*
        }
    };
}

auth_service! {
    auth_enable: AuthEnableRequest => AuthEnableResponse,
    auth_disable: AuthDisableRequest => AuthDisableResponse,
    user_add: AuthUserAddRequest => AuthUserAddResponse,
    user_get: AuthUserGetRequest => AuthUserGetResponse,
    user_list: AuthUserListRequest => AuthUserListResponse,
    user_delete: AuthUserDeleteRequest => AuthUserDeleteResponse,
    user_change_password: AuthUserChangePasswordRequest => AuthUserChangePasswordResponse,
    user_grant_role: AuthUserGrantRoleRequest => AuthUserGrantRoleResponse,
    user_revoke_role: AuthUserRevokeRoleRequest => AuthUserRevokeRoleResponse,
    role_add: AuthRoleAddRequest => AuthRoleAddResponse,
    role_get: AuthRoleGetRequest => AuthRoleGetResponse,
    role_list: AuthRoleListRequest => AuthRoleListResponse,
    role_delete: AuthRoleDeleteRequest => AuthRoleDeleteResponse,
    role_grant_permission: AuthRoleGrantPermissionRequest => AuthRoleGrantPermissionResponse,
    role_revoke_permission: AuthRoleRevokePermissionRequest => AuthRoleRevokePermissionResponse,
}

#[tonic::async_trait]
impl Kv for Fake {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        self.check("range", request.metadata())?;
        let key = request.into_inner().key;
        Ok(Response::new(RangeResponse {
            header: header(),
            kvs: vec![KeyValue {
                key,
                value: "v".into(),
                ..Default::default()
            }],
            count: 1,
            ..Default::default()
        }))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.check("put", request.metadata())?;
        Ok(Response::new(PutResponse {
            header: header(),
            prev_kv: None,
        }))
    }

    async fn delete_range(
        &self,
        _: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Err(Status::unimplemented("delete_range"))
    }

    async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Err(Status::unimplemented("txn"))
    }

    async fn compact(
        &self,
        _: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        Err(Status::unimplemented("compact"))
    }
}

type Answers<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for Fake {
    type WatchStream = Answers<WatchResponse>;

    /// etcd's watch server as far as tokens go: the stream's token is checked at each
    /// create, and a refused create is answered created + canceled with the whole gRPC error
    /// text as its reason.
    async fn watch(
        &self,
        request: Request<tonic::Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let metadata = request.metadata().clone();
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let fake = self.clone();
        tokio::spawn(async move {
            let mut next_id = 0;
            while let Ok(Some(request)) = requests.message().await {
                let Some(watch_request::RequestUnion::CreateRequest(_)) = request.request_union
                else {
                    continue;
                };
                let refuse = fake
                    .0
                    .refuse_watch_creates
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let answer = match fake.check("watch", &metadata) {
                    Ok(()) if !refuse => {
                        next_id += 1;
                        WatchResponse {
                            header: header(),
                            watch_id: next_id,
                            created: true,
                            ..Default::default()
                        }
                    }
                    _ => WatchResponse {
                        header: header(),
                        watch_id: -1,
                        created: true,
                        canceled: true,
                        cancel_reason: WATCH_INVALID_AUTH_TOKEN.into(),
                        ..Default::default()
                    },
                };
                if tx.send(Ok(answer)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl Lease for Fake {
    type LeaseKeepAliveStream = Answers<LeaseKeepAliveResponse>;

    async fn lease_keep_alive(
        &self,
        request: Request<tonic::Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        self.check("lease_keep_alive", request.metadata())?;
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok(Some(request)) = requests.message().await {
                let answer = LeaseKeepAliveResponse {
                    header: header(),
                    id: request.id,
                    ttl: 10,
                };
                if tx.send(Ok(answer)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_grant(
        &self,
        _: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        Err(Status::unimplemented("lease_grant"))
    }

    async fn lease_revoke(
        &self,
        _: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        Err(Status::unimplemented("lease_revoke"))
    }

    async fn lease_time_to_live(
        &self,
        _: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        Err(Status::unimplemented("lease_time_to_live"))
    }

    async fn lease_leases(
        &self,
        _: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        Err(Status::unimplemented("lease_leases"))
    }
}

/// A running fake on a loopback port below Linux's ephemeral range (as the cluster
/// fixture picks them); stopped when dropped.
struct Server {
    fake: Fake,
    endpoint: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

async fn listener() -> tokio::net::TcpListener {
    use std::sync::atomic::AtomicU32;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 12_000 + (std::process::id() % 1_000) * 16;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::SeqCst) % 16_000;
        let port = 12_000 + (port - 12_000) % 18_000;
        if let Ok(listener) = tokio::net::TcpListener::bind(("127.0.0.1", port as u16)).await {
            return listener;
        }
    }
}

async fn serve(auth_enabled: bool) -> Server {
    let fake = Fake::default();
    fake.0.enabled.store(auth_enabled, Ordering::SeqCst);
    let listener = listener().await;
    let endpoint = listener.local_addr().expect("bound").to_string();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let (stop, stopped) = oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        .add_service(AuthServer::new(fake.clone()))
        .add_service(KvServer::new(fake.clone()))
        .add_service(WatchServer::new(fake.clone()))
        .add_service(LeaseServer::new(fake.clone()));
    let task = tokio::spawn(async move {
        let _ = router
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stopped.await;
            })
            .await;
    });
    Server {
        fake,
        endpoint,
        stop: Some(stop),
        task,
    }
}

fn client(server: &Server) -> Client {
    Client::new([server.endpoint.clone()])
        .with_timeouts(Duration::from_secs(2), Duration::from_secs(5))
}

/// The token of every request the fake saw, in order ("-" for none).
fn tokens(server: &Server) -> Vec<String> {
    let seen = server.fake.seen();
    seen.into_iter()
        .map(|(_, t)| t.unwrap_or_else(|| "-".into()))
        .collect()
}

#[tokio::test]
async fn a_client_without_credentials_sends_no_token() {
    let server = serve(false).await;
    let client = client(&server);
    client.put("k", "v").await.expect("put");
    client.get("k").await.expect("get");
    assert_eq!(tokens(&server), vec!["-", "-"]);
    assert_eq!(server.fake.authenticates(), 0);
    // With authentication on, the member says who is missing.
    server.fake.0.enabled.store(true, Ordering::SeqCst);
    let err = client.get("k").await.expect_err("no token");
    assert_eq!(err.to_string(), USER_EMPTY);
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument));
    assert_eq!(server.fake.authenticates(), 0);
}

#[tokio::test]
async fn the_token_goes_with_every_call() {
    let server = serve(true).await;
    let client = client(&server).with_credentials(USER, PASSWORD);
    assert_eq!(client.user(), Some(USER));
    client.put("k", "v").await.expect("put");
    let clone = client.clone();
    clone.get("k").await.expect("get");
    // One Authenticate for both: clones share the token.
    assert_eq!(server.fake.authenticates(), 1);
    assert_eq!(tokens(&server), vec!["token1.1", "token1.1"]);
}

#[tokio::test]
async fn streams_open_under_a_new_token() {
    let server = serve(true).await;
    let client = client(&server).with_credentials(USER, PASSWORD);
    let watch = client.watch("k", WatchOptions::new()).await.expect("watch");
    assert!(watch.created().created);
    let mut keep_alive = client.lease_keep_alive(7).await.expect("keep-alive");
    let answer = keep_alive
        .next()
        .await
        .expect("an answer")
        .expect("renewed");
    assert_eq!((answer.id, answer.ttl), (7, 10));
    // The first connection's token, then one for each stream (clientv3's stream
    // interceptor).
    assert_eq!(server.fake.authenticates(), 3);
    let seen = server.fake.seen();
    let methods: Vec<&str> = seen.iter().map(|(m, _)| *m).collect();
    assert_eq!(methods, vec!["watch", "lease_keep_alive"]);
    assert_eq!(
        tokens(&server),
        vec!["token2.2", "token3.3"],
        "each stream carries the token got for it"
    );
}

#[tokio::test]
async fn a_forgotten_token_is_replaced_and_the_call_sent_again() {
    let server = serve(true).await;
    let client = client(&server).with_credentials(USER, PASSWORD);
    client.get("k").await.expect("get");
    server.fake.forget_tokens(); // as a restarted member or an expired simple token
    let kv = client.get("k").await.expect("answered after a new token");
    assert_eq!(kv.map(|kv| kv.key), Some("k".into()));
    assert_eq!(server.fake.authenticates(), 2);
    let seen = tokens(&server);
    assert_eq!(seen, vec!["token1.1", "token1.1", "token2.2"]);
    // Writes are sent again too: the member refused them before doing anything.
    server.fake.forget_tokens();
    client.put("k", "v2").await.expect("put after a new token");
    assert_eq!(server.fake.authenticates(), 3);
}

#[tokio::test]
async fn a_token_refused_again_fails_the_call() {
    let server = serve(true).await;
    server
        .fake
        .0
        .forget_every_token
        .store(true, Ordering::SeqCst);
    let client = client(&server).with_credentials(USER, PASSWORD);
    let err = client.get("k").await.expect_err("refused twice");
    assert_eq!(err.to_string(), INVALID_AUTH_TOKEN);
    assert_eq!(err.code(), Some(tonic::Code::Unauthenticated));
    // Sent twice, one new token between: once, not in a loop.
    assert_eq!(server.fake.seen().len(), 2);
    assert_eq!(server.fake.authenticates(), 2);
}

#[tokio::test]
async fn an_old_auth_revision_gets_a_new_token() {
    let server = serve(true).await;
    let client = client(&server).with_credentials(USER, PASSWORD);
    client.get("k").await.expect("get");
    *server.fake.0.refuse_next.lock().unwrap() = Some(Status::invalid_argument(AUTH_OLD_REVISION));
    client.put("k", "v").await.expect("put, sent again");
    assert_eq!(server.fake.authenticates(), 2);
    let seen = tokens(&server);
    assert_eq!(seen, vec!["token1.1", "token1.1", "token2.2"]);
}

#[tokio::test]
async fn without_credentials_an_old_auth_revision_is_sent_again_as_it_is() {
    let server = serve(false).await;
    let client = client(&server);
    // The auth store moved on while the request waited (etcd answers this to clients
    // authenticated by certificate too): nothing to refresh, the same request again.
    *server.fake.0.refuse_next.lock().unwrap() = Some(Status::invalid_argument(AUTH_OLD_REVISION));
    client.put("k", "v").await.expect("sent again");
    assert_eq!(tokens(&server), vec!["-", "-"]);
    assert_eq!(server.fake.authenticates(), 0);
    // `invalid auth token` alike; `user name is empty` is final without credentials.
    *server.fake.0.refuse_next.lock().unwrap() = Some(Status::unauthenticated(INVALID_AUTH_TOKEN));
    client.get("k").await.expect("sent again");
    *server.fake.0.refuse_next.lock().unwrap() = Some(Status::invalid_argument(USER_EMPTY));
    let err = client.get("k").await.expect_err("final");
    assert_eq!(err.to_string(), USER_EMPTY);
    assert_eq!(server.fake.seen().len(), 5);
}

#[tokio::test]
async fn a_wrong_password_fails_before_any_call() {
    let server = serve(true).await;
    let client = client(&server).with_credentials(USER, "wrong");
    let err = client.authenticate().await.expect_err("refused");
    assert_eq!(err.to_string(), AUTH_FAILED);
    let err = client.get("k").await.expect_err("refused");
    assert_eq!(err.to_string(), AUTH_FAILED);
    assert!(server.fake.seen().is_empty(), "no KV request was sent");
}

#[tokio::test]
async fn credentials_are_not_used_while_auth_is_off_until_a_member_asks() {
    let server = serve(false).await;
    let client = client(&server).with_credentials(USER, PASSWORD);
    client
        .authenticate()
        .await
        .expect("not enabled is no error");
    client.get("k").await.expect("get");
    client.get("k").await.expect("get");
    assert_eq!(tokens(&server), vec!["-", "-"]);
    assert_eq!(server.fake.authenticates(), 1, "asked once, not per call");
    // Authentication turned on meanwhile: `user name is empty` makes the client get a token.
    server.fake.0.enabled.store(true, Ordering::SeqCst);
    client.get("k").await.expect("get with a token");
    assert_eq!(server.fake.authenticates(), 2);
    let seen = tokens(&server);
    assert_eq!(seen[2..], ["-", "token1.1"]);
}

#[tokio::test]
async fn concurrent_refusals_of_one_token_make_one_authenticate() {
    let server = serve(true).await;
    let client = client(&server).with_credentials(USER, PASSWORD);
    client.get("k").await.expect("get");
    server.fake.forget_tokens();
    let gets: Vec<_> = (0..8)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.get(format!("k{i}")).await })
        })
        .collect();
    for get in gets {
        get.await.expect("task").expect("answered");
    }
    assert_eq!(
        server.fake.authenticates(),
        2,
        "one new token for all of them"
    );
}

#[tokio::test]
async fn a_watch_refused_for_its_token_is_created_again_on_a_new_stream() {
    let server = serve(true).await;
    let client = client(&server).with_credentials(USER, PASSWORD);
    server
        .fake
        .0
        .refuse_watch_creates
        .store(1, Ordering::SeqCst);
    let watch = client.watch("k", WatchOptions::new()).await.expect("watch");
    assert!(watch.created().created && !watch.created().canceled);
    // Connection, first stream, second stream.
    assert_eq!(server.fake.authenticates(), 3);
    let seen = tokens(&server);
    assert_eq!(seen, vec!["token2.2", "token3.3"]);
}

#[tokio::test]
async fn a_watch_refused_twice_in_a_row_is_refused() {
    let server = serve(true).await;
    let client = client(&server).with_credentials(USER, PASSWORD);
    server
        .fake
        .0
        .refuse_watch_creates
        .store(2, Ordering::SeqCst);
    match client.watch("k", WatchOptions::new()).await {
        Err(Error::WatchCanceled { reason }) => assert_eq!(reason, WATCH_INVALID_AUTH_TOKEN),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a watch refused twice was created"),
    }
    assert_eq!(
        server.fake.seen().len(),
        2,
        "created again once, not in a loop"
    );
}
