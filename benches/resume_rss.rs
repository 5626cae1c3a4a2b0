//! Memory of a resumed session (issue 11, targets 4 and 7), each figure measured in a fresh
//! process of its own (this binary run again), so that neither the fixture's construction nor
//! criterion pollutes it:
//!
//! - target 4: the peak RSS (`VmHWM` of /proc/self/status) of resuming a 100,000-event session
//!   (≈ 100 MB log) up to its first full frame, vs the log's size (target ≤ 2×); and, for
//!   reference, the peak of a bare `serde_json` parse of the same log into `Vec<Event>`;
//! - target 7: the RSS of the TUI (view model and transcript caches after drawing its first frame
//!   and paging up through 100 screens) after 10^5 events vs after 10^3 (target ≤ 3× the log).
//!
//! `cargo bench --bench resume_rss` prints one `BENCH <name> <value> <unit>` line per figure.

#[path = "support/session.rs"]
mod session;

use std::path::Path;
use std::process::Command;

use proctor::store::SessionStore;
use proctor::tui::theme::Theme;

const CHILD: &str = "PROCTOR_BENCH_RSS_CHILD";

/// (VmHWM, VmRSS) of this process in bytes.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("field")
            * 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// One measurement, in this (fresh) process; prints `hwm rss` in bytes.
fn child(what: &str, dir: &Path, id: &str) {
    let store = SessionStore::open(dir).expect("store");
    match what {
        "parse" => {
            let events = session::bare_parse(&store.log_path(id));
            let (hwm, rss) = memory();
            std::hint::black_box(&events);
            println!("{hwm} {rss}");
        }
        "resume" => {
            let theme = Theme::load("dark", false).expect("theme");
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let mut r = session::resume_to_first_frame(&store, id, &theme).await;
                let (hwm_first, _) = memory();
                // Page up through 100 screens: the transcript's caches fill to their bound.
                for _ in 0..100 {
                    r.app.act(proctor::tui::keymap::Action::PageUp);
                    r.term
                        .draw(|f| proctor::tui::widgets::draw(&mut r.app, f))
                        .expect("draw");
                }
                let (_, rss) = memory();
                println!("{hwm_first} {rss}");
                r.stop().await;
            });
        }
        other => panic!("unknown measurement {other}"),
    }
}

fn measure(what: &str, dir: &Path, id: &str) -> (u64, u64) {
    let out = Command::new(std::env::current_exe().expect("exe"))
        .env(CHILD, what)
        .arg(dir)
        .arg(id)
        .output()
        .expect("run the measurement");
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text
        .lines()
        .last()
        .expect("a line")
        .split_whitespace()
        .map(|v| v.parse::<u64>().expect("bytes"));
    (it.next().expect("hwm"), it.next().expect("rss"))
}

fn line(name: &str, value: f64, unit: &str) {
    println!("BENCH {name} {value:.3} {unit}");
}

fn main() {
    if let Ok(what) = std::env::var(CHILD) {
        let args: Vec<String> = std::env::args().collect();
        child(&what, Path::new(&args[1]), &args[2]);
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = SessionStore::open(tmp.path()).expect("store");
    let (big, big_len) = session::build(&store, 100_000);
    let (small, small_len) = session::build(&store, 1_000);
    let mb = |b: u64| b as f64 / 1e6;

    let (parse_hwm, _) = measure("parse", tmp.path(), &big);
    let (resume_hwm, big_rss) = measure("resume", tmp.path(), &big);
    let (_, small_rss) = measure("resume", tmp.path(), &small);

    line("resume_log_mb", mb(big_len), "MB");
    line("parse_peak_rss_mb", mb(parse_hwm), "MB");
    line(
        "parse_peak_rss_vs_file",
        parse_hwm as f64 / big_len as f64,
        "x",
    );
    line("resume_peak_rss_mb", mb(resume_hwm), "MB");
    line(
        "resume_peak_rss_vs_file",
        resume_hwm as f64 / big_len as f64,
        "x",
    );
    line("tui_log_1e3_mb", mb(small_len), "MB");
    line("tui_rss_1e3_mb", mb(small_rss), "MB");
    line("tui_rss_1e5_mb", mb(big_rss), "MB");
    line("tui_rss_1e5_vs_log", big_rss as f64 / big_len as f64, "x");
    line(
        "tui_rss_growth_vs_log",
        big_rss.saturating_sub(small_rss) as f64 / (big_len - small_len) as f64,
        "x",
    );
}
