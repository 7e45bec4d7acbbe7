//! A mutation fuzzer that needs nothing but the stable toolchain: it takes a target's seeds
//! and keeps running mutations of them (and of inputs it made before) until its time is up,
//! catching panics. No coverage guidance — that is what `scripts/fuzz` (libFuzzer) adds —
//! but every mutation here aims at what decoders of length-prefixed formats get wrong:
//! lengths and counts set to extremes, truncations, bit flips, repeated and spliced spans.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::Target;

/// The largest input the driver makes.
const MAX_INPUT: usize = 1 << 20;
/// Inputs kept to mutate further (besides the seeds).
const POOL: usize = 256;

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    /// Inputs run.
    pub execs: u64,
    /// Inputs that made the target panic, with the panic message, written to the
    /// artifacts directory.
    pub crashes: Vec<(PathBuf, String)>,
}

/// Runs `target` for `time`, from `seed` (a run is reproducible for a given seed and
/// number of executions). Crashing inputs are written to `artifacts`.
pub fn run(target: &Target, time: Duration, seed: u64, artifacts: &Path) -> Report {
    let mut rng = SmallRng::seed_from_u64(seed);
    let seeds = (target.seeds)();
    let mut pool: Vec<Vec<u8>> = seeds.clone();
    let mut report = Report::default();
    let started = Instant::now();
    // A panic inside a target is expected to be caught: keep the default hook from printing
    // a backtrace for each one.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for seed_input in &seeds {
        exec(target, seed_input, artifacts, &mut report);
    }
    while started.elapsed() < time && report.crashes.len() < 5 {
        let base = &pool[rng.random_range(0..pool.len())];
        let other = &pool[rng.random_range(0..pool.len())];
        let input = mutate(base, other, &mut rng);
        exec(target, &input, artifacts, &mut report);
        if pool.len() < POOL + seeds.len() {
            pool.push(input);
        } else {
            let i = rng.random_range(seeds.len()..pool.len());
            pool[i] = input;
        }
    }
    std::panic::set_hook(hook);
    report
}

fn exec(target: &Target, input: &[u8], artifacts: &Path, report: &mut Report) {
    report.execs += 1;
    let outcome = catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    if let Err(panic) = outcome {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into());
        let name = format!("{}-crash-{:016x}", target.name, fnv(input));
        let path = artifacts.join(name);
        let _ = std::fs::create_dir_all(artifacts);
        let _ = std::fs::write(&path, input);
        report.crashes.push((path, message));
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Values decoders trip over, as little- and big-endian integers of every width.
const INTERESTING: [u64; 12] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 32,
    i64::MAX as u64,
    u64::MAX,
];

/// One to four mutations of `base` (`other` for splices).
pub fn mutate(base: &[u8], other: &[u8], rng: &mut SmallRng) -> Vec<u8> {
    let mut out = base.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        mutate_once(&mut out, other, rng);
    }
    out.truncate(MAX_INPUT);
    out
}

fn mutate_once(out: &mut Vec<u8>, other: &[u8], rng: &mut SmallRng) {
    let len = out.len();
    let at = |rng: &mut SmallRng| {
        if len == 0 {
            0
        } else {
            rng.random_range(0..len)
        }
    };
    match rng.random_range(0..10) {
        // Flip a bit.
        0 if len > 0 => {
            let i = at(rng);
            out[i] ^= 1 << rng.random_range(0..8);
        }
        // Set a byte.
        1 if len > 0 => {
            let i = at(rng);
            out[i] = rng.random();
        }
        // Write an interesting integer (a length or count) somewhere.
        2 if len > 0 => {
            let value = INTERESTING[rng.random_range(0..INTERESTING.len())];
            let width = [1usize, 2, 4, 8][rng.random_range(0..4)];
            let bytes = if rng.random() {
                value.to_le_bytes()
            } else {
                value.to_be_bytes()
            };
            let i = at(rng);
            for (k, b) in bytes.iter().take(width).enumerate() {
                if let Some(slot) = out.get_mut(i + k) {
                    *slot = *b;
                }
            }
        }
        // A varint: long or huge.
        3 => {
            let i = at(rng);
            let varint: &[u8] = if rng.random() {
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
            } else {
                &[0x80, 0x80, 0x80, 0x04]
            };
            out.splice(i..i, varint.iter().copied());
        }
        // Truncate.
        4 if len > 0 => out.truncate(at(rng)),
        // Delete a span.
        5 if len > 1 => {
            let i = at(rng);
            let n = rng.random_range(1..=(len - i).min(64));
            out.drain(i..i + n);
        }
        // Repeat a span (nesting, runs).
        6 if len > 0 => {
            let i = at(rng);
            let n = rng.random_range(1..=(len - i).min(32));
            let span = out[i..i + n].to_vec();
            for _ in 0..rng.random_range(1..16) {
                out.splice(i..i, span.iter().copied());
            }
        }
        // Splice in part of another input.
        7 if !other.is_empty() => {
            let from = rng.random_range(0..other.len());
            let n = rng.random_range(1..=(other.len() - from).min(256));
            let i = at(rng);
            out.splice(i..i, other[from..from + n].iter().copied());
        }
        // Insert random bytes.
        _ => {
            let i = at(rng);
            let n = rng.random_range(1..8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            out.splice(i..i, bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each target for a bounded time, as CI runs them (`RAFTKV_FUZZ_SECONDS` for longer,
    /// `RAFTKV_FUZZ_SEED` to replay another sequence).
    #[test]
    fn every_target_survives_a_bounded_run() {
        let seconds: f64 = std::env::var("RAFTKV_FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1.0);
        let seed: u64 = std::env::var("RAFTKV_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed);
        let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts");
        let mut failures = Vec::new();
        for target in crate::targets() {
            let report = run(target, Duration::from_secs_f64(seconds), seed, &artifacts);
            eprintln!("{}: {} inputs", target.name, report.execs);
            for (path, message) in report.crashes {
                failures.push(format!("{}: {message} ({})", target.name, path.display()));
            }
        }
        assert!(failures.is_empty(), "crashes:\n{}", failures.join("\n"));
    }

    #[test]
    fn a_crash_is_caught_and_kept() {
        fn picky(data: &[u8]) {
            assert!(!data.starts_with(b"boom"), "found it");
        }
        let target = Target {
            name: "picky",
            about: "test",
            run: picky,
            seeds: || vec![b"boom".to_vec()],
        };
        let dir = tempfile::tempdir().unwrap();
        let report = run(&target, Duration::from_millis(10), 1, dir.path());
        assert!(!report.crashes.is_empty());
        assert!(report.crashes[0].1.contains("found it"));
        assert_eq!(std::fs::read(&report.crashes[0].0).unwrap(), b"boom");
    }
}
