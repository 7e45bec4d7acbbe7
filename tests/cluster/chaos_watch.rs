//! Watchers under the chaos schedule: one per member, watching the chaos keys from the
//! first revision with prev_kv, each served by its own member (followers too). A watcher
//! whose stream breaks (its member killed, paused, cut off) resumes from its last
//! revision + 1, on its own member when it is back (on the next one if it stays away,
//! as when it is removed). Afterwards what etcd's robustness tests check:
//! each stream is ordered, without duplicates, atomic per revision (a revision's events
//! in one response), its prev_kvs are the key's previous values, every acknowledged put is
//! in it at its revision, and every stream — and a fresh watch from the first revision on
//! every member — equals the MVCC history read back with ranges at each revision. Each
//! watcher also asks for progress every 250 ms: no event at or below an answer's revision
//! may come after it on the same stream (etcd #15220; Kubernetes' watch cache relies on
//! it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::watch_client::WatchClient;
use raftkv_proto::etcdserverpb::watch_request::RequestUnion;
use raftkv_proto::etcdserverpb::{
    RangeRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest,
};
use raftkv_proto::mvccpb::Event;
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// One event as compared: revision, type (0 put, 1 delete), key, value, prev value.
pub type Seen = (i64, i32, String, String, Option<String>);

fn seen(event: &Event) -> Seen {
    let kv = event.kv.clone().unwrap_or_default();
    (
        kv.mod_revision,
        event.r#type,
        String::from_utf8_lossy(&kv.key).into_owned(),
        String::from_utf8_lossy(&kv.value).into_owned(),
        event
            .prev_kv
            .as_ref()
            .map(|p| String::from_utf8_lossy(&p.value).into_owned()),
    )
}

/// What one watcher saw.
#[derive(Debug, Default, Clone)]
pub struct WatchLog {
    /// Each response's events, in arrival order.
    pub responses: Vec<Vec<Seen>>,
    /// Where each watch was opened (the first, then every resume after a break): responses
    /// recorded before it, its start revision and the member's index.
    pub opened: Vec<(usize, i64, usize)>,
    /// Answers it should never get (cancels, errors in created answers).
    pub unexpected: Vec<String>,
    /// Progress answers: responses recorded before each, and its revision.
    pub progress: Vec<(usize, i64)>,
    /// Where the server said a resume was compacted (only where compaction is expected):
    /// responses recorded before it, and the revisions it never delivered, from the one
    /// asked for up to the compact revision it resumed at.
    pub skipped: Vec<(usize, i64, i64)>,
    /// Whether the run compacts: then an event's prev_kv may be missing, as in etcd, which
    /// reads it at the event's revision - 1 when it sends the event and leaves it out once
    /// that is compacted.
    pub compaction: Compaction,
}

impl WatchLog {
    /// How often it resumed after its stream broke.
    pub fn resumes(&self) -> usize {
        self.opened.len().saturating_sub(1)
    }

    fn last_revision(&self) -> i64 {
        self.responses
            .iter()
            .rev()
            .find_map(|r| r.last().map(|e| e.0))
            .unwrap_or(0)
    }

    /// Where to resume: after the last event, or at the compact revision the last resume
    /// was told of.
    fn next_revision(&self) -> i64 {
        let after_skip = self.skipped.last().map_or(0, |s| s.2);
        (self.last_revision() + 1).max(after_skip)
    }

    /// Whether the server said it had compacted `revision` before this stream got it.
    pub fn skipped_over(&self, revision: i64) -> bool {
        self.skipped
            .iter()
            .any(|&(_, from, to)| (from..to).contains(&revision))
    }

    /// The events, flattened.
    pub fn events(&self) -> Vec<Seen> {
        self.responses.iter().flatten().cloned().collect()
    }
}

/// The watchers of one chaos run.
pub struct Watchers {
    logs: Vec<Arc<Mutex<WatchLog>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Whether a watcher may be told that its resume revision was compacted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Compaction {
    /// Nothing is compacted in the run: such an answer is a failure.
    #[default]
    Never,
    /// The cluster compacts on its own: the watcher records the gap and resumes at the
    /// compact revision, as etcd's clients do.
    Expected,
}

const PREFIX: &str = "k";
const PREFIX_END: &str = "l";

fn create(start: i64) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: PREFIX.into(),
            range_end: PREFIX_END.into(),
            start_revision: start,
            prev_kv: true,
            ..Default::default()
        })),
    }
}

async fn channel(endpoint: &str) -> Option<Channel> {
    tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
        .ok()?
        .connect_timeout(Duration::from_millis(300))
        .connect()
        .await
        .ok()
}

