//! JWT keys read as etcd 3.4 reads them (`auth/options.go`'s `rsaKey`, `ecKey`, `hmacKey`
//! over golang-jwt's `ParseRSAPrivateKeyFromPEM` and friends), into ring's keys.
//!
//! - The first PEM block of a file is the key, whatever its label. RSA private keys: PKCS#1,
//!   else PKCS#8; EC private keys: SEC1, else PKCS#8; public keys: SubjectPublicKeyInfo,
//!   else the key of an X.509 certificate. An empty file counts as no file.
//! - HS* signs with the private-key file's bytes as they are (no PEM).
//! - With both keys, the private one signs and verifies; the public one must only parse
//!   and pass etcd's match check, which refuses a pair only when every part differs (for
//!   RSA: modulus and exponent; for EC: curve and both coordinates), as etcd's does.
//! - Errors carry golang-jwt's and Go's `x509` texts where those are fixed sentences.
//!
//! Where ring is narrower than Go, the key is refused at start with a sentence that says
//! so: RSA private keys of 2048 to 4096 bits with exponent 65537, RSA public keys of 2048 to
//! 8192 bits, EC keys on P-256 and P-384 only (etcd also takes P-224 and P-521), and an EC
//! private key must carry its public key (openssl's always do).

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};

use super::der::{self, Reader, tag};
use super::method::{Family, Hash, SignMethod};

/// golang-jwt's `ErrKeyMustBePEMEncoded`.
pub const NOT_PEM: &str = "invalid key: Key must be a PEM encoded PKCS1 or PKCS8 key";
/// etcd's `ErrMissingKey`.
pub const MISSING_KEY: &str = "auth: missing key data";
/// etcd's `ErrKeyMismatch`.
pub const KEY_MISMATCH: &str = "auth: public and private keys don't match";
const NOT_RSA_PRIVATE: &str = "key is not a valid RSA private key";
const NOT_RSA_PUBLIC: &str = "key is not a valid RSA public key";
const NOT_EC_PRIVATE: &str = "key is not a valid ECDSA private key";
const NOT_EC_PUBLIC: &str = "key is not a valid ECDSA public key";
const USE_EC_PARSER: &str =
    "x509: failed to parse private key (use ParseECPrivateKey instead for this key format)";
const USE_PKCS1_PARSER: &str =
    "x509: failed to parse private key (use ParsePKCS1PrivateKey instead for this key format)";

const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const OID_P224: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x21];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];

/// The curves Go's `x509` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// P-224 (Go only).
    P224,
    /// P-256: ES256.
    P256,
    /// P-384: ES384.
    P384,
    /// P-521 (Go only).
    P521,
}

impl Curve {
    fn from_oid(oid: &[u8]) -> Option<Self> {
        Some(match oid {
            OID_P224 => Self::P224,
            OID_P256 => Self::P256,
            OID_P384 => Self::P384,
            OID_P521 => Self::P521,
            _ => return None,
        })
    }

    fn oid(self) -> &'static [u8] {
        match self {
            Self::P224 => OID_P224,
            Self::P256 => OID_P256,
            Self::P384 => OID_P384,
            Self::P521 => OID_P521,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::P224 => "P-224",
            Self::P256 => "P-256",
            Self::P384 => "P-384",
            Self::P521 => "P-521",
        }
    }

    /// Bytes of one coordinate.
    fn field_bytes(self) -> usize {
        match self {
            Self::P224 => 28,
            Self::P256 => 32,
            Self::P384 => 48,
            Self::P521 => 66,
        }
    }

    /// The curve a method signs on.
    fn of(method: &SignMethod) -> Self {
        match method.hash {
            Hash::Sha256 => Self::P256,
            Hash::Sha384 => Self::P384,
            Hash::Sha512 => Self::P521,
        }
    }

    fn in_ring(self) -> Result<(), String> {
        match self {
            Self::P256 | Self::P384 => Ok(()),
            other => Err(format!(
                "raftkv: EC keys on {} are not supported (ring signs and verifies on P-256 and P-384 only: ES256, ES384)",
                other.name()
            )),
        }
    }
}

/// A signing key.
pub enum Signer {
    /// HS*.
    Hmac(ring::hmac::Key),
    /// RS*, PS*.
    Rsa(RsaKeyPair),
    /// ES*, with the key's curve (a key on another curve than the method's cannot sign,
    /// as with golang-jwt: "key is invalid").
    Ecdsa(EcdsaKeyPair, Curve),
}

