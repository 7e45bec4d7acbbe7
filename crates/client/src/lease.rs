//! Leases: etcd's `Lease` service, typed, with clientv3's readings of its answers.
//!
//! - [`Client::lease_grant`], [`Client::lease_revoke`], [`Client::lease_time_to_live`],
//!   [`Client::lease_leases`] — the unary calls, with the failover their kind allows (grant
//!   and revoke are writes, time-to-live and the list are reads).
//! - [`Client::lease_keep_alive_once`] — one renewal, as clientv3's `KeepAliveOnce`: a TTL
//!   of 0 in the answer (the lease expired or was revoked) is etcd's
//!   `etcdserver: requested lease not found`.
//! - [`LeaseKeepAlive`] — a keep-alive stream to one member, from
//!   [`Client::lease_keep_alive`] (opened with a first renewal): send renewals, receive answers. An answer with TTL 0 means
//!   the lease is gone (expired or revoked); the stream stays open. The stream is not moved to
//!   another member when its member goes away: the error ends it, and the caller opens a new
//!   one (clientv3 does the same from its keep-alive loop).
//! - [`Client::put_with_lease`] — a put that attaches the key to a lease.

use bytes::Bytes;
use raftkv_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, PutRequest, PutResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::{Client, Error};

/// etcd's message for a lease it does not know (`rpctypes.ErrGRPCLeaseNotFound`).
pub const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";

/// The error etcd answers for an unknown lease (code NotFound), as clientv3's
/// `KeepAliveOnce` also reports a renewal answered with TTL 0.
pub fn lease_not_found() -> Error {
    Error::Status(tonic::Status::not_found(LEASE_NOT_FOUND))
}

impl Error {
    /// Whether this is etcd's `requested lease not found`.
    pub fn is_lease_not_found(&self) -> bool {
        matches!(self, Error::Status(s) if s.code() == tonic::Code::NotFound && s.message() == LEASE_NOT_FOUND)
    }
}

impl Client {
    /// Lease/LeaseGrant: a lease of `ttl` seconds with id `id`, or one the member picks when
    /// `id` is 0. The answer's TTL is the one granted (etcd raises it to its minimum).
    pub async fn lease_grant(&self, ttl: i64, id: i64) -> Result<LeaseGrantResponse, Error> {
        self.write(|c| async move {
            c.lease()
                .lease_grant(LeaseGrantRequest { ttl, id })
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    /// Lease/LeaseRevoke: ends the lease and deletes every key attached to it.
    pub async fn lease_revoke(&self, id: i64) -> Result<LeaseRevokeResponse, Error> {
        self.write(|c| async move {
            c.lease()
                .lease_revoke(LeaseRevokeRequest { id })
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    /// Lease/LeaseTimeToLive: the seconds left and granted, and with `keys` the keys
    /// attached. A lease etcd does not know is no error: TTL -1 and granted TTL 0.
    pub async fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<LeaseTimeToLiveResponse, Error> {
        self.read(|c| async move {
            c.lease()
                .lease_time_to_live(LeaseTimeToLiveRequest { id, keys })
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    /// Lease/LeaseLeases: the leases the member knows.
    pub async fn lease_leases(&self) -> Result<LeaseLeasesResponse, Error> {
        self.read(|c| async move {
            c.lease()
                .lease_leases(LeaseLeasesRequest {})
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    /// One renewal of lease `id` on a stream of its own, within the command timeout (clientv3's
    /// `KeepAliveOnce`): the answer, or `requested lease not found` when the lease is gone.
    pub async fn lease_keep_alive_once(&self, id: i64) -> Result<LeaseKeepAliveResponse, Error> {
        let call = async {
            let mut stream = self.lease_keep_alive(id).await?;
            match stream.next().await {
                Some(Ok(resp)) if resp.ttl <= 0 => Err(lease_not_found()),
                Some(answer) => answer,
                None => Err(Error::Status(tonic::Status::unavailable(
                    "keep-alive stream closed",
                ))),
            }
        };
        match tokio::time::timeout(self.command_timeout(), call).await {
            Err(_) => Err(Error::Timeout),
            Ok(result) => result,
        }
    }

    /// A keep-alive stream on the first member that answers, opened with a renewal of lease
    /// `id` (queued before the call: etcd sends the stream's response headers with its first
    /// answer), with the `hasleader` metadata when the client requires a leader, as
    /// clientv3's lease client always sets it; with credentials, under a new token (see
    /// [`crate::auth`]).
    pub async fn lease_keep_alive(&self, id: i64) -> Result<LeaseKeepAlive, Error> {
        let connection = self.connect().await?;
        self.renew_token(&connection).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(LeaseKeepAliveRequest { id });
        let mut call = tonic::Request::new(UnboundedReceiverStream::new(rx));
        if self.requires_leader() {
            call.metadata_mut().insert(
                "hasleader",
                tonic::metadata::MetadataValue::from_static("true"),
            );
        }
        let answers = connection
            .lease()
            .lease_keep_alive(call)
            .await?
            .into_inner();
        Ok(LeaseKeepAlive {
            requests: tx,
            answers,
        })
    }

    /// Puts `value` at `key`, attached to lease `lease` (etcdctl's `put --lease`).
    pub async fn put_with_lease(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        lease: i64,
    ) -> Result<PutResponse, Error> {
        self.put_request(PutRequest {
            key: key.into(),
            value: value.into(),
            lease,
            ..Default::default()
        })
        .await
    }
}

/// A keep-alive stream to one member: renewals in, answers out in order.
pub struct LeaseKeepAlive {
    requests: mpsc::UnboundedSender<LeaseKeepAliveRequest>,
    answers: tonic::Streaming<LeaseKeepAliveResponse>,
}

impl LeaseKeepAlive {
    /// Sends a renewal of lease `id`; its answer comes from [`LeaseKeepAlive::next`].
    pub fn keep_alive(&self, id: i64) -> Result<(), Error> {
        self.requests
            .send(LeaseKeepAliveRequest { id })
            .map_err(|_| Error::Status(tonic::Status::unavailable("keep-alive stream closed")))
    }

    /// The next answer: `TTL` is the lease's granted TTL, or 0 when the lease expired or was
    /// revoked. `None` once the member ended the stream.
    pub async fn next(&mut self) -> Option<Result<LeaseKeepAliveResponse, Error>> {
        self.answers
            .message()
            .await
            .map_err(Error::from)
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lease_not_found_is_etcds_error() {
        let e = lease_not_found();
        assert_eq!(e.to_string(), "etcdserver: requested lease not found");
        assert_eq!(e.code(), Some(tonic::Code::NotFound));
        assert!(e.is_lease_not_found());
        assert!(!Error::Timeout.is_lease_not_found());
        let other = Error::Status(tonic::Status::not_found("etcdserver: key not found"));
        assert!(!other.is_lease_not_found());
    }

    #[tokio::test]
    async fn lease_calls_report_an_unreachable_member() {
        let client = Client::new(["127.0.0.1:1"])
            .with_timeouts(Duration::from_millis(200), Duration::from_millis(500));
        assert!(matches!(
            client.lease_grant(60, 0).await,
            Err(Error::Unreachable { .. })
        ));
        assert!(matches!(
            client.lease_time_to_live(1, true).await,
            Err(Error::Unreachable { .. })
        ));
        assert!(matches!(
            client.lease_keep_alive(1).await,
            Err(Error::Unreachable { .. })
        ));
        assert!(matches!(
            client.lease_keep_alive_once(1).await,
            Err(Error::Unreachable { .. })
        ));
    }
}
