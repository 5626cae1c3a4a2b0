//! The real binary, driven as users and scripts drive it: headless JSON and console runs with a
//! scripted provider, decisions on stdin, closed stdin, resume, and bad input of every kind.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use assert_cmd::cargo::cargo_bin_cmd;
use predicates::prelude::*;
use serde_json::Value;

mod cli_support;
use cli_support::Home;

struct Env {
    home: Home,
}

impl Env {
    /// A data dir, a config with a scripted provider playing `script`, and a team file.
    fn new(script: &str, team: &str) -> Env {
        Env {
            home: Home::scripted(script, team),
        }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.home.path(p)
    }
    fn cmd(&self) -> Command {
        self.home.cmd()
    }
    fn run(&self, extra: &[&str], stdin: &str) -> (i32, Vec<Value>, String) {
        let mut c = self.cmd();
        c.args(["run", "--team"])
            .arg(self.path("team.toml"))
            .args(extra);
        finish(c, stdin)
    }
}

fn finish(mut c: Command, stdin: &str) -> (i32, Vec<Value>, String) {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let events = stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
        })
        .collect();
    (
        out.status.code().unwrap_or(-1),
        events,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

const TEAM: &str = r#"
name = "pair"
[[agents]]
name = "coder"
model = "fake/m"
can_execute = true
[[agents]]
name = "reviewer"
model = "fake/m"
"#;

const SCRIPT: &str = r#"
[[reply]]
agent = "coder"
text = """
```python
print(6 * 7)
```
"""
[[reply]]
agent = "reviewer"
text = "Correct. TERMINATE"
"#;

fn of_type<'a>(events: &'a [Value], t: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == t).collect()
}

#[test]
fn headless_json_auto_runs_code_in_docker_and_streams_contract_events() {
    let env = Env::new(SCRIPT, TEAM);
    let (code, events, stderr) = env.run(
        &[
            "--task",
            "compute 6*7",
            "--headless",
            "--json",
            "--approve",
            "auto",
        ],
        "",
    );
    assert_eq!(code, 0, "stderr: {stderr}");
    let session = events[0]["session"].as_str().unwrap().to_string();
    let mut last = 0;
    for e in &events {
        assert_eq!(e["session"], session.as_str());
        let seq = e["seq"].as_u64().unwrap();
        assert!(seq > last, "seq must strictly increase");
        last = seq;
    }
    assert_eq!(events[0]["type"], "session_started");
    assert_eq!(events[0]["seq"], 1);
    assert_eq!(events[0]["task"], "compute 6*7");
    assert_eq!(events[0]["team"], "pair");
    let req = of_type(&events, "approval_requested");
    assert_eq!(req.len(), 1);
    assert_eq!(req[0]["blocks"][0]["language"], "python");
    assert_eq!(req[0]["blocks"][0]["index"], 0);
    let res = of_type(&events, "approval_resolved");
    assert_eq!(res[0]["decision"], "approved");
    let fin = of_type(&events, "execution_finished");
    assert_eq!(fin[0]["exit_code"], 0);
    assert_eq!(fin[0]["output"].as_str().unwrap().trim(), "42");
    assert_eq!(fin[0]["timed_out"], false);
    let out = of_type(&events, "execution_output");
    assert!(
        out.iter()
            .any(|o| o["stream"] == "stdout" && o["text"].as_str().unwrap().contains("42"))
    );
    let usage = of_type(&events, "usage");
    assert!(!usage.is_empty());
    for u in &usage {
        for f in [
            "agent",
            "model",
            "input_tokens",
            "output_tokens",
            "cached_tokens",
            "usd",
            "estimated",
        ] {
            assert!(u.get(f).is_some(), "usage lacks {f}: {u}");
        }
    }
    assert_eq!(events.last().unwrap()["type"], "terminated");

    // The log on disk holds the persisted events, in the same order, with the same seqs.
    let log = std::fs::read_to_string(
        env.path("data")
            .join("sessions")
            .join(&session)
            .join("events.jsonl"),
    )
    .unwrap();
    let logged: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let persisted: Vec<&Value> = events
        .iter()
        .filter(|e| {
            !matches!(
                e["type"].as_str().unwrap(),
                "message_delta" | "agent_status" | "image_pull" | "waiting"
            )
        })
        .collect();
    assert_eq!(logged.len(), persisted.len());
    for (a, b) in logged.iter().zip(persisted) {
        assert_eq!(a, b);
    }
}

