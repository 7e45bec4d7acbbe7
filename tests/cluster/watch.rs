//! Watch, differentially: the same sessions through the real etcdctl and through raw gRPC
//! watch streams, against a 3-member raftkv cluster and a real etcd 3-member cluster;
//! outputs must match once ids, terms and ports are masked.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::watch_client::WatchClient;
use raftkv_proto::etcdserverpb::watch_create_request::FilterType;
use raftkv_proto::etcdserverpb::watch_request::RequestUnion;
use raftkv_proto::etcdserverpb::{
    PutRequest, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest,
    WatchResponse,
};
use tokio::sync::mpsc;

use crate::etcdctl::{mask, mask_number_after, transcript};
use crate::fixture::{Cluster, Options, Server, assert_no_differences, etcdctl, etcdctl_ok};

/// An etcdctl left running (a live watch): killed and read by [`finish`].
struct Running {
    command: String,
    child: Child,
}

fn start_etcdctl(endpoints: &str, args: &[&str], stdin_line: Option<&str>) -> Running {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("starting etcdctl");
    if let Some(line) = stdin_line {
        let stdin = child.stdin.as_mut().expect("piped stdin");
        stdin.write_all(line.as_bytes()).expect("writing stdin");
        stdin.flush().expect("flushing stdin");
    }
    Running {
        command: format!("etcdctl {}", args.join(" ")),
        child,
    }
}

/// Kills a running etcdctl and returns its transcript.
fn finish(mut running: Running) -> String {
    let _ = running.child.kill();
    let out = running
        .child
        .wait_with_output()
        .expect("waiting for etcdctl");
    transcript(&running.command, &out)
}

/// Runs an etcdctl watch for `secs` seconds (it never ends by itself) and returns its
/// transcript.
fn watch_for(endpoints: &str, args: &[&str], secs: f64) -> String {
    let running = start_etcdctl(endpoints, args, None);
    std::thread::sleep(Duration::from_secs_f64(secs));
    finish(running)
}

const SHOW_EVENT: &str =
    "echo \"$ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY $ETCD_WATCH_VALUE $ETCD_WATCH_REVISION\"";

/// The etcdctl session: live watchers of every form while a scripted set of writes runs,
/// then watches from past revisions, then the same after a compaction.
fn etcdctl_session(eps: &str) -> Vec<String> {
    let live = vec![
        start_etcdctl(eps, &["watch", "--prefix", "", "-w", "json"], None),
        start_etcdctl(eps, &["watch", "foo", "--prev-kv"], None),
        start_etcdctl(eps, &["watch", "foo", "--", "sh", "-c", SHOW_EVENT], None),
        start_etcdctl(eps, &["watch", "-i"], Some("watch a/ --prefix --prev-kv\n")),
        start_etcdctl(eps, &["watch", "a/1", "a/3", "-w", "fields"], None),
    ];
    std::thread::sleep(Duration::from_millis(1500));
    let writes: &[(&[&str], Option<&str>)] = &[
        (&["put", "foo", "bar"], None),               // 2
        (&["put", "foo", "baz"], None),               // 3
        (&["put", "a/1", "1"], None),                 // 4
        (&["put", "a/2", "2"], None),                 // 5
        (&["txn"], Some("\nput z 3\nput c 3\n\n\n")), // 6: z before c
        (&["del", "a/", "--prefix"], None),           // 7
        (&["put", "b", "4"], None),                   // 8
        (&["put", "foo", "qux"], None),               // 9
    ];
    let mut lines = Vec::new();
    for (args, stdin) in writes {
        let out = etcdctl(eps, args, *stdin);
        lines.push(transcript(&format!("etcdctl {}", args.join(" ")), &out));
    }
    std::thread::sleep(Duration::from_millis(1500));
    lines.extend(live.into_iter().map(finish));
    for args in [
        &["watch", "foo", "--rev", "1"][..],
        &["watch", "--prefix", "a/", "--rev", "1", "--prev-kv"],
        &["watch", "a/1", "a/3", "--rev", "2"],
        &["watch", "--prefix", "", "--rev", "1", "-w", "json"],
        &["watch", "--prefix", "", "--rev", "5", "-w", "fields"],
        &["watch", "--rev", "9", "foo", "--", "sh", "-c", SHOW_EVENT],
    ] {
        lines.push(watch_for(eps, args, 1.0));
    }
    lines.push(etcdctl_ok(eps, &["compaction", "6"]));
    for args in [
        &["watch", "foo", "--rev", "2"][..],
        &["watch", "foo", "--rev", "5", "-w", "json"],
        &["watch", "--prefix", "", "--rev", "6"],
    ] {
        lines.push(watch_for(eps, args, 1.0));
    }
    lines
}

