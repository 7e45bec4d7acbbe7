//! The HPACK (RFC 7541) pieces the rewriter needs: a decoder that mirrors the client's
//! encoder (its dynamic table included), and an encoder that never touches the receiver's
//! dynamic table.
//!
//! Written here rather than taken from crates.io: h2 keeps its HPACK codec private, and the
//! published standalone crates are either unmaintained (`hpack` 0.3, which also panics on
//! some malformed input) or pull in a second HTTP stack; the part needed is small (a decoder,
//! a literal-only encoder and the Huffman table) and every length in it is checked against
//! the bytes actually present before use.

use std::collections::VecDeque;

use bytes::Bytes;

use super::huffman;

/// RFC 7541 Appendix A.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// SETTINGS_HEADER_TABLE_SIZE's initial value. raftkv's server (h2 under tonic) never
/// advertises another, so no client may grow its table beyond this.
pub const DEFAULT_TABLE_SIZE: usize = 4096;
/// RFC 7541 §4.1: each entry counts 32 bytes on top of its name and value.
const ENTRY_OVERHEAD: usize = 32;
/// Continuation bytes of one integer: 4 hold every value up to 2^28, far beyond any length
/// or index that can be valid here.
const MAX_INT_CONTINUATIONS: usize = 4;

/// A header block the decoder refuses (the server's decoder would refuse it too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    /// The block ends inside a representation.
    #[error("truncated header block")]
    Truncated,
    /// An integer longer than any valid one.
    #[error("integer overflow")]
    Overflow,
    /// Index 0, or beyond the static and dynamic tables.
    #[error("invalid table index")]
    BadIndex,
    /// A Huffman string RFC 7541 forbids.
    #[error("invalid Huffman string")]
    BadHuffman,
    /// A size update above the limit, or after the block's first field.
    #[error("invalid dynamic table size update")]
    BadSizeUpdate,
    /// The decoded header list is larger than the caller allows.
    #[error("header list too large")]
    TooLarge,
}

/// One decoded header field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Its name.
    pub name: Bytes,
    /// Its value.
    pub value: Bytes,
    /// Sent as "never indexed" (RFC 7541 §6.2.3): an intermediary must keep it so.
    pub sensitive: bool,
}

/// The receiving side of one HPACK context: the client's dynamic table, as the client's
/// encoder keeps it.
#[derive(Debug)]
pub struct Decoder {
    /// Newest first, as HPACK indexes them.
    table: VecDeque<(Bytes, Bytes)>,
    size: usize,
    max_size: usize,
    /// The most the client may raise `max_size` to.
    limit: usize,
}

impl Decoder {
    /// A decoder whose table may grow to `limit` bytes (SETTINGS_HEADER_TABLE_SIZE).
    pub fn new(limit: usize) -> Self {
        Self {
            table: VecDeque::new(),
            size: 0,
            max_size: limit,
            limit,
        }
    }

    /// Decodes one complete header block into `fields` (cleared first), updating the table.
    /// Fields whose name plus value plus 32 add up to more than `max_list` fail the block.
    /// On an error the table is in an undefined state: the connection cannot go on.
    pub fn decode(
        &mut self,
        mut src: &[u8],
        max_list: usize,
        fields: &mut Vec<Field>,
    ) -> Result<(), HpackError> {
        fields.clear();
        let mut list = 0usize;
        let mut first = true;
        while let Some(&byte) = src.first() {
            let field = if byte & 0x80 != 0 {
                let index = integer(&mut src, 7)?;
                let (name, value) = self.get(index)?;
                Field {
                    name,
                    value,
                    sensitive: false,
                }
            } else if byte & 0xc0 == 0x40 {
                let field = self.literal(&mut src, 6)?;
                self.insert(field.name.clone(), field.value.clone());
                field
            } else if byte & 0xe0 == 0x20 {
                if !first {
                    return Err(HpackError::BadSizeUpdate);
                }
                let size = integer(&mut src, 5)?;
                if size > self.limit {
                    return Err(HpackError::BadSizeUpdate);
                }
                self.max_size = size;
                self.evict(0);
                continue;
            } else {
                // 0000xxxx without indexing, 0001xxxx never indexed.
                let mut field = self.literal(&mut src, 4)?;
                field.sensitive = byte & 0x10 != 0;
                field
            };
            first = false;
            list = list
                .saturating_add(field.name.len() + field.value.len())
                .saturating_add(ENTRY_OVERHEAD);
            if list > max_list {
                return Err(HpackError::TooLarge);
            }
            fields.push(field);
        }
        Ok(())
    }

