//! `--auto-compaction-mode=periodic` beside a real etcd: with a retention of one second,
//! both servers compact on their own while one client writes, never a revision that was
//! current less than a retention ago, and keep compacting as the writes go on.

use std::time::{Duration, Instant};

use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::{PutRequest, RangeRequest};
use tonic::transport::Channel;

use crate::fixture::{Cluster, Options, Server};

const RETENTION: Duration = Duration::from_secs(1);
const WRITING: Duration = Duration::from_secs(7);

/// The lowest revision still readable (the compacted revision, or 1 before any
/// compaction), found by reading the key at revisions up to `last`.
async fn oldest_readable(kv: &mut KvClient<Channel>, last: i64) -> i64 {
    let readable = |rev: i64| {
        let mut kv = kv.clone();
        async move {
            match kv
                .range(RangeRequest {
                    key: b"k".to_vec().into(),
                    revision: rev,
                    ..Default::default()
                })
                .await
            {
                Ok(_) => true,
                Err(s) if s.message().contains("required revision has been compacted") => false,
                Err(s) => panic!("reading at {rev}: {s:?}"),
            }
        }
    };
    assert!(
        readable(last).await,
        "the last revision {last} was compacted"
    );
    let (mut lo, mut hi) = (1, last); // hi is readable
    if readable(lo).await {
        return lo;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if readable(mid).await {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// Writes `k` one put after another for [`WRITING`]; the oldest readable revision at the
/// end, and each revision with when its put was acknowledged (since the cluster started).
async fn session(server: Server) -> (i64, Vec<(i64, Duration)>) {
    let opts = Options {
        extra_args: vec![
            "--auto-compaction-mode=periodic".into(),
            format!("--auto-compaction-retention={}ms", RETENTION.as_millis()),
        ],
        ..Options::default()
    };
    let started = Instant::now();
    let cluster = Cluster::start(server, 3, opts).await;
    let leader = cluster.leader().await.expect("a leader");
    let mut kv = KvClient::connect(format!("http://{}", cluster.members[leader].endpoint()))
        .await
        .expect("connect");
    let mut acked = Vec::new();
    let writing = Instant::now();
    let mut i = 0u64;
    while writing.elapsed() < WRITING {
        let resp = kv
            .put(PutRequest {
                key: b"k".to_vec().into(),
                value: i.to_string().into_bytes().into(),
                ..Default::default()
            })
            .await
            .expect("put")
            .into_inner();
        let rev = resp.header.expect("a header").revision;
        acked.push((rev, started.elapsed()));
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let end = started.elapsed();
    let last = acked.last().expect("a put").0;
    let oldest = oldest_readable(&mut kv, last).await;
    acked.push((i64::MAX, end));
    (oldest, acked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_auto_compaction_keeps_the_retention_as_etcd() {
    for server in [Server::Etcd, Server::Raftkv] {
        let (oldest, acked) = session(server).await;
        let end = acked.last().expect("the end").1;
        let last = acked[acked.len() - 2].0;
        // Never compacted within a retention of the end: the revision current a retention
        // before the end is at most the first one acknowledged after that time, and it is
        // still readable.
        let recent = acked
            .iter()
            .find(|(_, at)| *at + RETENTION >= end)
            .expect("a put in the last retention")
            .0
            .min(last);
        assert!(
            oldest <= recent,
            "{server:?}: compacted at {} (revision {recent} was acknowledged within a retention of the end)",
            oldest - 1
        );
        // And compacting as the writes go on: everything acknowledged by five retentions
        // before the end is compacted (the first compaction comes one retention after the
        // start, then one every retention, each at the revision about one retention old).
        let old = acked
            .iter()
            .take_while(|(_, at)| *at + RETENTION * 5 <= end)
            .last()
            .map_or(1, |(rev, _)| *rev);
        assert!(
            oldest > old,
            "{server:?}: oldest readable revision {oldest}, but revision {old} was acknowledged five retentions before the end"
        );
    }
}
