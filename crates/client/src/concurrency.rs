//! clientv3's concurrency recipes (etcd 3.4's `clientv3/concurrency`): sessions, mutexes and
//! elections built on leases, txns and watches, with the same keys, requests and error texts,
//! so a raftkv-client program, etcdctl and clientv3 programs share locks and elections.
//!
//! - [`Session`] — a lease (granted with a TTL, 60 s by default, or given) kept alive by a
//!   task of its own until the session is orphaned, closed or dropped, or the lease is gone.
//! - [`Mutex`] — a lock: the key `name/<lease in hex>`, owned by the oldest key under
//!   `name/`; a waiter watches the key created just before its own until it is deleted.
//! - [`Election`] — a leader election over the same kind of keys: campaign, proclaim a new
//!   value, resign, read the leader, and [`Observe`] the leader's values as they change.
//!
//! Cancelling: clientv3 takes a context; here a future is dropped, or
//! [`Mutex::lock_or_cancel`] and [`Election::campaign_or_cancel`] are given a cancel signal.
//! A lock or campaign that stops waiting deletes its key, as clientv3 does on a cancelled
//! context: awaited with a cancel signal, spawned on the current Tokio runtime when the
//! future is dropped (so nothing is deleted if the runtime shuts down first).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::Stream;
use raftkv_proto::etcdserverpb::compare::CompareResult;
use raftkv_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use raftkv_proto::etcdserverpb::request_op::Request;
use raftkv_proto::etcdserverpb::response_op::Response;
use raftkv_proto::etcdserverpb::{
    PutRequest, RangeRequest, RangeResponse, RequestOp, ResponseHeader, TxnResponse,
};
use raftkv_proto::mvccpb::KeyValue;
use raftkv_proto::mvccpb::event::EventType;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep, sleep_until, timeout, timeout_at};

use crate::{Client, Compare, Error, Txn, TxnOp, WatchOptions, WatchResponseExt, prefix_end};

/// A session's lease TTL when none is given (clientv3's `defaultSessionTTL`).
pub const DEFAULT_SESSION_TTL: i64 = 60;

/// clientv3's wait before opening a broken keep-alive stream again.
const RETRY_WAIT: Duration = Duration::from_millis(500);

/// What a lock, an election or a session can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConcurrencyError {
    /// A call to the cluster failed.
    #[error(transparent)]
    Client(#[from] Error),
    /// Proclaim without leadership, or leadership lost (clientv3's `ErrElectionNotLeader`).
    #[error("election: not leader")]
    NotLeader,
    /// Nobody leads the election (clientv3's `ErrElectionNoLeader`).
    #[error("election: no leader")]
    NoLeader,
    /// The watch waiting for a key's delete ended without an error (clientv3's words).
    #[error("lost watcher waiting for delete")]
    LostWatcher,
    /// The wait was cancelled (clientv3's `context.Canceled`).
    #[error("context canceled")]
    Canceled,
    /// The cluster answered something it cannot have (a txn answer without its range).
    #[error("unexpected answer from the cluster: {0}")]
    BadAnswer(&'static str),
}

/// How a [`Session`] gets and keeps its lease.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    ttl: i64,
    lease: i64,
    first_answer_within: Duration,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_SESSION_TTL,
            lease: 0,
            first_answer_within: Duration::from_secs(3),
        }
    }
}

impl SessionOptions {
    /// A new 60 s lease; the keep-alive gives up if its first answer takes over 3 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// The TTL of the lease granted (`WithTTL`; a TTL of 0 or less leaves the default).
    pub fn ttl(mut self, ttl: i64) -> Self {
        if ttl > 0 {
            self.ttl = ttl;
        }
        self
    }

    /// Use lease `id` instead of granting one (`WithLease`; 0 means grant). It is not
    /// checked: an unknown lease ends the session at its first keep-alive answer.
    pub fn lease(mut self, id: i64) -> Self {
        self.lease = id;
        self
    }

    /// How long the keep-alive waits for its first answer (clientv3 waits the dial timeout
    /// and a second).
    pub fn first_answer_within(mut self, wait: Duration) -> Self {
        self.first_answer_within = wait;
        self
    }
}

