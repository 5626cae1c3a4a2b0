//! End to end: the real binary's TUI in a pseudo-terminal (portable-pty) of a known size, its
//! screen parsed with vt100, against a loopback server speaking OpenAI's streaming format and the
//! real Docker sandbox. Every wait has a timeout and waits for text on the screen.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::num::NonZeroU16;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portable_pty::{CommandBuilder, PtySize, native_pty_system};

const ROWS: u16 = 40;
const COLS: u16 = 120;
const WAIT: Duration = Duration::from_secs(90);

fn image() -> String {
    std::env::var("PROCTOR_SANDBOX_IMAGE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "proctor-sandbox:bookworm".into())
}

// ---- a loopback server speaking OpenAI's chat-completions stream ----

fn sse_reply(text: &str) -> String {
    let chunk = |delta: &str, finish: &str| {
        format!(
            "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-test\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
        )
    };
    let mut body = chunk(r#"{"role":"assistant","content":""}"#, "null");
    // Several deltas, split on char boundaries.
    let chars: Vec<char> = text.chars().collect();
    for piece in chars.chunks(24) {
        let s: String = piece.iter().collect();
        body.push_str(&chunk(
            &format!("{{\"content\":{}}}", serde_json::to_string(&s).unwrap()),
            "null",
        ));
    }
    body.push_str(&chunk("{}", "\"stop\""));
    body.push_str("data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-test\",\"choices\":[],\"usage\":{\"prompt_tokens\":1000,\"completion_tokens\":500,\"total_tokens\":1500}}\n\n");
    body.push_str("data: [DONE]\n\n");
    body
}

/// Serves `replies` in order to POSTs on 127.0.0.1 (then "TERMINATE"); returns the base URL.
fn serve(replies: Vec<String>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let replies = Arc::new(Mutex::new(replies.into_iter()));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let replies = replies.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                let (head_end, len) = loop {
                    let n = match s.read(&mut tmp) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&tmp[..n]);
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..p]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        break (p + 4, len);
                    }
                };
                while buf.len() < head_end + len {
                    match s.read(&mut tmp) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                let text = replies
                    .lock()
                    .unwrap()
                    .next()
                    .unwrap_or_else(|| "TERMINATE".into());
                let body = sse_reply(&text);
                let _ = s.write_all(
                    format!("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n{body}").as_bytes(),
                );
                let _ = s.flush();
            });
        }
    });
    format!("http://127.0.0.1:{}/v1", addr.port())
}

fn setup(dir: &Path, base_url: &str) {
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[providers.loop]\nkind = \"openai\"\nbase_url = \"{base_url}\"\napi_key_env = \"PROCTOR_PTY_KEY\"\n\n[pricing.\"loop/gpt-test\"]\ninput_per_mtok = 1.0\noutput_per_mtok = 2.0\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("team.toml"),
        format!(
            "name = \"pty\"\n\n[[agents]]\nname = \"coder\"\ndescription = \"writes python\"\nmodel = \"loop/gpt-test\"\nsystem = \"You write Python.\"\ncan_execute = true\n\n[orchestration]\nspeaker_selection = \"round_robin\"\nmax_rounds = 6\n\n[termination]\ntext = \"TERMINATE\"\n\n[executor]\nimage = \"{}\"\ntimeout_s = 30\n",
            image()
        ),
    )
    .unwrap();
}

// ---- the binary in a pty ----

struct Pty {
    parser: Arc<Mutex<vt100::Parser>>,
    raw: Arc<Mutex<Vec<u8>>>,
    child: Box<dyn portable_pty::Child + Send + Sync>,
    writer: Box<dyn Write + Send>,
}

impl Pty {
    fn spawn(program: &str, args: &[String], dir: &Path, env: &[(&str, &str)]) -> Pty {
        let pty = native_pty_system();
        let pair = pty
            .openpty(PtySize {
                rows: ROWS,
                cols: COLS,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("openpty");
        let mut cmd = CommandBuilder::new(program);
        cmd.args(args);
        cmd.cwd(dir);
        cmd.env("TERM", "xterm-256color");
        cmd.env("PROCTOR_PTY_KEY", "sk-test-pty-0123456789");
        cmd.env("PROCTOR_SANDBOX_IMAGE", image());
        cmd.env_remove("NO_COLOR");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = pair.slave.spawn_command(cmd).expect("spawn");
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().expect("reader");
        let writer = pair.master.take_writer().expect("writer");
        let parser = Arc::new(Mutex::new(vt100::Parser::new(
            NonZeroU16::new(ROWS).unwrap(),
            NonZeroU16::new(COLS).unwrap(),
            0,
        )));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let (p, r) = (parser.clone(), raw.clone());
        // Drain the master on its own thread so the child never blocks on a full pty.
        std::thread::spawn(move || {
            let _master = pair.master;
            let mut buf = [0u8; 8192];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        p.lock().unwrap().process(&buf[..n]);
                        r.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                }
            }
        });
        Pty {
            parser,
            raw,
            child,
            writer,
        }
    }

