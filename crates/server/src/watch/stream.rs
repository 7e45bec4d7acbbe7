//! One `Watch` stream: create, cancel and progress requests in; created / canceled answers,
//! progress notifications and event batches out, as etcd 3.4's `serverWatchStream` does.
//!
//! One task per stream handles requests and deliveries in turn, so a watcher's created
//! answer always goes out before its first events, and nothing is sent for a watcher
//! after its cancel answer. When the client reads slowly, that task waits to send; the
//! hub then finds the stream's queue full and moves its watchers aside (see `hub`).

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use prost::Message;
use raftkv_proto::etcdserverpb::watch_create_request::FilterType;
use raftkv_proto::etcdserverpb::watch_request::RequestUnion;
use raftkv_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use raftkv_proto::mvccpb::Event;
use raftkv_proto::mvccpb::event::EventType;
use raftkv_storage::mvcc::RangeEnd;
use tokio::sync::mpsc;
use tonic::Status;

use super::answer::WatchAnswer;
use super::hub::{Delivery, ProgressAsked, StreamInbox, StreamQueue, WatchSpec};
use crate::api::EtcdApi;

/// etcd's watch ID for answers that belong to no watcher (`clientv3.InvalidWatchID`).
const INVALID_WATCH_ID: i64 = -1;
/// Watchers one stream may hold, and the key bytes they may name (etcd has no bound).
const STREAM_WATCHERS: usize = 100_000;
const STREAM_KEY_BYTES: usize = 64 << 20;
/// Answers waiting for the client to read them.
const OUTBOUND: usize = 16;

/// How often a progress request that waits for the stream's watchers asks the hub again.
const PROGRESS_RETRY: Duration = Duration::from_millis(20);

/// etcd's messages for refused watch creations (mvcc/watcher.go).
const ERR_EMPTY_RANGE: &str = "mvcc: watcher range is empty";
const ERR_DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// raftkv's own, where etcd sets no bound.
const ERR_STREAM_FULL: &str = "raftkv: too many watchers on this stream";
const ERR_MEMBER_FULL: &str = "raftkv: too many watchers on this member";

/// Settings of every watch stream of a member.
#[derive(Debug, Clone, Copy)]
pub struct WatchConfig {
    /// `--experimental-watch-progress-notify-interval` (etcd's default: 10 minutes).
    pub progress_notify_interval: Duration,
    /// `--max-request-bytes`: fragments are cut to this size.
    pub max_request_bytes: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            progress_notify_interval: Duration::from_secs(600),
            max_request_bytes: 1536 * 1024,
        }
    }
}

/// A watcher as its stream knows it.
struct Local {
    hub_id: u64,
    prev_kv: bool,
    fragment: bool,
    progress_notify: bool,
    /// No events were sent since the last progress tick.
    quiet: bool,
    key_bytes: usize,
}

struct WatchStream {
    api: EtcdApi,
    config: WatchConfig,
    queue: StreamQueue,
    out: mpsc::Sender<Result<WatchAnswer, Status>>,
    watchers: HashMap<i64, Local>,
    by_hub: HashMap<u64, i64>,
    next_auto: i64,
    key_bytes: usize,
    /// A progress request waits for the stream's watchers to catch up (see
    /// [`super::hub::WatchHub::progress_all`]).
    progress_asked: bool,
    /// The credentials the stream was opened with: each create is checked against them.
    credentials: std::sync::Arc<crate::caller::Credentials>,
}

/// Serves one watch stream over `requests`; the answers come out of the returned channel,
/// which closes when the requests end or the receiver is dropped. With `require_leader`
/// (clientv3's `WithRequireLeader`, which etcdctl uses), the stream ends with etcd's "no
/// leader" once the member has known no leader for three election timeouts, as etcd's
/// `monitorLeader` does.
pub fn serve<S>(
    api: EtcdApi,
    config: WatchConfig,
    requests: S,
    require_leader: bool,
) -> mpsc::Receiver<Result<WatchAnswer, Status>>
where
    S: Stream<Item = Result<WatchRequest, Status>> + Send + Unpin + 'static,
{
    let (out, out_rx) = mpsc::channel(OUTBOUND);
    let (queue, inbox) = api.watch_hub().stream_queue();
    // Taken here, inside the request's scope: the stream runs on its own task.
    let credentials = crate::caller::current();
    let stream = WatchStream {
        api,
        config,
        queue,
        out,
        watchers: HashMap::new(),
        by_hub: HashMap::new(),
        next_auto: 0,
        key_bytes: 0,
        progress_asked: false,
        credentials,
    };
    tokio::spawn(stream.run(requests, inbox, require_leader));
    out_rx
}

