//! Watches: etcd's `Watch` service, typed, with clientv3's behaviour on top of the raw
//! stream.
//!
//! - [`WatchOptions`] — what a watcher wants: one key, a range, a prefix or every key from
//!   a key on; the revision to start at; previous values; filters; progress notifications;
//!   fragments. [`WatchOptions::request`] turns them into etcd's `WatchCreateRequest` with
//!   clientv3's conventions.
//! - [`WatchSession`] — one gRPC watch stream carrying any number of watchers (clientv3
//!   multiplexes its watchers the same way): creates, cancels and progress requests in, every
//!   answer out in arrival order, fragments put back together, created answers in the order
//!   of the creates.
//! - [`WatchStream`] — one watcher on a session of its own, from [`Client::watch`]: its
//!   events, progress notifications and final cancel.
//! - [`WatchResponseExt`] — clientv3's reading of an answer: progress notification or not,
//!   and the error a canceled one stands for.
//!
//! A session is served by a task of its own. When its member goes away (`Unavailable` or
//! `Internal`, as clientv3 decides), the task connects to the next endpoint and creates every
//! watcher again from the revision after the last one it delivered, with the same watch id,
//! so the answers continue as if nothing happened; it retries until the session is dropped.
//! Any other stream error, or the server ending the stream, ends the session with that error.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use raftkv_proto::etcdserverpb::watch_create_request::FilterType;
use raftkv_proto::etcdserverpb::watch_request::RequestUnion;
use raftkv_proto::etcdserverpb::{
    WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::{Client, Connection, Error};

/// The watch id of answers that belong to no watcher: a progress request's answer, which is
/// meant for every watcher of the stream (clientv3's `InvalidWatchID`).
pub const BROADCAST_WATCH_ID: i64 = -1;

/// Answers a session holds for its reader before it stops reading the stream.
const QUEUED_ANSWERS: usize = 64;
/// The longest wait between two attempts to reach a member again.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// clientv3's range end for a prefix: the key with its last byte below 0xff incremented
/// (trailing 0xff bytes dropped), or `"\0"` (every key from the key on) when there is none.
pub fn prefix_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Which keys a watcher covers besides its key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum KeyRange {
    /// The key alone.
    #[default]
    Key,
    /// `[key, end)`.
    End(Bytes),
    /// Every key that starts with the key.
    Prefix,
    /// Every key from the key on.
    FromKey,
}

/// What a watcher wants, as clientv3's watch options say it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchOptions {
    range: KeyRange,
    start_revision: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    fragment: bool,
    watch_id: i64,
}

impl WatchOptions {
    /// The key alone, from the next revision, with nothing extra.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every key in `[key, end)` (`WithRange`).
    pub fn range_end(mut self, end: impl Into<Bytes>) -> Self {
        self.range = KeyRange::End(end.into());
        self
    }

    /// Every key that starts with the key (`WithPrefix`; an empty key means every key).
    pub fn prefix(mut self) -> Self {
        self.range = KeyRange::Prefix;
        self
    }

    /// Every key from the key on, bytewise (`WithFromKey`).
    pub fn from_key(mut self) -> Self {
        self.range = KeyRange::FromKey;
        self
    }

    /// Start at `revision` (`WithRev`): events from it on, history included; 0 (the
    /// default) means the revision after the current one.
    pub fn start_revision(mut self, revision: i64) -> Self {
        self.start_revision = revision;
        self
    }

