//! The Maintenance service beside a real etcd: `etcdctl endpoint hashkv` (etcd's corruption
//! check — every member must give the same hash at a revision), its compacted and future
//! revision errors, `endpoint status`'s DB size, and the raw answers' shapes (which ones
//! carry a header).

use std::time::{Duration, Instant};

use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use raftkv_proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, HashKvRequest, HashRequest, PutRequest, RangeRequest,
};

use crate::etcdctl::{mask, mask_number_after, transcript};
use crate::fixture::{Cluster, Options, Server, assert_no_differences, etcdctl, etcdctl_ok};

/// Replaces each member's endpoint by `<epN>` and hides hash values, which differ between
/// etcd and raftkv by design (and the table's column widths that follow from them).
fn mask_hashes(text: &str, endpoints: &[String]) -> String {
    let mut text = text.to_string();
    for (i, ep) in endpoints.iter().enumerate() {
        text = text.replace(ep, &format!("<ep{i}>"));
    }
    let mut out = String::new();
    for line in text.lines() {
        let line = mask_number_after(line, "\"hash\":");
        let line = if line.starts_with('+') {
            "+--+".to_string()
        } else if line.starts_with('|') {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let cells: Vec<&str> = cells
                .iter()
                .map(|c| {
                    if !c.is_empty() && c.chars().all(|ch| ch.is_ascii_digit()) {
                        "<hash>"
                    } else {
                        c
                    }
                })
                .collect();
            cells.join("|")
        } else if let Some((ep, hash)) = line.split_once(", ")
            && ep.starts_with("<ep")
            && hash.chars().all(|c| c.is_ascii_digit())
        {
            format!("{ep}, <hash>")
        } else {
            line
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// A linearizable read on every member: each has then applied every acknowledged write.
async fn sync_all(cluster: &Cluster) {
    for m in cluster.members.iter().filter(|m| m.is_running()) {
        let mut kv = KvClient::connect(format!("http://{}", m.endpoint()))
            .await
            .expect("connect");
        kv.range(RangeRequest {
            key: "sync".into(),
            ..Default::default()
        })
        .await
        .expect("linearizable read");
    }
}

/// (hash, compact revision) from every running member at `rev`.
async fn hash_kv_everywhere(cluster: &Cluster, rev: i64) -> Vec<(u32, i64)> {
    let mut out = Vec::new();
    for m in cluster.members.iter().filter(|m| m.is_running()) {
        let mut mt = MaintenanceClient::connect(format!("http://{}", m.endpoint()))
            .await
            .expect("connect");
        let r = mt
            .hash_kv(HashKvRequest { revision: rev })
            .await
            .unwrap_or_else(|e| panic!("HashKV at {rev} on {}: {e}", m.name))
            .into_inner();
        out.push((r.hash, r.compact_revision));
    }
    out
}

fn assert_all_equal<T: PartialEq + std::fmt::Debug>(what: &str, values: &[T]) {
    assert!(
        values.windows(2).all(|w| w[0] == w[1]),
        "{what} differ between members: {values:?}"
    );
}

/// The etcdctl session, masked, and the members' hashes at revision 4 and (after
/// compacting at 4) at 5.
async fn hashkv_session(server: Server) -> (Vec<String>, Vec<(u32, i64)>, Vec<(u32, i64)>) {
    let cluster = Cluster::start(server, 3, Options::default()).await;
    let all = cluster.endpoints();
    let eps: Vec<String> = cluster.members.iter().map(|m| m.endpoint()).collect();
    let first = eps[0].clone();
    let mut lines = Vec::new();
    let mut run = |endpoints: &str, args: &[&str]| {
        let out = etcdctl(endpoints, args, None);
        lines.push(mask_hashes(
            &transcript(&format!("etcdctl {}", args.join(" ")), &out),
            &eps,
        ));
    };
    for args in [
        &["put", "a", "1"][..],
        &["put", "b", "2"],
        &["put", "a", "3"],
        &["del", "b"],
        &["put", "c", "4"],
    ] {
        run(&all, args);
    }
    sync_all(&cluster).await;
    run(&all, &["endpoint", "hashkv", "--rev", "4", "-w", "json"]);
    run(&all, &["endpoint", "hashkv", "-w", "table"]);
    run(&first, &["endpoint", "hashkv"]);
    run(&first, &["endpoint", "hashkv", "--rev", "7"]);
    run(
        &first,
        &["endpoint", "hashkv", "--rev", "1000", "-w", "json"],
    );
    let before = hash_kv_everywhere(&cluster, 4).await;
    run(&all, &["compaction", "4"]);
    sync_all(&cluster).await;
    run(&first, &["endpoint", "hashkv", "--rev", "4"]);
    run(&first, &["endpoint", "hashkv", "--rev", "2"]);
    run(&all, &["endpoint", "hashkv", "--rev", "5", "-w", "json"]);
    run(&all, &["endpoint", "hashkv", "--rev", "0", "-w", "json"]);
    let after = hash_kv_everywhere(&cluster, 5).await;
    // `endpoint status` shows every member's database size (it showed 0 B once).
    let status = etcdctl_ok(&all, &["endpoint", "status", "-w", "json"]);
    let sizes: Vec<u64> = status
        .split("\"dbSize\":")
        .skip(1)
        .map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().unwrap_or(0)
        })
        .collect();
    assert!(
        sizes.len() == 3 && sizes.iter().all(|&s| s > 0),
        "{server:?}: {status}"
    );
    let table = etcdctl_ok(&all, &["endpoint", "status", "-w", "table"]);
    assert!(!table.contains(" 0 B "), "{server:?}: {table}");
    (lines, before, after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_hashkv_matches_real_etcd_and_members_agree() {
    let (ours, ours_before, ours_after) = hashkv_session(Server::Raftkv).await;
    let (reference, etcd_before, etcd_after) = hashkv_session(Server::Etcd).await;
    for (server, before, after) in [
        ("etcd", &etcd_before, &etcd_after),
        ("raftkv", &ours_before, &ours_after),
    ] {
        assert_all_equal(&format!("{server}'s hashes at 4"), before);
        assert_all_equal(&format!("{server}'s hashes at 5"), after);
        assert_eq!(before[0].1, -1, "{server}: never compacted");
        assert_eq!(after[0].1, 4, "{server}: compacted at 4");
    }
    let mut differences = Vec::new();
    for (o, r) in ours.iter().zip(&reference) {
        if o != r {
            differences.push(format!("--- etcd\n{r}--- raftkv\n{o}"));
        }
    }
    assert_no_differences(&differences);
}

/// Members agree on HashKV and Hash after a compaction, a kill -9 and restart, and a member
/// that caught up from a snapshot (its log was purged while it was down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashes_agree_after_restart_and_snapshot_catch_up() {
    let opts = Options {
        snapshot_count: Some(20),
        ..Options::default()
    };
    let mut cluster = Cluster::start(Server::Raftkv, 3, opts).await;
    let leader = cluster.leader().await.expect("a leader");
    let lagging = (0..3).find(|&i| i != leader).expect("a follower");
    cluster.kill(lagging);
    let mut kv = KvClient::connect(format!("http://{}", cluster.members[leader].endpoint()))
        .await
        .expect("connect");
    for i in 0..150 {
        kv.put(PutRequest {
            key: format!("k{:02}", i % 40).into(),
            value: format!("v{i}").into(),
            ..Default::default()
        })
        .await
        .expect("put");
        if i % 7 == 0 {
            kv.delete_range(DeleteRangeRequest {
                key: format!("k{:02}", (i + 3) % 40).into(),
                ..Default::default()
            })
            .await
            .expect("delete");
        }
    }
    kv.compact(CompactionRequest {
        revision: 60,
        physical: true,
    })
    .await
    .expect("compact");
    let at = 120;
    cluster.restart(lagging);
    cluster.wait_healthy(Duration::from_secs(20)).await;
    sync_all(&cluster).await;
    // Its data is visible as the install moves the store's point, a moment before the
    // install is logged.
    cluster.members[lagging]
        .wait_logged("installed snapshot", Duration::from_secs(10))
        .await;
    let hashes = hash_kv_everywhere(&cluster, at).await;
    assert_all_equal("hashes after the snapshot catch-up", &hashes);
    assert_eq!(hashes[0].1, 60);
    let whole = whole_hashes(&cluster).await;
    assert_all_equal("whole-store hashes after the snapshot catch-up", &whole);

    // kill -9 of another member, writes meanwhile, restart: still the same.
    let leader = cluster.leader().await.expect("a leader");
    let other = (0..3)
        .find(|&i| i != lagging && i != leader)
        .expect("another follower");
    cluster.kill(other);
    let live = cluster.live_endpoints();
    etcdctl_ok(&live, &["put", "while-down", "x"]);
    cluster.restart(other);
    cluster.wait_healthy(Duration::from_secs(20)).await;
    sync_all(&cluster).await;
    assert_eq!(hash_kv_everywhere(&cluster, at).await, hashes);
    assert_all_equal(
        "hashes at the current revision",
        &hash_kv_everywhere(&cluster, 0).await,
    );
    assert_all_equal(
        "whole-store hashes after a restart",
        &whole_hashes(&cluster).await,
    );
}

/// Maintenance/Hash on every member, once their revisions agree.
async fn whole_hashes(cluster: &Cluster) -> Vec<(u32, i64)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut out = Vec::new();
        for m in &cluster.members {
            let mut mt = MaintenanceClient::connect(format!("http://{}", m.endpoint()))
                .await
                .expect("connect");
            let r = mt.hash(HashRequest {}).await.expect("Hash").into_inner();
            out.push((r.hash, r.header.expect("a header").revision));
        }
        if out.windows(2).all(|w| w[0].1 == w[1].1) || Instant::now() > deadline {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Raw gRPC answers of Status, Defragment, Alarm, MoveLeader, Hash and HashKV: which
/// fields are set (ids, hashes and sizes masked), as etcd answers them.
async fn raw_shapes(server: Server) -> Vec<String> {
    use raftkv_proto::etcdserverpb::{AlarmRequest, DefragmentRequest, MoveLeaderRequest};
    let cluster = Cluster::start(server, 1, Options::default()).await;
    let ep = cluster.members[0].endpoint();
    etcdctl_ok(&ep, &["put", "k", "v"]);
    let id = cluster.member_id(0).await;
    let mut mt = MaintenanceClient::connect(format!("http://{ep}"))
        .await
        .expect("connect");
    let mut shapes = Vec::new();
    let status = mt
        .status(raftkv_proto::etcdserverpb::StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    shapes.push(format!(
        "status: header={} revision={} db_size>0={} in_use>0={} in_use<=size={} errors={:?}",
        status.header.is_some(),
        status.header.map_or(0, |h| h.revision),
        status.db_size > 0,
        status.db_size_in_use > 0,
        status.db_size_in_use <= status.db_size,
        status.errors
    ));
    let defrag = mt
        .defragment(DefragmentRequest {})
        .await
        .expect("defragment")
        .into_inner();
    shapes.push(format!("defragment: {defrag:?}"));
    let alarms = mt
        .alarm(AlarmRequest::default())
        .await
        .expect("alarm")
        .into_inner();
    shapes.push(format!("alarm list: {alarms:?}"));
    let moved = mt
        .move_leader(MoveLeaderRequest { target_id: id })
        .await
        .expect("move leader")
        .into_inner();
    shapes.push(format!("move-leader to itself: {moved:?}"));
    let moved = mt
        .move_leader(MoveLeaderRequest { target_id: 12345 })
        .await
        .map(|_| ())
        .map_err(|e| (e.code(), e.message().to_string()));
    shapes.push(format!("move-leader to a stranger: {moved:?}"));
    let mut parts = mt
        .snapshot(raftkv_proto::etcdserverpb::SnapshotRequest {})
        .await
        .expect("snapshot")
        .into_inner();
    let mut seen = Vec::new();
    while let Some(part) = parts.message().await.expect("a snapshot part") {
        seen.push((part.header.is_some(), part.remaining_bytes, part.blob.len()));
    }
    let last = seen.last().copied().unwrap_or_default();
    shapes.push(format!(
        "snapshot: headers={} last part: remaining={} blob={}, the one before: remaining={}",
        seen.iter().filter(|p| p.0).count(),
        last.1,
        last.2,
        seen.len() >= 2 && seen[seen.len() - 2].1 == 0
    ));
    let hash = mt.hash(HashRequest {}).await.expect("hash").into_inner();
    shapes.push(format!(
        "hash: revision={} hash!=0={}",
        hash.header.map_or(0, |h| h.revision),
        hash.hash != 0
    ));
    for rev in [0, 1, 2, 3] {
        let r = mt
            .hash_kv(HashKvRequest { revision: rev })
            .await
            .map(|r| {
                let r = r.into_inner();
                (r.header.map(|h| h.revision), r.compact_revision)
            })
            .map_err(|e| (e.code(), e.message().to_string()));
        shapes.push(format!("hashkv {rev}: {r:?}"));
    }
    shapes
        .into_iter()
        .map(|s| mask(&s.replace(&id.to_string(), "<id>")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_answers_have_etcds_shapes() {
    let ours = raw_shapes(Server::Raftkv).await;
    let reference = raw_shapes(Server::Etcd).await;
    let mut differences = Vec::new();
    for (o, r) in ours.iter().zip(&reference) {
        if o != r {
            differences.push(format!("etcd:   {r}raftkv: {o}"));
        }
    }
    assert_no_differences(&differences);
}
