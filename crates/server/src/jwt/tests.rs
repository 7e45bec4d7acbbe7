//! JWT providers over keys made by openssl at test time (no key is committed): every sign
//! method round trip, verify-only members, hostile and foreign tokens, and the start-up
//! errors etcd 3.4.23 gives for the same files (observed with `/usr/bin/etcd`).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use super::*;
use crate::token_provider::TokenProvider;

/// Key files made by openssl in a temporary directory.
struct KeyDir {
    dir: tempfile::TempDir,
}

impl KeyDir {
    fn make() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let sh = |script: &str| {
            let out = Command::new("sh")
                .arg("-c")
                .arg(script)
                .current_dir(d)
                .output()
                .expect("sh");
            assert!(
                out.status.success(),
                "{script}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        sh("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.key 2>/dev/null");
        sh("openssl pkey -in rsa.key -pubout -out rsa.pub");
        sh("openssl rsa -in rsa.key -traditional -out rsa1.key 2>/dev/null");
        sh("openssl rsa -in rsa.key -RSAPublicKey_out -out rsa1.pub 2>/dev/null");
        sh("openssl req -x509 -new -key rsa.key -subj /CN=jwt -days 1 -out rsa.crt 2>/dev/null");
        sh(
            "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out other.key 2>/dev/null",
        );
        sh("openssl pkey -in other.key -pubout -out other.pub");
        sh(
            "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out small.key 2>/dev/null",
        );
        sh("openssl ecparam -name prime256v1 -genkey -noout -out ec.key");
        sh("openssl ec -in ec.key -pubout -out ec.pub 2>/dev/null");
        sh("openssl pkcs8 -topk8 -nocrypt -in ec.key -out ec8.key");
        sh("openssl ecparam -name prime256v1 -genkey -out ecparams.key");
        sh("openssl ecparam -name secp384r1 -genkey -noout -out ec384.key");
        sh("openssl ec -in ec384.key -pubout -out ec384.pub 2>/dev/null");
        sh("openssl ecparam -name secp521r1 -genkey -noout -out ec521.key");
        sh("openssl ec -in ec521.key -pubout -out ec521.pub 2>/dev/null");
        sh("openssl genpkey -algorithm ed25519 -out ed.key");
        sh("head -c 32 /dev/urandom > hmac.key");
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A provider from `jwt,<options>` with `{name}` replaced by the file's path.
    fn jwt(&self, options: &str) -> Result<Arc<Jwt>, String> {
        let mut option = format!("jwt,{options}");
        for entry in std::fs::read_dir(self.dir.path()).expect("dir") {
            let name = entry.expect("entry").file_name();
            let name = name.to_string_lossy();
            option = option.replace(&format!("{{{name}}}"), &self.path(&name));
        }
        match TokenProvider::from_option(&option) {
            Ok(TokenProvider::Jwt(jwt)) => Ok(jwt),
            Ok(other) => panic!("{option}: {other:?}"),
            Err(e) => Err(match &e {
                ProviderError::InvalidOptions { detail } => format!("{e} ({detail})"),
                _ => e.to_string(),
            }),
        }
    }
}

use std::sync::Arc;

fn now() -> SystemTime {
    SystemTime::now()
}

fn round_trip(jwt: &Jwt, verifier: &Jwt) {
    let token = jwt.assign("alice", 7, now()).expect("sign");
    assert_eq!(
        verifier.info(&token, now()),
        Ok(Claims {
            username: "alice".into(),
            revision: 7
        }),
        "{} {token}",
        jwt.method()
    );
}

#[test]
fn keys_made_by_openssl() {
    let k = KeyDir::make();
    every_method_signs_and_verifies(&k);
    verify_only_members_check_but_do_not_sign(&k);
    foreign_and_tampered_tokens_are_invalid(&k);
    tokens_expire_after_their_ttl(&k);
    bad_keys_are_refused_with_etcds_texts(&k);
    what_ring_cannot_do_is_refused_clearly(&k);
}

fn every_method_signs_and_verifies(k: &KeyDir) {
    for options in [
        "sign-method=RS256,priv-key={rsa.key},pub-key={rsa.pub}",
        "sign-method=RS384,priv-key={rsa1.key}",
        "sign-method=RS512,priv-key={rsa.key}",
        "sign-method=PS256,priv-key={rsa.key},pub-key={rsa.crt}",
        "sign-method=PS384,priv-key={rsa1.key}",
        "sign-method=PS512,priv-key={rsa.key}",
        "sign-method=ES256,priv-key={ec.key},pub-key={ec.pub}",
        "sign-method=ES256,priv-key={ec8.key}",
        "sign-method=ES384,priv-key={ec384.key},pub-key={ec384.pub}",
        "sign-method=HS256,priv-key={hmac.key}",
        "sign-method=HS384,priv-key={hmac.key},pub-key={rsa.pub}",
        "sign-method=HS512,priv-key={hmac.key}",
    ] {
        let jwt = k.jwt(options).unwrap_or_else(|e| panic!("{options}: {e}"));
        assert!(!jwt.verify_only());
        round_trip(&jwt, &jwt);
    }
}

fn verify_only_members_check_but_do_not_sign(k: &KeyDir) {
    for (signer, checker) in [
        (
            "sign-method=RS256,priv-key={rsa.key}",
            "sign-method=RS256,pub-key={rsa.pub}",
        ),
        (
            "sign-method=PS512,priv-key={rsa1.key}",
            "sign-method=PS512,pub-key={rsa.crt}",
        ),
        (
            "sign-method=ES256,priv-key={ec.key}",
            "sign-method=ES256,pub-key={ec.pub}",
        ),
        (
            "sign-method=ES384,priv-key={ec384.key}",
            "sign-method=ES384,pub-key={ec384.pub}",
        ),
    ] {
        let signer = k.jwt(signer).unwrap();
        let checker = k.jwt(checker).unwrap();
        assert!(checker.verify_only());
        round_trip(&signer, &checker);
        assert_eq!(checker.assign("alice", 1, now()).unwrap_err(), VERIFY_ONLY);
    }
}

fn foreign_and_tampered_tokens_are_invalid(k: &KeyDir) {
    let jwt = k.jwt("sign-method=RS256,priv-key={rsa.key}").unwrap();
    let other = k.jwt("sign-method=RS256,priv-key={other.key}").unwrap();
    let token = other.assign("root", 9, now()).unwrap();
    assert_eq!(jwt.info(&token, now()).unwrap_err(), "signature is invalid");
    // Same key, another method.
    let ps = k.jwt("sign-method=PS256,priv-key={rsa.key}").unwrap();
    let token = ps.assign("root", 9, now()).unwrap();
    assert_eq!(
        jwt.info(&token, now()).unwrap_err(),
        "invalid signing method"
    );
    // The claims changed under a valid signature.
    let token = jwt.assign("alice", 9, now()).unwrap();
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = token::signing_input(&jwt.method, "root", 9, i64::MAX);
    let forged_claims = forged.split('.').nth(1).unwrap();
    parts[1] = forged_claims;
    assert!(jwt.info(&parts.join("."), now()).is_err());
    // HS256 with the public key as the secret (the classic confusion) is another method.
    let public = std::fs::read(k.path("rsa.pub")).unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &public);
    let hs = match method::lookup("HS256") {
        method::Lookup::Supported(m) => m,
        _ => unreachable!(),
    };
    let input = token::signing_input(&hs, "root", 9, i64::MAX);
    let forged = token::finish(&input, ring::hmac::sign(&key, input.as_bytes()).as_ref());
    assert_eq!(
        jwt.info(&forged, now()).unwrap_err(),
        "invalid signing method"
    );
    // A truncated signature, an empty one, and one of another length.
    let token = jwt.assign("alice", 9, now()).unwrap();
    let cut = &token[..token.len() - 4];
    assert!(jwt.info(cut, now()).is_err());
    let (head, _) = token.rsplit_once('.').unwrap();
    assert!(jwt.info(&format!("{head}."), now()).is_err());
    assert!(jwt.info(&format!("{head}.AAAA"), now()).is_err());
    // ES: a DER signature instead of r || s.
    let es = k.jwt("sign-method=ES256,priv-key={ec.key}").unwrap();
    let token = es.assign("alice", 1, now()).unwrap();
    let (head, _) = token.rsplit_once('.').unwrap();
    assert!(es.info(&format!("{head}.MEUCIQ"), now()).is_err());
}

fn tokens_expire_after_their_ttl(k: &KeyDir) {
    let jwt = k.jwt("sign-method=ES256,priv-key={ec.key},ttl=2s").unwrap();
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_400);
    let token = jwt.assign("alice", 3, t0).unwrap();
    assert!(jwt.info(&token, t0).is_ok());
    assert!(jwt.info(&token, t0 + Duration::from_millis(1500)).is_ok());
    // exp = the second of now + ttl: valid until that second starts.
    assert_eq!(
        jwt.info(&token, t0 + Duration::from_millis(1600))
            .unwrap_err(),
        "Token is expired"
    );
    // The default is five minutes.
    let jwt = k.jwt("sign-method=ES256,priv-key={ec.key}").unwrap();
    let token = jwt.assign("alice", 3, t0).unwrap();
    assert!(jwt.info(&token, t0 + Duration::from_secs(299)).is_ok());
    assert!(jwt.info(&token, t0 + Duration::from_secs(300)).is_err());
    // A negative ttl (etcd takes one) makes tokens that are never valid.
    let jwt = k
        .jwt("sign-method=ES256,priv-key={ec.key},ttl=-1m")
        .unwrap();
    let token = jwt.assign("alice", 3, t0).unwrap();
    assert!(jwt.info(&token, t0).is_err());
}

