//! The gRPC health checking protocol (`grpc.health.v1.Health`) on the client port, as etcd
//! 3.4 serves it: one status, `SERVING`, under the empty service name, set when the client
//! port starts and never changed. `grpc_health_probe` and Kubernetes' `grpc` liveness probes
//! use it. Like etcd's, it needs no credentials; any other service name is unknown.

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use raftkv_proto::grpc_health_v1::health_check_response::ServingStatus;
use raftkv_proto::grpc_health_v1::health_server::Health;
use raftkv_proto::grpc_health_v1::{HealthCheckRequest, HealthCheckResponse};
use tonic::{Request, Response, Status};

/// The health service of one client listener; its watch streams end when `stop` turns true
/// (the member shutting down its client ports).
#[derive(Clone)]
pub struct HealthService {
    stop: tokio::sync::watch::Receiver<bool>,
}

impl HealthService {
    pub fn new(stop: tokio::sync::watch::Receiver<bool>) -> Self {
        Self { stop }
    }
}

/// The status of `service`: `None` for a name this server does not know.
fn status_of(service: &str) -> Option<ServingStatus> {
    service.is_empty().then_some(ServingStatus::Serving)
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        match status_of(&req.get_ref().service) {
            Some(status) => Ok(Response::new(HealthCheckResponse {
                status: status as i32,
            })),
            None => Err(Status::not_found("unknown service")),
        }
    }

    type WatchStream = WatchStream;

    /// The current status (`SERVICE_UNKNOWN` for a name it does not know), then nothing more
    /// — the status never changes — until the client goes away or the member stops.
    async fn watch(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let status = status_of(&req.get_ref().service).unwrap_or(ServingStatus::ServiceUnknown);
        let first = futures_util::stream::once(async move {
            Ok(HealthCheckResponse {
                status: status as i32,
            })
        });
        let mut stop = self.stop.clone();
        let until_stop = futures_util::stream::once(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .filter_map(|()| async { None });
        Ok(Response::new(Box::pin(first.chain(until_stop))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_the_empty_name_only() {
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let health = HealthService::new(stop);
        let ask = |service: &str| HealthCheckRequest {
            service: service.into(),
        };
        let ok = health.check(Request::new(ask(""))).await.unwrap();
        assert_eq!(ok.get_ref().status, ServingStatus::Serving as i32);
        let unknown = health
            .check(Request::new(ask("etcdserverpb.KV")))
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);
        assert_eq!(unknown.message(), "unknown service");
        let mut watch = health
            .watch(Request::new(ask("x")))
            .await
            .unwrap()
            .into_inner();
        let first = watch.next().await.unwrap().unwrap();
        assert_eq!(first.status, ServingStatus::ServiceUnknown as i32);
        // Nothing more until the member stops; then the stream ends.
        let more = tokio::time::timeout(std::time::Duration::from_millis(50), watch.next()).await;
        assert!(more.is_err(), "a second message: {more:?}");
        stop_tx.send(true).unwrap();
        assert!(watch.next().await.is_none());
    }
}
