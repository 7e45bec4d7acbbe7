//! HPACK's static Huffman code (RFC 7541 Appendix B), decoding only.
//!
//! The code is canonical — codes of one length are consecutive, and shorter codes sort before
//! longer ones — so the 257 code lengths determine it, and decoding needs no tree: per bit
//! length, the first code and how many codes there are (DEFLATE's "puff" method). Strings
//! here are short header values, so a bit at a time is fast enough.

use std::sync::OnceLock;

/// Code length in bits of each symbol, 0..=255 and EOS (256), from RFC 7541 Appendix B.
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, //
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, //
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, //
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, //
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, //
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, //
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, //
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, //
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, //
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, //
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, //
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, //
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, //
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, //
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, //
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, //
    30,
];
/// The end-of-string symbol: never valid inside a string.
const EOS: u16 = 256;
/// The longest code.
const MAX_BITS: usize = 30;

/// The canonical decoding tables.
struct Canonical {
    /// Per length: the first code of that length, and the index of its symbol in `symbols`.
    first: [(u32, u16); MAX_BITS + 1],
    /// Per length: how many codes have it.
    count: [u16; MAX_BITS + 1],
    /// Symbols sorted by (length, symbol): the order the codes are assigned in.
    symbols: [u16; 257],
}

fn canonical() -> &'static Canonical {
    static TABLE: OnceLock<Canonical> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut count = [0u16; MAX_BITS + 1];
        for &len in &LENGTHS {
            count[usize::from(len)] += 1;
        }
        let mut first = [(0u32, 0u16); MAX_BITS + 1];
        let (mut code, mut index) = (0u32, 0u16);
        for len in 1..=MAX_BITS {
            code = (code + u32::from(count[len - 1])) << 1;
            first[len] = (code, index);
            index += count[len];
        }
        let mut symbols = [0u16; 257];
        let mut next = first.map(|(_, i)| i);
        for (symbol, &len) in (0u16..).zip(&LENGTHS) {
            symbols[usize::from(next[usize::from(len)])] = symbol;
            next[usize::from(len)] += 1;
        }
        Canonical {
            first,
            count,
            symbols,
        }
    })
}

/// A Huffman-coded string that RFC 7541 §5.2 forbids: EOS inside it, padding longer than
/// 7 bits, or padding that is not the most significant bits of EOS (all ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidHuffman;

/// Decodes `src`, appending to `out`.
pub fn decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), InvalidHuffman> {
    let table = canonical();
    // The shortest code has 5 bits: this bounds the output by the input.
    out.reserve(src.len() * 8 / 5);
    let (mut code, mut len) = (0u32, 0usize);
    for &byte in src {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            let (first, index) = table.first[len];
            let offset = code.wrapping_sub(first);
            if offset < u32::from(table.count[len]) {
                let symbol = table.symbols[usize::from(index) + offset as usize];
                if symbol == EOS {
                    return Err(InvalidHuffman);
                }
                out.push(symbol as u8);
                (code, len) = (0, 0);
            } else if len == MAX_BITS {
                return Err(InvalidHuffman);
            }
        }
    }
    // What is left must be padding: fewer than 8 bits, all ones.
    if len > 7 || code != (1u32 << len) - 1 {
        return Err(InvalidHuffman);
    }
    Ok(())
}

/// Encodes `src` (for tests and fuzz seeds: the rewriter itself always sends plain strings).
pub fn encode(src: &[u8]) -> Vec<u8> {
    let table = canonical();
    let mut codes = [0u32; 257];
    for len in 1..=MAX_BITS {
        let (first, index) = table.first[len];
        for k in 0..table.count[len] {
            codes[usize::from(table.symbols[usize::from(index + k)])] = first + u32::from(k);
        }
    }
    let mut out = Vec::with_capacity(src.len());
    let (mut bits, mut pending) = (0u64, 0u32);
    for &b in src {
        let len = u32::from(LENGTHS[usize::from(b)]);
        bits = (bits << len) | u64::from(codes[usize::from(b)]);
        pending += len;
        while pending >= 8 {
            pending -= 8;
            out.push((bits >> pending) as u8);
        }
    }
    if pending > 0 {
        // Pad with the most significant bits of EOS (ones).
        let pad = 8 - pending;
        out.push(((bits << pad) | ((1 << pad) - 1)) as u8);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// RFC 7541 Appendix C.4 and C.6 strings.
    #[test]
    fn decodes_the_rfc_examples() {
        for (coded, plain) in [
            ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
            ("a8eb 1064 9cbf", "no-cache"),
            ("25a8 49e9 5ba9 7d7f", "custom-key"),
            ("25a8 49e9 5bb8 e8b4 bf", "custom-value"),
            ("6402", "302"),
            ("aec3 771a 4b", "private"),
            (
                "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
                "Mon, 21 Oct 2013 20:13:21 GMT",
            ),
            (
                "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
                "https://www.example.com",
            ),
        ] {
            let mut out = Vec::new();
            decode(&hex(coded), &mut out).expect("valid");
            assert_eq!(out, plain.as_bytes());
            assert_eq!(encode(plain.as_bytes()), hex(coded), "{plain}");
        }
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        let mut out = Vec::new();
        decode(&encode(&all), &mut out).expect("valid");
        assert_eq!(out, all);
    }

    #[test]
    fn refuses_bad_padding_and_eos() {
        let mut out = Vec::new();
        // 'a' is 00011 (5 bits): padded with zeros instead of ones.
        assert_eq!(decode(&[0b0001_1000], &mut out), Err(InvalidHuffman));
        // A whole byte of padding (more than 7 bits).
        assert_eq!(decode(&[0b0001_1111, 0xff], &mut out), Err(InvalidHuffman));
        // EOS itself (30 ones), padded.
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff], &mut out),
            Err(InvalidHuffman)
        );
        // Empty is fine.
        out.clear();
        assert_eq!(decode(&[], &mut out), Ok(()));
        assert!(out.is_empty());
    }
}