/// A verifying key.
pub enum Verifier {
    /// HS*.
    Hmac(ring::hmac::Key),
    /// RS*, PS*: the DER `RSAPublicKey`.
    Rsa(Vec<u8>),
    /// ES*: the uncompressed point, and its curve.
    Ecdsa(Vec<u8>, Curve),
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Hmac(_) => "Signer::Hmac",
            Self::Rsa(_) => "Signer::Rsa",
            Self::Ecdsa(..) => "Signer::Ecdsa",
        })
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Hmac(_) => "Verifier::Hmac",
            Self::Rsa(_) => "Verifier::Rsa",
            Self::Ecdsa(..) => "Verifier::Ecdsa",
        })
    }
}

/// The keys of a provider: a signer unless only a public key was given (verify-only).
#[derive(Debug)]
pub struct Keys {
    /// Signs new tokens; `None` on a verify-only member.
    pub signer: Option<Signer>,
    /// Checks tokens.
    pub verifier: Verifier,
}

/// golang-jwt's error when signing with a key that does not fit the method.
pub const INVALID_KEY: &str = "key is invalid";

impl Signer {
    /// The signature of `message` under `method`.
    pub fn sign(&self, method: &SignMethod, message: &[u8]) -> Result<Vec<u8>, String> {
        let rng = SystemRandom::new();
        match self {
            Self::Hmac(key) => Ok(ring::hmac::sign(key, message).as_ref().to_vec()),
            Self::Rsa(pair) => {
                let mut sig = vec![0u8; pair.public().modulus_len()];
                pair.sign(rsa_padding(method), &rng, message, &mut sig)
                    .map_err(|_| "crypto/rsa: signing failed".to_string())?;
                Ok(sig)
            }
            Self::Ecdsa(pair, curve) => {
                if *curve != Curve::of(method) {
                    return Err(INVALID_KEY.to_string());
                }
                pair.sign(&rng, message)
                    .map(|s| s.as_ref().to_vec())
                    .map_err(|_| "crypto/ecdsa: signing failed".to_string())
            }
        }
    }

    /// The key that checks this key's signatures.
    fn verifier(&self) -> Verifier {
        match self {
            Self::Hmac(key) => Verifier::Hmac(key.clone()),
            Self::Rsa(pair) => Verifier::Rsa(pair.public().as_ref().to_vec()),
            Self::Ecdsa(pair, curve) => {
                Verifier::Ecdsa(pair.public_key().as_ref().to_vec(), *curve)
            }
        }
    }
}

impl Verifier {
    /// Whether `signature` is `method`'s signature of `message` by this key.
    pub fn verify(&self, method: &SignMethod, message: &[u8], signature: &[u8]) -> bool {
        match self {
            Self::Hmac(key) => ring::hmac::verify(key, message, signature).is_ok(),
            Self::Rsa(der) => signature::UnparsedPublicKey::new(rsa_verification(method), der)
                .verify(message, signature)
                .is_ok(),
            Self::Ecdsa(point, curve) => {
                let alg: &dyn signature::VerificationAlgorithm = match (curve, method.hash) {
                    (Curve::P256, Hash::Sha256) => &signature::ECDSA_P256_SHA256_FIXED,
                    (Curve::P384, Hash::Sha384) => &signature::ECDSA_P384_SHA384_FIXED,
                    // No signer of this method can make a signature this key checks.
                    _ => return false,
                };
                signature::UnparsedPublicKey::new(alg, point)
                    .verify(message, signature)
                    .is_ok()
            }
        }
    }
}

fn rsa_padding(method: &SignMethod) -> &'static dyn signature::RsaEncoding {
    match (method.family, method.hash) {
        (Family::RsaPss, Hash::Sha256) => &signature::RSA_PSS_SHA256,
        (Family::RsaPss, Hash::Sha384) => &signature::RSA_PSS_SHA384,
        (Family::RsaPss, Hash::Sha512) => &signature::RSA_PSS_SHA512,
        (_, Hash::Sha256) => &signature::RSA_PKCS1_SHA256,
        (_, Hash::Sha384) => &signature::RSA_PKCS1_SHA384,
        (_, Hash::Sha512) => &signature::RSA_PKCS1_SHA512,
    }
}

