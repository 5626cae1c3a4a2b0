//! What the screen shows beyond the main states: the cost meter's colours and breakdown, folded
//! outputs, "↓ N new" while scrolled up, the workspace pane (and that it opens only files inside
//! the workspace), search, and a screen without colours (NO_COLOR).

mod tui_support;

use std::time::Duration;

use proctor::protocol::{EventKind, FileChange, StreamKind};
use proctor::tui::app::{App, AppConfig, ManualClock};
use proctor::tui::files::WorkspaceFiles;
use proctor::tui::keymap::Keymap;
use proctor::tui::render::highlight::Highlighter;
use proctor::tui::theme::Theme;
use ratatui::crossterm::event::KeyCode;
use ratatui::style::Color;
use tui_support::*;

fn usage(seq: u64, usd: Option<f64>, estimated: bool) -> proctor::protocol::Event {
    ev(
        seq,
        EventKind::Usage {
            agent: "coder".into(),
            model: "openai/gpt-4o-mini".into(),
            input_tokens: 1200,
            output_tokens: 300,
            cached_tokens: 200,
            cache_creation_tokens: 0,
            usd,
            estimated,
        },
    )
}

/// The colour of the first gauge cell (`▰`) in the sidebar.
fn gauge_colour(app: &mut App) -> Option<Color> {
    let t = draw(app, 120, 40);
    let buf = t.backend().buffer();
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            if buf[(x, y)].symbol() == "▰" {
                return buf[(x, y)].style().fg;
            }
        }
    }
    None
}

#[test]
fn the_cost_meter_changes_colour_at_warn_at_and_at_the_cap() {
    let theme = Theme::load("dark", false).unwrap();
    let (mut app, clock) = app("dark");
    feed(&mut app, &clock, &recorded(DEMO_AUTO)[..1]);
    app.on_event(&ev(2, EventKind::BudgetChanged { cap_usd: 1.0 }));
    app.on_event(&usage(3, Some(0.5), false));
    assert_eq!(gauge_colour(&mut app), theme.success().fg, "below warn_at");
    app.on_event(&usage(4, Some(0.35), false));
    assert_eq!(
        gauge_colour(&mut app),
        theme.warning().fg,
        "past warn_at (0.8)"
    );
    app.on_event(&usage(5, Some(0.2), false));
    assert_eq!(gauge_colour(&mut app), theme.danger().fg, "past the cap");
    let screen = text(&draw(&mut app, 120, 40));
    assert!(screen.contains("$1.0500 of $1.0000"), "{screen}");
    assert!(screen.contains("in 3.6k · cached 600"), "{screen}");
}

#[test]
fn estimated_and_unpriced_calls_say_so_and_the_breakdown_lists_each_model() {
    let (mut app, clock) = app("dark");
    feed(&mut app, &clock, &recorded(DEMO_AUTO));
    app.on_event(&usage(500, None, false));
    app.on_event(&usage(501, Some(0.001), true));
    let screen = text(&draw(&mut app, 120, 40));
    assert!(screen.contains("≈$0.0015 + unpriced"), "{screen}");
    assert!(screen.contains("1 call unpriced"), "{screen}");
    app.on_key(key('$'));
    let t = draw(&mut app, 120, 40);
    let screen = text(&t);
    assert!(screen.contains("scripted/demo"), "{screen}");
    assert!(screen.contains("openai/gpt-4o-mini"), "{screen}");
    insta::assert_snapshot!("cost_breakdown_120x40_dark", tui_support::screen(&t));
    app.on_key(code(KeyCode::Esc));
    assert!(app.modal.is_none());
}