fn compare(ours: &[String], reference: &[String]) {
    let mut differences = Vec::new();
    for (o, r) in ours.iter().zip(reference) {
        if o != r {
            differences.push(format!("--- etcd\n{r}--- raftkv\n{o}"));
        }
    }
    assert_eq!(
        ours.len(),
        reference.len(),
        "--- etcd\n{}\n--- raftkv\n{}",
        reference.join("\n"),
        ours.join("\n")
    );
    assert_no_differences(&differences);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_watch_sessions_match_real_etcd() {
    let ours = {
        let cluster = Cluster::start(Server::Raftkv, 3, Options::default()).await;
        let eps = cluster.endpoints();
        tokio::task::spawn_blocking(move || etcdctl_session(&eps))
            .await
            .unwrap()
    };
    let reference = {
        let cluster = Cluster::start(Server::Etcd, 3, Options::default()).await;
        let eps = cluster.endpoints();
        tokio::task::spawn_blocking(move || etcdctl_session(&eps))
            .await
            .unwrap()
    };
    compare(&ours, &reference);
}

/// A raw watch stream: requests in through a channel, answers read with a quiet period.
struct RawStream {
    requests: mpsc::Sender<WatchRequest>,
    answers: tonic::Streaming<WatchResponse>,
}

impl RawStream {
    /// Opens a stream with its first request (etcd's server sends the stream's headers
    /// only with its first answer, which tonic waits for before it returns the stream).
    async fn open(endpoint: &str, first: RequestUnion) -> Self {
        let mut client = WatchClient::connect(format!("http://{endpoint}"))
            .await
            .expect("connecting");
        let (requests, rx) = mpsc::channel(16);
        requests
            .send(WatchRequest {
                request_union: Some(first),
            })
            .await
            .expect("queued");
        let answers = client
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("opening a watch stream")
            .into_inner();
        Self { requests, answers }
    }

    async fn send(&self, request: RequestUnion) {
        self.requests
            .send(WatchRequest {
                request_union: Some(request),
            })
            .await
            .expect("stream open");
    }

    /// Every answer until none comes for `quiet`, one masked line each, grouped by watch id
    /// (etcd serves the watchers of one revision in Go's random map order) but in arrival
    /// order for each watcher.
    async fn drain(&mut self, quiet: Duration) -> Vec<String> {
        let mut answers = Vec::new();
        while let Ok(Some(answer)) = tokio::time::timeout(quiet, self.answers.next()).await {
            answers.push(answer.expect("watch stream failed"));
        }
        answers.sort_by_key(|a| a.watch_id);
        answers.iter().map(describe).collect()
    }
}

/// An answer with ids and terms masked, values shortened.
fn describe(answer: &WatchResponse) -> String {
    let mut answer = answer.clone();
    for event in &mut answer.events {
        for kv in [event.kv.as_mut(), event.prev_kv.as_mut()]
            .into_iter()
            .flatten()
        {
            if kv.value.len() > 16 {
                kv.value = Bytes::from(format!("<{} bytes>", kv.value.len()));
            }
        }
    }
    let mut line = format!("{answer:?}");
    for key in ["cluster_id: ", "member_id: ", "raft_term: "] {
        line = mask_number_after(&line, key);
    }
    mask(&line)
}

fn create(key: &str, range_end: &str, start: i64) -> WatchCreateRequest {
    WatchCreateRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        range_end: Bytes::copy_from_slice(range_end.as_bytes()),
        start_revision: start,
        ..Default::default()
    }
}

async fn put(kv: &mut KvClient<tonic::transport::Channel>, key: &str, value: Vec<u8>) {
    kv.put(PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::from(value),
        ..Default::default()
    })
    .await
    .expect("put");
}