fn bad_keys_are_refused_with_etcds_texts(k: &KeyDir) {
    for (options, message) in [
        // Observed with etcd 3.4.23 and the same kinds of files.
        ("sign-method=RS256", "auth: missing key data"),
        (
            "sign-method=RS256,priv-key=/dev/null",
            "auth: missing key data",
        ),
        (
            "sign-method=RS256,priv-key=/etc/hostname",
            "invalid key: Key must be a PEM encoded PKCS1 or PKCS8 key",
        ),
        (
            "sign-method=ES256,pub-key=/etc/hostname",
            "invalid key: Key must be a PEM encoded PKCS1 or PKCS8 key",
        ),
        (
            "sign-method=RS256,priv-key={ec.key}",
            "x509: failed to parse private key (use ParseECPrivateKey instead for this key format)",
        ),
        (
            "sign-method=RS256,priv-key={ec8.key}",
            "key is not a valid RSA private key",
        ),
        (
            "sign-method=ES256,priv-key={rsa.key}",
            "key is not a valid ECDSA private key",
        ),
        (
            "sign-method=ES256,priv-key={rsa1.key}",
            "x509: failed to parse private key (use ParsePKCS1PrivateKey instead for this key format)",
        ),
        (
            "sign-method=RS256,pub-key={rsa.key}",
            "x509: malformed tbs certificate",
        ),
        (
            "sign-method=PS256,pub-key={rsa1.pub}",
            "x509: malformed tbs certificate",
        ),
        (
            "sign-method=ES256,pub-key={ec.key}",
            "x509: malformed tbs certificate",
        ),
        (
            "sign-method=ES256,pub-key={rsa.pub}",
            "key is not a valid ECDSA public key",
        ),
        (
            "sign-method=RS256,pub-key={ec.pub}",
            "key is not a valid RSA public key",
        ),
        (
            "sign-method=RS256,priv-key={ed.key}",
            "key is not a valid RSA private key",
        ),
        (
            "sign-method=ES256,priv-key={ec.key},pub-key={ec384.pub}",
            "auth: public and private keys don't match",
        ),
        (
            "sign-method=ES256,priv-key={ec.key},pub-key={ec521.pub}",
            "auth: public and private keys don't match",
        ),
    ] {
        assert_eq!(k.jwt(options).unwrap_err(), message, "{options}");
    }
    assert!(
        k.jwt("sign-method=ES256,priv-key={ecparams.key}")
            .unwrap_err()
            .starts_with("asn1: structure error"),
        "EC PARAMETERS is the first block"
    );
    // etcd's match check refuses a pair only when everything differs: two RSA keys with
    // the same exponent pass, and the private key is the one used.
    let jwt = k
        .jwt("sign-method=RS256,priv-key={rsa.key},pub-key={other.pub}")
        .unwrap();
    let mine = k.jwt("sign-method=RS256,pub-key={rsa.pub}").unwrap();
    round_trip(&jwt, &mine);
    // A key on another curve than the method's loads, but cannot sign (golang-jwt's
    // "key is invalid") and no token checks.
    let jwt = k.jwt("sign-method=ES256,priv-key={ec384.key}").unwrap();
    assert_eq!(jwt.assign("a", 1, now()).unwrap_err(), keys::INVALID_KEY);
    let es384 = k.jwt("sign-method=ES384,priv-key={ec384.key}").unwrap();
    let token = es384.assign("a", 1, now()).unwrap();
    assert!(jwt.info(&token, now()).is_err());
}

