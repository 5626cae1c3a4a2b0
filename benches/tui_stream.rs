//! Streaming ingest (issue 11, target 3): five agents each streaming 200 deltas a second for 10 s
//! into a running app, while the human types into the composer. The app runs as the TUI's run loop
//! does (src/tui/mod.rs): events are folded as they arrive, frames are requested and coalesced by
//! the real `FrameScheduler` (at most 60 a second) and drawn on a 200x50 TestBackend, in real time
//! on one thread.
//!
//! Measured: the frame time (one draw of the whole screen), the fold time of the events between two
//! frames, how far folding lags behind the deltas' arrival times, and for each key press (one every
//! 100 ms) the time from the key to the end of the first frame showing it, and whether that frame
//! is the very next one. Targets: frame p99 under 16 ms; every key on the next frame.
//!
//! Prints `BENCH <name> <value> <unit>` lines (scripts/bench.sh collects them).
//! Env: BENCH_STREAM_SECS (default 10), BENCH_STREAM_AGENTS (5), BENCH_STREAM_RATE (200 a second).

use std::sync::Arc;
use std::time::{Duration, Instant};

use proctor::protocol::{AgentActivity, Event, EventKind};
use proctor::tui::app::{App, AppConfig, SystemClock};
use proctor::tui::frame::FrameScheduler;
use proctor::tui::keymap::Keymap;
use proctor::tui::render::highlight::Highlighter;
use proctor::tui::theme::Theme;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

const W: u16 = 200;
const H: u16 = 50;
/// Messages already in the transcript when the streaming starts.
const HISTORY: u64 = 300;
/// Deltas per streamed message (then the complete message arrives and a new one starts).
const DELTAS_PER_MESSAGE: usize = 400;
const KEY_EVERY: Duration = Duration::from_millis(100);

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A model reply the way they look: prose, a list, a Python block; cut into 12-character pieces
/// as the scripted provider streams them.
fn reply(agent: usize, n: usize) -> String {
    let mut s = format!("Reply {n} from agent {agent}. Here is the plan, step by step:\n\n");
    let mut i = 0;
    while s.len() < DELTAS_PER_MESSAGE * 12 {
        s.push_str(&format!(
            "- step {i}: read the **input**, check the `edge cases` and write the result out\n"
        ));
        if i % 10 == 9 {
            s.push_str(&format!(
                "\n```python\nfor k in range({i}):\n    print(k * k, 'squared')\n```\n\n"
            ));
        }
        i += 1;
    }
    s
}

fn ev(seq: &mut u64, kind: EventKind) -> Event {
    *seq += 1;
    Event {
        seq: *seq,
        session: "bench".into(),
        ts_ms: *seq,
        kind,
    }
}

fn pieces(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(12).map(|c| c.iter().collect()).collect()
}

