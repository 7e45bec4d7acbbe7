//! Member configuration as etcd takes it: the flags etcd's own e2e tests pass start a member
//! (etcd and raftkv alike); a member configured only by `--config-file` or only by `ETCD_*`
//! variables starts and serves; a variable shadowed by a flag, and a flag raftkv cannot
//! honour, stop the member with a clear message; and raftkv derives the member and cluster
//! ids a real etcd derives from the same `--initial-cluster`, token and URLs.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use raftkv_proto::etcdserverpb::{ResponseHeader, StatusRequest, StatusResponse};

use crate::fixture::{Cluster, Options, Server, etcdctl_ok, free_port, raftkv_bin};

/// The flags `tests/e2e/cluster_test.go` adds to the basic ones (in etcd's own spellings:
/// single dashes, `=` and separate values), all at values a raftkv member accepts.
fn e2e_flags(metrics_port: u16) -> Vec<String> {
    [
        "--snapshot-count",
        "100000",
        "--strict-reconfig-check=false",
        "--experimental-initial-corrupt-check",
        "--enable-v2",
        "-max-concurrent-streams",
        "100",
        "--auth-token",
        "simple",
        "--listen-metrics-urls",
        &format!("http://localhost:{metrics_port}"),
        "--auto-compaction-mode=revision",
        "--auto-compaction-retention",
        "1000",
        "-grpc-keepalive-interval=1m30s",
        "--grpc-keepalive-timeout",
        "5s",
    ]
    .map(String::from)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_e2e_flags_start_a_member_that_serves() {
    for server in [Server::Etcd, Server::Raftkv] {
        let metrics_port = free_port();
        let opts = Options {
            extra_args: e2e_flags(metrics_port),
            ..Options::default()
        };
        let cluster = Cluster::start(server, 1, opts).await;
        let eps = cluster.endpoints();
        assert_eq!(etcdctl_ok(&eps, &["put", "k", "v"]).trim(), "OK");
        assert_eq!(etcdctl_ok(&eps, &["get", "k"]), "k\nv\n", "{server:?}");
        // The metrics listener serves etcd's metrics.
        let scrape = Command::new("curl")
            .args(["-s", &format!("http://localhost:{metrics_port}/metrics")])
            .output()
            .expect("curl (scripts/setup installs it)");
        let scrape = String::from_utf8_lossy(&scrape.stdout);
        assert!(
            scrape.contains("\netcd_server_has_leader 1\n"),
            "{server:?}: {scrape}"
        );
        if server == Server::Raftkv {
            let log = cluster.members[0].log_text();
            let line = "ignoring --enable-v2:";
            assert_eq!(log.matches(line).count(), 1, "{line} once in:\n{log}");
            // Implemented or at etcd's default: no line.
            for flag in [
                "--experimental-initial-corrupt-check",
                "--listen-metrics-urls",
                "--max-concurrent-streams",
                "--auth-token",
                "--strict-reconfig",
                "--auto-compaction-retention",
            ] {
                assert!(!log.contains(&format!("ignoring {flag}")), "{log}");
            }
        }
    }
}

/// A member process started by hand, killed (by its pid) when dropped.
struct Process {
    child: Child,
    log: std::path::PathBuf,
}

impl Process {
    fn spawn(program: &Path, args: &[String], env: &[(&str, &str)], log: &Path) -> Process {
        let file = std::fs::File::create(log).expect("log file");
        // In the log's directory, so that a member that unexpectedly starts with the default
        // data dir leaves nothing behind.
        let child = Command::new(program)
            .current_dir(log.parent().expect("log in a directory"))
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program:?}: {e}"));
        Process {
            child,
            log: log.to_path_buf(),
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The member's Status, if it answers within a second.
async fn status(endpoint: &str) -> Option<StatusResponse> {
    let fut = async {
        let mut client = MaintenanceClient::connect(format!("http://{endpoint}"))
            .await
            .ok()?;
        client
            .status(StatusRequest {})
            .await
            .ok()
            .map(|r| r.into_inner())
    };
    tokio::time::timeout(Duration::from_secs(1), fut)
        .await
        .ok()
        .flatten()
}

/// Waits until every endpoint answers Status with a leader; returns each one's header.
async fn wait_serving(endpoints: &[String], processes: &[Process]) -> Vec<ResponseHeader> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut headers = Vec::new();
        for endpoint in endpoints {
            match status(endpoint).await {
                Some(s) if s.leader != 0 => headers.extend(s.header),
                _ => break,
            }
        }
        if headers.len() == endpoints.len() {
            return headers;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = processes.iter().map(Process::log_text).collect();
            panic!(
                "{endpoints:?} not serving in 20 s:\n{}",
                logs.join("\n---\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_configured_only_by_config_file_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let file = dir.path().join("etcd.yaml");
    std::fs::write(
        &file,
        format!(
            "# etcd 3.4's format: durations in nanoseconds, URL lists as one string\n\
             name: yaml1\n\
             data-dir: {data}\n\
             listen-client-urls: http://127.0.0.1:{client}\n\
             advertise-client-urls: http://127.0.0.1:{client}\n\
             listen-peer-urls: http://127.0.0.1:{peer}\n\
             initial-advertise-peer-urls: http://127.0.0.1:{peer}\n\
             initial-cluster: yaml1=http://127.0.0.1:{peer}\n\
             initial-cluster-token: tok-yaml\n\
             Initial-Cluster-State: new\n\
             strict-reconfig-check: false\n\
             grpc-keepalive-interval: 7200000000000\n\
             log-outputs: [stderr]\n\
             client-transport-security:\n  cert-file: ''\n  auto-tls: false\n\
             some-future-key: 1\n",
            data = dir.path().join("yaml1").display(),
        ),
    )
    .unwrap();
    // Every other flag and variable is ignored, even ones that would not work.
    let args = [
        "--config-file",
        file.to_str().unwrap(),
        "--name",
        "flag",
        "--listen-client-urls",
        "http://127.0.0.1:1",
    ]
    .map(String::from);
    let member = Process::spawn(
        raftkv_bin(),
        &args,
        &[("ETCD_NAME", "env"), ("ETCD_BOGUS", "x")],
        &dir.path().join("yaml1.log"),
    );
    let endpoint = format!("127.0.0.1:{client}");
    wait_serving(
        std::slice::from_ref(&endpoint),
        std::slice::from_ref(&member),
    )
    .await;
    assert_eq!(etcdctl_ok(&endpoint, &["put", "k", "v"]).trim(), "OK");
    assert_eq!(etcdctl_ok(&endpoint, &["get", "k"]), "k\nv\n");
    let list = etcdctl_ok(&endpoint, &["member", "list"]);
    assert!(list.contains(", yaml1, "), "{list}");
    let log = member.log_text();
    assert!(
        log.contains(&format!(
            "Loading server configuration from {:?}. Other configuration command line flags and environment variables will be ignored if provided.",
            file.to_str().unwrap()
        )),
        "{log}"
    );
    assert!(!log.contains("ETCD_BOGUS"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_configured_only_by_etcd_variables_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let data = dir.path().join("env1");
    let initial = format!("env1={peer_url}");
    let env = [
        ("ETCD_NAME", "env1"),
        ("ETCD_DATA_DIR", data.to_str().unwrap()),
        ("ETCD_LISTEN_CLIENT_URLS", &client_url),
        ("ETCD_ADVERTISE_CLIENT_URLS", &client_url),
        ("ETCD_LISTEN_PEER_URLS", &peer_url),
        ("ETCD_INITIAL_ADVERTISE_PEER_URLS", &peer_url),
        ("ETCD_INITIAL_CLUSTER", &initial),
        ("ETCD_INITIAL_CLUSTER_TOKEN", "tok-env"),
        ("ETCD_HEARTBEAT_INTERVAL", "0x32"),
        ("ETCD_ELECTION_TIMEOUT", "500"),
        ("ETCD_STRICT_RECONFIG_CHECK", "false"),
        ("ETCD_FOO", "bar"),
        ("ETCDCTL_API", "3"),
    ];
    let member = Process::spawn(raftkv_bin(), &[], &env, &dir.path().join("env1.log"));
    let endpoint = format!("127.0.0.1:{client}");
    wait_serving(
        std::slice::from_ref(&endpoint),
        std::slice::from_ref(&member),
    )
    .await;
    assert_eq!(etcdctl_ok(&endpoint, &["put", "k", "v"]).trim(), "OK");
    assert_eq!(etcdctl_ok(&endpoint, &["get", "k"]), "k\nv\n");
    let list = etcdctl_ok(&endpoint, &["member", "list"]);
    assert!(list.contains(", env1, "), "{list}");
    let log = member.log_text();
    for line in [
        "recognized and used environment variable ETCD_NAME=env1",
        "recognized and used environment variable ETCD_HEARTBEAT_INTERVAL=0x32",
        "unrecognized environment variable ETCD_FOO=bar",
    ] {
        assert_eq!(log.matches(line).count(), 1, "{line} once in:\n{log}");
    }
    assert!(!log.contains("ETCDCTL_API"), "{log}");
}

/// Runs `program` until it exits (within 10 s); returns its exit code and output.
fn run_to_exit(program: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("out.log");
    let mut process = Process::spawn(
        program,
        &args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        env,
        &log,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = process.child.try_wait() {
            return (status.code(), process.log_text());
        }
        assert!(
            Instant::now() < deadline,
            "{program:?} kept running:\n{}",
            process.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_variable_shadowed_by_a_flag_stops_etcd_and_raftkv_alike() {
    let message = "conflicting environment variable \"ETCD_NAME\" is shadowed by corresponding command-line flag (either unset environment variable or disable flag)";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    for program in [Path::new("etcd"), raftkv_bin()] {
        let (code, out) = run_to_exit(
            program,
            &["-name", "flagname", "--data-dir", data.to_str().unwrap()],
            &[("ETCD_NAME", "envname")],
        );
        assert_eq!(code, Some(1), "{program:?}: {out}");
        assert!(out.contains(message), "{program:?}: {out}");
    }
}

#[test]
fn bad_values_stop_etcd_and_raftkv_alike() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    for (flags, message) in [
        (
            &["--auto-compaction-mode=foo"][..],
            "error verifying flags, unknown auto-compaction-mode \"foo\". See '",
        ),
        (
            &["--auto-compaction-retention=abc"],
            "error parsing CompactionRetention: time: invalid duration \"abc\"",
        ),
        (
            &["--logger=glog"],
            "error verifying flags, unknown logger option \"glog\". See '",
        ),
        (
            &["--log-outputs=stderr,stdout"],
            "error verifying flags, --logger=capnslog supports only 1 value in '--log-outputs', got [\"stderr\" \"stdout\"]. See '",
        ),
        (
            &["--log-outputs=/tmp/x.log"],
            "error verifying flags, unknown log-output \"/tmp/x.log\" (only supports \"default\", \"stderr\", \"stdout\"). See '",
        ),
        (
            &["--logger=zap", "--log-outputs=default,stderr"],
            "error verifying flags, multi logoutput for \"default\" is not supported yet. See '",
        ),
    ] {
        for program in [Path::new("etcd"), raftkv_bin()] {
            let mut args = flags.to_vec();
            args.extend(["--data-dir", data.to_str().unwrap()]);
            let (code, out) = run_to_exit(program, &args, &[]);
            assert_eq!(code, Some(1), "{program:?} {flags:?}: {out}");
            assert!(out.contains(message), "{program:?} {flags:?}: {out}");
        }
    }
    // A variable's value is verified as the flag's would be.
    for (var, message) in [
        (
            ("ETCD_SNAPSHOT_COUNT", "abc"),
            "error verifying flags, invalid value \"abc\" for ETCD_SNAPSHOT_COUNT: parse error. See '",
        ),
        (
            ("ETCD_GRPC_KEEPALIVE_TIMEOUT", "5"),
            "error verifying flags, invalid value \"5\" for ETCD_GRPC_KEEPALIVE_TIMEOUT: parse error. See '",
        ),
        (
            ("ETCD_CLIENT_CERT_AUTH", "maybe"),
            "error verifying flags, invalid value \"maybe\" for ETCD_CLIENT_CERT_AUTH: parse error. See '",
        ),
    ] {
        for program in [Path::new("etcd"), raftkv_bin()] {
            let (code, out) = run_to_exit(program, &["--data-dir", data.to_str().unwrap()], &[var]);
            assert_eq!(code, Some(1), "{program:?} {var:?}: {out}");
            assert!(out.contains(message), "{program:?} {var:?}: {out}");
        }
    }
    assert!(!data.exists(), "a member started");
}

/// A flag value Go's `flag` package refuses stops etcd with its words before the usage (exit
/// 2); raftkv says the same first line.
#[test]
fn refused_flag_values_get_gos_words() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    for flag in [
        "--snapshot-count=abc",
        "--snapshot-count=99999999999999999999999",
        "--heartbeat-interval=-1",
        "--strict-reconfig-check=maybe",
        "-client-cert-auth=2",
        "--grpc-keepalive-interval=5",
        "--election-timeout=1s",
        "--listen-client-urls=foo",
        "--initial-cluster-state=foo",
        "--proxy=foo",
    ] {
        let mut lines = Vec::new();
        for program in [Path::new("etcd"), raftkv_bin()] {
            let (code, out) =
                run_to_exit(program, &[flag, "--data-dir", data.to_str().unwrap()], &[]);
            assert_eq!(code, Some(2), "{program:?} {flag}: {out}");
            let first = out
                .lines()
                .find(|l| l.starts_with("invalid "))
                .map(str::to_string);
            lines.push(first.unwrap_or_else(|| format!("no \"invalid\" line in:\n{out}")));
        }
        assert_eq!(lines[1], lines[0], "{flag}");
    }
    assert!(!data.exists(), "a member started");
}

/// An unknown `--log-level` stops etcd (a Go panic, exit 2) and raftkv (exit 1) with the same
/// words, rather than running with logging off.
#[test]
fn an_unknown_log_level_stops_etcd_and_raftkv() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    for program in [Path::new("etcd"), raftkv_bin()] {
        let (code, out) = run_to_exit(
            program,
            &["--log-level=warning", "--data-dir", data.to_str().unwrap()],
            &[],
        );
        assert!(matches!(code, Some(1 | 2)), "{program:?}: {code:?} {out}");
        assert!(
            out.contains("unknown level \"warning\""),
            "{program:?}: {out}"
        );
    }
    assert!(!data.exists(), "a member started");
}

/// `--logger=zap --log-outputs=stderr,<file>`: etcd and raftkv both log to the file (each in
/// its own format) and to stderr, and the file is appended to across restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_outputs_name_files_with_zap() {
    for program in [Path::new("etcd"), raftkv_bin()] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("member.log");
        let mut lengths = Vec::new();
        for _ in 0..2 {
            let (client, peer) = (free_port(), free_port());
            let args = [
                "--data-dir".to_string(),
                dir.path().join("d").display().to_string(),
                "--listen-client-urls".into(),
                format!("http://127.0.0.1:{client}"),
                "--advertise-client-urls".into(),
                format!("http://127.0.0.1:{client}"),
                "--listen-peer-urls".into(),
                format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls".into(),
                format!("http://127.0.0.1:{peer}"),
                "--initial-cluster".into(),
                format!("default=http://127.0.0.1:{peer}"),
                "--logger=zap".into(),
                format!("--log-outputs=stderr,{}", file.display()),
            ];
            let member = Process::spawn(program, &args, &[], &dir.path().join("stderr.log"));
            let endpoint = format!("127.0.0.1:{client}");
            wait_serving(
                std::slice::from_ref(&endpoint),
                std::slice::from_ref(&member),
            )
            .await;
            drop(member);
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            lengths.push(text.lines().count());
        }
        let stderr = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
        assert!(
            lengths[0] > 0,
            "{program:?} wrote nothing to the file; stderr:\n{stderr}"
        );
        assert!(
            lengths[1] > lengths[0],
            "{program:?} did not append on restart: {lengths:?}"
        );
        assert!(
            !stderr.trim().is_empty(),
            "{program:?} wrote nothing to stderr"
        );
    }
}

#[test]
fn flags_raftkv_cannot_honour_stop_it_with_a_clear_message() {
    let too_big = (raftkv_raft::MAX_REQUEST_BYTES_LIMIT + 1).to_string();
    for (args, expected) in [
        (
            &["--cipher-suites", "TLS_RSA_WITH_AES_128_CBC_SHA"][..],
            "--cipher-suites: TLS_RSA_WITH_AES_128_CBC_SHA is not supported by raftkv",
        ),
        (
            &["--discovery=https://discovery.etcd.io/x"],
            "unsupported flag --discovery: raftkv has no discovery",
        ),
        (
            &["--max-request-bytes", &too_big],
            "is above raftkv's limit of",
        ),
        (
            &[
                "--listen-peer-urls=unixs://127.0.0.1:1",
                "--initial-advertise-peer-urls=unixs://127.0.0.1:1",
            ],
            "unix sockets are not supported",
        ),
        (&["--enable-v2", "false"], "'false' is not a valid flag"),
    ] {
        let (code, out) = run_to_exit(raftkv_bin(), args, &[]);
        assert_ne!(code, Some(0), "{args:?}: {out}");
        assert!(
            out.contains(expected),
            "{args:?}: want {expected:?} in:\n{out}"
        );
    }
}

/// The ids of a 3-member cluster started from `initial` with `token`, one header per member.
async fn cluster_ids(
    program: &Path,
    dir: &Path,
    ports: &[(u16, u16)],
    token: &str,
) -> Vec<(u64, u64)> {
    std::fs::create_dir_all(dir).unwrap();
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("n{i}=http://127.0.0.1:{peer}"))
        .collect();
    let mut processes = Vec::new();
    for (i, (client, peer)) in ports.iter().enumerate() {
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let args = [
            "--name".into(),
            format!("n{i}"),
            "--data-dir".into(),
            dir.join(format!("n{i}")).display().to_string(),
            "--listen-client-urls".into(),
            client_url.clone(),
            "--advertise-client-urls".into(),
            client_url,
            "--listen-peer-urls".into(),
            peer_url.clone(),
            "--initial-advertise-peer-urls".into(),
            peer_url,
            "--initial-cluster".into(),
            initial.join(","),
            "--initial-cluster-token".into(),
            token.into(),
        ];
        processes.push(Process::spawn(
            program,
            &args,
            &[],
            &dir.join(format!("n{i}.log")),
        ));
    }
    let endpoints: Vec<String> = ports
        .iter()
        .map(|(client, _)| format!("127.0.0.1:{client}"))
        .collect();
    let headers = wait_serving(&endpoints, &processes).await;
    drop(processes);
    headers
        .iter()
        .map(|h| (h.member_id, h.cluster_id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_and_cluster_ids_are_etcds() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let token = format!("tok-{}", ports[0].0);
    let etcd = cluster_ids(Path::new("etcd"), &dir.path().join("etcd"), &ports, &token).await;
    let raftkv = cluster_ids(raftkv_bin(), &dir.path().join("raftkv"), &ports, &token).await;
    assert_eq!(raftkv, etcd, "(member id, cluster id) per member");
    let cluster = etcd[0].1;
    assert!(etcd.iter().all(|(_, c)| *c == cluster));
    let mut members: Vec<u64> = etcd.iter().map(|(m, _)| *m).collect();
    members.sort_unstable();
    members.dedup();
    assert_eq!(members.len(), 3, "{etcd:?}");
}

/// A member runs with transparent huge pages off (`PR_SET_THP_DISABLE`): its allocator's
/// arenas ask for huge pages, and zeroing a 2 MiB page on each first touch of arena memory
/// cost a fifth of the members' CPU during a burst of writes (docs/benchmarks.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_runs_without_transparent_huge_pages() {
    let cluster = Cluster::start(Server::Raftkv, 1, Options::default()).await;
    let pid = cluster.members[0].pid().expect("the member runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc");
    let line = status
        .lines()
        .find(|l| l.starts_with("THP_enabled:"))
        .expect("the kernel reports THP_enabled (Linux 5.0 and later)");
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
}

/// `--wal-dir` with `server`: a member keeps its Raft log there (and nothing in
/// `<data-dir>/member/wal`) and restarts from it. Returns the member's data dir, the WAL
/// dir and the cluster (stopped), for the caller's further checks.
async fn wal_dir_session(server: Server, root: &Path) -> (std::path::PathBuf, Cluster) {
    let wal = root.join(format!("{server:?}-wal"));
    let opts = Options {
        extra_args: vec!["--wal-dir".into(), wal.display().to_string()],
        ..Options::default()
    };
    let mut cluster = Cluster::start(server, 1, opts).await;
    let endpoints = cluster.endpoints();
    etcdctl_ok(&endpoints, &["put", "a", "1"]);
    etcdctl_ok(&endpoints, &["put", "b", "2"]);
    cluster.kill_and_restart_all().await;
    assert_eq!(
        etcdctl_ok(&cluster.endpoints(), &["get", "a", "b"]),
        "a\n1\n",
        "{server:?}"
    );
    assert_eq!(
        etcdctl_ok(
            &cluster.endpoints(),
            &["get", "", "--from-key", "--keys-only"]
        )
        .split_whitespace()
        .collect::<Vec<_>>(),
        ["a", "b"],
        "{server:?}"
    );
    let files = std::fs::read_dir(&wal).map_or(0, |d| d.count());
    assert!(files > 0, "{server:?}: nothing in {}", wal.display());
    let own = cluster.members[0].data_dir.join("member").join("wal");
    assert!(!own.exists(), "{server:?}: {} was made", own.display());
    cluster.stop(0);
    (wal, cluster)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_dir_keeps_the_raft_log_apart_as_etcds() {
    let root = tempfile::tempdir().expect("tempdir");
    drop(wal_dir_session(Server::Etcd, root.path()).await);
    let (wal, mut cluster) = wal_dir_session(Server::Raftkv, root.path()).await;
    // Without its WAL the member refuses to start (it could vote twice in one term).
    std::fs::rename(&wal, root.path().join("moved-away")).expect("rename");
    cluster.restart(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(code) = cluster.exited(0) {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "the member kept running without its WAL"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(code, Some(0));
    let log = cluster.members[0].log_text();
    assert!(
        log.contains(&format!("{} is missing", wal.display())),
        "{log}"
    );
    // `snapshot restore --wal-dir` refuses a directory that exists, as etcdctl does.
    let existing = root.path().join("moved-away");
    let snapshot = root.path().join("none.db");
    std::fs::write(&snapshot, b"not read").expect("write");
    let mut messages = Vec::new();
    for raftkvctl in [false, true] {
        let out = crate::fixture::ctl_command(raftkvctl)
            .args(["snapshot", "restore"])
            .arg(&snapshot)
            .arg("--data-dir")
            .arg(root.path().join("restored"))
            .arg("--wal-dir")
            .arg(&existing)
            .output()
            .expect("runs");
        assert!(!out.status.success());
        messages.push(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    assert_eq!(messages[1], messages[0]);
    assert_eq!(
        messages[0],
        format!("Error: wal-dir {:?} exists", existing.display().to_string())
    );
}