#[test]
fn long_outputs_fold_to_head_and_tail_and_o_shows_them_whole() {
    let (mut app, clock) = app("dark");
    feed(&mut app, &clock, &recorded(DEMO_AUTO)[..1]);
    app.on_event(&ev(
        2,
        EventKind::ExecutionStarted {
            id: 1,
            block: 0,
            language: "python".into(),
        },
    ));
    for i in 0..60 {
        app.on_event(&ev(
            3 + i,
            EventKind::ExecutionOutput {
                id: 1,
                block: 0,
                stream: StreamKind::Stdout,
                text: format!("row {i}\n"),
            },
        ));
    }
    let output: String = (0..60).map(|i| format!("row {i}\n")).collect();
    app.on_event(&ev(
        70,
        EventKind::ExecutionFinished {
            id: 1,
            block: 0,
            exit_code: 0,
            timed_out: false,
            truncated: false,
            duration_ms: 12,
            output,
            oom: false,
            interrupted: false,
            not_run: false,
            workspace_limit_exceeded: false,
        },
    ));
    let screen = text(&draw(&mut app, 120, 40));
    assert!(
        screen.contains("row 0") && screen.contains("row 59"),
        "{screen}"
    );
    assert!(screen.contains("… 50 more lines (o shows all)"), "{screen}");
    assert!(!screen.contains("row 30"));
    app.on_key(key('o'));
    let screen = text(&draw(&mut app, 120, 40));
    assert!(!screen.contains("more lines"), "{screen}");
    assert!(
        screen.contains("row 59") && screen.contains("row 40"),
        "{screen}"
    );
}

#[test]
fn timeouts_and_out_of_memory_are_named() {
    let (mut app, clock) = app("dark");
    feed(&mut app, &clock, &recorded(DEMO_AUTO)[..1]);
    for (id, timed_out, oom) in [(1, true, false), (2, false, true)] {
        app.on_event(&ev(
            id * 10,
            EventKind::ExecutionStarted {
                id,
                block: 0,
                language: "python".into(),
            },
        ));
        app.on_event(&ev(
            id * 10 + 1,
            EventKind::ExecutionFinished {
                id,
                block: 0,
                exit_code: 137,
                timed_out,
                truncated: false,
                duration_ms: 30_000,
                output: String::new(),
                oom,
                interrupted: false,
                not_run: false,
                workspace_limit_exceeded: false,
            },
        ));
    }
    let screen = text(&draw(&mut app, 120, 40));
    assert!(
        screen.contains("exit 137 · 30.0 s · timed out after 30 s"),
        "{screen}"
    );
    assert!(screen.contains("killed: out of memory"), "{screen}");
}

#[test]
fn scrolled_up_the_screen_counts_what_arrives_below() {
    let (mut app, clock) = app("dark");
    feed(&mut app, &clock, &recorded(DEMO_AUTO));
    let _ = draw(&mut app, 120, 40);
    for _ in 0..15 {
        app.on_key(key('k'));
    }
    let _ = draw(&mut app, 120, 40);
    for i in 0..3 {
        app.on_event(&ev(
            900 + i,
            EventKind::Notice {
                message: format!("later note {i}"),
            },
        ));
    }
    let screen = text(&draw(&mut app, 120, 40));
    assert!(screen.contains("↓ 3 new · G/End"), "{screen}");
    assert!(!screen.contains("later note 2"));
    app.on_key(key('G'));
    let screen = text(&draw(&mut app, 120, 40));
    assert!(screen.contains("later note 2"), "{screen}");
    assert!(!screen.contains("new ·"));
}

#[test]
fn search_finds_text_and_n_goes_on() {
    let (mut app, clock) = app("dark");
    feed(&mut app, &clock, &recorded(DEMO_AUTO));
    let _ = draw(&mut app, 120, 40);
    app.on_key(key('/'));
    typed(&mut app, "ties are ordered");
    app.on_key(code(KeyCode::Enter));
    let screen = text(&draw(&mut app, 120, 40));
    assert!(screen.contains("ties are ordered"), "{screen}");
    app.on_key(key('/'));
    typed(&mut app, "no such words anywhere");
    app.on_key(code(KeyCode::Enter));
    assert!(
        app.flash
            .as_ref()
            .is_some_and(|(t, _)| t.contains("not found"))
    );
}

