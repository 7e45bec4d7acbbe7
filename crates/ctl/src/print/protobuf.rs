//! The `protobuf` output format: the response's protobuf encoding, written as it is (no
//! newline). etcdctl knows it for every response; raftkvctl prints it for `watch`.

use prost::Message;
use raftkv_proto::etcdserverpb::WatchResponse;

/// `watch`: etcd's WatchResponse with what clientv3 keeps of it (header, events, compact
/// revision, canceled, created; no watch id, cancel reason or fragment flag).
pub fn watch(view: &super::WatchView) -> Vec<u8> {
    WatchResponse {
        header: Some(view.header),
        events: view.events().to_vec(),
        compact_revision: view.compact_revision,
        canceled: view.canceled,
        created: view.created,
        ..Default::default()
    }
    .encode_to_vec()
}
