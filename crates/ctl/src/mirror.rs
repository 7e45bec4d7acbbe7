//! `make-mirror`: etcdctl 3.4's mirror of one cluster's keys (or a prefix of them) at
//! another — raftkv or etcd on either side.
//!
//! As etcdctl (and clientv3's `mirror.Syncer`) do it: the source's current revision from a
//! get, then every key of the prefix at that revision, 1,000 per range, each put at the
//! destination; then a watch of the prefix from the next revision, whose events are written
//! at the destination one transaction per source revision (the puts and deletes of one
//! source txn land together). The count of keys written so far is printed every 30 s. It
//! runs until an error: a compacted watch revision, or a failed write.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use clap::Args;
use raftkv_client::{Client, WatchOptions};
use raftkv_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, request_op,
};
use raftkv_proto::mvccpb::event::EventType;

use crate::Cli;

/// Keys per range of the initial copy (clientv3 mirror's `batchLimit`).
const BATCH: i64 = 1000;
/// The "timeout" of the mirror's calls.
const NO_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);

/// `make-mirror [options] <destination>`.
#[derive(Args)]
pub struct MirrorArgs {
    /// The destination's endpoint (exactly one; more is etcdctl's usage error).
    destination: Vec<String>,
    /// Key-value prefix to mirror.
    #[arg(long, default_value = "")]
    prefix: String,
    /// destination prefix to mirror a prefix to a different prefix in the destination
    /// cluster.
    #[arg(long, default_value = "")]
    dest_prefix: String,
    /// mirror key-values to the root of the destination cluster.
    #[arg(long)]
    no_dest_prefix: bool,
    /// Identify secure client using this TLS certificate file for the destination cluster.
    #[arg(long, value_name = "FILE")]
    dest_cert: Option<PathBuf>,
    /// Identify secure client using this TLS key file.
    #[arg(long, value_name = "FILE")]
    dest_key: Option<PathBuf>,
    /// Verify certificates of TLS enabled secure servers using this CA bundle.
    #[arg(long, value_name = "FILE")]
    dest_cacert: Option<PathBuf>,
    /// Disable transport security for client connections.
    #[arg(
        long,
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    dest_insecure_transport: bool,
}

pub async fn run(cli: &Cli, args: MirrorArgs) -> anyhow::Result<()> {
    let [destination] = args.destination.as_slice() else {
        return Err(crate::bad_args(anyhow!(
            "make-mirror takes one destination argument"
        )));
    };
    let dest = destination_client(cli, &args, destination.clone()).map_err(crate::bad_args)?;
    // etcdctl mirrors with no deadline on its calls (context.TODO()): a slow destination
    // or an election makes it wait, not fail. A year stands for none.
    let source = cli
        .client()
        .await?
        .with_timeouts(cli.dial_timeout, NO_DEADLINE);
    if args.no_dest_prefix && !args.dest_prefix.is_empty() {
        return Err(crate::bad_args(anyhow!(
            "`--dest-prefix` and `--no-dest-prefix` cannot be set at the same time, choose one"
        )));
    }

    // The revision the copy is taken at, from any get (clientv3 asks for "foo").
    let header = source
        .read(|c| async move {
            c.kv()
                .range(RangeRequest {
                    key: b"foo".to_vec().into(),
                    ..Default::default()
                })
                .await
                .map(tonic::Response::into_inner)
        })
        .await?
        .header
        .context("a range answer without its header")?;
    let revision = header.revision;
    let rename = Rename {
        from: args.prefix.clone().into_bytes(),
        to: if args.no_dest_prefix {
            Vec::new()
        } else if args.dest_prefix.is_empty() {
            args.prefix.clone().into_bytes()
        } else {
            args.dest_prefix.clone().into_bytes()
        },
    };

    let total = Arc::new(AtomicI64::new(0));
    let counter = total.clone();
    let printer = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(30)).await;
            println!("{}", counter.load(Ordering::Relaxed));
        }
    });
    let result = mirror(&source, &dest, &args.prefix, revision, &rename, &total).await;
    printer.abort();
    result
}

