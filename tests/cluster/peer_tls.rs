//! TLS on the peer port, with TLS on the client port too, each test run against a raftkv
//! cluster and a real etcd 3.4 cluster with the same flags and certificates (made here with
//! rcgen: a CA, another CA, a certificate per member, a client certificate), outcomes
//! compared: a TLS cluster with peer client-certificate auth serves, strangers on the peer
//! port change nothing, a member whose certificate comes from another CA cannot join,
//! certificate files replaced on disk are presented from the next handshake on, and bad
//! settings stop both servers with the same message.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use crate::fixture::{Cluster, Options, Server, assert_no_differences, etcdctl, raftkv_bin};
use crate::tls::{ca, run_to_exit};

/// The certificates of one test run, in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    other: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    /// `ca.crt`, `other-ca.crt`, `client.crt/key` (CN "client", from the CA),
    /// `stranger.crt/key` (from the other CA), and member certificates `m1`..`m3`.
    fn new() -> Self {
        let pki = Pki {
            dir: tempfile::tempdir().expect("cert dir"),
            ca: ca("raftkv test CA"),
            other: ca("another CA"),
        };
        pki.write("ca.crt", pki.ca.pem().as_bytes());
        pki.write("other-ca.crt", pki.other.pem().as_bytes());
        pki.issue(
            "client",
            900,
            false,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        pki.issue(
            "stranger",
            901,
            true,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        for i in 1..=3 {
            pki.member(&format!("m{i}"), i, false);
        }
        pki
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(name)).expect("cert file")
    }

    /// Writes `name` by renaming a new file over it, as a rotation replaces files.
    fn write(&self, name: &str, bytes: &[u8]) {
        let tmp = self.dir.path().join(format!(".{name}.new"));
        std::fs::write(&tmp, bytes).expect("write");
        std::fs::rename(&tmp, self.dir.path().join(name)).expect("rename");
    }

    /// A member's `<name>.crt` and `<name>.key`: for 127.0.0.1 and localhost, server and
    /// client auth, with `serial`, from the CA (or the other CA); the certificate's DER.
    fn member(&self, name: &str, serial: u64, other_ca: bool) -> Vec<u8> {
        self.issue(
            name,
            serial,
            other_ca,
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    fn issue(
        &self,
        name: &str,
        serial: u64,
        other_ca: bool,
        sans: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> Vec<u8> {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.serial_number = Some(SerialNumber::from(serial));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if usage != ExtendedKeyUsagePurpose::ClientAuth {
            params.extended_key_usages.push(usage);
        }
        let key = KeyPair::generate().expect("key");
        let issuer = if other_ca { &self.other } else { &self.ca };
        let cert = params.signed_by(&key, issuer).expect("signed");
        // The key first: a server that reads the pair in between sees the new key with the
        // old certificate, which does not match, and keeps presenting the old pair.
        self.write(&format!("{name}.key"), key.serialize_pem().as_bytes());
        self.write(&format!("{name}.crt"), cert.pem().as_bytes());
        cert.der().to_vec()
    }

    /// TLS on both ports with client-certificate auth, each member with its own
    /// certificate (`{name}` is the member's name).
    fn flags(&self) -> Vec<String> {
        let member = |ext: &str| self.file(&format!("{{name}}.{ext}"));
        vec![
            format!("--cert-file={}", member("crt")),
            format!("--key-file={}", member("key")),
            format!("--trusted-ca-file={}", self.file("ca.crt")),
            "--client-cert-auth".into(),
            format!("--peer-cert-file={}", member("crt")),
            format!("--peer-key-file={}", member("key")),
            format!("--peer-trusted-ca-file={}", self.file("ca.crt")),
            "--peer-client-cert-auth".into(),
        ]
    }

    /// etcdctl over TLS with the client certificate, against member `i`'s https:// URL.
    fn etcdctl(&self, cluster: &Cluster, i: usize, args: &[&str]) -> String {
        let tls = [
            format!("--cacert={}", self.file("ca.crt")),
            format!("--cert={}", self.file("client.crt")),
            format!("--key={}", self.file("client.key")),
            "--dial-timeout=2s".into(),
            "--command-timeout=5s".into(),
        ];
        let mut all: Vec<&str> = tls.iter().map(String::as_str).collect();
        all.extend(args);
        let url = cluster.members[i].secure_url().expect("https client URL");
        let out = etcdctl(&url, &all, None);
        format!(
            "exit {:?} {}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

async fn start(server: Server, pki: &Pki) -> Cluster {
    let opts = Options {
        extra_args: pki.flags(),
        secure_client: true,
        secure_peer: true,
        ..Options::default()
    };
    Cluster::start(server, 3, opts).await
}

/// What a TLS client saw of a server: whether it got through to the server's protocol, and
/// the certificate the server presented.
#[derive(Debug, PartialEq, Eq)]
enum Probe {
    /// The handshake held and the server answered (`leaf`: its certificate, DER).
    Answered { leaf: Vec<u8> },
    /// The handshake failed, or the server closed the connection without answering.
    Refused,
}

/// A TLS connection to 127.0.0.1:`port` trusting `ca` (PEM), presenting `identity` (cert
/// and key PEM) if given, then a request in `server`'s peer protocol (raftkv: the HTTP/2
/// preface; etcd's peer port: HTTP/1.1, its gRPC there does not serve over TLS).
async fn probe(server: Server, port: u16, ca: &[u8], identity: Option<(&[u8], &[u8])>) -> Probe {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca) {
        roots.add(cert.expect("CA PEM")).expect("CA");
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .expect("cert PEM");
            let key = PrivateKeyDer::from_pem_slice(key).expect("key PEM");
            builder.with_client_auth_cert(chain, key).expect("identity")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let connect = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp);
    let Ok(Ok(mut tls)) = tokio::time::timeout(Duration::from_secs(5), connect).await else {
        return Probe::Refused;
    };
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let (request, answer): (&[u8], &[u8]) = match server {
        // The preface and an empty SETTINGS frame; the answer starts with the server's
        // SETTINGS frame (type 4 at byte 3).
        Server::Raftkv => (
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0",
            b"\x04",
        ),
        Server::Etcd => (b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n", b"P"),
    };
    if tls.write_all(request).await.is_err() {
        return Probe::Refused;
    }
    let mut head = [0u8; 4];
    match tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut head)).await {
        Ok(Ok(_)) if head[3..] == *answer => Probe::Answered { leaf },
        _ => Probe::Refused,
    }
}

/// Bytes that are not TLS, on a plain connection: whether the server closed it.
async fn garbage(port: u16) -> &'static str {
    let mut tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let junk: Vec<u8> = (0..4096u32).map(|i| (i * 31 + 7) as u8).collect();
    let _ = tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    let _ = tcp.write_all(&junk).await;
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return "closed",
            Ok(Ok(_)) => continue, // an alert, say; wait for the close
            Err(_) => return "left open",
        }
    }
}

/// Connections that start a TLS handshake and stall: silent, or a ClientHello cut short.
async fn stalled(port: u16, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for i in 0..n {
        let mut tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        if i % 2 == 1 {
            let _ = tcp
                .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03])
                .await;
        }
        held.push(tcp);
    }
    held
}

