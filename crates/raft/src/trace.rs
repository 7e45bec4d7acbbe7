//! Following one request across members in the logs: every client request gets an id where
//! it arrives; the id rides along (task-local) into the node, and in the
//! [`REQUEST_ID_HEADER`] of any call to the leader, whose peer service serves the call in a
//! span with the same id. With `RUST_LOG=raftkv=debug` on every member, grepping one id
//! shows the request's hops: the API edge, routing, the forward, the proposal or read index.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

/// Metadata carrying the id of the client request a peer call serves.
pub const REQUEST_ID_HEADER: &str = "raftkv-request-id";

tokio::task_local! {
    static REQUEST_ID: u64;
}

/// A new request id, unique within this process and unlikely to repeat across members (the
/// member id's low bits above a counter).
pub fn new_request_id(member: u64) -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    (member << 40) ^ NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Runs `fut` as part of request `id`.
pub async fn with_request_id<F: Future>(id: u64, fut: F) -> F::Output {
    REQUEST_ID.scope(id, fut).await
}

/// The id of the request the current task serves, if any.
pub fn current_request_id() -> Option<u64> {
    REQUEST_ID.try_with(|id| *id).ok()
}

/// The request id a peer call carries, if it carries one.
pub fn request_id_of<T>(req: &tonic::Request<T>) -> Option<u64> {
    req.metadata()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| u64::from_str_radix(v, 16).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_id_is_there_inside_the_scope_only() {
        assert_eq!(current_request_id(), None);
        let seen = with_request_id(42, async { current_request_id() }).await;
        assert_eq!(seen, Some(42));
        assert_ne!(new_request_id(1), new_request_id(1));
    }
}
