//! Latency recording and the report: etcd `benchmark`'s summary, histogram and latency
//! distribution, plus percentiles from an HDR histogram and a JSON form for machines.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies of one client (or of all, once merged), in microseconds.
pub struct Recorder {
    hist: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
    /// Requests slower than [`STALL_MICROS`] recorded with [`Recorder::ok_at`]: when each
    /// started (µs into the run) and how long it took (µs), at most [`STALLS_KEPT`].
    stalled: Vec<(u64, u64)>,
    /// Requests recorded with [`Recorder::ok_at`] by the second of the run they finished in,
    /// for the first [`TIMELINE_SECONDS`] seconds.
    finished_per_second: Vec<u64>,
}

/// Stalled requests kept for the stall episodes (16 bytes each).
const STALLS_KEPT: usize = 1 << 20;

/// How many seconds of a run the per-second counts cover (one day; 8 bytes a second).
const TIMELINE_SECONDS: usize = 86_400;

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty recorder: 1 µs to 1 h, three significant digits.
    pub fn new() -> Self {
        Self {
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("static histogram bounds are valid"),
            errors: 0,
            first_error: None,
            stalled: Vec::new(),
            finished_per_second: Vec::new(),
        }
    }

    /// Records one successful request.
    pub fn ok(&mut self, latency: Duration) {
        self.hist.saturating_record(micros(latency).max(1));
    }

    /// Records one successful request that started `at` into the run; a stalled one is
    /// kept for the report's stall episodes too.
    pub fn ok_at(&mut self, at: Duration, latency: Duration) {
        let took = micros(latency);
        self.hist.saturating_record(took.max(1));
        if took > STALL_MICROS && self.stalled.len() < STALLS_KEPT {
            self.stalled.push((micros(at), took));
        }
        let second = at.saturating_add(latency).as_secs();
        if let Ok(second) = usize::try_from(second)
            && second < TIMELINE_SECONDS
        {
            if self.finished_per_second.len() <= second {
                self.finished_per_second.resize(second + 1, 0);
            }
            self.finished_per_second[second] += 1;
        }
    }

    /// Records one failed request.
    pub fn error(&mut self, message: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(message());
        }
    }

    /// Records `n` failures at once (e.g. events that never arrived).
    pub fn errors(&mut self, n: u64, message: impl FnOnce() -> String) {
        if n == 0 {
            return;
        }
        self.errors += n;
        if self.first_error.is_none() {
            self.first_error = Some(message());
        }
    }

    /// Adds another client's recordings.
    pub fn merge(&mut self, other: &Recorder) {
        self.hist
            .add(&other.hist)
            .expect("histograms share the same bounds");
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        let room = STALLS_KEPT.saturating_sub(self.stalled.len());
        self.stalled
            .extend(other.stalled.iter().take(room).copied());
        if self.finished_per_second.len() < other.finished_per_second.len() {
            self.finished_per_second
                .resize(other.finished_per_second.len(), 0);
        }
        for (mine, theirs) in self
            .finished_per_second
            .iter_mut()
            .zip(&other.finished_per_second)
        {
            *mine += theirs;
        }
    }

    /// The report for a run that took `elapsed`.
    pub fn report(&self, workload: &str, elapsed: Duration) -> Report {
        let ms = |micros: f64| micros / 1000.0;
        let h = &self.hist;
        let secs = elapsed.as_secs_f64();
        let count = h.len();
        let percentile = |q: f64| {
            if count == 0 {
                0.0
            } else {
                ms(h.value_at_quantile(q) as f64)
            }
        };
        Report {
            workload: workload.to_string(),
            total: count,
            errors: self.errors,
            first_error: self.first_error.clone(),
            seconds: secs,
            requests_per_sec: if secs > 0.0 { count as f64 / secs } else { 0.0 },
            latency_ms: Latency {
                avg: if count == 0 { 0.0 } else { ms(h.mean()) },
                stddev: if count == 0 { 0.0 } else { ms(h.stdev()) },
                min: if count == 0 { 0.0 } else { ms(h.min() as f64) },
                max: if count == 0 { 0.0 } else { ms(h.max() as f64) },
                p50: percentile(0.50),
                p90: percentile(0.90),
                p95: percentile(0.95),
                p99: percentile(0.99),
                p999: percentile(0.999),
            },
            histogram: buckets(h),
            stalls: episodes(&self.stalled),
            finished_per_second: self.finished_per_second.clone(),
            over_stall: if count == 0 || h.max() <= STALL_MICROS {
                0
            } else {
                h.count_between(h.next_non_equivalent(STALL_MICROS), h.max())
            },
        }
    }
}

/// `d` in whole microseconds (saturating).
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A request slower than this (in µs) counts as stalled: issue 18's "no stall over 50 ms".
pub const STALL_MICROS: u64 = 50_000;