/// `text` with every hex word of 8 or more digits (member and cluster ids) as `<id>`, words
/// joined by one space: etcdctl pads ids to 16 columns (`%16x`), so an id with leading zero
/// digits comes with extra spaces.
fn mask_ids(text: &str) -> String {
    text.split_whitespace()
        .map(|w| {
            if w.len() >= 8 && w.bytes().all(|b| b.is_ascii_hexdigit()) {
                "<id>"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `get <key> -w json`'s header revision.
fn revision(pki: &Pki, cluster: &Cluster, key: &str) -> u64 {
    let out = pki.etcdctl(cluster, 0, &["get", key, "-w", "json"]);
    let json = out
        .find('{')
        .and_then(|i| out[i..].lines().next())
        .unwrap_or_else(|| panic!("no JSON in {out}"));
    let v: serde_json::Value = serde_json::from_str(json).expect("JSON");
    v["header"]["revision"].as_u64().expect("revision")
}

/// Runs `session` against a raftkv cluster and then an etcd cluster (3 members, TLS on
/// both ports, the same certificates) and compares what each returned.
async fn differential<F, Fut>(session: F)
where
    F: Fn(Server, Arc<Pki>, Cluster) -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    let mut runs = Vec::new();
    for server in [Server::Raftkv, Server::Etcd] {
        let pki = Arc::new(Pki::new());
        let cluster = start(server, &pki).await;
        runs.push(session(server, pki, cluster).await);
    }
    let (raftkv, etcd) = (&runs[0], &runs[1]);
    assert_eq!(
        raftkv.len(),
        etcd.len(),
        "raftkv: {raftkv:#?}\netcd: {etcd:#?}"
    );
    let differences: Vec<String> = raftkv
        .iter()
        .zip(etcd)
        .filter(|(r, e)| r != e)
        .map(|(r, e)| format!("raftkv:\n{r}\netcd:\n{e}\n"))
        .collect();
    assert_no_differences(&differences);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_cluster_serves_and_strangers_on_the_peer_port_change_nothing() {
    differential(|server, pki, cluster| async move {
        let mut out = Vec::new();
        out.push(pki.etcdctl(&cluster, 0, &["put", "a", "1"]));
        for i in 0..3 {
            out.push(pki.etcdctl(&cluster, i, &["get", "a"]));
        }
        let before = revision(&pki, &cluster, "a");
        let ca = pki.read("ca.crt");
        let (client, client_key) = (pki.read("client.crt"), pki.read("client.key"));
        let (stranger, stranger_key) = (pki.read("stranger.crt"), pki.read("stranger.key"));
        for m in &cluster.members {
            let port = m.peer_port;
            let _held = stalled(port, 20).await;
            out.push(format!("plain bytes: {}", garbage(port).await));
            let none = probe(server, port, &ca, None).await;
            out.push(format!("TLS without a certificate: {none:?}"));
            let other = probe(server, port, &ca, Some((&stranger, &stranger_key))).await;
            out.push(format!("a certificate from another CA: {other:?}"));
            // The control: a certificate from the CA gets through, stalled handshakes or not.
            let trusted = probe(server, port, &ca, Some((&client, &client_key))).await;
            let own = pki.read(&format!("{}.crt", m.name));
            let own = CertificateDer::from_pem_slice(&own).expect("PEM").to_vec();
            out.push(format!(
                "a certificate from the CA: {}",
                match trusted {
                    Probe::Answered { leaf } if leaf == own =>
                        "answered, with the member's own certificate",
                    Probe::Answered { .. } => "answered, with another certificate",
                    Probe::Refused => "refused",
                }
            ));
        }
        assert_eq!(
            revision(&pki, &cluster, "a"),
            before,
            "strangers wrote nothing"
        );
        for i in 0..3 {
            out.push(pki.etcdctl(&cluster, i, &["put", &format!("k{i}"), "v"]));
        }
        for i in 0..3 {
            out.push(pki.etcdctl(&cluster, i, &["get", "k", "--prefix"]));
        }
        let members = pki.etcdctl(&cluster, 2, &["member", "list"]);
        out.push(format!("members: {}", members.lines().count()));
        assert!(cluster.members.iter().all(|m| m.is_running()));
        out
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_whose_certificate_comes_from_another_ca_cannot_join() {
    differential(|_server, pki, mut cluster| async move {
        let mut out = Vec::new();
        let (client_port, peer_port) = (crate::fixture::free_port(), crate::fixture::free_port());
        let url = format!("https://127.0.0.1:{peer_port}");
        // etcd refuses to add a voting member until its members have been connected for a
        // while ("etcdserver: unhealthy cluster"); both are asked until they accept.
        let mut added = String::new();
        for _ in 0..40 {
            added = pki.etcdctl(
                &cluster,
                0,
                &["member", "add", "m4", &format!("--peer-urls={url}")],
            );
            if !added.contains("unhealthy cluster") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        out.push(mask_ids(added.lines().next().unwrap_or_default()));
        // m4 trusts the cluster's CA, but its own certificate comes from the other one.
        pki.member("m4", 4, true);
        let m4 = cluster.spawn_joining("m4", client_port, peer_port);
        let deadline = Instant::now() + Duration::from_secs(40);
        let exit = loop {
            if let Some(code) = cluster.exited(m4) {
                break format!("m4 exited with {code:?}");
            }
            if Instant::now() > deadline {
                break "m4 still runs".to_string();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        out.push(exit);
        // The three keep serving, and m4 is a member that never started.
        for i in 0..3 {
            out.push(pki.etcdctl(&cluster, i, &["put", &format!("after{i}"), "v"]));
            out.push(pki.etcdctl(&cluster, i, &["get", "after", "--prefix", "--keys-only"]));
        }
        let list = pki.etcdctl(&cluster, 1, &["member", "list"]);
        let unstarted = list
            .lines()
            .find(|l| l.contains(&url))
            .unwrap_or("m4 not listed")
            .to_string();
        out.push(
            unstarted
                .split_once(", ")
                .map_or(unstarted.clone(), |(_, rest)| rest.to_string())
                .replace(&peer_port.to_string(), "<port>"),
        );
        // The control: the same member with a certificate from the cluster's CA joins.
        pki.member("m4", 5, false);
        cluster.restart(m4);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut joined = String::new();
        while Instant::now() < deadline {
            joined = pki.etcdctl(&cluster, m4, &["get", "after", "--prefix", "--keys-only"]);
            if joined.starts_with("exit Some(0)") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        out.push(format!("m4 with a certificate from the CA: {joined}"));
        out
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replaced_certificate_files_are_presented_from_the_next_handshake() {
    differential(|server, pki, mut cluster| async move {
        let mut out = Vec::new();
        let ca = pki.read("ca.crt");
        let (client, client_key) = (pki.read("client.crt"), pki.read("client.key"));
        let first = CertificateDer::from_pem_slice(&pki.read("m1.crt"))
            .expect("PEM")
            .to_vec();
        let m1 = &cluster.members[0];
        let (peer, https) = (m1.peer_port, m1.secure_port.expect("https port"));
        let served = |probe: Probe, first: &[u8], second: &[u8]| match probe {
            Probe::Answered { leaf } if leaf == first => "the first certificate",
            Probe::Answered { leaf } if leaf == second => "the replacement",
            Probe::Answered { .. } => "some other certificate",
            Probe::Refused => "refused",
        };
        let client_probe = |port| probe(Server::Raftkv, port, &ca, Some((&client, &client_key)));
        let p = probe(server, peer, &ca, Some((&client, &client_key))).await;
        out.push(format!("peer port: {}", served(p, &first, &[])));
        let c = client_probe(https).await;
        out.push(format!("client port: {}", served(c, &first, &[])));
        // m1's files replaced on disk with a new certificate (a new key, the same CA).
        let second = pki.member("m1", 101, false);
        let p = probe(server, peer, &ca, Some((&client, &client_key))).await;
        out.push(format!("peer port after: {}", served(p, &first, &second)));
        let c = client_probe(https).await;
        out.push(format!("client port after: {}", served(c, &first, &second)));
        // m2 restarted: new peer connections both ways, m1 presenting the replacement as
        // server and as client.
        cluster.kill(1);
        cluster.restart(1);
        cluster.wait_healthy(Duration::from_secs(30)).await;
        out.push(pki.etcdctl(&cluster, 1, &["put", "rotated", "yes"]));
        out.push(pki.etcdctl(&cluster, 0, &["get", "rotated"]));
        out.push(pki.etcdctl(&cluster, 2, &["get", "rotated"]));
        out
    })
    .await;
}

/// `--peer-auto-tls`: each member makes a self-signed certificate in
/// `<data-dir>/fixtures/peer`, and members skip verifying each other's.
#[tokio::test(flavor = "multi_thread")]
async fn peer_auto_tls_forms_a_cluster_as_etcd() {
    let mut runs = Vec::new();
    for server in [Server::Raftkv, Server::Etcd] {
        let opts = Options {
            extra_args: vec!["--peer-auto-tls".into()],
            secure_peer: true,
            ..Options::default()
        };
        let cluster = Cluster::start(server, 3, opts).await;
        let mut out = vec![crate::fixture::etcdctl_ok(
            &cluster.endpoints(),
            &["put", "a", "1"],
        )];
        for m in &cluster.members {
            out.push(crate::fixture::etcdctl_ok(&m.endpoint(), &["get", "a"]));
            let fixtures = m.data_dir.join("fixtures/peer");
            out.push(format!(
                "cert.pem {} key.pem {}",
                fixtures.join("cert.pem").is_file(),
                fixtures.join("key.pem").is_file()
            ));
        }
        runs.push(out);
    }
    assert_eq!(runs[0], runs[1]);
}

#[test]
fn bad_peer_tls_settings_stop_raftkv_and_etcd_with_the_same_message() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let peer = crate::fixture::free_port();
    let client = crate::fixture::free_port();
    let metrics = crate::fixture::free_port();
    let peer_url = format!("https://127.0.0.1:{peer}");
    let base = |data: &str| {
        vec![
            format!("--data-dir={d}/{data}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=default={peer_url}"),
            format!("--listen-client-urls=http://127.0.0.1:{client}"),
            format!("--advertise-client-urls=http://127.0.0.1:{client}"),
        ]
    };
    // Another member's key: it does not match m1's certificate.
    let (m1, m2_key) = (pki.file("m1.crt"), pki.file("m2.key"));
    let good = [
        format!("--peer-cert-file={m1}"),
        format!("--peer-key-file={}", pki.file("m1.key")),
    ];
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec![],
            format!(
                "cannot listen on TLS for 127.0.0.1:{peer}: KeyFile and CertFile are not presented"
            ),
        ),
        (
            vec![
                "--peer-cert-file=/nonexistent/p.crt".into(),
                "--peer-key-file=/nonexistent/p.key".into(),
            ],
            "open /nonexistent/p.crt: no such file or directory".into(),
        ),
        (
            vec![format!("--peer-cert-file={m1}")],
            format!("KeyFile and CertFile must both be present[key: , cert: {m1}]"),
        ),
        (
            vec![
                format!("--peer-cert-file={m1}"),
                format!("--peer-key-file={m2_key}"),
            ],
            "tls: private key does not match public key".into(),
        ),
        (
            [
                &good[..],
                &[
                    "--peer-cert-allowed-cn=a".into(),
                    "--peer-cert-allowed-hostname=b".into(),
                ],
            ]
            .concat(),
            "AllowedCN and AllowedHostname are mutually exclusive (cn=\"a\", hostname=\"b\")"
                .into(),
        ),
        (
            [
                &good[..],
                &["--peer-trusted-ca-file=/nonexistent/ca.crt".into()],
            ]
            .concat(),
            "open /nonexistent/ca.crt: no such file or directory".into(),
        ),
        (
            [
                &good[..],
                &["--cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_NOT_A_SUITE".into()],
            ]
            .concat(),
            "unexpected TLS cipher suite \"TLS_NOT_A_SUITE\"".into(),
        ),
        (
            [
                &good[..],
                &[format!("--listen-metrics-urls=https://127.0.0.1:{metrics}")],
            ]
            .concat(),
            format!(
                "cannot listen on TLS for 127.0.0.1:{metrics}: KeyFile and CertFile are not presented"
            ),
        ),
    ];
    for (n, (extra, message)) in cases.into_iter().enumerate() {
        for (i, program) in [Path::new("etcd"), raftkv_bin()].into_iter().enumerate() {
            let mut args = base(&format!("{i}-{n}"));
            args.extend(extra.iter().cloned());
            let (code, out) = run_to_exit(program, &args);
            assert_eq!(code, Some(1), "{program:?} {args:?}: {out}");
            assert!(
                out.contains(&message),
                "{program:?} {args:?}: want {message:?} in:\n{out}"
            );
        }
    }
}
