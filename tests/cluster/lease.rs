//! Leases, differentially and under failover: the same etcdctl sessions against a raftkv
//! cluster and a real etcd cluster (lease ids and remaining seconds masked), the expiry of
//! a lease nobody keeps alive measured beside etcd, and a kept-alive lease across leader
//! kills.

use std::time::{Duration, Instant};

use crate::etcdctl::transcript;
use crate::fixture::{Cluster, Options, Server, assert_no_differences, etcdctl, etcdctl_ok};

/// The lease id etcdctl printed in `lease <hex> granted with TTL(...)`.
fn granted_id(out: &str) -> String {
    out.split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no lease id in {out:?}"))
        .to_string()
}

/// `text` with lease `id` (hex, and decimal as JSON and `-w fields` print it) masked, and
/// remaining seconds masked (they depend on when the command ran).
fn mask_lease(text: &str, id_hex: &str) -> String {
    let decimal = i64::from_str_radix(id_hex, 16).expect("hex id").to_string();
    let mut out = text.replace(id_hex, "<ID>").replace(&decimal, "<ID>");
    for key in ["remaining(", "\"ttl\":", "keepalived with TTL("] {
        out = crate::etcdctl::mask_number_after(&out, key);
    }
    out
}

fn run(eps: &str, args: &[&str], id_hex: &str) -> String {
    let out = etcdctl(eps, args, None);
    mask_lease(&transcript(&args.join(" "), &out), id_hex)
}