    /// Each event carries the key's previous version (`WithPrevKV`).
    pub fn prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }

    /// Leave out put events (`WithFilterPut`).
    pub fn no_put(mut self) -> Self {
        self.no_put = true;
        self
    }

    /// Leave out delete events (`WithFilterDelete`).
    pub fn no_delete(mut self) -> Self {
        self.no_delete = true;
        self
    }

    /// Ask the member for an empty answer at its current revision whenever the watcher had
    /// no events for its progress-notify interval (`WithProgressNotify`).
    pub fn progress_notify(mut self) -> Self {
        self.progress_notify = true;
        self
    }

    /// Let the member split answers larger than its request size limit (`WithFragment`);
    /// sessions put the parts back together.
    pub fn fragment(mut self) -> Self {
        self.fragment = true;
        self
    }

    /// Ask for this watch id instead of one the member picks (0, the default, means "pick").
    pub fn watch_id(mut self, id: i64) -> Self {
        self.watch_id = id;
        self
    }

    /// The create request for `key` with these options: clientv3's conventions (a prefix of
    /// the empty key, and every key from the empty key on, are every key: `"\0"` to `"\0"`).
    pub fn request(&self, key: impl Into<Bytes>) -> WatchCreateRequest {
        let mut key: Bytes = key.into();
        let every = || Bytes::from_static(b"\0");
        let range_end = match &self.range {
            KeyRange::Key => Bytes::new(),
            KeyRange::End(end) => end.clone(),
            KeyRange::Prefix if key.is_empty() => {
                key = every();
                every()
            }
            KeyRange::Prefix => Bytes::from(prefix_end(&key)),
            KeyRange::FromKey => {
                if key.is_empty() {
                    key = every();
                }
                every()
            }
        };
        let mut filters = Vec::new();
        if self.no_put {
            filters.push(FilterType::Noput as i32);
        }
        if self.no_delete {
            filters.push(FilterType::Nodelete as i32);
        }
        WatchCreateRequest {
            key,
            range_end,
            start_revision: self.start_revision,
            progress_notify: self.progress_notify,
            filters,
            prev_kv: self.prev_kv,
            watch_id: self.watch_id,
            fragment: self.fragment,
        }
    }
}

/// clientv3's reading of a watch answer.
pub trait WatchResponseExt {
    /// A progress notification: no events, not a created or canceled answer, and a revision
    /// (clientv3's `IsProgressNotify`). Its revision is the member's current one.
    fn is_progress_notify(&self) -> bool;

    /// The error a canceled answer stands for (clientv3's `Err()`): [`Error::Compacted`]
    /// when it carries a compact revision, else [`Error::WatchCanceled`] with its reason;
    /// `None` for an answer that is not canceled.
    fn cancel_error(&self) -> Option<Error>;
}

impl WatchResponseExt for WatchResponse {
    fn is_progress_notify(&self) -> bool {
        self.events.is_empty()
            && !self.canceled
            && !self.created
            && self.compact_revision == 0
            && self.header.as_ref().is_some_and(|h| h.revision != 0)
    }

    fn cancel_error(&self) -> Option<Error> {
        if self.compact_revision != 0 {
            Some(Error::Compacted {
                compact_revision: self.compact_revision,
            })
        } else if self.canceled {
            Some(Error::WatchCanceled {
                reason: self.cancel_reason.clone(),
            })
        } else {
            None
        }
    }
}

impl Client {
    /// A watch session: one gRPC stream to the first endpoint that answers, for any number
    /// of watchers (see [`WatchSession`]). Fails only if no endpoint can be reached.
    pub async fn watch_session(&self) -> Result<WatchSession, Error> {
        let (endpoint, connection) = self.connect_from(0).await?;
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (answer_tx, answers) = mpsc::channel(QUEUED_ANSWERS);
        let driver = Driver {
            client: self.clone(),
            endpoint,
            connection: Some(connection),
            commands: command_rx,
            out: answer_tx,
            link: None,
            watchers: BTreeMap::new(),
            pending: VecDeque::new(),
            partial: HashMap::new(),
            token_retried: false,
        };
        tokio::spawn(driver.run());
        Ok(WatchSession { commands, answers })
    }

    /// Watches `key` as `options` say, on a session of its own; returns once the member has
    /// created the watcher (within the command timeout). A create the member refuses (an
    /// empty range, a duplicate id) is [`Error::WatchCanceled`] with etcd's reason.
    pub async fn watch(
        &self,
        key: impl Into<Bytes>,
        options: WatchOptions,
    ) -> Result<WatchStream, Error> {
        let mut session = self.watch_session().await?;
        session.create(options.request(key))?;
        let created = loop {
            let answer = tokio::time::timeout(self.command_timeout(), session.next())
                .await
                .map_err(|_| Error::Timeout)?;
            match answer {
                Some(Ok(answer)) if answer.created => break answer,
                Some(Ok(_)) => continue, // nothing else can come first; ignore it if it does
                Some(Err(e)) => return Err(e),
                None => return Err(Error::WatchClosed),
            }
        };
        if created.canceled {
            return Err(Error::WatchCanceled {
                reason: created.cancel_reason,
            });
        }
        Ok(WatchStream {
            session,
            watch_id: created.watch_id,
            created,
            canceling: false,
            done: false,
        })
    }
}