    fn proctor(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Pty {
        let mut all: Vec<String> = vec![
            "--config".into(),
            dir.join("config.toml").display().to_string(),
            "--data-dir".into(),
            dir.join("data").display().to_string(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        Pty::spawn(env!("CARGO_BIN_EXE_proctor"), &all, dir, env)
    }

    fn screen(&self) -> String {
        self.parser.lock().unwrap().screen().contents()
    }

    /// Waits until the screen shows `needle`.
    fn wait_for(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if s.contains(needle) {
                return s;
            }
            if start.elapsed() > WAIT {
                panic!("{needle:?} did not appear within {WAIT:?}; the screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(40));
        }
    }

    fn send(&mut self, keys: &str) {
        self.writer.write_all(keys.as_bytes()).unwrap();
        self.writer.flush().unwrap();
    }

    /// Waits for the decision hints of a new block (they show once its guard has passed), then
    /// presses `key`.
    fn decide(&mut self, block: &str, key: &str) {
        self.wait_for(block);
        self.wait_for("y approve · n reject");
        self.send(key);
    }

    fn wait_exit(&mut self) -> u32 {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the drain thread take the last bytes.
                std::thread::sleep(Duration::from_millis(200));
                return status.exit_code();
            }
            if start.elapsed() > WAIT {
                let _ = self.child.kill();
                panic!(
                    "proctor did not exit within {WAIT:?}; the screen:\n{}",
                    self.screen()
                );
            }
            std::thread::sleep(Duration::from_millis(40));
        }
    }

    fn raw(&self) -> Vec<u8> {
        self.raw.lock().unwrap().clone()
    }
}

fn session_id(data: &Path) -> String {
    let mut ids: Vec<String> = std::fs::read_dir(data.join("sessions"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    ids.remove(0)
}

fn events(data: &Path, id: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(data.join("sessions").join(id).join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().to_path_buf();
    (d, p)
}

#[test]
fn approve_edit_reject_see_outputs_and_cost_quit_then_resume_shows_the_same_transcript() {
    let (_guard, dir) = tempdir();
    let first = "Three blocks. A title trick for the terminal: \u{1b}]0;PWNED-TITLE\u{7} and a clear \u{1b}[2J.\n\n\
```python\nprint('approved-ok', '\\x1b]0;PWNED-OUT\\x07')\n```\n\n\
```python\nprint('draft')\n```\n\n\
```python\nprint('never-runs')\n```\n";
    let url = serve(vec![first.into(), "All three handled. TERMINATE".into()]);
    setup(&dir, &url);
    let mut p = Pty::proctor(
        &[
            "run",
            "--team",
            dir.join("team.toml").to_str().unwrap(),
            "--task",
            "three blocks",
        ],
        &dir,
        &[],
    );

    // Approve the first block.
    p.decide("approval #1 · block 1/3", "y");
    // Edit the second in place: `print('draft')` → `print('edited-ok')`, then confirm the diff.
    p.decide("approval #1 · block 2/3", "e");
    p.wait_for("editing in place");
    p.send("\x1b[F"); // End
    p.send(&"\x7f".repeat(8)); // Backspace over "'draft')"
    p.send("'edited-ok')");
    p.send("\x13"); // Ctrl-S
    p.wait_for("run the edited code?");
    p.send("y");
    // Reject the third with a reason.
    p.decide("approval #1 · block 3/3", "n");
    p.wait_for("reason for rejecting");
    p.send("use the stdlib only");
    p.send("\r");

    // Outputs, decisions and cost on screen; the session ends.
    let screen = p.wait_for("session ended");
    for needle in [
        "rejected: use the stdlib only",
        "edited by you",
        "approved-ok",
        "edited-ok",
        "$0.0040",
    ] {
        if !screen.contains(needle) {
            p.send("g");
            let s = p.screen();
            assert!(
                s.contains(needle) || screen.contains(needle),
                "{needle:?} not on screen:\n{screen}\n---\n{s}"
            );
            p.send("G");
        }
    }
    assert!(
        !screen.contains("never-runs\n") && !screen.contains("│ never-runs"),
        "{screen}"
    );
    // Agent text shows its escape as markers.
    p.send("g");
    p.wait_for("␛]0;PWNED-TITLE␇");
    p.send("G");
    let final_screen = p.wait_for("session ended");
    p.send("q");
    assert_eq!(p.wait_exit(), 0);
    let after = p.screen();
    let data = dir.join("data");
    let id = session_id(&data);
    assert!(after.contains(&format!("proctor resume {id}")), "{after}");
    assert!(after.contains("cost $0.0040"), "{after}");
    // No escape sequence from the agent or the program reached the terminal raw.
    let raw = p.raw();
    assert!(
        !contains(&raw, b"\x1b]0;"),
        "an OSC title sequence reached the terminal"
    );
    assert!(!contains(&raw, b"PWNED-OUT\x07"));

    // On disk: approved, edited (what ran is the edit), rejected with the reason.
    let evs = events(&data, &id);
    let decisions: Vec<&str> = evs
        .iter()
        .filter(|e| e["type"] == "approval_resolved")
        .map(|e| e["decision"].as_str().unwrap())
        .collect();
    assert_eq!(decisions, ["approved", "edited", "rejected"]);
    let rejected = evs.iter().find(|e| e["decision"] == "rejected").unwrap();
    assert_eq!(rejected["reason"], "use the stdlib only");
    let outputs: String = evs
        .iter()
        .filter(|e| e["type"] == "execution_finished")
        .map(|e| e["output"].as_str().unwrap().to_string())
        .collect();
    assert!(
        outputs.contains("edited-ok") && outputs.contains("approved-ok"),
        "{outputs}"
    );
    assert!(!outputs.contains("never-runs") && !outputs.contains("draft"));

    // Resume: the same transcript, rebuilt from the log.
    let mut r = Pty::proctor(&["resume", &id], &dir, &[]);
    let resumed = r.wait_for("session ended");
    // The transcript and sidebars, without the scrollbar (its thumb is drawn from estimated
    // heights of cells not laid out yet, which differ between a live and a resumed screen).
    let body = |s: &str| {
        s.lines()
            .skip(1)
            .take(ROWS as usize - 6)
            .map(|l| {
                l.chars()
                    .enumerate()
                    .map(|(i, c)| if i == 85 && c == '┃' { ' ' } else { c })
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        body(&resumed),
        body(&final_screen),
        "resumed screen differs:\n{resumed}\n---\n{final_screen}"
    );
    r.send("q");
    assert_eq!(r.wait_exit(), 0);
}

#[test]
fn quit_or_hangup_with_an_approval_open_sends_nothing_and_resume_asks_again() {
    let (_guard, dir) = tempdir();
    let url = serve(vec![
        "```python\nprint('resumed-ok')\n```\n".into(),
        "Done. TERMINATE".into(),
    ]);
    setup(&dir, &url);
    let mut p = Pty::proctor(
        &[
            "run",
            "--team",
            dir.join("team.toml").to_str().unwrap(),
            "--task",
            "one block",
        ],
        &dir,
        &[],
    );
    p.wait_for("approval #1 · block 1/1");
    p.wait_for("y approve · n reject");
    p.send("q");
    assert_eq!(p.wait_exit(), 3, "quitting before the end exits 3");
    let data = dir.join("data");
    let id = session_id(&data);
    assert!(
        p.screen().contains("an approval was pending"),
        "{}",
        p.screen()
    );
    let evs = events(&data, &id);
    assert!(evs.iter().any(|e| e["type"] == "approval_requested"));
    assert!(
        !evs.iter().any(|e| e["type"] == "approval_resolved"),
        "quitting decided nothing"
    );

    // A hang-up (the terminal closed) with the approval open: nothing is decided either.
    let mut h = Pty::proctor(&["resume", &id], &dir, &[]);
    h.wait_for("approval #1 · block 1/1");
    h.wait_for("y approve · n reject");
    let pid = h.child.process_id().expect("pid");
    let killed = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(h.wait_exit(), 129);
    let evs = events(&data, &id);
    assert!(
        !evs.iter().any(|e| e["type"] == "approval_resolved"),
        "a hang-up decided nothing"
    );

    let mut r = Pty::proctor(&["resume", &id], &dir, &[]);
    r.decide("approval #1 · block 1/1", "y");
    let screen = r.wait_for("session ended");
    assert!(screen.contains("resumed-ok"), "{screen}");
    r.send("q");
    assert_eq!(r.wait_exit(), 0);
}

#[test]
fn the_files_pane_shows_a_changed_file_and_its_diff_against_the_session_start() {
    let (_guard, dir) = tempdir();
    let project = dir.join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("notes.txt"), "first line\nsecond line\n").unwrap();
    let url = serve(vec![
        "```python\nsrc = open('notes.txt').read().replace('second', '2nd')\nopen('notes.txt', 'w').write(src + 'added by the block\\n')\nprint('edited')\n```\n".into(),
        "Done. TERMINATE".into(),
    ]);
    setup(&dir, &url);
    let mut p = Pty::proctor(
        &[
            "run",
            "--team",
            dir.join("team.toml").to_str().unwrap(),
            "--task",
            "edit the notes",
            "--workspace",
            project.to_str().unwrap(),
            "--workspace-mode",
            "copy",
        ],
        &dir,
        &[],
    );
    p.decide("approval #1 · block 1/1", "y");
    p.wait_for("session ended");
    p.send("f");
    p.wait_for("~ modified notes.txt");
    p.send("\r");
    // Read by the run loop off the UI task, then shown: the file now, then its diff.
    p.wait_for("3 │ added by the block");
    p.send("d");
    let screen = p.wait_for("+added by the block");
    for line in [
        "--- notes.txt (session start)",
        "+++ notes.txt (now)",
        "@@ -1,2 +1,3 @@",
        " first line",
        "-second line",
        "+2nd line",
    ] {
        assert!(screen.contains(line), "{line:?}:\n{screen}");
    }
    // `q` (not Esc, which a key right after it would turn into Alt-key): back to the list,
    // close it, quit.
    p.send("q");
    p.wait_for("Enter open");
    p.send("qq");
    assert_eq!(p.wait_exit(), 0);
    // A copy: the original is untouched.
    assert_eq!(
        std::fs::read_to_string(project.join("notes.txt")).unwrap(),
        "first line\nsecond line\n"
    );
}

#[test]
fn a_panic_restores_the_terminal() {
    let (_guard, dir) = tempdir();
    let url = serve(vec!["Nothing to run. TERMINATE".into()]);
    setup(&dir, &url);
    let proctor = env!("CARGO_BIN_EXE_proctor");
    let script = format!(
        "'{proctor}' --config '{0}/config.toml' --data-dir '{0}/data' run --team '{0}/team.toml' --task x; echo EXIT=$?; stty -a",
        dir.display()
    );
    let mut p = Pty::spawn(
        "sh",
        &["-c".to_string(), script],
        &dir,
        &[
            (proctor::tui::TEST_PANIC_ENV, proctor::tui::TEST_PANIC_VALUE),
            ("RUST_BACKTRACE", "0"),
        ],
    );
    let screen = p.wait_for("EXIT=");
    assert_eq!(p.wait_exit(), 0, "the shell goes on");
    let screen = p.wait_for("speed").max(screen);
    assert!(screen.contains("EXIT=101"), "{screen}");
    assert!(
        screen.contains("panicked"),
        "the panic message is readable after restore:\n{screen}"
    );
    let parser = p.parser.lock().unwrap();
    let s = parser.screen();
    assert!(!s.alternate_screen(), "left the alternate screen");
    assert!(!s.hide_cursor(), "cursor shown");
    assert!(!s.bracketed_paste(), "bracketed paste off");
    // Raw mode off: the line discipline echoes and reads lines again.
    let stty = screen.replace('\n', " ");
    assert!(
        stty.contains(" icanon") && !stty.contains("-icanon"),
        "{stty}"
    );
    assert!(
        stty.contains(" echo ") && !stty.contains("-echo "),
        "{stty}"
    );
    let raw = p.raw.lock().unwrap().clone();
    assert!(
        contains(&raw, b"\x1b[?1049h"),
        "it entered the alternate screen"
    );
    assert!(contains(&raw, b"\x1b[?1007l"), "alternate scroll off");
}

#[test]
fn a_panic_in_a_background_task_leaves_the_screen_alone() {
    let (_guard, dir) = tempdir();
    let url = serve(vec!["Nothing to run. TERMINATE".into()]);
    setup(&dir, &url);
    let proctor = env!("CARGO_BIN_EXE_proctor");
    let script = format!(
        "'{proctor}' --config '{0}/config.toml' --data-dir '{0}/data' run --team '{0}/team.toml' --task x; echo EXIT=$?",
        dir.display()
    );
    let mut p = Pty::spawn(
        "sh",
        &["-c".to_string(), script],
        &dir,
        &[
            (
                proctor::tui::TEST_PANIC_ENV,
                proctor::tui::TEST_BACKGROUND_PANIC_VALUE,
            ),
            ("RUST_BACKTRACE", "0"),
        ],
    );
    let screen = p.wait_for("TERMINATE");
    assert!(!screen.contains("panicked"), "{screen}");
    {
        let parser = p.parser.lock().unwrap();
        assert!(parser.screen().alternate_screen(), "the TUI is still up");
    }
    p.send("q");
    let screen = p.wait_for("EXIT=");
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert!(!screen.contains("panicked"), "{screen}");
    assert_eq!(p.wait_exit(), 0);
}