/// Grant, attach, inspect, keep alive, revoke — and the errors around them.
fn lease_session(eps: &str) -> Vec<String> {
    let granted = etcdctl_ok(eps, &["lease", "grant", "60"]);
    let id = granted_id(&granted);
    let mut t = vec![mask_lease(&granted, &id)];
    for args in [
        vec!["put", "--lease", &id, "k1", "v1"],
        vec!["put", "k2", "v2", &format!("--lease={id}")],
        vec!["get", "k1", "-w", "json"],
        vec!["get", "k2", "-w", "fields"],
        vec!["lease", "timetolive", &id],
        vec!["lease", "timetolive", &id, "-w", "json"],
        vec!["lease", "list"],
        vec!["lease", "keep-alive", "--once", &id],
        // A put without the lease detaches the key.
        vec!["put", "k2", "v3"],
        vec!["lease", "timetolive", "--keys", &id],
        vec!["lease", "revoke", &id],
        vec!["get", "--prefix", "k"],
        vec!["lease", "timetolive", &id],
        vec!["lease", "timetolive", &id, "-w", "json"],
        vec!["lease", "revoke", &id],
        vec!["lease", "keep-alive", "--once", &id],
        vec!["put", "--lease", &id, "k3", "v"],
        vec!["put", "--lease", "1234abcd", "k3", "v"],
        vec!["txn"],
        vec!["lease", "list"],
        // Below the minimum TTL (1.5 election timeouts, rounded up to whole seconds).
        vec!["lease", "grant", "1"],
        vec!["lease", "grant", "9000000001"],
        vec!["lease", "grant", "60", "-w", "json"],
    ] {
        if args == ["txn"] {
            // A txn whose chosen branch names an unknown lease changes nothing.
            let out = etcdctl(eps, &["txn"], Some("\n\nput k4 v --lease=1234abcd\n\n"));
            t.push(mask_lease(&transcript("txn put --lease", &out), &id));
            continue;
        }
        let text = run(eps, &args, &id);
        // New grants' ids differ between servers.
        let text = if args[..2] == ["lease", "grant"]
            && (text.contains("granted") || text.contains("\"ID\":"))
        {
            let line = text.lines().nth(1).unwrap_or_default();
            let new_id = if line.starts_with('{') {
                let at = line.find("\"ID\":").expect("ID") + 5;
                let digits: String = line[at..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                format!("{:016x}", digits.parse::<i64>().expect("decimal id"))
            } else {
                granted_id(line)
            };
            mask_lease(&text, &new_id)
        } else {
            text
        };
        t.push(text);
    }
    t
}

fn compare(ours: &[String], reference: &[String]) {
    let differences: Vec<String> = ours
        .iter()
        .zip(reference)
        .filter(|(o, r)| o != r)
        .map(|(o, r)| format!("--- etcd\n{r}--- raftkv\n{o}"))
        .collect();
    assert_eq!(ours.len(), reference.len());
    assert_no_differences(&differences);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lease_sessions_match_real_etcd() {
    let ours = {
        let cluster = Cluster::start(Server::Raftkv, 3, Options::default()).await;
        let eps = cluster.endpoints();
        tokio::task::spawn_blocking(move || lease_session(&eps))
            .await
            .unwrap()
    };
    let reference = {
        let cluster = Cluster::start(Server::Etcd, 3, Options::default()).await;
        let eps = cluster.endpoints();
        tokio::task::spawn_blocking(move || lease_session(&eps))
            .await
            .unwrap()
    };
    compare(&ours, &reference);
}

/// Grants a lease of `ttl` seconds on the first member, attaches a key, and returns how long
/// after the grant the key was gone (polled every 50 ms on the last member).
fn time_to_expiry(first: &str, last: &str, ttl: u64) -> Duration {
    let started = Instant::now();
    let id = granted_id(&etcdctl_ok(first, &["lease", "grant", &ttl.to_string()]));
    etcdctl_ok(first, &["put", "--lease", &id, "expiring", "v"]);
    loop {
        let out = etcdctl_ok(last, &["get", "expiring", "--print-value-only"]);
        if out.trim().is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(ttl + 30),
            "the lease never expired"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrenewed_lease_expires_after_its_ttl_beside_etcd() {
    const TTL: u64 = 3;
    let mut measured = Vec::new();
    for server in [Server::Raftkv, Server::Etcd] {
        let cluster = Cluster::start(server, 3, Options::default()).await;
        let first = cluster.members[0].endpoint();
        let last = cluster.members[2].endpoint();
        let took = tokio::task::spawn_blocking(move || time_to_expiry(&first, &last, TTL))
            .await
            .unwrap();
        drop(cluster);
        // Never before its TTL: the key is visible for at least TTL seconds after the grant
        // was acknowledged (measured from before the grant was sent, so this is sound).
        assert!(
            took >= Duration::from_secs(TTL),
            "{server:?}: a {TTL} s lease expired after {took:?}"
        );
        measured.push(format!("{server:?} {:.2} s", took.as_secs_f64()));
    }
    eprintln!("a {TTL} s lease's key gone after: {}", measured.join(", "));
}

/// One keep-alive through any live member: a keep-alive stream opened for the request (as a
/// client that reconnects after each failure would), the TTL answered.
async fn keep_alive_once(endpoints: &[String], id: i64) -> Option<i64> {
    use raftkv_proto::etcdserverpb::LeaseKeepAliveRequest;
    use raftkv_proto::etcdserverpb::lease_client::LeaseClient;
    for ep in endpoints {
        let attempt = async {
            let mut client = LeaseClient::connect(format!("http://{ep}")).await.ok()?;
            let request = futures_util::stream::iter([LeaseKeepAliveRequest { id }]);
            let mut answers = client.lease_keep_alive(request).await.ok()?.into_inner();
            answers.message().await.ok()?.map(|r| r.ttl)
        };
        if let Ok(Some(ttl)) = tokio::time::timeout(Duration::from_secs(2), attempt).await {
            return Some(ttl);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_lease_survives_twenty_leader_kills() {
    const TTL: i64 = 6;
    // Elections of half etcd's default, so twenty take half the time; the TTL keeps its
    // margin over them (twelve election timeouts).
    let opts = Options {
        heartbeat_ms: 50,
        election_ms: 500,
        ..Options::default()
    };
    let mut cluster = Cluster::start(Server::Raftkv, 3, opts).await;
    let eps = cluster.endpoints();
    let granted = tokio::task::spawn_blocking({
        let eps = eps.clone();
        move || {
            let id = granted_id(&etcdctl_ok(&eps, &["lease", "grant", &TTL.to_string()]));
            for k in ["held/a", "held/b", "held/c"] {
                etcdctl_ok(&eps, &["put", "--lease", &id, k, "v"]);
            }
            id
        }
    })
    .await
    .unwrap();
    let id = i64::from_str_radix(&granted, 16).unwrap();
    // Keep-alives every TTL/3 through whichever member answers.
    let all: Vec<String> = cluster.members.iter().map(|m| m.endpoint()).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let keeper = tokio::spawn({
        let stop = stop.clone();
        let all = all.clone();
        async move {
            let mut refused = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut order = all.clone();
                order.rotate_left(refused.len() % all.len());
                match keep_alive_once(&order, id).await {
                    Some(ttl) if ttl > 0 => {}
                    other => refused.push(other),
                }
                tokio::time::sleep(Duration::from_secs(TTL as u64) / 3).await;
            }
            refused
        }
    });
    for kill in 0..20 {
        let leader = loop {
            if let Some(l) = cluster.leader().await {
                break l;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        cluster.kill(leader);
        tokio::time::sleep(Duration::from_millis(900)).await;
        cluster.restart(leader);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let live = cluster.live_endpoints();
        let held = tokio::task::spawn_blocking(move || {
            etcdctl(&live, &["get", "--prefix", "held/", "--keys-only"], None)
        })
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&held.stdout).into_owned();
        assert!(
            !held.status.success() || text.matches("held/").count() == 3,
            "after kill {kill}: keys lost: {text:?}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let refused = keeper.await.unwrap();
    let eps = cluster.endpoints();
    let (keys, ttl) = tokio::task::spawn_blocking(move || {
        (
            etcdctl_ok(&eps, &["get", "--prefix", "held/", "--keys-only"]),
            etcdctl_ok(&eps, &["lease", "timetolive", &granted]),
        )
    })
    .await
    .unwrap();
    assert_eq!(keys.matches("held/").count(), 3, "keys lost: {keys}");
    assert!(ttl.contains("remaining("), "{ttl}");
    // A keep-alive may fail in transit while a leader dies; none may find the lease gone.
    assert!(
        refused.iter().all(Option::is_none),
        "a keep-alive found the lease gone: {refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_of_an_unknown_lease_answers_ttl_0_on_every_member() {
    use raftkv_proto::etcdserverpb::LeaseKeepAliveRequest;
    use raftkv_proto::etcdserverpb::lease_client::LeaseClient;
    let cluster = Cluster::start(Server::Raftkv, 3, Options::default()).await;
    let leader = loop {
        if let Some(l) = cluster.leader().await {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (i, m) in cluster.members.iter().enumerate() {
        let mut client = LeaseClient::connect(format!("http://{}", m.endpoint()))
            .await
            .unwrap();
        // Two requests on one stream: the stream stays open after the first answer.
        let requests = futures_util::stream::iter([
            LeaseKeepAliveRequest { id: 0x99999 },
            LeaseKeepAliveRequest { id: 0x99998 },
        ]);
        let mut answers = client
            .lease_keep_alive(requests)
            .await
            .unwrap()
            .into_inner();
        for id in [0x99999, 0x99998] {
            let answer = answers
                .message()
                .await
                .unwrap_or_else(|e| panic!("member {i} (leader {leader}): {e}"))
                .expect("an answer");
            assert_eq!((answer.id, answer.ttl), (id, 0), "member {i}");
        }
    }
}

/// `lease timetolive` through `endpoint`: the remaining seconds etcdctl prints.
fn remaining(endpoint: &str, id: &str) -> i64 {
    let out = etcdctl_ok(endpoint, &["lease", "timetolive", id]);
    let at = out.find("remaining(").expect("remaining") + "remaining(".len();
    out[at..]
        .split('s')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no remaining seconds in {out:?}"))
}

/// Kills the leader and waits for another; returns the killed member's index.
async fn kill_leader(cluster: &mut Cluster) -> usize {
    let leader = cluster.leader().await.expect("a leader");
    cluster.kill(leader);
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.leader().await.is_none_or(|l| l == leader) {
        assert!(Instant::now() < deadline, "no new leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    leader
}

/// With `--experimental-enable-lease-checkpoint` (every second here; etcd's 5 minutes is
/// too long for a test) a new leader goes on from the last recorded remainder instead of the
/// full TTL, and a renewal made before the change still counts in full after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_checkpoints_carry_the_remaining_ttl_across_leader_changes() {
    const TTL: i64 = 20;
    let mut cluster = Cluster::start(
        Server::Raftkv,
        3,
        Options {
            extra_args: vec![
                "--experimental-enable-lease-checkpoint".into(),
                "--raftkv-lease-checkpoint-interval=1s".into(),
            ],
            ..Options::default()
        },
    )
    .await;
    let eps = cluster.endpoints();
    let id = {
        let eps = eps.clone();
        tokio::task::spawn_blocking(move || {
            granted_id(&etcdctl_ok(&eps, &["lease", "grant", &TTL.to_string()]))
        })
        .await
        .unwrap()
    };
    tokio::time::sleep(Duration::from_secs(8)).await;
    let killed = kill_leader(&mut cluster).await;
    let live = cluster.live_endpoints();
    let after_change = {
        let (live, id) = (live.clone(), id.clone());
        tokio::task::spawn_blocking(move || remaining(&live, &id))
            .await
            .unwrap()
    };
    // Without checkpoints the new leader would give TTL + one election timeout (21 s, so
    // 20 by the time it is asked); the last checkpoint before the kill left at most 13 s.
    assert!(
        (3..=TTL - 4).contains(&after_change),
        "8 s into a {TTL} s lease, a new leader gave it {after_change} s"
    );

    cluster.restart(killed);
    cluster.wait_healthy(Duration::from_secs(30)).await;
    let eps = cluster.endpoints();
    {
        let (eps, id) = (eps.clone(), id.clone());
        tokio::task::spawn_blocking(move || {
            etcdctl_ok(&eps, &["lease", "keep-alive", "--once", &id]);
        })
        .await
        .unwrap();
    }
    kill_leader(&mut cluster).await;
    let live = cluster.live_endpoints();
    let after_renewal = tokio::task::spawn_blocking(move || remaining(&live, &id))
        .await
        .unwrap();
    assert!(
        after_renewal >= TTL - 3,
        "a lease renewed just before a leader change got only {after_renewal} s (checkpointed {after_change} s before the renewal)"
    );
    eprintln!(
        "{TTL} s lease: {after_change} s left after a leader change 8 s in, {after_renewal} s after a renewal and another change"
    );
}

/// A keep-alive stream opened with clientv3's `WithRequireLeader` ("hasleader" metadata) on a
/// member that loses its quorum: one answer, then the stream ends with "no leader" after three
/// election timeouts, and a new one is refused at once — as etcd's interceptor does.
async fn leaderless_keep_alive(cluster: &mut Cluster) -> Vec<String> {
    use raftkv_proto::etcdserverpb::lease_client::LeaseClient;
    use raftkv_proto::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest};
    let endpoint = format!("http://{}", cluster.members[0].endpoint());
    let mut client = LeaseClient::connect(endpoint).await.expect("connecting");
    client
        .lease_grant(LeaseGrantRequest { ttl: 30, id: 0x5e })
        .await
        .expect("grant");
    let open = |client: &mut LeaseClient<tonic::transport::Channel>| {
        let mut client = client.clone();
        async move {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tx.send(LeaseKeepAliveRequest { id: 0x5e }).await.unwrap();
            let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            req.metadata_mut()
                .insert("hasleader", "true".parse().unwrap());
            let answers = client.lease_keep_alive(req).await;
            (tx, answers)
        }
    };
    let show = |r: Result<
        Option<raftkv_proto::etcdserverpb::LeaseKeepAliveResponse>,
        tonic::Status,
    >| match r {
        Ok(Some(a)) => format!("answer ttl={}", a.ttl),
        Ok(None) => "stream ended".to_string(),
        Err(s) => format!("error {:?}: {}", s.code(), s.message()),
    };
    let mut t = Vec::new();
    let (_tx, answers) = open(&mut client).await;
    let mut answers = answers.expect("keep-alive stream").into_inner();
    t.push(show(answers.message().await));
    cluster.kill(1);
    cluster.kill(2);
    match tokio::time::timeout(Duration::from_secs(20), answers.message()).await {
        Ok(r) => t.push(show(r)),
        Err(_) => t.push("still open after 20 s".into()),
    }
    let (_tx, again) = open(&mut client).await;
    t.push(match again {
        Err(s) => show(Err(s)),
        Ok(stream) => {
            let mut stream = stream.into_inner();
            match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
                Ok(r) => show(r),
                Err(_) => "a new stream stayed open".into(),
            }
        }
    });
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_requiring_a_leader_ends_when_the_member_loses_it() {
    let mut transcripts = Vec::new();
    for server in [Server::Raftkv, Server::Etcd] {
        let mut cluster = Cluster::start(server, 3, Options::default()).await;
        transcripts.push(leaderless_keep_alive(&mut cluster).await);
    }
    eprintln!("{:?}", transcripts[1]);
    compare(&transcripts[0], &transcripts[1]);
}
