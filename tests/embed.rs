//! The embedding API: a member inside this test's tokio runtime, read and written through
//! the in-process handle, and visible to the real etcdctl over the network.

use std::process::Command;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_member_serves_both_in_process_and_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let mut node = raftkv::NodeConfig::new("embedded", dir.path().join("data"));
    node.client_urls = vec![format!("http://127.0.0.1:{client}")];
    node.peer_urls = vec![format!("http://127.0.0.1:{peer}")];
    node.initial_cluster = [("embedded".to_string(), node.peer_urls.clone())].into();
    let member = raftkv::Member::start(raftkv::ServerConfig::new(node.clone()))
        .await
        .unwrap();
    let kv = member.kv();
    let put = kv.put("greeting", "hello").await.unwrap();
    assert_eq!(put.header.unwrap().revision, 2);
    assert_eq!(
        kv.get("greeting").await.unwrap().unwrap().value,
        "hello".as_bytes()
    );
    // etcd's errors, in-process too.
    let err = kv.put("", "x").await.unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: key is not provided");

    // The same member over the network, with the real etcdctl.
    let out = Command::new("etcdctl")
        .args([
            format!("--endpoints=127.0.0.1:{client}"),
            "get".into(),
            "greeting".into(),
            "--print-value-only".into(),
        ])
        .output()
        .expect("etcdctl (scripts/setup installs it)");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");

    assert_eq!(kv.delete("greeting").await.unwrap(), 1);
    drop(kv); // handles keep the store open
    member.shutdown().await;

    // Restarting from the same data dir resumes where it stopped.
    let member = raftkv::Member::start(raftkv::ServerConfig::new(node))
        .await
        .unwrap();
    let kv = member.kv();
    assert!(kv.get("greeting").await.unwrap().is_none());
    let put = kv.put("again", "x").await.unwrap();
    assert_eq!(put.header.unwrap().revision, 4);
    member.shutdown().await;
}

