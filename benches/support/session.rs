//! A long saved session for the resume benches (issue 11, targets 4 and 7), built deterministically
//! into a temporary store, and the two things measured on it: a bare `serde_json` parse of its log
//! into `Vec<Event>`, and what `proctor resume` does up to its first full frame (open the store,
//! replay through the engine, fold into the TUI's view, draw one 200x50 frame).

// Each bench binary includes this file and uses part of it.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

use proctor::protocol::{
    CodeBlock, DecisionKind, Event, EventKind, FileChange, SessionMode, StreamKind,
};
use proctor::store::SessionStore;
use proctor::tui::app::{App, AppConfig, ManualClock};
use proctor::tui::keymap::Keymap;
use proctor::tui::render::highlight::Highlighter;
use proctor::tui::theme::Theme;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

/// Events of one turn of the generated session (see [`kind`]).
const TURN: u64 = 13;

/// Deterministic words (a tiny LCG), so every turn's text differs but every run is the same.
fn words(seed: u64, n: usize) -> String {
    const W: [&str; 24] = [
        "the", "value", "counts", "of", "each", "row", "sum", "file", "parse", "error", "check",
        "result", "table", "column", "mean", "input", "output", "step", "test", "case", "data",
        "list", "index", "total",
    ];
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut s = String::with_capacity(n * 7);
    for i in 0..n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        if i > 0 {
            s.push(if i % 14 == 0 { '\n' } else { ' ' });
        }
        s.push_str(W[(x >> 33) as usize % W.len()]);
    }
    s
}

/// The code of turn `t`: a Python script of about 40 lines.
fn code(t: u64) -> String {
    let mut s = format!("# filename: step_{t}.py\nimport csv, math, sys\n\n");
    for f in 0..6 {
        s.push_str(&format!(
            "def part_{f}(rows):\n    \"\"\"Part {f} of step {t}: {}.\"\"\"\n    total = 0\n    for r in rows:\n        total += int(r[{f}]) * {t}\n    return total\n\n",
            words(t * 7 + f, 6).replace('\n', " ")
        ));
    }
    s.push_str("rows = list(csv.reader(open('data.csv')))\nfor i in range(6):\n    print(i, globals()[f'part_{i}'](rows))\n");
    s
}

/// Output of a block: `lines` lines of a table.
fn output(t: u64, part: u64, lines: u64) -> String {
    (0..lines)
        .map(|i| {
            format!(
                "{:>6} {:>12} {:>10.3}  {}\n",
                part * 1000 + i,
                (t * 7919 + i * 104_729) % 1_000_003,
                ((t + i) as f64).sqrt(),
                words(t * 131 + part * 17 + i, 5).replace('\n', " ")
            )
        })
        .collect()
}

/// The event kind at `seq` (from 2 on; 1 is `session_started`): turns of a coder proposing a
/// script, its approval and run with two chunks of output, the workspace change, the executor's
/// report to the agents, and a reviewer's answer.
fn kind(seq: u64) -> EventKind {
    let t = (seq - 2) / TURN;
    let id = t + 1;
    let out_a = || output(t, 0, 18);
    let out_b = || output(t, 1, 18);
    match (seq - 2) % TURN {
        0 => EventKind::SpeakerSelected {
            agent: "coder".into(),
            note: None,
        },
        1 => EventKind::Usage {
            agent: "coder".into(),
            model: "openai/gpt-4o-mini".into(),
            input_tokens: 1200 + seq,
            output_tokens: 420,
            cached_tokens: 512,
            cache_creation_tokens: 0,
            usd: Some(0.0004),
            estimated: false,
        },
        2 => EventKind::Message {
            agent: "coder".into(),
            content: format!(
                "Step {t}: {}\n\n```python\n{}```\n\nThis prints one total per part.",
                words(t, 40),
                code(t)
            ),
            to: None,
        },
        3 => EventKind::ApprovalRequested {
            id,
            agent: "coder".into(),
            blocks: vec![CodeBlock {
                index: 0,
                language: "python".into(),
                code: code(t),
                filename: Some(format!("step_{t}.py")),
            }],
        },
        4 => EventKind::ApprovalResolved {
            id,
            block: 0,
            decision: DecisionKind::Approved,
            code: None,
            reason: None,
            by_rule: None,
            allow_network: false,
        },
        5 => EventKind::ExecutionStarted {
            id,
            block: 0,
            language: "python".into(),
        },
        6 => EventKind::ExecutionOutput {
            id,
            block: 0,
            stream: StreamKind::Stdout,
            text: out_a(),
        },
        7 => EventKind::ExecutionOutput {
            id,
            block: 0,
            stream: StreamKind::Stdout,
            text: out_b(),
        },
        8 => EventKind::ExecutionFinished {
            id,
            block: 0,
            exit_code: 0,
            timed_out: false,
            truncated: false,
            duration_ms: 180 + t % 50,
            output: out_a() + &out_b(),
            oom: false,
            interrupted: false,
            not_run: false,
            workspace_limit_exceeded: false,
        },
        9 => EventKind::WorkspaceChanged {
            id,
            block: 0,
            created: vec![FileChange {
                path: format!("out/step_{t}.csv"),
                size_before: None,
                size_after: Some(2048 + t),
                lines_added: Some(28),
                lines_removed: None,
            }],
            modified: Vec::new(),
            deleted: Vec::new(),
            notes: Vec::new(),
        },
        10 => EventKind::Message {
            agent: "executor".into(),
            content: format!(
                "Results of the code blocks you proposed (approval #{id}):\n\nBlock 1 (python): approved and run as proposed.\nexit code 0; output:\n```\n{}{}```\n",
                out_a(),
                out_b()
            ),
            to: None,
        },
        11 => EventKind::SpeakerSelected {
            agent: "reviewer".into(),
            note: None,
        },
        _ => EventKind::Message {
            agent: "reviewer".into(),
            content: format!("Checked step {t}: {}", words(t + 99, 30)),
            to: None,
        },
    }
}

