//! The few facts etcd reads from a verified peer certificate, taken from its DER: the
//! subject's common name (`--peer-cert-allowed-cn`), and the subject alternative names
//! (`--*-cert-allowed-hostname`, and etcd's check of a peer's SANs against its address).
//!
//! By hand rather than with an X.509 crate: webpki has already parsed and verified the
//! certificate when these run, three fields are needed, and a small reader that gives up
//! on anything unexpected (never panicking) is less than a new dependency tree. Host names
//! are matched as Go's `x509.Certificate.VerifyHostname` matches them.

use std::net::IpAddr;

/// A DER reader over a run of TLV elements.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// The next element's tag and contents; `None` at the end or on malformed input.
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.0.split_first()?;
        if tag & 0x1f == 0x1f {
            return None; // multi-byte tags appear nowhere in what is read here
        }
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return None;
        }
        let (value, rest) = rest.split_at(len);
        self.0 = rest;
        Some((tag, value))
    }

    /// The contents of the next element, if it has tag `tag`.
    fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        match self.next()? {
            (t, value) if t == tag => Some(value),
            _ => None,
        }
    }
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
/// 2.5.4.3, id-at-commonName.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// 2.5.29.17, id-ce-subjectAltName.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// The subject and the extensions of a certificate's `tbsCertificate`.
fn subject_and_extensions(cert: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let certificate = Der(cert).expect(SEQUENCE)?;
    let mut tbs = Der(Der(certificate).expect(SEQUENCE)?);
    let mut first = tbs.next()?;
    if first.0 == 0xa0 {
        first = tbs.next()?; // [0] version
    }
    if first.0 != 0x02 {
        return None; // serialNumber
    }
    tbs.expect(SEQUENCE)?; // signature
    tbs.expect(SEQUENCE)?; // issuer
    tbs.expect(SEQUENCE)?; // validity
    let subject = tbs.expect(SEQUENCE)?;
    tbs.expect(SEQUENCE)?; // subjectPublicKeyInfo
    let mut extensions = None;
    while let Some((tag, value)) = tbs.next() {
        if tag == 0xa3 {
            extensions = Some(Der(value).expect(SEQUENCE)?);
        }
    }
    Some((subject, extensions))
}

/// The subject's common name (the last one, as Go's `pkix.Name` keeps it), if it has one
/// and it is text: a name that is not valid in its string type gives `None`, never a
/// guess.
pub fn common_name(cert: &[u8]) -> Option<String> {
    let (subject, _) = subject_and_extensions(cert)?;
    let mut rdns = Der(subject);
    let mut cn = None;
    while let Some(set) = rdns.expect(SET) {
        let mut attributes = Der(set);
        while let Some(attribute) = attributes.expect(SEQUENCE) {
            let mut attribute = Der(attribute);
            if attribute.expect(OID) == Some(COMMON_NAME) {
                cn = attribute.next().and_then(|(tag, value)| string(tag, value));
            }
        }
    }
    cn
}

