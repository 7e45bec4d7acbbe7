//! Splitting a value into its structure and its scalars, so that values of the same shape
//! (the JSON objects of one resource kind) compress as one repeated structure plus a stream
//! of the parts that differ.
//!
//! Any bytes split and join back exactly; JSON is only what makes it pay. A *string* is a
//! `"` up to the next `"` not escaped by a backslash (a backslash escapes the byte after
//! it). A string followed directly by `:` is an object key and stays in the structure, as
//! does everything outside strings. Any other string is a scalar: its bytes (escapes as
//! they are) go to the scalars, each ended by a `"`, and the structure keeps an empty `""`
//! in its place. A string that never ends stays in the structure as it is.
//!
//! `{"uid":"4f1c…","port":8080,"ready":"True"}` becomes the structure
//! `{"uid":"","port":8080,"ready":""}` and the scalars `4f1c…"True"`.

/// Appends `value`'s structure to `structure` and its scalars to `scalars`.
pub(crate) fn split(value: &[u8], structure: &mut Vec<u8>, scalars: &mut Vec<u8>) {
    for piece in pieces(value) {
        match piece {
            Piece::Kept(bytes) => structure.extend_from_slice(bytes),
            Piece::Scalar(content) => {
                structure.extend_from_slice(b"\"\"");
                scalars.extend_from_slice(content);
                scalars.push(b'"');
            }
        }
    }
}

/// Appends to `out` the value whose structure and scalars these are; `None` unless they are
/// exactly what [`split`] makes (every scalar used, every placeholder empty). What it
/// appends is never longer than `structure` and `scalars` together.
pub(crate) fn join(structure: &[u8], scalars: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut taken = 0;
    for piece in pieces(structure) {
        match piece {
            Piece::Kept(bytes) => out.extend_from_slice(bytes),
            // A scalar's place in the structure is always empty.
            Piece::Scalar(content) if !content.is_empty() => return None,
            Piece::Scalar(_) => {
                let end = string_end(scalars, taken)?;
                out.push(b'"');
                out.extend_from_slice(&scalars[taken..=end]);
                taken = end + 1;
            }
        }
    }
    (taken == scalars.len()).then_some(())
}

/// A run of bytes as [`split`] sees it: kept in the structure as they are (outside strings,
/// an object key with its quotes, a string that never ends), or a string value's content.
enum Piece<'a> {
    Kept(&'a [u8]),
    Scalar(&'a [u8]),
}

/// `bytes` cut into [`Piece`]s, in order; together they are all of `bytes`, and every step
/// moves forward.
fn pieces(bytes: &[u8]) -> impl Iterator<Item = Piece<'_>> {
    let mut i = 0;
    std::iter::from_fn(move || {
        if i >= bytes.len() {
            return None;
        }
        let piece = if bytes[i] != b'"' {
            let next = memchr::memchr(b'"', &bytes[i..]).map_or(bytes.len(), |p| i + p);
            let piece = Piece::Kept(&bytes[i..next]);
            i = next;
            piece
        } else {
            match string_end(bytes, i + 1) {
                None => {
                    let piece = Piece::Kept(&bytes[i..]);
                    i = bytes.len();
                    piece
                }
                Some(close) => {
                    let piece = if bytes.get(close + 1) == Some(&b':') {
                        Piece::Kept(&bytes[i..=close])
                    } else {
                        Piece::Scalar(&bytes[i + 1..close])
                    };
                    i = close + 1;
                    piece
                }
            }
        };
        Some(piece)
    })
}

/// The index of the first `"` at or after `from` not escaped by a backslash (a backslash
/// escapes the byte after it): the end of a string whose content starts at `from`.
fn string_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut k = from;
    while k < bytes.len() {
        k += memchr::memchr2(b'\\', b'"', &bytes[k..])?;
        if bytes[k] == b'"' {
            return Some(k);
        }
        k += 2;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(value: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let (mut structure, mut scalars) = (Vec::new(), Vec::new());
        split(value, &mut structure, &mut scalars);
        let mut back = Vec::new();
        assert_eq!(join(&structure, &scalars, &mut back), Some(()));
        assert_eq!(back, value, "{}", String::from_utf8_lossy(value));
        assert!(back.len() <= structure.len() + scalars.len());
        (structure, scalars)
    }

    #[test]
    fn json_splits_into_shape_and_scalars() {
        let (structure, scalars) =
            round_trip(br#"{"uid":"4f1c","port":8080,"ready":"True","tags":["a","b\"c"]}"#);
        assert_eq!(
            structure,
            br#"{"uid":"","port":8080,"ready":"","tags":["",""]}"#.to_vec()
        );
        assert_eq!(scalars, br#"4f1c"True"a"b\"c""#.to_vec());
    }

    #[test]
    fn odd_inputs_round_trip() {
        for value in [
            &b""[..],
            b"\"",
            b"\"\"",
            b"\"\":",
            b"\"abc",
            b"\"a\\",
            b"\"a\\\"",
            b"x\"y\"z\"",
            b"\\\"\\\"",
            b"\"k\":\"v\":\"w\"",
            b"\x00\xff\"\x00\"",
        ] {
            round_trip(value);
        }
    }

    #[test]
    fn what_split_cannot_make_is_refused() {
        let mut out = Vec::new();
        assert_eq!(join(b"\"x\"", b"", &mut out), None); // a non-empty placeholder
        assert_eq!(join(b"\"\"", b"abc", &mut out), None); // a scalar without its end
        assert_eq!(join(b"{}", b"a\"", &mut out), None); // a scalar left over
    }

    proptest! {
        #[test]
        fn any_bytes_round_trip(value in proptest::collection::vec(
            prop_oneof![Just(b'"'), Just(b'\\'), Just(b':'), any::<u8>()], 0..64)) {
            round_trip(&value);
        }

        #[test]
        fn any_parts_never_panic_nor_grow(
            structure in proptest::collection::vec(
                prop_oneof![Just(b'"'), Just(b'\\'), Just(b':'), any::<u8>()], 0..64),
            scalars in proptest::collection::vec(
                prop_oneof![Just(b'"'), Just(b'\\'), any::<u8>()], 0..64),
        ) {
            let mut out = Vec::new();
            if join(&structure, &scalars, &mut out).is_some() {
                prop_assert!(out.len() <= structure.len() + scalars.len());
            }
        }
    }
}
