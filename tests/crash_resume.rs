//! Crash safety of the real binary: a headless session is SIGKILLed at many points (mid-stream,
//! with an approval pending, while a block runs, after arbitrary lines) and resumed each time,
//! until it finishes. The log must then hold every completed event exactly once, and a block that
//! was running when proctor died must be reported as interrupted, never silently run again.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::Value;

fn image() -> String {
    std::env::var("PROCTOR_SANDBOX_IMAGE").unwrap_or_else(|_| "proctor-sandbox:bookworm".into())
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

/// Pause between streamed deltas, so that a kill can land mid-stream.
const DELAY_MS: i64 = 25;

/// The whole conversation, in the order the agents speak.
const REPLIES: &[(&str, &str)] = &[
    (
        "coder",
        "Two blocks: a quick one, then a slow one.\n\
         ```python\nprint('alpha')\n```\n\
         ```python\nimport time\nprint('sleeping', flush=True)\ntime.sleep(1.5)\nopen('woke.txt', 'w').write('woke')\nprint('woke')\n```\n",
    ),
    (
        "reviewer",
        "Block one looks right. Now show the ticks, please, one line at a time.",
    ),
    (
        "coder",
        "Here are the ticks, printed faster than ten a second.\n\
         ```python\nimport time\nfor i in range(30):\n    print('tick', i, flush=True)\n    time.sleep(0.05)\n```\n",
    ),
    ("reviewer", "All good, the ticks arrived. TERMINATE"),
];

/// Approvals the script produces, and their block counts.
const APPROVALS: &[usize] = &[2, 1];

/// Every run of the binary ends by this deadline.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest silence of a healthy run is the 1.5 s block plus a sandbox start; a run quiet for
/// this long is waiting for the human, who is not needed in these sessions.
const IDLE_TIMEOUT: Duration = Duration::from_secs(8);

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.toml"),
            format!(
                "[providers.fake]\nkind = \"scripted\"\nscript = \"{}\"\n",
                dir.path().join("script.toml").display()
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("team.toml"), TEAM).unwrap();
        let env = Env { dir };
        env.write_script();
        env
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_proctor"));
        c.arg("--config")
            .arg(self.path("config.toml"))
            .arg("--data-dir")
            .arg(self.path("data"))
            .arg("--image")
            .arg(image())
            .env_remove("PROCTOR_DATA_DIR")
            .env_remove("RUST_LOG");
        c
    }

    /// The script: every reply of the conversation. A resumed session skips the replies its log
    /// shows were already received, as a real provider answers only the re-sent request.
    fn write_script(&self) {
        let replies = REPLIES
            .iter()
            .map(|(agent, text)| {
                let mut t = toml::Table::new();
                t.insert("agent".into(), toml::Value::String(agent.to_string()));
                t.insert("text".into(), toml::Value::String(text.to_string()));
                t.insert("delay_ms".into(), toml::Value::Integer(DELAY_MS));
                toml::Value::Table(t)
            })
            .collect();
        let mut script = toml::Table::new();
        script.insert("reply".into(), toml::Value::Array(replies));
        std::fs::write(self.path("script.toml"), toml::to_string(&script).unwrap()).unwrap();
    }

    fn log_path(&self, session: &str) -> PathBuf {
        self.path("data")
            .join("sessions")
            .join(session)
            .join("events.jsonl")
    }

    /// The whole lines of the session log (a torn last line, if any, is left out).
    fn read_log(&self, session: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(self.log_path(session)).unwrap_or_default();
        let mut out = Vec::new();
        let mut rest = text.as_str();
        while let Some(end) = rest.find('\n') {
            let line = &rest[..end];
            rest = &rest[end + 1..];
            if line.trim().is_empty() {
                continue;
            }
            out.push(
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}")),
            );
        }
        out
    }
}

impl Drop for Env {
    /// Sandboxes the killed runs left behind are removed even when an assertion failed.
    fn drop(&mut self) {
        let Ok(dirs) = std::fs::read_dir(self.path("data").join("sessions")) else {
            return;
        };
        for d in dirs.flatten() {
            let _ = leftover_sandboxes(&d.file_name().to_string_lossy());
        }
    }
}

