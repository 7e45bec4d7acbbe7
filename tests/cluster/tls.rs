//! TLS on the client port against a real etcd: the same certificates (a CA, a server
//! certificate for 127.0.0.1 and localhost, a client certificate, and a client certificate
//! from another CA, all made here with rcgen), the same etcdctl and curl calls against one
//! raftkv member and one etcd member, outputs and exit codes compared with ports, durations
//! and ids masked. Each member also keeps a plain `http://` client URL (the fixture's health
//! checks use it), which etcd and raftkv serve without TLS even with the TLS flags set.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};

use crate::fixture::{Cluster, Options, Server, assert_no_differences, etcdctl, raftkv_bin};

/// PEM files of one test run, in a temporary directory.
pub(crate) struct Certs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Certs {
    pub(crate) fn file(&self, name: &str) -> String {
        self.path.join(name).display().to_string()
    }

    /// The directory holding the files.
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// `ca.crt`; `server.crt/key` (127.0.0.1, localhost); `client.crt/key` (CN "client",
    /// serial 2); `other-ca.crt`; `other.crt/key` (a client certificate from the other CA);
    /// `root-client.crt/key` (CN "root"); `revoked.crt/key` (serial 4); `crl.pem` (the CA
    /// revokes serial 4) and `crl-client.pem` (serials 2 and 4).
    pub(crate) fn make() -> Certs {
        let dir = tempfile::tempdir().expect("cert dir");
        let path = dir.path().to_path_buf();
        let write = |name: &str, text: String| std::fs::write(path.join(name), text).unwrap();
        let other_ca = ca("another CA");
        let ca = ca("raftkv test CA");
        write("ca.crt", ca.pem());
        write("other-ca.crt", other_ca.pem());
        let (cert, key) = leaf(
            &ca,
            1,
            "server",
            &["127.0.0.1", "localhost"],
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        write("server.crt", cert);
        write("server.key", key);
        let (cert, key) = leaf(
            &ca,
            2,
            "client",
            &[],
            &[ExtendedKeyUsagePurpose::ClientAuth],
        );
        write("client.crt", cert);
        write("client.key", key);
        let (cert, key) = leaf(&ca, 5, "root", &[], &[ExtendedKeyUsagePurpose::ClientAuth]);
        write("root-client.crt", cert);
        write("root-client.key", key);
        let (cert, key) = leaf(
            &ca,
            4,
            "revoked",
            &[],
            &[ExtendedKeyUsagePurpose::ClientAuth],
        );
        write("revoked.crt", cert);
        write("revoked.key", key);
        write("crl.pem", crl(&ca, &[4]));
        write("crl-client.pem", crl(&ca, &[2, 4]));
        let (cert, key) = leaf(
            &other_ca,
            3,
            "client",
            &[],
            &[ExtendedKeyUsagePurpose::ClientAuth],
        );
        write("other.crt", cert);
        write("other.key", key);
        Certs { _dir: dir, path }
    }
}

/// A self-signed CA.
pub(crate) fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A revocation list (PEM) of `issuer` revoking `serials`.
fn crl(issuer: &CertifiedIssuer<'static, KeyPair>, serials: &[u64]) -> String {
    let now = std::time::SystemTime::now();
    let params = rcgen::CertificateRevocationListParams {
        this_update: (now - std::time::Duration::from_secs(60)).into(),
        next_update: (now + std::time::Duration::from_secs(24 * 3600)).into(),
        crl_number: SerialNumber::from(1),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| rcgen::RevokedCertParams {
                serial_number: SerialNumber::from(*s),
                revocation_time: (now - std::time::Duration::from_secs(60)).into(),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    params
        .signed_by(issuer)
        .expect("CRL")
        .pem()
        .expect("CRL PEM")
}

/// A certificate (PEM) and its key (PEM) signed by `issuer`, with `serial`.
fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    serial: u64,
    cn: &str,
    sans: &[&str],
    usages: &[ExtendedKeyUsagePurpose],
) -> (String, String) {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.serial_number = Some(SerialNumber::from(serial));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = usages.to_vec();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// The server flags for `certs`; with `client_auth`, client certificates are required.
fn tls_flags(certs: &Certs, client_auth: bool) -> Vec<String> {
    let mut flags = vec![
        format!("--cert-file={}", certs.file("server.crt")),
        format!("--key-file={}", certs.file("server.key")),
    ];
    if client_auth {
        flags.push(format!("--trusted-ca-file={}", certs.file("ca.crt")));
        flags.push("--client-cert-auth".into());
    }
    flags
}

/// What a command printed and how it ended, with what differs between runs masked: the
/// ports, durations, and clientv3's JSON retry lines reduced to their `error` field.
fn outcome(out: &Output, ports: &[(u16, &str)]) -> String {
    let mut text = format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        mask_status(&String::from_utf8_lossy(&out.stdout)),
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .map(|l| match serde_json::from_str::<serde_json::Value>(l) {
                Ok(v) => format!("(log) {}", v["error"].as_str().unwrap_or("")),
                Err(_) => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    );
    for (port, name) in ports {
        text = text.replace(&port.to_string(), name);
    }
    mask_durations(&text)
}

/// `endpoint status -w json` → its endpoints (the status values are not about TLS).
fn mask_status(text: &str) -> String {
    text.lines()
        .map(|l| match serde_json::from_str::<serde_json::Value>(l) {
            Ok(serde_json::Value::Array(statuses)) => statuses
                .iter()
                .map(|s| s["Endpoint"].to_string())
                .collect::<Vec<_>>()
                .join(","),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// raftkvctl's error when the server refuses its certificate: with TLS 1.3 the client's
/// handshake is over before the server's alert comes, and hyper then reports the closed
/// connection as "transport error" or "operation was canceled", whichever the alert races
/// (against either server); etcdctl says "context deadline exceeded" once it has retried.
fn refusal(text: &str) -> String {
    text.replace("Error: operation was canceled", "Error: transport error")
}

/// `took = 1.234ms` → `took = <t>`.
fn mask_durations(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("took = ") {
        out.push_str(&rest[..i + 7]);
        rest = &rest[i + 7..];
        let end = rest
            .find(|c: char| c.is_whitespace() || c == ',')
            .unwrap_or(rest.len());
        out.push_str("<t>");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// curl `path` on `url`; the status line and body of the answer (the body's JSON `header`
/// dropped: it holds ids), or curl's exit code.
fn curl(url: &str, path: &str, args: &[&str], body: Option<&str>) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-i", "--max-time", "5"]).args(args);
    if let Some(body) = body {
        cmd.args(["--data-binary", body]);
    }
    cmd.arg(format!("{url}{path}"));
    let out = cmd.output().expect("curl (scripts/setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default();
    let body = match serde_json::from_str::<serde_json::Value>(body) {
        Ok(mut v) => {
            if let Some(o) = v.as_object_mut() {
                o.remove("header");
            }
            v.to_string()
        }
        Err(_) => body.to_string(),
    };
    // 55 (send failed) or 56 (receive failed) after a server's alert is a race of curl's
    // write with the alert, against either server: one outcome here.
    let code = match out.status.code() {
        Some(55 | 56) => "55|56".to_string(),
        other => format!("{other:?}"),
    };
    format!("curl {args:?} {path}: exit {code} {status} {body}")
}

/// raftkvctl with `--endpoints=endpoint` and `args`.
fn raftkvctl(endpoint: &str, args: &[&str]) -> Output {
    let endpoints = format!("--endpoints={endpoint}");
    crate::fixture::raftkvctl(&[&[endpoints.as_str()][..], args].concat())
}

/// Runs `session` against one raftkv member and one etcd member started with `flags`.
async fn differential(
    flags: Vec<String>,
    session: impl Fn(&Cluster) -> Vec<String>,
) -> (Vec<String>, Vec<String>) {
    let opts = Options {
        extra_args: flags,
        secure_client: true,
        ..Options::default()
    };
    let raftkv = {
        let cluster = Cluster::start(Server::Raftkv, 1, opts.clone()).await;
        session(&cluster)
    };
    let etcd = {
        let cluster = Cluster::start(Server::Etcd, 1, opts).await;
        session(&cluster)
    };
    (raftkv, etcd)
}

fn compare(raftkv: &[String], etcd: &[String]) {
    assert_eq!(raftkv.len(), etcd.len());
    let differences: Vec<String> = raftkv
        .iter()
        .zip(etcd)
        .filter(|(r, e)| r != e)
        .map(|(r, e)| format!("raftkv:\n{r}\netcd:\n{e}\n"))
        .collect();
    assert_no_differences(&differences);
}

/// The ports of member 0, named for masking.
fn ports(cluster: &Cluster) -> Vec<(u16, &'static str)> {
    let m = &cluster.members[0];
    vec![
        (m.secure_port.expect("secure port"), "<https-port>"),
        (m.client_port, "<http-port>"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn client_cert_auth_matches_etcd() {
    let certs = Certs::make();
    let c = |name: &str| certs.file(name);
    let session = |cluster: &Cluster| {
        let m = &cluster.members[0];
        let https = m.secure_url().unwrap();
        let http = format!("http://{}", m.endpoint());
        let ports = ports(cluster);
        let ca = format!("--cacert={}", c("ca.crt"));
        let cert = format!("--cert={}", c("client.crt"));
        let key = format!("--key={}", c("client.key"));
        let other_ca = format!("--cacert={}", c("other-ca.crt"));
        let other_cert = format!("--cert={}", c("other.crt"));
        let other_key = format!("--key={}", c("other.key"));
        let fast = "--dial-timeout=1s";
        let mut out = Vec::new();
        let mut run = |endpoint: &str, args: &[&str]| {
            let o = etcdctl(endpoint, args, None);
            out.push(format!("etcdctl {args:?}\n{}", outcome(&o, &ports)));
            let o = raftkvctl(endpoint, args);
            out.push(format!(
                "raftkvctl {args:?}\n{}",
                refusal(&outcome(&o, &ports))
            ));
        };
        run(&https, &[&ca, &cert, &key, "put", "a", "1"]);
        run(&https, &[&ca, &cert, &key, "get", "a"]);
        run(&https, &[&ca, &cert, &key, "endpoint", "health"]);
        run(
            &https,
            &[&ca, &cert, &key, "endpoint", "status", "-w", "json"],
        );
        // The plain URL ignores the TLS flags, in etcd as here.
        run(&http, &["get", "a"]);
        // Verification skipped (etcdctl needs --insecure-transport=false to use TLS at all
        // without a CA, cert or key flag; with them it does).
        run(
            &https,
            &["--insecure-skip-tls-verify", &cert, &key, "get", "a"],
        );
        // Refused: no client certificate, one from another CA, a server the CA did not sign.
        run(&https, &[fast, &ca, "get", "a"]);
        run(&https, &[fast, &ca, &other_cert, &other_key, "get", "a"]);
        run(&https, &[fast, &other_ca, &cert, &key, "get", "a"]);
        run(&https, &[fast, "get", "a"]);
        run(&https, &[fast, &ca, &cert, &key, "put", "b", "2"]);
        // curl: /health and the gateway over TLS with the client certificate; none refused.
        let curl_tls = [
            "--cacert",
            &c("ca.crt"),
            "--cert",
            &c("client.crt"),
            "--key",
            &c("client.key"),
        ];
        out.push(curl(&https, "/health", &curl_tls, None));
        out.push(curl(
            &https,
            "/v3/kv/range",
            &curl_tls,
            Some(r#"{"key":"YQ=="}"#),
        ));
        let mut http1 = curl_tls.to_vec();
        http1.push("--http1.1");
        out.push(curl(&https, "/health", &http1, None));
        out.push(curl(&https, "/health", &["--cacert", &c("ca.crt")], None));
        out.push(curl(&http, "/health", &[], None));
        out
    };
    let (raftkv, etcd) = differential(tls_flags(&certs, true), session).await;
    compare(&raftkv, &etcd);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_tls_without_client_certs_matches_etcd() {
    let certs = Certs::make();
    let c = |name: &str| certs.file(name);
    let session = |cluster: &Cluster| {
        let m = &cluster.members[0];
        let https = m.secure_url().unwrap();
        let http = format!("http://{}", m.endpoint());
        let localhost = https.replace("127.0.0.1", "localhost");
        let ports = ports(cluster);
        let ca = format!("--cacert={}", c("ca.crt"));
        let fast = "--dial-timeout=1s";
        let mut out = Vec::new();
        let mut run = |endpoint: &str, args: &[&str]| {
            let o = etcdctl(endpoint, args, None);
            out.push(format!("etcdctl {args:?}\n{}", outcome(&o, &ports)));
            let o = raftkvctl(endpoint, args);
            out.push(format!(
                "raftkvctl {args:?}\n{}",
                refusal(&outcome(&o, &ports))
            ));
        };
        run(&https, &[&ca, "put", "a", "1"]);
        run(&localhost, &[&ca, "get", "a"]);
        run(&https, &[&ca, "endpoint", "health"]);
        run(&https, &[fast, "get", "a"]);
        run(&https, &[fast, "--insecure-skip-tls-verify", "get", "a"]);
        run(
            &https,
            &[
                "--insecure-skip-tls-verify",
                "--insecure-transport=false",
                "get",
                "a",
            ],
        );
        run(&http, &["--insecure-transport=false", fast, "get", "a"]);
        // HTTP/1.1: --host-whitelist is not checked over TLS (etcd's serve.go), only without.
        out.push(curl(&https, "/health", &["-k"], None));
        out.push(curl(
            &https,
            "/health",
            &["-k", "-H", "Host: elsewhere.example"],
            None,
        ));
        out.push(curl(
            &http,
            "/health",
            &["-H", "Host: elsewhere.example"],
            None,
        ));
        out.push(curl(&https, "/health", &[], None));
        out.push(curl(
            &http.replace("http:", "https:"),
            "/health",
            &["-k"],
            None,
        ));
        out.push(curl(
            &https.replace("https:", "http:"),
            "/health",
            &[],
            None,
        ));
        out
    };
    let mut flags = tls_flags(&certs, false);
    flags.push("--host-whitelist=example.com".into());
    let (raftkv, etcd) = differential(flags, session).await;
    compare(&raftkv, &etcd);
}

/// `--client-crl-file` (read again when it changes), `--cipher-suites`, and an `https://`
/// metrics URL (the client port's certificate and client-certificate policy, and the SAN
/// check etcd's plain listener adds).
#[tokio::test(flavor = "multi_thread")]
async fn revocation_cipher_suites_and_https_metrics_match_etcd() {
    let certs = Certs::make();
    let c = |name: &str| certs.file(name);
    let metrics = crate::fixture::free_port();
    let metrics_url = format!("https://127.0.0.1:{metrics}");
    let crl = c("active-crl.pem");
    std::fs::copy(c("crl.pem"), &crl).unwrap();
    let session = |cluster: &Cluster| {
        let https = cluster.members[0].secure_url().unwrap();
        let mut ports = ports(cluster);
        ports.push((metrics, "<metrics-port>"));
        let ca = format!("--cacert={}", c("ca.crt"));
        let identity = |name: &str| {
            [
                format!("--cert={}", c(&format!("{name}.crt"))),
                format!("--key={}", c(&format!("{name}.key"))),
            ]
        };
        let fast = "--dial-timeout=1s";
        let mut out = Vec::new();
        let run = |args: &[&str]| {
            let o = etcdctl(&https, args, None);
            format!("etcdctl {args:?}\n{}", outcome(&o, &ports))
        };
        let [cert, key] = identity("client");
        let [revoked, revoked_key] = identity("revoked");
        out.push(run(&[&ca, &cert, &key, "put", "a", "1"]));
        out.push(run(&[fast, &ca, &revoked, &revoked_key, "get", "a"]));
        let with = |name: &str, extra: &[&str]| {
            let mut args = vec![
                "--cacert".to_string(),
                c("ca.crt"),
                "--cert".into(),
                c(&format!("{name}.crt")),
                "--key".into(),
                c(&format!("{name}.key")),
            ];
            args.extend(extra.iter().map(|a| a.to_string()));
            args
        };
        // etcd checks the CRL after the handshake and closes the connection unanswered
        // (curl: 18, a cut reply); raftkv refuses in the handshake (55/56): both refuse.
        let curl_with = |args: Vec<String>, path: &str| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            curl(&metrics_url, path, &args, None).replace("exit Some(18)", "exit 55|56")
        };
        out.push(curl_with(with("client", &[]), "/health"));
        out.push(curl_with(with("revoked", &[]), "/health"));
        out.push(curl_with(vec!["--cacert".into(), c("ca.crt")], "/health"));
        // etcd's metrics listener offers ALPN h2 only, but lets an HTTP/1.1-only client in.
        out.push(curl_with(with("client", &["--http1.1"]), "/health"));
        // The allowed TLS 1.2 suite, and one not allowed.
        for cipher in [
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "ECDHE-ECDSA-AES256-GCM-SHA384",
        ] {
            let args = with("client", &["--tls-max", "1.2", "--ciphers", cipher]);
            out.push(format!("{cipher}: {}", curl_with(args, "/health")));
        }
        // The CRL replaced on disk: the client certificate is refused from the next
        // connection on, without a restart.
        let tmp = c("crl.new");
        std::fs::copy(c("crl-client.pem"), &tmp).unwrap();
        std::fs::rename(&tmp, &crl).unwrap();
        out.push(run(&[fast, &ca, &cert, &key, "get", "a"]));
        out.push(curl_with(with("client", &[]), "/health"));
        std::fs::copy(c("crl.pem"), &crl).unwrap(); // for the next server
        out
    };
    let mut flags = tls_flags(&certs, true);
    flags.push(format!("--client-crl-file={crl}"));
    flags.push(format!("--listen-metrics-urls={metrics_url}"));
    flags.push(
        "--cipher-suites=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
            .into(),
    );
    let (raftkv, etcd) = differential(flags, session).await;
    compare(&raftkv, &etcd);
}

/// `--auto-tls`: a self-signed certificate made at start in `<data-dir>/fixtures/client`;
/// clients that skip verification get in, clients that verify do not.
#[tokio::test(flavor = "multi_thread")]
async fn auto_tls_matches_etcd() {
    let certs = Certs::make();
    let c = |name: &str| certs.file(name);
    let session = |cluster: &Cluster| {
        let m = &cluster.members[0];
        let https = m.secure_url().unwrap();
        let ports = ports(cluster);
        let ca = format!("--cacert={}", c("ca.crt"));
        let fast = "--dial-timeout=1s";
        let skip = ["--insecure-skip-tls-verify", "--insecure-transport=false"];
        let mut out = Vec::new();
        let mut run = |args: &[&str]| {
            let o = etcdctl(&https, args, None);
            out.push(format!("etcdctl {args:?}\n{}", outcome(&o, &ports)));
        };
        run(&[skip[0], skip[1], "put", "a", "1"]);
        run(&[skip[0], skip[1], "get", "a"]);
        run(&[fast, &ca, "get", "a"]);
        // raftkvctl (rustls with ring) against raftkv only: etcd's self-signed key is P-521,
        // which ring cannot verify a handshake signature with.
        if cluster.server == Server::Raftkv {
            let o = raftkvctl(&https, &[skip[0], skip[1], "get", "a"]);
            assert_eq!(String::from_utf8_lossy(&o.stdout), "a\n1\n", "{o:?}");
        }
        out.push(curl(&https, "/health", &["-k"], None));
        let fixtures = m.data_dir.join("fixtures/client");
        out.push(format!(
            "cert.pem {} key.pem {}",
            fixtures.join("cert.pem").is_file(),
            fixtures.join("key.pem").is_file()
        ));
        out
    };
    let (raftkv, etcd) = differential(vec!["--auto-tls".into()], session).await;
    compare(&raftkv, &etcd);
}

/// Garbage and stalled TLS handshakes on the https:// port: none stops the member, and a
/// stalled one holds up nobody else's handshake.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_tls_handshakes_stop_nothing() {
    use tokio::io::AsyncWriteExt;
    let certs = Certs::make();
    let opts = Options {
        extra_args: tls_flags(&certs, true),
        secure_client: true,
        ..Options::default()
    };
    let cluster = Cluster::start(Server::Raftkv, 1, opts).await;
    let m = &cluster.members[0];
    let addr = format!("127.0.0.1:{}", m.secure_port.unwrap());
    let mut held = Vec::new();
    for i in 0..40u32 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let junk: Vec<u8> = match i % 4 {
            0 => vec![], // says nothing: waits for the handshake timeout
            1 => vec![0x16, 0x03, 0x01, 0xff, 0xff, 1, 0, 0xff, 0xff], // a huge ClientHello, cut
            2 => (0..4096u32).map(|b| (b * 7 + i) as u8).collect(),
            _ => [&[0x16u8, 0x03, 0x03, 0x00, 0x10][..], &[0xaa; 16]].concat(),
        };
        let _ = s.write_all(&junk).await;
        held.push(s);
    }
    let ca = format!("--cacert={}", certs.file("ca.crt"));
    let cert = format!("--cert={}", certs.file("client.crt"));
    let key = format!("--key={}", certs.file("client.key"));
    let https = m.secure_url().unwrap();
    let out = etcdctl(&https, &[&ca, &cert, &key, "put", "k", "v"], None);
    assert!(out.status.success(), "{out:?}\n{}", m.log_tail());
    drop(held);
    let out = etcdctl(&https, &[&ca, &cert, &key, "get", "k"], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "k\nv\n");
    let out = raftkvctl(&https, &[&ca, &cert, &key, "get", "k"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "k\nv\n");
    assert!(cluster.members[0].is_running());
}

/// Runs `program` with `args` until it exits (10 s at most); its exit code and output.
pub(crate) fn run_to_exit(program: &Path, args: &[String]) -> (Option<i32>, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            let out = child.wait_with_output().expect("output");
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            return (out.status.code(), text);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    panic!(
        "{program:?} kept running:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_tls_settings_stop_raftkv_and_etcd_with_the_same_message() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let peer = crate::fixture::free_port();
    let client = crate::fixture::free_port();
    let url = format!("https://127.0.0.1:{client}");
    let base = |data: &str| {
        vec![
            format!("--data-dir={d}/{data}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
            format!("--initial-cluster=default=http://127.0.0.1:{peer}"),
            format!("--listen-client-urls={url}"),
            format!("--advertise-client-urls={url}"),
        ]
    };
    for (extra, message) in [
        (
            vec![],
            format!(
                "TLS key/cert (--cert-file, --key-file) must be provided for client url {url} with HTTPS scheme"
            ),
        ),
        (
            vec![
                "--cert-file=/nonexistent/s.crt".to_string(),
                "--key-file=/nonexistent/s.key".to_string(),
            ],
            "open /nonexistent/s.crt: no such file or directory".to_string(),
        ),
        (
            vec!["--cert-file=/nonexistent/s.crt".to_string()],
            "KeyFile and CertFile must both be present[key: , cert: /nonexistent/s.crt]"
                .to_string(),
        ),
    ] {
        for (i, program) in [Path::new("etcd"), raftkv_bin()].into_iter().enumerate() {
            let mut args = base(&format!("{i}-{}", extra.len()));
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