/// A lease kept alive in the background (clientv3's `concurrency.Session`).
///
/// The keep-alive renews the lease a third of its TTL after each answer and ends when an
/// answer says the lease is gone (TTL 0), when no answer came within the TTL of the last one
/// (a broken stream is opened again after 500 ms meanwhile), or when the session is
/// orphaned, closed or dropped; [`Session::done`] resolves then. Dropping a session stops
/// the keep-alive and leaves the lease to expire.
pub struct Session {
    client: Client,
    lease: i64,
    ttl: i64,
    done: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Session {
    /// A session on a new 60 s lease.
    pub async fn new(client: &Client) -> Result<Session, Error> {
        Self::with_options(client, SessionOptions::new()).await
    }

    /// A session as `options` say: grants the lease if none is given, then starts its
    /// keep-alive. Fails only if the grant fails.
    pub async fn with_options(client: &Client, options: SessionOptions) -> Result<Session, Error> {
        let lease = match options.lease {
            0 => client.lease_grant(options.ttl, 0).await?.id,
            id => id,
        };
        let (done_tx, done) = watch::channel(false);
        let (stop, stopped) = oneshot::channel();
        // clientv3's lessor always asks for a leader on its keep-alive stream.
        let keeper = client.clone().require_leader(true);
        let task = tokio::spawn(async move {
            tokio::select! {
                _ = keep_alive(&keeper, lease, options.first_answer_within) => {}
                _ = stopped => {}
            }
            let _ = done_tx.send(true);
        });
        Ok(Session {
            client: client.clone(),
            lease,
            ttl: options.ttl,
            done,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The client the session was made with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The session's lease.
    pub fn lease(&self) -> i64 {
        self.lease
    }

    /// Resolves once the keep-alive has ended (the lease is gone or no longer renewed).
    pub fn done(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut done = self.done.clone();
        async move {
            // An error means the task is gone: the keep-alive has ended too.
            let _ = done.wait_for(|ended| *ended).await;
        }
    }

    /// Whether the keep-alive has ended.
    pub fn is_done(&self) -> bool {
        *self.done.borrow()
    }

    /// Stops the keep-alive and waits for it to end; the lease is left to expire.
    pub async fn orphan(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Orphans the session, then revokes its lease (within the lease's TTL: by then it has
    /// expired anyway), which deletes every key attached to it.
    pub async fn close(mut self) -> Result<(), Error> {
        self.orphan().await;
        let ttl = Duration::from_secs(self.ttl.max(1) as u64);
        match timeout(ttl, self.client.lease_revoke(self.lease)).await {
            Err(_) => Err(Error::Timeout),
            Ok(result) => result.map(drop),
        }
    }
}

/// clientv3's keep-alive of one lease; returns when it ends.
async fn keep_alive(client: &Client, id: i64, first_answer_within: Duration) {
    let mut deadline = Instant::now() + first_answer_within;
    while Instant::now() < deadline {
        let mut stream = match timeout_at(deadline, client.lease_keep_alive(id)).await {
            Err(_) => return,
            Ok(Ok(stream)) => stream,
            Ok(Err(_)) => {
                sleep_until(deadline.min(Instant::now() + RETRY_WAIT)).await;
                continue;
            }
        };
        loop {
            let answer = match timeout_at(deadline, stream.next()).await {
                Err(_) => return,
                Ok(Some(Ok(answer))) => answer,
                Ok(Some(Err(_)) | None) => break,
            };
            if answer.ttl <= 0 {
                return; // revoked or expired
            }
            let ttl = Duration::from_secs(answer.ttl as u64);
            deadline = Instant::now() + ttl;
            sleep(ttl / 3).await;
            if stream.keep_alive(id).is_err() {
                break;
            }
        }
        sleep_until(deadline.min(Instant::now() + RETRY_WAIT)).await;
    }
}

/// Go's `%x` of an int64: lowercase hex, no padding, a minus sign for a negative one.
pub fn lease_hex(id: i64) -> String {
    if id < 0 {
        format!("-{:x}", id.unsigned_abs())
    } else {
        format!("{id:x}")
    }
}

/// The oldest key under `prefix` (clientv3's `WithFirstCreate`): sorted by create revision,
/// ascending, one key.
fn first_created(prefix: &str) -> RangeRequest {
    RangeRequest {
        key: Bytes::copy_from_slice(prefix.as_bytes()),
        range_end: prefix_end(prefix.as_bytes()).into(),
        limit: 1,
        sort_order: SortOrder::Ascend as i32,
        sort_target: SortTarget::Create as i32,
        ..Default::default()
    }
}

/// The newest key under `prefix` created at `max_create_revision` or before (clientv3's
/// `WithLastCreate` and `WithMaxCreateRev`).
fn last_created_before(prefix: &str, max_create_revision: i64) -> RangeRequest {
    RangeRequest {
        sort_order: SortOrder::Descend as i32,
        max_create_revision,
        ..first_created(prefix)
    }
}

fn range_op(req: RangeRequest) -> TxnOp {
    TxnOp(RequestOp {
        request: Some(Request::RequestRange(req)),
    })
}

fn put_op(key: &str, value: Bytes, lease: i64) -> TxnOp {
    TxnOp(RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value,
            lease,
            ..Default::default()
        })),
    })
}

fn created_at(key: &str, revision: i64) -> Compare {
    Compare::create_revision(key.to_string(), CompareResult::Equal, revision)
}

/// The kvs of the `n`-th answer of a txn, which must be a range.
fn range_kvs(resp: &TxnResponse, n: usize) -> Result<&[KeyValue], ConcurrencyError> {
    match resp.responses.get(n).and_then(|r| r.response.as_ref()) {
        Some(Response::ResponseRange(range)) => Ok(&range.kvs),
        _ => Err(ConcurrencyError::BadAnswer(
            "a txn answer without its range",
        )),
    }
}

fn header_revision(header: &Option<ResponseHeader>) -> i64 {
    header.as_ref().map_or(0, |h| h.revision)
}

/// Waits for a DELETE of `key`, watching from `revision` (clientv3's `waitDelete`).
async fn wait_delete(client: &Client, key: Bytes, revision: i64) -> Result<(), ConcurrencyError> {
    let options = WatchOptions::new().start_revision(revision);
    let mut watch = client.watch(key, options).await?;
    while let Some(answer) = watch.next().await {
        let answer = answer?;
        if answer
            .events
            .iter()
            .any(|e| e.r#type == EventType::Delete as i32)
        {
            return Ok(());
        }
        if let Some(error) = answer.cancel_error() {
            return Err(error.into());
        }
    }
    Err(ConcurrencyError::LostWatcher)
}

/// Waits until every key under `prefix` created at `max_create_revision` or before is
/// deleted, newest first (clientv3's `waitDeletes`); the header of the last read.
async fn wait_deletes(
    client: &Client,
    prefix: &str,
    max_create_revision: i64,
) -> Result<ResponseHeader, ConcurrencyError> {
    loop {
        let resp = client
            .range(last_created_before(prefix, max_create_revision))
            .await?;
        let Some(last) = resp.kvs.into_iter().next() else {
            return Ok(resp.header.unwrap_or_default());
        };
        wait_delete(client, last.key, header_revision(&resp.header)).await?;
    }
}

/// What a dropped lock or campaign leaves to undo: its key, deleted in a spawned task.
struct Cleanup {
    client: Client,
    key: String,
    /// Delete only while the key was created at this revision (a campaign's resign); `None`
    /// deletes it whatever it is (a lock's unlock).
    created_at: Option<i64>,
    armed: bool,
}

impl Cleanup {
    async fn run(client: Client, key: String, created: Option<i64>) -> Result<(), Error> {
        let mut txn = Txn::new().then([TxnOp::delete(key.clone())]);
        if let Some(rev) = created {
            txn = txn.when([created_at(&key, rev)]);
        }
        client.txn(txn).await.map(drop)
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (client, key) = (self.client.clone(), std::mem::take(&mut self.key));
            let created = self.created_at;
            runtime.spawn(async move {
                let _ = Cleanup::run(client, key, created).await;
            });
        }
    }
}

/// A distributed lock (clientv3's `concurrency.Mutex`): the holder is the session whose key
/// under `name/` is the oldest. The key is the session's lease in hex, so two mutexes of one
/// session share it, and a second `lock` of a session that holds the lock returns at once.
pub struct Mutex {
    client: Client,
    lease: i64,
    prefix: String,
    key: String,
    rev: i64,
    header: Option<ResponseHeader>,
}

impl Mutex {
    /// The lock `name` for `session` (its keys live under `name/`).
    pub fn new(session: &Session, name: &str) -> Mutex {
        Mutex {
            client: session.client.clone(),
            lease: session.lease,
            prefix: format!("{name}/"),
            key: String::new(),
            rev: -1,
            header: None,
        }
    }

    /// Waits until the session holds the lock. If the wait fails, the key is deleted; if
    /// the future is dropped while waiting, a task deletes it.
    pub async fn lock(&mut self) -> Result<(), ConcurrencyError> {
        self.lock_or_cancel(std::future::pending()).await
    }

    /// [`Mutex::lock`], given up with [`ConcurrencyError::Canceled`] (after deleting the
    /// key) if `cancel` resolves first.
    pub async fn lock_or_cancel(
        &mut self,
        cancel: impl Future<Output = ()>,
    ) -> Result<(), ConcurrencyError> {
        tokio::pin!(cancel);
        self.key = format!("{}{}", self.prefix, lease_hex(self.lease));
        let txn = Txn::new()
            .when([created_at(&self.key, 0)])
            .then([
                put_op(&self.key, Bytes::new(), self.lease),
                range_op(first_created(&self.prefix)),
            ])
            .otherwise([
                TxnOp::get(self.key.clone()),
                range_op(first_created(&self.prefix)),
            ]);
        let resp = tokio::select! {
            resp = self.client.txn(txn) => resp?,
            _ = &mut cancel => return Err(ConcurrencyError::Canceled),
        };
        self.rev = header_revision(&resp.header);
        if !resp.succeeded {
            let mine = range_kvs(&resp, 0)?.first();
            let mine = mine.ok_or(ConcurrencyError::BadAnswer("the lock key is missing"))?;
            self.rev = mine.create_revision;
        }
        let owner = range_kvs(&resp, 1)?.first();
        if owner.is_none_or(|kv| kv.create_revision == self.rev) {
            self.header = resp.header;
            return Ok(());
        }
        let mut cleanup = Cleanup {
            client: self.client.clone(),
            key: self.key.clone(),
            created_at: None,
            armed: true,
        };
        let waited = tokio::select! {
            waited = wait_deletes(&self.client, &self.prefix, self.rev - 1) => waited,
            _ = &mut cancel => Err(ConcurrencyError::Canceled),
        };
        cleanup.armed = false;
        match waited {
            Ok(header) => {
                self.header = Some(header);
                Ok(())
            }
            Err(e) => {
                let _ = self.unlock().await;
                Err(e)
            }
        }
    }

    /// Releases the lock (or leaves the queue): deletes the key.
    pub async fn unlock(&mut self) -> Result<(), ConcurrencyError> {
        self.client.delete(self.key.clone()).await?;
        self.key = "\0".into();
        self.rev = -1;
        Ok(())
    }

    /// A compare that holds while this session owns the lock, for a txn's `when`.
    pub fn is_owner(&self) -> Compare {
        created_at(&self.key, self.rev)
    }

    /// The session's key under the lock's prefix (`"\0"` after an unlock).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The header of the answer that gave the lock.
    pub fn header(&self) -> Option<&ResponseHeader> {
        self.header.as_ref()
    }
}

/// A leader election (clientv3's `concurrency.Election`): candidates put keys under `name/`
/// and the oldest one leads; its value is the leader's proclamation.
pub struct Election {
    client: Client,
    lease: i64,
    prefix: String,
    leader_key: String,
    leader_rev: i64,
    /// The lease leadership is held with; `None` when not leading.
    leader_lease: Option<i64>,
    header: Option<ResponseHeader>,
}

impl Election {
    /// The election `name` for `session` (its keys live under `name/`).
    pub fn new(session: &Session, name: &str) -> Election {
        Election {
            client: session.client.clone(),
            lease: session.lease,
            prefix: format!("{name}/"),
            leader_key: String::new(),
            leader_rev: 0,
            leader_lease: None,
            header: None,
        }
    }

    /// An election led through `leader_key` created at `leader_rev` by `session`
    /// (clientv3's `ResumeElection`: `prefix` is used as given, without a `/` added).
    pub fn resume(session: &Session, prefix: &str, leader_key: &str, leader_rev: i64) -> Election {
        Election {
            client: session.client.clone(),
            lease: session.lease,
            prefix: prefix.to_string(),
            leader_key: leader_key.to_string(),
            leader_rev,
            leader_lease: Some(session.lease),
            header: None,
        }
    }

    /// Puts a candidate key with `value` and waits until it leads. A session that already
    /// campaigns proclaims `value` instead. If the wait fails, leadership is given up; if the
    /// future is dropped while waiting, a task resigns.
    pub async fn campaign(&mut self, value: impl Into<Bytes>) -> Result<(), ConcurrencyError> {
        self.campaign_or_cancel(value, std::future::pending()).await
    }

    /// [`Election::campaign`], given up with [`ConcurrencyError::Canceled`] (after
    /// resigning) if `cancel` resolves first.
    pub async fn campaign_or_cancel(
        &mut self,
        value: impl Into<Bytes>,
        cancel: impl Future<Output = ()>,
    ) -> Result<(), ConcurrencyError> {
        tokio::pin!(cancel);
        let value = value.into();
        let key = format!("{}{}", self.prefix, lease_hex(self.lease));
        let txn = Txn::new()
            .when([created_at(&key, 0)])
            .then([put_op(&key, value.clone(), self.lease)])
            .otherwise([TxnOp::get(key.clone())]);
        let resp = tokio::select! {
            resp = self.client.txn(txn) => resp?,
            _ = &mut cancel => return Err(ConcurrencyError::Canceled),
        };
        self.leader_key = key;
        self.leader_rev = header_revision(&resp.header);
        self.leader_lease = Some(self.lease);
        let mut cleanup = Cleanup {
            client: self.client.clone(),
            key: self.leader_key.clone(),
            created_at: Some(self.leader_rev),
            armed: false,
        };
        if !resp.succeeded {
            let mine = range_kvs(&resp, 0)?.first();
            let mine = mine.ok_or(ConcurrencyError::BadAnswer("the campaign key is missing"))?;
            self.leader_rev = mine.create_revision;
            cleanup.created_at = Some(self.leader_rev);
            if mine.value != value {
                cleanup.armed = true;
                let proclaimed = tokio::select! {
                    proclaimed = self.proclaim(value) => proclaimed,
                    _ = &mut cancel => Err(ConcurrencyError::Canceled),
                };
                cleanup.armed = false;
                if let Err(e) = proclaimed {
                    let _ = self.resign().await;
                    return Err(e);
                }
            }
        }
        cleanup.armed = true;
        let waited = tokio::select! {
            waited = wait_deletes(&self.client, &self.prefix, self.leader_rev - 1) => waited,
            _ = &mut cancel => Err(ConcurrencyError::Canceled),
        };
        cleanup.armed = false;
        match waited {
            Ok(_) => {
                self.header = resp.header;
                Ok(())
            }
            Err(ConcurrencyError::Canceled) => {
                let _ = self.resign().await;
                Err(ConcurrencyError::Canceled)
            }
            Err(e) => {
                self.leader_lease = None;
                Err(e)
            }
        }
    }

    /// Sets the leader's value without a new election; [`ConcurrencyError::NotLeader`] if
    /// this election does not lead (any more).
    pub async fn proclaim(&mut self, value: impl Into<Bytes>) -> Result<(), ConcurrencyError> {
        let Some(lease) = self.leader_lease else {
            return Err(ConcurrencyError::NotLeader);
        };
        let txn = Txn::new()
            .when([created_at(&self.leader_key, self.leader_rev)])
            .then([put_op(&self.leader_key, value.into(), lease)]);
        let resp = self.client.txn(txn).await?;
        if !resp.succeeded {
            self.leader_key.clear();
            return Err(ConcurrencyError::NotLeader);
        }
        self.header = resp.header;
        Ok(())
    }

    /// Gives up leadership (or the candidacy): deletes the key if it is still the one this
    /// election created. Nothing to do when not leading.
    pub async fn resign(&mut self) -> Result<(), ConcurrencyError> {
        if self.leader_lease.is_none() {
            return Ok(());
        }
        let txn = Txn::new()
            .when([created_at(&self.leader_key, self.leader_rev)])
            .then([TxnOp::delete(self.leader_key.clone())]);
        let resp = self.client.txn(txn).await;
        self.leader_key.clear();
        self.leader_lease = None;
        self.header = resp?.header;
        Ok(())
    }

    /// The leader's key and value, as a range answer of one kv;
    /// [`ConcurrencyError::NoLeader`] when nobody campaigns.
    pub async fn leader(&self) -> Result<RangeResponse, ConcurrencyError> {
        let resp = self.client.range(first_created(&self.prefix)).await?;
        if resp.kvs.is_empty() {
            return Err(ConcurrencyError::NoLeader);
        }
        Ok(resp)
    }

    /// The leader's key and value now, then each change of them (a new value, a new
    /// leader), each as a range answer of one kv. Ends when a read or a watch fails.
    ///
    /// As in clientv3, a task starts reading at once and hands over one answer at a time:
    /// it goes on only once the answer is taken (Go's unbuffered channel), so what it reads
    /// next happens when it would in clientv3. Must be called within a Tokio runtime.
    pub fn observe(&self) -> Observe {
        let mut observer = Observer {
            client: self.client.clone(),
            prefix: self.prefix.clone(),
            following: None,
            pending: VecDeque::new(),
        };
        let (tx, answers) = mpsc::channel(1);
        let task = tokio::spawn(async move {
            let dropped = tx.clone();
            let run = async {
                while let Some(answer) = observer.next_answer().await {
                    let (taken, was_taken) = oneshot::channel();
                    if tx.send((answer, taken)).await.is_err() || was_taken.await.is_err() {
                        return;
                    }
                }
            };
            tokio::select! {
                _ = run => {}
                _ = dropped.closed() => {}
            }
        });
        Observe { answers, task }
    }

    /// The key this election campaigned with (empty when not leading).
    pub fn key(&self) -> &str {
        &self.leader_key
    }

    /// The create revision of [`Election::key`].
    pub fn rev(&self) -> i64 {
        self.leader_rev
    }

    /// The header of the last answer that changed leadership: the campaign's first txn, a
    /// proclaim, a resign.
    pub fn header(&self) -> Option<&ResponseHeader> {
        self.header.as_ref()
    }
}

/// The leader's values as they change, from [`Election::observe`]. Dropping it stops the
/// observing task.
pub struct Observe {
    answers: mpsc::Receiver<(RangeResponse, oneshot::Sender<()>)>,
    task: tokio::task::JoinHandle<()>,
}

impl Observe {
    /// The next answer; `None` once observing has failed.
    pub async fn next(&mut self) -> Option<RangeResponse> {
        std::future::poll_fn(|cx| self.poll_answer(cx)).await
    }

    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<Option<RangeResponse>> {
        self.answers.poll_recv(cx).map(|answer| {
            answer.map(|(answer, taken)| {
                let _ = taken.send(());
                answer
            })
        })
    }
}

impl Stream for Observe {
    type Item = RangeResponse;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_answer(cx)
    }
}

impl Drop for Observe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The leader key an observer follows.
struct Following {
    key: Bytes,
    /// The first revision to watch it from.
    from: i64,
    /// The read that found the leader: its `more` and `count` go into every later answer,
    /// as clientv3 reuses that response.
    found: RangeResponse,
    watch: Option<crate::WatchStream>,
}

/// clientv3's observe loop, one answer at a time.
struct Observer {
    client: Client,
    prefix: String,
    following: Option<Following>,
    pending: VecDeque<RangeResponse>,
}

impl Observer {
    async fn next_answer(&mut self) -> Option<RangeResponse> {
        loop {
            if let Some(answer) = self.pending.pop_front() {
                return Some(answer);
            }
            let Some(mut following) = self.following.take() else {
                let (answer, following) = self.find_leader().await?;
                self.following = Some(following);
                return Some(answer);
            };
            if following.watch.is_none() {
                let options = WatchOptions::new().start_revision(following.from);
                let watch = self.client.watch(following.key.clone(), options).await;
                following.watch = Some(watch.ok()?);
            }
            let watch = following.watch.as_mut()?;
            let answer = watch.next().await?.ok()?;
            let mut deleted = false;
            for event in answer.events {
                if event.r#type == EventType::Delete as i32 {
                    deleted = true;
                    break;
                }
                self.pending.push_back(RangeResponse {
                    header: answer.header,
                    kvs: event.kv.into_iter().collect(),
                    ..following.found.clone()
                });
            }
            if !deleted {
                self.following = Some(following);
            }
        }
    }

