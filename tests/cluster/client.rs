//! raftkv-client, the library: the same calls give the same answers from raftkv and from a
//! real etcd, and reads fail over past a member that is down.

use std::time::Duration;

use raftkv_client::proto::compare::CompareResult;
use raftkv_client::{Client, Compare, Txn, TxnOp};

use crate::fixture::{Cluster, Options, Server};

/// A transcript of calls through the library, with revisions and ids left out.
async fn transcript(server: Server) -> Vec<String> {
    let mut cluster = Cluster::start(server, 3, Options::default()).await;
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.endpoint()).collect();
    let client = Client::new(endpoints.clone())
        .with_timeouts(Duration::from_millis(500), Duration::from_secs(5));
    let mut lines = Vec::new();
    client.put("k", "v1").await.expect("put");
    let kv = client.get("k").await.expect("get").expect("present");
    lines.push(format!("get k: {:?} version {}", kv.value, kv.version));
    let swap = Txn::new()
        .when([Compare::value_equals("k", "v1")])
        .then([TxnOp::put("k", "v2"), TxnOp::get("k")])
        .otherwise([TxnOp::get("k")]);
    let resp = client.txn(swap.clone()).await.expect("txn");
    lines.push(format!("cas from v1: {}", resp.succeeded));
    let resp = client.txn(swap).await.expect("txn");
    lines.push(format!("cas again: {}", resp.succeeded));
    let versions = Txn::new().when([Compare::version("k", CompareResult::Equal, 2)]);
    lines.push(format!(
        "version is 2: {}",
        client.txn(versions).await.expect("txn").succeeded
    ));
    lines.push(format!(
        "delete: {}",
        client.delete("k").await.expect("delete")
    ));
    lines.push(format!(
        "get after delete: {:?}",
        client.get("k").await.expect("get")
    ));
    let err = client.put("", "x").await.expect_err("empty key");
    lines.push(format!("empty key: {:?} {err}", err.code()));
    lines.push(format!(
        "members: {}",
        client.member_list().await.expect("members").members.len()
    ));
    lines.push(format!(
        "alarms: {}",
        client.alarms().await.expect("alarms").len()
    ));
    for ep in &endpoints {
        let status = client.status_of(ep).await.expect("status");
        lines.push(format!("status has a leader: {}", status.leader != 0));
    }
    // Reads go past a member that is down.
    cluster.kill(0);
    let kv = client
        .get("nothing")
        .await
        .expect("read past a dead member");
    lines.push(format!("read with member 0 down: {kv:?}"));
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_answers_as_etcd_does() {
    let etcd = transcript(Server::Etcd).await;
    let raftkv = transcript(Server::Raftkv).await;
    eprintln!("{raftkv:#?}");
    assert_eq!(raftkv, etcd);
}