/// The destination's client: its endpoint, the global timeouts, and the `--dest-*` TLS
/// flags as etcdctl reads them (no credentials: etcdctl passes none).
fn destination_client(cli: &Cli, args: &MirrorArgs, destination: String) -> anyhow::Result<Client> {
    use raftkv_client::TlsConfig;
    let client = Client::new(vec![destination]).with_timeouts(cli.dial_timeout, NO_DEADLINE);
    let named = args.dest_cacert.is_some() || args.dest_cert.is_some() || args.dest_key.is_some();
    let tls = if named {
        Some(TlsConfig::from_files(
            args.dest_cacert.as_deref(),
            args.dest_cert.as_deref(),
            args.dest_key.as_deref(),
        )?)
    } else if !args.dest_insecure_transport {
        Some(TlsConfig::new())
    } else {
        None
    };
    Ok(match tls {
        Some(tls) => client.with_rustls(tls.client_config()?),
        None => client,
    })
}

/// etcdctl's `modifyPrefix`: Go's `strings.Replace(key, prefix, destPrefix, 1)`, which
/// replaces the first occurrence anywhere in the key (and, for an empty prefix, puts the
/// destination prefix in front).
struct Rename {
    from: Vec<u8>,
    to: Vec<u8>,
}

impl Rename {
    fn apply(&self, key: &[u8]) -> Bytes {
        let at = if self.from.is_empty() {
            Some(0)
        } else {
            key.windows(self.from.len()).position(|w| w == self.from)
        };
        match at {
            Some(at) => {
                let mut out = Vec::with_capacity(key.len() + self.to.len());
                out.extend_from_slice(&key[..at]);
                out.extend_from_slice(&self.to);
                out.extend_from_slice(&key[at + self.from.len()..]);
                out.into()
            }
            None => Bytes::copy_from_slice(key),
        }
    }
}

async fn mirror(
    source: &Client,
    dest: &Client,
    prefix: &str,
    revision: i64,
    rename: &Rename,
    total: &AtomicI64,
) -> anyhow::Result<()> {
    // The whole key space is "\0" onwards; a prefix is [prefix, its end).
    let (mut key, end): (Vec<u8>, Vec<u8>) = if prefix.is_empty() {
        (vec![0], vec![0])
    } else {
        let end = raftkv_client::prefix_end(prefix.as_bytes());
        (prefix.as_bytes().to_vec(), end)
    };
    let range_end = Bytes::from(end.clone());
    loop {
        let request = RangeRequest {
            key: key.clone().into(),
            range_end: range_end.clone(),
            limit: BATCH,
            revision,
            ..Default::default()
        };
        let page = source
            .read(|c| {
                let request = request.clone();
                async move { c.kv().range(request).await.map(tonic::Response::into_inner) }
            })
            .await?;
        check_page(&key, &end, page.kvs.iter().map(|kv| kv.key.as_ref()))?;
        for kv in &page.kvs {
            let put = PutRequest {
                key: rename.apply(&kv.key),
                value: kv.value.clone(),
                ..Default::default()
            };
            dest.write(|c| {
                let put = put.clone();
                async move { c.kv().put(put).await.map(tonic::Response::into_inner) }
            })
            .await?;
            total.fetch_add(1, Ordering::Relaxed);
        }
        match page.kvs.last() {
            Some(last) if page.more => {
                key = last.key.to_vec();
                key.push(0);
            }
            _ => break,
        }
    }

    let watch_key = if prefix.is_empty() {
        vec![0]
    } else {
        prefix.as_bytes().to_vec()
    };
    let mut updates = source
        .watch(
            watch_key,
            WatchOptions::new()
                .range_end(end)
                .start_revision(revision + 1),
        )
        .await?;
    // The newest source revision written at the destination (or copied): a source that
    // sends an older or the same revision again is refused, so nothing is applied twice
    // or out of order.
    let mut applied = revision;
    while let Some(answer) = updates.next().await {
        let answer = answer?;
        if answer.compact_revision != 0 {
            bail!("etcdserver: mvcc: required revision has been compacted");
        }
        let mut ops: Vec<RequestOp> = Vec::new();
        let mut last_revision = 0;
        for event in &answer.events {
            let Some(kv) = &event.kv else { continue };
            if kv.mod_revision > last_revision {
                check_revision(applied, kv.mod_revision)?;
            }
            if last_revision != 0 && kv.mod_revision > last_revision {
                commit(dest, std::mem::take(&mut ops)).await?;
                applied = last_revision;
            } else if kv.mod_revision < last_revision {
                bail!(
                    "the source sent revision {} after {last_revision}",
                    kv.mod_revision
                );
            }
            last_revision = kv.mod_revision;
            let key = rename.apply(&kv.key);
            let op = if event.r#type == EventType::Delete as i32 {
                request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                    key,
                    ..Default::default()
                })
            } else {
                request_op::Request::RequestPut(PutRequest {
                    key,
                    value: kv.value.clone(),
                    ..Default::default()
                })
            };
            ops.push(RequestOp { request: Some(op) });
            total.fetch_add(1, Ordering::Relaxed);
        }
        if !ops.is_empty() {
            commit(dest, ops).await?;
            applied = last_revision;
        }
    }
    Err(anyhow!("watch closed"))
}

