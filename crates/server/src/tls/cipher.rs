//! `--cipher-suites`: etcd takes Go's names (`tlsutil.GetCipherSuites`) and hands them to
//! Go's `tls.Config.CipherSuites`, which limits TLS 1.2 only (TLS 1.3's suites are not
//! configurable in Go). raftkv maps each name to the rustls suite of the same id and keeps
//! every TLS 1.3 suite, so a list means the same on both servers.
//!
//! A name Go does not know stops the member with etcd's message. rustls implements only
//! ECDHE key exchange with AES-GCM or ChaCha20-Poly1305; a name Go knows outside those
//! (CBC, RC4, 3DES, RSA key exchange) is refused, naming the suites raftkv can use, rather
//! than quietly serving something else.

use tokio_rustls::rustls::CipherSuite;
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};

/// Every name Go 1.19's `tls.CipherSuites()` and `tls.InsecureCipherSuites()` give, and the
/// two aliases etcd adds, with their ids.
const GO_SUITES: &[(&str, u16)] = &[
    ("TLS_RSA_WITH_RC4_128_SHA", 0x0005),
    ("TLS_RSA_WITH_3DES_EDE_CBC_SHA", 0x000a),
    ("TLS_RSA_WITH_AES_128_CBC_SHA", 0x002f),
    ("TLS_RSA_WITH_AES_256_CBC_SHA", 0x0035),
    ("TLS_RSA_WITH_AES_128_CBC_SHA256", 0x003c),
    ("TLS_RSA_WITH_AES_128_GCM_SHA256", 0x009c),
    ("TLS_RSA_WITH_AES_256_GCM_SHA384", 0x009d),
    ("TLS_ECDHE_ECDSA_WITH_RC4_128_SHA", 0xc007),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", 0xc009),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", 0xc00a),
    ("TLS_ECDHE_RSA_WITH_RC4_128_SHA", 0xc011),
    ("TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA", 0xc012),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", 0xc013),
    ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", 0xc014),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", 0xc023),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", 0xc027),
    ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", 0xc02f),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", 0xc02b),
    ("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", 0xc030),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", 0xc02c),
    ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", 0xcca8),
    ("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", 0xcca9),
    ("TLS_AES_128_GCM_SHA256", 0x1301),
    ("TLS_AES_256_GCM_SHA384", 0x1302),
    ("TLS_CHACHA20_POLY1305_SHA256", 0x1303),
    ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305", 0xcca8),
    ("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305", 0xcca9),
];

/// `--cipher-suites` as etcd reads it: split on commas, nothing trimmed; empty: none given.
pub fn parse_flag(value: &str) -> Vec<String> {
    if value.is_empty() {
        return Vec::new();
    }
    value.split(',').map(str::to_string).collect()
}

/// rustls's ring provider limited to `names` for TLS 1.2 (every suite when `names` is
/// empty), with etcd's error for an unknown name and raftkv's for one rustls lacks.
pub fn provider(names: &[String]) -> anyhow::Result<CryptoProvider> {
    let mut provider = ring::default_provider();
    if names.is_empty() {
        return Ok(provider);
    }
    let mut tls12 = Vec::new();
    for name in names {
        let Some(&(_, id)) = GO_SUITES.iter().find(|(n, _)| n == name) else {
            anyhow::bail!("unexpected TLS cipher suite {name:?}");
        };
        if (0x1301..=0x1303).contains(&id) {
            continue; // TLS 1.3: always on, as in Go
        }
        if !provider
            .cipher_suites
            .iter()
            .any(|s| u16::from(s.suite()) == id)
        {
            anyhow::bail!(
                "--cipher-suites: {name} is not supported by raftkv (rustls implements only ECDHE with AES-GCM or ChaCha20-Poly1305; TLS 1.2 suites it can use: {})",
                usable_names().join(", ")
            );
        }
        tls12.push(id);
    }
    provider.cipher_suites.retain(|s| {
        let id = u16::from(s.suite());
        (0x1301..=0x1303).contains(&id) || tls12.contains(&id)
    });
    Ok(provider)
}

/// Go's names of the TLS 1.2 suites rustls implements.
fn usable_names() -> Vec<&'static str> {
    let ring = ring::default_provider();
    GO_SUITES
        .iter()
        .filter(|(name, id)| {
            !name.ends_with("_POLY1305")
                && !(0x1301..=0x1303).contains(id)
                && ring
                    .cipher_suites
                    .iter()
                    .any(|s| u16::from(s.suite()) == *id)
        })
        .map(|(name, _)| *name)
        .collect()
}

/// The suite names a provider offers, for logs.
pub fn names(provider: &CryptoProvider) -> Vec<String> {
    provider
        .cipher_suites
        .iter()
        .map(|s| match s.suite() {
            CipherSuite::Unknown(id) => format!("{id:#06x}"),
            known => format!("{known:?}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_of(list: &str) -> anyhow::Result<Vec<String>> {
        provider(&parse_flag(list)).map(|p| names(&p))
    }

    #[test]
    fn go_names_limit_tls12_and_keep_tls13() {
        assert_eq!(names_of("").unwrap().len(), 9);
        assert_eq!(
            names_of(
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305,TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
            )
            .unwrap(),
            [
                "TLS13_AES_256_GCM_SHA384",
                "TLS13_AES_128_GCM_SHA256",
                "TLS13_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            ]
        );
        assert_eq!(names_of("TLS_AES_128_GCM_SHA256").unwrap().len(), 3);
    }

    #[test]
    fn unknown_and_unusable_names_are_refused() {
        assert_eq!(
            names_of("FOO").unwrap_err().to_string(),
            "unexpected TLS cipher suite \"FOO\""
        );
        assert_eq!(
            names_of("TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384")
                .unwrap_err()
                .to_string(),
            "unexpected TLS cipher suite \" TLS_AES_256_GCM_SHA384\""
        );
        assert_eq!(
            names_of("TLS_AES_128_GCM_SHA256,").unwrap_err().to_string(),
            "unexpected TLS cipher suite \"\""
        );
        let cbc = names_of("TLS_RSA_WITH_AES_128_CBC_SHA")
            .unwrap_err()
            .to_string();
        assert!(
            cbc.starts_with(
                "--cipher-suites: TLS_RSA_WITH_AES_128_CBC_SHA is not supported by raftkv"
            ),
            "{cbc}"
        );
        assert!(
            cbc.contains("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
            "{cbc}"
        );
    }
}