fn workspace_app(dir: &std::path::Path) -> (App, std::sync::Arc<ManualClock>) {
    let theme = Theme::load("dark", false).unwrap();
    let clock = ManualClock::new(1_795_784_734_171);
    let mut app = App::new(AppConfig {
        highlighter: Highlighter::inline(theme.syntect_theme.clone()),
        theme,
        keymap: Keymap::default(),
        notes: Vec::new(),
        clock: clock.clone(),
        workspace: Some(WorkspaceFiles::new(dir.to_path_buf(), None)),
    });
    app.on_event(&recorded(DEMO_AUTO)[0]);
    let file = |p: &str, before: Option<u64>, after: Option<u64>| FileChange {
        path: p.into(),
        size_before: before,
        size_after: after,
        lines_added: Some(3),
        lines_removed: None,
    };
    app.on_event(&ev(
        2,
        EventKind::ExecutionStarted {
            id: 1,
            block: 0,
            language: "python".into(),
        },
    ));
    app.on_event(&ev(
        3,
        EventKind::ExecutionFinished {
            id: 1,
            block: 0,
            exit_code: 0,
            timed_out: false,
            truncated: false,
            duration_ms: 5,
            output: String::new(),
            oom: false,
            interrupted: false,
            not_run: false,
            workspace_limit_exceeded: false,
        },
    ));
    app.on_event(&ev(
        4,
        EventKind::WorkspaceChanged {
            id: 1,
            block: 0,
            created: vec![
                file("wordcount.py", None, Some(120)),
                file("../escape.txt", None, Some(3)),
                file("link.txt", None, Some(3)),
            ],
            modified: vec![file("data.csv", Some(10), Some(40))],
            deleted: vec![FileChange {
                path: "old.log".into(),
                size_before: Some(99),
                size_after: None,
                lines_added: None,
                lines_removed: Some(7),
            }],
            notes: vec![],
        },
    ));
    clock.advance(Duration::from_secs(1));
    (app, clock)
}

#[test]
fn the_workspace_pane_lists_changed_files_and_opens_them_from_disk_inside_the_workspace_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wordcount.py"),
        "import re\nprint('counted')\n",
    )
    .unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "outside secret").unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        dir.path().join("link.txt"),
    )
    .unwrap();
    let (mut app, _) = workspace_app(dir.path());
    // The block's cell lists its changes.
    let screen = text(&draw(&mut app, 120, 40));
    assert!(
        screen.contains("+ created wordcount.py (120 B, +3)"),
        "{screen}"
    );
    assert!(
        screen.contains("~ modified data.csv (10 B → 40 B, +3)"),
        "{screen}"
    );
    assert!(screen.contains("- deleted old.log (99 B, -7)"), "{screen}");
    app.on_key(key('f'));
    let t = draw(&mut app, 120, 40);
    let screen = text(&t);
    insta::assert_snapshot!("workspace_120x40_dark", tui_support::screen(&t));
    for line in [
        "+ created  wordcount.py",
        "~ modified data.csv",
        "- deleted  old.log",
    ] {
        assert!(screen.contains(line), "{line:?}:\n{screen}");
    }
    // Rows are sorted by path: ../escape.txt, data.csv, link.txt, old.log, wordcount.py.
    app.on_key(code(KeyCode::Enter));
    load_files(&mut app);
    let screen = text(&draw(&mut app, 120, 40));
    assert!(
        screen.contains("leaves the workspace; not opened"),
        "{screen}"
    );
    app.on_key(code(KeyCode::Esc));
    app.on_key(key('j'));
    app.on_key(key('j'));
    app.on_key(code(KeyCode::Enter));
    load_files(&mut app);
    let screen = text(&draw(&mut app, 120, 40));
    assert!(
        screen.contains("a link leads out of the workspace"),
        "{screen}"
    );
    assert!(!screen.contains("outside secret"));
    app.on_key(key('d'));
    let screen = text(&draw(&mut app, 120, 40));
    assert!(
        screen.contains("a link leads out of the workspace"),
        "{screen}"
    );
    assert!(!screen.contains("outside secret"));
    app.on_key(code(KeyCode::Esc));
    app.on_key(key('j'));
    app.on_key(key('j'));
    app.on_key(code(KeyCode::Enter));
    load_files(&mut app);
    let screen = text(&draw(&mut app, 120, 40));
    assert!(
        screen.contains("1 │ import re") && screen.contains("print('counted')"),
        "{screen}"
    );
    assert!(app.take_ops().is_empty());
}