fn rsa_verification(method: &SignMethod) -> &'static signature::RsaParameters {
    match (method.family, method.hash) {
        (Family::RsaPss, Hash::Sha256) => &signature::RSA_PSS_2048_8192_SHA256,
        (Family::RsaPss, Hash::Sha384) => &signature::RSA_PSS_2048_8192_SHA384,
        (Family::RsaPss, Hash::Sha512) => &signature::RSA_PSS_2048_8192_SHA512,
        (_, Hash::Sha256) => &signature::RSA_PKCS1_2048_8192_SHA256,
        (_, Hash::Sha384) => &signature::RSA_PKCS1_2048_8192_SHA384,
        (_, Hash::Sha512) => &signature::RSA_PKCS1_2048_8192_SHA512,
    }
}

/// etcd's `jwtOptions.Key` for `method`, from the files' bytes (empty: not given).
pub fn load(method: &SignMethod, public: &[u8], private: &[u8]) -> Result<Keys, String> {
    match method.family {
        Family::Hmac => {
            if private.is_empty() {
                return Err(MISSING_KEY.into());
            }
            let alg = match method.hash {
                Hash::Sha256 => ring::hmac::HMAC_SHA256,
                Hash::Sha384 => ring::hmac::HMAC_SHA384,
                Hash::Sha512 => ring::hmac::HMAC_SHA512,
            };
            let key = ring::hmac::Key::new(alg, private);
            Ok(Keys {
                signer: Some(Signer::Hmac(key.clone())),
                verifier: Verifier::Hmac(key),
            })
        }
        Family::RsaPkcs1 | Family::RsaPss => rsa_keys(public, private),
        Family::Ecdsa => ec_keys(method, public, private),
    }
}

fn rsa_keys(public: &[u8], private: &[u8]) -> Result<Keys, String> {
    let private = if private.is_empty() {
        None
    } else {
        Some(rsa_private(&pem(private)?)?)
    };
    let public = if public.is_empty() {
        None
    } else {
        match public_key(&pem(public)?)? {
            PublicKey::Rsa { n, e, der } => Some((n, e, der)),
            _ => return Err(NOT_RSA_PUBLIC.into()),
        }
    };
    match (private, public) {
        (None, None) => Err(MISSING_KEY.into()),
        (None, Some((n, _, der))) => {
            check_rsa_public_size(&n)?;
            Ok(Keys {
                signer: None,
                verifier: Verifier::Rsa(der),
            })
        }
        (Some(pair), public) => {
            if let Some((n, e, _)) = public {
                let (pn, pe) = rsa_components(pair.public().as_ref()).ok_or(NOT_RSA_PRIVATE)?;
                // etcd's check: `pub.E != priv.E && pub.N.Cmp(priv.N) != 0`.
                if der::unsigned(&e) != der::unsigned(pe) && der::unsigned(&n) != der::unsigned(pn)
                {
                    return Err(KEY_MISMATCH.into());
                }
            }
            let signer = Signer::Rsa(pair);
            Ok(Keys {
                verifier: signer.verifier(),
                signer: Some(signer),
            })
        }
    }
}

fn check_rsa_public_size(n: &[u8]) -> Result<(), String> {
    let bits = der::bit_len(n);
    if (2048..=8192).contains(&bits) {
        Ok(())
    } else {
        Err(format!(
            "raftkv: RSA public keys of 2048 to 8192 bits are supported (ring); this one has {bits}"
        ))
    }
}

fn ec_keys(method: &SignMethod, public: &[u8], private: &[u8]) -> Result<Keys, String> {
    if method.hash == Hash::Sha512 {
        return Err(
            "raftkv: sign-method ES512 is not supported (ring has no P-521); use ES256 or ES384"
                .into(),
        );
    }
    let private = if private.is_empty() {
        None
    } else {
        Some(ec_private(&pem(private)?)?)
    };
    let public = if public.is_empty() {
        None
    } else {
        match public_key(&pem(public)?)? {
            PublicKey::Ec { curve, point } => Some((curve, point)),
            _ => return Err(NOT_EC_PUBLIC.into()),
        }
    };
    match (private, public) {
        (None, None) => Err(MISSING_KEY.into()),
        (None, Some((curve, point))) => {
            curve.in_ring()?;
            Ok(Keys {
                signer: None,
                verifier: Verifier::Ecdsa(point, curve),
            })
        }
        (Some((pair, curve)), public) => {
            if let Some((pub_curve, point)) = public {
                // etcd's check: curve, X and Y all different.
                let mine = pair.public_key().as_ref();
                let (x, y) = coordinates(mine, curve);
                let (px, py) = coordinates(&point, pub_curve);
                if pub_curve != curve
                    && der::unsigned(x) != der::unsigned(px)
                    && der::unsigned(y) != der::unsigned(py)
                {
                    return Err(KEY_MISMATCH.into());
                }
            }
            let signer = Signer::Ecdsa(pair, curve);
            Ok(Keys {
                verifier: signer.verifier(),
                signer: Some(signer),
            })
        }
    }
}