fn what_ring_cannot_do_is_refused_clearly(k: &KeyDir) {
    for (options, says) in [
        (
            "sign-method=ES512,priv-key={ec521.key}",
            "ES512 is not supported",
        ),
        (
            "sign-method=ES256,pub-key={ec521.pub}",
            "P-521 are not supported",
        ),
        (
            "sign-method=ES256,priv-key={ec521.key}",
            "P-521 are not supported",
        ),
        (
            "sign-method=RS256,priv-key={small.key}",
            "2048 to 4096 bits",
        ),
    ] {
        let e = k.jwt(options).unwrap_err();
        assert!(
            e.starts_with("raftkv: ") && e.contains(says),
            "{options}: {e}"
        );
    }
    let small_pub = k.path("small.pub");
    let out = Command::new("openssl")
        .args([
            "pkey",
            "-in",
            &k.path("small.key"),
            "-pubout",
            "-out",
            &small_pub,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let e = k.jwt("sign-method=RS256,pub-key={small.pub}").unwrap_err();
    assert!(e.contains("2048 to 8192 bits"), "{e}");
    assert!(Path::new(&small_pub).exists());
}

#[test]
fn hmac_tokens_have_golang_jwts_bytes() {
    // golang-jwt marshals the header and claims maps with Go's encoding/json (keys sorted),
    // so an HS256 token is fixed by user, revision, expiry and key.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    std::fs::write(&key, b"secret").unwrap();
    let TokenProvider::Jwt(jwt) = TokenProvider::from_option(&format!(
        "jwt,sign-method=HS256,priv-key={},ttl=0s",
        key.display()
    ))
    .unwrap() else {
        unreachable!()
    };
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let token = jwt.assign("root", 2, at).unwrap();
    let (input, signature) = token.rsplit_once('.').unwrap();
    assert_eq!(
        input,
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3MDAwMDAwMDAsInJldmlzaW9uIjoyLCJ1c2VybmFtZSI6InJvb3QifQ"
    );
    use base64::Engine;
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .unwrap();
    let hmac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"secret");
    assert!(ring::hmac::verify(&hmac, input.as_bytes(), &signature).is_ok());
    assert_eq!(
        jwt.info(&token, at - Duration::from_secs(1))
            .map(|c| c.revision),
        Ok(2)
    );
    assert!(
        jwt.info(&token, at).is_err(),
        "ttl 0: expired as it is made"
    );
}
