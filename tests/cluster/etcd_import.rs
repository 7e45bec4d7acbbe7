//! From etcd to raftkv by snapshot: a real etcd is loaded (puts, overwrites, deletes, a
//! txn, leases, a compaction, users and roles with auth on), the real etcdctl saves its
//! snapshot, raftkvctl reports the same status as etcdctl and restores it into a new
//! 3-member raftkv cluster. Every key with its revisions and lease, the history above the
//! compaction, the leases and the auth store then answer as they did on etcd, and writes
//! continue from etcd's revision.

use serde_json::Value;

use crate::fixture::{Cluster, Options, Server, etcdctl, etcdctl_ok, raftkvctl};

const ROOT: &str = "--user=root:rootpw";

/// What the source answered, to compare the restored cluster with.
struct Answers {
    revision: i64,
    compacted: i64,
    all: Value,
    at_history: Value,
    lease_ids: Vec<String>,
    lease_keys: Vec<String>,
    users: String,
    reader: String,
    refused_without_user: String,
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// A range's kvs and count (the header names another cluster and member).
fn kvs(eps: &str, args: &[&str]) -> Value {
    let mut full = vec![ROOT, "get", "-w", "json"];
    full.extend_from_slice(args);
    let v = json(&etcdctl_ok(eps, &full));
    serde_json::json!({ "kvs": v["kvs"], "count": v["count"], "revision": v["header"]["revision"] })
}

fn answers(eps: &str, history: i64, lease: &str, compacted: i64) -> Answers {
    let all = kvs(eps, &["", "--from-key"]);
    let at_history = kvs(eps, &["", "--from-key", &format!("--rev={history}")]);
    let mut lease_ids: Vec<String> = etcdctl_ok(eps, &[ROOT, "lease", "list"])
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect();
    lease_ids.sort();
    let ttl = json(&etcdctl_ok(
        eps,
        &[ROOT, "lease", "timetolive", lease, "--keys", "-w", "json"],
    ));
    let mut lease_keys: Vec<String> = ttl["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    lease_keys.sort();
    let refused = etcdctl(eps, &["get", "a"], None);
    Answers {
        revision: all["revision"].as_i64().unwrap(),
        compacted,
        all,
        at_history,
        lease_ids,
        lease_keys,
        users: etcdctl_ok(eps, &[ROOT, "user", "list"]),
        reader: etcdctl_ok(eps, &[ROOT, "role", "get", "reader"]),
        // The last line: etcdctl's log line before it carries a time stamp.
        refused_without_user: String::from_utf8_lossy(&refused.stderr)
            .lines()
            .last()
            .unwrap_or_default()
            .to_string(),
    }
}

fn revision_of(out: &str) -> i64 {
    json(out)["header"]["revision"].as_i64().unwrap()
}

/// The load both directions start from: puts in three prefixes, overwrites, a txn, two
/// leases (one with keys), a deleted prefix, a compaction, writes after it, and users and
/// roles with auth on. Returns the leased lease's id and the compacted revision.
fn load(eps: &str) -> (String, i64) {
    for i in 0..150 {
        etcdctl_ok(
            eps,
            &[
                "put",
                &format!("/app/{}/key{i:03}", i % 3),
                &format!("value-{i}-{}", "x".repeat(i % 40)),
            ],
        );
    }
    for i in (0..150).step_by(7) {
        etcdctl_ok(eps, &["put", &format!("/app/{}/key{i:03}", i % 3), "again"]);
    }
    // A txn: two puts at one revision (subs 0 and 1 in etcd's key bucket).
    let txn = etcdctl(eps, &["txn"], Some("\nput /txn/a 1\nput /txn/b 2\n\n\n"));
    assert!(
        txn.status.success(),
        "{}",
        String::from_utf8_lossy(&txn.stderr)
    );
    let lease = etcdctl_ok(eps, &["lease", "grant", "600"])
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    etcdctl_ok(eps, &["lease", "grant", "900"]);
    etcdctl_ok(
        eps,
        &["put", "/leased/1", "l1", &format!("--lease={lease}")],
    );
    etcdctl_ok(
        eps,
        &["put", "/leased/2", "l2", &format!("--lease={lease}")],
    );
    etcdctl_ok(eps, &["del", "/app/2/", "--prefix"]);
    let compacted = revision_of(&etcdctl_ok(eps, &["put", "/mark", "m", "-w", "json"]));
    etcdctl_ok(eps, &["compact", &compacted.to_string()]);
    for i in 0..20 {
        etcdctl_ok(eps, &["put", &format!("/app/0/key{i:03}"), "after"]);
    }
    etcdctl_ok(eps, &["del", "/app/1/key001"]);
    for args in [
        &["user", "add", "root:rootpw", "--interactive=false"][..],
        &["user", "add", "alice:alicepw", "--interactive=false"],
        &["role", "add", "reader"],
        &[
            "role",
            "grant-permission",
            "reader",
            "read",
            "/app/",
            "--prefix",
        ],
        &["user", "grant-role", "alice", "reader"],
        &["auth", "enable"],
    ] {
        etcdctl_ok(eps, args);
    }
    (lease, compacted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_snapshot_restores_into_raftkv_with_revisions_leases_and_users() {
    let backup = tempfile::tempdir().unwrap();
    let file = backup.path().join("etcd.db");
    let file_arg = file.to_str().unwrap().to_string();

    let (source, lease) = {
        let etcd = Cluster::start(Server::Etcd, 1, Options::default()).await;
        let eps = etcd.endpoints();
        let (lease, compacted) = load(&eps);
        let source = answers(&eps, compacted + 5, &lease, compacted);
        assert_eq!(source.lease_ids.len(), 2);
        assert_eq!(source.lease_keys.len(), 2, "{:?}", source.lease_keys);

        let out = etcdctl(
            &etcd.members[0].endpoint(),
            &[ROOT, "snapshot", "save", &file_arg],
            None,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        // raftkvctl saves etcd's snapshot too, and both tools report the same status of
        // both files, in every output format.
        let own = backup.path().join("own.db");
        let own_arg = own.to_str().unwrap();
        let ep = format!("--endpoints={}", etcd.members[0].endpoint());
        let saved = raftkvctl(&[&ep, ROOT, "snapshot", "save", own_arg]);
        assert!(
            saved.status.success(),
            "{}",
            String::from_utf8_lossy(&saved.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&saved.stdout).trim(),
            format!("Snapshot saved at {own_arg}")
        );
        for path in [file_arg.as_str(), own_arg] {
            for format in ["simple", "table", "json"] {
                let theirs = etcdctl(&eps, &["snapshot", "status", path, "-w", format], None);
                let ours = raftkvctl(&["snapshot", "status", path, "-w", format]);
                assert!(
                    ours.status.success(),
                    "{}",
                    String::from_utf8_lossy(&ours.stderr)
                );
                assert_eq!(
                    String::from_utf8_lossy(&ours.stdout),
                    String::from_utf8_lossy(&theirs.stdout),
                    "status of {path} -w {format}"
                );
            }
        }
        (source, lease)
    };

    // A damaged copy is refused by restore, as etcdctl refuses it.
    let mut damaged = std::fs::read(&file).unwrap();
    let n = damaged.len();
    damaged[n / 2] ^= 0x40;
    let damaged_path = backup.path().join("damaged.db");
    std::fs::write(&damaged_path, &damaged).unwrap();
    let target = backup.path().join("never");
    let out = raftkvctl(&[
        "snapshot",
        "restore",
        damaged_path.to_str().unwrap(),
        "--data-dir",
        target.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!target.exists());

    let restored = Cluster::start_prepared(
        Server::Raftkv,
        3,
        Options::default(),
        |m, initial, token| {
            let out = raftkvctl(&[
                "snapshot",
                "restore",
                &file_arg,
                "--name",
                &m.name,
                "--data-dir",
                m.data_dir.to_str().unwrap(),
                "--initial-cluster",
                initial,
                "--initial-cluster-token",
                token,
                "--initial-advertise-peer-urls",
                &m.peer_url(),
            ]);
            assert!(
                out.status.success(),
                "restore for {}: {}",
                m.name,
                String::from_utf8_lossy(&out.stderr)
            );
            let said = String::from_utf8_lossy(&out.stderr);
            assert!(said.contains("imported etcd snapshot"), "{said}");
            assert!(said.contains("2 leases, 2 users, 2 roles"), "{said}");
        },
    )
    .await;

    for i in 0..3 {
        let eps = restored.members[i].endpoint();
        let got = answers(&eps, source.compacted + 5, &lease, source.compacted);
        assert_same(&got, &source, &format!("raftkv member {i}"));
        // Below the compaction, refused as etcd refused it.
        let old = etcdctl(
            &eps,
            &[
                ROOT,
                "get",
                "/app/0/key000",
                &format!("--rev={}", source.compacted - 1),
            ],
            None,
        );
        assert!(!old.status.success());
        assert!(
            String::from_utf8_lossy(&old.stderr).contains("required revision has been compacted"),
            "{}",
            String::from_utf8_lossy(&old.stderr)
        );
    }
    // alice reads with her role, and the cluster takes writes from etcd's revision on.
    let alice = etcdctl_ok(
        &restored.endpoints(),
        &["--user=alice:alicepw", "get", "/app/0/key000"],
    );
    assert!(alice.contains("after"), "{alice}");
    let put = etcdctl_ok(
        &restored.endpoints(),
        &[ROOT, "put", "/new", "1", "-w", "json"],
    );
    assert_eq!(revision_of(&put), source.revision + 1);
    // Revoking the imported lease deletes the keys etcd had attached to it.
    etcdctl_ok(&restored.endpoints(), &[ROOT, "lease", "revoke", &lease]);
    let left = kvs(&restored.endpoints(), &["/leased/", "--prefix"]);
    // etcdctl's JSON leaves out a count of 0 and an empty kvs.
    assert!(left["count"].is_null() && left["kvs"].is_null(), "{left}");
    assert_eq!(left["revision"], Value::from(source.revision + 2), "{left}");
}

/// The bbolt files raftkv writes (its tests' and fuzz seeds' etcd-like snapshots) pass the
/// real etcdctl's integrity check, and both tools report the same status of them: the
/// reader and the writer agree with bbolt, not only with each other.
#[test]
fn etcdctl_reads_the_bolt_files_raftkv_writes() {
    use raftkv_storage::etcd::{bolt_writer, samples};
    let dir = tempfile::tempdir().unwrap();
    let many: Vec<_> = (0..5000u32)
        .map(|i| {
            (
                format!("k{i:06}").into_bytes(),
                vec![b'v'; (i % 300) as usize],
            )
        })
        .collect();
    let large = vec![(b"one".to_vec(), vec![7u8; 50_000])];
    let files = [
        samples::snapshot(None),
        samples::seal(bolt_writer::write(
            &[(b"data".to_vec(), many), (b"large".to_vec(), large)],
            4096,
        )),
    ];
    for (i, bytes) in files.iter().enumerate() {
        let path = dir.path().join(format!("{i}.db"));
        std::fs::write(&path, bytes).unwrap();
        let path = path.to_str().unwrap();
        let theirs = etcdctl(
            "127.0.0.1:1",
            &["snapshot", "status", path, "-w", "json"],
            None,
        );
        assert!(
            theirs.status.success(),
            "file {i}: {}",
            String::from_utf8_lossy(&theirs.stderr)
        );
        let ours = raftkvctl(&["snapshot", "status", path, "-w", "json"]);
        assert_eq!(
            String::from_utf8_lossy(&ours.stdout),
            String::from_utf8_lossy(&theirs.stdout),
            "file {i}"
        );
    }
}

/// Compares what `got` answers with what `source` answered, for member `who`.
fn assert_same(got: &Answers, source: &Answers, who: &str) {
    assert_eq!(got.all, source.all, "{who}: every key and its revisions");
    assert_eq!(got.at_history, source.at_history, "{who}: history");
    assert_eq!(got.lease_ids, source.lease_ids, "{who}: leases");
    assert_eq!(got.lease_keys, source.lease_keys, "{who}: leased keys");
    assert_eq!(got.users, source.users, "{who}: users");
    assert_eq!(got.reader, source.reader, "{who}: role");
    assert_eq!(
        got.refused_without_user, source.refused_without_user,
        "{who}: auth is on"
    );
}

/// The way back: a loaded raftkv cluster's snapshot, exported with `raftkvctl snapshot
/// export`, restored by the real `etcdctl snapshot restore` into a new 3-member etcd that
/// then answers as raftkv did and takes writes from raftkv's revision on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raftkv_snapshot_exports_to_an_etcd_that_etcdctl_restores() {
    let backup = tempfile::tempdir().unwrap();
    let own = backup.path().join("raftkv.snap");
    let own_arg = own.to_str().unwrap().to_string();
    let exported = backup.path().join("etcd.db");
    let exported_arg = exported.to_str().unwrap().to_string();

    let (source, lease) = {
        let raftkv = Cluster::start(Server::Raftkv, 3, Options::default()).await;
        let eps = raftkv.endpoints();
        let (lease, compacted) = load(&eps);
        let source = answers(&eps, compacted + 5, &lease, compacted);
        let ep = format!("--endpoints={}", raftkv.members[0].endpoint());
        let saved = raftkvctl(&[&ep, ROOT, "snapshot", "save", &own_arg]);
        assert!(
            saved.status.success(),
            "{}",
            String::from_utf8_lossy(&saved.stderr)
        );
        (source, lease)
    };

    let out = raftkvctl(&[
        "snapshot",
        "export",
        &own_arg,
        &exported_arg,
        "--format",
        "etcd",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("2 leases at revision {}", source.revision)),
        "{said}"
    );
    // etcdctl checks the file's pages and reports what raftkvctl reports.
    let theirs = etcdctl(
        "127.0.0.1:1",
        &["snapshot", "status", &exported_arg, "-w", "json"],
        None,
    );
    assert!(
        theirs.status.success(),
        "{}",
        String::from_utf8_lossy(&theirs.stderr)
    );
    let ours = raftkvctl(&["snapshot", "status", &exported_arg, "-w", "json"]);
    assert_eq!(
        String::from_utf8_lossy(&ours.stdout),
        String::from_utf8_lossy(&theirs.stdout)
    );
    assert!(
        String::from_utf8_lossy(&theirs.stdout)
            .contains(&format!("\"revision\":{}", source.revision)),
        "{}",
        String::from_utf8_lossy(&theirs.stdout)
    );
    let bad = raftkvctl(&["snapshot", "export", &own_arg, "x.db", "--format", "bbolt"]);
    assert!(!bad.status.success());

    let etcd = Cluster::start_prepared(Server::Etcd, 3, Options::default(), |m, initial, token| {
        let out = etcdctl(
            "127.0.0.1:1",
            &[
                "snapshot",
                "restore",
                &exported_arg,
                "--name",
                &m.name,
                "--data-dir",
                m.data_dir.to_str().unwrap(),
                "--initial-cluster",
                initial,
                "--initial-cluster-token",
                token,
                "--initial-advertise-peer-urls",
                &m.peer_url(),
            ],
            None,
        );
        assert!(
            out.status.success(),
            "etcdctl restore for {}: {}",
            m.name,
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .await;
    for i in 0..3 {
        let eps = etcd.members[i].endpoint();
        let got = answers(&eps, source.compacted + 5, &lease, source.compacted);
        assert_same(&got, &source, &format!("etcd member {i}"));
    }
    let put = etcdctl_ok(&etcd.endpoints(), &[ROOT, "put", "/new", "1", "-w", "json"]);
    assert_eq!(revision_of(&put), source.revision + 1);
    etcdctl_ok(&etcd.endpoints(), &[ROOT, "lease", "revoke", &lease]);
    let left = kvs(&etcd.endpoints(), &["/leased/", "--prefix"]);
    assert!(left["kvs"].is_null(), "{left}");
}
