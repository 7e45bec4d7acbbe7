//! Auto compaction (`--auto-compaction-mode`, `--auto-compaction-retention`): the leader
//! compacts the store on its own, on etcd 3.4's schedule (its `v3compactor`).
//!
//! - **periodic**: keep `retention` of history. A revision is sampled every tenth of the
//!   interval (the retention, at most an hour); once a retention has passed since the member
//!   started, and then every interval, the leader compacts at the oldest sample it keeps,
//!   which is about one retention old. A failed compaction is tried again a tenth of the
//!   interval later.
//! - **revision**: keep `retention` revisions. Every five minutes the leader compacts at the
//!   current revision minus the retention, unless that is not above 0 or is where it last
//!   compacted.
//!
//! Samples are taken on every member (as etcd's compactor keeps running, paused, on a
//! follower), so a new leader compacts on the same schedule. A compaction goes through the
//! log as a client's `Compact` would; "required revision has been compacted" counts as done.

use std::collections::VecDeque;
use std::sync::Weak;
use std::time::Duration;

use raftkv_proto::etcdserverpb::CompactionRequest;
use raftkv_proto::raftkvpb::{Command, command};
use raftkv_storage::MvccError;
use tokio::time::Instant;

use super::RaftNode;
use crate::error::NodeError;

/// How the leader compacts on its own (the server crate reads it from etcd's flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Keep this much history.
    Periodic(Duration),
    /// Keep this many revisions.
    Revision(i64),
}

/// How often the revision mode looks (etcd's `revInterval`).
pub const REVISION_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// The periodic mode's interval is the retention, but at most this.
const MAX_PERIODIC_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// Samples per interval (etcd's `retryDivisor`).
const SAMPLES_PER_INTERVAL: u32 = 10;

/// The periodic mode's schedule, apart from the clock and the store.
#[derive(Debug)]
pub struct Periodic {
    retention: Duration,
    /// Between samples, and between tries after a failure.
    step: Duration,
    /// How many samples are kept: the oldest is about one retention old.
    keep: usize,
    samples: VecDeque<i64>,
    last_done: Instant,
    /// A retention until the first compaction, the interval after it.
    wait: Duration,
}

impl Periodic {
    /// A schedule starting `now`.
    pub fn new(retention: Duration, now: Instant) -> Self {
        let interval = retention.min(MAX_PERIODIC_INTERVAL);
        let step = (interval / SAMPLES_PER_INTERVAL).max(Duration::from_millis(1));
        let keep = usize::try_from(retention.as_nanos() / step.as_nanos())
            .unwrap_or(usize::MAX)
            .saturating_add(1)
            .min(1 << 20);
        Self {
            retention,
            step,
            keep,
            samples: VecDeque::new(),
            last_done: now,
            wait: retention,
        }
    }

    /// How long to sleep between samples.
    pub fn step(&self) -> Duration {
        self.step
    }

    /// Records the current revision (before each sleep).
    pub fn sample(&mut self, revision: i64) {
        self.samples.push_back(revision);
        while self.samples.len() > self.keep {
            self.samples.pop_front();
        }
    }

    /// After a sleep: the revision to compact at, if this member leads and it is time.
    pub fn due(&mut self, now: Instant, leading: bool) -> Option<i64> {
        if !leading || now.duration_since(self.last_done) < self.wait {
            return None;
        }
        self.wait = self.retention.min(MAX_PERIODIC_INTERVAL);
        self.samples.front().copied()
    }

    /// The compaction [`Periodic::due`] asked for is done (or was already).
    pub fn done(&mut self, now: Instant) {
        self.last_done = now;
    }
}

/// The revision mode's schedule, apart from the clock and the store.
#[derive(Debug)]
pub struct ByRevision {
    retention: i64,
    last: i64,
}

impl ByRevision {
    /// A schedule keeping `retention` revisions.
    pub fn new(retention: i64) -> Self {
        Self { retention, last: 0 }
    }

    /// Every [`REVISION_INTERVAL`]: the revision to compact at, if this member leads.
    pub fn due(&self, current: i64, leading: bool) -> Option<i64> {
        let at = current.saturating_sub(self.retention);
        (leading && at > 0 && at != self.last).then_some(at)
    }

    /// The compaction at `at` is done (or was already).
    pub fn done(&mut self, at: i64) {
        self.last = at;
    }
}

