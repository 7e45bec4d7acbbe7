//! raftkv-metrics: the few metric types raftkv exposes on `/metrics`, and the Prometheus text
//! exposition format (version 0.0.4) written the way etcd's client_golang writes it, so that
//! scrapes of raftkv and of etcd read alike (family order, label order, number format).
//!
//! - [`Counter`], [`Gauge`], [`Histogram`] — lock-free values updated on hot paths.
//! - [`Exposition`] — collects families at scrape time and writes them sorted by name.
//! - [`go_float`] — a number as Go's `strconv.FormatFloat(f, 'g', -1, 64)` prints it.
//!
//! Written by hand rather than with a Prometheus crate: raftkv needs ~20 fixed families with
//! etcd's exact names, help texts and number format, and no registry, no global state (several
//! members may run in one process, each with its own values) and no extra dependency tree.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one away.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A distribution over fixed upper bounds (Prometheus' cumulative `le` buckets are computed
/// when written; each slot here counts only its own range).
#[derive(Debug)]
pub struct Histogram {
    bounds: Vec<f64>,
    /// One slot per bound, plus the last for values above every bound.
    slots: Vec<AtomicU64>,
    count: AtomicU64,
    /// The sum of observations, as `f64` bits.
    sum: AtomicU64,
}

impl Histogram {
    /// A histogram with the given upper bounds (ascending).
    pub fn new(bounds: Vec<f64>) -> Self {
        let slots = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self {
            bounds,
            slots,
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Bounds `start, start*factor, …` (`count` of them), computed by repeated multiplication
    /// as client_golang's `ExponentialBuckets` does, so the `le` labels print the same.
    pub fn exponential(start: f64, factor: f64, count: usize) -> Self {
        let mut bounds = Vec::with_capacity(count);
        let mut b = start;
        for _ in 0..count {
            bounds.push(b);
            b *= factor;
        }
        Self::new(bounds)
    }

    /// Records one observation.
    pub fn observe(&self, v: f64) {
        let slot = self.bounds.partition_point(|b| *b < v);
        self.slots[slot].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut old = self.sum.load(Ordering::Relaxed);
        loop {
            let new = (f64::from_bits(old) + v).to_bits();
            match self
                .sum
                .compare_exchange_weak(old, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(seen) => old = seen,
            }
        }
    }

    /// Records a duration in seconds.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Sum of observations so far.
    pub fn sum(&self) -> f64 {
        f64::from_bits(self.sum.load(Ordering::Relaxed))
    }

    /// `(upper bound, cumulative count)` per bound, then `(+Inf, count)`.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        let mut out = Vec::with_capacity(self.slots.len());
        for (i, slot) in self.slots.iter().enumerate() {
            total += slot.load(Ordering::Relaxed);
            out.push((self.bounds.get(i).copied().unwrap_or(f64::INFINITY), total));
        }
        out
    }
}

/// A metric family's type, as written in its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `counter`
    Counter,
    /// `gauge`
    Gauge,
    /// `histogram`
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One family being written: its header, and its sample lines in the order added.
#[derive(Debug)]
struct Family {
    name: String,
    help: String,
    kind: Kind,
    lines: String,
}

/// The families of one scrape. Families are written sorted by name, as client_golang's
/// gatherer sorts them; samples keep the order they were added in (callers add them sorted
/// by label values, as client_golang does).
#[derive(Debug, Default)]
pub struct Exposition {
    families: Vec<Family>,
}

/// Labels of one sample, in the order written (client_golang sorts them by name).
pub type Labels<'a> = &'a [(&'a str, &'a str)];

impl Exposition {
    /// An empty scrape.
    pub fn new() -> Self {
        Self::default()
    }

    fn family(&mut self, name: &str, help: &str, kind: Kind) -> &mut Family {
        match self.families.iter().position(|f| f.name == name) {
            Some(i) => &mut self.families[i],
            None => {
                self.families.push(Family {
                    name: name.to_string(),
                    help: help.to_string(),
                    kind,
                    lines: String::new(),
                });
                self.families.last_mut().expect("just pushed")
            }
        }
    }

    /// Adds a counter sample.
    pub fn counter(&mut self, name: &str, help: &str, labels: Labels<'_>, value: f64) {
        let f = self.family(name, help, Kind::Counter);
        sample(&mut f.lines, name, labels, None, value);
    }

    /// Adds a gauge sample.
    pub fn gauge(&mut self, name: &str, help: &str, labels: Labels<'_>, value: f64) {
        let f = self.family(name, help, Kind::Gauge);
        sample(&mut f.lines, name, labels, None, value);
    }

