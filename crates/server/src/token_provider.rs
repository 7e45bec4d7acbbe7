//! `--auth-token`: which tokens a member hands out and accepts (etcd's `NewTokenProvider`
//! and `decomposeOpts`): `simple` (the default), `jwt,<key>=<value>,...` (see [`crate::jwt`]),
//! or empty (etcd's "nop" provider: no token is valid and Authenticate always fails).
//!
//! The option string is split at commas; the first part is the type and every other part
//! must be one `key=value` pair, each key once (the pairs are ignored for `simple`). A bad
//! option stops the member at start with etcd's message ("auth: invalid auth options",
//! after a log line saying why), as etcd stops.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::jwt::Jwt;

/// A token provider chosen by `--auth-token`.
#[derive(Debug, Clone, Default)]
pub enum TokenProvider {
    /// Simple tokens: made by the Authenticate entry on every member
    /// (`raftkv_storage::mvcc::auth::tokens`).
    #[default]
    Simple,
    /// Signed tokens, made by the member that handled Authenticate.
    Jwt(Arc<Jwt>),
    /// No tokens (`--auth-token=`).
    Nop,
}

/// Why `--auth-token` was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// etcd's `ErrInvalidAuthOpts`; `detail` is the line etcd logs before it.
    #[error("auth: invalid auth options")]
    InvalidOptions {
        /// What was wrong, in etcd's words.
        detail: String,
    },
    /// A key that cannot be used, in golang-jwt's, Go's or etcd's words (or raftkv's, for
    /// what etcd takes and ring cannot do).
    #[error("{0}")]
    Key(String),
}

impl TokenProvider {
    /// The provider `--auth-token` names, its key files read now.
    pub fn from_option(option: &str) -> Result<Self, ProviderError> {
        let (kind, options) = decompose(option)?;
        match kind {
            "simple" => {
                tracing::warn!("simple token is not cryptographically signed");
                Ok(Self::Simple)
            }
            "jwt" => Ok(Self::Jwt(Arc::new(Jwt::from_options(&options)?))),
            "" => Ok(Self::Nop),
            other => Err(ProviderError::InvalidOptions {
                detail: format!("unknown token type: {other}"),
            }),
        }
    }

    /// [`TokenProvider::from_option`], logging why it failed as etcd does (the error
    /// itself is etcd's last line).
    pub fn start(option: &str) -> anyhow::Result<Self> {
        Self::from_option(option).map_err(|e| {
            if let ProviderError::InvalidOptions { detail } = &e {
                tracing::error!("auth: {detail}");
            }
            tracing::warn!("etcdserver: failed to create token provider,err is {e}");
            anyhow::Error::new(e)
        })
    }

    /// Whether simple tokens are in use (made by the Authenticate entry itself).
    pub fn is_simple(&self) -> bool {
        matches!(self, Self::Simple)
    }
}

/// etcd's `decomposeOpts`: the type and its `key=value` options.
fn decompose(option: &str) -> Result<(&str, BTreeMap<String, String>), ProviderError> {
    let mut parts = option.split(',');
    let kind = parts.next().unwrap_or_default();
    let mut options = BTreeMap::new();
    for part in parts {
        let pair: Vec<&str> = part.split('=').collect();
        let [key, value] = pair[..] else {
            return Err(ProviderError::InvalidOptions {
                detail: format!("invalid token specific option: {option}"),
            });
        };
        if options.insert(key.to_string(), value.to_string()).is_some() {
            return Err(ProviderError::InvalidOptions {
                detail: format!(
                    "invalid token specific option, duplicated parameters ({key}): {option}"
                ),
            });
        }
    }
    Ok((kind, options))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(option: &str) -> (String, String) {
        match TokenProvider::from_option(option) {
            Err(ProviderError::InvalidOptions { detail }) => {
                ("auth: invalid auth options".into(), detail)
            }
            Err(e) => (e.to_string(), String::new()),
            Ok(p) => panic!("{option:?} accepted: {p:?}"),
        }
    }

    #[test]
    fn options_are_split_as_etcd_splits_them() {
        assert!(TokenProvider::from_option("simple").unwrap().is_simple());
        assert!(
            TokenProvider::from_option("simple,x=y")
                .unwrap()
                .is_simple()
        );
        assert!(matches!(
            TokenProvider::from_option("").unwrap(),
            TokenProvider::Nop
        ));
        assert_eq!(
            refusal("simple,x"),
            (
                "auth: invalid auth options".into(),
                "invalid token specific option: simple,x".into()
            )
        );
        assert_eq!(
            refusal("jwt,a=b=c").1,
            "invalid token specific option: jwt,a=b=c"
        );
        assert_eq!(refusal("jwt,").1, "invalid token specific option: jwt,");
        assert_eq!(
            refusal("jwt,ttl=1s,ttl=2s").1,
            "invalid token specific option, duplicated parameters (ttl): jwt,ttl=1s,ttl=2s"
        );
        assert_eq!(refusal("foo").1, "unknown token type: foo");
        assert_eq!(refusal("JWT").1, "unknown token type: JWT");
    }

    #[test]
    fn jwt_options_are_checked_in_etcds_order() {
        assert_eq!(
            refusal("jwt").1,
            "problem loading JWT options: auth: invalid auth signature method"
        );
        assert_eq!(
            refusal("jwt,sign-method=RS256,ttl=5x").1,
            r#"problem loading JWT options: time: unknown unit "x" in duration "5x""#
        );
        assert_eq!(
            refusal("jwt,sign-method=nope,pub-key=/nonexistent/k").1,
            "problem loading JWT options: open /nonexistent/k: no such file or directory"
        );
        assert_eq!(
            refusal("jwt,sign-method=RS256,priv-key=/").1,
            "problem loading JWT options: read /: is a directory"
        );
        assert_eq!(refusal("jwt,sign-method=RS256").0, "auth: missing key data");
        assert_eq!(refusal("jwt,sign-method=HS256").0, "auth: missing key data");
        assert_eq!(
            refusal("jwt,sign-method=none,priv-key=/dev/null").0,
            "unsupported signing method: *jwt.signingMethodNone"
        );
        assert_eq!(
            refusal("jwt,sign-method=EdDSA").0,
            "unsupported signing method: *jwt.SigningMethodEd25519"
        );
        assert!(
            refusal("jwt,sign-method=ES512")
                .0
                .contains("ES512 is not supported")
        );
        assert_eq!(
            refusal("jwt,sign-method=es256").1,
            "problem loading JWT options: auth: invalid auth signature method"
        );
    }
}
