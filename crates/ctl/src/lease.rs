//! `lease grant | revoke | timetolive | list | keep-alive`: etcdctl 3.4's lease commands,
//! their argument errors and exit codes, and their three printers (simple, json, fields).

use std::time::Duration;

use anyhow::anyhow;
use clap::Subcommand;
use raftkv_client::proto::{
    LeaseGrantResponse, LeaseKeepAliveResponse, LeaseLeasesResponse, LeaseRevokeResponse,
    LeaseTimeToLiveResponse, ResponseHeader,
};
use raftkv_client::{Client, Error};

use crate::print::{fields, json};
use crate::{EXIT_BAD_CONNECTION, Exit, bad_args, bad_feature};

#[derive(Subcommand)]
pub enum LeaseCommand {
    /// Creates leases.
    Grant {
        /// The TTL in seconds.
        args: Vec<String>,
    },
    /// Revokes leases.
    Revoke {
        /// The lease ID (hexadecimal).
        args: Vec<String>,
    },
    /// Get lease information.
    Timetolive {
        /// The lease ID (hexadecimal).
        args: Vec<String>,
        /// Get keys attached to this lease.
        #[arg(long)]
        keys: bool,
    },
    /// List all active leases.
    List {
        /// Ignored, as etcdctl ignores them.
        #[arg(hide = true)]
        args: Vec<String>,
    },
    /// Keeps leases alive (renew).
    KeepAlive {
        /// The lease ID (hexadecimal).
        args: Vec<String>,
        /// Resets the keep-alive time to its original value and exits immediately.
        #[arg(long)]
        once: bool,
    },
}

/// `s` parsed as Go's `strconv.ParseInt(s, base, 64)`; the error as Go words it.
fn parse_int(s: &str, base: u32) -> Result<i64, String> {
    use std::num::IntErrorKind;
    i64::from_str_radix(s, base).map_err(|e| {
        let why = match e.kind() {
            IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => "value out of range",
            _ => "invalid syntax",
        };
        format!(
            "strconv.ParseInt: parsing {}: {why}",
            crate::print::go_quote_bytes(s.as_bytes())
        )
    })
}

/// A lease id as etcdctl parses it: hexadecimal int64 (a sign allowed).
pub fn parse_hex(s: &str) -> Result<i64, String> {
    parse_int(s, 16)
}

/// Go's `%016x` of an int64: zero-padded to 16 characters, a negative one with its sign.
pub fn hex_id(id: i64) -> String {
    if id < 0 {
        format!("-{:015x}", id.unsigned_abs())
    } else {
        format!("{id:016x}")
    }
}

/// The lease id argument of revoke, timetolive and keep-alive.
fn lease_arg(args: &[String], needs: &str) -> anyhow::Result<i64> {
    if args.len() != 1 {
        return Err(bad_args(anyhow!("{needs}")));
    }
    parse_hex(&args[0])
        .map_err(|e| bad_args(anyhow!("bad lease ID arg ({e}), expecting ID in Hex")))
}

fn bad_connection(e: Error) -> anyhow::Error {
    Exit(EXIT_BAD_CONNECTION, e.to_string()).into()
}

