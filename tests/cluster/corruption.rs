//! etcd's corruption checks and its CORRUPT alarm.
//!
//! - Beside a real etcd: with a CORRUPT alarm up (raised through the Alarm API, which etcd
//!   lets any client call), writes, compactions, lease grants and revokes are refused with
//!   `etcdserver: corrupt cluster` (DataLoss, HTTP 500 through the gateway) while reads and
//!   read-only txns are served; `alarm disarm` lets writes through again. The same etcdctl
//!   session, gRPC calls and gateway calls run against both and are compared.
//! - raftkv alone (etcd's bbolt is not ours to corrupt): a follower's stored value is
//!   changed behind Raft's back while it is stopped. The leader's periodic check
//!   (`--experimental-corrupt-check-time`) raises the CORRUPT alarm, and the member
//!   restarted with `--experimental-initial-corrupt-check` refuses to start with etcd's
//!   "found data inconsistency with peers"; a healthy member passes the same check.

use std::path::Path;
use std::time::Duration;

use raftkv_proto::etcdserverpb::alarm_request::AlarmAction;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::lease_client::LeaseClient;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use raftkv_proto::etcdserverpb::{AlarmRequest, AlarmType, LeaseGrantRequest, PutRequest};

use crate::chaos::channel;
use crate::etcdctl::transcript;
use crate::fixture::{Cluster, Options, Server, assert_no_differences, etcdctl, etcdctl_ok};
use crate::gateway::curl;

/// The lease the session revokes (etcdctl takes lease ids in hex: 1234 is 0x1234).
const LEASE: i64 = 0x1234;

/// etcdctl steps run while the alarm is up, then after `alarm disarm`.
const SESSION: &[(&[&str], Option<&str>)] = &[
    (&["alarm", "list"], None),
    (&["put", "a", "2"], None),
    (&["get", "a"], None),
    (&["get", "a", "--consistency=s", "-w", "json"], None),
    (&["del", "a"], None),
    (&["txn"], Some("\n\nput b 1\n\n")),
    (&["txn"], Some("\n\nget a\n\n")),
    (&["compaction", "2"], None),
    (&["lease", "grant", "60"], None),
    (&["lease", "revoke", "1234"], None),
    (&["alarm", "disarm"], None),
    (&["alarm", "list"], None),
    (&["put", "a", "3"], None),
    (&["lease", "revoke", "1234"], None),
    (&["get", "a", "-w", "json"], None),
];

