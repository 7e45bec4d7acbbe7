//! `snapshot save | status | restore` on raftkv's snapshot files.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use raftkv_proto::etcdserverpb::SnapshotRequest;
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

/// Streams a snapshot from the client's member into `path` (written to `path.part`,
/// fsynced, renamed), then verifies the saved file. Shows progress on a terminal.
pub async fn save(client: &Connection, path: &Path) -> anyhow::Result<SnapshotInfo> {
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
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(&part, path).await?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    raftkv_storage::snapshot::read_info(path)
        .map_err(|e| anyhow::anyhow!("saved snapshot is not valid: {e}"))
}

/// The status of a snapshot file, fully verified.
pub fn status(path: &Path) -> anyhow::Result<SnapshotInfo> {
    raftkv_storage::snapshot::read_info(path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Formats a status as etcdctl does (`simple`, `table`, `json`; `fields` like simple).
pub fn format_status(info: &SnapshotInfo, format: &str) -> anyhow::Result<String> {
    let size = human_bytes(info.total_size);
    Ok(match format {
        "simple" | "fields" => format!(
            "{:x}, {}, {}, {}\n",
            info.hash, info.meta.revision, info.key_count, size
        ),
        "table" => table(
            &["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"],
            &[vec![
                format!("{:x}", info.hash),
                info.meta.revision.to_string(),
                info.key_count.to_string(),
                size,
            ]],
        ),
        "json" => format!(
            "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{},\"rawSize\":{}}}\n",
            info.hash, info.meta.revision, info.key_count, info.total_size, info.raw_size
        ),
        other => bail!("{other} not supported as output format"),
    })
}

/// Flags of `snapshot restore`, named as etcdctl's.
#[derive(Debug, Clone)]
pub struct RestoreFlags {
    /// `--name`.
    pub name: String,
    /// `--data-dir` (default `<name>.raftkv`).
    pub data_dir: Option<PathBuf>,
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
pub fn restore(path: &Path, flags: &RestoreFlags) -> anyhow::Result<(PathBuf, SnapshotInfo)> {
    let data_dir = flags
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.raftkv", flags.name)));
    if data_dir.exists() {
        bail!("data-dir {:?} exists", data_dir.display().to_string());
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
        let options = RestoreOptions {
            keep_raft_state: false,
            skip_hash_check: flags.skip_hash_check,
        };
        let info = raftkv_storage::snapshot::restore_with(path, &store, &options)?;
        store.flush()?;
        anyhow::Ok(info)
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