/// etcd's cancel reason for a watch the caller may not make: the text of the gRPC status
/// etcd would answer with, whole ("rpc error: code = PermissionDenied desc = ..."), which is
/// what clientv3 prints and compares (it retries on an invalid token or an old revision).
fn auth_cancel_reason(e: &raftkv_storage::MvccError) -> String {
    use raftkv_storage::MvccError;
    let (code, error) = match e {
        MvccError::InvalidAuthToken => ("Unauthenticated", MvccError::InvalidAuthToken),
        MvccError::AuthOldRevision => ("InvalidArgument", MvccError::AuthOldRevision),
        MvccError::UserEmpty => ("InvalidArgument", MvccError::UserEmpty),
        _ => ("PermissionDenied", MvccError::PermissionDenied),
    };
    format!("rpc error: code = {code} desc = {error}")
}

impl WatchStream {
    async fn run<S>(mut self, mut requests: S, mut inbox: StreamInbox, require_leader: bool)
    where
        S: Stream<Item = Result<WatchRequest, Status>> + Send + Unpin,
    {
        let period = self
            .config
            .progress_notify_interval
            .max(Duration::from_millis(10));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let leader_lost = self.api.clone().leader_lost();
        tokio::pin!(leader_lost);
        if self.credentials.token.is_some() {
            // A token made on another member counts here once this member applied it
            // (creates are checked without waiting).
            let _ = self.api.auth_info_of(&self.credentials).await;
        }
        let mut requests_open = true;
        loop {
            let answers = tokio::select! {
                request = requests.next(), if requests_open => match request {
                    Some(Ok(request)) => self.request(request),
                    // Its stream broke, or a request could not be received (over the size
                    // limit, malformed): the watch ends with that status, as etcd's.
                    Some(Err(status)) => {
                        let _ = self.out.send(Err(status)).await;
                        break;
                    }
                    // The client is done sending: etcd keeps answering until it goes.
                    None => {
                        requests_open = false;
                        Vec::new()
                    }
                },
                Some(delivery) = inbox.recv() => self.deliver(delivery),
                _ = ticker.tick() => {
                    self.progress_tick();
                    Vec::new()
                }
                // A progress request waits for the watchers to catch up (the hub marks
                // them synced after their last events are queued): look again soon.
                () = tokio::time::sleep(PROGRESS_RETRY), if self.progress_asked => Vec::new(),
                () = &mut leader_lost, if require_leader => {
                    let no_leader = raftkv_raft::NodeError::NO_LEADER.into();
                    let _ = self.out.send(Err(no_leader)).await;
                    break;
                }
                _ = self.out.closed() => break,
            };
            let answers = answers
                .into_iter()
                .chain(self.ask_progress().map(WatchAnswer::Whole));
            for answer in answers {
                if self.out.send(Ok(answer)).await.is_err() {
                    break;
                }
            }
        }
        let hub = self.api.watch_hub();
        for local in self.watchers.values() {
            hub.cancel(local.hub_id);
        }
    }

    fn header(&self, revision: i64) -> Option<raftkv_proto::etcdserverpb::ResponseHeader> {
        self.api.header(revision)
    }