/// The protocol details etcdctl does not show: filters, client-chosen and duplicate ids,
/// empty ranges, progress requests, cancels, fragments, progress notifications.
async fn protocol_session(endpoint: &str) -> Vec<String> {
    let quiet = Duration::from_millis(700);
    let mut kv = KvClient::connect(format!("http://{endpoint}"))
        .await
        .expect("connecting");
    for (k, v) in [("f", "1"), ("f", "2"), ("g", "1")] {
        put(&mut kv, k, v.as_bytes().to_vec()).await;
    }
    kv.delete_range(raftkv_proto::etcdserverpb::DeleteRangeRequest {
        key: Bytes::from_static(b"f"),
        ..Default::default()
    })
    .await
    .expect("delete"); // revision 5
    // Deletes only, with a chosen id, from the beginning.
    let mut req = create("f", "", 1);
    req.filters = vec![FilterType::Noput as i32];
    req.watch_id = 5;
    let mut stream = RawStream::open(endpoint, RequestUnion::CreateRequest(req)).await;
    let mut lines = Vec::new();
    let mut step = |name: &str, answers: Vec<String>| {
        lines.push(format!("## {name}"));
        lines.extend(answers);
    };
    step("noput from 1, id 5", stream.drain(quiet).await);
    let mut req = create("a", "g", 1);
    req.filters = vec![FilterType::Nodelete as i32];
    req.prev_kv = true;
    stream.send(RequestUnion::CreateRequest(req)).await;
    step("nodelete range with prev_kv", stream.drain(quiet).await);
    stream
        .send(RequestUnion::CreateRequest(create("f", "a", 0)))
        .await;
    step("empty range", stream.drain(quiet).await);
    let mut dup = create("x", "", 0);
    dup.watch_id = 5;
    stream.send(RequestUnion::CreateRequest(dup)).await;
    step("duplicate id", stream.drain(quiet).await);
    stream
        .send(RequestUnion::CreateRequest(create("", "\0", 0)))
        .await;
    step("everything from now, auto id", stream.drain(quiet).await);
    stream
        .send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
        .await;
    step("progress request", stream.drain(quiet).await);
    put(&mut kv, "f", b"3".to_vec()).await; // 6
    step("live put", stream.drain(quiet).await);
    stream
        .send(RequestUnion::CancelRequest(WatchCancelRequest {
            watch_id: 5,
        }))
        .await;
    stream
        .send(RequestUnion::CancelRequest(WatchCancelRequest {
            watch_id: 999,
        }))
        .await;
    step("cancel 5 and unknown 999", stream.drain(quiet).await);
    kv.delete_range(raftkv_proto::etcdserverpb::DeleteRangeRequest {
        key: Bytes::from_static(b"f"),
        ..Default::default()
    })
    .await
    .expect("delete"); // 7
    step("after cancel", stream.drain(quiet).await);
    // Two values of 1 MiB: read back from history in one batch of 2 MiB, above the
    // 1.5 MiB request limit, so a fragmenting watcher gets them in pieces.
    put(&mut kv, "big/1", vec![b'x'; 1 << 20]).await; // 8
    put(&mut kv, "big/2", vec![b'y'; 1 << 20]).await; // 9
    let _ = stream.drain(quiet).await; // the everything-watcher's copies
    let mut req = create("big/", "big0", 8);
    req.fragment = true;
    stream.send(RequestUnion::CreateRequest(req)).await;
    step("fragments", stream.drain(quiet).await);
    let mut req = create("big/", "big0", 8);
    req.watch_id = 100;
    stream.send(RequestUnion::CreateRequest(req)).await;
    step("same without fragments", stream.drain(quiet).await);
    kv.compact(raftkv_proto::etcdserverpb::CompactionRequest {
        revision: 7,
        physical: true,
    })
    .await
    .expect("compact");
    stream
        .send(RequestUnion::CreateRequest(create("f", "", 3)))
        .await;
    step("below the compaction", stream.drain(quiet).await);
    stream
        .send(RequestUnion::CreateRequest(create("f", "", 7)))
        .await;
    step("at the compaction", stream.drain(quiet).await);
    stream
        .send(RequestUnion::CreateRequest(create("later", "", 100)))
        .await;
    put(&mut kv, "later", b"1".to_vec()).await; // 10: below its start, not sent
    step("future start", stream.drain(quiet).await);
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_protocol_matches_real_etcd() {
    let ours = {
        let cluster = Cluster::start(Server::Raftkv, 3, Options::default()).await;
        protocol_session(&cluster.members[0].endpoint()).await
    };
    let reference = {
        let cluster = Cluster::start(Server::Etcd, 3, Options::default()).await;
        protocol_session(&cluster.members[0].endpoint()).await
    };
    compare(&ours, &reference);
}

/// `--experimental-watch-progress-notify-interval`: a watcher that asked gets an empty
/// answer at the current revision each interval in which it had no events; one that did
/// not ask gets none. The same checks hold against a real etcd.
async fn progress_notifications(server: Server) {
    let opts = Options {
        extra_args: vec!["--experimental-watch-progress-notify-interval=1s".into()],
        ..Options::default()
    };
    let cluster = Cluster::start(server, 1, opts).await;
    let endpoint = cluster.members[0].endpoint();
    let mut kv = KvClient::connect(format!("http://{endpoint}"))
        .await
        .expect("connecting");
    put(&mut kv, "p", b"1".to_vec()).await; // revision 2
    let mut asked = create("p", "", 0);
    asked.progress_notify = true;
    let mut stream = RawStream::open(&endpoint, RequestUnion::CreateRequest(asked)).await;
    stream
        .send(RequestUnion::CreateRequest(create("q", "", 0)))
        .await;
    let mut notified = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(3500);
    while let Ok(Some(Ok(answer))) = tokio::time::timeout_at(deadline, stream.answers.next()).await
    {
        if !answer.created {
            notified.push(answer);
        }
    }
    assert!(
        (2..=4).contains(&notified.len()),
        "{server:?}: {notified:?}"
    );
    for answer in &notified {
        assert_eq!(
            answer.watch_id, 0,
            "{server:?}: only the watcher that asked"
        );
        assert!(answer.events.is_empty() && !answer.canceled);
        assert_eq!(answer.header.as_ref().map(|h| h.revision), Some(2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_notifications_come_at_the_configured_interval() {
    progress_notifications(Server::Raftkv).await;
    progress_notifications(Server::Etcd).await;
}

/// Reads answers until `count` events arrived (or `limit` passes); returns the events'
/// (key, revision) in arrival order.
async fn collect_events(
    answers: &mut tonic::Streaming<WatchResponse>,
    count: usize,
    limit: Duration,
) -> Vec<(String, i64)> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut events = Vec::new();
    while events.len() < count {
        match tokio::time::timeout_at(deadline, answers.next()).await {
            Ok(Some(Ok(answer))) => {
                assert!(!answer.canceled, "cancelled: {answer:?}");
                events.extend(answer.events.iter().map(|e| {
                    let kv = e.kv.clone().unwrap_or_default();
                    (
                        String::from_utf8_lossy(&kv.key).into_owned(),
                        kv.mod_revision,
                    )
                }));
            }
            Ok(Some(Err(e))) => panic!("watch stream failed after {} events: {e}", events.len()),
            Ok(None) => panic!("watch stream ended after {} events", events.len()),
            Err(_) => break,
        }
    }
    events
}

/// Asserts `got == want` with a short message: lengths and the first difference.
fn assert_same_events(got: &[(String, i64)], want: &[(String, i64)], what: &str) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: {} events, {} expected; first difference at {at:?}: {:?} vs {:?}",
            got.len(),
            want.len(),
            at.and_then(|i| got.get(i)),
            at.and_then(|i| want.get(i))
        );
    }
}

/// The events `n` single-key puts of `prefix`000… made from revision `first` on.
fn expected_puts(prefix: &str, n: usize, first: i64) -> Vec<(String, i64)> {
    (0..n)
        .map(|i| (format!("{prefix}{i:04}"), first + i as i64))
        .collect()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A watcher whose client never reads blocks neither writes nor other watchers, holds a
/// bounded amount of memory on the member, and gets every event, in order, once it reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_watcher_blocks_nothing_and_catches_up_later() {
    let cluster = Cluster::start(Server::Raftkv, 1, Options::default()).await;
    let endpoint = cluster.members[0].endpoint();
    let pid = cluster.members[0].pid().expect("running");
    let mut stuck =
        RawStream::open(&endpoint, RequestUnion::CreateRequest(create("s", "t", 0))).await;
    let mut reader =
        RawStream::open(&endpoint, RequestUnion::CreateRequest(create("s", "t", 0))).await;
    assert_eq!(
        stuck.drain(Duration::from_millis(300)).await.len(),
        1,
        "created"
    );
    assert_eq!(
        reader.drain(Duration::from_millis(300)).await.len(),
        1,
        "created"
    );
    let before = rss_kib(pid);
    // 3,000 puts of 16 KiB: 48 MiB of events, three times a stream's budget, far beyond
    // what HTTP/2 windows hold for a client that does not read.
    let writer = {
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let mut kv = KvClient::connect(format!("http://{endpoint}"))
                .await
                .expect("kv");
            for i in 0..3000 {
                put(&mut kv, &format!("s{i:04}"), vec![b'v'; 16 << 10]).await;
            }
        })
    };
    let seen = collect_events(&mut reader.answers, 3000, Duration::from_secs(120)).await;
    writer
        .await
        .expect("every write was taken while a watcher was stuck");
    assert_same_events(&seen, &expected_puts("s", 3000, 2), "the reading watcher");
    let grown = rss_kib(pid).saturating_sub(before) / 1024;
    assert!(
        grown < 400,
        "the member grew by {grown} MiB for a stuck watcher"
    );
    // Now the stuck client reads: everything, in order, no gap, no duplicate.
    let late = collect_events(&mut stuck.answers, 3000, Duration::from_secs(120)).await;
    assert_same_events(&late, &expected_puts("s", 3000, 2), "the stuck watcher");
}