/// Stalled requests whose times in flight overlap, as one episode each, in time order.
fn episodes(stalled: &[(u64, u64)]) -> Vec<Stall> {
    let mut by_start = stalled.to_vec();
    by_start.sort_unstable();
    let mut out: Vec<(u64, u64, u64, u64)> = Vec::new(); // start, end, longest, requests
    for (start, latency) in by_start {
        let end = start.saturating_add(latency);
        match out.last_mut() {
            Some(last) if start <= last.1 => {
                last.1 = last.1.max(end);
                last.2 = last.2.max(latency);
                last.3 += 1;
            }
            _ => out.push((start, end, latency, 1)),
        }
    }
    out.into_iter()
        .map(|(start, end, longest, requests)| Stall {
            at_s: start as f64 / 1e6,
            span_ms: (end - start) as f64 / 1e3,
            longest_ms: longest as f64 / 1e3,
            requests,
        })
        .collect()
}

/// Requests over [`STALL_MICROS`] whose times in flight overlapped.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stall {
    /// When the first of them started, in seconds into the run.
    pub at_s: f64,
    /// From the first one's start to the last one's end, in ms.
    pub span_ms: f64,
    /// The slowest of them, in ms.
    pub longest_ms: f64,
    pub requests: u64,
}

/// Ten equal-width buckets between the fastest and slowest request, as etcd prints them.
fn buckets(h: &Histogram<u64>) -> Vec<Bucket> {
    if h.is_empty() {
        return Vec::new();
    }
    let (lo, hi) = (h.min(), h.max());
    let width = ((hi - lo) / 10).max(1);
    let mut out = Vec::new();
    let mut from = lo;
    for i in 0..10 {
        let to = if i == 9 { hi } else { (from + width).min(hi) };
        let count = h.count_between(from, to);
        out.push(Bucket {
            le_ms: to as f64 / 1000.0,
            count,
        });
        if to >= hi {
            break;
        }
        from = h.next_non_equivalent(to);
    }
    out
}

/// Latency statistics in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub avg: f64,
    pub stddev: f64,
    pub min: f64,
    pub max: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
}

/// One histogram bucket: requests that took at most `le_ms` (and more than the previous).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bucket {
    pub le_ms: f64,
    pub count: u64,
}

/// The outcome of one workload run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub workload: String,
    /// Successful requests.
    pub total: u64,
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub first_error: Option<String>,
    pub seconds: f64,
    pub requests_per_sec: f64,
    pub latency_ms: Latency,
    pub histogram: Vec<Bucket>,
    /// Requests that took longer than [`STALL_MICROS`].
    #[serde(default)]
    pub over_stall: u64,
    /// Their episodes (only for requests recorded with [`Recorder::ok_at`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stalls: Vec<Stall>,
    /// Requests recorded with [`Recorder::ok_at`], by the second of the run they finished in
    /// (the first day of a run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finished_per_second: Vec<u64>,
}

impl Report {
    /// Requests per second over each whole `window` of the run (from
    /// [`Report::finished_per_second`]); a last window the run did not fill is left out.
    pub fn rate_by_window(&self, window: Duration) -> Vec<f64> {
        let width = usize::try_from(window.as_secs())
            .unwrap_or(usize::MAX)
            .max(1);
        // Whole seconds the run lasted (requests still in flight at the end may finish in the
        // second after it; they do not make a window).
        let lasted = (self.seconds.max(0.0) as usize).min(self.finished_per_second.len());
        self.finished_per_second[..lasted]
            .chunks_exact(width)
            .map(|w| w.iter().sum::<u64>() as f64 / width as f64)
            .collect()
    }