/// When to kill a run: called with every stdout event and whether it is new (not a replay);
/// `Some(d)` kills the process `d` after that event.
type KillAt<'a> = Box<dyn FnMut(&Value, bool) -> Option<Duration> + 'a>;

/// What one process run printed and how it ended.
struct Run {
    /// Every stdout event, replayed ones included.
    events: Vec<Value>,
    /// Seq of the last logged event before this run (0 for the first run).
    replayed_upto: u64,
    killed: bool,
    /// Stopped by the test because the session waited for something nobody would give it.
    stuck: Option<String>,
    exit: Option<i32>,
    stderr: String,
}

impl Run {
    fn new_events(&self) -> impl Iterator<Item = &Value> {
        self.events
            .iter()
            .filter(|e| e["seq"].as_u64().unwrap() > self.replayed_upto)
    }
    fn describe(&self) -> String {
        let lines: Vec<String> = self
            .new_events()
            .map(|e| {
                let mut s = e.to_string();
                s.truncate(160);
                s
            })
            .collect();
        format!(
            "killed={} stuck at {:?} exit={:?}, replayed up to seq {}\nnew stdout:\n{}\nstderr:\n{}",
            self.killed,
            self.stuck,
            self.exit,
            self.replayed_upto,
            lines.join("\n"),
            self.stderr
        )
    }
}

fn spawn_lines(child: &mut Child) -> (mpsc::Receiver<String>, std::thread::JoinHandle<String>) {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    (rx, err)
}

fn wait_exit(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("proctor did not exit within 20 s after its stream ended");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs one process (`run` when `session` is None, else `resume`), answers every open approval
/// with "approve" when the engine waits for it, and kills the process where `kill_at` says.
fn drive(env: &Env, session: Option<&str>, mut kill_at: KillAt<'_>) -> Run {
    let (mut c, replayed_upto) = match session {
        None => {
            let mut c = env.cmd();
            c.args(["run", "--team"]).arg(env.path("team.toml")).args([
                "--task",
                "print alpha, sleep, then tick",
                "--headless",
                "--json",
            ]);
            (c, 0)
        }
        Some(id) => {
            let log = env.read_log(id);
            let mut c = env.cmd();
            c.args(["resume", id, "--headless", "--json"]);
            let last = log.last().map_or(0, |e| e["seq"].as_u64().unwrap());
            (c, last)
        }
    };
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take();
    let (lines, err) = spawn_lines(&mut child);
    let deadline = Instant::now() + RUN_TIMEOUT;
    let mut events: Vec<Value> = Vec::new();
    // Approval id -> block count, and the (id, block) pairs decided.
    let mut asked: BTreeMap<u64, usize> = BTreeMap::new();
    let mut decided: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut answered: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut killed = false;
    let mut stuck = None;
    let exit = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match lines.recv_timeout(left.min(IDLE_TIMEOUT)) {
            Ok(line) => line,
            Err(RecvTimeoutError::Disconnected) => break wait_exit(&mut child),
            Err(RecvTimeoutError::Timeout) if left > IDLE_TIMEOUT => {
                // Silent for longer than any step of the script takes: the session waits for
                // something nobody will give it.
                let _ = child.kill();
                let _ = child.wait();
                stuck = Some(format!("no output for {IDLE_TIMEOUT:?}"));
                break None;
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                let so_far = Run {
                    events,
                    replayed_upto,
                    killed: true,
                    stuck: None,
                    exit: None,
                    stderr: err.join().unwrap_or_default(),
                };
                panic!(
                    "proctor did not end within {RUN_TIMEOUT:?}\n{}",
                    so_far.describe()
                );
            }
        };
        let ev: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
        let new = ev["seq"].as_u64().unwrap() > replayed_upto;
        events.push(ev.clone());
        match ev["type"].as_str().unwrap() {
            "approval_requested" => {
                asked.insert(
                    ev["id"].as_u64().unwrap(),
                    ev["blocks"].as_array().unwrap().len(),
                );
            }
            "approval_resolved" => {
                decided.insert((ev["id"].as_u64().unwrap(), ev["block"].as_u64().unwrap()));
            }
            _ => {}
        }
        if let Some(delay) = kill_at(&ev, new) {
            std::thread::sleep(delay);
            child.kill().unwrap();
            child.wait().unwrap();
            killed = true;
            // What it printed before it died.
            let drain_until = Instant::now() + Duration::from_secs(5);
            while let Ok(line) =
                lines.recv_timeout(drain_until.saturating_duration_since(Instant::now()))
            {
                events.push(serde_json::from_str(&line).unwrap());
            }
            break None;
        }
        if new && ev["type"] == "paused" {
            // Nothing in this script pauses: nobody would answer, so stop here and let the
            // caller report it.
            let _ = child.kill();
            let _ = child.wait();
            stuck = Some(ev.to_string());
            break None;
        }
        // Approve what is open, typed ahead (the front end holds each answer until the engine
        // asks for it): a new approval as soon as it is shown, a replayed one once the replay is
        // over and its recorded decisions are known.
        if new {
            for (&id, &n) in &asked {
                for b in 0..n as u64 {
                    if decided.contains(&(id, b)) || !answered.insert((id, b)) {
                        continue;
                    }
                    if let Some(input) = stdin.as_mut() {
                        let answer = format!(
                            "{{\"id\": {id}, \"block\": {b}, \"decision\": \"approve\"}}\n"
                        );
                        let _ = input.write_all(answer.as_bytes());
                        let _ = input.flush();
                    }
                }
            }
        }
    };
    drop(stdin);
    Run {
        events,
        replayed_upto,
        killed,
        stuck,
        exit,
        stderr: err.join().unwrap_or_default(),
    }
}