/// What a session's user asks of its task.
enum Command {
    Create(WatchCreateRequest),
    Cancel(i64),
    Progress,
}

/// One gRPC watch stream with any number of watchers, as clientv3 multiplexes them.
///
/// [`WatchSession::next`] (or the [`Stream`]) yields every answer of the stream in arrival
/// order, with etcd's watch ids: created answers (one per create, in the order of the
/// creates; `canceled` with a `cancel_reason` when the member refused it), event batches
/// (a fragmented answer comes out once, whole), progress notifications (those answering
/// [`WatchSession::request_progress`] carry [`BROADCAST_WATCH_ID`]: they are for every
/// watcher), and canceled answers. After an error it yields `None`.
///
/// The gRPC stream opens with the first request (etcd's server sends a stream's response
/// headers only with its first answer, so a stream cannot be opened empty). Dropping the
/// session closes the stream, which ends its watchers on the member.
pub struct WatchSession {
    commands: mpsc::UnboundedSender<Command>,
    answers: mpsc::Receiver<Result<WatchResponse, Error>>,
}

impl WatchSession {
    /// Creates a watcher of `key` as `options` say; its created answer says its id.
    pub fn watch(&self, key: impl Into<Bytes>, options: &WatchOptions) -> Result<(), Error> {
        self.create(options.request(key))
    }

    /// Sends a create request as it is.
    pub fn create(&self, request: WatchCreateRequest) -> Result<(), Error> {
        self.send(Command::Create(request))
    }

    /// Cancels watcher `watch_id`; the member answers with a canceled answer (nothing if it
    /// knows no such watcher).
    pub fn cancel(&self, watch_id: i64) -> Result<(), Error> {
        self.send(Command::Cancel(watch_id))
    }

    /// Asks the member for a progress notification: an empty answer at its current revision,
    /// with [`BROADCAST_WATCH_ID`].
    pub fn request_progress(&self) -> Result<(), Error> {
        self.send(Command::Progress)
    }

    fn send(&self, command: Command) -> Result<(), Error> {
        self.commands.send(command).map_err(|_| Error::WatchClosed)
    }

    /// The next answer; `None` once the session has ended (after the error that ended it).
    pub async fn next(&mut self) -> Option<Result<WatchResponse, Error>> {
        self.answers.recv().await
    }
}

impl Stream for WatchSession {
    type Item = Result<WatchResponse, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.answers.poll_recv(cx)
    }
}

/// One watcher, on a session of its own (from [`Client::watch`]).
///
/// Yields its event batches and progress notifications (each a whole answer, with its
/// header); a canceled answer is the last (a compaction's carries `compact_revision`, see
/// [`WatchResponseExt::cancel_error`]), after which it yields `None`. After
/// [`WatchStream::cancel`] it yields what was still on its way, then `None`.
pub struct WatchStream {
    session: WatchSession,
    watch_id: i64,
    created: WatchResponse,
    canceling: bool,
    done: bool,
}

impl WatchStream {
    /// The watcher's id.
    pub fn watch_id(&self) -> i64 {
        self.watch_id
    }

    /// The member's created answer (its header holds the revision the watcher was created
    /// at).
    pub fn created(&self) -> &WatchResponse {
        &self.created
    }

    /// Asks the member for a progress notification (it comes as an answer of this stream).
    pub fn request_progress(&self) -> Result<(), Error> {
        self.session.request_progress()
    }

    /// Cancels the watcher.
    pub fn cancel(&mut self) -> Result<(), Error> {
        self.canceling = true;
        self.session.cancel(self.watch_id)
    }

    /// The next answer; `None` once the watcher has ended.
    pub async fn next(&mut self) -> Option<Result<WatchResponse, Error>> {
        std::future::poll_fn(|cx| self.poll_answer(cx)).await
    }

    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<WatchResponse, Error>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let answer = match self.session.answers.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(answer) => answer,
            };
            match answer {
                None => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Some(Ok(answer)) => {
                    if answer.watch_id != self.watch_id && answer.watch_id != BROADCAST_WATCH_ID {
                        continue;
                    }
                    if answer.canceled {
                        self.done = true;
                        if self.canceling && answer.compact_revision == 0 {
                            return Poll::Ready(None);
                        }
                    }
                    return Poll::Ready(Some(Ok(answer)));
                }
            }
        }
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchResponse, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_answer(cx)
    }
}

