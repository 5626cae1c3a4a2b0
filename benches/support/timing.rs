//! What the screen benches share: timings recorded beside criterion's own, so that each bench can
//! print one machine-readable summary line per figure (`BENCH <name> <value> <unit>`) for
//! `scripts/bench.sh` to collect.

// Each bench binary includes this file and uses part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SAMPLES: Mutex<BTreeMap<String, Vec<f64>>> = Mutex::new(BTreeMap::new());

/// Records the mean time per iteration of one criterion sample under `name`.
pub fn record(name: &str, total: Duration, iters: u64) {
    let per = total.as_secs_f64() / iters.max(1) as f64;
    if let Ok(mut s) = SAMPLES.lock() {
        s.entry(name.to_string()).or_default().push(per);
    }
}

/// Times `iters` runs of `f` (for `Bencher::iter_custom`) and records them under `name`.
pub fn timed(name: &str, iters: u64, mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    let d = t.elapsed();
    record(name, d, iters);
    d
}

/// Median seconds per iteration recorded under `name` (warm-up samples included: each is a
/// mean over a batch, and the batches grow), or `None` when it did not run (a filter).
pub fn median(name: &str) -> Option<f64> {
    let s = SAMPLES.lock().ok()?;
    let mut v = s.get(name)?.clone();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// Prints `BENCH <name> <value> <unit>`.
pub fn bench_line(name: &str, value: f64, unit: &str) {
    println!("BENCH {name} {value:.3} {unit}");
}

/// Prints the medians of `a` and `b` in µs and their ratio `b / a` as `ratio_name`.
pub fn ratio_line(ratio_name: &str, a: &str, b: &str) {
    let (Some(x), Some(y)) = (median(a), median(b)) else {
        return;
    };
    bench_line(&format!("{}_us", a.replace('/', "_")), x * 1e6, "us");
    bench_line(&format!("{}_us", b.replace('/', "_")), y * 1e6, "us");
    bench_line(ratio_name, y / x, "x");
}