fn screen_text(t: &Terminal<TestBackend>) -> String {
    let buf = t.backend().buffer();
    let mut out = String::new();
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            out.push_str(buf[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

struct Agent {
    name: String,
    text: Vec<String>,
    full: String,
    next: usize,
    messages: usize,
}

fn main() {
    let secs = env_num("BENCH_STREAM_SECS", 10);
    let n_agents = env_num("BENCH_STREAM_AGENTS", 5) as usize;
    let rate = env_num("BENCH_STREAM_RATE", 200);
    let theme = Theme::load("dark", false).expect("theme");
    let mut app = App::new(AppConfig {
        highlighter: Highlighter::inline(theme.syntect_theme.clone()),
        theme,
        keymap: Keymap::default(),
        notes: Vec::new(),
        clock: Arc::new(SystemClock),
        workspace: None,
    });
    let mut seq = 0;
    let names: Vec<String> = (0..n_agents).map(|i| format!("agent{i}")).collect();
    for m in 0..HISTORY {
        let name = &names[m as usize % n_agents];
        app.on_event(&ev(
            &mut seq,
            EventKind::Message {
                agent: name.clone(),
                content: reply(m as usize % n_agents, m as usize)[..1500].to_string(),
                to: None,
            },
        ));
    }
    let mut agents: Vec<Agent> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let full = reply(i, 0);
            Agent {
                name: name.clone(),
                text: pieces(&full),
                full,
                next: 0,
                messages: 0,
            }
        })
        .collect();
    for a in &agents {
        app.on_event(&ev(
            &mut seq,
            EventKind::AgentStatus {
                agent: a.name.clone(),
                state: AgentActivity::Streaming,
            },
        ));
    }
    // The human writes a message while the team talks.
    app.on_key(KeyEvent::new(KeyCode::Char('i'), KeyModifiers::NONE));
    let mut term = Terminal::new(TestBackend::new(W, H)).expect("terminal");
    term.draw(|f| proctor::tui::widgets::draw(&mut app, f))
        .expect("draw");

    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let total_deltas = (secs * rate) as u32;
    let mut frames = FrameScheduler::default();
    let mut frame_ms = Vec::new();
    let mut fold_ms = Vec::new();
    let mut lag_ms: Vec<f64> = Vec::new();
    let mut echo_ms = Vec::new();
    let mut echo_late = 0u32;
    let mut fold_acc = Duration::ZERO;
    let mut typed = String::new();
    // Keys pressed and not yet seen on a frame: (when, the composer text that must show).
    let mut pending_keys: Vec<(Instant, String)> = Vec::new();
    let mut key_n = 0u32;
    let mut deltas = 0u64;
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    // Every delta's arrival time: agent i's k-th at start + k*interval + i*interval/agents.
    let mut schedule: Vec<(Instant, usize)> = (0..total_deltas)
        .flat_map(|k| {
            (0..n_agents).map(move |i| {
                (
                    start + interval * k + interval * i as u32 / n_agents as u32,
                    i,
                )
            })
        })
        .collect();
    schedule.sort_by_key(|(t, _)| *t);
    let mut k = 0usize;
    let mut next_key = start + KEY_EVERY / 2;
    loop {
        let now = Instant::now();
        // Deltas whose time has come, in arrival order.
        while k < schedule.len() && schedule[k].0 <= now {
            let (t, i) = schedule[k];
            k += 1;
            let a = &mut agents[i];
            let f0 = Instant::now();
            app.on_event(&ev(
                &mut seq,
                EventKind::MessageDelta {
                    agent: a.name.clone(),
                    delta: a.text[a.next].clone(),
                },
            ));
            a.next += 1;
            deltas += 1;
            if a.next == a.text.len() {
                app.on_event(&ev(
                    &mut seq,
                    EventKind::Message {
                        agent: a.name.clone(),
                        content: a.full.clone(),
                        to: None,
                    },
                ));
                a.messages += 1;
                a.full = reply(i, a.messages);
                a.text = pieces(&a.full);
                a.next = 0;
            }
            fold_acc += f0.elapsed();
            lag_ms.push((Instant::now() - t).as_secs_f64() * 1000.0);
            frames.request();
        }
        if now >= next_key && now < end {
            key_n += 1;
            let c = char::from(b'a' + (key_n % 26) as u8);
            if typed.len() >= 60 {
                app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
                typed.clear();
            }
            app.on_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
            typed.push(c);
            pending_keys.push((next_key, typed.clone()));
            frames.request();
            next_key += KEY_EVERY;
        }
        if let Some(d) = frames.deadline(now)
            && d <= now
        {
            let t0 = Instant::now();
            term.draw(|f| proctor::tui::widgets::draw(&mut app, f))
                .expect("draw");
            let t1 = Instant::now();
            frames.drawn(t0);
            frame_ms.push((t1 - t0).as_secs_f64() * 1000.0);
            fold_ms.push(fold_acc.as_secs_f64() * 1000.0);
            fold_acc = Duration::ZERO;
            if !pending_keys.is_empty() {
                let screen = screen_text(&term);
                for (when, text) in pending_keys.drain(..) {
                    echo_ms.push((t1 - when).as_secs_f64() * 1000.0);
                    if !screen.contains(&text) {
                        echo_late += 1;
                    }
                }
            }
        }
        let now = Instant::now();
        if k >= schedule.len() && now >= end && frames.deadline(now).is_none() {
            break;
        }
        // Sleep until the next thing due: a delta, a key or the frame.
        let mut wake = schedule.get(k).map(|(t, _)| *t);
        for t in [frames.deadline(now), (now < end).then_some(next_key)]
            .into_iter()
            .flatten()
        {
            wake = Some(wake.map_or(t, |w| w.min(t)));
        }
        if let Some(w) = wake
            && w > now
        {
            std::thread::sleep(w - now);
        }
    }
    let wall = start.elapsed().as_secs_f64();
    for v in [&mut frame_ms, &mut fold_ms, &mut lag_ms, &mut echo_ms] {
        v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    }
    let busy: f64 = frame_ms.iter().sum::<f64>() + fold_ms.iter().sum::<f64>();
    println!(
        "# {n_agents} agents x {rate} deltas/s for {secs} s: {deltas} deltas, {} frames in {wall:.2} s, {} keys",
        frame_ms.len(),
        echo_ms.len()
    );
    let line = |name: &str, v: f64, unit: &str| println!("BENCH {name} {v:.2} {unit}");
    line("tui_stream/frame_p50", pct(&frame_ms, 0.5), "ms");
    line("tui_stream/frame_p99", pct(&frame_ms, 0.99), "ms");
    line("tui_stream/frame_max", pct(&frame_ms, 1.0), "ms");
    line("tui_stream/fold_per_frame_p99", pct(&fold_ms, 0.99), "ms");
    line("tui_stream/delta_lag_p99", pct(&lag_ms, 0.99), "ms");
    line("tui_stream/key_echo_p50", pct(&echo_ms, 0.5), "ms");
    line("tui_stream/key_echo_p99", pct(&echo_ms, 0.99), "ms");
    line(
        "tui_stream/keys_not_on_next_frame",
        f64::from(echo_late),
        "keys",
    );
    line("tui_stream/ui_busy", 100.0 * busy / 1000.0 / wall, "%");
    line(
        "tui_stream/frames_per_s",
        frame_ms.len() as f64 / wall,
        "fps",
    );
}