/// A follower that installs a snapshot while a watcher is on it: the watcher continues
/// from the store's history with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_a_follower_continues_across_a_snapshot_install() {
    let opts = Options {
        snapshot_count: Some(20),
        ..Options::default()
    };
    let cluster = Cluster::start(Server::Raftkv, 3, opts).await;
    let leader = cluster.leader().await.expect("a leader");
    let follower = (0..3).find(|&i| i != leader).expect("a follower");
    let endpoint = cluster.members[follower].endpoint();
    let mut watch =
        RawStream::open(&endpoint, RequestUnion::CreateRequest(create("s", "t", 1))).await;
    let mut kv = KvClient::connect(format!("http://{}", cluster.members[leader].endpoint()))
        .await
        .expect("kv");
    for i in 0..10 {
        put(&mut kv, &format!("s{i:04}"), b"v".to_vec()).await;
    }
    cluster.pause(follower);
    // The leader keeps the entries a replication in flight may still need: only once the
    // paused member's connection is given up (HTTP/2 keep-alive, about 10 s) does it purge
    // its log behind the next snapshot and write a snapshot file for it. Writes go on until
    // it has (or 60 s have passed), so that the member can only catch up from that file.
    let mut n = 10;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while n < 150
        || (!cluster.members[leader]
            .log_text()
            .contains("snapshot written for a follower")
            && std::time::Instant::now() < deadline)
    {
        put(&mut kv, &format!("s{n:04}"), b"v".to_vec()).await;
        n += 1;
        if n >= 150 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    cluster.resume(follower);
    let seen = collect_events(&mut watch.answers, n, Duration::from_secs(30)).await;
    assert_same_events(&seen, &expected_puts("s", n, 2), "the follower's watcher");
    // Its log line comes a moment after the restore that woke the watcher.
    cluster.members[follower]
        .wait_logged("installed snapshot", Duration::from_secs(10))
        .await;
    drop(cluster);
}