async fn corrupt_alarm_session(server: Server) -> Vec<String> {
    let cluster = Cluster::start(server, 3, Options::default()).await;
    let eps = cluster.endpoints();
    let first = cluster.members[0].endpoint();
    let mut out = Vec::new();
    let conn = channel(&first).await.expect("connect");
    let mut kv = KvClient::new(conn.clone());
    kv.put(PutRequest {
        key: "a".into(),
        value: "1".into(),
        ..Default::default()
    })
    .await
    .expect("put before the alarm");
    LeaseClient::new(conn.clone())
        .lease_grant(LeaseGrantRequest { ttl: 60, id: LEASE })
        .await
        .expect("lease grant");
    let raised = MaintenanceClient::new(conn.clone())
        .alarm(AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: 0,
            alarm: AlarmType::Corrupt as i32,
        })
        .await
        .expect("raising CORRUPT")
        .into_inner();
    out.push(format!("raised: {:?}", raised.alarms));
    let put = kv
        .put(PutRequest {
            key: "a".into(),
            value: "grpc".into(),
            ..Default::default()
        })
        .await;
    out.push(match put {
        Ok(_) => "grpc put: ok".to_string(),
        Err(s) => format!("grpc put: {:?} {}", s.code(), s.message()),
    });
    out.push(curl(
        &first,
        "POST",
        "/v3/kv/put",
        Some(r#"{"key":"YQ==","value":"aHR0cA=="}"#),
    ));
    out.push(curl(
        &first,
        "POST",
        "/v3/kv/range",
        Some(r#"{"key":"YQ=="}"#),
    ));
    tokio::task::block_in_place(|| {
        for (args, stdin) in SESSION {
            out.push(transcript(&args.join(" "), &etcdctl(&eps, args, *stdin)));
        }
    });
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_alarm_refuses_writes_as_etcd() {
    let reference = corrupt_alarm_session(Server::Etcd).await;
    let ours = corrupt_alarm_session(Server::Raftkv).await;
    let mut differences = Vec::new();
    for (r, o) in reference.iter().zip(&ours) {
        if r != o {
            differences.push(format!("--- etcd\n{r}\n--- raftkv\n{o}"));
        }
    }
    assert_eq!(reference.len(), ours.len());
    assert_no_differences(&differences);
    // The comparison proves something only if the alarm did what it says.
    let all = reference.concat();
    for expected in [
        "grpc put: DataLoss etcdserver: corrupt cluster",
        "500 Internal Server Error",
        // etcdctl's text form leaves out a zero member id.
        "$ alarm list (exit 0)\nalarm:CORRUPT \n",
        "Error: etcdserver: corrupt cluster",
        "lease 0000000000001234 revoked",
    ] {
        assert!(all.contains(expected), "{expected:?} not in:\n{all}");
    }
}

/// Changes `from` to `to` (same length) in every stored record of the store in `data_dir`
/// that holds it: damage a Raft log cannot see. Returns how many records changed.
fn damage_store(data_dir: &Path, from: &[u8], to: &[u8]) -> usize {
    assert_eq!(from.len(), to.len());
    let db = sled::open(raftkv_storage::layout::db_dir(data_dir)).expect("opening the store");
    let mut changed = 0;
    for name in db.tree_names() {
        let tree = db.open_tree(&name).expect("tree");
        for item in tree.iter() {
            let (key, value) = item.expect("record");
            // Version records only (the first byte of their keys).
            if key.first() != Some(&0x01) {
                continue;
            }
            if let Some(at) = value.windows(from.len()).position(|w| w == from) {
                let mut damaged = value.to_vec();
                damaged[at..at + to.len()].copy_from_slice(to);
                tree.insert(key, damaged).expect("insert");
                changed += 1;
            }
        }
    }
    db.flush().expect("flush");
    changed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_member_is_found_by_both_corruption_checks() {
    let mut cluster = Cluster::start(
        Server::Raftkv,
        3,
        Options {
            extra_args: vec!["--experimental-corrupt-check-time=300ms".into()],
            ..Options::default()
        },
    )
    .await;
    let eps = cluster.endpoints();
    tokio::task::block_in_place(|| {
        etcdctl_ok(&eps, &["put", "victim", "healthy-value"]);
        etcdctl_ok(&eps, &["put", "other", "1"]);
    });
    let leader = cluster.leader().await.expect("leader");
    let follower = (leader + 1) % 3;
    // Healthy: the leader's passes compare both followers and raise nothing.
    cluster.members[leader]
        .wait_logged("number_of_peers_checked=2", Duration::from_secs(20))
        .await;
    let quiet = tokio::task::block_in_place(|| etcdctl_ok(&eps, &["alarm", "list"]));
    assert_eq!(quiet, "", "a healthy cluster raised an alarm");

    // A healthy member restarted with the initial check passes it.
    let healthy = (leader + 2) % 3;
    assert_eq!(cluster.stop(healthy), Some(0));
    cluster.push_arg(healthy, "--experimental-initial-corrupt-check".into());
    cluster.restart(healthy);
    cluster.wait_healthy(Duration::from_secs(30)).await;
    cluster.members[healthy]
        .wait_logged(
            "initial corruption checking passed",
            Duration::from_secs(20),
        )
        .await;

    // Damage the follower's copy of one value while it is stopped.
    assert_eq!(cluster.stop(follower), Some(0));
    let changed = damage_store(
        &cluster.members[follower].data_dir,
        b"healthy-value",
        b"HEALTHY-VALUE",
    );
    assert_eq!(changed, 1, "the value is stored once");
    cluster.restart(follower);
    cluster.wait_healthy(Duration::from_secs(30)).await;
    // The leader's next passes see the follower's hash differ and raise CORRUPT.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let alarms = loop {
        let alarms = tokio::task::block_in_place(|| etcdctl_ok(&eps, &["alarm", "list"]));
        if !alarms.is_empty() || tokio::time::Instant::now() > deadline {
            break alarms;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Raised for member 0 (etcdctl's text form leaves a zero member id out).
    assert_eq!(alarms, "alarm:CORRUPT \n");
    let refused = tokio::task::block_in_place(|| etcdctl(&eps, &["put", "after", "1"], None));
    // (after clientv3's JSON line about the attempt)
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr).lines().last(),
        Some("Error: etcdserver: corrupt cluster")
    );
    let leader_now = cluster.leader().await.expect("leader");
    assert!(
        cluster.members[leader_now]
            .log_text()
            .contains("same compact revision then hashes must match"),
        "{}",
        cluster.members[leader_now].log_tail()
    );

    // Restarted with the initial check, the damaged member refuses to start.
    assert_eq!(cluster.stop(follower), Some(0));
    cluster.push_arg(follower, "--experimental-initial-corrupt-check".into());
    cluster.restart(follower);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(code) = cluster.exited(follower) {
            break code;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the damaged member kept running:\n{}",
            cluster.members[follower].log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let log = cluster.members[follower].log_text();
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("found data inconsistency with peers")
            && log.contains("found different hash values from remote peer"),
        "{log}"
    );
    // The rest still serve reads, and writes once the alarm is disarmed.
    tokio::task::block_in_place(|| {
        let live = cluster.live_endpoints();
        etcdctl_ok(&live, &["alarm", "disarm"]);
        etcdctl_ok(&live, &["put", "after", "1"]);
    });
}