    /// Adds a histogram's buckets, sum and count.
    pub fn histogram(&mut self, name: &str, help: &str, labels: Labels<'_>, h: &Histogram) {
        let f = self.family(name, help, Kind::Histogram);
        let bucket = format!("{name}_bucket");
        let buckets = h.cumulative();
        for (bound, count) in &buckets {
            let le = go_float(*bound);
            sample(&mut f.lines, &bucket, labels, Some(&le), *count as f64);
        }
        // client_golang reads count and sum from one snapshot; these are read after the
        // buckets, so a scrape racing an observation may see the count one ahead of +Inf.
        // Keep +Inf and the count equal by writing the bucket total.
        let total = buckets.last().map_or(0, |(_, c)| *c);
        sample(&mut f.lines, &format!("{name}_sum"), labels, None, h.sum());
        sample(
            &mut f.lines,
            &format!("{name}_count"),
            labels,
            None,
            total as f64,
        );
    }

    /// Whether a family of this name was added.
    pub fn has(&self, name: &str) -> bool {
        self.families.iter().any(|f| f.name == name)
    }

    /// The scrape as Prometheus text format 0.0.4.
    pub fn render(mut self) -> String {
        self.families.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out = String::new();
        for f in &self.families {
            let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(&f.help));
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
            out.push_str(&f.lines);
        }
        out
    }
}

fn sample(out: &mut String, name: &str, labels: Labels<'_>, le: Option<&str>, value: f64) {
    out.push_str(name);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
            if !first {
                out.push(',');
            }
            first = false;
            let _ = write!(out, "{k}=\"{}\"", escape_label(v));
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&go_float(value));
    out.push('\n');
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `f` as Go's `strconv.FormatFloat(f, 'g', -1, 64)` prints it, with client_golang's special
/// cases: the shortest digits that read back as `f`, in exponent form when the decimal
/// exponent is below -4 or at least 6 (`2.147483648e+09`, `1e-05`), plain otherwise
/// (`20480`, `0.0014`); `+Inf`, `-Inf`, `NaN`.
pub fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f == 0.0 {
        return "0".into();
    }
    // Rust's `{:e}` gives the same shortest digits: "2.147483648e9", "-1.5e-7".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').expect("{:e} always has an exponent");
    let exp: i32 = exp.parse().expect("{:e} writes a decimal exponent");
    if (-4..6).contains(&exp) {
        return format!("{f}");
    }
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_as_go_prints_them() {
        // Each pair seen in a real etcd 3.4 scrape (or Go's strconv docs).
        for (f, want) in [
            (0.0, "0"),
            (1.0, "1"),
            (20480.0, "20480"),
            (2147483648.0, "2.147483648e+09"),
            (25513984.0, "2.5513984e+07"),
            (1796122098.33, "1.79612209833e+09"),
            (1.8446744073709552e19, "1.8446744073709552e+19"),
            (0.0014347399999999999, "0.0014347399999999999"),
            (0.03, "0.03"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (999999.0, "999999"),
            (1000000.0, "1e+06"),
            (-3.5, "-3.5"),
            (f64::INFINITY, "+Inf"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(go_float(f), want, "{f}");
        }
    }

    #[test]
    fn exponential_bounds_print_as_client_golang_labels_them() {
        let h = Histogram::exponential(0.0001, 2.0, 16);
        let les: Vec<String> = h.cumulative().iter().map(|(b, _)| go_float(*b)).collect();
        assert_eq!(les[..4], ["0.0001", "0.0002", "0.0004", "0.0008"]);
        assert_eq!(les[15], "3.2768");
        assert_eq!(les[16], "+Inf");
        let h = Histogram::exponential(0.001, 2.0, 14);
        let les: Vec<String> = h.cumulative().iter().map(|(b, _)| go_float(*b)).collect();
        assert_eq!(les[13], "8.192");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_bounds_inclusive() {
        let h = Histogram::new(vec![1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 3.0] {
            h.observe(v);
        }
        assert_eq!(h.cumulative(), vec![(1.0, 2), (2.0, 3), (f64::INFINITY, 4)]);
        assert_eq!(h.count(), 4);
        assert_eq!(h.sum(), 6.0);
    }

    #[test]
    fn families_render_sorted_with_escaped_labels() {
        let mut e = Exposition::new();
        e.gauge("b_gauge", "B.", &[], 2.0);
        e.counter("a_total", "A \\ with\nnewline.", &[("x", "q\"uote")], 3.0);
        let h = Histogram::new(vec![0.5]);
        h.observe(0.25);
        e.histogram("c_seconds", "C.", &[("To", "1")], &h);
        assert_eq!(
            e.render(),
            "# HELP a_total A \\\\ with\\nnewline.\n# TYPE a_total counter\na_total{x=\"q\\\"uote\"} 3\n\
             # HELP b_gauge B.\n# TYPE b_gauge gauge\nb_gauge 2\n\
             # HELP c_seconds C.\n# TYPE c_seconds histogram\n\
             c_seconds_bucket{To=\"1\",le=\"0.5\"} 1\nc_seconds_bucket{To=\"1\",le=\"+Inf\"} 1\n\
             c_seconds_sum{To=\"1\"} 0.25\nc_seconds_count{To=\"1\"} 1\n"
        );
    }
}
