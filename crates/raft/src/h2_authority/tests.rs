//! The rewriter over hand-made client byte streams, checked by decoding what the server
//! would read with a fresh decoder (the server's HPACK state).

use super::hpack::{Decoder, put_integer, put_string};
use super::*;

/// A client-side HPACK block under construction.
#[derive(Default)]
struct Block(Vec<u8>);

impl Block {
    fn indexed(mut self, index: usize) -> Self {
        put_integer(&mut self.0, 0x80, 7, index);
        self
    }
    /// A literal with incremental indexing and a name from the tables.
    fn insert(mut self, name_index: usize, value: &[u8], huffman: bool) -> Self {
        put_integer(&mut self.0, 0x40, 6, name_index);
        string(&mut self.0, value, huffman);
        self
    }
    /// A literal with incremental indexing and a literal name.
    fn insert_named(mut self, name: &[u8], value: &[u8], huffman: bool) -> Self {
        self.0.push(0x40);
        string(&mut self.0, name, huffman);
        string(&mut self.0, value, huffman);
        self
    }
    /// A literal without indexing (or never indexed) and a name from the tables.
    fn plain(mut self, name_index: usize, value: &[u8], never: bool) -> Self {
        put_integer(&mut self.0, if never { 0x10 } else { 0 }, 4, name_index);
        put_string(&mut self.0, value);
        self
    }
    fn size_update(mut self, size: usize) -> Self {
        put_integer(&mut self.0, 0x20, 5, size);
        self
    }
}

