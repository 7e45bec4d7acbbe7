//! `snapshot save | status | restore` on raftkv's snapshot files, and on etcd's (a bbolt
//! database with a SHA-256 trailer), told apart by their first bytes: etcd's status as
//! etcdctl prints it, and a restore that imports it with every revision kept.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use raftkv_proto::etcdserverpb::SnapshotRequest;
use raftkv_storage::etcd::{self, EtcdStatus};
use raftkv_storage::snapshot::{RestoreOptions, SnapshotInfo};
use raftkv_storage::{MvccConfig, MvccStore, layout};
use tokio::io::AsyncWriteExt;

use crate::print::table::{human_bytes, table};
use raftkv_client::Connection;

/// A gRPC error as grpc-go prints it: clientv3 hands the snapshot stream's error to etcdctl
/// as it came, so `snapshot save` shows `rpc error: code = PermissionDenied desc = ...`.
fn go_status(status: &tonic::Status) -> String {
    let code = match status.code() {
        tonic::Code::Cancelled => "Canceled".to_string(), // grpc-go's spelling
        code => format!("{code:?}"),
    };
    format!("rpc error: code = {code} desc = {}", status.message())
}

/// A snapshot file's status: raftkv's own, or etcd's.
#[derive(Debug)]
pub enum Status {
    /// A raftkv snapshot.
    Raftkv(SnapshotInfo),
    /// An etcd snapshot, as `etcdctl snapshot status` reads it.
    Etcd(EtcdStatus),
}

/// Streams a snapshot from the client's member (raftkv or etcd) into `path` (written to
/// `path.part`, fsynced, renamed), then verifies the saved file. Shows progress on a
/// terminal.
pub async fn save(client: &Connection, path: &Path) -> anyhow::Result<Status> {
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let mut stream = client
        .maintenance()
        .snapshot(SnapshotRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("{}", go_status(&s)))?
        .into_inner();
    let mut file = tokio::fs::File::create(&part)
        .await
        .with_context(|| format!("creating {}", part.display()))?;
    let show_progress = std::io::stderr().is_terminal();
    let mut received = 0u64;
    while let Some(msg) = stream
        .message()
        .await
        .map_err(|s| anyhow::anyhow!("{}", go_status(&s)))?
    {
        file.write_all(&msg.blob).await?;
        received += msg.blob.len() as u64;
        if show_progress {
            let total = received + msg.remaining_bytes;
            eprint!(
                "\rfetching snapshot: {} / {}",
                human_bytes(received),
                human_bytes(total)
            );
            let _ = std::io::stderr().flush();
        }
    }
    if show_progress {
        eprintln!();
    }
    file.flush().await?;
    file.sync_all().await?;
    drop(file);
    if etcd::looks_like_bolt(&part)? && received % 512 != 32 {
        // etcdctl's check of what an etcd member sent; like etcdctl, keep no part file.
        let _ = std::fs::remove_file(&part);
        bail!("sha256 checksum not found [bytes: {received}]");
    }
    tokio::fs::rename(&part, path).await?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    // Verified further than etcdctl goes: the SHA-256 trailer and every page of an etcd
    // file, every block of a raftkv one.
    if etcd::looks_like_bolt(path)? {
        etcd::check_hash(path, false)
            .map_err(|e| anyhow::anyhow!("saved snapshot is not valid: {e}"))?;
    }
    status(path).map_err(|e| anyhow::anyhow!("saved snapshot is not valid: {e}"))
}