/// A session working on a copy of a small project, its start recorded as `proctor run` does, and
/// a block that changed the copy: a modified text file, a modified binary file, a deleted file and
/// a new one. The app lists them in the `f` pane.
fn session_on_a_copy() -> (App, tempfile::TempDir, tempfile::TempDir) {
    use proctor::store::SessionStore;
    use proctor::workspace::session::{Choice, SessionStart, prepare};
    let data = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    let p = project.path();
    std::fs::write(p.join("data.csv"), "name,count\nalpha,1\nbeta,2\ngamma,3\n").unwrap();
    std::fs::write(
        p.join("old.log"),
        "started\nloaded 3 rows\n\u{1b}[31mwarning\u{1b}[0m: beta is low\ndone\n",
    )
    .unwrap();
    std::fs::write(p.join("logo.png"), [0x89, b'P', b'N', b'G', 0, 0, 0, 13]).unwrap();
    let store = SessionStore::open(data.path()).unwrap();
    let id = "01a21d1c-75d6-7401-a232-0164001db74f";
    let (mount, record) = prepare(
        &store,
        data.path(),
        id,
        &proctor::config::ExecutorConfig::default(),
        Choice {
            dir: Some(p.to_path_buf()),
            mode: Some(proctor::protocol::WorkspaceMode::Copy),
        },
        &mut |_| {},
    )
    .unwrap();
    // What the block did to the copy.
    std::fs::write(
        mount.join("data.csv"),
        "name,count\nalpha,1\nbeta,20\ngamma,3\ndelta,4\n",
    )
    .unwrap();
    std::fs::remove_file(mount.join("old.log")).unwrap();
    std::fs::write(
        mount.join("logo.png"),
        [0x89, b'P', b'N', b'G', 0, 0, 0, 14, 1],
    )
    .unwrap();
    std::fs::write(
        mount.join("wordcount.py"),
        "import sys\n\ndef count(path):\n    with open(path) as f:\n        return len(f.read().split())\n\nprint(count(sys.argv[1]))\n",
    )
    .unwrap();
    let start = SessionStart::new(
        id,
        Some(&store.session_dir(id)),
        mount.clone(),
        record.as_ref(),
    );
    let theme = Theme::load("dark", false).unwrap();
    let clock = ManualClock::new(1_795_784_734_171);
    let mut app = App::new(AppConfig {
        highlighter: Highlighter::inline(theme.syntect_theme.clone()),
        theme,
        keymap: Keymap::default(),
        notes: Vec::new(),
        clock: clock.clone(),
        workspace: Some(WorkspaceFiles::new(mount, Some(start))),
    });
    app.on_event(&recorded(DEMO_AUTO)[0]);
    let file = |p: &str, before: Option<u64>, after: Option<u64>| FileChange {
        path: p.into(),
        size_before: before,
        size_after: after,
        lines_added: None,
        lines_removed: None,
    };
    app.on_event(&ev(
        4,
        EventKind::WorkspaceChanged {
            id: 1,
            block: 0,
            created: vec![file("wordcount.py", None, Some(120))],
            modified: vec![
                file("data.csv", Some(38), Some(46)),
                file("logo.png", Some(8), Some(9)),
            ],
            deleted: vec![file("old.log", Some(60), None)],
            notes: vec![],
        },
    ));
    clock.advance(Duration::from_secs(1));
    (app, data, project)
}

/// Opens row `row` of the `f` pane (rows sorted by path) on its diff; loads it as the run loop
/// would. Returns the screen at 80x24 and at 120x40.
fn diff_of(app: &mut App, row: usize) -> (String, String) {
    app.modal = None;
    app.on_key(key('f'));
    for _ in 0..row {
        app.on_key(key('j'));
    }
    app.on_key(code(KeyCode::Enter));
    load_files(app);
    app.on_key(key('d'));
    (
        tui_support::screen(&draw(app, 80, 24)),
        tui_support::screen(&draw(app, 120, 40)),
    )
}