/// A directory string's text: UTF8String, PrintableString, IA5String, TeletexString (only
/// when it is valid UTF-8: Latin-1 is not worth guessing), BMPString (UTF-16BE).
fn string(tag: u8, value: &[u8]) -> Option<String> {
    match tag {
        0x0c | 0x13 | 0x16 | 0x14 => std::str::from_utf8(value).ok().map(str::to_string),
        0x1e if value.len().is_multiple_of(2) => {
            let units: Vec<u16> = value
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

/// The DNS names and IP addresses of a certificate's subject alternative names.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AltNames {
    /// `dNSName` entries.
    pub dns: Vec<String>,
    /// `iPAddress` entries.
    pub ips: Vec<IpAddr>,
}

/// The subject alternative names of a certificate (none if it has no such extension or it
/// cannot be read).
pub fn alt_names(cert: &[u8]) -> AltNames {
    let mut names = AltNames::default();
    let Some((_, Some(extensions))) = subject_and_extensions(cert) else {
        return names;
    };
    let mut extensions = Der(extensions);
    while let Some(extension) = extensions.expect(SEQUENCE) {
        let mut extension = Der(extension);
        if extension.expect(OID) != Some(SUBJECT_ALT_NAME) {
            continue;
        }
        let mut value = extension.next();
        if matches!(value, Some((0x01, _))) {
            value = extension.next(); // critical
        }
        let Some((0x04, octets)) = value else {
            continue;
        };
        let Some(general_names) = Der(octets).expect(SEQUENCE) else {
            continue;
        };
        let mut general_names = Der(general_names);
        while let Some((tag, value)) = general_names.next() {
            match tag {
                0x82 => names.dns.push(String::from_utf8_lossy(value).into_owned()),
                0x87 => match value.len() {
                    4 => names
                        .ips
                        .push(IpAddr::from(<[u8; 4]>::try_from(value).unwrap_or_default())),
                    16 => names.ips.push(IpAddr::from(
                        <[u8; 16]>::try_from(value).unwrap_or_default(),
                    )),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    names
}

/// Whether the certificate is valid for `host`, as Go's `VerifyHostname`: an IP address
/// (brackets allowed) against the IP SANs, a name against the DNS SANs (case-insensitive,
/// a leading `*.` label matching one label); the common name is not consulted.
pub fn valid_for_host(names: &AltNames, host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return names.ips.iter().any(|i| same_ip(*i, ip));
    }
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    names
        .dns
        .iter()
        .any(|pattern| matches_pattern(&pattern.to_ascii_lowercase(), &host))
}

/// IPv4 and its IPv4-mapped IPv6 form are the same address (as Go compares them).
pub fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

fn matches_pattern(pattern: &str, host: &str) -> bool {
    if pattern.is_empty() || host.is_empty() {
        return false;
    }
    let pattern = pattern.trim_end_matches('.');
    let (p_labels, h_labels): (Vec<&str>, Vec<&str>) =
        (pattern.split('.').collect(), host.split('.').collect());
    if p_labels.len() != h_labels.len() {
        return false;
    }
    p_labels
        .iter()
        .zip(&h_labels)
        .enumerate()
        .all(|(i, (p, h))| (i == 0 && *p == "*" && !h.is_empty()) || p == h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: Option<&str>, sans: &[&str]) -> Vec<u8> {
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "etcd");
        if let Some(cn) = cn {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_the_common_name_and_the_alternative_names() {
        let der = cert(
            Some("member-1"),
            &["127.0.0.1", "::1", "m1.example", "*.peers.example"],
        );
        assert_eq!(common_name(&der).as_deref(), Some("member-1"));
        let names = alt_names(&der);
        assert_eq!(names.dns, ["m1.example", "*.peers.example"]);
        assert_eq!(
            names.ips,
            [
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        let bare = cert(None, &[]);
        assert_eq!(common_name(&bare), None);
        assert_eq!(alt_names(&bare), AltNames::default());
    }

    #[test]
    fn host_names_match_as_gos_verify_hostname() {
        let names = alt_names(&cert(None, &["127.0.0.1", "m1.example", "*.peers.example"]));
        assert!(valid_for_host(&names, "127.0.0.1"));
        assert!(valid_for_host(&names, "::ffff:127.0.0.1"));
        assert!(!valid_for_host(&names, "127.0.0.2"));
        assert!(valid_for_host(&names, "M1.Example."));
        assert!(valid_for_host(&names, "a.peers.example"));
        assert!(!valid_for_host(&names, "a.b.peers.example"));
        assert!(!valid_for_host(&names, "peers.example"));
        assert!(!valid_for_host(&names, ""));
    }

    #[test]
    fn any_bytes_are_read_without_panicking() {
        let der = cert(Some("x"), &["127.0.0.1", "a.example"]);
        for len in 0..der.len() {
            let _ = common_name(&der[..len]);
            let _ = alt_names(&der[..len]);
        }
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut bytes = der.clone();
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let i = (state as usize) % bytes.len();
                bytes[i] = (state >> 32) as u8;
            }
            let _ = common_name(&bytes);
            let _ = alt_names(&bytes);
        }
        for bytes in [
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff][..],
            &[0x30, 0x80],
            &[0x1f, 0x01],
        ] {
            assert_eq!(common_name(bytes), None);
        }
    }
}