/// X and Y of an uncompressed point (empty where the point is short).
fn coordinates(point: &[u8], curve: Curve) -> (&[u8], &[u8]) {
    let size = curve.field_bytes();
    let body = point.get(1..).unwrap_or_default();
    let x = body.get(..size).unwrap_or_default();
    let y = body.get(size..).unwrap_or_default();
    (x, y)
}

fn pem(file: &[u8]) -> Result<Vec<u8>, String> {
    der::first_pem_block(file).ok_or_else(|| NOT_PEM.to_string())
}

/// What a private key's DER turned out to be.
enum PrivateKey {
    /// PKCS#1 (`RSAPrivateKey`) or PKCS#8 DER of an RSA key.
    Rsa { der: Vec<u8>, pkcs8: bool },
    /// PKCS#8 DER of an EC key.
    Ec { pkcs8: Vec<u8>, curve: Curve },
    /// Ed25519 (neither RSA nor EC).
    Other,
}

/// golang-jwt's `ParseRSAPrivateKeyFromPEM` after the PEM step.
fn rsa_private(der: &[u8]) -> Result<RsaKeyPair, String> {
    let key = if is_pkcs1(der) {
        PrivateKey::Rsa {
            der: der.to_vec(),
            pkcs8: false,
        }
    } else {
        pkcs8(der)?
    };
    let PrivateKey::Rsa { der, pkcs8 } = key else {
        return Err(NOT_RSA_PRIVATE.into());
    };
    let pair = if pkcs8 {
        RsaKeyPair::from_pkcs8(&der)
    } else {
        RsaKeyPair::from_der(&der)
    };
    pair.map_err(|e| {
        format!(
            "raftkv: this RSA private key cannot sign ({e}): ring takes RSA private keys of 2048 to 4096 bits with public exponent 65537"
        )
    })
}

/// golang-jwt's `ParseECPrivateKeyFromPEM` after the PEM step.
fn ec_private(der: &[u8]) -> Result<(EcdsaKeyPair, Curve), String> {
    let key = match sec1(der) {
        Some(key) => key,
        None => pkcs8(der)?,
    };
    let PrivateKey::Ec { pkcs8, curve } = key else {
        return Err(NOT_EC_PRIVATE.into());
    };
    curve.in_ring()?;
    let alg = match curve {
        Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        _ => &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
    };
    let pair = EcdsaKeyPair::from_pkcs8(alg, &pkcs8, &SystemRandom::new()).map_err(|e| {
        format!(
            "raftkv: this EC private key cannot sign ({e}): ring needs the public key inside the private key file (as openssl writes it)"
        )
    })?;
    Ok((pair, curve))
}

/// Whether `der` has the shape of PKCS#1's `RSAPrivateKey` (two INTEGERs first).
fn is_pkcs1(der: &[u8]) -> bool {
    let Some(seq) = der::only(der, tag::SEQUENCE) else {
        return false;
    };
    let mut r = Reader::new(seq.value);
    r.expect(tag::INTEGER).is_some() && r.expect(tag::INTEGER).is_some()
}

/// A SEC1 `ECPrivateKey` Go's `x509.ParseECPrivateKey` takes (version 1, a named curve it
/// knows), wrapped as PKCS#8 for ring.
fn sec1(der: &[u8]) -> Option<PrivateKey> {
    let seq = der::only(der, tag::SEQUENCE)?;
    let mut r = Reader::new(seq.value);
    let version = r.expect(tag::INTEGER)?;
    r.expect(tag::OCTET_STRING)?;
    if version.value != [1] {
        return None;
    }
    let params = r.expect(tag::CONTEXT_0)?;
    let oid = der::only(params.value, tag::OID)?;
    let curve = Curve::from_oid(oid.value)?;
    Some(PrivateKey::Ec {
        pkcs8: wrap_sec1(der, curve),
        curve,
    })
}