/// The compactor's loop, while the member runs; the revision mode looks every
/// `revision_interval` ([`REVISION_INTERVAL`] but in tests).
pub(super) async fn auto_compact(
    node: Weak<RaftNode>,
    policy: AutoCompaction,
    revision_interval: Duration,
) {
    match policy {
        AutoCompaction::Periodic(retention) => {
            let mut schedule = Periodic::new(retention, Instant::now());
            loop {
                let Some(n) = node.upgrade() else { return };
                schedule.sample(n.store.revision());
                drop(n);
                tokio::time::sleep(schedule.step()).await;
                let Some(n) = node.upgrade() else { return };
                if *n.stop_peer.borrow() {
                    return;
                }
                if let Some(at) = schedule.due(Instant::now(), n.primary_term().is_some())
                    && compact(&n, at, &format!("{retention:?}")).await
                {
                    schedule.done(Instant::now());
                }
            }
        }
        AutoCompaction::Revision(retention) => {
            let mut schedule = ByRevision::new(retention);
            loop {
                tokio::time::sleep(revision_interval).await;
                let Some(n) = node.upgrade() else { return };
                if *n.stop_peer.borrow() {
                    return;
                }
                if let Some(at) = schedule.due(n.store.revision(), n.primary_term().is_some())
                    && compact(&n, at, &format!("{retention} revisions")).await
                {
                    schedule.done(at);
                }
            }
        }
    }
}

/// Proposes a compaction at `at`; whether it is done (or had been).
async fn compact(n: &RaftNode, at: i64, retention: &str) -> bool {
    tracing::info!(revision = at, retention, "starting auto compaction");
    let started = std::time::Instant::now();
    let cmd = Command {
        op: Some(command::Op::Compaction(CompactionRequest {
            revision: at,
            physical: false,
        })),
        ..Default::default()
    };
    match n.write(cmd).await {
        Ok(_) => {
            tracing::info!(revision = at, took = ?started.elapsed(), "completed auto compaction");
            true
        }
        Err(NodeError::Refused(r)) if r.message == MvccError::Compacted.to_string() => true,
        Err(e) => {
            tracing::warn!(revision = at, error = %e, "auto compaction failed; trying again later");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_compacts_at_the_sample_one_retention_old() {
        let start = Instant::now();
        let retention = Duration::from_secs(10);
        let mut s = Periodic::new(retention, start);
        assert_eq!(s.step(), Duration::from_secs(1));
        // One sample a second, revision = 100 + seconds; nothing before a retention.
        let mut at = None;
        for t in 0..40u64 {
            s.sample(100 + t as i64);
            let now = start + Duration::from_secs(t + 1);
            if let Some(rev) = s.due(now, true) {
                // The oldest sample kept is 10 steps before this one: taken at least a
                // retention before now.
                let taken = rev - 100;
                assert!(
                    now.duration_since(start + Duration::from_secs(taken as u64)) >= retention,
                    "compacting at {rev} (taken at {taken} s) at {t} s"
                );
                at.get_or_insert(t);
                s.done(now);
            }
        }
        // First at 10 s (a retention after the start), then every 10 s.
        assert_eq!(at, Some(9));
    }

    #[test]
    fn periodic_waits_while_following_and_retries_a_failure() {
        let start = Instant::now();
        let mut s = Periodic::new(Duration::from_secs(10), start);
        for t in 0..10u64 {
            s.sample(t as i64);
        }
        let late = start + Duration::from_secs(20);
        assert_eq!(s.due(late, false), None, "a follower does not compact");
        let first = s.due(late, true);
        assert!(first.is_some());
        // Not done (the compaction failed): asked again at the next step.
        s.sample(10);
        assert!(s.due(late + Duration::from_secs(1), true).is_some());
        s.done(late + Duration::from_secs(1));
        s.sample(11);
        assert_eq!(s.due(late + Duration::from_secs(2), true), None);
    }

    #[test]
    fn periodic_interval_is_at_most_an_hour() {
        let start = Instant::now();
        let day = Duration::from_secs(24 * 3600);
        let mut s = Periodic::new(day, start);
        assert_eq!(s.step(), Duration::from_secs(360));
        // A day of samples is kept: 240 of them, and one more.
        for i in 0..1000 {
            s.sample(i);
        }
        assert_eq!(s.samples.len(), 241);
        assert_eq!(s.due(start + day, true), Some(1000 - 241));
        s.done(start + day);
        // Then hourly.
        let hour = Duration::from_secs(3600);
        assert_eq!(
            s.due(start + day + hour - Duration::from_secs(1), true),
            None
        );
        assert!(s.due(start + day + hour, true).is_some());
    }

    #[test]
    fn by_revision_keeps_the_retention_and_skips_a_repeat() {
        let mut s = ByRevision::new(1000);
        assert_eq!(s.due(1000, true), None, "nothing above 0 to compact");
        assert_eq!(s.due(1500, false), None, "a follower does not compact");
        assert_eq!(s.due(1500, true), Some(500));
        s.done(500);
        assert_eq!(s.due(1500, true), None, "already compacted there");
        assert_eq!(s.due(1501, true), Some(501));
    }
}