/// Runs one lease command; `cli`'s client is made once the arguments are checked, as
/// etcdctl makes it.
pub async fn run(
    cli: &crate::Cli,
    dial_timeout: Duration,
    format: &str,
    command: LeaseCommand,
) -> anyhow::Result<()> {
    let printer = Printer::new(format).map_err(bad_feature)?;
    match command {
        LeaseCommand::Grant { args } => {
            if args.len() != 1 {
                return Err(bad_args(anyhow!("lease grant command needs TTL argument")));
            }
            let ttl = parse_int(&args[0], 10).map_err(|e| bad_args(anyhow!("bad TTL ({e})")))?;
            let resp = cli
                .client()
                .await?
                .lease_grant(ttl, 0)
                .await
                .map_err(|e| anyhow!("failed to grant lease ({e})"))?;
            print!("{}", printer.grant(&resp));
        }
        LeaseCommand::Revoke { args } => {
            let id = lease_arg(&args, "lease revoke command needs 1 argument")?;
            let resp = cli
                .client()
                .await?
                .lease_revoke(id)
                .await
                .map_err(|e| anyhow!("failed to revoke lease ({e})"))?;
            print!("{}", printer.revoke(id, &resp));
        }
        LeaseCommand::Timetolive { args, keys } => {
            let id = lease_arg(&args, "lease timetolive command needs lease ID as argument")?;
            let resp = cli
                .client()
                .await?
                .lease_time_to_live(id, keys)
                .await
                .map_err(bad_connection)?;
            print!("{}", printer.time_to_live(&resp, keys));
        }
        // etcdctl 3.4 ignores arguments to `lease list`.
        LeaseCommand::List { .. } => {
            let client = cli.client().await?;
            let resp = client.lease_leases().await.map_err(bad_connection)?;
            print!("{}", printer.leases(&resp));
        }
        LeaseCommand::KeepAlive { args, once } => {
            let id = lease_arg(&args, "lease keep-alive command needs lease ID as argument")?;
            let client = cli.client().await?.require_leader(true);
            if once {
                let resp = client
                    .lease_keep_alive_once(id)
                    .await
                    .map_err(bad_connection)?;
                print!("{}", printer.keep_alive(&resp));
            } else {
                keep_alive(&client, id, &printer, dial_timeout).await?;
                if printer.format == "simple" {
                    println!("lease {} expired or revoked.", hex_id(id));
                }
            }
        }
    }
    Ok(())
}