/// PKCS#8 `PrivateKeyInfo` around a SEC1 key.
fn wrap_sec1(sec1: &[u8], curve: Curve) -> Vec<u8> {
    der::sequence(&[
        &der::element(tag::INTEGER, &[0]),
        &der::sequence(&[
            &der::element(tag::OID, OID_EC),
            &der::element(tag::OID, curve.oid()),
        ]),
        &der::element(tag::OCTET_STRING, sec1),
    ])
}

/// Go's `x509.ParsePKCS8PrivateKey`: what the key is, or Go's error.
fn pkcs8(der: &[u8]) -> Result<PrivateKey, String> {
    let Some((oid, params)) = pkcs8_algorithm(der) else {
        if looks_like_sec1(der) {
            return Err(USE_EC_PARSER.into());
        }
        if is_pkcs1(der) {
            return Err(USE_PKCS1_PARSER.into());
        }
        return Err("asn1: structure error: the first PEM block is no PKCS#8 private key".into());
    };
    match oid {
        OID_RSA => Ok(PrivateKey::Rsa {
            der: der.to_vec(),
            pkcs8: true,
        }),
        OID_EC => {
            let curve = params
                .and_then(|p| der::only(p, tag::OID))
                .and_then(|o| Curve::from_oid(o.value))
                .ok_or("x509: failed to parse EC private key embedded in PKCS#8: x509: unknown elliptic curve")?;
            Ok(PrivateKey::Ec {
                pkcs8: der.to_vec(),
                curve,
            })
        }
        OID_ED25519 => Ok(PrivateKey::Other),
        other => Err(format!(
            "x509: PKCS#8 wrapping contained private key with unknown algorithm: {}",
            dotted(other)
        )),
    }
}

/// The algorithm OID (and its parameters' encoding) of a PKCS#8 `PrivateKeyInfo`.
fn pkcs8_algorithm(der: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let seq = der::only(der, tag::SEQUENCE)?;
    let mut r = Reader::new(seq.value);
    r.expect(tag::INTEGER)?;
    let alg = r.expect(tag::SEQUENCE)?;
    r.expect(tag::OCTET_STRING)?;
    let mut a = Reader::new(alg.value);
    let oid = a.expect(tag::OID)?;
    let params = a.read().map(|e| e.raw);
    Some((oid.value, params))
}

/// Whether `der` has SEC1's shape (an INTEGER, then an OCTET STRING).
fn looks_like_sec1(der: &[u8]) -> bool {
    let Some(seq) = der::only(der, tag::SEQUENCE) else {
        return false;
    };
    let mut r = Reader::new(seq.value);
    r.expect(tag::INTEGER).is_some() && r.expect(tag::OCTET_STRING).is_some()
}

/// A public key as Go's `x509` parses it.
enum PublicKey {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
        der: Vec<u8>,
    },
    Ec {
        curve: Curve,
        point: Vec<u8>,
    },
    Other,
}

/// golang-jwt's public-key parse after the PEM step: `x509.ParsePKIXPublicKey`, else the
/// key of `x509.ParseCertificate` (whose error is the one reported).
fn public_key(der: &[u8]) -> Result<PublicKey, String> {
    if let Some(key) = der::only(der, tag::SEQUENCE).and_then(|s| spki(s.raw, true)) {
        return Ok(key);
    }
    certificate_key(der)
}

/// A `SubjectPublicKeyInfo`. `strict`: as `ParsePKIXPublicKey` (unknown algorithms and bad
/// keys fail); else as inside a certificate (an unknown algorithm is a key of no use).
fn spki(der: &[u8], strict: bool) -> Option<PublicKey> {
    let seq = der::only(der, tag::SEQUENCE)?;
    let mut r = Reader::new(seq.value);
    let alg = r.expect(tag::SEQUENCE)?;
    let bits = r.expect(tag::BIT_STRING)?;
    if !r.is_empty() {
        return None;
    }
    let (&unused, key) = bits.value.split_first()?;
    if unused != 0 {
        return None;
    }
    let mut a = Reader::new(alg.value);
    let oid = a.expect(tag::OID)?;
    let params = a.read();
    let parsed = match oid.value {
        OID_RSA => {
            let (n, e) = rsa_components(key)?;
            Some(PublicKey::Rsa {
                n: n.to_vec(),
                e: e.to_vec(),
                der: key.to_vec(),
            })
        }
        OID_EC => {
            let curve = params
                .filter(|p| p.tag == tag::OID)
                .and_then(|p| Curve::from_oid(p.value))?;
            let size = curve.field_bytes();
            (key.len() == 1 + 2 * size && key[0] == 4).then(|| PublicKey::Ec {
                curve,
                point: key.to_vec(),
            })
        }
        OID_ED25519 => Some(PublicKey::Other),
        _ => None,
    };
    match parsed {
        Some(key) => Some(key),
        None if strict => None,
        None => Some(PublicKey::Other),
    }
}