/// The first run is killed by `first`; each resume is killed by `then(n)` (n = 1, 2, …), until a
/// run ends by itself. Returns the session id and every run.
fn crash_until_done(
    env: &Env,
    first: KillAt<'_>,
    then: impl FnMut(usize) -> KillAt<'static>,
) -> (String, Vec<Run>) {
    let run = drive(env, None, first);
    let session = run.events[0]["session"].as_str().unwrap().to_string();
    let runs = resume_until_done(env, &session, vec![run], then);
    (session, runs)
}

/// Resumes `session` after `runs` (the last of which was killed), killing each resume as
/// `then(n)` says, until a run ends by itself.
fn resume_until_done(
    env: &Env,
    session: &str,
    mut runs: Vec<Run>,
    mut then: impl FnMut(usize) -> KillAt<'static>,
) -> Vec<Run> {
    for n in 1.. {
        let last = runs.last().unwrap();
        if !last.killed {
            break;
        }
        assert!(n <= 30, "the session never finished after 30 resumes");
        let run = drive(env, Some(session), then(n));
        runs.push(run);
    }
    runs
}

/// The log a SIGKILL leaves when it lands in the instant between two fsynced events: everything
/// up to and including the first event matching `last_kept`. The killed run is trimmed to match,
/// as if it had died right there.
fn crash_right_after(env: &Env, session: &str, run: &mut Run, last_kept: impl Fn(&Value) -> bool) {
    let text = std::fs::read_to_string(env.log_path(session)).unwrap();
    let mut kept = String::new();
    let mut cut_seq = None;
    for line in text.lines() {
        kept.push_str(line);
        kept.push('\n');
        let ev: Value = serde_json::from_str(line).unwrap();
        if last_kept(&ev) {
            cut_seq = ev["seq"].as_u64();
            break;
        }
    }
    let cut_seq = cut_seq.expect("the event to cut after is in the log");
    std::fs::write(env.log_path(session), kept).unwrap();
    run.events.retain(|e| e["seq"].as_u64().unwrap() <= cut_seq);
}

fn never() -> KillAt<'static> {
    Box::new(|_, _| None)
}