/// clientv3's `KeepAlive` as etcdctl reads it: a renewal at once, then a third of the TTL
/// after each answer; each answer printed. Over when an answer says TTL 0, or when no answer
/// came in time: within the dial timeout and a second for the first (clientv3's
/// `firstKeepAliveTimeout`), within the TTL of the last answer after that. A broken stream is
/// opened again after 500 ms, as clientv3 does.
async fn keep_alive(
    client: &Client,
    id: i64,
    printer: &Printer,
    dial_timeout: Duration,
) -> anyhow::Result<()> {
    use std::io::Write;
    use tokio::time::{Instant, sleep, timeout_at};
    let mut deadline = Instant::now() + dial_timeout + Duration::from_secs(1);
    while Instant::now() < deadline {
        let Ok(Ok(mut stream)) = timeout_at(deadline, client.lease_keep_alive(id)).await else {
            sleep(Duration::from_millis(500)).await;
            continue;
        };
        loop {
            let resp = match timeout_at(deadline, stream.next()).await {
                Err(_) => return Ok(()),
                Ok(Some(Ok(resp))) => resp,
                Ok(Some(Err(_)) | None) => break,
            };
            if resp.ttl <= 0 {
                return Ok(());
            }
            print!("{}", printer.keep_alive(&resp));
            std::io::stdout().flush()?;
            let ttl = Duration::from_secs(resp.ttl as u64);
            deadline = Instant::now() + ttl;
            sleep(ttl / 3).await;
            if stream.keep_alive(id).is_err() {
                break;
            }
        }
        sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// The lease commands' printers.
pub struct Printer {
    format: String,
}

/// A header embedded in a clientv3 struct, as encoding/json flattens it: its non-zero fields
/// and a comma, or nothing.
fn embedded_header(h: &Option<ResponseHeader>) -> String {
    let object = json::header_object(&h.unwrap_or_default());
    let inner = &object[1..object.len() - 1];
    if inner.is_empty() {
        String::new()
    } else {
        format!("{inner},")
    }
}

impl Printer {
    /// simple, json and fields; etcdctl's refusal of the others.
    pub fn new(format: &str) -> anyhow::Result<Self> {
        match format {
            "simple" | "json" | "fields" => Ok(Self {
                format: format.into(),
            }),
            "table" => anyhow::bail!("table not supported as output format"),
            "protobuf" => anyhow::bail!("protobuf output is not supported by raftkvctl"),
            other => anyhow::bail!("unknown output format {other:?}"),
        }
    }

    /// `lease grant`.
    pub fn grant(&self, r: &LeaseGrantResponse) -> String {
        match self.format.as_str() {
            "json" => format!(
                "{{{}\"ID\":{},\"TTL\":{},\"Error\":{}}}\n",
                embedded_header(&r.header),
                r.id,
                r.ttl,
                crate::print::go_quote(&r.error, crate::print::Quoting::Json)
            ),
            "fields" => format!(
                "{}\"ID\" : {}\n\"TTL\" : {}\n",
                fields::header(&r.header),
                r.id,
                r.ttl
            ),
            _ => format!("lease {} granted with TTL({}s)\n", hex_id(r.id), r.ttl),
        }
    }

    /// `lease revoke`.
    pub fn revoke(&self, id: i64, r: &LeaseRevokeResponse) -> String {
        match self.format.as_str() {
            "json" => format!("{{{}}}\n", json::header_field(&r.header)),
            "fields" => fields::header(&r.header),
            _ => format!("lease {} revoked\n", hex_id(id)),
        }
    }

    /// `lease keep-alive`, each answer.
    pub fn keep_alive(&self, r: &LeaseKeepAliveResponse) -> String {
        match self.format.as_str() {
            "json" => format!(
                "{{{}\"ID\":{},\"TTL\":{}}}\n",
                embedded_header(&r.header),
                r.id,
                r.ttl
            ),
            "fields" => format!(
                "{}\"ID\" : {}\n\"TTL\" : {}\n",
                fields::header(&r.header),
                r.id,
                r.ttl
            ),
            _ => format!("lease {} keepalived with TTL({})\n", hex_id(r.id), r.ttl),
        }
    }

    /// `lease timetolive` (`keys`: `--keys` was given).
    pub fn time_to_live(&self, r: &LeaseTimeToLiveResponse, keys: bool) -> String {
        match self.format.as_str() {
            "json" => {
                let ks = if r.keys.is_empty() {
                    "null".to_string()
                } else {
                    let each: Vec<String> = r
                        .keys
                        .iter()
                        .map(|k| format!("\"{}\"", json::base64(k)))
                        .collect();
                    format!("[{}]", each.join(","))
                };
                format!(
                    "{{{}\"id\":{},\"ttl\":{},\"granted-ttl\":{},\"keys\":{ks}}}\n",
                    embedded_header(&r.header),
                    r.id,
                    r.ttl,
                    r.granted_ttl
                )
            }
            "fields" => {
                let mut out = format!(
                    "{}\"ID\" : {}\n\"TTL\" : {}\n\"GrantedTTL\" : {}\n",
                    fields::header(&r.header),
                    r.id,
                    r.ttl,
                    r.granted_ttl
                );
                for k in &r.keys {
                    out.push_str(&format!("\"Key\" : {}\n", fields::quote(k)));
                }
                out
            }
            _ => {
                if r.granted_ttl == 0 && r.ttl == -1 {
                    return format!("lease {} already expired\n", hex_id(r.id));
                }
                let mut out = format!(
                    "lease {} granted with TTL({}s), remaining({}s)",
                    hex_id(r.id),
                    r.granted_ttl,
                    r.ttl
                );
                if keys {
                    let ks: Vec<String> = r
                        .keys
                        .iter()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .collect();
                    out.push_str(&format!(", attached keys([{}])", ks.join(" ")));
                }
                out.push('\n');
                out
            }
        }
    }

    /// `lease list`.
    pub fn leases(&self, r: &LeaseLeasesResponse) -> String {
        match self.format.as_str() {
            "json" => {
                let each: Vec<String> = r
                    .leases
                    .iter()
                    .map(|l| format!("{{\"id\":{}}}", l.id))
                    .collect();
                format!(
                    "{{{}\"leases\":[{}]}}\n",
                    embedded_header(&r.header),
                    each.join(",")
                )
            }
            "fields" => {
                let mut out = fields::header(&r.header);
                for l in &r.leases {
                    out.push_str(&format!("\"ID\" : {}\n", l.id));
                }
                out
            }
            _ => {
                let mut out = format!("found {} leases\n", r.leases.len());
                for l in &r.leases {
                    out.push_str(&hex_id(l.id));
                    out.push('\n');
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftkv_client::proto::LeaseStatus;

    fn header() -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: 7,
            member_id: 8,
            revision: 4,
            raft_term: 2,
        })
    }

    #[test]
    fn ids_and_numbers_parse_as_go_parses_them() {
        assert_eq!(parse_hex("1234"), Ok(0x1234));
        assert_eq!(parse_hex("-5"), Ok(-5));
        assert_eq!(
            parse_hex("zz"),
            Err("strconv.ParseInt: parsing \"zz\": invalid syntax".into())
        );
        assert_eq!(
            parse_hex("fffffffffffffffb"),
            Err("strconv.ParseInt: parsing \"fffffffffffffffb\": value out of range".into())
        );
        assert_eq!(hex_id(0x1234), "0000000000001234");
        assert_eq!(hex_id(-5), "-000000000000005");
    }

    #[test]
    fn printers_print_what_etcdctl_prints() {
        let simple = Printer::new("simple").unwrap();
        let json = Printer::new("json").unwrap();
        let fields = Printer::new("fields").unwrap();
        let grant = LeaseGrantResponse {
            header: header(),
            id: 4660,
            ttl: 60,
            error: String::new(),
        };
        assert_eq!(
            simple.grant(&grant),
            "lease 0000000000001234 granted with TTL(60s)\n"
        );
        assert_eq!(
            json.grant(&grant),
            "{\"cluster_id\":7,\"member_id\":8,\"revision\":4,\"raft_term\":2,\"ID\":4660,\"TTL\":60,\"Error\":\"\"}\n"
        );
        assert_eq!(
            fields.grant(&grant),
            "\"ClusterID\" : 7\n\"MemberID\" : 8\n\"Revision\" : 4\n\"RaftTerm\" : 2\n\"ID\" : 4660\n\"TTL\" : 60\n"
        );
        let ttl = LeaseTimeToLiveResponse {
            header: header(),
            id: 4660,
            ttl: 56,
            granted_ttl: 60,
            keys: vec![b"foo".to_vec().into(), b"zzz".to_vec().into()],
        };
        assert_eq!(
            simple.time_to_live(&ttl, true),
            "lease 0000000000001234 granted with TTL(60s), remaining(56s), attached keys([foo zzz])\n"
        );
        assert_eq!(
            json.time_to_live(&ttl, true),
            "{\"cluster_id\":7,\"member_id\":8,\"revision\":4,\"raft_term\":2,\"id\":4660,\"ttl\":56,\"granted-ttl\":60,\"keys\":[\"Zm9v\",\"enp6\"]}\n"
        );
        let gone = LeaseTimeToLiveResponse {
            header: header(),
            id: 0x99999,
            ttl: -1,
            ..Default::default()
        };
        assert_eq!(
            simple.time_to_live(&gone, true),
            "lease 0000000000099999 already expired\n"
        );
        assert!(
            json.time_to_live(&gone, false)
                .ends_with("\"ttl\":-1,\"granted-ttl\":0,\"keys\":null}\n")
        );
        let list = LeaseLeasesResponse {
            header: header(),
            leases: vec![LeaseStatus { id: 1 }, LeaseStatus { id: 2 }],
        };
        assert_eq!(
            simple.leases(&list),
            "found 2 leases\n0000000000000001\n0000000000000002\n"
        );
        assert!(
            json.leases(&list)
                .ends_with("\"leases\":[{\"id\":1},{\"id\":2}]}\n")
        );
        assert_eq!(
            json.revoke(1, &LeaseRevokeResponse { header: header() }),
            "{\"header\":{\"cluster_id\":7,\"member_id\":8,\"revision\":4,\"raft_term\":2}}\n"
        );
    }
}