/// Modulus and exponent of a DER `RSAPublicKey`.
fn rsa_components(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let seq = der::only(der, tag::SEQUENCE)?;
    let mut r = Reader::new(seq.value);
    let n = r.expect(tag::INTEGER)?;
    let e = r.expect(tag::INTEGER)?;
    r.is_empty().then_some((n.value, e.value))
}

/// The public key of an X.509 certificate, with Go's error where it stops.
fn certificate_key(der: &[u8]) -> Result<PublicKey, String> {
    let cert = der::only(der, tag::SEQUENCE).ok_or("x509: malformed certificate")?;
    let mut outer = Reader::new(cert.value);
    let tbs = outer
        .expect(tag::SEQUENCE)
        .ok_or("x509: malformed tbs certificate")?;
    let mut r = Reader::new(tbs.value);
    if r.peek_tag() == Some(tag::CONTEXT_0) {
        r.read().ok_or("x509: malformed version")?;
    }
    r.expect(tag::INTEGER)
        .ok_or("x509: malformed serial number")?;
    r.expect(tag::SEQUENCE)
        .ok_or("x509: malformed signature algorithm identifier")?;
    r.expect(tag::SEQUENCE).ok_or("x509: malformed issuer")?;
    r.expect(tag::SEQUENCE).ok_or("x509: malformed validity")?;
    r.expect(tag::SEQUENCE).ok_or("x509: malformed subject")?;
    let key = r.expect(tag::SEQUENCE).ok_or("x509: malformed spki")?;
    outer
        .expect(tag::SEQUENCE)
        .ok_or("x509: malformed algorithm identifier")?;
    outer
        .expect(tag::BIT_STRING)
        .ok_or("x509: malformed signature")?;
    spki(key.raw, false).ok_or_else(|| "x509: malformed public key".to_string())
}

/// An OID in dotted form (Go's `%v` of an `asn1.ObjectIdentifier`).
fn dotted(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    for &b in oid {
        value = value
            .saturating_mul(128)
            .saturating_add(u64::from(b & 0x7f));
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_print_dotted() {
        assert_eq!(dotted(OID_RSA), "1.2.840.113549.1.1.1");
        assert_eq!(dotted(OID_P384), "1.3.132.0.34");
        assert_eq!(dotted(&[0x88, 0x37]), "2.999");
    }

    #[test]
    fn garbage_is_refused_with_gos_texts() {
        let sha = super::super::method::lookup("RS256");
        let super::super::method::Lookup::Supported(rs) = sha else {
            unreachable!()
        };
        assert_eq!(load(&rs, b"", b"").unwrap_err(), MISSING_KEY);
        assert_eq!(load(&rs, b"", b"not pem").unwrap_err(), NOT_PEM);
        assert_eq!(load(&rs, b"not pem", b"").unwrap_err(), NOT_PEM);
        let pem_of = |der: &[u8]| {
            use base64::Engine;
            format!(
                "-----BEGIN X-----\n{}\n-----END X-----\n",
                base64::engine::general_purpose::STANDARD.encode(der)
            )
        };
        let junk = pem_of(&[1, 2, 3]);
        assert_eq!(
            load(&rs, junk.as_bytes(), b"").unwrap_err(),
            "x509: malformed certificate"
        );
        // A private key given as the public key: its first element is no tbs SEQUENCE.
        let sec1 = der::sequence(&[
            &der::element(tag::INTEGER, &[1]),
            &der::element(tag::OCTET_STRING, &[7; 32]),
        ]);
        assert_eq!(
            load(&rs, pem_of(&sec1).as_bytes(), b"").unwrap_err(),
            "x509: malformed tbs certificate"
        );
        assert_eq!(
            load(&rs, b"", pem_of(&sec1).as_bytes()).unwrap_err(),
            USE_EC_PARSER
        );
    }
}
