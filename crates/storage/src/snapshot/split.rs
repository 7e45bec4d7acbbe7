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
    let mut i = 0;
    while i < value.len() {
        if value[i] != b'"' {
            let next = value[i..]
                .iter()
                .position(|&b| b == b'"')
                .map_or(value.len(), |p| i + p);
            structure.extend_from_slice(&value[i..next]);
            i = next;
            continue;
        }
        let Some(close) = string_end(value, i) else {
            structure.extend_from_slice(&value[i..]);
            return;
        };
        if value.get(close + 1) == Some(&b':') {
            structure.extend_from_slice(&value[i..=close]);
        } else {
            structure.extend_from_slice(b"\"\"");
            scalars.extend_from_slice(&value[i + 1..=close]);
        }
        i = close + 1;
    }
}

/// Appends to `out` the value whose structure and scalars these are; `None` unless they are
/// exactly what [`split`] makes (every scalar used, every placeholder empty). What it
/// appends is never longer than `structure` and `scalars` together.
pub(crate) fn join(structure: &[u8], scalars: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut i = 0;
    let mut taken = 0;
    while i < structure.len() {
        if structure[i] != b'"' {
            let next = structure[i..]
                .iter()
                .position(|&b| b == b'"')
                .map_or(structure.len(), |p| i + p);
            out.extend_from_slice(&structure[i..next]);
            i = next;
            continue;
        }
        let Some(close) = string_end(structure, i) else {
            out.extend_from_slice(&structure[i..]);
            break;
        };
        if structure.get(close + 1) == Some(&b':') {
            out.extend_from_slice(&structure[i..=close]);
        } else {
            if close != i + 1 {
                return None; // a scalar's place is always empty
            }
            // The scalar runs to the first unescaped `"` in the scalars: string_end scans
            // from the byte after `taken - 1`, i.e. from `taken`.
            let end = scalar_end(scalars, taken)?;
            out.push(b'"');
            out.extend_from_slice(&scalars[taken..=end]);
            taken = end + 1;
        }
        i = close + 1;
    }
    (taken == scalars.len()).then_some(())
}

/// The index of the `"` that ends the string opening at `open`, if it ends.
fn string_end(bytes: &[u8], open: usize) -> Option<usize> {
    scalar_end(bytes, open + 1)
}

/// The index of the first `"` at or after `from` not escaped by a backslash.
fn scalar_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut k = from;
    while k < bytes.len() {
        match bytes[k] {
            b'\\' => k += 2,
            b'"' => return Some(k),
            _ => k += 1,
        }
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
