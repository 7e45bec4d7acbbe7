//! etcd 3.4's JWT tokens (`auth/jwt.go`, `auth/options.go`):
//! `--auth-token jwt,pub-key=<file>,priv-key=<file>,sign-method=<alg>[,ttl=<duration>]`.
//!
//! The member that handled Authenticate signs a token once the Authenticate entry has
//! applied (claims `username`, `revision` = the auth revision, `exp` = now + ttl, 5 minutes
//! by default); any member checks one with its key alone: signature, `exp` (and `iat`,
//! `nbf` if given), then the user and revision it names. Nothing is kept per token, so a
//! token outlives user deletion and password changes; the revision it carries is what
//! ends it, since the permission checks refuse a revision older than the auth store's.
//! A member given only `pub-key` verifies but cannot sign: Authenticate there fails with
//! etcd's "auth: token signing attempted with verify-only key".
//!
//! - [`method`] — golang-jwt's sign-method names; which ring implements.
//! - [`keys`] — PEM key files read as golang-jwt reads them, into ring keys.
//! - [`token`] — the compact form: made, taken apart and its claims checked (bounded).
//! - [`der`] — the small PEM and DER reader the keys need.

pub mod der;
pub mod keys;
pub mod method;
pub mod token;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::token_provider::ProviderError;
pub use token::Claims;

/// etcd's `DefaultTTL` for JWTs.
pub const DEFAULT_TTL_NANOS: i64 = 5 * 60 * 1_000_000_000;

/// etcd's `ErrVerifyOnly`.
pub const VERIFY_ONLY: &str = "auth: token signing attempted with verify-only key";

/// The options etcd knows (`knownOptions`).
const KNOWN_OPTIONS: &[&str] = &["sign-method", "pub-key", "priv-key", "ttl"];

/// A JWT token provider (etcd's `tokenJWT`).
#[derive(Debug)]
pub struct Jwt {
    method: method::SignMethod,
    keys: keys::Keys,
    /// Added to the signing time for `exp`; may be zero or negative, as etcd lets it be.
    ttl_nanos: i64,
}

impl Jwt {
    /// etcd's `newTokenProviderJWT` over the options after `jwt,` (already split).
    pub fn from_options(options: &BTreeMap<String, String>) -> Result<Self, ProviderError> {
        let get = |k: &str| options.get(k).map(String::as_str).unwrap_or("");
        let invalid = |e: String| ProviderError::InvalidOptions {
            detail: format!("problem loading JWT options: {e}"),
        };
        // etcd's `jwtOptions.Parse`, in its order.
        let ttl_nanos = match get("ttl") {
            "" => DEFAULT_TTL_NANOS,
            ttl => crate::go_values::parse_signed_duration(ttl).map_err(invalid)?,
        };
        let public = read_key_file(get("pub-key")).map_err(invalid)?;
        let private = read_key_file(get("priv-key")).map_err(invalid)?;
        let lookup = method::lookup(get("sign-method"));
        if lookup == method::Lookup::Unknown {
            return Err(invalid("auth: invalid auth signature method".into()));
        }
        let unknown: Vec<&str> = options
            .keys()
            .map(String::as_str)
            .filter(|k| !KNOWN_OPTIONS.contains(k))
            .collect();
        if !unknown.is_empty() {
            tracing::warn!("unknown JWT options: [{}]", unknown.join(" "));
        }
        let method = match lookup {
            method::Lookup::Supported(m) => m,
            method::Lookup::RefusedByEtcd(go_type) => {
                return Err(ProviderError::Key(format!(
                    "unsupported signing method: {go_type}"
                )));
            }
            method::Lookup::NotInRing(name) => {
                return Err(ProviderError::Key(format!(
                    "raftkv: sign-method {name} is not supported (ring has no P-521); use ES256 or ES384"
                )));
            }
            method::Lookup::Unknown => unreachable!("refused above"),
        };
        let keys = keys::load(&method, &public, &private).map_err(ProviderError::Key)?;
        Ok(Self {
            method,
            keys,
            ttl_nanos,
        })
    }

    /// Whether this member can only check tokens (a public key and no private one).
    pub fn verify_only(&self) -> bool {
        self.keys.signer.is_none()
    }

    /// The sign method's name (`alg`).
    pub fn method(&self) -> &'static str {
        self.method.name
    }

    /// etcd's `tokenJWT.assign`: a token for `username` at auth `revision`, made `now`.
    pub fn assign(&self, username: &str, revision: u64, now: SystemTime) -> Result<String, String> {
        let signer = self.keys.signer.as_ref().ok_or(VERIFY_ONLY)?;
        let exp = unix_nanos(now)
            .saturating_add(i128::from(self.ttl_nanos))
            .div_euclid(1_000_000_000);
        let exp = i64::try_from(exp).unwrap_or(i64::MAX);
        let input = token::signing_input(&self.method, username, revision, exp);
        let signature = signer.sign(&self.method, input.as_bytes())?;
        Ok(token::finish(&input, &signature))
    }

    /// etcd's `tokenJWT.info`: what `token` says if it is valid `now`; why not otherwise.
    pub fn info(&self, token: &str, now: SystemTime) -> Result<Claims, String> {
        let second = unix_nanos(now).div_euclid(1_000_000_000);
        let second = i64::try_from(second).unwrap_or(i64::MAX);
        let parsed = token::parse(token, &self.method, second)?;
        if !self
            .keys
            .verifier
            .verify(&self.method, parsed.signed.as_bytes(), &parsed.signature)
        {
            return Err("signature is invalid".into());
        }
        Ok(parsed.claims)
    }
}

/// Nanoseconds since the Unix epoch (negative before it).
fn unix_nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// A key file's bytes (Go's `ioutil.ReadFile`, with its error texts); empty for no path.
fn read_key_file(path: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let io = |e: std::io::Error| crate::tls::go_io_error(path, &e);
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(der::MAX_KEY_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() > der::MAX_KEY_FILE_BYTES {
        return Err(format!(
            "raftkv: {path} is larger than {} bytes; not a key file",
            der::MAX_KEY_FILE_BYTES
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests;
