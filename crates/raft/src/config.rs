//! A member's configuration and identity: the etcd flags that concern consensus, and the
//! ids derived from them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// etcd's default `--max-request-bytes` (1.5 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1_572_864;
/// etcd's default `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;

/// `--initial-cluster-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClusterState {
    /// Bootstrap a new cluster from `--initial-cluster`.
    #[default]
    New,
    /// Join a running cluster that already added this member.
    Existing,
}

/// Everything a member needs to run its part of the cluster.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// `--name`.
    pub name: String,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// `--initial-advertise-peer-urls`: how other members reach this one.
    pub peer_urls: Vec<String>,
    /// `--advertise-client-urls`: how clients reach this one.
    pub client_urls: Vec<String>,
    /// `--initial-cluster`: name → peer URLs of every initial member.
    pub initial_cluster: BTreeMap<String, Vec<String>>,
    /// `--initial-cluster-state`.
    pub initial_cluster_state: ClusterState,
    /// `--initial-cluster-token`.
    pub initial_cluster_token: String,
    /// `--heartbeat-interval`.
    pub heartbeat_interval: Duration,
    /// `--election-timeout` (elections wait a random time between it and twice it).
    pub election_timeout: Duration,
    /// `--snapshot-count`: entries applied between snapshots.
    pub snapshot_count: u64,
    /// How long a request may take before it fails with "request timed out".
    pub request_timeout: Duration,
    /// `--max-request-bytes`: the largest command accepted into the log (at most
    /// [`crate::MAX_REQUEST_BYTES_LIMIT`]).
    pub max_request_bytes: usize,
    /// `--max-txn-ops`.
    pub max_txn_ops: usize,
}

impl NodeConfig {
    /// etcd's defaults for a member called `name` keeping its data in `data_dir`.
    pub fn new(name: &str, data_dir: PathBuf) -> Self {
        Self {
            name: name.to_string(),
            data_dir,
            peer_urls: vec!["http://127.0.0.1:2380".into()],
            client_urls: vec!["http://127.0.0.1:2379".into()],
            initial_cluster: BTreeMap::from([(
                name.to_string(),
                vec!["http://127.0.0.1:2380".into()],
            )]),
            initial_cluster_state: ClusterState::New,
            initial_cluster_token: "etcd-cluster".into(),
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            snapshot_count: 100_000,
            request_timeout: Duration::from_secs(4),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
        }
    }

    /// This member's id.
    pub fn member_id(&self) -> u64 {
        member_id(&self.peer_urls, &self.initial_cluster_token)
    }
}

/// A member's id: derived from its peer URLs (order does not matter) and the cluster token,
/// so every member computes the same id for the same member without talking.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    let mut input = urls.join(",");
    input.push('|');
    input.push_str(token);
    let id = fnv1a64(input.as_bytes());
    // 0 means "none" throughout Raft and etcd's API.
    if id == 0 { 1 } else { id }
}

/// The cluster's id: derived from its initial members' ids.
pub fn cluster_id(member_ids: impl IntoIterator<Item = u64>) -> u64 {
    let mut ids: Vec<u64> = member_ids.into_iter().collect();
    ids.sort_unstable();
    let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
    fnv1a64(&bytes)
}

/// FNV-1a, 64 bits: a fixed, dependency-free hash (ids must never change between builds).
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_order_independent() {
        let a = member_id(
            &[
                "http://127.0.0.1:2380".into(),
                "http://10.0.0.1:2380".into(),
            ],
            "t",
        );
        let b = member_id(
            &[
                "http://10.0.0.1:2380".into(),
                "http://127.0.0.1:2380".into(),
            ],
            "t",
        );
        assert_eq!(a, b);
        assert_ne!(a, member_id(&["http://127.0.0.1:2380".into()], "t"));
        assert_ne!(
            a,
            member_id(
                &[
                    "http://127.0.0.1:2380".into(),
                    "http://10.0.0.1:2380".into()
                ],
                "u"
            )
        );
        // Pinned: a member's id must not change across versions of raftkv.
        assert_eq!(
            member_id(&["http://127.0.0.1:2380".into()], "etcd-cluster"),
            0xcbf6_ead2_1400_d8d6
        );
        assert_eq!(cluster_id([3, 1, 2]), cluster_id([1, 2, 3]));
    }
}
