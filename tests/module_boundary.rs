//! The engine side of proctor (`engine`, `provider`, `executor`, `store`) must not know about
//! terminals: any front end, headless or TUI, drives it through `protocol::{Op, Event}` alone.
//! This test fails when a file there names ratatui or crossterm.

use std::path::{Path, PathBuf};

const ENGINE_SIDE: [&str; 4] = ["src/engine", "src/provider", "src/executor", "src/store"];
const FORBIDDEN: [&str; 5] = [
    "use ratatui",
    "ratatui::",
    "use crossterm",
    "crossterm::",
    "extern crate ratatui",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Lines of `text` that use a terminal crate, ignoring comments.
fn offending_lines(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .filter(|(_, line)| FORBIDDEN.iter().any(|f| line.contains(f)))
        .map(|(i, line)| (i + 1, line.trim().to_string()))
        .collect()
}

#[test]
fn engine_side_never_imports_terminal_crates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ENGINE_SIDE {
        rust_files(&root.join(dir), &mut files);
    }
    // Also the single-file form of a module (src/engine.rs) if someone switches to it.
    for dir in ENGINE_SIDE {
        let file = root.join(format!("{dir}.rs"));
        if file.is_file() {
            files.push(file);
        }
    }
    assert!(
        files.len() >= 4,
        "scanned only {} files: {files:?}",
        files.len()
    );

    let mut violations = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("read source");
        for (line, code) in offending_lines(&text) {
            violations.push(format!(
                "{}:{line}: {code}",
                path.strip_prefix(root).unwrap_or(path).display()
            ));
        }
    }
    assert!(
        violations.is_empty(),
        "engine/provider/executor/store must not use ratatui or crossterm; talk to the front end \
         through protocol::{{Op, Event}} instead:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_scan_catches_imports_and_paths_but_not_comments() {
    assert_eq!(offending_lines("use ratatui::text::Line;").len(), 1);
    assert_eq!(
        offending_lines("    let k = crossterm::event::KeyCode::Enter;").len(),
        1
    );
    assert_eq!(offending_lines("use crossterm;").len(), 1);
    assert!(offending_lines("//! unlike the TUI, no ratatui:: here").is_empty());
    assert!(offending_lines("let text = \"plain\";").is_empty());
}
