//! Deterministic sample inputs the codec is tested and benchmarked on, one per kind of data
//! its targets name: zeros, runs of repeated units, random bytes, and etcd-like key/value
//! records. Shared by the crate's tests and `benches/codec.rs` so both measure the same thing.

/// `len` zero bytes.
pub fn zeros(len: usize) -> Vec<u8> {
    vec![0; len]
}

/// `len` bytes made of runs of repeated units: for k = 1, 2, …, 256 (then again), a random
/// unit of k bytes written over and over for a 4 KiB stretch.
pub fn repeated_units(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = XorShift::new(seed);
    let mut out = Vec::with_capacity(len);
    let mut k = 1;
    while out.len() < len {
        let unit: Vec<u8> = (0..k).map(|_| rng.next() as u8).collect();
        let stretch = (4096 / k).max(2) * k;
        for byte in unit.iter().cycle().take(stretch) {
            out.push(*byte);
        }
        k = k % 256 + 1;
    }
    out.truncate(len);
    out
}

/// `len` pseudo-random bytes.
pub fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = XorShift::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// At least `len` bytes of records shaped like an etcd keyspace dump: sorted
/// `/registry/<kind>/<namespace>/<name>` keys, zero-padded create / mod revision and version
/// fields, and a Kubernetes-style JSON value with a random uid and resource version.
pub fn etcd_records(len: usize, seed: u64) -> Vec<u8> {
    const KINDS: [&str; 4] = ["configmaps", "pods", "secrets", "services"];
    let mut rng = XorShift::new(seed);
    let mut out = Vec::with_capacity(len + 1024);
    let mut revision = 1u64;
    let mut i = 0u64;
    while out.len() < len {
        let kind = KINDS[(i / 2000) as usize % KINDS.len()];
        let namespace = format!("team-{:03}", i / 97 % 1000);
        let name = format!("{}-{:06}", kind.trim_end_matches('s'), i);
        let key = format!("/registry/{kind}/{namespace}/{name}");
        let create = revision;
        revision += 1 + rng.next() % 3;
        let version = 1 + rng.next() % 5;
        let uid = format!("{:016x}{:016x}", rng.next(), rng.next());
        let value = format!(
            "{{\"kind\":\"{kind}\",\"apiVersion\":\"v1\",\"metadata\":{{\"name\":\"{name}\",\
             \"namespace\":\"{namespace}\",\"uid\":\"{uid}\",\"resourceVersion\":\"{revision}\",\
             \"labels\":{{\"app\":\"web\",\"tier\":\"frontend\"}}}},\"spec\":{{\"replicas\":{}}}}}",
            1 + rng.next() % 4
        );
        out.extend_from_slice(key.as_bytes());
        out.push(0);
        out.extend_from_slice(format!("{create:020}{revision:020}{version:020}").as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value.as_bytes());
        i += 1;
    }
    out
}

/// xorshift64*: small, fast, deterministic; not for anything but sample data.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}