/// The status of a snapshot file, fully verified (an etcd file's pages as etcdctl checks
/// them; its trailer is checked by restore, as etcdctl checks it).
pub fn status(path: &Path) -> anyhow::Result<Status> {
    if etcd::looks_like_bolt(path)? {
        return etcd::status(path)
            .map(Status::Etcd)
            .map_err(|e| anyhow::anyhow!("{e}"));
    }
    raftkv_storage::snapshot::read_info(path)
        .map(Status::Raftkv)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Formats a status as etcdctl does (`simple`, `table`, `json`; `fields` like simple). A
/// raftkv file's JSON adds `rawSize`, the body's size before compression.
pub fn format_status(status: &Status, format: &str) -> anyhow::Result<String> {
    let (hash, revision, keys, total_size, raw_size) = match status {
        Status::Raftkv(i) => (
            i.hash,
            i.meta.revision,
            i.key_count,
            i.total_size,
            Some(i.raw_size),
        ),
        Status::Etcd(s) => (s.hash, s.revision, s.total_key, s.total_size, None),
    };
    let size = human_bytes(total_size);
    Ok(match format {
        "simple" | "fields" => format!("{hash:x}, {revision}, {keys}, {size}\n"),
        "table" => table(
            &["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"],
            &[vec![
                format!("{hash:x}"),
                revision.to_string(),
                keys.to_string(),
                size,
            ]],
        ),
        "json" => {
            let raw = raw_size.map_or(String::new(), |r| format!(",\"rawSize\":{r}"));
            format!(
                "{{\"hash\":{hash},\"revision\":{revision},\"totalKey\":{keys},\"totalSize\":{total_size}{raw}}}\n"
            )
        }
        other => bail!("{other} not supported as output format"),
    })
}

/// What a restore brought in, for its closing line.
#[derive(Debug)]
pub struct Restored {
    /// The store's revision.
    pub revision: i64,
    /// Keys live at it.
    pub keys: u64,
    /// For an etcd file: versions, leases, users and roles imported, and the compaction.
    pub etcd: Option<etcd::Imported>,
}

/// Flags of `snapshot restore`, named as etcdctl's.
#[derive(Debug, Clone)]
pub struct RestoreFlags {
    /// `--name`.
    pub name: String,
    /// `--data-dir` (default `<name>.raftkv`).
    pub data_dir: Option<PathBuf>,
    /// `--wal-dir`: only checked (it must not exist, as etcdctl checks); the member writes
    /// its WAL when it first starts, where its own `--wal-dir` says.
    pub wal_dir: Option<PathBuf>,
    /// `--initial-cluster`.
    pub initial_cluster: String,
    /// `--initial-advertise-peer-urls`.
    pub initial_advertise_peer_urls: Vec<String>,
    /// `--skip-hash-check`.
    pub skip_hash_check: bool,
}

/// Creates the data dir of one member of a *new* cluster holding the snapshot's keys and
/// revision. The snapshot's old membership is dropped: the member bootstraps the cluster
/// named by the same `--initial-cluster` when it first starts. Refuses an existing dir.
/// An etcd snapshot is imported: every version with its revisions, the compaction, the
/// leases and the auth store.
pub fn restore(path: &Path, flags: &RestoreFlags) -> anyhow::Result<(PathBuf, Restored)> {
    let data_dir = flags
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.raftkv", flags.name)));
    if data_dir.exists() {
        bail!("data-dir {:?} exists", data_dir.display().to_string());
    }
    if let Some(wal_dir) = flags.wal_dir.as_ref().filter(|d| d.exists()) {
        bail!("wal-dir {:?} exists", wal_dir.display().to_string());
    }
    let cluster = raftkv_storage::bootstrap::parse_initial_cluster(&flags.initial_cluster)
        .map_err(anyhow::Error::msg)?;
    raftkv_storage::bootstrap::own_peer_urls(
        &cluster,
        &flags.name,
        &flags.initial_advertise_peer_urls,
    )
    .map_err(anyhow::Error::msg)?;
    let result = (|| {
        let store = MvccStore::open(&layout::db_dir(&data_dir), &MvccConfig::default())?;
        let restored = if etcd::looks_like_bolt(path)? {
            let imported = etcd::restore(path, &store, flags.skip_hash_check)?;
            Restored {
                revision: imported.revision,
                keys: imported.keys,
                etcd: Some(imported),
            }
        } else {
            let options = RestoreOptions {
                keep_raft_state: false,
                skip_hash_check: flags.skip_hash_check,
            };
            let info = raftkv_storage::snapshot::restore_with(path, &store, &options)?;
            Restored {
                revision: info.meta.revision,
                keys: info.key_count,
                etcd: None,
            }
        };
        store.flush()?;
        anyhow::Ok(restored)
    })();
    match result {
        Ok(info) => Ok((data_dir, info)),
        Err(e) => {
            // Leave nothing half-made behind.
            let _ = std::fs::remove_dir_all(&data_dir);
            Err(e)
        }
    }
}
