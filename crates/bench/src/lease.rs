//! The lease requests behind `lease-keepalive` (etcd `benchmark`'s) and `lease-grant`, run
//! by [`crate::workload::run`] like the KV workloads.
//!
//! A keep-alive is what clientv3's `KeepAliveOnce` sends, which is what etcd's tool times: a
//! `LeaseKeepAlive` stream of its own, one request, the first answer, then the stream is
//! cancelled. An answer with TTL 0 (an unknown or expired lease) counts as an error, as
//! clientv3 turns it into `ErrLeaseNotFound`.

use std::time::Duration;

use raftkv_proto::etcdserverpb::lease_client::LeaseClient;
use raftkv_proto::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest};
use tonic::Status;
use tonic::codegen::tokio_stream::{self, StreamExt};
use tonic::transport::Channel;

/// The TTL etcd's `lease-keepalive` grants each client's lease with, in seconds.
pub const KEEPALIVE_TTL: i64 = 100;

/// clientv3's `ErrLeaseNotFound`, for a keep-alive answered with TTL 0.
const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";

/// Grants a lease of `ttl` seconds with a server-chosen id; returns the id.
pub async fn grant(client: &mut LeaseClient<Channel>, ttl: i64) -> Result<i64, Status> {
    let resp = client
        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
        .await?
        .into_inner();
    if resp.error.is_empty() {
        Ok(resp.id)
    } else {
        Err(Status::unknown(resp.error))
    }
}

/// One keep-alive of lease `id` on a stream of its own; returns the TTL the server granted.
pub async fn keep_alive_once(
    client: &mut LeaseClient<Channel>,
    id: i64,
    timeout: Duration,
) -> Result<i64, Status> {
    // Send one request and keep the sending side open, as clientv3 does: the stream ends
    // when the answer is in and `responses` is dropped (a cancel), not by a half-close.
    let requests = tokio_stream::once(LeaseKeepAliveRequest { id }).chain(tokio_stream::pending());
    let exchange = async {
        let mut responses = client.lease_keep_alive(requests).await?.into_inner();
        responses
            .message()
            .await?
            .ok_or_else(|| Status::unavailable("the keep-alive stream ended without an answer"))
    };
    let resp = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| Status::deadline_exceeded("no keep-alive answer within the timeout"))??;
    ttl_of(resp.ttl)
}

/// clientv3's reading of a keep-alive answer: a TTL of 0 or less means the lease is gone.
fn ttl_of(ttl: i64) -> Result<i64, Status> {
    if ttl > 0 {
        Ok(ttl)
    } else {
        Err(Status::not_found(LEASE_NOT_FOUND))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_ttl_is_clientv3s_lease_not_found() {
        assert_eq!(ttl_of(100).unwrap(), 100);
        for ttl in [0, -1] {
            let err = ttl_of(ttl).unwrap_err();
            assert_eq!(err.code(), tonic::Code::NotFound);
            assert_eq!(err.message(), "etcdserver: requested lease not found");
        }
    }
}