    /// The oldest candidate's key, or the first one put when there is none yet.
    async fn find_leader(&self) -> Option<(RangeResponse, Following)> {
        let found = self.client.range(first_created(&self.prefix)).await.ok()?;
        let (header, kv) = match found.kvs.first() {
            Some(kv) => (found.header.unwrap_or_default(), kv.clone()),
            None => self.first_put(header_revision(&found.header)).await?,
        };
        let following = Following {
            key: kv.key.clone(),
            from: header.revision + 1,
            found: RangeResponse {
                header: None,
                kvs: Vec::new(),
                ..found
            },
            watch: None,
        };
        let answer = RangeResponse {
            header: Some(header),
            kvs: vec![kv],
            ..Default::default()
        };
        Some((answer, following))
    }

    /// Waits for the first put under the prefix from `revision`; the header carries the
    /// put's revision.
    async fn first_put(&self, revision: i64) -> Option<(ResponseHeader, KeyValue)> {
        let options = WatchOptions::new().prefix().start_revision(revision);
        let mut watch = self.client.watch(self.prefix.clone(), options).await.ok()?;
        loop {
            let answer = watch.next().await?.ok()?;
            if answer.cancel_error().is_some() {
                return None;
            }
            let put = answer
                .events
                .iter()
                .find(|e| e.r#type == EventType::Put as i32);
            if let Some(kv) = put.and_then(|e| e.kv.clone()) {
                let mut header = answer.header.unwrap_or_default();
                header.revision = kv.mod_revision;
                return Some((header, kv));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_hex_is_gos_percent_x() {
        assert_eq!(lease_hex(0x694d_7b2a_1c3e_5f01), "694d7b2a1c3e5f01");
        assert_eq!(lease_hex(0x1234), "1234");
        assert_eq!(lease_hex(-5), "-5");
        assert_eq!(lease_hex(i64::MIN), "-8000000000000000");
    }

    #[test]
    fn reads_are_clientv3s_first_and_last_create() {
        let first = first_created("lock/");
        assert_eq!(&first.key[..], b"lock/");
        assert_eq!(&first.range_end[..], b"lock0");
        assert_eq!(first.limit, 1);
        assert_eq!(first.sort_order, SortOrder::Ascend as i32);
        assert_eq!(first.sort_target, SortTarget::Create as i32);
        assert_eq!(first.max_create_revision, 0);
        let last = last_created_before("lock/", 41);
        assert_eq!(last.sort_order, SortOrder::Descend as i32);
        assert_eq!(last.max_create_revision, 41);
        assert_eq!(last.range_end, first.range_end);
    }

    #[test]
    fn options_ignore_a_ttl_below_one() {
        assert_eq!(SessionOptions::new().ttl(0).ttl, DEFAULT_SESSION_TTL);
        assert_eq!(SessionOptions::new().ttl(-3).ttl, DEFAULT_SESSION_TTL);
        assert_eq!(SessionOptions::new().ttl(10).ttl, 10);
    }

    #[test]
    fn errors_read_as_clientv3s() {
        assert_eq!(
            ConcurrencyError::NotLeader.to_string(),
            "election: not leader"
        );
        assert_eq!(
            ConcurrencyError::NoLeader.to_string(),
            "election: no leader"
        );
        assert_eq!(ConcurrencyError::Canceled.to_string(), "context canceled");
        let lease = ConcurrencyError::from(crate::lease_not_found());
        assert_eq!(lease.to_string(), "etcdserver: requested lease not found");
    }

    #[test]
    fn a_bad_txn_answer_is_an_error_not_a_panic() {
        let resp = TxnResponse::default();
        assert!(matches!(
            range_kvs(&resp, 0),
            Err(ConcurrencyError::BadAnswer(_))
        ));
    }

    #[tokio::test]
    async fn a_session_on_an_unreachable_member_fails_to_grant() {
        let client = Client::new(["127.0.0.1:1"])
            .with_timeouts(Duration::from_millis(200), Duration::from_millis(500));
        assert!(matches!(
            Session::new(&client).await,
            Err(Error::Unreachable { .. })
        ));
    }

    #[tokio::test]
    async fn a_given_lease_on_an_unreachable_member_ends_the_session() {
        let client = Client::new(["127.0.0.1:1"])
            .with_timeouts(Duration::from_millis(100), Duration::from_millis(300));
        let options = SessionOptions::new()
            .lease(7)
            .first_answer_within(Duration::from_millis(300));
        let session = Session::with_options(&client, options)
            .await
            .expect("no grant");
        assert_eq!(session.lease(), 7);
        session.done().await;
        assert!(session.is_done());
    }
}
