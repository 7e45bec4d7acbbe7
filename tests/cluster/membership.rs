//! Membership: add a 4th member as a learner, start it, promote it, remove another member;
//! the data stays complete on the new member.

use std::time::{Duration, Instant};

use crate::fixture::{Cluster, Options, Server, etcdctl, etcdctl_ok, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_learner_promote_and_remove() {
    let mut cluster = Cluster::start(Server::Raftkv, 3, Options::default()).await;
    let eps = cluster.endpoints();
    for i in 0..30 {
        etcdctl_ok(&eps, &["put", &format!("k{i:02}"), &format!("v{i}")]);
    }
    let (client, peer) = (free_port(), free_port());
    let peer_url = format!("http://127.0.0.1:{peer}");
    let added = etcdctl_ok(
        &eps,
        &[
            "member",
            "add",
            "m4",
            &format!("--peer-urls={peer_url}"),
            "--learner",
        ],
    );
    assert!(
        added.contains("Member") && added.contains("added to cluster"),
        "{added}"
    );
    let id = added
        .split_whitespace()
        .nth(1)
        .expect("member id")
        .to_string();
    assert!(u64::from_str_radix(&id, 16).is_ok(), "{added}");
    let list = etcdctl_ok(&eps, &["member", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with(&id) && l.ends_with(", true")),
        "learner listed: {list}"
    );

    let m4 = cluster.spawn_joining("m4", client, peer);
    // Promote once the learner has caught up (etcd refuses before that, and so do we).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = etcdctl(&eps, &["member", "promote", &id], None);
        if out.status.success() {
            break;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("in sync with leader") || err.contains("request timed out"),
            "{err}"
        );
        assert!(Instant::now() < deadline, "learner never caught up: {err}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let list = etcdctl_ok(&eps, &["member", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with(&id) && l.ends_with(", false")),
        "promoted: {list}"
    );

    // Remove the first member; the cluster goes on with m2, m3, m4.
    let first = cluster
        .status(0)
        .await
        .and_then(|s| s.header)
        .expect("status of m1")
        .member_id;
    etcdctl_ok(&eps, &["member", "remove", &format!("{first:x}")]);
    cluster.kill(0);
    let live = cluster.live_endpoints();
    etcdctl_ok(&live, &["put", "after-change", "ok"]);
    // The new member holds every key (linearizable read through it).
    let keys = etcdctl_ok(
        &cluster.members[m4].endpoint(),
        &["get", "", "--from-key", "--keys-only"],
    );
    let keys: Vec<&str> = keys.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(keys.len(), 31, "{keys:?}");
    let list = etcdctl_ok(&live, &["member", "list"]);
    assert_eq!(list.lines().count(), 3, "{list}");
    assert!(!list.contains(&format!("{first:x}")), "{list}");
}