fn history(runs: &[Run]) -> String {
    runs.iter()
        .enumerate()
        .map(|(i, r)| format!("===== run {i}: {}", r.describe()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn key(e: &Value) -> (u64, u64) {
    (e["id"].as_u64().unwrap(), e["block"].as_u64().unwrap())
}

/// The final state every crashed-and-resumed session must reach. Returns the log.
fn assert_finished_once(env: &Env, session: &str, runs: &[Run]) -> Vec<Value> {
    let ctx = history(runs);
    let last = runs.last().unwrap();
    assert!(!last.killed, "the last run was stopped: {ctx}");
    if let Some(why) = &last.stuck {
        panic!("the session stopped (waiting for the human, who is not needed here): {why}\n{ctx}");
    }
    assert_eq!(last.exit, Some(0), "the last run failed\n{ctx}");
    assert_eq!(
        last.events.last().unwrap()["type"],
        "terminated",
        "the last run ends with `terminated`\n{ctx}"
    );

    let log = env.read_log(session);
    let raw = std::fs::read_to_string(env.log_path(session)).unwrap();
    assert_eq!(raw.lines().count(), log.len(), "no torn or blank line");
    let seqs: Vec<u64> = log.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs[0], 1);
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seqs strictly increase in the log: {seqs:?}"
    );
    for e in &log {
        assert_eq!(e["session"], session);
    }
    let count = |t: &str| log.iter().filter(|e| e["type"] == t).count();
    assert_eq!(log[0]["type"], "session_started");
    assert_eq!(count("session_started"), 1);
    assert_eq!(log.last().unwrap()["type"], "terminated", "{ctx}");
    assert_eq!(count("terminated"), 1);
    assert_eq!(count("paused"), 0, "nothing here should pause: {ctx}");

    // Each agent said each of its lines once, in order; the human's task once.
    for agent in ["coder", "reviewer"] {
        let said: Vec<&str> = log
            .iter()
            .filter(|e| e["type"] == "message" && e["agent"] == agent)
            .map(|e| e["content"].as_str().unwrap())
            .collect();
        let script: Vec<&str> = REPLIES
            .iter()
            .filter(|(a, _)| *a == agent)
            .map(|(_, t)| *t)
            .collect();
        assert_eq!(said, script, "{agent}'s messages, each once");
    }
    let human: Vec<&Value> = log
        .iter()
        .filter(|e| e["type"] == "message" && e["agent"] == "human")
        .collect();
    assert_eq!(human.len(), 1);

    // Approvals: ids 1..=n, each asked once, each block decided once, run once, finished once.
    let asked: Vec<u64> = log
        .iter()
        .filter(|e| e["type"] == "approval_requested")
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        asked,
        (1..=APPROVALS.len() as u64).collect::<Vec<_>>(),
        "approvals asked (each coder message with code is offered once)\n{ctx}"
    );
    let mut blocks = BTreeSet::new();
    for (i, n) in APPROVALS.iter().enumerate() {
        for b in 0..*n as u64 {
            blocks.insert((i as u64 + 1, b));
        }
    }
    for t in [
        "approval_resolved",
        "execution_started",
        "execution_finished",
    ] {
        let keys: Vec<(u64, u64)> = log.iter().filter(|e| e["type"] == t).map(key).collect();
        let unique: BTreeSet<(u64, u64)> = keys.iter().copied().collect();
        assert_eq!(
            keys.len(),
            unique.len(),
            "a {t} is duplicated: {keys:?}\n{ctx}"
        );
        assert_eq!(unique, blocks, "one {t} per block\n{ctx}");
    }
    for e in log.iter().filter(|e| e["type"] == "approval_resolved") {
        assert_eq!(e["decision"], "approved");
    }
    let reports = log
        .iter()
        .filter(|e| e["type"] == "message" && e["agent"] == "executor")
        .count();
    assert_eq!(reports, APPROVALS.len(), "one executor report per approval");

    // Whatever a killed run printed as done (the events fsynced before they are shown) is in the
    // final log, unchanged.
    for (i, r) in runs.iter().enumerate().filter(|(_, r)| r.killed) {
        for e in r.new_events().filter(|e| {
            matches!(
                e["type"].as_str().unwrap(),
                "session_started"
                    | "message"
                    | "approval_requested"
                    | "approval_resolved"
                    | "execution_finished"
                    | "terminated"
            )
        }) {
            let seq = e["seq"].as_u64().unwrap();
            let logged = log.iter().find(|l| l["seq"].as_u64() == Some(seq));
            assert_eq!(
                logged,
                Some(e),
                "run {i} showed this completed event, the final log must hold it"
            );
        }
    }

    // A block a killed run showed as started and not finished ran when proctor died: it is
    // reported interrupted and not run again.
    for (i, r) in runs.iter().enumerate().filter(|(_, r)| r.killed) {
        let finished: BTreeSet<(u64, u64)> = r
            .new_events()
            .filter(|e| e["type"] == "execution_finished")
            .map(key)
            .collect();
        for started in r
            .new_events()
            .filter(|e| e["type"] == "execution_started")
            .map(key)
            .filter(|k| !finished.contains(k))
        {
            let fin: Vec<&Value> = log
                .iter()
                .filter(|e| e["type"] == "execution_finished" && key(e) == started)
                .collect();
            assert_eq!(fin.len(), 1, "block {started:?} finished once\n{ctx}");
            // The killed run may have recorded the finish (on disk first) and died before
            // printing it: then the next run found it in the log. Otherwise the block must be
            // reported interrupted by a later run, never run again.
            let recorded_by_killed_run = runs
                .get(i + 1)
                .is_some_and(|next| fin[0]["seq"].as_u64().unwrap() <= next.replayed_upto);
            assert!(
                recorded_by_killed_run || fin[0]["interrupted"] == true,
                "block {started:?} was running when run {i} was killed; it must be reported \
                 interrupted, not re-run: {}\n{ctx}",
                fin[0]
            );
        }
    }

    // Every resumed run first replays the log as it stood, line for line.
    for (i, r) in runs.iter().enumerate().skip(1) {
        let replay: Vec<&Value> = r
            .events
            .iter()
            .take_while(|e| e["seq"].as_u64().unwrap() <= r.replayed_upto)
            .collect();
        let logged: Vec<&Value> = log
            .iter()
            .take_while(|e| e["seq"].as_u64().unwrap() <= r.replayed_upto)
            .collect();
        assert_eq!(replay, logged, "run {i} replays the log it resumed");
    }

    // No sandbox of this session outlives it, not even those of the runs that were killed.
    let left = leftover_sandboxes(session).unwrap();
    assert!(
        left.is_empty(),
        "sandbox containers of the finished session are still there: {left:?}"
    );

    // And the session table agrees.
    let out = env.cmd().args(["sessions", "list"]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let row = table
        .lines()
        .find(|l| l.contains(session))
        .unwrap_or_else(|| panic!("session missing from the list:\n{table}"));
    assert!(row.contains("finished"), "{row}");
    log
}

/// Containers labelled with `session`; removed on the way, so a failing run leaves none behind.
fn leftover_sandboxes(session: &str) -> Result<Vec<String>, String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=proctor.session={session}"))
        .output()
        .map_err(|e| format!("docker ps: {e}"))?;
    if !out.status.success() {
        return Err(format!("docker ps failed: {out:?}"));
    }
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect();
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&ids)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    Ok(ids)
}

