//! The compact JWT form etcd 3.4 makes and checks (golang-jwt's `SignedString` and `Parse`
//! with `MapClaims`): `base64url(header) "." base64url(claims) "." base64url(signature)`,
//! no padding.
//!
//! Made: header `{"alg":<method>,"typ":"JWT"}`, claims `{"exp":…,"revision":…,"username":…}`,
//! keys in Go's order, strings escaped as Go's encoding/json escapes them, so a token is the
//! same bytes etcd would make for the same user, revision, expiry and key.
//!
//! Checked, in golang-jwt's order: three segments; header and claims decode and are JSON
//! (the claims are the first JSON value of their segment, as Go's decoder reads them); `alg`
//! names the configured method; `exp`, `iat`, `nbf` hold at the current second where given
//! (a number, 0 meaning absent); the signature verifies. etcd then reads `username` (a
//! string) and `revision` (a number), and so does this.
//!
//! Tokens come from anyone: the token is at most [`MAX_TOKEN_BYTES`], so every decoded part
//! is smaller still; serde_json bounds the nesting; nothing here panics.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::Value;

use super::method::{self, SignMethod};

/// Longest token checked (the header limit of the caller, `crate::caller::MAX_TOKEN_BYTES`).
pub const MAX_TOKEN_BYTES: usize = crate::caller::MAX_TOKEN_BYTES;

/// Go's `base64.RawURLEncoding`: no padding (a `=` is an error), trailing bits not checked.
const RAW_URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `username`.
    pub username: String,
    /// `revision`: the auth revision when the token was made.
    pub revision: u64,
}

/// A token taken apart, its claims checked but not yet its signature.
#[derive(Debug)]
pub struct Parsed<'a> {
    /// What it says.
    pub claims: Claims,
    /// `header "." claims`, what the signature covers.
    pub signed: &'a str,
    /// The decoded signature.
    pub signature: Vec<u8>,
}

/// The part of a token before its signature: header and claims, encoded.
pub fn signing_input(method: &SignMethod, username: &str, revision: u64, exp: i64) -> String {
    let header = format!(r#"{{"alg":{},"typ":"JWT"}}"#, go_json_string(method.name));
    let claims = format!(
        r#"{{"exp":{exp},"revision":{revision},"username":{}}}"#,
        go_json_string(username)
    );
    format!("{}.{}", RAW_URL.encode(header), RAW_URL.encode(claims))
}

/// `signing_input` and `signature` joined into the token.
pub fn finish(signing_input: &str, signature: &[u8]) -> String {
    format!("{signing_input}.{}", RAW_URL.encode(signature))
}

/// A JSON string as Go's encoding/json writes it (`<`, `>`, `&`, U+2028 and U+2029 escaped).
fn go_json_string(s: &str) -> String {
    let json = Value::String(s.to_string()).to_string();
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// Takes `token` apart for `method` at Unix second `now`; why not, if it is refused.
pub fn parse<'a>(token: &'a str, method: &SignMethod, now: i64) -> Result<Parsed<'a>, String> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err("token too long".into());
    }
    let mut parts = token.splitn(4, '.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("token contains an invalid number of segments".into());
    };
    let header: Value = decode(header)
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| format!("header: {e}"))?;
    let payload = decode(payload).map_err(|e| format!("claims: {e}"))?;
    let claims = serde_json::Deserializer::from_slice(&payload)
        .into_iter::<Value>()
        .next()
        .ok_or("claims: empty")?
        .map_err(|e| format!("claims: {e}"))?;
    match header.get("alg").and_then(Value::as_str) {
        None => return Err("signing method (alg) is unspecified.".into()),
        Some(alg) if !method::known(alg) => {
            return Err("signing method (alg) is unavailable.".into());
        }
        Some(alg) if alg != method.name => return Err("invalid signing method".into()),
        Some(_) => {}
    }
    check_times(&claims, now)?;
    let signature = decode(signature).map_err(|e| format!("signature: {e}"))?;
    let username = claims
        .get("username")
        .and_then(Value::as_str)
        .ok_or("no username claim")?
        .to_string();
    let revision = claims
        .get("revision")
        .and_then(revision_of)
        .ok_or("no revision claim")?;
    let signed_len = token.len() - signature_len(token);
    Ok(Parsed {
        claims: Claims { username, revision },
        signed: &token[..signed_len],
        signature,
    })
}

/// Length of the last segment and its dot.
fn signature_len(token: &str) -> usize {
    token.rfind('.').map_or(0, |dot| token.len() - dot)
}

fn decode(segment: &str) -> Result<Vec<u8>, String> {
    RAW_URL.decode(segment).map_err(|e| e.to_string())
}

/// etcd's `uint64(claims["revision"].(float64))`: any JSON number; a fraction is cut off
/// and a negative one is refused (Go's conversion is undefined there).
fn revision_of(v: &Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let f = v.as_f64()?;
    (f.is_finite() && f >= 0.0).then_some(f as u64)
}