/// A client naming ever more (and ever larger) watchers on one stream is refused once the
/// stream holds 64 MiB of keys (etcd has no bound); the member keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_large_watchers_is_bounded() {
    let cluster = Cluster::start(Server::Raftkv, 1, Options::default()).await;
    let endpoint = cluster.members[0].endpoint();
    let pid = cluster.members[0].pid().expect("running");
    let before = rss_kib(pid);
    let big = |i: usize| {
        let mut key = vec![b'x'; 1_400_000];
        key.extend_from_slice(format!("{i}").as_bytes());
        WatchCreateRequest {
            key: key.into(),
            ..Default::default()
        }
    };
    let mut stream = RawStream::open(&endpoint, RequestUnion::CreateRequest(big(0))).await;
    for i in 1..60 {
        stream.send(RequestUnion::CreateRequest(big(i))).await;
    }
    let mut answers = Vec::new();
    while let Ok(Some(Ok(answer))) =
        tokio::time::timeout(Duration::from_secs(2), stream.answers.next()).await
    {
        answers.push(answer);
    }
    assert_eq!(answers.len(), 60);
    let refused: Vec<_> = answers.iter().filter(|a| a.canceled).collect();
    assert_eq!(answers.len() - refused.len(), 47, "64 MiB of 1.4 MB keys");
    for a in &refused {
        assert_eq!(a.cancel_reason, "raftkv: too many watchers on this stream");
        assert!(a.created && a.watch_id == -1);
    }
    let grown = rss_kib(pid).saturating_sub(before) / 1024;
    assert!(grown < 512, "the member grew by {grown} MiB");
    let out = etcdctl(&endpoint, &["put", "still", "serving"], None);
    assert!(out.status.success());
}