/// An open gRPC stream.
struct Link {
    requests: mpsc::UnboundedSender<WatchRequest>,
    answers: tonic::Streaming<WatchResponse>,
}

/// A watcher the member has created, as the session must know it to create it again.
struct Watched {
    request: WatchCreateRequest,
    /// The first revision not yet delivered.
    next_rev: i64,
    /// Its cancel was sent.
    canceling: bool,
}

/// A create sent, its created answer not yet come.
struct Pending {
    request: WatchCreateRequest,
    /// The watcher it creates again after a reconnect (its created answer is not passed on).
    resumes: Option<i64>,
}

/// A session's task: the gRPC stream, the watchers on it, reconnects.
struct Driver {
    client: Client,
    /// The endpoint connected to (or tried last).
    endpoint: usize,
    connection: Option<Connection>,
    commands: mpsc::UnboundedReceiver<Command>,
    out: mpsc::Sender<Result<WatchResponse, Error>>,
    link: Option<Link>,
    watchers: BTreeMap<i64, Watched>,
    pending: VecDeque<Pending>,
    /// Fragments received so far, by watch id.
    partial: HashMap<i64, WatchResponse>,
    /// The stream was opened again because the member refused a create for its token; a
    /// second refusal in a row is passed on.
    token_retried: bool,
}

/// Whether clientv3 would reconnect after this error rather than give up: the member is
/// unreachable or going away (`Unavailable`, `Internal`), unless it says it has no leader.
/// A connection that breaks under a stream is `Unavailable` in grpc-go; tonic reports it as
/// `Unknown` with the transport's error as its source (a status the member sent has none).
fn retryable(error: &Error) -> bool {
    match error {
        Error::Unreachable { .. } | Error::Timeout => true,
        Error::Status(status) => match status.code() {
            tonic::Code::Unavailable | tonic::Code::Internal => {
                status.message() != "etcdserver: no leader"
            }
            tonic::Code::Unknown => std::error::Error::source(status).is_some(),
            _ => false,
        },
        _ => false,
    }
}

fn request(union: RequestUnion) -> WatchRequest {
    WatchRequest {
        request_union: Some(union),
    }
}

async fn next_answer(link: &mut Option<Link>) -> Result<Option<WatchResponse>, tonic::Status> {
    match link {
        Some(link) => link.answers.message().await,
        None => std::future::pending().await,
    }
}

impl Driver {
    async fn run(mut self) {
        let error = loop {
            let answer = tokio::select! {
                command = self.commands.recv() => match command {
                    None => return, // the session was dropped
                    Some(command) => match self.command(command).await {
                        Ok(()) => continue,
                        Err(e) => break e,
                    },
                },
                answer = next_answer(&mut self.link) => answer,
            };
            let failure = match answer {
                Ok(Some(answer)) if self.refused_for_token(&answer) => match self.reopen().await {
                    Ok(()) => continue,
                    Err(e) => e,
                },
                Ok(Some(answer)) => {
                    if answer.created {
                        self.token_retried = false;
                    }
                    if !self.answer(answer).await {
                        return; // nobody reads any more
                    }
                    continue;
                }
                Ok(None) => Error::WatchClosed,
                Err(status) => Error::Status(status),
            };
            if !retryable(&failure) {
                break failure;
            }
            if let Err(e) = self.reconnect().await {
                break e;
            }
        };
        let _ = self.out.send(Err(error)).await;
    }

    async fn command(&mut self, command: Command) -> Result<(), Error> {
        let union = match command {
            Command::Create(create) => {
                self.pending.push_back(Pending {
                    request: create.clone(),
                    resumes: None,
                });
                RequestUnion::CreateRequest(create)
            }
            Command::Cancel(watch_id) => {
                if let Some(watched) = self.watchers.get_mut(&watch_id) {
                    watched.canceling = true;
                }
                RequestUnion::CancelRequest(WatchCancelRequest { watch_id })
            }
            Command::Progress => RequestUnion::ProgressRequest(WatchProgressRequest {}),
        };
        if let Some(link) = &self.link {
            // If the stream broke, its answers say so and the request is sent again (a
            // create or cancel) when the watchers are created again.
            let _ = link.requests.send(request(union));
            return Ok(());
        }
        match self.open(vec![request(union)]).await {
            Err(e) if retryable(&e) => self.reconnect().await,
            other => other,
        }
    }