    fn request(&mut self, request: WatchRequest) -> Vec<WatchAnswer> {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => vec![self.create(create).into()],
            Some(RequestUnion::CancelRequest(cancel)) => {
                let Some(local) = self.watchers.remove(&cancel.watch_id) else {
                    return Vec::new(); // etcd answers nothing for an unknown id
                };
                self.forget(&local);
                vec![
                    WatchResponse {
                        header: self.header(self.api.watch_hub().revision()),
                        watch_id: cancel.watch_id,
                        canceled: true,
                        ..Default::default()
                    }
                    .into(),
                ]
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                // Answered by `ask_progress` (several while one waits make one answer).
                self.progress_asked = true;
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    /// Answers a progress request that waits, once the hub takes it: now if the stream
    /// has no watchers, else queued behind their events (see `WatchHub::progress_all`).
    fn ask_progress(&mut self) -> Option<WatchResponse> {
        if !self.progress_asked {
            return None;
        }
        let ids: Vec<u64> = self.watchers.values().map(|l| l.hub_id).collect();
        let revision = match self.api.watch_hub().progress_all(&self.queue, &ids) {
            ProgressAsked::Later => return None,
            ProgressAsked::Queued => {
                self.progress_asked = false;
                return None;
            }
            ProgressAsked::Now(revision) => revision,
        };
        self.progress_asked = false;
        Some(WatchResponse {
            header: self.header(revision),
            watch_id: INVALID_WATCH_ID,
            ..Default::default()
        })
    }

    fn forget(&mut self, local: &Local) {
        self.api.watch_hub().cancel(local.hub_id);
        self.by_hub.remove(&local.hub_id);
        self.key_bytes -= local.key_bytes;
    }

    /// etcd's `isWatchPermitted`: read permission on what the watch covers, under the
    /// stream's credentials as they stand now. As etcd, a range end of "\0" (every key from
    /// `key` on) is checked as the single key `key`.
    fn permitted(&self, key: &[u8], range_end: &[u8]) -> Result<(), raftkv_storage::MvccError> {
        let table = self.api.node().store().auth();
        if !table.enabled && self.credentials.token.is_none() {
            return Ok(());
        }
        let caller = self
            .api
            .auth_info_now(&self.credentials)?
            .unwrap_or_default();
        let end: &[u8] = if range_end == [0] { b"" } else { range_end };
        table.check_op(
            &caller,
            key,
            end,
            raftkv_storage::mvcc::auth::permit::Access::Read,
        )
    }

    fn create(&mut self, create: WatchCreateRequest) -> WatchResponse {
        let hub = self.api.watch_hub().clone();
        let refuse = |this: &Self, reason: &str| WatchResponse {
            header: this.header(hub.revision()),
            watch_id: INVALID_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        };
        // etcd's conventions: an empty key is "\0"; range_end "\0" means every key >= key.
        let key = if create.key.is_empty() {
            bytes::Bytes::from_static(b"\0")
        } else {
            create.key.clone()
        };
        if let Err(e) = self.permitted(&key, &create.range_end) {
            return refuse(self, &auth_cancel_reason(&e));
        }
        let end = RangeEnd::from_request(&create.range_end);
        if let RangeEnd::Below(end) = &end
            && key.as_ref() >= end.as_slice()
        {
            return refuse(self, ERR_EMPTY_RANGE);
        }
        let id = if create.watch_id == 0 {
            while self.watchers.contains_key(&self.next_auto) {
                self.next_auto += 1;
            }
            self.next_auto
        } else if self.watchers.contains_key(&create.watch_id) {
            return refuse(self, ERR_DUPLICATE_ID);
        } else {
            create.watch_id
        };
        let spec = WatchSpec {
            key,
            end,
            no_put: create.filters.contains(&(FilterType::Noput as i32)),
            no_delete: create.filters.contains(&(FilterType::Nodelete as i32)),
        };
        let key_bytes = create.key.len() + create.range_end.len();
        if self.watchers.len() >= STREAM_WATCHERS || self.key_bytes + key_bytes > STREAM_KEY_BYTES {
            return refuse(self, ERR_STREAM_FULL);
        }
        let Ok((hub_id, rev)) = hub.register(spec, create.start_revision, self.queue.clone())
        else {
            return refuse(self, ERR_MEMBER_FULL);
        };
        if create.watch_id == 0 {
            self.next_auto += 1;
        }
        self.key_bytes += key_bytes;
        self.by_hub.insert(hub_id, id);
        self.watchers.insert(
            id,
            Local {
                hub_id,
                prev_kv: create.prev_kv,
                fragment: create.fragment,
                progress_notify: create.progress_notify,
                quiet: true,
                key_bytes,
            },
        );
        WatchResponse {
            header: self.header(rev),
            watch_id: id,
            created: true,
            ..Default::default()
        }
    }

    fn deliver(&mut self, delivery: Delivery) -> Vec<WatchAnswer> {
        let whole = |response: WatchResponse| vec![WatchAnswer::Whole(response)];
        match delivery {
            Delivery::Events {
                watcher,
                revision,
                events,
            } => {
                let Some(&id) = self.by_hub.get(&watcher) else {
                    return Vec::new(); // cancelled meanwhile
                };
                let local = self.watchers.get_mut(&id).expect("by_hub mirrors watchers");
                local.quiet = false;
                let (prev_kv, fragment) = (local.prev_kv, local.fragment);
                let header = self.header(revision);
                let shared = WatchAnswer::Events {
                    header,
                    watch_id: id,
                    events,
                };
                // The shared events as they are, unless this watcher adds previous values
                // or the answer is to be cut into fragments.
                let max_bytes = self.config.max_request_bytes;
                if !(prev_kv || fragment && needs_fragments(&shared, max_bytes)) {
                    return vec![shared];
                }
                let mut response = shared.into_response();
                if prev_kv {
                    self.add_prev_kvs(&mut response.events);
                }
                if fragment {
                    fragments(response, max_bytes)
                        .into_iter()
                        .map(WatchAnswer::Whole)
                        .collect()
                } else {
                    whole(response)
                }
            }
            Delivery::Compacted {
                watcher,
                compact_revision,
            } => {
                let Some(id) = self.by_hub.get(&watcher).copied() else {
                    return Vec::new();
                };
                if let Some(local) = self.watchers.remove(&id) {
                    self.forget(&local);
                }
                // etcd's compaction notice carries a header at revision 0.
                whole(WatchResponse {
                    header: self.header(0),
                    watch_id: id,
                    canceled: true,
                    compact_revision,
                    ..Default::default()
                })
            }
            Delivery::Progress {
                watcher: None,
                revision,
            } => whole(WatchResponse {
                header: self.header(revision),
                watch_id: INVALID_WATCH_ID,
                ..Default::default()
            }),
            Delivery::Progress {
                watcher: Some(watcher),
                revision,
            } => match self.by_hub.get(&watcher) {
                Some(&id) => whole(WatchResponse {
                    header: self.header(revision),
                    watch_id: id,
                    ..Default::default()
                }),
                None => Vec::new(), // cancelled meanwhile
            },
        }
    }

    /// Each event's previous value, read as etcd reads it: the key at the revision before
    /// the event, except for a key's creation.
    fn add_prev_kvs(&self, events: &mut [Event]) {
        let store = self.api.watch_hub().store();
        for event in events {
            let Some(kv) = &event.kv else { continue };
            let created = event.r#type == EventType::Put as i32 && kv.version == 1;
            if created {
                continue;
            }
            if let Ok(prev) = store.get_at_revision(&kv.key, kv.mod_revision - 1) {
                event.prev_kv = prev;
            }
        }
    }

    /// Progress notifications for watchers that asked, are level with the store and got
    /// no events since the last tick (etcd's rule), queued behind their events by the hub
    /// (in watch id order).
    fn progress_tick(&mut self) {
        let hub = self.api.watch_hub();
        let mut due: Vec<(i64, u64)> = Vec::new();
        for (&id, local) in &mut self.watchers {
            if local.progress_notify && local.quiet {
                due.push((id, local.hub_id));
            }
            local.quiet = true;
        }
        due.sort_unstable();
        for (_, hub_id) in due {
            hub.progress(hub_id);
        }
    }
}

/// Whether [`fragments`] would cut `answer`: it reaches `max_bytes` and has two events or
/// more.
fn needs_fragments(answer: &WatchAnswer, max_bytes: usize) -> bool {
    let events = match answer {
        WatchAnswer::Whole(response) => response.events.len(),
        WatchAnswer::Events { events, .. } => events.events().len(),
    };
    events >= 2 && answer.encoded_len() >= max_bytes
}

/// Splits a response whose size reaches `max_bytes` into fragments, as etcd's
/// `sendFragments`: each holds events while it stays below the limit (at least one), all
/// but the last are marked `fragment`.
fn fragments(response: WatchResponse, max_bytes: usize) -> Vec<WatchResponse> {
    if response.encoded_len() < max_bytes || response.events.len() < 2 {
        return vec![response];
    }
    let mut out = Vec::new();
    let mut events = response.events.clone().into_iter().peekable();
    while events.peek().is_some() {
        let mut cur = WatchResponse {
            events: Vec::new(),
            fragment: true,
            ..response.clone()
        };
        while let Some(event) = events.peek() {
            cur.events.push(event.clone());
            if cur.events.len() > 1 && cur.encoded_len() >= max_bytes {
                cur.events.pop();
                break;
            }
            events.next();
        }
        if events.peek().is_none() {
            cur.fragment = false;
        }
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use raftkv_proto::mvccpb::KeyValue;

    fn event(value_len: usize) -> Event {
        Event {
            r#type: 0,
            kv: Some(KeyValue {
                key: Bytes::from_static(b"k"),
                value: Bytes::from(vec![b'v'; value_len]),
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn fragments_stay_below_the_limit_and_mark_all_but_the_last() {
        let response = WatchResponse {
            watch_id: 7,
            events: (0..10).map(|_| event(100)).collect(),
            ..Default::default()
        };
        assert_eq!(fragments(response.clone(), 1 << 20), vec![response.clone()]);
        let parts = fragments(response.clone(), 350);
        assert!(parts.len() > 1);
        let flags: Vec<bool> = parts.iter().map(|p| p.fragment).collect();
        assert!(flags[..flags.len() - 1].iter().all(|&f| f) && !flags[flags.len() - 1]);
        for part in &parts {
            assert!(part.encoded_len() < 350 || part.events.len() == 1);
            assert_eq!(part.watch_id, 7);
        }
        let all: Vec<Event> = parts.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(all, response.events);
        // One event larger than the limit goes alone.
        let big = WatchResponse {
            events: vec![event(1000), event(1)],
            ..Default::default()
        };
        let parts = fragments(big, 500);
        assert_eq!(
            parts.iter().map(|p| p.events.len()).collect::<Vec<_>>(),
            [1, 1]
        );
    }
}
