//! `member list / add / remove / promote / update`, `endpoint status / health / hashkv`,
//! `move-leader`, printed as etcdctl prints them.

use std::time::{Duration, Instant};

use anyhow::bail;
use raftkv_proto::etcdserverpb::{
    HashKvResponse, Member, MemberAddRequest, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberRemoveRequest, MemberUpdateRequest, RangeRequest, StatusResponse,
};

use crate::print::json;
use crate::print::table::{human_bytes, table};
use raftkv_client::{Client, Connection};

/// Cluster/MemberList through `client`.
pub async fn member_list(client: &Connection) -> anyhow::Result<MemberListResponse> {
    let mut cluster = client.cluster();
    Ok(cluster
        .member_list(MemberListRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner())
}

/// `member list` output.
pub fn format_members(resp: &MemberListResponse, format: &str) -> anyhow::Result<String> {
    let row = |m: &Member| {
        vec![
            format!("{:x}", m.id),
            if m.name.is_empty() {
                "unstarted".into()
            } else {
                "started".into()
            },
            m.name.clone(),
            m.peer_ur_ls.join(","),
            m.client_ur_ls.join(","),
            m.is_learner.to_string(),
        ]
    };
    Ok(match format {
        "simple" => resp
            .members
            .iter()
            .map(|m| row(m).join(", ") + "\n")
            .collect(),
        "table" => table(
            &[
                "ID",
                "STATUS",
                "NAME",
                "PEER ADDRS",
                "CLIENT ADDRS",
                "IS LEARNER",
            ],
            &resp.members.iter().map(row).collect::<Vec<_>>(),
        ),
        "json" => {
            let members: Vec<String> = resp.members.iter().map(json::member).collect();
            let mut fields = vec![json::header_field(&resp.header)];
            if !members.is_empty() {
                fields.push(format!("\"members\":[{}]", members.join(",")));
            }
            format!("{{{}}}\n", fields.join(","))
        }
        other => bail!("{other} not supported as output format"),
    })
}

/// The endpoints `--cluster` means: every member's client URLs, from the member list.
pub async fn cluster_endpoints(client: &Connection) -> anyhow::Result<Vec<String>> {
    let members = member_list(client).await?;
    Ok(members
        .members
        .iter()
        .flat_map(|m| m.client_ur_ls.clone())
        .collect())
}

/// Maintenance/Status of every endpoint, in order; an endpoint that fails is reported on
/// stderr and left out, as etcdctl does, and the flag says whether any failed (etcdctl then
/// exits 1 after the output, without another message).
pub async fn statuses(
    client: &Client,
    endpoints: &[String],
) -> (Vec<(String, StatusResponse)>, bool) {
    let mut out = Vec::new();
    let mut failed = false;
    for ep in endpoints {
        match client.status_of(ep).await {
            Ok(status) => out.push((ep.clone(), status)),
            Err(e) => {
                eprintln!("Failed to get the status of endpoint {ep} ({e})");
                failed = true;
            }
        }
    }
    (out, failed)
}

/// `endpoint status` output.
pub fn format_statuses(
    statuses: &[(String, StatusResponse)],
    format: &str,
) -> anyhow::Result<String> {
    let row = |(ep, s): &(String, StatusResponse)| {
        let id = s.header.map_or(0, |h| h.member_id);
        vec![
            ep.clone(),
            format!("{id:x}"),
            s.version.clone(),
            human_bytes(s.db_size.max(0) as u64),
            (s.leader == id).to_string(),
            s.is_learner.to_string(),
            s.raft_term.to_string(),
            s.raft_index.to_string(),
            s.raft_applied_index.to_string(),
            s.errors.join(", "),
        ]
    };
    Ok(match format {
        "simple" => statuses.iter().map(|s| row(s).join(", ") + "\n").collect(),
        "table" => table(
            &[
                "ENDPOINT",
                "ID",
                "VERSION",
                "DB SIZE",
                "IS LEADER",
                "IS LEARNER",
                "RAFT TERM",
                "RAFT INDEX",
                "RAFT APPLIED INDEX",
                "ERRORS",
            ],
            &statuses.iter().map(row).collect::<Vec<_>>(),
        ),
        "json" => {
            let items: Vec<String> = statuses
                .iter()
                .map(|(ep, s)| {
                    format!(
                        "{{\"Endpoint\":{},\"Status\":{}}}",
                        json::string(ep),
                        json::status(s)
                    )
                })
                .collect();
            format!("[{}]\n", items.join(","))
        }
        other => bail!("{other} not supported as output format"),
    })
}

/// One endpoint's health: a linearizable read of the key "health", as etcdctl does.
pub struct Health {
    /// The endpoint.
    pub endpoint: String,
    /// Whether the read succeeded.
    pub healthy: bool,
    /// How long it took.
    pub took: Duration,
    /// Why it failed.
    pub error: Option<String>,
}

/// Checks every endpoint.
pub async fn health(client: &Client, endpoints: &[String]) -> Vec<Health> {
    let mut out = Vec::new();
    for ep in endpoints {
        let start = Instant::now();
        let read = client
            .on(ep, |c| async move {
                let req = RangeRequest {
                    key: "health".into(),
                    ..Default::default()
                };
                c.kv().range(req).await.map(drop)
            })
            .await;
        let result = match read {
            Ok(()) => Ok(()),
            // A permission error still proves the member serves linearizable reads.
            Err(e) if e.to_string() == "etcdserver: permission denied" => Ok(()),
            Err(e) => Err(e),
        };
        out.push(Health {
            endpoint: ep.clone(),
            healthy: result.is_ok(),
            took: start.elapsed(),
            error: result.err().map(|e| e.to_string()),
        });
    }
    out
}

/// `endpoint health` output: (stdout, stderr).
pub fn format_health(results: &[Health], format: &str) -> anyhow::Result<(String, String)> {
    match format {
        "json" => {
            let items: Vec<String> = results
                .iter()
                .map(|h| {
                    let mut s = format!(
                        "{{\"endpoint\":{},\"health\":{},\"took\":{}",
                        json::string(&h.endpoint),
                        h.healthy,
                        json::string(&format!("{:?}", h.took))
                    );
                    if let Some(e) = &h.error {
                        s.push_str(&format!(",\"error\":{}", json::string(e)));
                    }
                    s + "}"
                })
                .collect();
            Ok((format!("[{}]\n", items.join(",")), String::new()))
        }
        "table" => {
            let rows: Vec<Vec<String>> = results
                .iter()
                .map(|h| {
                    vec![
                        h.endpoint.clone(),
                        h.healthy.to_string(),
                        format!("{:?}", h.took),
                        h.error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            Ok((
                table(&["ENDPOINT", "HEALTH", "TOOK", "ERROR"], &rows),
                String::new(),
            ))
        }
        "simple" | "fields" => {
            let mut err = String::new();
            for h in results {
                if h.healthy {
                    err.push_str(&format!(
                        "{} is healthy: successfully committed proposal: took = {:?}\n",
                        h.endpoint, h.took
                    ));
                } else {
                    err.push_str(&format!(
                        "{} is unhealthy: failed to commit proposal: {}\n",
                        h.endpoint,
                        h.error.as_deref().unwrap_or("unknown")
                    ));
                }
            }
            Ok((String::new(), err))
        }
        other => bail!("{other} not supported as output format"),
    }
}

fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", s.message())
}

fn cluster_id(header: &Option<raftkv_proto::etcdserverpb::ResponseHeader>) -> u64 {
    header.map_or(0, |h| h.cluster_id)
}

/// `member add NAME --peer-urls=... [--learner]`: etcdctl's output, environment lines included.
pub async fn member_add(
    client: &Connection,
    name: &str,
    peer_urls: Vec<String>,
    learner: bool,
) -> anyhow::Result<String> {
    let mut cluster = client.cluster();
    let resp = cluster
        .member_add(MemberAddRequest {
            peer_ur_ls: peer_urls.clone(),
            is_learner: learner,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let id = resp.member.as_ref().map_or(0, |m| m.id);
    let mut conf = Vec::new();
    for m in &resp.members {
        for url in &m.peer_ur_ls {
            let n = if m.id == id { name } else { m.name.as_str() };
            conf.push(format!("{n}={url}"));
        }
    }
    Ok(format!(
        "Member {id:x} added to cluster {:x}\n\nETCD_NAME=\"{name}\"\nETCD_INITIAL_CLUSTER=\"{}\"\nETCD_INITIAL_ADVERTISE_PEER_URLS=\"{}\"\nETCD_INITIAL_CLUSTER_STATE=\"existing\"\n",
        cluster_id(&resp.header),
        conf.join(","),
        peer_urls.join(",")
    ))
}

/// `member remove ID`.
pub async fn member_remove(client: &Connection, id: u64) -> anyhow::Result<String> {
    let mut cluster = client.cluster();
    let resp = cluster
        .member_remove(MemberRemoveRequest { id })
        .await
        .map_err(status_error)?
        .into_inner();
    Ok(format!(
        "Member {id:x} removed from cluster {:x}\n",
        cluster_id(&resp.header)
    ))
}

/// `member promote ID`.
pub async fn member_promote(client: &Connection, id: u64) -> anyhow::Result<String> {
    let mut cluster = client.cluster();
    let resp = cluster
        .member_promote(MemberPromoteRequest { id })
        .await
        .map_err(status_error)?
        .into_inner();
    Ok(format!(
        "Member {id:x} promoted in cluster {:x}\n",
        cluster_id(&resp.header)
    ))
}

/// `member update ID --peer-urls=...`.
pub async fn member_update(
    client: &Connection,
    id: u64,
    peer_urls: Vec<String>,
) -> anyhow::Result<String> {
    let mut cluster = client.cluster();
    let resp = cluster
        .member_update(MemberUpdateRequest {
            id,
            peer_ur_ls: peer_urls,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    Ok(format!(
        "Member {id:x} updated in cluster {:x}\n",
        cluster_id(&resp.header)
    ))
}

/// Maintenance/HashKV of every endpoint at `revision`, in order; an endpoint that fails is
/// reported on stderr and left out, and the last error is returned (whatever answered after
/// it), as etcdctl's `endpoint hashkv` does.
pub async fn hash_kvs(
    client: &Client,
    endpoints: &[String],
    revision: i64,
) -> (Vec<(String, HashKvResponse)>, Option<raftkv_client::Error>) {
    let mut out = Vec::new();
    let mut last = None;
    for ep in endpoints {
        match client.hash_kv_of(ep, revision).await {
            Ok(resp) => out.push((ep.clone(), resp)),
            Err(e) => {
                eprintln!("Failed to get the hash of endpoint {ep} ({e})");
                last = Some(e);
            }
        }
    }
    (out, last)
}

/// `endpoint hashkv` output.
pub fn format_hash_kvs(
    hashes: &[(String, HashKvResponse)],
    format: &str,
) -> anyhow::Result<String> {
    Ok(match format {
        "simple" => hashes
            .iter()
            .map(|(ep, h)| format!("{ep}, {}\n", h.hash))
            .collect(),
        "table" => table(
            &["ENDPOINT", "HASH"],
            &hashes
                .iter()
                .map(|(ep, h)| vec![ep.clone(), h.hash.to_string()])
                .collect::<Vec<_>>(),
        ),
        "json" => {
            let items: Vec<String> = hashes
                .iter()
                .map(|(ep, h)| {
                    format!(
                        "{{\"Endpoint\":{},\"HashKV\":{}}}",
                        json::string(ep),
                        json::hash_kv(h)
                    )
                })
                .collect();
            format!("[{}]\n", items.join(","))
        }
        other => bail!("{other} not supported as output format"),
    })
}

/// `move-leader TARGET`: finds the leader among the endpoints and asks it to hand over.
pub async fn move_leader(client: &Client, target: u64) -> anyhow::Result<String> {
    let (from, _) = client.move_leader(target).await?;
    Ok(format!(
        "Leadership transferred from {from:x} to {target:x}\n"
    ))
}