    /// Opens a stream that starts with `requests` (queued before the call: the member's
    /// response headers come with its first answer).
    async fn open(&mut self, requests: Vec<WatchRequest>) -> Result<(), Error> {
        let connection = match &self.connection {
            Some(connection) => connection.clone(),
            None => {
                let (endpoint, connection) = self.client.connect_from(self.endpoint).await?;
                self.endpoint = endpoint;
                self.connection = Some(connection.clone());
                connection
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        for request in requests {
            let _ = tx.send(request);
        }
        if let Err(e) = self.client.renew_token(&connection).await {
            self.connection = None;
            return Err(e);
        }
        let mut call = tonic::Request::new(UnboundedReceiverStream::new(rx));
        if self.client.requires_leader() {
            call.metadata_mut().insert(
                "hasleader",
                tonic::metadata::MetadataValue::from_static("true"),
            );
        }
        match connection.watch().watch(call).await {
            Ok(response) => {
                self.link = Some(Link {
                    requests: tx,
                    answers: response.into_inner(),
                });
                Ok(())
            }
            Err(status) => {
                self.connection = None;
                Err(Error::Status(status))
            }
        }
    }

    /// Whether `answer` refuses a create because of the stream's token (clientv3's
    /// `shouldRetryWatch`), for the first time in a row.
    fn refused_for_token(&self, answer: &WatchResponse) -> bool {
        answer.created
            && answer.canceled
            && !self.token_retried
            && !self.pending.is_empty()
            && crate::auth::is_watch_token_refusal(&answer.cancel_reason)
    }

    /// After a create was refused for the stream's token: a new stream on the same member,
    /// under a new token, with every watcher created again where it left off and the
    /// creates not yet answered (the refused one first) sent again, as clientv3 does.
    async fn reopen(&mut self) -> Result<(), Error> {
        self.token_retried = true;
        self.link = None;
        self.partial.clear();
        let requests = self.resume_requests();
        match self.open(requests).await {
            Err(e) if retryable(&e) => self.reconnect().await,
            other => other,
        }
    }

    /// After the stream broke: a stream to the next member that answers, with every watcher
    /// created again where it left off (and the creates not yet answered sent again).
    async fn reconnect(&mut self) -> Result<(), Error> {
        self.link = None;
        self.connection = None;
        self.partial.clear();
        let requests = self.resume_requests();
        if requests.is_empty() {
            return Ok(()); // the next request opens a stream
        }
        let members = self.client.endpoints().len().max(1);
        let mut backoff = Duration::from_millis(50);
        loop {
            if self.out.is_closed() {
                return Err(Error::WatchClosed);
            }
            self.endpoint = (self.endpoint + 1) % members;
            match self.open(requests.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) if retryable(&e) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The requests that create every watcher again, each from its next revision and with
    /// its id, then the creates still unanswered. Ascending ids: a watcher with id 0 (which
    /// asks for "any id") comes first on the new stream, so the member gives it 0 again.
    fn resume_requests(&mut self) -> Vec<WatchRequest> {
        let mut requests = Vec::new();
        let mut pending = VecDeque::new();
        for (&id, watched) in &self.watchers {
            let mut create = watched.request.clone();
            create.start_revision = watched.next_rev;
            create.watch_id = id;
            pending.push_back(Pending {
                request: create.clone(),
                resumes: Some(id),
            });
            requests.push(request(RequestUnion::CreateRequest(create)));
            if watched.canceling {
                requests.push(request(RequestUnion::CancelRequest(WatchCancelRequest {
                    watch_id: id,
                })));
            }
        }
        for waiting in self.pending.drain(..) {
            if waiting.resumes.is_none() {
                requests.push(request(RequestUnion::CreateRequest(
                    waiting.request.clone(),
                )));
                pending.push_back(waiting);
            }
        }
        self.pending = pending;
        requests
    }

    /// Takes in one answer; passes it on unless it is a fragment (kept until the last one)
    /// or the created answer of a watcher created again. False once nobody reads.
    async fn answer(&mut self, mut answer: WatchResponse) -> bool {
        let revision = answer.header.as_ref().map_or(0, |h| h.revision);
        if !answer.created && !answer.canceled {
            if answer.fragment {
                match self.partial.get_mut(&answer.watch_id) {
                    Some(first) => first.events.append(&mut answer.events),
                    None => {
                        self.partial.insert(answer.watch_id, answer);
                    }
                }
                return true;
            }
            if let Some(mut whole) = self.partial.remove(&answer.watch_id) {
                whole.events.append(&mut answer.events);
                whole.fragment = false;
                answer = whole;
            }
        }
        if answer.created {
            let Some(pending) = self.pending.pop_front() else {
                return self.out.send(Ok(answer)).await.is_ok();
            };
            match pending.resumes {
                Some(id) if answer.canceled => {
                    // The watcher could not be created again: that is its end.
                    self.watchers.remove(&id);
                    answer.watch_id = id;
                    answer.created = false;
                }
                Some(id) => {
                    if answer.watch_id != id
                        && let Some(watched) = self.watchers.remove(&id)
                    {
                        self.watchers.insert(answer.watch_id, watched);
                    }
                    return true;
                }
                None if answer.canceled => {}
                None => {
                    let start = pending.request.start_revision;
                    self.watchers.insert(
                        answer.watch_id,
                        Watched {
                            request: pending.request,
                            next_rev: if start == 0 { revision + 1 } else { start },
                            canceling: false,
                        },
                    );
                }
            }
        } else if answer.canceled {
            self.watchers.remove(&answer.watch_id);
        } else if let Some(watched) = self.watchers.get_mut(&answer.watch_id) {
            // Events, or this watcher's own progress notification (the member sends those
            // only once the watcher has everything up to the revision).
            let delivered = match answer.events.last() {
                Some(event) => event.kv.as_ref().map_or(0, |kv| kv.mod_revision),
                None => revision,
            };
            watched.next_rev = watched.next_rev.max(delivered + 1);
        }
        self.out.send(Ok(answer)).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_follow_clientv3() {
        let r = WatchOptions::new().prefix().request("a");
        assert_eq!((&r.key[..], &r.range_end[..]), (&b"a"[..], &b"b"[..]));
        let r = WatchOptions::new().prefix().request("");
        assert_eq!((&r.key[..], &r.range_end[..]), (&b"\0"[..], &b"\0"[..]));
        let r = WatchOptions::new().from_key().request("");
        assert_eq!((&r.key[..], &r.range_end[..]), (&b"\0"[..], &b"\0"[..]));
        let r = WatchOptions::new().from_key().request("k");
        assert_eq!((&r.key[..], &r.range_end[..]), (&b"k"[..], &b"\0"[..]));
        let r = WatchOptions::new()
            .range_end("z")
            .start_revision(3)
            .prev_kv()
            .no_delete()
            .no_put()
            .fragment()
            .progress_notify()
            .watch_id(7)
            .request("a");
        assert_eq!(&r.range_end[..], b"z");
        assert_eq!(
            r.filters,
            vec![FilterType::Noput as i32, FilterType::Nodelete as i32]
        );
        assert!(r.prev_kv && r.fragment && r.progress_notify);
        assert_eq!((r.start_revision, r.watch_id), (3, 7));
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }

    fn driver() -> (Driver, mpsc::Receiver<Result<WatchResponse, Error>>) {
        let (_commands, command_rx) = mpsc::unbounded_channel();
        let (out, answers) = mpsc::channel(QUEUED_ANSWERS);
        let driver = Driver {
            client: Client::new(["127.0.0.1:1"]),
            endpoint: 0,
            connection: None,
            commands: command_rx,
            out,
            link: None,
            watchers: BTreeMap::new(),
            pending: VecDeque::new(),
            partial: HashMap::new(),
            token_retried: false,
        };
        (driver, answers)
    }

    fn put(key: &str, rev: i64) -> raftkv_proto::mvccpb::Event {
        raftkv_proto::mvccpb::Event {
            kv: Some(raftkv_proto::mvccpb::KeyValue {
                key: Bytes::copy_from_slice(key.as_bytes()),
                mod_revision: rev,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn at(revision: i64) -> Option<raftkv_proto::etcdserverpb::ResponseHeader> {
        Some(raftkv_proto::etcdserverpb::ResponseHeader {
            revision,
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn fragments_come_out_whole_and_watchers_resume_where_they_were() {
        let (mut driver, mut answers) = driver();
        for (key, start) in [("a", 0), ("b", 2)] {
            driver.pending.push_back(Pending {
                request: WatchOptions::new().start_revision(start).request(key),
                resumes: None,
            });
        }
        for id in [0, 1] {
            let created = WatchResponse {
                header: at(5),
                watch_id: id,
                created: true,
                ..Default::default()
            };
            assert!(driver.answer(created).await);
        }
        // Watcher 1's history in three parts, watcher 0's event between them.
        let part = |events, fragment| WatchResponse {
            header: at(5),
            watch_id: 1,
            events,
            fragment,
            ..Default::default()
        };
        assert!(driver.answer(part(vec![put("b", 2)], true)).await);
        assert!(
            driver
                .answer(WatchResponse {
                    header: at(6),
                    watch_id: 0,
                    events: vec![put("a", 6)],
                    ..Default::default()
                })
                .await
        );
        assert!(driver.answer(part(vec![put("b", 3)], true)).await);
        assert!(driver.answer(part(vec![put("b", 4)], false)).await);
        let mut got = Vec::new();
        while let Ok(answer) = answers.try_recv() {
            let answer = answer.unwrap();
            got.push((
                answer.watch_id,
                answer.created,
                answer.fragment,
                answer.events.len(),
            ));
        }
        assert_eq!(
            got,
            vec![
                (0, true, false, 0),
                (1, true, false, 0),
                (0, false, false, 1),
                (1, false, false, 3)
            ]
        );
        // Watcher 0 created at 5 and delivered 6; watcher 1 delivered up to 4. The canceling
        // one is canceled again after its create; a create not answered yet is sent again.
        driver.watchers.get_mut(&1).unwrap().canceling = true;
        driver.pending.push_back(Pending {
            request: WatchOptions::new().request("c"),
            resumes: None,
        });
        let resumed: Vec<String> = driver
            .resume_requests()
            .into_iter()
            .map(|r| match r.request_union {
                Some(RequestUnion::CreateRequest(c)) => format!(
                    "create {} from {} id {}",
                    String::from_utf8_lossy(&c.key),
                    c.start_revision,
                    c.watch_id
                ),
                Some(RequestUnion::CancelRequest(c)) => format!("cancel {}", c.watch_id),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            resumed,
            [
                "create a from 7 id 0",
                "create b from 5 id 1",
                "cancel 1",
                "create c from 0 id 0"
            ]
        );
        // The resumed watchers' created answers are not passed on; the new one's is.
        for id in [0, 1, 2] {
            let created = WatchResponse {
                header: at(7),
                watch_id: id,
                created: true,
                ..Default::default()
            };
            assert!(driver.answer(created).await);
        }
        let passed: Vec<i64> = std::iter::from_fn(|| answers.try_recv().ok())
            .map(|a| a.unwrap().watch_id)
            .collect();
        assert_eq!(passed, [2]);
        assert_eq!(driver.watchers.get(&2).map(|w| w.next_rev), Some(8));
    }

    #[test]
    fn answers_read_as_clientv3_reads_them() {
        use raftkv_proto::etcdserverpb::ResponseHeader;
        let header = Some(ResponseHeader {
            revision: 4,
            ..Default::default()
        });
        let progress = WatchResponse {
            header,
            ..Default::default()
        };
        assert!(progress.is_progress_notify());
        assert!(progress.cancel_error().is_none());
        let compacted = WatchResponse {
            header,
            canceled: true,
            compact_revision: 3,
            ..Default::default()
        };
        assert!(!compacted.is_progress_notify());
        assert_eq!(
            compacted.cancel_error().unwrap().to_string(),
            "etcdserver: mvcc: required revision has been compacted"
        );
        let refused = WatchResponse {
            created: true,
            canceled: true,
            cancel_reason: "mvcc: watcher range is empty".into(),
            ..Default::default()
        };
        assert_eq!(
            refused.cancel_error().unwrap().to_string(),
            "mvcc: watcher range is empty"
        );
    }
}
