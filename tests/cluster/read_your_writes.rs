//! A write made through a follower is applied there before the client hears of it, as in
//! etcd (whose member waits for its own apply of the entry it proposed): the client's next
//! serializable read or watch on that member sees it. Checked against a real etcd too.

use bytes::Bytes;
use futures_util::StreamExt;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::watch_client::WatchClient;
use raftkv_proto::etcdserverpb::watch_request::RequestUnion;
use raftkv_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, WatchCreateRequest, WatchRequest,
};
use std::time::Duration;

use crate::fixture::{Cluster, Options, Server};

/// Clients writing through the same follower at once, and rounds each: each write followed
/// at once by a serializable read of it there. (Concurrent writers keep the leader's
/// replication stream busy, which is when a follower learns of a commit late.)
const CLIENTS: usize = 8;
const ROUNDS: usize = 60;

async fn writes_through_a_follower_are_seen_there_at_once(server: Server) {
    let cluster = Cluster::start(server, 3, Options::default()).await;
    cluster.wait_healthy(Duration::from_secs(15)).await;
    let leader = cluster.leader().await.expect("a leader");
    let follower = (leader + 1) % 3;
    let endpoint = format!("http://{}", cluster.members[follower].endpoint());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(one_client(server, endpoint.clone(), c)))
        .collect();
    for client in clients {
        client.await.expect("a client");
    }
}

async fn one_client(server: Server, endpoint: String, c: usize) {
    let mut kv = KvClient::connect(endpoint.clone())
        .await
        .expect("connecting");
    let mut watch = WatchClient::connect(endpoint).await.expect("connecting");
    let key = Bytes::from(format!("ryw{c}"));
    let get = |key: &Bytes| RangeRequest {
        key: key.clone(),
        serializable: true,
        ..Default::default()
    };
    for round in 0..ROUNDS {
        let value = Bytes::from(format!("v{round}"));
        let put = kv
            .put(PutRequest {
                key: key.clone(),
                value: value.clone(),
                ..Default::default()
            })
            .await
            .expect("put")
            .into_inner();
        let written = put.header.expect("header").revision;
        let read = kv.range(get(&key)).await.expect("range").into_inner();
        let at = read.header.expect("header").revision;
        assert!(
            at >= written && read.kvs.first().map(|kv| &kv.value) == Some(&value),
            "{server:?} client {c} round {round}: a serializable read on the follower at revision {at} \
             after its put at {written} gave {:?}",
            read.kvs
        );
        if round % 10 == 9 {
            // A watch created there at once starts at (or after) the write.
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            tx.send(WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                    key: key.clone(),
                    ..Default::default()
                })),
            })
            .await
            .expect("queued");
            let mut answers = watch
                .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .expect("watch")
                .into_inner();
            let created = answers.next().await.expect("an answer").expect("created");
            let at = created.header.expect("header").revision;
            assert!(
                created.created && at >= written,
                "{server:?} client {c} round {round}: a watch created on the follower at revision {at} \
                 after its put at {written}"
            );
            drop(tx);
            let deleted = kv
                .delete_range(DeleteRangeRequest {
                    key: key.clone(),
                    ..Default::default()
                })
                .await
                .expect("delete")
                .into_inner();
            let read = kv.range(get(&key)).await.expect("range").into_inner();
            assert!(
                deleted.deleted == 1 && read.kvs.is_empty(),
                "{server:?} client {c} round {round}: the key is still there after its delete: {read:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_a_follower_are_seen_there_at_once_as_in_etcd() {
    writes_through_a_follower_are_seen_there_at_once(Server::Raftkv).await;
    writes_through_a_follower_are_seen_there_at_once(Server::Etcd).await;
}
