//! Sequential put latency against any etcd v3 endpoint (raftkv or etcd): one client, one
//! connection, N puts of 8-byte keys and 256-byte values, one at a time; prints the count,
//! mean, p50, p99 and max. The same client measures both servers in `scripts/compare-cluster`.
//! (`raftkv-bench` will replace this with the full benchmark tool.)
//!
//! `cargo run --release --example put-latency -- 127.0.0.1:2379 [count]`

use std::time::{Duration, Instant};

use raftkv::proto::PutRequest;
use raftkv::proto::kv_client::KvClient;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let endpoint = args.next().unwrap_or_else(|| "127.0.0.1:2379".into());
    let count: usize = args.next().map(|c| c.parse()).transpose()?.unwrap_or(2000);
    let mut client = KvClient::connect(format!("http://{endpoint}")).await?;
    let value = vec![b'v'; 256];
    // Warm up the connection and the server.
    for i in 0..50 {
        client
            .put(PutRequest {
                key: format!("warm{i:04}").into(),
                value: value.clone().into(),
                ..Default::default()
            })
            .await?;
    }
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let key = format!("k{:07}", i % 10_000); // 8 bytes
        let start = Instant::now();
        client
            .put(PutRequest {
                key: key.into(),
                value: value.clone().into(),
                ..Default::default()
            })
            .await?;
        samples.push(start.elapsed());
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    let mean: Duration = samples.iter().sum::<Duration>() / samples.len() as u32;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{endpoint}: {count} sequential puts, mean {:.3} ms, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms, {:.0} put/s",
        ms(mean),
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(samples[samples.len() - 1]),
        count as f64 / samples.iter().sum::<Duration>().as_secs_f64()
    );
    Ok(())
}