    /// The human-readable report, laid out like etcd `benchmark`'s.
    pub fn text(&self) -> String {
        let l = &self.latency_ms;
        let s = |ms: f64| ms / 1000.0;
        let mut out = String::new();
        let _ = writeln!(out, "Summary ({}):", self.workload);
        let _ = writeln!(out, "  Total:\t{:.4} secs.", self.seconds);
        let _ = writeln!(out, "  Slowest:\t{:.4} secs.", s(l.max));
        let _ = writeln!(out, "  Fastest:\t{:.4} secs.", s(l.min));
        let _ = writeln!(out, "  Average:\t{:.4} secs.", s(l.avg));
        let _ = writeln!(out, "  Stddev:\t{:.4} secs.", s(l.stddev));
        let _ = writeln!(out, "  Requests/sec:\t{:.4}", self.requests_per_sec);
        let _ = writeln!(out, "  Requests:\t{}", self.total);
        let _ = writeln!(out, "  Errors:\t{}", self.errors);
        if let Some(e) = &self.first_error {
            let _ = writeln!(out, "  First error:\t{e}");
        }
        if !self.histogram.is_empty() {
            let _ = writeln!(out, "\nResponse time histogram:");
            let most = self
                .histogram
                .iter()
                .map(|b| b.count)
                .max()
                .unwrap_or(1)
                .max(1);
            for b in &self.histogram {
                let bar = "∎".repeat((b.count * 40 / most) as usize);
                let _ = writeln!(out, "  {:.4} [{}]\t|{}", s(b.le_ms), b.count, bar);
            }
        }
        let _ = writeln!(out, "\nLatency distribution:");
        for (name, v) in [
            ("50%", l.p50),
            ("90%", l.p90),
            ("95%", l.p95),
            ("99%", l.p99),
            ("99.9%", l.p999),
        ] {
            let _ = writeln!(out, "  {name} in {:.4} secs.", s(v));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_stalled_requests_make_one_episode() {
        let ms = Duration::from_millis;
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        // One episode from 1.000 s to 1.400 s (three requests, chained by overlap).
        a.ok_at(ms(1_000), ms(300));
        b.ok_at(ms(1_250), ms(60));
        a.ok_at(ms(1_290), ms(110));
        // Not a stall.
        a.ok_at(ms(1_500), ms(50));
        // A second episode.
        b.ok_at(ms(5_000), ms(70));
        a.merge(&b);
        let r = a.report("put", Duration::from_secs(6));
        assert_eq!(r.over_stall, 4);
        assert_eq!(r.stalls.len(), 2, "{:?}", r.stalls);
        let first = &r.stalls[0];
        assert_eq!(first.requests, 3);
        assert!((first.at_s - 1.0).abs() < 1e-9);
        assert!((first.span_ms - 400.0).abs() < 1e-9, "{first:?}");
        assert!((first.longest_ms - 300.0).abs() < 1e-9);
        assert_eq!(r.stalls[1].requests, 1);
        assert!((r.stalls[1].at_s - 5.0).abs() < 1e-9);
    }

    #[test]
    fn rates_by_window_count_requests_by_when_they_finished() {
        let ms = Duration::from_millis;
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        // Window [0, 2 s): 4 requests; window [2 s, 4 s): 2; the run lasted 4.5 s, so the
        // requests finishing in [4 s, 5 s) make no window; one finishing after the run (in
        // flight at its end) neither.
        a.ok_at(ms(0), ms(10));
        a.ok_at(ms(900), ms(200)); // finishes at 1.1 s
        b.ok_at(ms(1_500), ms(100));
        b.ok_at(ms(1_950), ms(49)); // 1.999 s
        a.ok_at(ms(1_950), ms(60)); // 2.010 s: the second window
        b.ok_at(ms(3_000), ms(999));
        a.ok_at(ms(4_100), ms(100));
        b.ok_at(ms(4_400), ms(700));
        // Recorded without a start time: in the totals, not in the timeline.
        a.ok(ms(5));
        a.merge(&b);
        let r = a.report("put", ms(4_500));
        assert_eq!(r.total, 9);
        assert_eq!(r.finished_per_second, vec![1, 3, 1, 1, 1, 1]);
        assert_eq!(r.rate_by_window(Duration::from_secs(2)), vec![2.0, 1.0]);
        assert_eq!(
            r.rate_by_window(Duration::from_secs(1)),
            vec![1.0, 3.0, 1.0, 1.0]
        );
        assert!(r.rate_by_window(Duration::from_secs(5)).is_empty());
        // A window of zero seconds is taken as one second, not a division by zero.
        assert_eq!(r.rate_by_window(Duration::ZERO).len(), 4);
        // Seconds past the timeline's day are counted in the totals only.
        let mut late = Recorder::new();
        late.ok_at(Duration::from_secs(TIMELINE_SECONDS as u64 + 5), ms(1));
        let r = late.report("put", Duration::from_secs(1));
        assert_eq!(r.total, 1);
        assert!(r.finished_per_second.is_empty());
    }

    #[test]
    fn report_summarises_what_was_recorded() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        for ms in 1..=100u64 {
            a.ok(Duration::from_millis(ms));
        }
        b.ok(Duration::from_millis(1000));
        b.error(|| "etcdserver: request timed out".into());
        b.error(|| "second".into());
        a.merge(&b);
        let r = a.report("put", Duration::from_secs(2));
        assert_eq!(r.total, 101);
        assert_eq!(r.errors, 2);
        assert_eq!(
            r.first_error.as_deref(),
            Some("etcdserver: request timed out")
        );
        assert!((r.requests_per_sec - 50.5).abs() < 1e-9);
        assert!(
            (r.latency_ms.p50 - 51.0).abs() < 0.1,
            "{}",
            r.latency_ms.p50
        );
        assert!((r.latency_ms.max - 1000.0).abs() < 1.0);
        assert!((r.latency_ms.min - 1.0).abs() < 0.01);
        assert_eq!(r.histogram.iter().map(|b| b.count).sum::<u64>(), 101);
        // 51 ms to 100 ms, and the 1 s one; 50 ms itself is no stall.
        assert_eq!(r.over_stall, 51);
        assert!(r.stalls.is_empty(), "recorded without times: no episodes");
        assert!(r.histogram.windows(2).all(|w| w[0].le_ms < w[1].le_ms));
        let text = r.text();
        assert!(text.contains("Requests/sec:\t50.5000"), "{text}");
        assert!(text.contains("99.9% in 1.000"), "{text}");
        let json: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(json.total, 101);
    }

    #[test]
    fn empty_run_reports_zeros() {
        let r = Recorder::new().report("range", Duration::ZERO);
        assert_eq!(r.total, 0);
        assert!(r.histogram.is_empty());
        assert_eq!(r.requests_per_sec, 0.0);
    }
}
