//! The little of PEM and DER that reading JWT keys takes: the first PEM block of a file as
//! Go's `pem.Decode` finds it (whatever its label), and a reader of definite-length DER
//! elements. Written here because the key files are parsed the way golang-jwt parses them
//! (PKCS#1 then PKCS#8 for RSA, SEC1 then PKCS#8 for EC, SPKI then a certificate for public
//! keys), which no PEM crate does; every length is checked against the bytes at hand.

use base64::Engine;

/// Largest key file read (a 16384-bit RSA key in PEM is about 13 KiB).
pub const MAX_KEY_FILE_BYTES: usize = 1 << 20;

/// DER tags used by key formats.
pub mod tag {
    /// INTEGER.
    pub const INTEGER: u8 = 0x02;
    /// BIT STRING.
    pub const BIT_STRING: u8 = 0x03;
    /// OCTET STRING.
    pub const OCTET_STRING: u8 = 0x04;
    /// NULL.
    pub const NULL: u8 = 0x05;
    /// OBJECT IDENTIFIER.
    pub const OID: u8 = 0x06;
    /// SEQUENCE.
    pub const SEQUENCE: u8 = 0x30;
    /// `[0]` constructed (explicit context tag 0).
    pub const CONTEXT_0: u8 = 0xa0;
    /// `[1]` constructed (explicit context tag 1).
    pub const CONTEXT_1: u8 = 0xa1;
}

/// The bytes of the first PEM block in `text` (Go's `pem.Decode`: the label is not
/// looked at; a malformed block is skipped for the next one), or `None`.
pub fn first_pem_block(text: &[u8]) -> Option<Vec<u8>> {
    let mut rest = text;
    loop {
        let start = find(rest, b"-----BEGIN ")?;
        // Go only takes "-----BEGIN " at the start of the input or of a line.
        if start > 0 && rest[start - 1] != b'\n' {
            rest = &rest[start + 1..];
            continue;
        }
        let after = &rest[start + b"-----BEGIN ".len()..];
        match pem_block(after) {
            Some(bytes) => return Some(bytes),
            None => rest = after,
        }
    }
}

/// The block whose `BEGIN` line's label starts `after`.
fn pem_block(after: &[u8]) -> Option<Vec<u8>> {
    let line_end = find(after, b"\n").unwrap_or(after.len());
    let line = trim_end(&after[..line_end]);
    let label = line.strip_suffix(b"-----")?;
    let body = after.get(line_end + 1..)?;
    let mut end_marker = b"-----END ".to_vec();
    end_marker.extend_from_slice(label);
    end_marker.extend_from_slice(b"-----");
    let end = find(body, &end_marker)?;
    if end > 0 && body[end - 1] != b'\n' {
        return None;
    }
    let mut body = &body[..end];
    // RFC 1421 headers ("Proc-Type: ..."): lines with a colon, ended by a blank line.
    if let Some(first) = body.split(|&b| b == b'\n').next()
        && first.contains(&b':')
    {
        let blank = find(body, b"\n\n").or_else(|| find(body, b"\r\n\r\n"))?;
        body = &body[blank..];
    }
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn trim_end(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// A DER element: its tag, its contents, and the whole encoding (tag and length included).
#[derive(Debug, Clone, Copy)]
pub struct Element<'a> {
    /// The identifier octet (single-byte tags only).
    pub tag: u8,
    /// The contents.
    pub value: &'a [u8],
    /// Tag, length and contents.
    pub raw: &'a [u8],
}

/// A cursor over DER elements.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads the elements of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The tag of the next element, if any.
    pub fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// The next element, if it is well formed (single-byte tag, definite minimal-or-not
    /// length within the input).
    pub fn read(&mut self) -> Option<Element<'a>> {
        let (&tag, after_tag) = self.rest.split_first()?;
        if tag & 0x1f == 0x1f {
            return None; // multi-byte tags appear in no key format
        }
        let (&first, mut after_len) = after_tag.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || after_len.len() < count {
                return None; // indefinite, or longer than anything we read
            }
            let mut len = 0usize;
            for &b in &after_len[..count] {
                len = (len << 8) | usize::from(b);
            }
            after_len = &after_len[count..];
            len
        };
        if after_len.len() < len {
            return None;
        }
        let header = self.rest.len() - after_len.len();
        let raw = &self.rest[..header + len];
        let value = &after_len[..len];
        self.rest = &after_len[len..];
        Some(Element { tag, value, raw })
    }

    /// The next element if it has `tag`.
    pub fn expect(&mut self, tag: u8) -> Option<Element<'a>> {
        if self.peek_tag()? != tag {
            return None;
        }
        self.read()
    }
}