    /// The entry at HPACK index `index` (1-based; static table first).
    fn get(&self, index: usize) -> Result<(Bytes, Bytes), HpackError> {
        match index {
            0 => Err(HpackError::BadIndex),
            1..=61 => {
                let (name, value) = STATIC[index - 1];
                Ok((
                    Bytes::from_static(name.as_bytes()),
                    Bytes::from_static(value.as_bytes()),
                ))
            }
            _ => self
                .table
                .get(index - 62)
                .cloned()
                .ok_or(HpackError::BadIndex),
        }
    }

    /// A literal representation whose name index has a `prefix`-bit prefix.
    fn literal(&mut self, src: &mut &[u8], prefix: u8) -> Result<Field, HpackError> {
        let index = integer(src, prefix)?;
        let name = if index == 0 {
            string(src)?
        } else {
            self.get(index)?.0
        };
        let value = string(src)?;
        Ok(Field {
            name,
            value,
            sensitive: false,
        })
    }

    fn insert(&mut self, name: Bytes, value: Bytes) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        if size > self.max_size {
            // RFC 7541 §4.4: an entry larger than the table empties it and is not added.
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict(size);
        self.size += size;
        self.table.push_front((name, value));
    }

    /// Evicts the oldest entries until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            match self.table.pop_back() {
                Some((name, value)) => self.size -= name.len() + value.len() + ENTRY_OVERHEAD,
                None => break,
            }
        }
    }
}

