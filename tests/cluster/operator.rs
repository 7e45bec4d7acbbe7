//! Operator commands that must never brick a cluster (issue 11, cases 9 and 10), on one
//! member and on three, beside a real etcd where the answers can be compared.

use std::time::{Duration, Instant};

use crate::fixture::{Cluster, Options, Server, etcdctl, etcdctl_ok, free_port};

/// `etcdctl move-leader <the leader's own id>`, then a put: etcd treats the move as a
/// no-op; raftkv stopped taking writes for good.
async fn move_leader_to_itself(server: Server, n: usize) -> (String, bool) {
    let cluster = Cluster::start(server, n, Options::default()).await;
    let leader = cluster.leader().await.expect("a leader");
    let id = cluster.member_id(leader).await;
    let ep = cluster.members[leader].endpoint();
    let out = etcdctl(&ep, &["move-leader", &format!("{id:x}")], None);
    let answer = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .replace(&format!("{id:x}"), "<id>");
    let put = etcdctl(&cluster.endpoints(), &["put", "after-move", "v"], None);
    (answer.trim().to_string(), put.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_leader_to_the_leader_is_a_no_op() {
    for n in [1, 3] {
        let etcd = move_leader_to_itself(Server::Etcd, n).await;
        let raftkv = move_leader_to_itself(Server::Raftkv, n).await;
        eprintln!("{n} member(s): etcd {etcd:?}, raftkv {raftkv:?}");
        assert_eq!(raftkv, etcd, "{n} member(s)");
        assert!(raftkv.1, "puts fail after the move on {n} member(s)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_leader_to_an_unreachable_member_fails_and_writes_go_on() {
    let mut cluster = Cluster::start(Server::Raftkv, 3, Options::default()).await;
    let leader = cluster.leader().await.expect("a leader");
    let down = (leader + 1) % 3;
    let down_id = cluster.member_id(down).await;
    cluster.kill(down);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ep = cluster.members[leader].endpoint();
    let out = etcdctl(&ep, &["move-leader", &format!("{down_id:x}")], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("leader transfer took too long"), "{err}");
    etcdctl_ok(&cluster.live_endpoints(), &["put", "still", "writable"]);
}

/// `member add` on a one-member cluster answers at once (etcd's documented way to grow a
/// cluster is add, then start the new member); the new member then joins and the two
/// serve together — also when the first restarts in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_add_on_one_member_answers_and_the_new_member_joins() {
    for restart_between in [false, true] {
        let mut cluster = Cluster::start(Server::Raftkv, 1, Options::default()).await;
        let ep = cluster.endpoints();
        etcdctl_ok(&ep, &["put", "before", "add"]);
        let (client, peer) = (free_port(), free_port());
        let started = Instant::now();
        let out = etcdctl(
            &ep,
            &[
                "member",
                "add",
                "m2",
                &format!("--peer-urls=http://127.0.0.1:{peer}"),
            ],
            None,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "member add hung"
        );
        let list = etcdctl_ok(&ep, &["member", "list"]);
        assert!(list.contains("unstarted"), "{list}");
        if restart_between {
            cluster.kill(0);
            cluster.restart(0);
        }
        let m2 = cluster.spawn_joining("m2", client, peer);
        cluster.wait_healthy(Duration::from_secs(30)).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = etcdctl(&cluster.endpoints(), &["put", "after", "add"], None);
            if out.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no write after the new member joined"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let got = etcdctl_ok(
            &cluster.members[m2].endpoint(),
            &["get", "", "--from-key", "--keys-only"],
        );
        assert_eq!(
            got.split_whitespace().collect::<Vec<_>>(),
            ["after", "before"]
        );
        // Both are voters, named, with their client URLs.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let list = etcdctl_ok(&cluster.endpoints(), &["member", "list"]);
            let started_members = list
                .lines()
                .filter(|l| l.contains(", started, ") && l.ends_with(", false"))
                .count();
            if started_members == 2 {
                break;
            }
            assert!(Instant::now() < deadline, "{list}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The log lines tools wait for before they use a member (etcd's e2e tests wait for
/// "published" or "enabled capabilities for version"), with etcd's wording.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_log_etcds_readiness_lines() {
    let cluster = Cluster::start(Server::Raftkv, 3, Options::default()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    for (i, m) in cluster.members.iter().enumerate() {
        let cid = cluster
            .status(i)
            .await
            .and_then(|s| s.header)
            .expect("status")
            .cluster_id;
        let published = format!(
            "published {{Name:{} ClientURLs:[http://{}]}} to cluster {cid:x}",
            m.name,
            m.endpoint()
        );
        let serving = format!(
            "serving insecure client requests on {}, this is strongly discouraged!",
            m.endpoint()
        );
        loop {
            let log = m.log_text();
            let ready = log.contains(&published)
                && log.contains("enabled capabilities for version 3.4")
                && log.contains("ready to serve client requests")
                && log.contains(&serving);
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "{}:\n{log}", m.name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `--strict-reconfig-check` (on by default): the same refusals as etcd, with its messages.
async fn strict_reconfig_transcript(server: Server) -> Vec<String> {
    let add = |cluster: &Cluster, name: &str| {
        let out = etcdctl(
            &cluster.live_endpoints(),
            &[
                "member",
                "add",
                name,
                &format!("--peer-urls=http://127.0.0.1:{}", free_port()),
            ],
            None,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("").to_string();
        format!("add {name}: {} {last}", out.status.success())
    };
    let mut lines = Vec::new();
    // One member with one unstarted member added: a third is refused.
    {
        let cluster = Cluster::start(server, 1, Options::default()).await;
        lines.push(add(&cluster, "m2"));
        lines.push(add(&cluster, "m3"));
    }
    // Three members, one down: no add; removing a live one breaks the active quorum;
    // removing the dead one is fine.
    let mut cluster = Cluster::start(server, 3, Options::default()).await;
    let ids = [
        cluster.member_id(0).await,
        cluster.member_id(1).await,
        cluster.member_id(2).await,
    ];
    cluster.kill(2);
    tokio::time::sleep(Duration::from_secs(6)).await;
    lines.push(add(&cluster, "m4"));
    for (what, id) in [("live", ids[1]), ("dead", ids[2])] {
        let out = etcdctl(
            &cluster.live_endpoints(),
            &["member", "remove", &format!("{id:x}")],
            None,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        lines.push(format!(
            "remove {what}: {} {}",
            out.status.success(),
            err.lines().last().unwrap_or("")
        ));
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_reconfig_check_refuses_as_etcd_does() {
    let etcd = strict_reconfig_transcript(Server::Etcd).await;
    let raftkv = strict_reconfig_transcript(Server::Raftkv).await;
    eprintln!("etcd: {etcd:#?}\nraftkv: {raftkv:#?}");
    assert_eq!(raftkv, etcd);
}

/// With `RUST_LOG=raftkv=debug`, one request's id shows its path across members: the
/// follower that took it and the leader that served the forward.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_can_be_followed_across_members() {
    let opts = Options {
        env: vec![("RUST_LOG".into(), "raftkv=debug".into())],
        ..Options::default()
    };
    let cluster = Cluster::start(Server::Raftkv, 3, opts).await;
    let leader = cluster.leader().await.expect("a leader");
    let follower = (leader + 1) % 3;
    etcdctl_ok(
        &cluster.members[follower].endpoint(),
        &["put", "traced", "v"],
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = cluster.members[follower].log_text();
    let line = log
        .lines()
        .find(|l| l.contains("method=\"Put\"") && l.contains("asking the leader"))
        .unwrap_or_else(|| panic!("no traced put on the follower:\n{log}"));
    let id = line
        .split("request=")
        .nth(1)
        .and_then(|rest| rest.split([' ', '}', ':']).next())
        .expect("a request id")
        .to_string();
    let leader_log = cluster.members[leader].log_text();
    assert!(
        leader_log
            .lines()
            .any(|l| l.contains(&format!("request={id}")) && l.contains("committed and applied")),
        "request {id} not found on the leader:\n{leader_log}"
    );
}
