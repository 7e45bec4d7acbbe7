//! Deterministic sample inputs the codec is tested and benchmarked on, one per kind of data
//! its targets name: zeros, runs of repeated units, random bytes, and etcd-like key/value
//! records. Shared by the crate's tests and `benches/codec.rs` so both measure the same thing.
//! Also the key/value corpora snapshot sizes are measured on ([`Corpus`]): Kubernetes-like
//! Pod objects, small configuration values, and synthetic repetitive values.

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

/// A key/value data set that snapshot sizes are measured on (`raftkv-bench snapshot-sizes`,
/// `docs/benchmarks.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corpus {
    /// Kubernetes-like Pod objects: `/registry/pods/<namespace>/<name>` keys and ~1.5 KB of
    /// JSON each, with random uids, hashes, IPs and timestamps, as a cluster stores them.
    Pods,
    /// Small configuration values (1–60 bytes: numbers, durations, URLs, flags) under
    /// `/config/<service>/<setting>` keys.
    Config,
    /// 256-byte values made of a random unit of 1–32 bytes repeated: what the
    /// unit-repetition codec folds best, and real users rarely store.
    Repetitive,
}

impl Corpus {
    /// Every corpus, in the order reports list them.
    pub const ALL: [Corpus; 3] = [Corpus::Pods, Corpus::Config, Corpus::Repetitive];

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Corpus::Pods => "pods",
            Corpus::Config => "config",
            Corpus::Repetitive => "repetitive",
        }
    }

    /// The corpus named `name`.
    pub fn from_name(name: &str) -> Option<Corpus> {
        Corpus::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Item `i` of the corpus (the same for the same `seed`): its key and value.
    pub fn item(self, i: u64, seed: u64) -> (String, Vec<u8>) {
        let mut rng = XorShift::new(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        match self {
            Corpus::Pods => pod(i, &mut rng),
            Corpus::Config => config(i, &mut rng),
            Corpus::Repetitive => {
                let unit: Vec<u8> = (0..1 + rng.next() % 32)
                    .map(|_| b'a' + (rng.next() % 26) as u8)
                    .collect();
                let value = unit.iter().copied().cycle().take(256).collect();
                (format!("/repetitive/{i:08}"), value)
            }
        }
    }
}

const NAMESPACES: [&str; 8] = [
    "default",
    "kube-system",
    "payments",
    "checkout",
    "search",
    "monitoring",
    "ingress-nginx",
    "data-pipeline",
];
const APPS: [&str; 8] = [
    "api",
    "web",
    "worker",
    "cache",
    "gateway",
    "indexer",
    "exporter",
    "scheduler",
];

fn hex(rng: &mut XorShift, digits: usize) -> String {
    let mut s = String::with_capacity(digits + 16);
    while s.len() < digits {
        s.push_str(&format!("{:016x}", rng.next()));
    }
    s.truncate(digits);
    s
}

fn timestamp(rng: &mut XorShift) -> String {
    let day = 1 + rng.next() % 28;
    let secs = rng.next() % 86_400;
    format!(
        "2026-11-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn ip(rng: &mut XorShift, first: &str) -> String {
    let n = rng.next();
    format!("{first}.{}.{}", n % 256, (n >> 8) % 254 + 1)
}

/// One Pod as the API server stores it (JSON, as with `--storage-media-type=application/json`).
fn pod(i: u64, rng: &mut XorShift) -> (String, Vec<u8>) {
    let ns = NAMESPACES[(rng.next() % 8) as usize];
    let app = APPS[(rng.next() % 8) as usize];
    let template = hex(rng, 10);
    let name = format!("{app}-{template}-{}", &hex(rng, 5));
    let uid = hex(rng, 32);
    let owner_uid = hex(rng, 32);
    let (uid, owner_uid) = (
        format!(
            "{}-{}-{}-{}-{}",
            &uid[..8],
            &uid[8..12],
            &uid[12..16],
            &uid[16..20],
            &uid[20..]
        ),
        format!(
            "{}-{}-{}-{}-{}",
            &owner_uid[..8],
            &owner_uid[8..12],
            &owner_uid[12..16],
            &owner_uid[16..20],
            &owner_uid[20..]
        ),
    );
    let created = timestamp(rng);
    let started = timestamp(rng);
    let image_digest = hex(rng, 64);
    let container_id = hex(rng, 64);
    let pod_ip = ip(rng, "10.244");
    let host_ip = ip(rng, "192.168");
    let node = format!("node-{:03}", rng.next() % 200);
    let version = 1 + rng.next() % 9;
    let cpu = 50 * (1 + rng.next() % 20);
    let memory = 64 * (1 + rng.next() % 32);
    let resource_version = 1000 + i * 3 + rng.next() % 3;
    let value = format!(
        concat!(
            r#"{{"kind":"Pod","apiVersion":"v1","metadata":{{"name":"{name}","generateName":"{app}-{template}-","#,
            r#""namespace":"{ns}","uid":"{uid}","resourceVersion":"{rv}","creationTimestamp":"{created}","#,
            r#""labels":{{"app":"{app}","pod-template-hash":"{template}","version":"v{version}"}},"#,
            r#""ownerReferences":[{{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"{app}-{template}","#,
            r#""uid":"{owner_uid}","controller":true,"blockOwnerDeletion":true}}]}},"#,
            r#""spec":{{"containers":[{{"name":"{app}","#,
            r#""image":"registry.example.com/{ns}/{app}@sha256:{digest}","ports":[{{"containerPort":8080,"protocol":"TCP"}}],"#,
            r#""resources":{{"limits":{{"cpu":"{cpu}m","memory":"{mem}Mi"}},"requests":{{"cpu":"{cpu}m","memory":"{mem}Mi"}}}},"#,
            r#""terminationMessagePath":"/dev/termination-log","imagePullPolicy":"IfNotPresent"}}],"#,
            r#""restartPolicy":"Always","terminationGracePeriodSeconds":30,"dnsPolicy":"ClusterFirst","#,
            r#""serviceAccountName":"default","nodeName":"{node}","schedulerName":"default-scheduler"}},"#,
            r#""status":{{"phase":"Running","conditions":[{{"type":"Ready","status":"True","lastTransitionTime":"{started}"}},"#,
            r#"{{"type":"PodScheduled","status":"True","lastTransitionTime":"{created}"}}],"hostIP":"{host_ip}","#,
            r#""podIP":"{pod_ip}","podIPs":[{{"ip":"{pod_ip}"}}],"startTime":"{started}","containerStatuses":[{{"name":"{app}","#,
            r#""state":{{"running":{{"startedAt":"{started}"}}}},"ready":true,"restartCount":{restarts},"#,
            r#""image":"registry.example.com/{ns}/{app}@sha256:{digest}","#,
            r#""containerID":"containerd://{cid}","started":true}}],"qosClass":"Guaranteed"}}}}"#
        ),
        name = name,
        app = app,
        template = template,
        ns = ns,
        uid = uid,
        rv = resource_version,
        created = created,
        version = version,
        owner_uid = owner_uid,
        digest = image_digest,
        cpu = cpu,
        mem = memory,
        node = node,
        started = started,
        host_ip = host_ip,
        pod_ip = pod_ip,
        restarts = rng.next() % 3,
        cid = container_id,
    );
    (format!("/registry/pods/{ns}/{name}"), value.into_bytes())
}

/// One configuration setting.
fn config(i: u64, rng: &mut XorShift) -> (String, Vec<u8>) {
    const SETTINGS: [&str; 8] = [
        "timeout",
        "replicas",
        "endpoint",
        "log-level",
        "feature-flag",
        "max-conns",
        "region",
        "retry-backoff",
    ];
    let service = format!("svc-{:04}", i / 8);
    let setting = SETTINGS[(i % 8) as usize];
    let value = match i % 8 {
        0 => format!("{}ms", 100 * (1 + rng.next() % 50)),
        1 => format!("{}", 1 + rng.next() % 12),
        2 => format!(
            "https://{}.internal.example.com:{}/v{}",
            hex(rng, 8),
            8000 + rng.next() % 1000,
            1 + rng.next() % 3
        ),
        3 => ["debug", "info", "warn", "error"][(rng.next() % 4) as usize].to_string(),
        4 => format!(
            r#"{{"enabled":{},"rollout":{}}}"#,
            rng.next().is_multiple_of(2),
            rng.next() % 101
        ),
        5 => format!("{}", 64 * (1 + rng.next() % 64)),
        6 => ["eu-west-1", "us-east-2", "ap-south-1"][(rng.next() % 3) as usize].to_string(),
        _ => format!("{}s..{}s", 1 + rng.next() % 5, 30 + rng.next() % 90),
    };
    (format!("/config/{service}/{setting}"), value.into_bytes())
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