/// Decodes an integer with a `prefix`-bit prefix (RFC 7541 §5.1), advancing `src`.
fn integer(src: &mut &[u8], prefix: u8) -> Result<usize, HpackError> {
    let (&first, rest) = src.split_first().ok_or(HpackError::Truncated)?;
    let max = (1usize << prefix) - 1;
    let mut value = usize::from(first) & max;
    *src = rest;
    if value < max {
        return Ok(value);
    }
    for shift in 0..=MAX_INT_CONTINUATIONS {
        let (&byte, rest) = src.split_first().ok_or(HpackError::Truncated)?;
        *src = rest;
        if shift == MAX_INT_CONTINUATIONS {
            return Err(HpackError::Overflow);
        }
        value += usize::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(HpackError::Overflow)
}

/// Decodes a string literal (RFC 7541 §5.2), advancing `src`.
fn string(src: &mut &[u8]) -> Result<Bytes, HpackError> {
    let huffman = src.first().is_some_and(|b| b & 0x80 != 0);
    let len = integer(src, 7)?;
    if len > src.len() {
        return Err(HpackError::Truncated);
    }
    let (raw, rest) = src.split_at(len);
    *src = rest;
    if huffman {
        let mut out = Vec::new();
        huffman::decode(raw, &mut out).map_err(|_| HpackError::BadHuffman)?;
        Ok(Bytes::from(out))
    } else {
        Ok(Bytes::copy_from_slice(raw))
    }
}

/// Appends an integer with a `prefix`-bit prefix whose other bits are `flags`.
pub fn put_integer(out: &mut Vec<u8>, flags: u8, prefix: u8, mut value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends a plain (not Huffman-coded) string literal.
pub fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    put_integer(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// Appends `field` without touching the receiver's dynamic table: as a static-table index
/// when it is one, else as a literal "without indexing" (or "never indexed", if it came so),
/// naming the static table's entry when the name is there.
pub fn encode_field(out: &mut Vec<u8>, field: &Field) {
    let name = &field.name[..];
    let value = &field.value[..];
    if !field.sensitive
        && let Some(i) = STATIC
            .iter()
            .position(|&(n, v)| n.as_bytes() == name && v.as_bytes() == value)
    {
        put_integer(out, 0x80, 7, i + 1);
        return;
    }
    let flags = if field.sensitive { 0x10 } else { 0x00 };
    match STATIC.iter().position(|&(n, _)| n.as_bytes() == name) {
        Some(i) => put_integer(out, flags, 4, i + 1),
        None => {
            put_integer(out, flags, 4, 0);
            put_string(out, name);
        }
    }
    put_string(out, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn pairs(fields: &[Field]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|f| {
                (
                    String::from_utf8_lossy(&f.name).into_owned(),
                    String::from_utf8_lossy(&f.value).into_owned(),
                )
            })
            .collect()
    }

    fn p(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// RFC 7541 C.3 (plain) and C.4 (Huffman): three requests on one connection, the later
    /// ones indexing what the earlier ones inserted.
    #[test]
    fn decodes_the_rfc_request_sequences() {
        let plain = [
            "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            "8286 84be 5808 6e6f 2d63 6163 6865",
            "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        ];
        let huffman = [
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            "8286 84be 5886 a8eb 1064 9cbf",
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ];
        let expected = [
            p(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ]),
            p(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache"),
            ]),
            p(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ]),
        ];
        for blocks in [plain, huffman] {
            let mut decoder = Decoder::new(DEFAULT_TABLE_SIZE);
            let mut fields = Vec::new();
            for (block, want) in blocks.iter().zip(&expected) {
                decoder
                    .decode(&hex(block), 1 << 16, &mut fields)
                    .expect("valid");
                assert_eq!(&pairs(&fields), want);
            }
            assert_eq!(decoder.size, 164, "RFC C.3.3: table size 164");
        }
    }

    #[test]
    fn size_updates_evict_and_are_bounded() {
        let mut decoder = Decoder::new(DEFAULT_TABLE_SIZE);
        let mut fields = Vec::new();
        // Insert custom-key: custom-value (54 bytes), then shrink to 0 and reference it.
        let insert = hex("400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65");
        decoder
            .decode(&insert, 1 << 16, &mut fields)
            .expect("valid");
        assert_eq!(decoder.size, 54);
        decoder
            .decode(&hex("20"), 1 << 16, &mut fields)
            .expect("size 0");
        assert_eq!(decoder.size, 0);
        assert_eq!(
            decoder.decode(&hex("be"), 1 << 16, &mut fields),
            Err(HpackError::BadIndex)
        );
        // Above the limit, and after a field: refused.
        let mut big = Vec::new();
        put_integer(&mut big, 0x20, 5, DEFAULT_TABLE_SIZE + 1);
        assert_eq!(
            decoder.decode(&big, 1 << 16, &mut fields),
            Err(HpackError::BadSizeUpdate)
        );
        assert_eq!(
            decoder.decode(&hex("82 3f e1 1f"), 1 << 16, &mut fields),
            Err(HpackError::BadSizeUpdate)
        );
        // At the start, several in a row are fine (RFC 7541 §4.2).
        decoder
            .decode(&hex("20 3f e1 1f 82"), 1 << 16, &mut fields)
            .expect("valid");
        assert_eq!(decoder.max_size, 4096);
    }

    #[test]
    fn hostile_blocks_are_errors() {
        let mut decoder = Decoder::new(DEFAULT_TABLE_SIZE);
        let mut fields = Vec::new();
        for (block, error) in [
            ("80", HpackError::BadIndex),
            ("ff ff ff ff ff 0f", HpackError::Overflow),
            ("ff", HpackError::Truncated),
            ("41 7f", HpackError::Truncated),
            ("41 05 61", HpackError::Truncated),
            ("41 81 00", HpackError::BadHuffman),
            ("c0", HpackError::BadIndex),
        ] {
            assert_eq!(
                decoder.decode(&hex(block), 1 << 16, &mut fields),
                Err(error),
                "{block}"
            );
        }
        // A list larger than allowed.
        let mut decoder = Decoder::new(DEFAULT_TABLE_SIZE);
        assert_eq!(
            decoder.decode(&hex("82 82 82"), 100, &mut fields),
            Err(HpackError::TooLarge)
        );
    }

    #[test]
    fn encoded_fields_decode_back_without_table_entries() {
        let fields = vec![
            Field {
                name: Bytes::from_static(b":method"),
                value: Bytes::from_static(b"POST"),
                sensitive: false,
            },
            Field {
                name: Bytes::from_static(b":authority"),
                value: Bytes::from_static(b"127.0.0.1:2379"),
                sensitive: false,
            },
            Field {
                name: Bytes::from_static(b"authorization"),
                value: Bytes::from_static(b"token"),
                sensitive: true,
            },
            Field {
                name: Bytes::from(vec![b'x'; 200]),
                value: Bytes::from(vec![b'y'; 300]),
                sensitive: false,
            },
        ];
        let mut block = Vec::new();
        for f in &fields {
            encode_field(&mut block, f);
        }
        assert_eq!(block[0], 0x83, ":method POST is static index 3");
        let mut decoder = Decoder::new(DEFAULT_TABLE_SIZE);
        let mut out = Vec::new();
        decoder.decode(&block, 1 << 16, &mut out).expect("valid");
        assert_eq!(out, fields);
        assert_eq!(decoder.size, 0, "nothing was inserted");
    }
}
