//! Compresses each kind of sample input with raftkv's snapshot codec and prints the sizes,
//! the ratio and a round-trip check; also answers the seed problem for the given strings.
//!
//! `cargo run --release --example codec-demo [STRING ...]`

use raftkv_codec::{compress, decompress, samples, shortest_compressed_len};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let strings = if args.is_empty() {
        [
            "aabbaccc",
            "ababcdcdababcdcd",
            "abcabcdede",
            "abcabcabcabcdededededede",
            "xababcdcdababcdcd",
        ]
        .map(String::from)
        .to_vec()
    } else {
        args
    };
    println!("seed problem (shortest compressed length):");
    for s in &strings {
        println!("  {s:30} -> {}", shortest_compressed_len(s));
    }

    const MIB: usize = 1 << 20;
    println!("\nbyte codec on 1 MiB samples:");
    for (name, input) in [
        ("zeros", samples::zeros(MIB)),
        ("repeated units", samples::repeated_units(MIB, 1)),
        ("random", samples::random(MIB, 1)),
        ("etcd-like records", samples::etcd_records(MIB, 1)),
    ] {
        let frame = compress(&input);
        let ok = decompress(&frame, usize::MAX)
            .map(|out| out == input)
            .unwrap_or(false);
        println!(
            "  {name:18} {:>9} -> {:>9} bytes  {:>8.2}x  round trip {}",
            input.len(),
            frame.len(),
            input.len() as f64 / frame.len() as f64,
            if ok { "ok" } else { "FAILED" }
        );
    }
}
