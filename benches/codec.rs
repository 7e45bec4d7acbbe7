//! raftkv-codec beside lz4_flex and zstd (level 1) on the same inputs, 1 MiB of each kind the
//! codec's targets name. Criterion reports MB/s per codec and direction; the compression
//! ratios are printed once before the timings. `scripts/bench-codec` turns one run into the
//! table in `docs/benchmarks.md`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use raftkv_codec::samples;
use std::hint::black_box;

const SIZE: usize = 1 << 20;

fn inputs() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("zeros", samples::zeros(SIZE)),
        ("repeated_units", samples::repeated_units(SIZE, 11)),
        ("random", samples::random(SIZE, 5)),
        ("etcd_records", samples::etcd_records(SIZE, 3)),
    ]
}

type Compress = fn(&[u8]) -> Vec<u8>;
type Decompress = fn(&[u8], usize) -> Vec<u8>;

fn codecs() -> [(&'static str, Compress, Decompress); 3] {
    [
        (
            "raftkv",
            |d| raftkv_codec::compress(d),
            |f, _| raftkv_codec::decompress(f, usize::MAX).expect("own frame"),
        ),
        (
            "lz4_flex",
            |d| lz4_flex::compress_prepend_size(d),
            |f, _| lz4_flex::decompress_size_prepended(f).expect("own frame"),
        ),
        (
            "zstd1",
            |d| zstd::bulk::compress(d, 1).expect("zstd compress"),
            |f, n| zstd::bulk::decompress(f, n).expect("own frame"),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let inputs = inputs();
    for (kind, input) in &inputs {
        for (codec, compress, decompress) in codecs() {
            let frame = compress(input);
            assert_eq!(
                decompress(&frame, input.len()),
                *input,
                "{codec} round trip"
            );
            println!(
                "ratio {kind}/{codec}: {} -> {} bytes = {:.2}x",
                input.len(),
                frame.len(),
                input.len() as f64 / frame.len() as f64
            );
        }
    }
    for (kind, input) in &inputs {
        let mut group = c.benchmark_group(format!("codec/{kind}"));
        group.throughput(Throughput::Bytes(input.len() as u64));
        for (codec, compress, decompress) in codecs() {
            group.bench_with_input(BenchmarkId::new("compress", codec), input, |b, input| {
                b.iter(|| compress(black_box(input)))
            });
            let frame = compress(input);
            group.bench_with_input(BenchmarkId::new("decompress", codec), &frame, |b, frame| {
                b.iter(|| decompress(black_box(frame), input.len()))
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
