//! A member's configuration and identity: the etcd flags that concern consensus, and the
//! ids derived from them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha1::{Digest, Sha1};

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

/// etcd 3.4's `SnapshotCatchUpEntries`: entries kept in the log behind a snapshot.
pub const SNAPSHOT_CATCHUP_ENTRIES: u64 = 5_000;

/// Everything a member needs to run its part of the cluster.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// `--name`.
    pub name: String,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// `--wal-dir`: where the Raft log and vote live, if not `<data-dir>/member/wal`.
    pub wal_dir: Option<PathBuf>,
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
    /// Entries a snapshot leaves in the log behind it, so that a follower or learner a
    /// little behind catches up from the log instead of a whole snapshot (etcd 3.4's fixed
    /// `SnapshotCatchUpEntries`, 5,000).
    pub snapshot_catchup_entries: u64,
    /// How long a request may take before it fails with "request timed out".
    pub request_timeout: Duration,
    /// `--max-request-bytes`: the largest command accepted into the log (at most
    /// [`crate::MAX_REQUEST_BYTES_LIMIT`]).
    pub max_request_bytes: usize,
    /// `--max-txn-ops`.
    pub max_txn_ops: usize,
    /// `--strict-reconfig-check`: reject membership changes that would risk the quorum.
    pub strict_reconfig_check: bool,
    /// `--experimental-enable-lease-checkpoint`: how often the leader records each long
    /// lease's remaining TTL through the log (etcd: every 5 minutes), so that a new leader
    /// goes on from there instead of granting the full TTL again. `None`: never.
    pub lease_checkpoint_interval: Option<Duration>,
    /// `--quota-backend-bytes`: puts, txns and lease grants that would take the store's
    /// bytes in use ([`raftkv_storage::MvccStore::size_in_use`]) to this raise NOSPACE and
    /// are refused, as etcd's quota check. `None`: no quota (etcd: a negative value).
    pub quota_backend_bytes: Option<u64>,
    /// `--auto-compaction-mode` and `--auto-compaction-retention`; `None`: off (etcd's
    /// default, a retention of 0).
    pub auto_compaction: Option<crate::node::compactor::AutoCompaction>,
    /// How often the revision mode of auto compaction looks (etcd's fixed 5 minutes,
    /// [`crate::node::compactor::REVISION_INTERVAL`]; shorter only in tests).
    pub auto_compaction_revision_interval: Duration,
    /// TLS between members (etcd's `--peer-*` TLS flags, built by the server crate).
    pub peer_tls: PeerTls,
    /// `--experimental-initial-corrupt-check`: a restarting member compares its HashKV with
    /// every peer's before it starts Raft, and refuses to start on a mismatch.
    pub initial_corrupt_check: bool,
    /// `--experimental-corrupt-check-time`: how often the leader compares HashKV with every
    /// follower's and raises the CORRUPT alarm on a mismatch. `None`: never (etcd's 0).
    pub corrupt_check_interval: Option<Duration>,
    /// The size of a new value log segment (64 MiB; smaller only in tests, so that a short
    /// run makes many segments and moves values out of the mostly dead ones).
    pub value_segment_bytes: u64,
}

/// TLS between members: how this member serves its peer port, and how it dials members
/// whose peer URLs are `https://`.
#[derive(Debug, Clone, Default)]
pub struct PeerTls {
    /// TLS on the peer listener (an `https://` listen URL); `None`: plain HTTP/2.
    pub accept: Option<crate::serve::TlsAccept>,
    /// The client side for `https://` peer URLs: the CA that members' certificates must chain
    /// to and this member's own certificate. `None`: `https://` peers cannot be dialed.
    pub dial: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
}

/// etcd's default `--quota-backend-bytes` (its `DefaultQuotaBytes`, 2 GiB).
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 << 30;

impl NodeConfig {
    /// etcd's defaults for a member called `name` keeping its data in `data_dir`.
    pub fn new(name: &str, data_dir: PathBuf) -> Self {
        Self {
            name: name.to_string(),
            data_dir,
            wal_dir: None,
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
            snapshot_catchup_entries: SNAPSHOT_CATCHUP_ENTRIES,
            request_timeout: Duration::from_secs(4),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
            strict_reconfig_check: true,
            lease_checkpoint_interval: None,
            quota_backend_bytes: Some(DEFAULT_QUOTA_BACKEND_BYTES),
            auto_compaction: None,
            auto_compaction_revision_interval: crate::node::compactor::REVISION_INTERVAL,
            peer_tls: PeerTls::default(),
            initial_corrupt_check: false,
            corrupt_check_interval: None,
            value_segment_bytes: raftkv_storage::values::SEGMENT_BYTES,
        }
    }