fn is_new(t: &'static str) -> impl Fn(&Value, bool) -> bool {
    move |e, new| new && e["type"] == t
}

#[test]
fn killed_mid_stream_the_turn_is_asked_again_and_said_once() {
    let env = Env::new();
    // The first run dies at the coder's first delta; the first resume at the reviewer's.
    let first = is_new("message_delta");
    let (session, runs) = crash_until_done(
        &env,
        Box::new(move |e, new| first(e, new).then_some(Duration::ZERO)),
        |n| match n {
            1 => Box::new(|e, new| {
                (new && e["type"] == "message_delta" && e["agent"] == "reviewer")
                    .then_some(Duration::from_millis(30))
            }),
            _ => never(),
        },
    );
    assert_eq!(runs.len(), 3, "{}", history(&runs));
    let log = assert_finished_once(&env, &session, &runs);
    // Nothing of the cut-off stream was kept as a message of its own.
    assert!(
        !runs[0]
            .new_events()
            .any(|e| e["type"] == "message" && e["agent"] == "coder")
    );
    assert_eq!(log.iter().filter(|e| e["type"] == "message").count(), 7);
}

#[test]
fn killed_with_an_approval_pending_the_same_approval_is_asked_again() {
    let env = Env::new();
    let first = is_new("approval_requested");
    let (session, runs) = crash_until_done(
        &env,
        Box::new(move |e, new| first(e, new).then_some(Duration::ZERO)),
        |n| match n {
            // Resumed: the replayed approval is still open; die again after deciding block 0.
            1 => Box::new(|e, new| {
                (new && e["type"] == "approval_resolved" && e["block"] == 0)
                    .then_some(Duration::ZERO)
            }),
            // The second approval: die the moment it is asked.
            2 => Box::new(|e, new| {
                (new && e["type"] == "approval_requested").then_some(Duration::ZERO)
            }),
            _ => never(),
        },
    );
    assert_eq!(runs.len(), 4, "{}", history(&runs));
    let asked_first: Vec<u64> = runs[0]
        .new_events()
        .filter(|e| e["type"] == "approval_requested")
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(asked_first, [1]);
    // Each resume saw the open approval replayed and did not ask it anew.
    for r in &runs[1..3] {
        assert!(
            !r.new_events()
                .any(|e| e["type"] == "approval_requested" && e["id"] == 1)
        );
    }
    assert_finished_once(&env, &session, &runs);
}