#[test]
fn headless_json_ask_takes_decisions_from_stdin_and_reject_reason_reaches_agent() {
    let script = r#"
[[reply]]
agent = "coder"
text = """
```python
print('one')
```
```python
import requests
```
"""
[[reply]]
agent = "reviewer"
text = "TERMINATE"
"#;
    let env = Env::new(script, TEAM);
    let input = concat!(
        r#"{"id": 1, "block": 0, "decision": "edit", "code": "print('edited')"}"#,
        "\n",
        r#"{"id": 1, "block": 1, "decision": "reject", "reason": "use the stdlib only"}"#,
        "\n"
    );
    let (code, events, stderr) = env.run(&["--task", "t", "--headless", "--json"], input);
    assert_eq!(code, 0, "stderr: {stderr}");
    let res = of_type(&events, "approval_resolved");
    assert_eq!(res[0]["decision"], "edited");
    assert_eq!(res[0]["code"], "print('edited')");
    assert_eq!(res[1]["decision"], "rejected");
    assert_eq!(res[1]["reason"], "use the stdlib only");
    let fin = of_type(&events, "execution_finished");
    assert_eq!(fin.len(), 1, "the rejected block did not run");
    assert_eq!(fin[0]["output"].as_str().unwrap().trim(), "edited");
    let report = events
        .iter()
        .find(|e| e["type"] == "message" && e["agent"] == "executor")
        .unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(report.contains("EDITED"));
    assert!(report.contains("use the stdlib only"));
}

#[test]
fn closed_stdin_with_pending_approval_saves_and_resume_asks_again() {
    let env = Env::new(SCRIPT, TEAM);
    let (code, events, stderr) = env.run(&["--task", "t", "--headless", "--json"], "");
    assert_ne!(code, 0);
    assert!(stderr.contains("approval was pending"), "{stderr}");
    assert!(stderr.contains("proctor resume"), "{stderr}");
    let session = events[0]["session"].as_str().unwrap().to_string();
    let asked = of_type(&events, "approval_requested");
    assert_eq!(asked.len(), 1);
    let id = asked[0]["id"].as_u64().unwrap();
    let last_seq = events
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .max()
        .unwrap();

    // Resume: the same lines are replayed, the same approval is open, and the answer continues it.
    let mut c = env.cmd();
    c.args(["resume", &session, "--headless", "--json"]);
    let answer = format!("{{\"id\": {id}, \"block\": 0, \"decision\": \"approve\"}}\n");
    let (code, resumed, stderr) = finish(c, &answer);
    assert_eq!(code, 0, "stderr: {stderr}");
    let replay_asks = of_type(&resumed, "approval_requested");
    assert_eq!(replay_asks.len(), 1, "asked again, not duplicated");
    assert_eq!(replay_asks[0]["id"].as_u64().unwrap(), id);
    let new: Vec<&Value> = resumed
        .iter()
        .filter(|e| e["seq"].as_u64().unwrap() > last_seq)
        .collect();
    assert!(new.iter().any(|e| e["type"] == "execution_finished"));
    assert_eq!(resumed.last().unwrap()["type"], "terminated");
    let log = std::fs::read_to_string(
        env.path("data")
            .join("sessions")
            .join(&session)
            .join("events.jsonl"),
    )
    .unwrap();
    let seqs: Vec<u64> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "no seq is duplicated in the log: {seqs:?}"
    );
}

#[test]
fn console_mode_prints_a_readable_transcript_and_takes_y() {
    let env = Env::new(SCRIPT, TEAM);
    let mut c = env.cmd();
    c.args(["run", "--team"])
        .arg(env.path("team.toml"))
        .args(["--task", "t", "--headless"]);
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"y\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("── coder ──"));
    assert!(stdout.contains("approval #1: coder proposes 1 block(s)"));
    assert!(stdout.contains("[y] approve"));
    assert!(stdout.contains("│ 42"));
    assert!(stdout.contains("session ended: reviewer said TERMINATE"));
    assert!(
        stdout.contains("cost: $"),
        "the session's cost is shown at the end: {stdout}"
    );
}