/// Writes a session of `events` events into `store`; returns its id and the log's size.
pub fn build(store: &SessionStore, events: u64) -> (String, u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let id = format!(
        "01a21d1c-75d6-7401-a232-{:012x}",
        0x0164_001d_b74f_u64 + events
    );
    let first = Event {
        seq: 1,
        session: id.clone(),
        ts_ms: 1_790_000_000_000,
        kind: EventKind::SessionStarted {
            team: "pair".into(),
            task: "benchmark a long session".into(),
            schema: proctor::protocol::SCHEMA_VERSION,
            team_config: Some(Box::new(proctor::config::default_team())),
            mode: SessionMode::Gate,
        },
    };
    rt.block_on(async {
        let writer = store.create(&id, &first).expect("create");
        writer.close().await.expect("close");
    });
    let path = store.log_path(&id);
    let mut file = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open log"),
    );
    for seq in 2..=events {
        let ev = Event {
            seq,
            session: id.clone(),
            ts_ms: 1_790_000_000_000 + seq * 37,
            kind: kind(seq),
        };
        serde_json::to_writer(&mut file, &ev).expect("serialize");
        file.write_all(b"\n").expect("write");
    }
    file.flush().expect("flush");
    drop(file);
    let len = std::fs::metadata(&path).expect("log").len();
    (id, len)
}

/// The baseline: read the log and parse it with `serde_json` into `Vec<Event>`, nothing else.
pub fn bare_parse(path: &Path) -> Vec<Event> {
    let bytes = std::fs::read(path).expect("read log");
    serde_json::Deserializer::from_slice(&bytes)
        .into_iter::<Event>()
        .collect::<Result<Vec<_>, _>>()
        .expect("parse log")
}

/// The engine runs no code here.
struct NoExecutor;

impl proctor::executor::Executor for NoExecutor {
    fn run(
        &self,
        _request: proctor::executor::ExecRequest,
        _cancel: tokio_util::sync::CancellationToken,
    ) -> futures::stream::BoxStream<
        'static,
        Result<proctor::executor::ExecEvent, proctor::executor::ExecError>,
    > {
        Box::pin(futures::stream::empty())
    }
    fn shutdown(&self, _session: &str) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// What `proctor resume` holds once its first full frame is drawn.
pub struct Resumed {
    /// The TUI.
    pub app: App,
    /// Its terminal.
    pub term: Terminal<TestBackend>,
    /// The engine, still running.
    pub handle: proctor::engine::SessionHandle,
    /// The log's writer (it holds the session's lock).
    pub writer: proctor::store::SessionWriter,
}

impl Resumed {
    /// Stops the engine and closes the log (releasing the lock).
    pub async fn stop(self) {
        let Resumed {
            app,
            term,
            handle,
            writer,
        } = self;
        drop(handle.ops);
        handle.task.abort();
        let _ = handle.task.await;
        writer.close().await.expect("close");
        drop((app, term));
    }
}

/// `proctor resume` up to its first full frame: open the store (lock, read, parse, repair), start
/// the engine on the replayed log, fold every event it forwards into the TUI (as the run loop
/// does, with the background highlighter), and draw one 200x50 frame once the engine says the
/// session resumed.
pub async fn resume_to_first_frame(store: &SessionStore, id: &str, theme: &Theme) -> Resumed {
    let (events, _report, writer) = store.open_existing(id).expect("open");
    let n = events.len();
    let mut handle = proctor::engine::start(proctor::engine::SessionSetup {
        id: id.to_string(),
        team: proctor::config::default_team(),
        task: String::new(),
        mode: SessionMode::Gate,
        models: Default::default(),
        executor: std::sync::Arc::new(NoExecutor),
        workspace: store.workspace_dir(id),
        prices: Default::default(),
        // The engine's own records go to memory: the log stays as built for the next run.
        sink: Box::new(proctor::store::MemorySink::default()),
        resume: Some(events),
        seed: Some(1),
        image_override: None,
        workspace_record: None,
    });
    let mut app = App::new(AppConfig {
        highlighter: Highlighter::background(theme.syntect_theme.clone(), || {}),
        theme: theme.clone(),
        keymap: Keymap::default(),
        notes: Vec::new(),
        clock: ManualClock::new(1_790_000_000_000),
        workspace: None,
    });
    let mut seen = 0;
    while let Some(ev) = handle.events.recv().await {
        seen += 1;
        let resumed = seen > n && matches!(ev.kind, EventKind::Notice { .. });
        app.on_event_owned(ev);
        if resumed {
            break;
        }
    }
    assert!(seen > n, "the engine replayed the log");
    let mut term = Terminal::new(TestBackend::new(200, 50)).expect("terminal");
    term.draw(|f| proctor::tui::widgets::draw(&mut app, f))
        .expect("draw");
    Resumed {
        app,
        term,
        handle,
        writer,
    }
}
