//! What raftkv does with each etcd member flag it does not implement. Every etcd flag is
//! accepted (see [`crate::flags`]); at its default value a flag changes nothing. Set to
//! anything else, a flag here is either
//!
//! - **refused** — the member does not start, and the message names the flag: the flags
//!   that would make etcd something other than a plain member (discovery, v2 proxy, forced
//!   new cluster), since quietly running a plain member instead would surprise; or
//! - **ignored** — one log line at start names the flag and says why raftkv has no use for it.
//!
//! Flags raftkv implements are checked where they are used ([`crate::config`]).

use anyhow::bail;

use crate::config::Notice;
use crate::flags::MemberFlags;
use crate::logging;

/// A flag raftkv refuses or ignores when `applies` says it was set to something that matters.
struct Rule {
    flag: &'static str,
    applies: fn(&MemberFlags) -> bool,
    why: &'static str,
}

const NO_DISCOVERY: &str =
    "raftkv has no discovery; list the initial members with --initial-cluster";
const NO_V2: &str = "raftkv serves only the v3 API";
const NO_PROXY: &str = "raftkv has no v2 proxy mode";

const REFUSED: &[Rule] = &[
    Rule {
        flag: "discovery",
        applies: |f| !f.clustering.discovery.is_empty(),
        why: NO_DISCOVERY,
    },
    Rule {
        flag: "discovery-srv",
        applies: |f| !f.clustering.discovery_srv.is_empty(),
        why: NO_DISCOVERY,
    },
    Rule {
        flag: "proxy",
        applies: |f| f.proxy.proxy != "off",
        why: "raftkv has no v2 proxy mode; it always runs a member",
    },
    Rule {
        flag: "force-new-cluster",
        applies: |f| f.unsafe_flags.force_new_cluster,
        why: "raftkv cannot rewrite a member's membership in place; restore a snapshot into a new one-member cluster instead (raftkvctl snapshot restore)",
    },
];

const IGNORED: &[Rule] = &[
    Rule {
        flag: "initial-election-tick-advance",
        applies: |f| !f.member.initial_election_tick_advance,
        why: "raftkv's first election waits one randomized election timeout either way",
    },
    Rule {
        flag: "max-snapshots",
        applies: |f| f.member.max_snapshots != 5,
        why: "raftkv keeps only its newest snapshot",
    },
    Rule {
        flag: "max-wals",
        applies: |f| f.member.max_wals != 5,
        why: "raftkv purges its WAL once entries are in a snapshot",
    },
    Rule {
        flag: "backend-batch-interval",
        applies: |f| !f.member.backend_batch_interval.is_zero(),
        why: "raftkv's store commits each applied batch itself",
    },
    Rule {
        flag: "backend-batch-limit",
        applies: |f| f.member.backend_batch_limit != 0,
        why: "raftkv's store commits each applied batch itself",
    },
    Rule {
        flag: "grpc-keepalive-min-time",
        applies: |f| f.member.grpc_keepalive_min_time.as_secs_f64() != 5.0,
        why: "raftkv does not enforce a minimum interval between client pings",
    },
    Rule {
        flag: "enable-v2",
        applies: |f| f.clustering.enable_v2,
        why: NO_V2,
    },
    Rule {
        flag: "discovery-fallback",
        applies: |f| f.clustering.discovery_fallback != "proxy",
        why: NO_DISCOVERY,
    },
    Rule {
        flag: "discovery-proxy",
        applies: |f| !f.clustering.discovery_proxy.is_empty(),
        why: NO_DISCOVERY,
    },
    Rule {
        flag: "discovery-srv-name",
        applies: |f| !f.clustering.discovery_srv_name.is_empty(),
        why: NO_DISCOVERY,
    },
    Rule {
        flag: "enable-pprof",
        applies: |f| f.monitoring.enable_pprof,
        why: "raftkv has no Go runtime to profile (/debug/pprof); use perf",
    },
    Rule {
        flag: "logger",
        applies: |f| f.logging.logger != "capnslog",
        why: "raftkv writes its own text or JSON lines (see --log-format)",
    },
    Rule {
        flag: "log-output",
        applies: |f| logging::Output::ignored(&f.logging),
        why: "deprecated; raftkv follows only stderr and stdout there (use --log-outputs); logging to stderr",
    },
    Rule {
        flag: "log-package-levels",
        applies: |f| !f.logging.log_package_levels.is_empty(),
        why: "raftkv filters log lines by module with RUST_LOG (e.g. RUST_LOG=info,raftkv_raft=debug)",
    },
    Rule {
        flag: "proxy-failure-wait",
        applies: |f| f.proxy.proxy_failure_wait != 5000,
        why: NO_PROXY,
    },
    Rule {
        flag: "proxy-refresh-interval",
        applies: |f| f.proxy.proxy_refresh_interval != 30000,
        why: NO_PROXY,
    },
    Rule {
        flag: "proxy-dial-timeout",
        applies: |f| f.proxy.proxy_dial_timeout != 1000,
        why: NO_PROXY,
    },
    Rule {
        flag: "proxy-write-timeout",
        applies: |f| f.proxy.proxy_write_timeout != 5000,
        why: NO_PROXY,
    },
    Rule {
        flag: "proxy-read-timeout",
        applies: |f| f.proxy.proxy_read_timeout != 0,
        why: NO_PROXY,
    },
    Rule {
        flag: "experimental-enable-v2v3",
        applies: |f| !f.experimental.experimental_enable_v2v3.is_empty(),
        why: NO_V2,
    },
    Rule {
        flag: "experimental-backend-bbolt-freelist-type",
        applies: |f| {
            !matches!(
                f.experimental
                    .experimental_backend_bbolt_freelist_type
                    .as_str(),
                "" | "array"
            )
        },
        why: "raftkv's store is not bbolt",
    },
    Rule {
        flag: "experimental-compaction-batch-limit",
        applies: |f| !matches!(f.experimental.experimental_compaction_batch_limit, 0 | 1000),
        why: "raftkv's compaction is not batched this way",
    },
    Rule {
        flag: "experimental-warning-apply-duration",
        applies: |f| {
            f.experimental
                .experimental_warning_apply_duration
                .as_millis()
                != 100
        },
        why: "raftkv does not time applies",
    },
    Rule {
        flag: "unsafe-no-fsync",
        applies: |f| f.unsafe_flags.unsafe_no_fsync,
        why: "raftkv always syncs its WAL",
    },
];

