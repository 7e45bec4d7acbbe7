//! `make-mirror` under the chaos schedule: `raftkvctl make-mirror --prefix k` runs from the
//! faulted cluster (all its endpoints) into a one-member raftkv beside it for the whole run,
//! through kills, pauses, partitions and restarts of its source. Afterwards:
//!
//! - the mirror is still running (it rides through faults, resuming its watch elsewhere);
//! - once the source's writers have stopped, the destination converges to exactly the
//!   source's `k` keys and values (nothing missing, nothing extra);
//! - each key's changes at the destination are a subsequence of its changes at the source,
//!   in order: the mirror never applies a change out of order, twice, or from nowhere.

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raftkv_proto::etcdserverpb::RangeRequest;
use raftkv_proto::etcdserverpb::kv_client::KvClient;

use crate::chaos_lease::channel;
use crate::chaos_watch::{Seen, read_history};
use crate::fixture::{Cluster, Options, Server, raftkvctl_bin};

/// The mirror process and its destination.
pub struct Mirror {
    dest: Cluster,
    child: Child,
    log: tempfile::NamedTempFile,
}

/// Every `k` key and its value at `endpoint`, with the newest of their mod revisions (the
/// sentinel's, written last: both histories are read up to it).
async fn prefix(endpoint: &str) -> Option<(BTreeMap<String, String>, i64)> {
    let mut kv = KvClient::new(channel(endpoint).await?);
    let resp = kv
        .range(RangeRequest {
            key: "k".into(),
            range_end: "l".into(),
            ..Default::default()
        })
        .await
        .ok()?
        .into_inner();
    let kvs = resp
        .kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect();
    let newest = resp.kvs.iter().map(|kv| kv.mod_revision).max().unwrap_or(0);
    Some((kvs, newest))
}

/// Each key's changes in order: `Some(value)` for a put, `None` for a delete.
fn changes(events: &[Seen]) -> HashMap<String, Vec<Option<String>>> {
    let mut out: HashMap<String, Vec<Option<String>>> = HashMap::new();
    for (_, kind, key, value, _) in events {
        out.entry(key.clone())
            .or_default()
            .push((*kind == 0).then(|| value.clone()));
    }
    out
}

/// Whether `small` is `big` with some elements left out, order kept.
fn is_subsequence(small: &[Option<String>], big: &[Option<String>]) -> bool {
    let mut rest = big.iter();
    small.iter().all(|s| rest.any(|b| b == s))
}

impl Mirror {
    /// Starts the destination beside `source` and the mirror from every source member.
    pub async fn start(source: &Cluster) -> Mirror {
        let dest = Cluster::start_beside(source, Server::Raftkv, 1, Options::default()).await;
        let log = tempfile::NamedTempFile::new().expect("mirror log");
        let child = Command::new(raftkvctl_bin())
            .arg(format!("--endpoints={}", source.endpoints()))
            .args(["make-mirror", "--prefix", "k", &dest.members[0].endpoint()])
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("log"))
            .stderr(log.reopen().expect("log"))
            .spawn()
            .expect("make-mirror starts");
        Mirror { dest, child, log }
    }

    /// Checks the mirror once the source's writers have stopped and its sentinel is
    /// written; `source` is a member answering for the whole cluster (the leader).
    pub async fn finish(mut self, source: &str, seed: u64) -> String {
        let said = || std::fs::read_to_string(self.log.path()).unwrap_or_default();
        if let Some(status) = self.child.try_wait().expect("mirror status") {
            panic!(
                "seed {seed}: make-mirror exited during the run ({status}): {}",
                said()
            );
        }
        let dest = self.dest.members[0].endpoint();
        let deadline = Instant::now() + Duration::from_secs(60);
        let (want, source_rev, got, dest_rev) = loop {
            let (want, source_rev) = prefix(source).await.expect("source range");
            let (got, dest_rev) = prefix(&dest).await.unwrap_or_default();
            if want == got || Instant::now() > deadline {
                break (want, source_rev, got, dest_rev);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let _ = self.child.kill();
        let _ = self.child.wait();
        if want != got {
            let missing: Vec<_> = want
                .iter()
                .filter(|(k, v)| got.get(*k) != Some(v))
                .collect();
            let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
            panic!(
                "seed {seed}: the mirror's destination did not converge in 60 s: missing or different {missing:?}, extra {extra:?}; mirror said: {}",
                said()
            );
        }
        // Both histories up to their last revision (the sentinel is among the keys).
        let source_history = read_history(source, source_rev).await;
        let dest_history = read_history(&dest, dest_rev).await;
        let (at_source, at_dest) = (changes(&source_history), changes(&dest_history));
        for (key, seen) in &at_dest {
            let original = at_source.get(key).map_or(&[][..], Vec::as_slice);
            assert!(
                is_subsequence(seen, original),
                "seed {seed}: {key} changed at the destination as {seen:?}, not in the source's order {original:?}"
            );
        }
        format!(
            "mirror: {} keys equal, {} destination changes in the source's order, {} source changes",
            want.len(),
            dest_history.len(),
            source_history.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::is_subsequence;

    #[test]
    fn subsequence_keeps_order() {
        let s = |v: &[&str]| -> Vec<Option<String>> {
            v.iter()
                .map(|x| (*x != "-").then(|| x.to_string()))
                .collect()
        };
        assert!(is_subsequence(&s(&["b", "-"]), &s(&["a", "b", "c", "-"])));
        assert!(!is_subsequence(&s(&["c", "b"]), &s(&["a", "b", "c"])));
        assert!(!is_subsequence(&s(&["b", "b"]), &s(&["a", "b", "c"])));
        assert!(!is_subsequence(&s(&["x"]), &s(&[])));
    }
}