#[test]
fn killed_while_a_block_sleeps_it_is_reported_interrupted_not_rerun() {
    let env = Env::new();
    // Dies 300 ms into the slow block (it prints `sleeping`, then sleeps 1.5 s).
    let (session, runs) = crash_until_done(
        &env,
        Box::new(|e, new| {
            (new && e["type"] == "execution_output"
                && e["text"].as_str().unwrap().contains("sleeping"))
            .then_some(Duration::from_millis(300))
        }),
        |_| never(),
    );
    assert_eq!(runs.len(), 2, "{}", history(&runs));
    // The slow block, once reported interrupted, does not go on in the dead proctor's sandbox
    // behind the resumed session's back (it would write woke.txt 1.2 s after the kill).
    let woke = env
        .path("data")
        .join("sessions")
        .join(&session)
        .join("workspace")
        .join("woke.txt");
    assert!(
        !woke.exists(),
        "the block reported interrupted went on running after proctor died: it wrote {}",
        woke.display()
    );
    let log = assert_finished_once(&env, &session, &runs);
    let slow: Vec<&Value> = log
        .iter()
        .filter(|e| e["type"] == "execution_finished" && key(e) == (1, 1))
        .collect();
    assert_eq!(slow[0]["interrupted"], true);
    assert!(
        !log.iter().any(
            |e| e["type"] == "execution_output" && e["text"].as_str().unwrap().contains("woke")
        ),
        "the slow block never completed, in either run"
    );
    let report = log
        .iter()
        .find(|e| e["type"] == "message" && e["agent"] == "executor")
        .unwrap()["content"]
        .as_str()
        .unwrap();
    assert!(report.contains("alpha"), "{report}");
    assert!(report.contains("interrupted"), "{report}");
}

#[test]
fn killed_at_execution_started_the_block_is_not_silently_rerun() {
    let env = Env::new();
    // Dies the moment the slow block is shown as started.
    let (session, runs) = crash_until_done(
        &env,
        Box::new(|e, new| {
            (new && e["type"] == "execution_started" && e["block"] == 1).then_some(Duration::ZERO)
        }),
        |_| never(),
    );
    assert_eq!(runs.len(), 2, "{}", history(&runs));
    assert_finished_once(&env, &session, &runs);
}