    /// The directory of the Raft log and vote: `--wal-dir`, or `<data-dir>/member/wal`.
    pub fn wal_dir(&self) -> PathBuf {
        self.wal_dir
            .clone()
            .unwrap_or_else(|| raftkv_storage::layout::wal_dir(&self.data_dir))
    }

    /// This member's id.
    pub fn member_id(&self) -> u64 {
        member_id(&self.peer_urls, &self.initial_cluster_token)
    }
}

/// A member's id, as etcd derives it at bootstrap (`membership.NewMember`): the first 8 bytes,
/// big-endian, of the SHA-1 of the member's peer URLs (sorted, concatenated) and the cluster
/// token. Every member computes the same id for the same member without talking, and a
/// raftkv member gets the id an etcd member with the same flags would get.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    id_from(peer_urls, token.as_bytes())
}

/// The id of a member added at run time (`member add`), as etcd derives it: the same hash
/// with an empty token followed by the decimal Unix time in seconds, so that re-adding the
/// same URLs later gives a new id.
pub fn member_id_at(peer_urls: &[String], unix_time: u64) -> u64 {
    id_from(peer_urls, unix_time.to_string().as_bytes())
}

fn id_from(peer_urls: &[String], suffix: &[u8]) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    let mut hash = Sha1::new();
    for url in urls {
        hash.update(url.as_bytes());
    }
    hash.update(suffix);
    nonzero(first_u64(&hash.finalize()))
}

/// The cluster's id, as etcd derives it (`RaftCluster.genID`): the first 8 bytes of the
/// SHA-1 of its initial members' ids, sorted, each 8 bytes big-endian.
pub fn cluster_id(member_ids: impl IntoIterator<Item = u64>) -> u64 {
    let mut ids: Vec<u64> = member_ids.into_iter().collect();
    ids.sort_unstable();
    let mut hash = Sha1::new();
    for id in ids {
        hash.update(id.to_be_bytes());
    }
    nonzero(first_u64(&hash.finalize()))
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// 0 means "none" throughout Raft and etcd's API (etcd refuses it: "cannot use 0 as member
/// id"); a hash of 0 (odds 2^-64) becomes 1 rather than a member that cannot start.
fn nonzero(id: u64) -> u64 {
    if id == 0 { 1 } else { id }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(list: &[&str]) -> Vec<String> {
        list.iter().map(|u| u.to_string()).collect()
    }

    #[test]
    fn ids_are_order_independent_and_depend_on_urls_and_token() {
        let a = member_id(
            &urls(&["http://127.0.0.1:2380", "http://10.0.0.1:2380"]),
            "t",
        );
        let b = member_id(
            &urls(&["http://10.0.0.1:2380", "http://127.0.0.1:2380"]),
            "t",
        );
        assert_eq!(a, b);
        assert_eq!(a, 0x73f0_baa4_f629_097d);
        assert_ne!(a, member_id(&urls(&["http://127.0.0.1:2380"]), "t"));
        assert_ne!(
            a,
            member_id(
                &urls(&["http://127.0.0.1:2380", "http://10.0.0.1:2380"]),
                "u"
            )
        );
        assert_eq!(cluster_id([3, 1, 2]), cluster_id([1, 2, 3]));
    }

    /// Values read from a real etcd 3.4.23 (`etcdctl endpoint status`, `member list`).
    #[test]
    fn ids_are_etcds() {
        let default = member_id(&urls(&["http://localhost:2380"]), "etcd-cluster");
        assert_eq!(default, 0x8e9e_05c5_2164_694d);
        assert_eq!(cluster_id([default]), 0xcdf8_1819_4e3a_8c32);
        let one = member_id(&urls(&["http://localhost:24380"]), "etcd-cluster");
        assert_eq!(one, 0x24dd_396d_7805_8fb7);
        assert_eq!(cluster_id([one]), 0x9776_bf3d_6d86_ab9f);

        let n: Vec<u64> = [24681, 24682, 24683]
            .iter()
            .map(|port| member_id(&[format!("http://127.0.0.1:{port}")], "tok-T"))
            .collect();
        assert_eq!(
            n,
            [
                0xa032_b350_6441_eb1e,
                0x7d9a_8fc6_34fa_75aa,
                0x4d6c_9eed_f0c5_6681
            ]
        );
        assert_eq!(cluster_id(n), 0x7624_97e2_5655_89c1);
    }

    #[test]
    fn added_members_hash_the_time_instead_of_the_token() {
        let id = member_id_at(&urls(&["http://127.0.0.1:25001"]), 1_796_062_937);
        assert_eq!(id, 0xe641_b46f_434b_2b07);
        assert_ne!(
            id,
            member_id_at(&urls(&["http://127.0.0.1:25001"]), 1_796_062_938)
        );
    }

    #[test]
    fn strict_reconfig_check_is_on_by_default() {
        assert!(NodeConfig::new("n", PathBuf::from("d")).strict_reconfig_check);
    }
}