/// Refuses the flags raftkv cannot honour (every one in one message), or returns one log
/// line per flag it ignores.
pub fn check(flags: &MemberFlags) -> anyhow::Result<Vec<Notice>> {
    let refused: Vec<String> = REFUSED
        .iter()
        .filter(|r| (r.applies)(flags))
        .map(|r| format!("--{}: {}", r.flag, r.why))
        .collect();
    match refused.len() {
        0 => {}
        1 => bail!("unsupported flag {}", refused[0]),
        _ => bail!("unsupported flags:\n  {}", refused.join("\n  ")),
    }
    let mut notices: Vec<Notice> = IGNORED
        .iter()
        .filter(|r| (r.applies)(flags))
        .map(|r| Notice::warn(format!("ignoring --{}: {}", r.flag, r.why)))
        .collect();
    for name in flags.ignored.given() {
        notices.push(Notice::warn(format!(
            "flag \"-{name}\" is no longer supported - ignoring."
        )));
    }
    if flags.logging.debug {
        notices.push(Notice::warn(
            "--debug is deprecated (use --log-level=debug); logging at debug level".into(),
        ));
    }
    Ok(notices)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::FromArgMatches;

    fn flags(args: &[&str]) -> MemberFlags {
        let matches = MemberFlags::command()
            .try_get_matches_from(std::iter::once("raftkv").chain(args.iter().copied()))
            .unwrap();
        MemberFlags::from_arg_matches(&matches).unwrap()
    }

    fn lines(args: &[&str]) -> Vec<String> {
        check(&flags(args))
            .unwrap()
            .into_iter()
            .map(|n| n.message)
            .collect()
    }

    #[test]
    fn defaults_pass_silently() {
        assert!(lines(&[]).is_empty());
        // Given explicitly at etcd's defaults, as etcd's e2e tests and scripts do.
        assert!(
            lines(&[
                "--auth-token=simple",
                "--bcrypt-cost=10",
                "--quota-backend-bytes=0",
                "--cert-file=",
                "--client-cert-auth=false",
                "--enable-v2=false",
                "--proxy=off",
                "--experimental-backend-bbolt-freelist-type=",
                "--log-outputs=stderr",
                "--grpc-keepalive-min-time=5000ms",
            ])
            .is_empty()
        );
    }

    #[test]
    fn ignored_flags_get_one_line_each() {
        assert_eq!(
            lines(&[
                "--enable-v2",
                "--auto-compaction-retention=1h",
                "--auto-compaction-mode=revision",
                "--snapshot",
            ]),
            [
                "ignoring --enable-v2: raftkv serves only the v3 API",
                "flag \"-snapshot\" is no longer supported - ignoring.",
            ]
        );
    }

    #[test]
    fn discovery_and_proxies_are_refused_by_name() {
        assert_eq!(
            check(&flags(&["--discovery=https://discovery.etcd.io/x"]))
                .unwrap_err()
                .to_string(),
            "unsupported flag --discovery: raftkv has no discovery; list the initial members with --initial-cluster"
        );
        let both = check(&flags(&["--proxy=on", "--force-new-cluster"])).unwrap_err();
        assert_eq!(
            both.to_string(),
            "unsupported flags:\n  --proxy: raftkv has no v2 proxy mode; it always runs a member\n  --force-new-cluster: raftkv cannot rewrite a member's membership in place; restore a snapshot into a new one-member cluster instead (raftkvctl snapshot restore)"
        );
        // Tokens' settings are honoured (--auth-token is checked as the member starts:
        // crate::token_provider).
        let auth = [
            "--auth-token-ttl=5",
            "--bcrypt-cost=4",
            "--auth-token=jwt,pub-key=a,sign-method=RS256",
        ];
        assert!(lines(&auth).is_empty());
        assert!(check(&flags(&auth)).is_ok());
        // TLS on both ports is implemented (crate::tls): none of its flags is refused.
        assert!(
            lines(&[
                "--cert-file=c.crt",
                "--key-file=c.key",
                "--trusted-ca-file=ca.crt",
                "--client-cert-auth",
                "--auto-tls",
                "--client-crl-file=c.crl",
                "--client-cert-allowed-hostname=h",
                "--peer-cert-file=p.crt",
                "--peer-key-file=p.key",
                "--peer-trusted-ca-file=ca.crt",
                "--peer-client-cert-auth",
                "--peer-auto-tls",
                "--peer-crl-file=p.crl",
                "--peer-cert-allowed-cn=m",
                "--peer-cert-allowed-hostname=h",
                "--cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "--experimental-peer-skip-client-san-verification",
            ])
            .is_empty()
        );
    }
}
