//! `--quota-backend-bytes` beside a real etcd: fill a store past a small quota, see the
//! NOSPACE alarm and etcd's errors (writes refused on every member, reads and deletes
//! working), then compact, defragment and disarm, and write again — nothing acknowledged lost.
//! The same session runs with raftkvctl in etcdctl's place (its `alarm` and `defrag`).

use std::process::Output;

use crate::etcdctl::transcript;
use crate::fixture::{
    Cluster, Options, Server, assert_no_differences, ctl_command, etcdctl, etcdctl_ok,
    run_with_stdin,
};

/// The real etcdctl, or raftkvctl when `raftkvctl` is set.
fn ctl(raftkvctl: bool, endpoints: &str, args: &[&str]) -> Output {
    let mut cmd = ctl_command(raftkvctl);
    cmd.arg(format!("--endpoints={endpoints}")).args(args);
    run_with_stdin(cmd, None)
}

/// Small enough to fill with a few puts of 20 kB (etcd measures its bbolt file, raftkv the
/// bytes of its version records; neither starts at 0).
const QUOTA: &str = "200000";

/// Lines listing NOSPACE alarms (alarm list / disarm, status errors), summed up: which
/// members raised one, and their order (a Go map's), are not deterministic in etcd (see
/// `quota_session`). Not even member 0's, which refused the put: in one CI run (2026-12-01)
/// etcd's other members raised theirs as they applied the last put, and member 0 then
/// refused on the alarm it saw without raising its own.
fn alarms_named(text: &str) -> String {
    let nospace = text.matches("alarm:NOSPACE").count();
    format!(
        "NOSPACE alarms: {}, other alarms: {}",
        nospace > 0,
        text.matches("alarm:").count() - nospace
    )
}

