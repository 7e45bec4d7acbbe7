//! The JSON values of a streaming gateway request body (watch, lease keep-alive, election
//! observe), found as bytes arrive: grpc-gateway reads a stream's body as concatenated JSON
//! objects, whitespace between them allowed.
//!
//! Each arriving byte is looked at once: [`JsonValues`] tracks strings, escapes and nesting
//! depth across chunks and hands out a value only once it is complete, so the decoder runs
//! once per value. (Decoding the whole buffer again on every chunk, as a first version did,
//! costs time quadratic in an unfinished object's size: a client trickling a 2 MiB object in
//! one-byte segments made the member parse terabytes.)

/// Finds complete top-level JSON values in bytes pushed in any chunking.
#[derive(Debug, Default)]
pub struct JsonValues {
    buf: Vec<u8>,
    /// Bytes of `buf` already scanned, and the scan's state there.
    scanned: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// Bytes looked at by the scan so far (what the linear-time test checks).
    examined: usize,
}

/// What [`JsonValues::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A complete value's bytes (an object or array found by the scan; any other value in
    /// a piece of at most [`SCALAR_LOOKAHEAD`] bytes, for the decoder to refuse).
    Value(Vec<u8>),
    /// More bytes are needed.
    More,
}

/// A top-level value that is not an object or array (which no gateway request is: the
/// decoder refuses it and the stream ends) is handed to the decoder in pieces of this many
/// bytes, or what is left at the end of the body.
const SCALAR_LOOKAHEAD: usize = 64;

impl JsonValues {
    /// Nothing pushed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes held (an unfinished value and whatever follows it).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Adds a chunk of the body.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete value, if one is in; `ended`: the body has no more bytes (a scalar
    /// is then handed over as it is, and an unfinished object is the caller's "unexpected
    /// EOF").
    pub fn next(&mut self, ended: bool) -> Next {
        if self.scanned == 0 {
            let start = self
                .buf
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(self.buf.len());
            self.buf.drain(..start);
        }
        let Some(&first) = self.buf.first() else {
            return Next::More;
        };
        if first != b'{' && first != b'[' {
            // Handed over in pieces that depend on the bytes only, never on how they came.
            if self.buf.len() >= SCALAR_LOOKAHEAD {
                return Next::Value(self.buf.drain(..SCALAR_LOOKAHEAD).collect());
            }
            if ended {
                return Next::Value(std::mem::take(&mut self.buf));
            }
            return Next::More;
        }
        for i in self.scanned..self.buf.len() {
            self.examined += 1;
            let b = self.buf[i];
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        let rest = self.buf.split_off(i + 1);
                        let value = std::mem::replace(&mut self.buf, rest);
                        self.scanned = 0;
                        return Next::Value(value);
                    }
                }
                _ => {}
            }
        }
        self.scanned = self.buf.len();
        Next::More
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8], chunk: usize) -> Vec<Next> {
        let mut v = JsonValues::new();
        let mut out = Vec::new();
        for part in input.chunks(chunk.max(1)) {
            v.push(part);
            loop {
                match v.next(false) {
                    Next::More => break,
                    value => out.push(value),
                }
            }
        }
        loop {
            match v.next(true) {
                Next::More => break,
                value => out.push(value),
            }
        }
        out
    }

    #[test]
    fn values_are_found_whatever_the_chunking() {
        let input = br#" {"a":"}{\"]"} [1,[2]]
{"create_request":{"key":"YQ=="}}  {"b":{}}"#;
        let want = vec![
            Next::Value(br#"{"a":"}{\"]"}"#.to_vec()),
            Next::Value(b"[1,[2]]".to_vec()),
            Next::Value(br#"{"create_request":{"key":"YQ=="}}"#.to_vec()),
            Next::Value(br#"{"b":{}}"#.to_vec()),
        ];
        for chunk in [1, 2, 3, 7, 1000] {
            assert_eq!(all(input, chunk), want, "chunks of {chunk}");
        }
    }

    #[test]
    fn an_unfinished_object_waits_and_a_scalar_goes_to_the_decoder() {
        let mut v = JsonValues::new();
        v.push(br#"{"a":"#);
        assert_eq!(v.next(false), Next::More);
        assert_eq!(v.next(true), Next::More); // the caller's "unexpected EOF"
        let mut v = JsonValues::new();
        v.push(b"12");
        assert_eq!(v.next(false), Next::More);
        assert_eq!(v.next(true), Next::Value(b"12".to_vec()));
        let mut v = JsonValues::new();
        v.push(&[b'9'; SCALAR_LOOKAHEAD]);
        assert!(matches!(v.next(false), Next::Value(_)));
    }

    #[test]
    fn each_byte_is_scanned_once() {
        // A 64 KiB unfinished string pushed one byte at a time: every byte is looked at
        // once, not once per push.
        let mut v = JsonValues::new();
        v.push(br#"{"k":""#);
        let n = 1 << 16;
        for _ in 0..n {
            v.push(b"x");
            assert_eq!(v.next(false), Next::More);
        }
        v.push(br#""}"#);
        assert!(matches!(v.next(false), Next::Value(_)));
        assert_eq!(v.examined, n + 8);
    }
}