/// Watch in-process: a watcher from the past catches up, a live one gets each write,
/// the created answer comes first, and cancel / progress answer as over gRPC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_member_serves_watch_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let mut node = raftkv::NodeConfig::new("watched", dir.path().join("data"));
    node.client_urls = vec![format!("http://127.0.0.1:{client}")];
    node.peer_urls = vec![format!("http://127.0.0.1:{peer}")];
    node.initial_cluster = [("watched".to_string(), node.peer_urls.clone())].into();
    let member = raftkv::Member::start(raftkv::ServerConfig::new(node))
        .await
        .unwrap();
    let kv = member.kv();
    kv.put("w/1", "a").await.unwrap(); // 2
    kv.put("w/2", "b").await.unwrap(); // 3
    let mut past = kv.watch("w/", "w0", 1).await.unwrap();
    let created = past.next().await.unwrap();
    assert!(created.created && created.watch_id == 0);
    let caught_up = past.next().await.unwrap();
    let keys: Vec<_> = caught_up
        .events
        .iter()
        .map(|e| e.kv.as_ref().unwrap().key.clone())
        .collect();
    assert_eq!(keys, ["w/1", "w/2"]);
    let mut live = kv.watch("w/3", "", 0).await.unwrap();
    assert!(live.next().await.unwrap().created);
    kv.put("w/3", "c").await.unwrap(); // 4
    let event = live.next().await.unwrap();
    assert_eq!(event.header.unwrap().revision, 4);
    assert_eq!(event.events[0].kv.as_ref().unwrap().value, "c".as_bytes());
    live.request_progress().await.unwrap();
    let progress = live.next().await.unwrap();
    assert_eq!(
        (progress.watch_id, progress.header.unwrap().revision),
        (-1, 4)
    );
    live.cancel(0).await.unwrap();
    assert!(live.next().await.unwrap().canceled);
    drop((past, live, kv));
    member.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_member_serves_leases_locks_and_elections_in_process() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let mut node = raftkv::NodeConfig::new("embedded", dir.path().join("data"));
    node.client_urls = vec![format!("http://127.0.0.1:{client}")];
    node.peer_urls = vec![format!("http://127.0.0.1:{peer}")];
    node.initial_cluster = [("embedded".to_string(), node.peer_urls.clone())].into();
    let member = raftkv::Member::start(raftkv::ServerConfig::new(node))
        .await
        .unwrap();
    let kv = member.kv();

    // Leases: grant, attach, renew, inspect, revoke (the key goes with it).
    let granted = kv.lease_grant(60, 0x77).await.unwrap();
    assert_eq!((granted.id, granted.ttl), (0x77, 60));
    let dup = kv.lease_grant(60, 0x77).await.unwrap_err();
    assert_eq!(dup.to_string(), "etcdserver: lease already exists");
    kv.put_with_lease("leased", "v", 0x77).await.unwrap();
    assert_eq!(kv.lease_keep_alive(0x77).await.unwrap(), 60);
    assert_eq!(kv.lease_keep_alive(0x78).await.unwrap(), 0);
    let ttl = kv.lease_time_to_live(0x77, true).await.unwrap();
    assert_eq!((ttl.granted_ttl, ttl.keys.len()), (60, 1));
    assert_eq!(kv.leases().await.unwrap(), vec![0x77]);
    let err = kv.put_with_lease("x", "v", 0x78).await.unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: requested lease not found");
    kv.lease_revoke(0x77).await.unwrap();
    assert!(kv.get("leased").await.unwrap().is_none());
    assert_eq!(kv.lease_time_to_live(0x77, false).await.unwrap().ttl, -1);

    // Locks: the second holder waits for the first to unlock.
    kv.lease_grant(60, 0xa).await.unwrap();
    kv.lease_grant(60, 0xb).await.unwrap();
    let first = kv.lock("mutex", 0xa).await.unwrap();
    assert_eq!(&first.key[..], b"mutex/a");
    let waiter = tokio::spawn({
        let kv = kv.clone();
        async move { kv.lock("mutex", 0xb).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "the lock was granted twice");
    let unlocked = kv.unlock(first.key.clone()).await.unwrap();
    let second = waiter.await.unwrap().unwrap();
    assert_eq!(&second.key[..], b"mutex/b");
    assert!(second.header.unwrap().revision >= unlocked.header.unwrap().revision);
    let err = kv.lock("mutex", 0x404).await.unwrap_err();
    assert_eq!(
        (err.code(), err.to_string().as_str()),
        (
            Some(raftkv::Code::Unknown),
            "etcdserver: requested lease not found"
        )
    );

    // Elections: campaign, observe, proclaim, resign.
    let err = kv.leader("vote").await.unwrap_err();
    assert_eq!(err.to_string(), "election: no leader");
    let won = kv.campaign("vote", 0xa, "one").await.unwrap();
    let leader = won.leader.unwrap();
    let mut observe = kv.observe("vote");
    let seen = observe.next().await.unwrap().kv.unwrap();
    assert_eq!(&seen.value[..], b"one");
    kv.proclaim(leader.clone(), "two").await.unwrap();
    let seen = observe.next().await.unwrap().kv.unwrap();
    assert_eq!(&seen.value[..], b"two");
    let now = kv.leader("vote").await.unwrap().kv.unwrap();
    assert_eq!(
        (&now.key[..], &now.value[..]),
        (&b"vote/a"[..], &b"two"[..])
    );
    kv.resign(leader.clone()).await.unwrap();
    let err = kv.proclaim(leader, "three").await.unwrap_err();
    assert_eq!(err.to_string(), "election: not leader");
    drop(observe);
    drop(kv);
    member.shutdown().await;
}

/// A port below Linux's ephemeral range that is free now and not handed out before.
fn fixed_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    loop {
        let i = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = 25_000 + (std::process::id() as u16 % 3000 + i) % 7000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// PEM of a self-signed CA, and of a certificate it signs for `sans` (and its key).
fn issue(
    ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    sans: &[&str],
    usage: rcgen::ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params =
        rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.extended_key_usages = vec![usage];
    let key = rcgen::KeyPair::generate().unwrap();
    (
        params.signed_by(&key, ca).unwrap().pem(),
        key.serialize_pem(),
    )
}

fn ca() -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
}

/// An embedded member serving `https://` with client certificates required, and the Rust
/// client with a `TlsConfig`: in with the CA's client certificate, out without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_member_serves_tls_to_the_rust_client() {
    use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let (server_cert, server_key) = issue(&ca, &["127.0.0.1"], ServerAuth);
    let (client_cert, client_key) = issue(&ca, &[], ClientAuth);
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (client, peer) = (fixed_port(), fixed_port());
    let url = format!("https://127.0.0.1:{client}");
    let mut node = raftkv::NodeConfig::new("tls", dir.path().join("data"));
    node.client_urls = vec![url.clone()];
    node.peer_urls = vec![format!("http://127.0.0.1:{peer}")];
    node.initial_cluster = [("tls".to_string(), node.peer_urls.clone())].into();
    let mut config = raftkv::ServerConfig::new(node);
    config.client_tls = raftkv::ClientTls {
        cert_file: file("server.crt", &server_cert),
        key_file: file("server.key", &server_key),
        trusted_ca_file: file("ca.crt", &ca.pem()),
        client_cert_auth: true,
        ..Default::default()
    };
    let member = raftkv::Member::start(config).await.unwrap();

    let tls = raftkv::client::TlsConfig::new()
        .ca_pem(ca.pem())
        .identity_pem(client_cert, client_key);
    let c = raftkv::Client::new([url.clone()]).with_tls(&tls).unwrap();
    let mut put = c.put("k", "v").await;
    for _ in 0..50 {
        if put.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        put = c.put("k", "v").await;
    }
    put.unwrap();
    assert_eq!(c.get("k").await.unwrap().unwrap().value, b"v".to_vec());
    // No client certificate: refused in the handshake.
    let anonymous = raftkv::Client::new([url.clone()])
        .with_tls(&raftkv::client::TlsConfig::new().ca_pem(ca.pem()))
        .unwrap();
    assert!(anonymous.get("k").await.is_err());
    // A server the trusted CA did not sign: refused by the client.
    let stranger = raftkv::Client::new([url])
        .with_tls(&raftkv::client::TlsConfig::new().ca_pem(self::ca().pem()))
        .unwrap();
    assert!(stranger.get("k").await.is_err());
    member.shutdown().await;
}