/// golang-jwt's `MapClaims.Valid` at second `now`.
fn check_times(claims: &Value, now: i64) -> Result<(), String> {
    let now = now as f64;
    let time = |name: &str| -> Result<Option<f64>, String> {
        match claims.get(name) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(0.0) => Ok(None),
                Some(t) => Ok(Some(t)),
                None => Err(format!("{name} is not a number")),
            },
        }
    };
    if let Some(exp) = time("exp")?
        && now >= exp
    {
        return Err("Token is expired".into());
    }
    if let Some(iat) = time("iat")?
        && now < iat
    {
        return Err("Token used before issued".into());
    }
    if let Some(nbf) = time("nbf")?
        && now < nbf
    {
        return Err("Token is not valid yet".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::method::{Lookup, lookup};

    fn rs256() -> SignMethod {
        match lookup("RS256") {
            Lookup::Supported(m) => m,
            _ => unreachable!(),
        }
    }

    fn token(header: &str, claims: &str, sig: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            RAW_URL.encode(header),
            RAW_URL.encode(claims),
            RAW_URL.encode(sig)
        )
    }

    #[test]
    fn made_as_golang_jwt_makes_it() {
        let input = signing_input(&rs256(), "a<b>&c", 7, 1_700_000_000);
        let (h, c) = input.split_once('.').unwrap();
        assert_eq!(
            RAW_URL.decode(h).unwrap(),
            br#"{"alg":"RS256","typ":"JWT"}"#
        );
        assert_eq!(
            String::from_utf8(RAW_URL.decode(c).unwrap()).unwrap(),
            r#"{"exp":1700000000,"revision":7,"username":"a\u003cb\u003e\u0026c"}"#
        );
        let t = finish(&input, &[1, 2, 3]);
        let p = parse(&t, &rs256(), 1_699_999_999).unwrap();
        assert_eq!(
            p.claims,
            Claims {
                username: "a<b>&c".into(),
                revision: 7
            }
        );
        assert_eq!(p.signed, input);
        assert_eq!(p.signature, [1, 2, 3]);
        assert_eq!(
            parse(&t, &rs256(), 1_700_000_000).unwrap_err(),
            "Token is expired"
        );
    }

    #[test]
    fn claims_are_checked_as_golang_jwt_checks_them() {
        let h = r#"{"alg":"RS256","typ":"JWT"}"#;
        let now = 1000;
        let ok = |claims: &str| parse(&token(h, claims, b"s"), &rs256(), now).map(|p| p.claims);
        assert_eq!(
            ok(r#"{"username":"u","revision":3}"#).unwrap().revision,
            3,
            "no exp: never expires"
        );
        assert!(
            ok(r#"{"username":"u","revision":3,"exp":0}"#).is_ok(),
            "exp 0 is no exp"
        );
        assert!(
            ok(r#"{"username":"u","revision":3.9,"exp":1001}"#)
                .unwrap()
                .revision
                == 3
        );
        // Go compares the instant: half a second left is still valid.
        assert!(ok(r#"{"username":"u","revision":3,"exp":1000.5}"#).is_ok());
        assert!(ok(r#"{"username":"u","revision":3,"exp":1000}"#).is_err());
        assert!(ok(r#"{"username":"u","revision":3,"exp":"2000"}"#).is_err());
        assert!(ok(r#"{"username":"u","revision":3,"iat":1001}"#).is_err());
        assert!(ok(r#"{"username":"u","revision":3,"iat":1000,"nbf":1000}"#).is_ok());
        assert!(ok(r#"{"username":"u","revision":3,"nbf":1001}"#).is_err());
        assert!(ok(r#"{"username":"u","revision":-1}"#).is_err());
        assert!(ok(r#"{"username":"u","revision":"3"}"#).is_err());
        assert!(ok(r#"{"username":5,"revision":3}"#).is_err());
        assert!(ok(r#"{"revision":3}"#).is_err());
        assert!(ok(r#"[1]"#).is_err());
        assert!(ok(r#"null"#).is_err());
        // Go's decoder reads the first value only; duplicates: the last one counts.
        assert_eq!(
            ok(r#"{"username":"a","username":"b","revision":1} trailing"#)
                .unwrap()
                .username,
            "b"
        );
    }

    #[test]
    fn hostile_tokens_are_refused_without_panics() {
        let c = r#"{"username":"u","revision":1}"#;
        let good = token(r#"{"alg":"RS256"}"#, c, b"s");
        assert!(parse(&good, &rs256(), 0).is_ok());
        let mut cases = vec![
            String::new(),
            ".".into(),
            "..".into(),
            "...".into(),
            format!("{good}."),
            format!(".{good}"),
            good.replace('.', ".."),
            format!("{good}="),
            token(r#"{"alg":"HS256"}"#, c, b"s"),
            token(r#"{"alg":"none"}"#, c, b""),
            token(r#"{"alg":"XX"}"#, c, b"s"),
            token(r#"{"alg":5}"#, c, b"s"),
            token(r#"{}"#, c, b"s"),
            token("null", c, b"s"),
            token("[", c, b"s"),
            token(r#"{"alg":"RS256"} x"#, c, b"s"),
            token(
                &format!("{}{}", "[".repeat(5000), "]".repeat(5000)),
                c,
                b"s",
            ),
            token(r#"{"alg":"RS256"}"#, &"[".repeat(6000), b"s"),
            "a".repeat(MAX_TOKEN_BYTES + 1),
            format!("Bearer {good}"),
            "é.é.é".into(),
        ];
        cases.push(format!(
            "{}.{}.{}",
            RAW_URL.encode(r#"{"alg":"RS256"}"#),
            RAW_URL.encode(c),
            "%%%"
        ));
        for bad in cases {
            assert!(parse(&bad, &rs256(), 0).is_err(), "{bad:.80}");
        }
    }
}
