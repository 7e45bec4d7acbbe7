//! Backup and restore: the real etcdctl saves a snapshot of a loaded 3-member raftkv
//! cluster, raftkvctl reports its status, and restoring it into a new 3-member cluster gives
//! back every key at the same revision.

use crate::fixture::{Cluster, Options, Server, etcdctl, etcdctl_ok, raftkvctl};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_save_raftkvctl_status_and_restore_into_a_new_cluster() {
    let backup = tempfile::tempdir().unwrap();
    let file = backup.path().join("backup.db");
    let file_arg = file.to_str().unwrap().to_string();
    let (revision, expected) = {
        let cluster = Cluster::start(Server::Raftkv, 3, Options::default()).await;
        let eps = cluster.endpoints();
        // A transaction-sized load: 300 keys in 3 prefixes, some overwritten, some deleted.
        for i in 0..300 {
            let out = etcdctl(
                &eps,
                &[
                    "put",
                    &format!("/app/{}/key{i:03}", i % 3),
                    &format!("value-{i}-{}", "x".repeat(i % 50)),
                ],
                None,
            );
            assert!(out.status.success());
        }
        for i in (0..300).step_by(7) {
            etcdctl_ok(
                &eps,
                &["put", &format!("/app/{}/key{i:03}", i % 3), "overwritten"],
            );
        }
        etcdctl_ok(&eps, &["del", "/app/2/", "--prefix"]);
        let expected = etcdctl_ok(&eps, &["get", "", "--from-key"]);
        let status = etcdctl_ok(&eps, &["endpoint", "status", "-w", "json"]);
        let revision: i64 = status
            .split("\"revision\":")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|r| r.parse().ok())
            .expect("revision in endpoint status");
        let out = etcdctl(
            &cluster.members[0].endpoint(),
            &["snapshot", "save", &file_arg],
            None,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // raftkvctl saves the same data (to FILE.part, fsynced, renamed, then verified).
        let own = backup.path().join("own.db");
        let own_arg = own.to_str().unwrap();
        let ep = format!("--endpoints={}", cluster.members[1].endpoint());
        let saved = raftkvctl(&[&ep, "snapshot", "save", own_arg]);
        assert!(
            saved.status.success(),
            "{}",
            String::from_utf8_lossy(&saved.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&saved.stdout).trim(),
            format!("Snapshot saved at {own_arg}")
        );
        assert!(!backup.path().join("own.db.part").exists());
        let own_status =
            String::from_utf8_lossy(&raftkvctl(&["snapshot", "status", own_arg]).stdout)
                .to_string();
        assert!(
            own_status.contains(&format!(", {revision}, 200, ")),
            "{own_status}"
        );
        (revision, expected)
    };

    // raftkvctl reads what etcdctl saved.
    let status = raftkvctl(&["snapshot", "status", &file_arg, "-w", "json"]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let json = String::from_utf8_lossy(&status.stdout);
    assert!(json.contains(&format!("\"revision\":{revision}")), "{json}");
    assert!(json.contains("\"totalKey\":200"), "{json}");
    let table = String::from_utf8_lossy(
        &raftkvctl(&["snapshot", "status", &file_arg, "-w", "table"]).stdout,
    )
    .to_string();
    assert!(
        table.contains("|   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |")
            || table.contains("| HASH"),
        "{table}"
    );

    // Restore into each member of a new cluster, then start it.
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
            // Restoring over an existing data dir is refused.
            let again = raftkvctl(&[
                "snapshot",
                "restore",
                &file_arg,
                "--name",
                &m.name,
                "--data-dir",
                m.data_dir.to_str().unwrap(),
                "--initial-cluster",
                initial,
                "--initial-advertise-peer-urls",
                &m.peer_url(),
            ]);
            assert!(!again.status.success());
            assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
        },
    )
    .await;
    for i in 0..3 {
        let got = etcdctl_ok(&restored.members[i].endpoint(), &["get", "", "--from-key"]);
        assert_eq!(got, expected, "member {i} after restore");
    }
    // Same revision, and the cluster takes writes from there on.
    let put = etcdctl_ok(
        &restored.endpoints(),
        &["put", "after-restore", "1", "-w", "json"],
    );
    assert!(
        put.contains(&format!("\"revision\":{}", revision + 1)),
        "{put}"
    );

    // A file that is not ours gets a clear error.
    std::fs::write(backup.path().join("bolt.db"), vec![0u8; 16384 + 32]).unwrap();
    let out = raftkvctl(&[
        "snapshot",
        "status",
        backup.path().join("bolt.db").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "Error: not a raftkv or etcd snapshot file (bad magic)"
    );
}