/// The session's transcript, and whether every acknowledged put was readable and deleted.
///
/// etcd checks the quota twice: at the gRPC edge (refused before proposing) and again
/// when each member applies the write (`quotaApplierV3`: the write is applied, the client
/// still gets "database space exceeded", and every member over its quota raises its own
/// alarm). Which check fires first depends on when bbolt commits, so with etcd a refused
/// put is sometimes stored and the alarms' members vary. raftkv checks at the edge only:
/// a refused put is never applied.
async fn quota_session(server: Server, raftkvctl: bool) -> (Vec<String>, bool) {
    let opts = Options {
        extra_args: vec!["--quota-backend-bytes".into(), QUOTA.into()],
        ..Options::default()
    };
    let cluster = Cluster::start(server, 3, opts).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(cluster.member_id(i).await);
    }
    let eps: Vec<String> = cluster.members.iter().map(|m| m.endpoint()).collect();
    let all = cluster.endpoints();
    let masked = |text: String| -> String {
        let mut text = text;
        for (i, id) in ids.iter().enumerate() {
            text = text
                .replace(&id.to_string(), &format!("<id{i}>"))
                .replace(&format!("{id:x}"), &format!("<id{i}>"));
        }
        for (i, ep) in eps.iter().enumerate() {
            text = text.replace(ep, &format!("<ep{i}>"));
        }
        text
    };
    let mut t = Vec::new();
    let run = |t: &mut Vec<String>, endpoints: &str, args: &[&str]| -> String {
        let out = ctl(raftkvctl, endpoints, args);
        t.push(masked(transcript(
            &format!("etcdctl {}", args.join(" ")),
            &out,
        )));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    // Fill through member 0 until the quota refuses a put.
    let value = "x".repeat(20_000);
    let mut acknowledged = 0;
    let mut refusal = None;
    for i in 0..100 {
        let out = ctl(raftkvctl, &eps[0], &["put", &format!("big{i:03}"), &value]);
        if out.status.success() {
            acknowledged += 1;
        } else {
            refusal = Some(masked(transcript("etcdctl put big<n> <20 kB>", &out)));
            break;
        }
    }
    t.push(format!(
        "some puts taken: {}\n{}",
        acknowledged > 0,
        refusal.unwrap_or_else(|| "no refusal".into())
    ));
    let keys = etcdctl_ok(&all, &["get", "big", "--prefix", "--keys-only"]);
    let readable = keys.lines().filter(|l| !l.is_empty()).count();
    let mut exact = readable == acknowledged;

    let list = run(&mut t, &all, &["alarm", "list"]);
    t.pop();
    // Which members' alarms varies (see above); each line's shape does not.
    let mut shapes: Vec<String> = masked(list.clone())
        .lines()
        .map(|l| {
            let mut l = l.to_string();
            for i in 0..3 {
                l = l.replace(&format!("<id{i}>"), "<id>");
            }
            l
        })
        .collect();
    shapes.dedup();
    t.push(format!(
        "alarm list: {}, lines like {shapes:?}",
        alarms_named(&masked(list))
    ));
    // The other formats, each brought to the simple one's words to be counted.
    let out = ctl(raftkvctl, &all, &["alarm", "list", "-w", "json"]);
    let text = String::from_utf8_lossy(&out.stdout)
        .replace("\"alarm\":1", "alarm:NOSPACE")
        .replace("\"alarm\":", "alarm:");
    t.push(format!("alarm list -w json: {}", alarms_named(&text)));
    let out = ctl(raftkvctl, &all, &["alarm", "list", "-w", "protobuf"]);
    let decoded = <raftkv_proto::etcdserverpb::AlarmResponse as prost::Message>::decode(
        out.stdout.as_slice(),
    )
    .map(|r| {
        r.alarms
            .iter()
            .map(|a| format!("alarm:{} ", a.alarm().as_str_name()))
            .collect::<String>()
    });
    t.push(format!(
        "alarm list -w protobuf: {}",
        decoded.map_or_else(|e| e.to_string(), |text| alarms_named(&text))
    ));
    run(&mut t, &all, &["alarm", "list", "-w", "table"]);
    run(&mut t, &eps[0], &["put", "small", "v"]);
    // The alarm went through the log: another member refuses too. A put as large as the
    // refused one is over the quota there as well (same data), so that member raises its
    // own alarm, in etcd and raftkv alike; a small one may not be (etcd measures whole
    // bbolt pages, raftkv records), so it is not compared.
    let out = ctl(raftkvctl, &eps[1], &["put", "big-again", &value]);
    t.push(masked(transcript("etcdctl put big-again <20 kB>", &out)));
    run(&mut t, &eps[1], &["lease", "grant", "100"]);
    run(&mut t, &eps[1], &["get", "big000", "--keys-only"]);
    let status = etcdctl_ok(&eps[0], &["endpoint", "status", "-w", "json"]);
    let errors = status
        .find("\"errors\":")
        .map(|at| status[at..].split(']').next().unwrap_or("").to_string() + "]")
        .unwrap_or_else(|| "no errors".into());
    t.push(format!(
        "endpoint status errors: {}",
        alarms_named(&masked(errors))
    ));
    let deleted = etcdctl_ok(&eps[1], &["del", "big", "--prefix"]);
    exact &= deleted.trim() == acknowledged.to_string();
    let header = etcdctl_ok(&all, &["get", "small", "-w", "json"]);
    let revision = header
        .split("\"revision\":")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .unwrap_or("0")
        .to_string();
    let out = etcdctl(&all, &["compaction", "--physical", &revision], None);
    t.push(format!(
        "compaction at the current revision: exit {:?}",
        out.status.code()
    ));
    run(&mut t, &all, &["defrag"]);
    // Every member's URL, in member-list order (by id, which differs between runs).
    let out = run(&mut t, &eps[1], &["defrag", "--cluster"]);
    t.pop();
    let mut lines: Vec<String> = masked(out).lines().map(str::to_string).collect();
    lines.sort();
    t.push(format!("defrag --cluster:\n{}", lines.join("\n")));
    // Still armed: compaction and defragment do not disarm.
    run(&mut t, &eps[0], &["put", "small", "v"]);
    let disarmed = run(&mut t, &all, &["alarm", "disarm"]);
    t.pop();
    t.push(format!("alarm disarm: {}", alarms_named(&masked(disarmed))));
    run(&mut t, &all, &["alarm", "list"]);
    run(&mut t, &eps[0], &["put", "small", "v"]);
    run(&mut t, &eps[2], &["get", "small"]);
    (t, exact)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_raises_nospace_and_disarm_restores_writes_as_etcd() {
    let (ours, exact) = quota_session(Server::Raftkv, false).await;
    assert!(
        exact,
        "raftkv: the puts acknowledged are exactly the ones stored"
    );
    let (with_raftkvctl, exact) = quota_session(Server::Raftkv, true).await;
    assert!(exact, "raftkv, with raftkvctl: the same");
    let (reference, _) = quota_session(Server::Etcd, false).await;
    eprintln!("{}", reference.join("\n"));
    let mut differences = Vec::new();
    for (name, run) in [
        ("raftkv", &ours),
        ("raftkv with raftkvctl", &with_raftkvctl),
    ] {
        for (o, r) in run.iter().zip(&reference) {
            if o != r {
                differences.push(format!("--- etcd\n{r}\n--- {name}\n{o}"));
            }
        }
        assert_eq!(run.len(), reference.len(), "{name}");
    }
    assert_no_differences(&differences);
    // Not vacuous: every format listed the alarm.
    for format in ["", " -w json", " -w protobuf"] {
        let line = format!("alarm list{format}: NOSPACE alarms: ");
        assert!(
            reference
                .iter()
                .any(|l| l.starts_with(&line) && !l.starts_with(&format!("{line}0"))),
            "{line} {reference:#?}"
        );
    }
}