/// A page of the initial copy must be keys of the range asked for, ascending: a source
/// that ignores where the page should start would otherwise be copied forever.
fn check_page<'a>(
    start: &[u8],
    end: &[u8],
    keys: impl Iterator<Item = &'a [u8]>,
) -> anyhow::Result<()> {
    let mut previous: Option<&[u8]> = None;
    for key in keys {
        let in_range = key >= start && (end == [0] || key < end);
        if !in_range || previous.is_some_and(|p| p >= key) {
            bail!(
                "the source answered a range from {:?} with key {:?} out of range or order",
                String::from_utf8_lossy(start),
                String::from_utf8_lossy(key)
            );
        }
        previous = Some(key);
    }
    Ok(())
}

/// A watched revision must be newer than the last one the mirror wrote.
fn check_revision(applied: i64, revision: i64) -> anyhow::Result<()> {
    if revision <= applied {
        bail!(
            "the source sent revision {revision} again or out of order (mirrored up to {applied})"
        );
    }
    Ok(())
}

/// One source revision's writes, as one transaction at the destination.
async fn commit(dest: &Client, ops: Vec<RequestOp>) -> anyhow::Result<()> {
    let txn = TxnRequest {
        success: ops,
        ..Default::default()
    };
    dest.write(|c| {
        let txn = txn.clone();
        async move { c.kv().txn(txn).await.map(tonic::Response::into_inner) }
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_must_answer_the_range_asked_in_order() {
        let keys = |k: &[&'static str]| k.iter().map(|k| k.as_bytes()).collect::<Vec<_>>();
        let ok = |start: &str, end: &[u8], k: &[&'static str]| {
            check_page(start.as_bytes(), end, keys(k).into_iter()).is_ok()
        };
        assert!(ok("/a/", b"/a0", &["/a/1", "/a/2"]));
        assert!(ok("/a/1\0", b"/a0", &[]));
        // The whole key space ends at "\0".
        assert!(ok("\0", &[0], &["a", "z"]));
        // The same page again (the start ignored), past the end, or out of order.
        assert!(!ok("/a/2\0", b"/a0", &["/a/1", "/a/2"]));
        assert!(!ok("/a/", b"/a0", &["/a/1", "/b"]));
        assert!(!ok("/a/", b"/a0", &["/a/2", "/a/1"]));
        assert!(!ok("/a/", b"/a0", &["/a/1", "/a/1"]));
    }

    #[test]
    fn a_revision_is_mirrored_once_in_order() {
        assert!(check_revision(10, 11).is_ok());
        assert!(check_revision(10, 10).is_err());
        assert!(check_revision(10, 9).is_err());
    }

    #[test]
    fn renaming_is_go_strings_replace_once() {
        let r = |from: &str, to: &str, key: &str| {
            let rename = Rename {
                from: from.into(),
                to: to.into(),
            };
            String::from_utf8(rename.apply(key.as_bytes()).to_vec()).unwrap()
        };
        assert_eq!(r("/a/", "/b/", "/a/x"), "/b/x");
        assert_eq!(r("/a/", "", "/a/x"), "x");
        assert_eq!(r("", "/m/", "k"), "/m/k");
        assert_eq!(r("", "", "k"), "k");
        // The first occurrence anywhere, as strings.Replace does.
        assert_eq!(r("a", "b", "xaya"), "xbya");
        assert_eq!(r("zz", "b", "xaya"), "xaya");
    }
}