#[test]
fn an_opened_file_switches_between_now_and_its_diff_against_the_session_start() {
    let (mut app, _data, project) = session_on_a_copy();
    // data.csv, logo.png, old.log, wordcount.py
    app.on_key(key('f'));
    app.on_key(code(KeyCode::Enter));
    // Nothing is read on the UI task: the dialog waits for the run loop.
    let loading = text(&draw(&mut app, 80, 24));
    assert!(loading.contains("loading…"), "{loading}");
    load_files(&mut app);
    let t = draw(&mut app, 120, 40);
    insta::assert_snapshot!("file_now_120x40_dark", tui_support::screen(&t));
    let now = text(&t);
    assert!(
        now.contains("3 │ beta,20") && now.contains("5 │ delta,4"),
        "{now}"
    );
    assert!(
        now.contains("d diff against session start") && now.contains("Esc back to the list"),
        "the status bar names the toggle:\n{now}"
    );
    // A key that is not the toggle changes nothing.
    app.on_key(key('x'));
    assert_eq!(text(&draw(&mut app, 120, 40)), now);

    let (small, big) = diff_of(&mut app, 0);
    insta::assert_snapshot!("file_diff_modified_80x24_dark", small);
    insta::assert_snapshot!("file_diff_modified_120x40_dark", big);
    for line in [
        "-beta,2",
        "+beta,20",
        "+delta,4",
        "@@ -1,4 +1,5 @@",
        " alpha,1",
    ] {
        assert!(big.contains(line), "{line:?}:\n{big}");
    }
    assert!(big.contains("d show the file"), "{big}");
    // d again: the file.
    app.on_key(key('d'));
    assert_eq!(text(&draw(&mut app, 120, 40)), now);

    let (small, big) = diff_of(&mut app, 1);
    insta::assert_snapshot!("file_diff_binary_80x24_dark", small);
    insta::assert_snapshot!("file_diff_binary_120x40_dark", big);
    assert!(
        big.contains("binary file: no text diff (at session start: 8 B; now: 9 B)"),
        "{big}"
    );

    let (small, big) = diff_of(&mut app, 2);
    insta::assert_snapshot!("file_diff_deleted_80x24_dark", small);
    insta::assert_snapshot!("file_diff_deleted_120x40_dark", big);
    assert!(
        big.contains("-loaded 3 rows") && big.contains("+++ (deleted)"),
        "{big}"
    );
    // The escape sequence in the deleted file is shown as markers, never sent to the terminal.
    assert!(big.contains("-␛[31mwarning␛[0m: beta is low"), "{big}");
    // Its file tab shows it as it was at session start.
    app.on_key(key('d'));
    let t = draw(&mut app, 80, 24);
    insta::assert_snapshot!("file_deleted_start_80x24_dark", tui_support::screen(&t));
    let gone = text(&t);
    assert!(
        gone.contains("at session start")
            && gone.contains("deleted in this session: shown as it was at session start")
            && gone.contains("2 │ loaded 3 rows"),
        "{gone}"
    );

    let (small, big) = diff_of(&mut app, 3);
    insta::assert_snapshot!("file_diff_created_80x24_dark", small);
    insta::assert_snapshot!("file_diff_created_120x40_dark", big);
    assert!(
        big.contains("--- (not in the start state)") && big.contains("+def count(path):"),
        "{big}"
    );
    // Reading never touched the original project, and sent nothing to the engine.
    assert!(project.path().join("old.log").exists());
    assert!(!project.path().join("wordcount.py").exists());
    assert!(app.take_ops().is_empty());
}

#[test]
fn a_load_that_lands_after_its_file_was_closed_is_dropped() {
    let (mut app, _data, _project) = session_on_a_copy();
    app.on_key(key('f'));
    app.on_key(code(KeyCode::Enter));
    let first = app.take_requests();
    app.on_key(code(KeyCode::Esc));
    app.on_key(key('j'));
    app.on_key(code(KeyCode::Enter));
    // The first file's answer arrives while the second is open: it is not shown.
    for r in first {
        if let proctor::tui::app::Request::LoadFile { seq, path, files } = r {
            app.file_loaded(seq, files.load(&path));
        }
    }
    let screen = text(&draw(&mut app, 80, 24));
    assert!(
        screen.contains("logo.png") && screen.contains("loading…"),
        "{screen}"
    );
    load_files(&mut app);
    let screen = text(&draw(&mut app, 80, 24));
    assert!(screen.contains("binary file, 9 B"), "{screen}");
}

