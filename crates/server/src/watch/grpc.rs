//! The `etcdserverpb.Watch` gRPC service, written out here rather than generated: the
//! generated one sends `WatchResponse`s, which would make every watcher's answer encode its
//! events again, where [`WatchAnswer`] sends events shared by many watchers as encoded once.
//! The wire is the same: same path, same request decoding (the bounded codec every other
//! service uses), and answers byte-for-byte as the `WatchResponse` they stand for.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use raftkv_proto::codec::BoundedCodec;
use raftkv_proto::etcdserverpb::WatchRequest;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, StdError};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};

use super::answer::WatchAnswer;
use crate::api::EtcdApi;

/// The Watch service of a member's client port.
#[derive(Clone)]
pub struct WatchService {
    api: Arc<EtcdApi>,
    max_decoding_message_size: usize,
}

impl WatchService {
    /// Serves `api`'s watches; a request over `max_decoding_message_size` bytes ends its
    /// stream with gRPC's resource-exhausted status, as for every other service.
    pub fn new(api: EtcdApi, max_decoding_message_size: usize) -> Self {
        Self {
            api: Arc::new(api),
            max_decoding_message_size,
        }
    }
}

impl NamedService for WatchService {
    const NAME: &'static str = "etcdserverpb.Watch";
}

type Answers = tokio_stream::wrappers::ReceiverStream<Result<WatchAnswer, Status>>;

/// One call of the Watch method.
struct WatchCall(Arc<EtcdApi>);

impl StreamingService<WatchRequest> for WatchCall {
    type Response = WatchAnswer;
    type ResponseStream = Answers;
    type Future = BoxFuture<Response<Answers>, Status>;

    fn call(&mut self, request: Request<Streaming<WatchRequest>>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move {
            // clientv3's WithRequireLeader (etcdctl sets it): etcd's "no leader" at once
            // when the member has none, and later if it loses it for good.
            let require_leader = crate::services::require_leader(&api, request.metadata())?;
            let answers = api.watch_answers(request.into_inner(), require_leader);
            Ok(Response::new(Answers::new(answers)))
        })
    }
}

impl<B> tower::Service<http::Request<B>> for WatchService
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let api = self.api.clone();
        let max_decoding = self.max_decoding_message_size;
        if req.uri().path() != "/etcdserverpb.Watch/Watch" {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        Box::pin(async move {
            let mut grpc = Grpc::new(BoundedCodec::<WatchAnswer, WatchRequest>::default())
                .apply_max_message_size_config(Some(max_decoding), None);
            Ok(grpc.streaming(WatchCall(api), req).await)
        })
    }
}
