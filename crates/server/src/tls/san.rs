//! etcd's check of a peer's client certificate against the address it connects from
//! (`pkg/transport/listener_tls.go`'s `checkSAN`, on by default for the peer port and for
//! `https://` metrics URLs; `--experimental-peer-skip-client-san-verification` turns it off
//! for peers): a certificate with IP or DNS SANs must name the connecting address — as an
//! IP SAN, or as a DNS SAN that the address resolves back to (reverse lookup) or that
//! resolves to the address (forward lookup). A certificate without SANs passes.

use std::net::{IpAddr, SocketAddr};

use tokio_rustls::rustls::pki_types::CertificateDer;

use super::x509::{self, AltNames};

/// Checks the leaf of `chain` against `peer`, with etcd's error texts.
pub async fn check(chain: Vec<CertificateDer<'static>>, peer: SocketAddr) -> Result<(), String> {
    let Some(leaf) = chain.first() else {
        return Ok(());
    };
    let names = x509::alt_names(leaf);
    if names.ips.is_empty() && names.dns.is_empty() {
        return Ok(());
    }
    let host = peer.ip().to_canonical();
    if !names.ips.is_empty() {
        if names.ips.iter().any(|ip| x509::same_ip(*ip, host)) {
            return Ok(());
        }
        if names.dns.is_empty() {
            return Err(format!(
                "x509: certificate is valid for {}, not {host}",
                names
                    .ips
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    if host_in_dns(host, &names).await {
        return Ok(());
    }
    Err(format!(
        "tls: {:?} does not match any of DNSNames {:?}",
        host.to_string(),
        names.dns
    ))
}

/// etcd's `isHostInDNS`: a name the address reverse-resolves to matches a DNS SAN (exactly,
/// or under a `*.` wildcard's suffix), or a (non-wildcard) DNS SAN resolves to the address.
async fn host_in_dns(host: IpAddr, names: &AltNames) -> bool {
    let reverse = tokio::task::spawn_blocking(move || reverse_lookup(host))
        .await
        .unwrap_or_default();
    for name in reverse {
        let name = name.trim_end_matches('.');
        for dns in &names.dns {
            let hit = match dns.strip_prefix('*') {
                Some(suffix) => name.ends_with(suffix),
                None => name == dns,
            };
            if hit {
                return true;
            }
        }
    }
    for dns in names.dns.iter().filter(|d| !d.starts_with("*.")) {
        if let Ok(addrs) = tokio::net::lookup_host((dns.as_str(), 0)).await
            && addrs.map(|a| a.ip()).any(|ip| x509::same_ip(ip, host))
        {
            return true;
        }
    }
    false
}

/// The name an address resolves back to (`getnameinfo` with `NI_NAMEREQD`: /etc/hosts,
/// then DNS PTR records), if any.
fn reverse_lookup(ip: IpAddr) -> Vec<String> {
    let addr = sockaddr(ip);
    let mut host = [0 as libc::c_char; 1025];
    // SAFETY: `addr` is a valid sockaddr of the length given; `host` is writable for its
    // length; no service buffer is asked for.
    let rc = unsafe {
        libc::getnameinfo(
            addr.0.as_ptr().cast(),
            addr.1,
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            std::ptr::null_mut(),
            0,
            libc::NI_NAMEREQD,
        )
    };
    if rc != 0 {
        return Vec::new();
    }
    // SAFETY: getnameinfo wrote a NUL-terminated string into `host` on success.
    let name = unsafe { std::ffi::CStr::from_ptr(host.as_ptr()) };
    vec![name.to_string_lossy().into_owned()]
}

/// A `sockaddr_in` / `sockaddr_in6` for `ip` (port 0), as bytes, and its length.
fn sockaddr(ip: IpAddr) -> (Vec<u8>, libc::socklen_t) {
    match ip {
        IpAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.octets()),
                },
                sin_zero: [0; 8],
            };
            (
                as_bytes(&sin),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        IpAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.octets(),
                },
                sin6_scope_id: 0,
            };
            (
                as_bytes(&sin6),
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}

fn as_bytes<T: Copy>(value: &T) -> Vec<u8> {
    // SAFETY: `T` is a plain C struct (Copy, no padding read as anything but bytes).
    unsafe {
        std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>())
    }
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(sans: &[&str]) -> CertificateDer<'static> {
        let params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    fn at(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    #[tokio::test]
    async fn a_peer_must_connect_from_an_address_its_certificate_names() {
        assert_eq!(check(vec![], at("10.1.2.3")).await, Ok(()));
        assert_eq!(check(vec![cert(&[])], at("10.1.2.3")).await, Ok(()));
        assert_eq!(
            check(vec![cert(&["127.0.0.1"])], at("127.0.0.1")).await,
            Ok(())
        );
        assert_eq!(
            check(vec![cert(&["127.0.0.1", "10.0.0.1"])], at("127.0.0.2")).await,
            Err("x509: certificate is valid for 127.0.0.1, 10.0.0.1, not 127.0.0.2".into())
        );
        // localhost resolves to 127.0.0.1 (/etc/hosts), both ways.
        assert_eq!(
            check(vec![cert(&["localhost"])], at("127.0.0.1")).await,
            Ok(())
        );
        assert_eq!(
            check(
                vec![cert(&["10.9.9.9", "nothing.invalid"])],
                at("127.0.0.3")
            )
            .await,
            Err("tls: \"127.0.0.3\" does not match any of DNSNames [\"nothing.invalid\"]".into())
        );
    }
}