#[test]
fn the_end_of_a_long_file_or_diff_fills_the_last_page_and_scrolling_back_moves_at_once() {
    use proctor::workspace::session::SessionStart;
    let dir = tempfile::tempdir().unwrap();
    let long: String = (1..=100).map(|i| format!("line {i}\n")).collect();
    std::fs::write(dir.path().join("long.txt"), long).unwrap();
    let (mut app, _) = workspace_app(dir.path());
    // The session's own directory: it started empty.
    app.workspace = Some(WorkspaceFiles::new(
        dir.path().to_path_buf(),
        Some(SessionStart::new("s", None, dir.path().to_path_buf(), None)),
    ));
    app.on_event(&ev(
        5,
        EventKind::WorkspaceChanged {
            id: 1,
            block: 1,
            created: vec![FileChange {
                path: "long.txt".into(),
                size_before: None,
                size_after: Some(792),
                lines_added: Some(100),
                lines_removed: None,
            }],
            modified: vec![],
            deleted: vec![],
            notes: vec![],
        },
    ));
    app.on_key(key('f'));
    // ../escape.txt, data.csv, link.txt, long.txt
    for _ in 0..3 {
        app.on_key(key('j'));
    }
    app.on_key(code(KeyCode::Enter));
    load_files(&mut app);
    for diff in [false, true] {
        app.on_key(key('G'));
        let screen = text(&draw(&mut app, 80, 24));
        let body: Vec<&str> = screen.lines().skip(3).take(19).collect();
        let last = if diff {
            "│+line 100"
        } else {
            "100 │ line 100"
        };
        assert!(body[18].contains(last), "{diff}: {screen}");
        // One line up shows one more line at the top, without a dead zone.
        let top = body[0].to_string();
        app.on_key(key('k'));
        let screen = text(&draw(&mut app, 80, 24));
        assert_ne!(screen.lines().nth(3).unwrap(), top, "{screen}");
        assert!(!screen.contains(last), "{screen}");
        app.on_key(key('d'));
    }
}

#[test]
fn no_color_draws_roles_with_attributes_only() {
    let theme = Theme::load("dark", true).unwrap();
    let clock = ManualClock::new(1_795_784_734_171);
    let mut app = App::new(AppConfig {
        highlighter: Highlighter::inline(theme.syntect_theme.clone()),
        theme,
        keymap: Keymap::default(),
        notes: Vec::new(),
        clock: clock.clone(),
        workspace: None,
    });
    feed(&mut app, &clock, &recorded(DEMO_QUIT_AT_APPROVAL));
    let t = draw(&mut app, 80, 24);
    let buf = t.backend().buffer();
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            let s = buf[(x, y)].style();
            assert!(
                matches!(s.fg, None | Some(Color::Reset)),
                "colour at {x},{y}: {s:?}"
            );
            assert!(
                matches!(s.bg, None | Some(Color::Reset)),
                "colour at {x},{y}: {s:?}"
            );
        }
    }
    insta::assert_snapshot!("approval_80x24_no_color", tui_support::screen(&t));
}

#[test]
fn an_image_pull_shows_a_progress_bar_until_output_arrives() {
    let (mut app, clock) = app("dark");
    feed(&mut app, &clock, &recorded(DEMO_AUTO)[..1]);
    app.on_event(&ev(
        2,
        EventKind::ExecutionStarted {
            id: 1,
            block: 0,
            language: "python".into(),
        },
    ));
    app.on_event(&ev(
        3,
        EventKind::ImagePull {
            image: "python:3.12-slim".into(),
            status: "Downloading".into(),
            current: 30,
            total: 100,
            layers: 4,
            layers_done: 1,
        },
    ));
    let screen = text(&draw(&mut app, 120, 40));
    assert!(
        screen.contains("pulling python:3.12-slim ▰▰▰▱▱▱▱▱▱▱ 30% (1/4 layers)"),
        "{screen}"
    );
    app.on_event(&ev(
        4,
        EventKind::ExecutionOutput {
            id: 1,
            block: 0,
            stream: StreamKind::Stdout,
            text: "hi\n".into(),
        },
    ));
    let screen = text(&draw(&mut app, 120, 40));
    assert!(!screen.contains("pulling"), "{screen}");
}