/// Watches until stopped, resuming after every break.
async fn watcher(
    home: usize,
    endpoints: Vec<String>,
    log: Arc<Mutex<WatchLog>>,
    stop: Arc<AtomicBool>,
) {
    let mut target = home;
    let mut failures = 0;
    while !stop.load(Ordering::Relaxed) {
        let start = log.lock().unwrap().next_revision().max(1);
        let broke = match channel(&endpoints[target]).await {
            None => true,
            Some(channel) => {
                let (tx, rx) = mpsc::channel(4);
                let _ = tx.send(create(start)).await;
                let opened = tokio::time::timeout(
                    Duration::from_secs(2),
                    WatchClient::new(channel)
                        .watch(tokio_stream::wrappers::ReceiverStream::new(rx)),
                )
                .await;
                match opened {
                    Ok(Ok(answers)) => {
                        {
                            let mut log = log.lock().unwrap();
                            let at = log.responses.len();
                            log.opened.push((at, start, target));
                        }
                        failures = 0;
                        let asking = tokio::spawn({
                            let tx = tx.clone();
                            async move {
                                let ask = WatchRequest {
                                    request_union: Some(RequestUnion::ProgressRequest(
                                        WatchProgressRequest {},
                                    )),
                                };
                                loop {
                                    tokio::time::sleep(Duration::from_millis(250)).await;
                                    if tx.send(ask.clone()).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        });
                        follow(answers.into_inner(), &log, &stop).await;
                        asking.abort();
                        drop(tx);
                        true
                    }
                    _ => true,
                }
            }
        };
        if broke && !stop.load(Ordering::Relaxed) {
            failures += 1;
            if failures >= 20 {
                // Its member stays away (removed, say): resume on the next one.
                target = (target + 1) % endpoints.len();
                failures = 0;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Records answers until the stream breaks or the run stops.
async fn follow(
    mut answers: tonic::Streaming<raftkv_proto::etcdserverpb::WatchResponse>,
    log: &Mutex<WatchLog>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        let answer = match tokio::time::timeout(Duration::from_millis(300), answers.next()).await {
            Err(_) => continue, // quiet: check the stop flag
            Ok(Some(Ok(answer))) => answer,
            Ok(_) => return,
        };
        let mut log = log.lock().unwrap();
        if answer.watch_id == -1 && answer.events.is_empty() && !answer.created && !answer.canceled
        {
            let at = log.responses.len();
            let revision = answer.header.map_or(0, |h| h.revision);
            log.progress.push((at, revision));
            continue;
        }
        let next = log.next_revision();
        if log.compaction == Compaction::Expected
            && answer.canceled
            && answer.compact_revision > next
            && answer.events.is_empty()
        {
            let at = log.responses.len();
            log.skipped.push((at, next, answer.compact_revision));
            return;
        }
        if answer.canceled || answer.compact_revision != 0 {
            log.unexpected.push(format!("{answer:?}"));
            return;
        }
        if !answer.events.is_empty() {
            log.responses.push(answer.events.iter().map(seen).collect());
        }
    }
}

impl Watchers {
    /// One watcher per member, from the first revision, in a run that never compacts.
    pub fn start(endpoints: &[String]) -> Self {
        Self::start_with(endpoints, Compaction::Never)
    }

    /// One watcher per member, from the first revision.
    pub fn start_with(endpoints: &[String], compaction: Compaction) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut logs = Vec::new();
        let mut tasks = Vec::new();
        for home in 0..endpoints.len() {
            let log = Arc::new(Mutex::new(WatchLog {
                compaction,
                ..WatchLog::default()
            }));
            logs.push(log.clone());
            tasks.push(tokio::spawn(watcher(
                home,
                endpoints.to_vec(),
                log,
                stop.clone(),
            )));
        }
        Self { logs, stop, tasks }
    }

    /// Waits until every watcher has seen `revision` (the sentinel: the cluster's last
    /// change to the watched keys) or `limit` passes, then stops them and returns their
    /// logs.
    pub async fn finish(self, revision: i64, limit: Duration) -> Vec<WatchLog> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline
            && self
                .logs
                .iter()
                .any(|l| l.lock().unwrap().last_revision() < revision)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        self.logs
            .iter()
            .map(|l| l.lock().unwrap().clone())
            .collect()
    }
}

/// Writes the last change to the watched keys (after the run, once the cluster
/// converged) and returns its revision: every stream ends with it.
pub async fn write_sentinel(kv: &mut KvClient<Channel>) -> i64 {
    let put = kv
        .put(raftkv_proto::etcdserverpb::PutRequest {
            key: "k~end".into(),
            value: "end".into(),
            ..Default::default()
        })
        .await
        .expect("sentinel put")
        .into_inner();
    put.header.map_or(0, |h| h.revision)
}

/// A fresh watch from the first revision on `endpoint`, read up to the sentinel at
/// `last` (which it leaves out, as [`Watchers::finish`] does).
pub async fn read_history(endpoint: &str, last: i64) -> Vec<Seen> {
    let channel = channel(endpoint).await.expect("connecting for history");
    let (tx, rx) = mpsc::channel(4);
    tx.send(create(1)).await.expect("queued");
    let mut answers = WatchClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("watch")
        .into_inner();
    let mut events = Vec::new();
    while events.last().map_or(0, |e: &Seen| e.0) < last {
        let answer = tokio::time::timeout(Duration::from_secs(30), answers.next())
            .await
            .unwrap_or_else(|_| panic!("history from {endpoint} stalled before revision {last}"))
            .expect("stream open")
            .expect("answer");
        events.extend(answer.events.iter().map(seen));
    }
    without_sentinel(events)
}

/// Events without the sentinel.
pub fn without_sentinel(mut events: Vec<Seen>) -> Vec<Seen> {
    events.retain(|e| e.2 != "k~end");
    events
}

/// Checks one stream on its own: ordered, no duplicates, atomic per revision, prev_kv the
/// key's previous value in the stream (it starts at the first revision; after a gap the
/// server announced as compacted, only for keys seen again since; in a compacting run a
/// prev_kv may be left out, not wrong). A failed prev_kv check
/// shows the key's events in the stream and in `reference` (the history as a fresh watch
/// reads it, if there is one) and where the stream was opened.
pub fn check_stream(name: &str, log: &WatchLog, reference: &[Seen]) -> Result<(), String> {
    if !log.unexpected.is_empty() {
        return Err(format!("{name}: unexpected answers {:?}", log.unexpected));
    }
    let mut last_rev = 0;
    for (i, response) in log.responses.iter().enumerate() {
        let first = response.first().map_or(0, |e| e.0);
        if first <= last_rev {
            return Err(format!(
                "{name}: response {i} starts at revision {first}, after {last_rev}: a revision split, repeated or out of order"
            ));
        }
        for pair in response.windows(2) {
            if pair[1].0 < pair[0].0 {
                return Err(format!("{name}: out of order in response {i}: {pair:?}"));
            }
            if pair[1].0 == pair[0].0 && pair[1].2 == pair[0].2 {
                return Err(format!("{name}: duplicate in response {i}: {pair:?}"));
            }
        }
        last_rev = response.last().map_or(last_rev, |e| e.0);
    }
    // A progress answer at r: nothing at or below r after it on the same stream (until the
    // next resume opened another).
    for &(at, revision) in &log.progress {
        let end = log
            .opened
            .iter()
            .map(|o| o.0)
            .find(|&opened| opened > at)
            .unwrap_or(log.responses.len());
        let late = log.responses[at..end]
            .iter()
            .flatten()
            .find(|e| e.0 <= revision);
        if let Some(late) = late {
            return Err(format!(
                "{name}: event {late:?} came after a progress answer at revision {revision}"
            ));
        }
    }
    let mut values: std::collections::HashMap<String, Option<String>> = Default::default();
    // Until a gap, a key not seen yet had no value.
    let mut all_known = true;
    let mut events = Vec::new();
    for (i, response) in log.responses.iter().enumerate() {
        let gap = log.skipped.iter().any(|&(at, _, _)| at == i);
        events.extend(response.iter().enumerate().map(|(j, e)| (gap && j == 0, e)));
    }
    for (after_gap, event) in events {
        if after_gap {
            // Events may have been missed here: what the stream knew of each key is stale.
            all_known = false;
            values.clear();
        }
        let (rev, kind, key, value, prev) = event;
        if !all_known && !values.contains_key(key) {
            values.insert(key.clone(), (*kind == 0).then(|| value.clone()));
            continue;
        }
        let before = values.get(key).cloned().flatten();
        if *prev != before && !(log.compaction == Compaction::Expected && prev.is_none()) {
            let of_key = |events: &[Seen]| -> Vec<String> {
                events
                    .iter()
                    .filter(|e| &e.2 == key && e.0 <= *rev)
                    .rev()
                    .take(8)
                    .map(|e| format!("{}:{}:{}<-{:?}", e.0, e.1, e.3, e.4))
                    .collect()
            };
            let opened: Vec<(i64, usize, Option<i64>)> = log
                .opened
                .iter()
                .map(|&(at, start, member)| {
                    let first = log.responses.get(at).and_then(|r| r.first()).map(|e| e.0);
                    (start, member, first)
                })
                .collect();
            return Err(format!(
                "{name}: prev_kv of {key} at {rev} is {prev:?}, the stream had {before:?}\n  \
                 {key} up to {rev}, newest first, in the stream: {:?}\n  \
                 in the history: {:?}\n  \
                 watches opened (start revision, member, first revision received): {opened:?}",
                of_key(&log.events()),
                of_key(reference)
            ));
        }
        values.insert(key.clone(), (*kind == 0).then(|| value.clone()));
    }
    Ok(())
}

/// Checks every event of `events` against a range read at its revision (the MVCC history).
pub async fn check_against_ranges(
    kv: &mut KvClient<Channel>,
    events: &[Seen],
) -> Result<(), String> {
    for (rev, kind, key, value, _) in events {
        let found = kv
            .range(RangeRequest {
                key: key.clone().into_bytes().into(),
                revision: *rev,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("range at {rev}: {e}"))?
            .into_inner();
        let at = found.kvs.first();
        let ok = match kind {
            0 => at.is_some_and(|kv| kv.mod_revision == *rev && kv.value == value.as_bytes()),
            _ => at.is_none(),
        };
        if !ok {
            return Err(format!(
                "event {:?} disagrees with the store at that revision: {at:?}",
                (rev, kind, key, value)
            ));
        }
    }
    Ok(())
}