#[test]
fn killed_while_a_block_prints_steadily_it_is_reported_interrupted_not_rerun() {
    let env = Env::new();
    // The tick block prints every 50 ms for 1.5 s; die at its tenth tick.
    let (session, runs) = crash_until_done(
        &env,
        Box::new(|e, new| {
            // Output may arrive in pieces ("tick", " ", "9"): the first 9 of the tick block.
            (new && e["type"] == "execution_output"
                && e["id"] == 2
                && e["text"].as_str().unwrap().contains('9'))
            .then_some(Duration::ZERO)
        }),
        |_| never(),
    );
    assert_eq!(runs.len(), 2, "{}", history(&runs));
    let log = assert_finished_once(&env, &session, &runs);
    assert!(
        !log.iter().any(|e| e["type"] == "execution_output"
            && e["id"] == 2
            && e["text"].as_str().unwrap().contains("29")),
        "the tick block never completed"
    );
}

/// Kills every run after its k-th new stdout line, k taken in turn from `ks`; the last runs go
/// undisturbed once `ks` is used up.
fn kill_after_lines(ks: &'static [usize]) {
    let env = Env::new();
    let counter = |k: usize| -> KillAt<'static> {
        let mut seen = 0;
        Box::new(move |_, new| {
            if new {
                seen += 1;
            }
            (new && seen == k).then_some(Duration::ZERO)
        })
    };
    let (session, runs) = crash_until_done(&env, counter(ks[0]), |n| match ks.get(n) {
        Some(&k) => counter(k),
        None => never(),
    });
    let killed = runs.iter().filter(|r| r.killed).count();
    assert!(
        killed >= 3,
        "killed only {killed} times\n{}",
        history(&runs)
    );
    assert_finished_once(&env, &session, &runs);
}

#[test]
fn killed_after_arbitrary_lines_again_and_again_it_still_finishes_once() {
    kill_after_lines(&[5, 9, 14, 3, 21, 8, 12, 6, 17, 4, 11]);
}

#[test]
fn killed_after_other_arbitrary_lines_it_still_finishes_once() {
    kill_after_lines(&[16, 2, 26, 7, 10, 19, 5, 13]);
}

#[test]
fn crash_between_session_started_and_the_task_the_task_is_still_worked_on() {
    let env = Env::new();
    let mut first = drive(
        &env,
        None,
        Box::new(|e, new| (new && e["type"] == "session_started").then_some(Duration::ZERO)),
    );
    let session = first.events[0]["session"].as_str().unwrap().to_string();
    // The task's message is fsynced just after `session_started`; die in between.
    crash_right_after(&env, &session, &mut first, |e| {
        e["type"] == "session_started"
    });
    let runs = resume_until_done(&env, &session, vec![first], |_| never());
    assert_finished_once(&env, &session, &runs);
}

#[test]
fn crash_between_a_message_and_its_approval_the_blocks_are_still_offered() {
    let env = Env::new();
    let mut first = drive(
        &env,
        None,
        Box::new(|e, new| (new && e["type"] == "approval_requested").then_some(Duration::ZERO)),
    );
    let session = first.events[0]["session"].as_str().unwrap().to_string();
    // The coder's message and the approval of its blocks are fsynced one after the other; die
    // in between. The blocks must not be forgotten.
    crash_right_after(&env, &session, &mut first, |e| {
        e["type"] == "message" && e["agent"] == "coder"
    });
    let runs = resume_until_done(&env, &session, vec![first], |_| never());
    assert_finished_once(&env, &session, &runs);
}

#[test]
fn killed_as_it_terminates_resume_ends_it_once() {
    let env = Env::new();
    let (session, runs) = crash_until_done(
        &env,
        Box::new(|e, new| {
            (new && e["type"] == "message"
                && e["agent"] == "reviewer"
                && e["content"].as_str().unwrap().contains("TERMINATE"))
            .then_some(Duration::ZERO)
        }),
        |_| never(),
    );
    assert_eq!(runs.len(), 2, "{}", history(&runs));
    assert_finished_once(&env, &session, &runs);
}
