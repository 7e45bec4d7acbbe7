//! The client port's `:authority` repair (raftkv_raft::h2_authority) on client byte
//! streams, beside the same reads without it: gRPC requests whose authority is valid (the
//! path every raftkv-bench and tonic client takes: header blocks checked, passed as they
//! are), requests carrying grpc-go's whole-URL authority (every block re-encoded), and bulk
//! DATA (large puts: frames skipped in place).

use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use raftkv_raft::h2_authority::{ChunkReader, PREFACE, hpack, huffman, rewrite_chunks};
use tokio::io::{AsyncRead, ReadBuf};

const READ: usize = 8 << 10;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn literal(out: &mut Vec<u8>, name_index: usize, value: &[u8]) {
    hpack::put_integer(out, 0x40, 6, name_index);
    let coded = huffman::encode(value);
    hpack::put_integer(out, 0x80, 7, coded.len());
    out.extend_from_slice(&coded);
}

/// A connection of `n` unary requests as a gRPC client sends them: the first header block
/// inserts path, authority, content-type, te and user-agent; the others index them. One
/// chunk per request (HEADERS and a 300-byte message).
fn requests(n: usize, authority: &[u8]) -> Vec<Vec<u8>> {
    let mut chunks = vec![PREFACE.to_vec(), frame(0x4, 0, 0, &[])];
    for i in 0..n {
        let stream = 1 + 2 * i as u32;
        let mut block = vec![0x83, 0x86]; // POST, http
        if i == 0 {
            literal(&mut block, 4, b"/etcdserverpb.KV/Put");
            literal(&mut block, 1, authority);
            literal(&mut block, 31, b"application/grpc");
            block.push(0x40);
            hpack::put_string(&mut block, b"te");
            hpack::put_string(&mut block, b"trailers");
            literal(&mut block, 58, b"tonic/0.14.9");
        } else {
            block.extend_from_slice(&[0xc2, 0xc1, 0xc0, 0xbf, 0xbe]);
        }
        let mut chunk = frame(0x1, 0x4, stream, &block);
        let mut message = vec![0, 0, 0, 1, 39];
        message.resize(305, 7);
        chunk.extend(frame(0x0, 0x1, stream, &message));
        chunks.push(chunk);
    }
    chunks
}

/// One request with a 4 MiB body in 16 KiB DATA frames, read in 64 KiB chunks.
fn bulk() -> Vec<Vec<u8>> {
    let mut all = PREFACE.to_vec();
    let mut block = vec![0x83, 0x86];
    literal(&mut block, 4, b"/etcdserverpb.KV/Put");
    literal(&mut block, 1, b"127.0.0.1:2379");
    all.extend(frame(0x1, 0x4, 1, &block));
    for _ in 0..256 {
        all.extend(frame(0x0, 0, 1, &[9; 16 << 10]));
    }
    all.chunks(64 << 10).map(<[u8]>::to_vec).collect()
}

/// The same reads without the repair: the baseline.
fn plain(chunks: &[&[u8]], read: usize) -> Vec<u8> {
    let mut source = ChunkReader::new(chunks);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut out = Vec::new();
    let mut space = vec![0u8; read];
    loop {
        let mut buf = ReadBuf::new(&mut space);
        match Pin::new(&mut source).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => return out,
            Poll::Ready(Ok(())) => out.extend_from_slice(buf.filled()),
            _ => unreachable!("an in-memory reader"),
        }
    }
}

fn streams(c: &mut Criterion) {
    let cases = [
        (
            "1000 requests, valid authority",
            requests(1000, b"127.0.0.1:2379"),
            READ,
        ),
        (
            "1000 requests, URL authority",
            requests(1000, b"http://127.0.0.1:2379"),
            READ,
        ),
        ("4 MiB of DATA", bulk(), 64 << 10),
    ];
    let mut group = c.benchmark_group("h2_authority");
    for (name, chunks, read) in &cases {
        let chunks: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let bytes: usize = chunks.iter().map(|c| c.len()).sum();
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(format!("{name}: without"), |b| {
            b.iter(|| black_box(plain(black_box(&chunks), *read)))
        });
        group.bench_function(format!("{name}: repaired"), |b| {
            b.iter(|| black_box(rewrite_chunks(black_box(&chunks), *read).expect("valid")))
        });
    }
    group.finish();
}

criterion_group!(benches, streams);
criterion_main!(benches);
