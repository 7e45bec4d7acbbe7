//! `alarm list`, `alarm disarm` and `defrag`, as etcdctl 3.4 runs and prints them.
//!
//! `alarm disarm` is clientv3's `AlarmDisarm` with no member and no alarm: it lists the
//! alarms, deactivates each, and prints what the deactivations answered — a response made
//! on the client, so with no header. `defrag` asks each endpoint (or with `--cluster` each
//! member's client URLs) in turn; raftkv members answer at once (sled reclaims space by
//! itself), etcd members defragment bbolt.

use anyhow::anyhow;
use clap::{Args, Subcommand};
use prost::Message;
use raftkv_proto::etcdserverpb::{AlarmRequest, AlarmResponse, AlarmType, alarm_request};

use crate::print::{fields, json};
use crate::{Cli, Exit, bad_args, bad_feature};

#[derive(Subcommand)]
pub(crate) enum AlarmCommand {
    /// Lists all alarms.
    List(NoArgs),
    /// Disarms all alarms.
    Disarm(NoArgs),
}

/// A command that takes no arguments (extra ones get etcdctl's refusal).
#[derive(Args)]
pub(crate) struct NoArgs {
    #[arg(hide = true, trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(Args)]
pub(crate) struct DefragArgs {
    /// Use all endpoints from the cluster member list.
    #[arg(long)]
    cluster: bool,
    /// Optional. If present, defragments a data directory not in use by etcd (refused:
    /// a raftkv data directory has nothing to defragment).
    #[arg(long, default_value = "")]
    data_dir: String,
    /// Arguments: ignored, as etcdctl ignores them.
    #[arg(hide = true)]
    ignored: Vec<String>,
}

pub(crate) async fn alarm(cli: &Cli, command: AlarmCommand) -> anyhow::Result<()> {
    let (name, NoArgs { args }) = match &command {
        AlarmCommand::List(a) => ("list", a),
        AlarmCommand::Disarm(a) => ("disarm", a),
    };
    if !args.is_empty() {
        return Err(bad_args(anyhow!(
            "alarm {name} command accepts no arguments"
        )));
    }
    let client = cli.client().await?;
    let resp = tokio::time::timeout(cli.command_timeout, async {
        let listed = client.alarm(AlarmRequest::default()).await?;
        if matches!(command, AlarmCommand::List(_)) {
            return Ok::<_, raftkv_client::Error>(listed);
        }
        let mut disarmed = AlarmResponse::default();
        for member in listed.alarms {
            let req = AlarmRequest {
                action: alarm_request::AlarmAction::Deactivate.into(),
                member_id: member.member_id,
                alarm: member.alarm,
            };
            disarmed.alarms.extend(client.alarm(req).await?.alarms);
        }
        Ok(disarmed)
    })
    .await
    .map_err(|_| anyhow!("context deadline exceeded"))??;
    print(&cli.write_out, &resp)
}

/// etcdctl's `display.Alarm` in each format.
fn print(format: &str, resp: &AlarmResponse) -> anyhow::Result<()> {
    use std::io::Write;
    let name = |alarm: i32| {
        AlarmType::try_from(alarm).map_or_else(|_| alarm.to_string(), |a| a.as_str_name().into())
    };
    let out = match format {
        // `%+v` of each AlarmMember: its compact text form.
        "simple" => resp
            .alarms
            .iter()
            .map(|a| {
                let mut line = String::new();
                if a.member_id != 0 {
                    line.push_str(&format!("memberID:{} ", a.member_id));
                }
                if a.alarm != 0 {
                    line.push_str(&format!("alarm:{} ", name(a.alarm)));
                }
                line + "\n"
            })
            .collect(),
        "json" => {
            let mut parts = Vec::new();
            if resp.header.is_some() {
                parts.push(json::header_field(&resp.header));
            }
            if !resp.alarms.is_empty() {
                let alarms: Vec<String> = resp
                    .alarms
                    .iter()
                    .map(|a| {
                        let mut f = Vec::new();
                        if a.member_id != 0 {
                            f.push(format!("\"memberID\":{}", a.member_id));
                        }
                        if a.alarm != 0 {
                            f.push(format!("\"alarm\":{}", a.alarm));
                        }
                        format!("{{{}}}", f.join(","))
                    })
                    .collect();
                parts.push(format!("\"alarms\":[{}]", alarms.join(",")));
            }
            format!("{{{}}}\n", parts.join(","))
        }
        "fields" => {
            let mut out = fields::header(&resp.header);
            for a in &resp.alarms {
                out.push_str(&format!(
                    "\"MemberID\" : {}\n\"AlarmType\" : {}\n\n",
                    a.member_id,
                    name(a.alarm)
                ));
            }
            out
        }
        "protobuf" => {
            std::io::stdout().write_all(&resp.encode_to_vec())?;
            return Ok(());
        }
        other => {
            return Err(bad_feature(anyhow!(
                "{other} not supported as output format"
            )));
        }
    };
    print!("{out}");
    Ok(())
}

pub(crate) async fn defrag(cli: &Cli, args: DefragArgs) -> anyhow::Result<()> {
    if !args.data_dir.is_empty() {
        anyhow::bail!(
            "Failed to defragment etcd data[{}] (raftkv's store has nothing to defragment: \
             sled reclaims space by itself)",
            args.data_dir
        );
    }
    let client = cli.client().await?;
    let endpoints = crate::endpoints_for(cli, args.cluster).await?;
    let mut failures = 0;
    for ep in &endpoints {
        match tokio::time::timeout(cli.command_timeout, client.defragment_of(ep)).await {
            Ok(Ok(_)) => println!("Finished defragmenting etcd member[{ep}]"),
            Ok(Err(e)) => {
                eprintln!("Failed to defragment etcd member[{ep}] ({e})");
                failures += 1;
            }
            Err(_) => {
                eprintln!("Failed to defragment etcd member[{ep}] (context deadline exceeded)");
                failures += 1;
            }
        }
    }
    if failures > 0 {
        // etcdctl exits with ExitError, having said everything already.
        return Err(Exit(1, String::new()).into());
    }
    Ok(())
}
