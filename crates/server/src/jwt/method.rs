//! JWT sign methods by golang-jwt's names (`jwt.GetSigningMethod`, case-sensitive), and
//! which of them raftkv can use.

/// A key family and what it signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// HS*: HMAC with the bytes of the private-key file.
    Hmac,
    /// RS*: RSASSA-PKCS1-v1_5.
    RsaPkcs1,
    /// PS*: RSASSA-PSS, salt as long as the hash.
    RsaPss,
    /// ES*: ECDSA, signatures as fixed-width `r || s`.
    Ecdsa,
}

/// The hash of a method (and, for ES*, the curve it must be used with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    /// SHA-256 (ES256: P-256).
    Sha256,
    /// SHA-384 (ES384: P-384).
    Sha384,
    /// SHA-512 (ES512: P-521).
    Sha512,
}

/// A sign method raftkv implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignMethod {
    /// Its name, as in the `alg` header.
    pub name: &'static str,
    /// The key family.
    pub family: Family,
    /// The hash.
    pub hash: Hash,
}

/// What golang-jwt's registry says of a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A method raftkv implements.
    Supported(SignMethod),
    /// A method golang-jwt knows that etcd 3.4 refuses when it loads the key, with the Go
    /// type etcd names in its error (`unsupported signing method: <type>`).
    RefusedByEtcd(&'static str),
    /// A method etcd accepts that raftkv cannot do (ES512: ring has no P-521).
    NotInRing(&'static str),
    /// Not a method (etcd's "auth: invalid auth signature method").
    Unknown,
}

const METHODS: &[SignMethod] = &[
    m("HS256", Family::Hmac, Hash::Sha256),
    m("HS384", Family::Hmac, Hash::Sha384),
    m("HS512", Family::Hmac, Hash::Sha512),
    m("RS256", Family::RsaPkcs1, Hash::Sha256),
    m("RS384", Family::RsaPkcs1, Hash::Sha384),
    m("RS512", Family::RsaPkcs1, Hash::Sha512),
    m("PS256", Family::RsaPss, Hash::Sha256),
    m("PS384", Family::RsaPss, Hash::Sha384),
    m("PS512", Family::RsaPss, Hash::Sha512),
    m("ES256", Family::Ecdsa, Hash::Sha256),
    m("ES384", Family::Ecdsa, Hash::Sha384),
];

const fn m(name: &'static str, family: Family, hash: Hash) -> SignMethod {
    SignMethod { name, family, hash }
}

/// The method named `name` (golang-jwt's registry, as etcd 3.4.23 links it).
pub fn lookup(name: &str) -> Lookup {
    if let Some(method) = METHODS.iter().find(|m| m.name == name) {
        return Lookup::Supported(*method);
    }
    match name {
        "ES512" => Lookup::NotInRing("ES512"),
        "EdDSA" => Lookup::RefusedByEtcd("*jwt.SigningMethodEd25519"),
        "none" => Lookup::RefusedByEtcd("*jwt.signingMethodNone"),
        _ => Lookup::Unknown,
    }
}

/// Whether golang-jwt knows `name` at all (a token whose `alg` it does not know is
/// malformed rather than of another method; either way it is refused).
pub fn known(name: &str) -> bool {
    !matches!(lookup(name), Lookup::Unknown)
}

impl SignMethod {
    /// ES*: the curve's field size in bytes (each of `r` and `s` in a signature).
    pub fn ec_field_bytes(&self) -> usize {
        match self.hash {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 66,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_golang_jwts() {
        for name in [
            "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
            "ES256", "ES384",
        ] {
            assert!(
                matches!(lookup(name), Lookup::Supported(m) if m.name == name),
                "{name}"
            );
        }
        assert_eq!(lookup("ES512"), Lookup::NotInRing("ES512"));
        assert_eq!(
            lookup("EdDSA"),
            Lookup::RefusedByEtcd("*jwt.SigningMethodEd25519")
        );
        assert_eq!(
            lookup("none"),
            Lookup::RefusedByEtcd("*jwt.signingMethodNone")
        );
        for unknown in ["", "rs256", "RS1024", "HS256 ", "Ed25519"] {
            assert_eq!(lookup(unknown), Lookup::Unknown, "{unknown:?}");
            assert!(!known(unknown));
        }
    }
}