/// etcdctl asks for a leader (clientv3's WithRequireLeader): a member that loses its
/// quorum ends such a watch with etcd's "no leader", and refuses a new one, as etcd does.
fn leaderless_session(cluster: &mut Cluster) -> Vec<String> {
    let endpoint = cluster.members[0].endpoint();
    let running = start_etcdctl(&endpoint, &["watch", "foo"], None);
    std::thread::sleep(Duration::from_millis(1000));
    cluster.kill(1);
    cluster.kill(2);
    std::thread::sleep(Duration::from_millis(6000));
    let mut lines = vec![finish(running)];
    lines.push(watch_for(&endpoint, &["watch", "foo"], 3.0));
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_requiring_a_leader_ends_when_the_member_loses_it() {
    let ours = {
        let mut cluster = Cluster::start(Server::Raftkv, 3, Options::default()).await;
        leaderless_session(&mut cluster)
    };
    let reference = {
        let mut cluster = Cluster::start(Server::Etcd, 3, Options::default()).await;
        leaderless_session(&mut cluster)
    };
    compare(&ours, &reference);
}

/// A single member is its own leader: etcdctl's leader-requiring watch stays open.
fn single_member_session(cluster: &Cluster) -> Vec<String> {
    let endpoint = cluster.members[0].endpoint();
    let running = start_etcdctl(&endpoint, &["watch", "foo"], None);
    std::thread::sleep(Duration::from_millis(4500));
    let put = etcdctl(&endpoint, &["put", "foo", "late"], None);
    std::thread::sleep(Duration::from_millis(500));
    vec![transcript("etcdctl put foo late", &put), finish(running)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_member_keeps_leader_requiring_watches_open() {
    let ours = {
        let cluster = Cluster::start(Server::Raftkv, 1, Options::default()).await;
        single_member_session(&cluster)
    };
    let reference = {
        let cluster = Cluster::start(Server::Etcd, 1, Options::default()).await;
        single_member_session(&cluster)
    };
    compare(&ours, &reference);
}

/// A progress request never answers ahead of events the stream has still to send: a
/// client takes the answer's revision as "every event up to here is in" (Kubernetes'
/// watch cache reads from it). raftkv only: etcd 3.4.23 answers at once (etcd #15220,
/// fixed in later 3.4 releases by waiting for the stream's watchers to catch up, as
/// raftkv does), and also the periodic notices come behind their watcher's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progress_answer_never_runs_ahead_of_events() {
    use raftkv_proto::etcdserverpb::request_op::Request;
    use raftkv_proto::etcdserverpb::{RequestOp, TxnRequest};
    let cluster = Cluster::start(Server::Raftkv, 1, Options::default()).await;
    let endpoint = cluster.members[0].endpoint();
    let mut kv = KvClient::connect(format!("http://{endpoint}"))
        .await
        .expect("connecting");
    // 24 revisions of 128 puts of 1 KiB: a watcher from the start catches up in several
    // batches.
    let (txns, per_txn) = (24, 128);
    for t in 0..txns {
        let success = (0..per_txn)
            .map(|i| RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: Bytes::from(format!("p{t:02}-{i:03}")),
                    value: Bytes::from(vec![b'v'; 1024]),
                    ..Default::default()
                })),
            })
            .collect();
        kv.txn(TxnRequest {
            success,
            ..Default::default()
        })
        .await
        .expect("txn");
    }
    let last = 1 + txns as i64;
    for round in 0..3 {
        let mut stream =
            RawStream::open(&endpoint, RequestUnion::CreateRequest(create("p", "q", 1))).await;
        stream
            .send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
            .await;
        let mut events = 0usize;
        let answered = loop {
            let answer = tokio::time::timeout(Duration::from_secs(20), stream.answers.next())
                .await
                .expect("an answer within 20 s")
                .expect("stream open")
                .expect("answer");
            if answer.created {
                continue;
            }
            if answer.watch_id == -1 {
                assert!(answer.events.is_empty(), "{answer:?}");
                break answer.header.expect("header").revision;
            }
            events += answer.events.len();
        };
        assert_eq!(answered, last, "round {round}");
        assert_eq!(
            events,
            txns * per_txn,
            "round {round}: events before the progress answer at {answered}"
        );
    }
}