fn string(out: &mut Vec<u8>, s: &[u8], huffman: bool) {
    if huffman {
        let coded = super::huffman::encode(s);
        put_integer(out, 0x80, 7, coded.len());
        out.extend_from_slice(&coded);
    } else {
        put_string(out, s);
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    FrameHead::write(&mut out, payload.len(), kind, flags, stream);
    out.extend_from_slice(payload);
    out
}

fn headers(stream: u32, block: &Block) -> Vec<u8> {
    frame(HEADERS, END_HEADERS, stream, &block.0)
}

/// A request's usual start: POST, http, a path; then `rest`.
fn request() -> Block {
    Block::default()
        .indexed(3)
        .indexed(6)
        .plain(4, b"/etcdserverpb.KV/Range", false)
}

fn connection(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    for f in frames {
        out.extend_from_slice(f);
    }
    out
}

/// Every frame of a stream after the preface.
fn frames_of(stream: &[u8]) -> Vec<(FrameHead, Vec<u8>)> {
    assert_eq!(&stream[..24], PREFACE);
    let mut rest = &stream[24..];
    let mut out = Vec::new();
    while !rest.is_empty() {
        let head = FrameHead::parse(rest).expect("whole frame header");
        out.push((head, rest[9..9 + head.len].to_vec()));
        rest = &rest[9 + head.len..];
    }
    out
}

/// The header lists the server decodes from `stream`, frame limits checked on the way.
fn server_view(stream: &[u8]) -> Vec<Vec<(String, String)>> {
    let mut decoder = Decoder::new(hpack::DEFAULT_TABLE_SIZE);
    let mut lists = Vec::new();
    let mut block: Option<Vec<u8>> = None;
    for (head, payload) in frames_of(stream) {
        assert!(head.len <= MAX_FRAME, "frame of {} bytes", head.len);
        let fragment = match head.kind {
            HEADERS => {
                assert!(block.is_none());
                split_headers_payload(head.flags, &payload)
                    .expect("valid")
                    .1
                    .to_vec()
            }
            CONTINUATION => {
                let mut b = block.take().expect("continuation of a block");
                b.extend_from_slice(&payload);
                b
            }
            _ => continue,
        };
        if head.flags & END_HEADERS == 0 {
            block = Some(fragment);
            continue;
        }
        let mut fields = Vec::new();
        decoder
            .decode(&fragment, 1 << 20, &mut fields)
            .expect("server decodes");
        lists.push(
            fields
                .iter()
                .map(|f| {
                    (
                        String::from_utf8_lossy(&f.name).into_owned(),
                        String::from_utf8_lossy(&f.value).into_owned(),
                    )
                })
                .collect(),
        );
    }
    assert!(block.is_none(), "a block left open");
    lists
}

fn authority_of(list: &[(String, String)]) -> Option<&str> {
    list.iter()
        .find(|(n, _)| n == ":authority")
        .map(|(_, v)| v.as_str())
}

/// Runs `input` through in several chunkings and read sizes; all must agree.
fn rewrite(input: &[u8]) -> Vec<u8> {
    let whole = rewrite_chunks(&[input], 1 << 16).expect("rewrites");
    for chunk in [1, 2, 7, 9, 10, 33, 1000] {
        for read in [1, 5, 9, 64, 8192] {
            let chunks: Vec<&[u8]> = input.chunks(chunk).collect();
            let out = rewrite_chunks(&chunks, read).expect("rewrites");
            assert_eq!(out, whole, "chunks of {chunk}, reads of {read}");
        }
    }
    whole
}

/// Bytes decided while a later frame is still cut go out before it (found by the fuzz
/// target: a rewritten block, then a DATA frame and half a frame header in one read).
#[test]
fn decided_bytes_keep_their_order_around_a_cut_frame() {
    let mut input = connection(&[headers(1, &request().insert(1, b"http://a:1", false))]);
    input.extend(frame(0x0, 0, 1, b"first"));
    let next = frame(0x0, 0x1, 1, b"second");
    input.extend_from_slice(&next);
    let cut = input.len() - next.len() + 5;
    for read in [64, 8192] {
        let out = rewrite_chunks(&[&input[..cut], &input[cut..]], read).expect("rewrites");
        assert_eq!(out, rewrite_chunks(&[&input], read).expect("rewrites"));
        let data: Vec<Vec<u8>> = frames_of(&out)
            .into_iter()
            .filter(|(h, _)| h.kind == 0)
            .map(|(_, p)| p)
            .collect();
        assert_eq!(data, vec![b"first".to_vec(), b"second".to_vec()]);
    }
}

#[test]
fn http1_passes_through() {
    let input = b"GET /health HTTP/1.1\r\nHost: http://x/\r\n\r\n".to_vec();
    assert_eq!(rewrite(&input), input);
    // Almost the preface, then not.
    let mut input = PREFACE[..10].to_vec();
    input.extend_from_slice(b"xyz and more");
    assert_eq!(rewrite(&input), input);
}

#[test]
fn valid_authorities_and_data_pass_unchanged() {
    let input = connection(&[
        headers(1, &request().insert(1, b"127.0.0.1:2379", true)),
        frame(0x0, 0x1, 1, &vec![7u8; 40_000]),
        headers(3, &request().indexed(62)),
        frame(0x8, 0, 0, &[0, 0, 1, 0]), // WINDOW_UPDATE
        frame(0x0, 0x1, 3, b"hello"),
    ]);
    assert_eq!(rewrite(&input), input);
}

#[test]
fn a_full_url_is_cut_to_its_authority_and_later_indexes_still_resolve() {
    for huffman in [false, true] {
        let input = connection(&[
            // grpc-go's first request: :authority inserted into the table.
            headers(
                1,
                &request()
                    .insert(1, b"http://127.0.0.1:2379", huffman)
                    .insert_named(b"client-api-version", b"3.4", huffman),
            ),
            frame(0x0, 0x1, 1, b"\0\0\0\0\0"),
            // Later ones index the entries: 63 is the authority, 62 the version.
            headers(3, &request().indexed(63).indexed(62)),
            headers(5, &request().indexed(62).indexed(63)),
        ]);
        let out = rewrite(&input);
        let lists = server_view(&out);
        assert_eq!(lists.len(), 3);
        for list in &lists {
            assert_eq!(authority_of(list), Some("127.0.0.1:2379"), "{list:?}");
            assert!(list.contains(&("client-api-version".into(), "3.4".into())));
            assert!(list.contains(&(":path".into(), "/etcdserverpb.KV/Range".into())));
        }
        // The DATA frame went through as it was.
        assert!(
            frames_of(&out)
                .iter()
                .any(|(h, p)| h.kind == 0 && p == b"\0\0\0\0\0")
        );
    }
}

#[test]
fn blocks_after_a_rewrite_insert_nothing_on_the_server() {
    // A valid block first (verbatim, inserting into both tables), then a bad one, then
    // blocks indexing entries from before and after the rewrite.
    let input = connection(&[
        headers(1, &request().insert(58, b"grpc-go/1.26.0", true)),
        headers(3, &request().insert(1, b"http://[::1]:2379/x?y", true)),
        headers(5, &request().indexed(62).indexed(63)),
        headers(
            7,
            &request().insert(31, b"application/grpc", false).indexed(63),
        ),
        headers(9, &request().indexed(62).indexed(63).indexed(64)),
    ]);
    let lists = server_view(&rewrite(&input));
    assert_eq!(authority_of(&lists[0]), None);
    assert_eq!(
        lists[0],
        vec![
            (":method".to_string(), "POST".to_string()),
            (":scheme".into(), "http".into()),
            (":path".into(), "/etcdserverpb.KV/Range".into()),
            ("user-agent".into(), "grpc-go/1.26.0".into()),
        ]
    );
    assert_eq!(authority_of(&lists[1]), Some("[::1]:2379"));
    assert_eq!(authority_of(&lists[2]), Some("[::1]:2379"));
    assert!(lists[2].contains(&("user-agent".into(), "grpc-go/1.26.0".into())));
    assert!(lists[3].contains(&("content-type".into(), "application/grpc".into())));
    assert_eq!(authority_of(&lists[3]), Some("[::1]:2379"));
    let last = &lists[4];
    assert!(last.contains(&("content-type".into(), "application/grpc".into())));
    assert!(last.contains(&("user-agent".into(), "grpc-go/1.26.0".into())));
    assert_eq!(authority_of(last), Some("[::1]:2379"));
}

#[test]
fn table_size_updates_are_followed_and_not_forwarded_after_a_rewrite() {
    // The client's table after the first block: x-big (5 + 100 + 32 = 137 bytes, older),
    // then the authority (10 + 21 + 32 = 63). Shrinking it to 150 evicts x-big, so 62 is
    // the authority; the third block empties and regrows it.
    let mut input = connection(&[headers(
        1,
        &request()
            .insert_named(b"x-big", &[b'v'; 100], false)
            .insert(1, b"http://127.0.0.1:2379", true),
    )]);
    let mut second = Block::default().size_update(150).0;
    second.extend(request().indexed(62).0);
    input.extend(frame(HEADERS, END_HEADERS, 3, &second));
    let mut third = Block::default().size_update(0).size_update(4096).0;
    third.extend(request().0);
    input.extend(frame(HEADERS, END_HEADERS, 5, &third));
    let out = rewrite(&input);
    let lists = server_view(&out);
    assert_eq!(lists.len(), 3);
    assert_eq!(authority_of(&lists[0]), Some("127.0.0.1:2379"));
    assert_eq!(authority_of(&lists[1]), Some("127.0.0.1:2379"));
    assert_eq!(lists[1].len(), 4, "x-big was evicted: {:?}", lists[1]);
    assert_eq!(authority_of(&lists[2]), None);
    // No size update reached the server after the rewrite.
    for (head, payload) in frames_of(&out).iter().skip(1) {
        if head.kind == HEADERS {
            assert_ne!(payload[0] & 0xe0, 0x20, "size update forwarded");
        }
    }
    // An update above the limit is refused: that connection is closed.
    let mut bad = connection(&[headers(1, &request().insert(1, b"http://a:1", false))]);
    let mut block = Block::default().size_update(8192).0;
    block.extend(request().0);
    bad.extend(frame(HEADERS, END_HEADERS, 3, &block));
    assert!(rewrite_chunks(&[&bad], 4096).is_err());
}

#[test]
fn a_grown_block_is_split_into_continuations() {
    // Huffman-coded values that re-encode as plain ones grow by 8/5 for 'a' (5 bits).
    let big = vec![b'a'; 12_000];
    let mut block = request().insert(1, b"http://127.0.0.1:2379", true);
    for name in [&b"x-one"[..], b"x-two", b"x-3", b"x-4"] {
        block.0.push(0x00); // without indexing, literal name
        string(&mut block.0, name, false);
        string(&mut block.0, &big, true);
    }
    let (a, b) = block.0.split_at(16_000);
    let input = connection(&[
        frame(HEADERS, END_STREAM, 1, a),
        frame(CONTINUATION, END_HEADERS, 1, b),
        frame(0x6, 0, 0, &[1; 8]), // PING
    ]);
    let out = rewrite(&input);
    let frames = frames_of(&out);
    let kinds: Vec<(u8, u8)> = frames.iter().map(|(h, _)| (h.kind, h.flags)).collect();
    assert_eq!(
        kinds,
        vec![
            (0x4, 0),
            (HEADERS, END_STREAM),
            (CONTINUATION, 0),
            (CONTINUATION, END_HEADERS),
            (0x6, 0)
        ]
    );
    assert!(frames.iter().all(|(h, _)| h.len <= MAX_FRAME));
    let lists = server_view(&out);
    assert_eq!(authority_of(&lists[0]), Some("127.0.0.1:2379"));
    assert!(lists[0].contains(&("x-two".into(), "a".repeat(12_000))));
    assert_eq!(lists[0].len(), 8);
}

#[test]
fn continuation_padding_and_priority_from_the_client() {
    let block = request().insert(1, b"http://h:1/p", true).0;
    let (a, b) = block.split_at(5);
    // PADDED | PRIORITY HEADERS: pad length 3, priority (exclusive dep 0, weight 16), the
    // first part, padding; then a CONTINUATION with the rest.
    let mut payload = vec![3];
    payload.extend_from_slice(&[0x80, 0, 0, 0, 15]);
    payload.extend_from_slice(a);
    payload.extend_from_slice(&[0, 0, 0]);
    let input = connection(&[
        frame(HEADERS, PADDED | PRIORITY | END_STREAM, 1, &payload),
        frame(CONTINUATION, END_HEADERS, 1, b),
    ]);
    let out = rewrite(&input);
    let frames = frames_of(&out);
    let (head, payload) = &frames[1];
    assert_eq!(head.flags, PRIORITY | END_STREAM | END_HEADERS);
    assert_eq!(&payload[..5], &[0x80, 0, 0, 0, 15]);
    assert_eq!(frames.len(), 2);
    assert_eq!(authority_of(&server_view(&out)[0]), Some("h:1"));
    // The same with a valid authority goes through as it came.
    let block = request().insert(1, b"h:1", true).0;
    let (a, b) = block.split_at(5);
    let mut payload = vec![3];
    payload.extend_from_slice(a);
    payload.extend_from_slice(&[0, 0, 0]);
    let input = connection(&[
        frame(HEADERS, PADDED, 1, &payload),
        frame(CONTINUATION, END_HEADERS, 1, b),
    ]);
    assert_eq!(rewrite(&input), input);
}

#[test]
fn authorities_without_a_valid_form_are_left_out() {
    let input = connection(&[
        headers(1, &request().plain(1, b"http://a b/", false)),
        headers(3, &request().plain(1, b"", true)),
        headers(5, &request().insert(1, b"", false).indexed(62)),
    ]);
    let lists = server_view(&rewrite(&input));
    assert_eq!(lists.len(), 3);
    for list in &lists {
        assert_eq!(authority_of(list), None, "{list:?}");
        assert_eq!(list.len(), 3);
    }
}

#[test]
fn fixes() {
    for (value, fixed) in [
        ("127.0.0.1:2379", Some("127.0.0.1:2379")),
        ("http://127.0.0.1:2379", Some("127.0.0.1:2379")),
        ("https://example.com:443/", Some("example.com:443")),
        ("unix://localhost:1234", Some("localhost:1234")),
        ("http://[::1]:2379/a/b?c#d", Some("[::1]:2379")),
        ("host/path", Some("host")),
        ("user@host:1", Some("user@host:1")),
        ("http://", None),
        ("", None),
        ("1http://a", Some("1http:")),
        ("a b", None),
        ("http://a:1:2", None),
    ] {
        let got = fix_authority(&Bytes::from(value));
        assert_eq!(got.as_deref(), fixed.map(str::as_bytes), "{value}");
    }
}

#[test]
fn malformed_streams_pass_through_until_a_rewrite_then_close() {
    // A header block interrupted by DATA: passed through for h2 to refuse.
    let mut open = frame(HEADERS, 0, 1, &request().0);
    open.extend(frame(0x0, 0, 1, b"x"));
    let input = connection(&[
        open.clone(),
        headers(3, &request().insert(1, b"http://a:1", false)),
    ]);
    assert_eq!(rewrite(&input), input, "passed through once given up");
    // Undecodable HPACK, and a CONTINUATION out of nowhere: the same.
    for bad in [
        headers(1, &Block(vec![0x80])),
        frame(CONTINUATION, END_HEADERS, 1, &request().0),
        frame(HEADERS, END_HEADERS | PADDED, 1, &[200, 1, 2]),
    ] {
        let input = connection(&[bad]);
        assert_eq!(rewrite(&input), input);
    }
    // After a rewrite, the same is a closed connection.
    let first = headers(1, &request().insert(1, b"http://a:1", false));
    for bad in [
        open,
        headers(3, &Block(vec![0x80])),
        frame(HEADERS, 0, 3, &vec![0x82; MAX_BLOCK + 1]),
    ] {
        let input = connection(&[first.clone(), bad]);
        assert!(rewrite_chunks(&[&input], 4096).is_err());
    }
}

#[test]
fn oversized_blocks_are_bounded() {
    // Too many CONTINUATION frames, or too many bytes: passed through before the limit is
    // buffered (h2 then refuses them itself).
    let mut input = connection(&[frame(HEADERS, 0, 1, &request().0)]);
    for _ in 0..MAX_FRAMES {
        input.extend(frame(CONTINUATION, 0, 1, &[0x82]));
    }
    assert_eq!(rewrite(&input), input);
    let input = connection(&[frame(HEADERS, END_HEADERS, 1, &vec![0x82; MAX_BLOCK + 1])]);
    assert_eq!(rewrite_chunks(&[&input], 4096).expect("passes"), input);
    // A block whose indexes decode to more than the list limit (each names a 4 KiB entry).
    let mut block = Block::default().insert_named(b"x", &[b'y'; 4000], false).0;
    block.extend(vec![0xbe; 20]);
    let input = connection(&[headers(1, &Block(block))]);
    assert_eq!(rewrite(&input), input);
}
