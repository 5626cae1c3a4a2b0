//! Resume to the first frame (issue 11, target 4): a 100,000-event session of about 100 MB with
//! realistic outputs, built into a temporary store. `resume_first_frame/serde_parse` reads the log
//! and parses it with `serde_json` into `Vec<Event>` (the floor); `resume_first_frame/first_frame`
//! does what `proctor resume` does up to its first full frame: open the store (lock, read, parse,
//! repair), replay through the engine, fold every event into the TUI's view and draw one 200x50
//! frame. Target: ≤ 1.2× the parse. Peak memory is measured apart, in `benches/resume_rss.rs`.
//!
//! After criterion, one `BENCH <name> <value> <unit>` line per figure goes to stdout.

#[path = "support/session.rs"]
mod session;
#[path = "support/timing.rs"]
mod support;

use std::time::{Duration, Instant};

use criterion::Criterion;
use proctor::store::SessionStore;
use proctor::tui::theme::Theme;

const EVENTS: u64 = 100_000;

fn resume(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = SessionStore::open(tmp.path()).expect("store");
    let (id, len) = session::build(&store, EVENTS);
    support::bench_line("resume_log_mb", len as f64 / 1e6, "MB");
    let path = store.log_path(&id);
    let theme = Theme::load("dark", false).expect("theme");
    // As the binary runs: a multi-threaded runtime (the engine and the TUI on their own tasks).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let mut g = c.benchmark_group("resume_first_frame");
    g.sample_size(10).measurement_time(Duration::from_secs(12));
    g.throughput(criterion::Throughput::Bytes(len));
    // Alternate runs of the two would be fairer on a noisy machine, but criterion runs one
    // benchmark at a time; both read the log from the page cache.
    g.bench_function("serde_parse", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let events = session::bare_parse(&path);
                total += t.elapsed();
                assert_eq!(events.len() as u64, EVENTS);
                drop(events);
            }
            support::record("resume_first_frame/serde_parse", total, iters);
            total
        })
    });
    g.bench_function("first_frame", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                rt.block_on(async {
                    let t = Instant::now();
                    let resumed = session::resume_to_first_frame(&store, &id, &theme).await;
                    total += t.elapsed();
                    resumed.stop().await;
                });
            }
            support::record("resume_first_frame/first_frame", total, iters);
            total
        })
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    resume(&mut c);
    c.final_summary();
    support::ratio_line(
        "resume_first_frame_vs_parse",
        "resume_first_frame/serde_parse",
        "resume_first_frame/first_frame",
    );
}