#[test]
fn auto_mode_pause_exits_non_zero_with_the_reason() {
    let script = r#"
[[reply]]
agent = "coder"
error = "the server fell over"
"#;
    let env = Env::new(script, TEAM);
    let (code, events, stderr) = env.run(
        &["--task", "t", "--headless", "--json", "--approve", "auto"],
        "",
    );
    assert_eq!(code, 2);
    assert!(of_type(&events, "paused").len() == 1);
    assert!(stderr.contains("the server fell over"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one-line reason: {stderr}");
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn invalid_team_file_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let team = write(
        dir.path(),
        "bad-team.toml",
        "name = \"x\"\n[[agents]]\nname = \"coder\"\nmodel = \"opnai/gpt-4o\"\n",
    );
    cargo_bin_cmd!("proctor")
        .args(["--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--config"])
        .arg(write(dir.path(), "config.toml", ""))
        .args(["run", "--team"])
        .arg(&team)
        .args(["--task", "x", "--headless"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("bad-team.toml:4"))
        .stderr(predicate::str::contains("agents[0].model"))
        .stderr(predicate::str::contains("opnai"));
}

#[test]
fn invalid_config_file_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "config.toml",
        "[providers.openai]\nkind = \"openai\"\nbase_url = \"ftp://x\"\n",
    );
    cargo_bin_cmd!("proctor")
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["sessions", "list"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("config.toml:3"))
        .stderr(predicate::str::contains("base_url"));
}

#[test]
fn unknown_flag_and_missing_team_file_fail_clearly() {
    cargo_bin_cmd!("proctor")
        .args(["run", "--frobnicate"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--frobnicate"));
    let dir = tempfile::tempdir().unwrap();
    cargo_bin_cmd!("proctor")
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--config")
        .arg(write(dir.path(), "config.toml", ""))
        .args([
            "run",
            "--team",
            "/nonexistent/team.toml",
            "--task",
            "x",
            "--headless",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("/nonexistent/team.toml"));
}

#[test]
fn missing_api_key_names_the_env_var() {
    let dir = tempfile::tempdir().unwrap();
    let team = write(
        dir.path(),
        "team.toml",
        "name = \"x\"\n[[agents]]\nname = \"coder\"\nmodel = \"openai/gpt-4o-mini\"\n",
    );
    cargo_bin_cmd!("proctor")
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--config")
        .arg(write(dir.path(), "config.toml", ""))
        .env_remove("OPENAI_API_KEY")
        .args(["run", "--team"])
        .arg(&team)
        .args(["--task", "x", "--headless", "--json"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("OPENAI_API_KEY"));
}

#[test]
fn sessions_list_export_fork_rm() {
    let env = Env::new(SCRIPT, TEAM);
    let (code, events, _) = env.run(
        &[
            "--task",
            "compute 6*7",
            "--headless",
            "--json",
            "--approve",
            "auto",
        ],
        "",
    );
    assert_eq!(code, 0);
    let session = events[0]["session"].as_str().unwrap().to_string();
    let out = env.cmd().args(["sessions", "list"]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains(&session), "{table}");
    assert!(table.contains("compute 6*7"));
    assert!(table.contains("finished"));
    let md = env
        .cmd()
        .args(["sessions", "export", &session, "--format", "md"])
        .output()
        .unwrap();
    let md = String::from_utf8_lossy(&md.stdout);
    assert!(md.contains("```python"), "{md}");
    assert!(md.contains("42"));
    let fork = env
        .cmd()
        .args(["sessions", "fork", &session, "--at", "3"])
        .output()
        .unwrap();
    assert!(fork.status.success());
    let new_id = String::from_utf8_lossy(&fork.stdout).trim().to_string();
    assert_ne!(new_id, session);
    let json = env
        .cmd()
        .args(["sessions", "export", &new_id, "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&json.stdout).lines().count(), 3);
    let rm = env
        .cmd()
        .args(["sessions", "rm", &new_id])
        .output()
        .unwrap();
    assert!(rm.status.success());
    assert!(!env.path("data").join("sessions").join(&new_id).exists());
}

#[test]
fn resume_without_its_provider_still_opens_and_names_what_is_missing() {
    let env = Env::new(SCRIPT, TEAM);
    let (_, events, _) = env.run(&["--task", "t", "--headless", "--json"], "");
    let session = events[0]["session"].as_str().unwrap().to_string();
    // The provider is gone from config.toml.
    std::fs::write(env.path("config.toml"), "").unwrap();
    let mut c = env.cmd();
    c.args(["resume", &session, "--headless", "--json"]);
    let (code, replayed, stderr) = finish(c, "");
    assert!(stderr.contains("opens without a model"), "{stderr}");
    assert!(
        stderr.contains("fake"),
        "names the missing provider: {stderr}"
    );
    assert_ne!(code, 0);
    // The transcript is all there: the replay holds every recorded event.
    assert_eq!(replayed[0]["type"], "session_started");
    assert!(replayed.iter().any(|e| e["type"] == "approval_requested"));
}

#[test]
fn unknown_theme_is_refused_with_the_choices() {
    let dir = tempfile::tempdir().unwrap();
    cargo_bin_cmd!("proctor")
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--config")
        .arg(write(dir.path(), "config.toml", ""))
        .args(["--theme", "solarized", "sessions", "list"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("solarized"))
        .stderr(predicate::str::contains("high-contrast"));
}

#[test]
fn api_keys_in_proctors_environment_never_reach_the_sandbox() {
    let script = r#"
[[reply]]
agent = "coder"
text = """
```python
import os, glob
seen = dict(os.environ)
for path in glob.glob('/proc/[0-9]*/environ'):
    try:
        seen[path] = open(path, 'rb').read().decode('latin-1')
    except OSError:
        pass
print(repr(seen))
```
"""
[[reply]]
agent = "reviewer"
text = "TERMINATE"
"#;
    let env = Env::new(script, TEAM);
    let sentinel = "sk-proj-SENTINEL-must-not-leak-42";
    let mut c = env.cmd();
    c.args(["run", "--team"])
        .arg(env.path("team.toml"))
        .args(["--task", "t", "--headless", "--json", "--approve", "auto"])
        .env("OPENAI_API_KEY", sentinel)
        .env("ANTHROPIC_API_KEY", sentinel);
    let (code, events, stderr) = finish(c, "");
    assert_eq!(code, 0, "{stderr}");
    let fin = of_type(&events, "execution_finished");
    let output = fin[0]["output"].as_str().unwrap();
    assert!(
        output.contains("PATH"),
        "the block ran and printed its environment: {output}"
    );
    assert!(
        !output.contains("SENTINEL"),
        "a key from proctor's environment reached the sandbox"
    );
    assert!(!output.contains("OPENAI_API_KEY") && !output.contains("ANTHROPIC_API_KEY"));
}

/// The exit codes documented in docs/cli.md's table, in order.
fn documented_exit_codes() -> Vec<i32> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md")).unwrap();
    let table = doc
        .split("## Exit codes")
        .nth(1)
        .expect("docs/cli.md has an `## Exit codes` section");
    table
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .filter_map(|l| l.split(" |").next()?.trim().parse().ok())
        .collect()
}

/// Runs `run` in JSON ask mode until the approval is asked, then sends `signal`.
fn exit_code_on_signal(env: &Env, signal: &str) -> (i32, String) {
    use std::io::BufRead;
    let mut c = env.cmd();
    c.args(["run", "--team"]).arg(env.path("team.toml")).args([
        "--task",
        "t",
        "--headless",
        "--json",
    ]);
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    for line in std::io::BufReader::new(stdout).lines() {
        if line.unwrap().contains("\"approval_requested\"") {
            break;
        }
    }
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn every_row_of_the_exit_code_table_is_what_the_binary_does() {
    let documented = documented_exit_codes();
    assert_eq!(documented, vec![0, 1, 2, 3, 130, 143], "docs/cli.md table");
    let env = Env::new(SCRIPT, TEAM);
    let status = |args: &[&str]| {
        let out = env.cmd().args(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // 0: help, version, a command that did what it was asked.
    let (code, out, _) = status(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("Usage"), "help goes to stdout: {out}");
    let (code, out, _) = status(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.contains(env!("CARGO_PKG_VERSION")));
    assert_eq!(status(&["sessions", "list"]).0, 0);
    // 1: usage errors of every kind (with clap's message), bad files, unknown sessions.
    for (args, says) in [
        (&["run", "--frobnicate"][..], "--frobnicate"),
        (&["run", "--approve", "maybe"][..], "maybe"),
        (&["run", "--mode"][..], "--mode"),
        (&["sessions"][..], "Usage"),
        (&["sessions", "fork", "x", "--at", "-3"][..], "-3"),
        (&["nonsense"][..], "nonsense"),
        (
            &["sessions", "export", "no-such-session"][..],
            "no-such-session",
        ),
        (
            &["run", "--team", "/nonexistent/team.toml"][..],
            "/nonexistent/team.toml",
        ),
    ] {
        let (code, _, err) = status(args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // 2: an auto session pauses.
    let paused = Env::new(
        "[[reply]]\nagent = \"coder\"\nerror = \"the server fell over\"\n",
        TEAM,
    );
    let (code, _, _) = paused.run(
        &["--task", "t", "--headless", "--json", "--approve", "auto"],
        "",
    );
    assert_eq!(code, 2);
    // 3: input ends while an approval waits.
    let (code, _, _) = env.run(&["--task", "t", "--headless", "--json"], "");
    assert_eq!(code, 3);
    // 130 and 143: signals while an approval waits.
    let (code, err) = exit_code_on_signal(&env, "INT");
    assert_eq!(code, 130, "{err}");
    let (code, err) = exit_code_on_signal(&env, "TERM");
    assert_eq!(code, 143, "{err}");
}

#[test]
fn bad_limits_are_refused_before_any_model_call_from_every_source() {
    // --image: checked at start, before the scripted model is asked anything.
    let env = Env::new(SCRIPT, TEAM);
    let mut c = Command::new(env!("CARGO_BIN_EXE_proctor"));
    c.arg("--config")
        .arg(env.path("config.toml"))
        .arg("--data-dir")
        .arg(env.path("data"))
        .env("PROCTOR_SANDBOX_IMAGE", "Not An Image")
        .args(["run", "--team"])
        .arg(env.path("team.toml"))
        .args(["--task", "t", "--headless", "--json"]);
    let (code, events, stderr) = finish(c, "");
    assert_eq!(code, 1, "{stderr}");
    assert!(events.is_empty(), "nothing ran: {events:?}");
    assert!(
        stderr.contains("--image") && stderr.contains("not an image reference"),
        "{stderr}"
    );

    // A team in a saved session is checked when it is resumed.
    let (code, events, _) = env.run(&["--task", "t", "--headless", "--json"], "");
    assert_eq!(code, 3);
    let session = events[0]["session"].as_str().unwrap().to_string();
    let log = env
        .path("data")
        .join("sessions")
        .join(&session)
        .join("events.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    let tampered = text.replacen("\"cpus\":1.0", "\"cpus\":1e12", 1);
    assert_ne!(tampered, text);
    std::fs::write(&log, &tampered).unwrap();
    let mut c = env.cmd();
    c.args(["resume", &session, "--headless", "--json"]);
    let (code, _, stderr) = finish(c, "");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("executor.cpus") && stderr.contains("from 0.01 to 1024"),
        "{stderr}"
    );
}

/// A reply whose code holds a carriage return, bidi controls, a zero-width space and tag
/// characters, and whose filename hint and prose try terminal escapes.
const HOSTILE_SCRIPT: &str = r#"
[[reply]]
agent = "coder"
text = "Tidy-up \u001b]52;c;cHduZWQ=\u0007 done:\n```python\n# TODO: tidy later\rimport os; print('ran')\naccess = 'user\u202E \u2066// admin\u2069\u2066'\nok\u200B = 'a\U000E0041'\n```\n"
[[reply]]
agent = "reviewer"
text = "TERMINATE"
"#;

const HOSTILE_TEAM: &str = r#"
name = "pair\u001b]0;title\u0007"
[[agents]]
name = "coder"
model = "fake/m"
can_execute = true
[[agents]]
name = "reviewer"
model = "fake/m"
"#;

fn assert_terminal_safe(what: &str, text: &str) {
    for c in text.chars() {
        let u = c as u32;
        let hidden = (u < 0x20 && c != '\n' && c != '\t')
            || (0x7f..=0x9f).contains(&u)
            || (0x200b..=0x200f).contains(&u)
            || (0x202a..=0x202e).contains(&u)
            || (0x2066..=0x2069).contains(&u)
            || u == 0xfeff
            || (0xe0000..=0xe007f).contains(&u);
        assert!(!hidden, "{what}: {c:?} reached the terminal:\n{text}");
    }
}

#[test]
fn the_console_shows_every_hidden_byte_of_what_would_run() {
    let env = Env::new(HOSTILE_SCRIPT, HOSTILE_TEAM);
    let mut c = env.cmd();
    c.args(["run", "--team"]).arg(env.path("team.toml")).args([
        "--task",
        "clean \u{1b}[2Jup",
        "--headless",
    ]);
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"n\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_terminal_safe("stdout", &stdout);
    assert_terminal_safe("stderr", &stderr);
    assert!(!stdout.contains('\r'));
    assert!(stdout.contains("team pair␛]0;title␇"), "{stdout}");
    assert!(stdout.contains("task: clean ␛[2Jup"), "{stdout}");
    assert!(stdout.contains("Tidy-up ␛]52;c;cHduZWQ=␇ done"), "{stdout}");
    assert!(
        stdout.contains(
            "│ ⚠ 7 hidden characters shown as ␍ ⟨U+202E⟩ ⟨U+2066⟩ ⟨U+2069⟩ ⟨U+200B⟩ ⟨U+E0041⟩"
        ),
        "{stdout}"
    );
    // Numbered as Python counts: the \r ends line 1, so the import is line 2.
    assert!(stdout.contains("│ 1  # TODO: tidy later␍\n"), "{stdout}");
    assert!(
        stdout.contains("│ 2  import os; print('ran')\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("│ 3  access = 'user⟨U+202E⟩ ⟨U+2066⟩// admin⟨U+2069⟩⟨U+2066⟩'\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("│ 4  ok⟨U+200B⟩ = 'a⟨U+E0041⟩'\n"),
        "{stdout}"
    );

    // The JSON stream carries the exact code.
    let (_, events, _) = env.run(&["--task", "t", "--headless", "--json"], "");
    let asked = of_type(&events, "approval_requested");
    assert_eq!(
        asked[0]["blocks"][0]["code"].as_str().unwrap(),
        "# TODO: tidy later\rimport os; print('ran')\naccess = 'user\u{202E} \u{2066}// admin\u{2069}\u{2066}'\nok\u{200B} = 'a\u{E0041}'"
    );
}

#[test]
fn stderr_lines_show_hostile_text_as_markers() {
    let script = "[[reply]]\nagent = \"coder\"\nerror = \"gateway says \\u001b]52;c;cHduZWQ=\\u0007\\u001b[2J\\u202Edone\"\n";
    let env = Env::new(script, TEAM);
    let (code, _, stderr) = env.run(
        &["--task", "t", "--headless", "--json", "--approve", "auto"],
        "",
    );
    assert_eq!(code, 2);
    assert_terminal_safe("stderr", &stderr);
    assert!(
        stderr.contains("gateway says ␛]52;c;cHduZWQ=␇␛[2J⟨U+202E⟩done"),
        "{stderr}"
    );

    // What was typed, echoed in an error, is made safe too.
    let out = env
        .cmd()
        .args(["sessions", "export", "\u{1b}]0;x\u{7}\u{202E}"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_terminal_safe("stderr", &stderr);
    assert!(stderr.contains("is not a session id"), "{stderr}");
}

#[test]
fn a_file_name_the_host_cannot_write_is_refused_for_that_block_only() {
    let long = "n".repeat(300);
    let script = format!(
        r#"
[[reply]]
agent = "coder"
text = """
```python
print('first ran')
```
```python
# filename: {long}.py
print('never')
```
```python
# filename: ok\u202Etxt.py
print('never either')
```
```python
print('last ran')
```
"""
[[reply]]
agent = "reviewer"
text = "TERMINATE"
"#
    );
    let env = Env::new(&script, TEAM);
    let (code, events, stderr) = env.run(
        &["--task", "t", "--headless", "--json", "--approve", "auto"],
        "",
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        of_type(&events, "paused").is_empty(),
        "no pause: {events:?}"
    );
    let finished = of_type(&events, "execution_finished");
    assert_eq!(finished.len(), 4);
    assert!(
        finished[0]["output"]
            .as_str()
            .unwrap()
            .contains("first ran")
    );
    for refused in &finished[1..3] {
        assert_eq!(refused["not_run"], true, "{refused}");
    }
    assert!(
        finished[1]["output"]
            .as_str()
            .unwrap()
            .contains("longer than 255 bytes")
    );
    assert!(
        finished[2]["output"]
            .as_str()
            .unwrap()
            .contains("invisible characters")
    );
    assert!(finished[3]["output"].as_str().unwrap().contains("last ran"));
    let report = of_type(&events, "message")
        .into_iter()
        .find(|m| m["agent"] == "executor")
        .unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        report.matches("approved and run as proposed").count(),
        2,
        "{report}"
    );
    assert_eq!(
        report.matches("approved, but NOT RUN").count(),
        2,
        "{report}"
    );
    let data = env.path("data").display().to_string();
    assert!(!report.contains(&data), "{report}");
}

#[test]
fn bad_input_lines_are_reported_and_reading_goes_on() {
    let env = Env::new(SCRIPT, TEAM);
    let mut c = env.cmd();
    c.args(["run", "--team"]).arg(env.path("team.toml")).args([
        "--task",
        "t",
        "--headless",
        "--json",
    ]);
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let mut input = b"caf\xe9 is not utf-8\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', (16 << 20) + 10));
        input.push(b'\n');
        // An empty edit is refused (the block stays open); a reason-less reject is taken.
        input.extend_from_slice(
            b"{\"id\": 1, \"block\": 0, \"decision\": \"edit\", \"code\": \"\"}\n",
        );
        input.extend_from_slice(b"{\"id\": 1, \"block\": 0, \"decision\": \"reject\"}\n");
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let errors: Vec<String> = of_type(&events, "error")
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    assert!(errors.iter().any(|m| m.contains("not UTF-8")), "{errors:?}");
    assert!(
        errors.iter().any(|m| m.contains("longer than 16 MiB")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|m| m.contains("empty edit")),
        "{errors:?}"
    );
    assert!(errors.iter().all(|m| m.len() < 400), "{errors:?}");
    assert!(
        stderr.len() < 2000,
        "stderr repeats only excerpts: {} bytes",
        stderr.len()
    );
    let resolved = of_type(&events, "approval_resolved");
    assert_eq!(resolved.len(), 1, "the empty edit decided nothing");
    assert_eq!(resolved[0]["decision"], "rejected");
    let report = of_type(&events, "message")
        .into_iter()
        .find(|m| m["agent"] == "executor")
        .unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        report.contains("REJECTED by the human, not run. Reason: (no reason given)"),
        "{report}"
    );
    assert_eq!(events.last().unwrap()["type"], "terminated");
}

#[test]
fn more_cpus_than_the_docker_host_has_is_refused_before_any_model_call() {
    let team = format!("{TEAM}\n[executor]\ncpus = 1024.0\n");
    let env = Env::new(SCRIPT, &team);
    let (code, events, stderr) = env.run(&["--task", "t", "--headless", "--json"], "");
    assert_eq!(code, 1, "{stderr}");
    assert!(events.is_empty(), "the session started: {events:?}");
    assert!(
        stderr.contains("cpus = 1024") && stderr.contains("CPUs of the Docker host"),
        "{stderr}"
    );
}

#[test]
fn a_signal_right_after_an_event_still_leaves_it_on_disk() {
    use std::io::BufRead;
    // The coder's reply is followed by its `usage` record (written without an fsync of its
    // own); SIGTERM right then must not lose it, and the last line says "saved" only if it is.
    let script = "[[reply]]\nagent = \"coder\"\ntext = \"a plan\"\n\
                  [[reply]]\nagent = \"reviewer\"\ndelay_ms = 2000\ntext = \"slow and long reply\"\n";
    let env = Env::new(script, TEAM);
    for signal in ["TERM", "INT"] {
        let _ = std::fs::remove_dir_all(env.path("data"));
        let mut c = env.cmd();
        c.args(["run", "--team"]).arg(env.path("team.toml")).args([
            "--task",
            "t",
            "--headless",
            "--json",
        ]);
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut seen = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let usage = line.contains("\"usage\"");
            seen.push(line);
            if usage {
                break;
            }
        }
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(err.contains("saved"), "{err}");
        let sessions = env.path("data/sessions");
        let dir = std::fs::read_dir(&sessions)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let log = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
        assert!(
            log.lines().any(|l| l.contains("\"type\":\"usage\"")),
            "{signal}: the usage record shown on stdout is not on disk:\n{log}"
        );
    }
}
