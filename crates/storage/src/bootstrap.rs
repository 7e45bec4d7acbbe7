//! What a new member is told about its cluster: `--initial-cluster` parsed, and its own
//! entry checked against `--initial-advertise-peer-urls` — once, for the server that
//! bootstraps a member and for `raftkvctl snapshot restore`, which prepares one.

use std::collections::BTreeMap;

/// `name=url,name=url,...` as a map from name to that member's URLs (a name may appear more
/// than once, for several URLs), each member's URLs sorted and without repeats, as etcd
/// keeps them. Only the shape is checked here; the server checks the URLs themselves.
pub fn parse_initial_cluster(s: &str) -> Result<BTreeMap<String, Vec<String>>, String> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, url) = part
            .split_once('=')
            .ok_or_else(|| format!("invalid --initial-cluster entry {part:?} (want name=url)"))?;
        out.entry(name.to_string())
            .or_default()
            .push(url.to_string());
    }
    if out.is_empty() {
        return Err("--initial-cluster is empty".into());
    }
    for urls in out.values_mut() {
        urls.sort();
        urls.dedup();
    }
    Ok(out)
}

/// Checks that `--initial-cluster` names this member (`name`) with the peer URLs it
/// advertises; returns those URLs.
pub fn own_peer_urls<'a>(
    initial_cluster: &'a BTreeMap<String, Vec<String>>,
    name: &str,
    advertised: &[String],
) -> Result<&'a [String], String> {
    let own = initial_cluster
        .get(name)
        .ok_or_else(|| format!("--initial-cluster has no member named {name:?} (--name)"))?;
    let mut own_sorted = own.clone();
    own_sorted.sort();
    let mut advertised_sorted = advertised.to_vec();
    advertised_sorted.sort();
    advertised_sorted.dedup();
    if own_sorted != advertised_sorted {
        return Err(format!(
            "--initial-cluster has {name}={} but --initial-advertise-peer-urls is {}",
            own.join(","),
            advertised.join(",")
        ));
    }
    Ok(own)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_like_etcd() {
        let c = parse_initial_cluster(
            "infra1=http://127.0.0.1:2380, infra2=http://127.0.0.1:22380,infra2=http://b:1",
        )
        .unwrap();
        assert_eq!(c["infra2"], ["http://127.0.0.1:22380", "http://b:1"]);
        assert!(parse_initial_cluster("infra1").is_err());
        assert!(parse_initial_cluster("").is_err());
        let own = own_peer_urls(&c, "infra1", &["http://127.0.0.1:2380".into()]).unwrap();
        assert_eq!(own, ["http://127.0.0.1:2380"]);
        assert!(own_peer_urls(&c, "infra1", &["http://other:1".into()]).is_err());
        assert!(own_peer_urls(&c, "infra3", &[]).is_err());
    }
}