/// The single element `bytes` hold, if it has `tag` and nothing follows it.
pub fn only(bytes: &[u8], tag: u8) -> Option<Element<'_>> {
    let mut r = Reader::new(bytes);
    let e = r.expect(tag)?;
    r.is_empty().then_some(e)
}

/// An unsigned INTEGER's magnitude without leading zero bytes (Go's `big.Int` value).
pub fn unsigned(integer: &[u8]) -> &[u8] {
    let start = integer
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(integer.len());
    &integer[start..]
}

/// The length in bits of an unsigned big-endian magnitude.
pub fn bit_len(magnitude: &[u8]) -> usize {
    let m = unsigned(magnitude);
    match m.first() {
        None => 0,
        Some(&b) => (m.len() - 1) * 8 + (8 - b.leading_zeros() as usize),
    }
}

/// DER of a SEQUENCE holding `parts` (already encoded elements).
pub fn sequence(parts: &[&[u8]]) -> Vec<u8> {
    let body: Vec<u8> = parts.concat();
    element(tag::SEQUENCE, &body)
}

/// DER of one element.
pub fn element(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = body.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_well_formed_block_is_taken_whatever_its_label() {
        let text = b"junk\n-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n-----BEGIN X-----\nAQID\n-----END X-----\n";
        assert_eq!(
            first_pem_block(text).unwrap(),
            [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]
        );
        // A malformed block (bad base64) is skipped for the next.
        let text =
            b"-----BEGIN A-----\n!!\n-----END A-----\n-----BEGIN B-----\nAQID\n-----END B-----\n";
        assert_eq!(first_pem_block(text).unwrap(), [1, 2, 3]);
        // Headers before a blank line are skipped.
        let text = b"-----BEGIN A-----\nProc-Type: 4,X\n\nAQID\n-----END A-----\n";
        assert_eq!(first_pem_block(text).unwrap(), [1, 2, 3]);
        for bad in [
            &b""[..],
            b"-----BEGIN A-----\nAQID\n",
            b"-----BEGIN A-----\nAQID\n-----END B-----\n",
            b"x-----BEGIN A-----\nAQID\n-----END A-----\n",
            b"-----BEGIN A\nAQID\n-----END A-----\n",
        ] {
            assert_eq!(
                first_pem_block(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn der_lengths_are_checked_against_the_input() {
        let seq = sequence(&[&element(tag::INTEGER, &[0, 0x80]), &element(tag::NULL, &[])]);
        let e = only(&seq, tag::SEQUENCE).unwrap();
        let mut r = Reader::new(e.value);
        assert_eq!(unsigned(r.expect(tag::INTEGER).unwrap().value), [0x80]);
        assert!(r.expect(tag::INTEGER).is_none());
        assert!(r.expect(tag::NULL).is_some());
        assert!(r.is_empty());
        let long = element(tag::OCTET_STRING, &[7; 300]);
        assert_eq!(&long[..4], [0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(only(&long, tag::OCTET_STRING).unwrap().value.len(), 300);
        for bad in [
            &[0x30, 0x05, 0x02][..],
            &[0x30, 0x80, 0, 0],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x1f, 0x01, 0],
            &[0x30],
            &[],
        ] {
            assert!(Reader::new(bad).read().is_none(), "{bad:?}");
        }
        assert!(
            only(&[0x05, 0x00, 0x00], tag::NULL).is_none(),
            "trailing bytes"
        );
        assert_eq!(bit_len(&[0, 0x01, 0]), 9);
        assert_eq!(bit_len(&[0x80; 256]), 2048);
        assert_eq!(bit_len(&[]), 0);
    }
}
