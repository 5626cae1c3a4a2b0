//! `--workspace` through the real binary: refused directories and their reasons, a copy that leaves
//! the original byte-identical, a read-write git workspace resumed in place, moved and replaced,
//! the patch export applied with `git apply`, the console's change list, and `doctor`.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

mod cli_support;
use cli_support::Home;

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

/// Two turns of code: the first edits, creates and deletes; the second adds one more file.
const SCRIPT: &str = r#"
[[reply]]
agent = "coder"
text = """
```python
import os
open('app.py', 'a').write('print("two")\\n')
os.remove('old.txt')
os.makedirs('out', exist_ok=True)
open('out/new.txt', 'w').write('fresh\\n')
print('first')
```
"""
[[reply]]
agent = "reviewer"
text = "Good. One more file, please."
[[reply]]
agent = "coder"
text = """
```python
open('second.txt', 'w').write('2\\n')
print('second')
```
"""
[[reply]]
agent = "reviewer"
text = "Done. TERMINATE"
"#;

struct Env {
    home: Home,
}

impl Env {
    fn new() -> Env {
        Env {
            home: Home::scripted(SCRIPT, TEAM),
        }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.home.path(p)
    }
    fn cmd(&self) -> Command {
        self.home.cmd()
    }
    fn run(&self, extra: &[&str], stdin: &str) -> (i32, String, String) {
        let mut c = self.cmd();
        c.args(["run", "--team"])
            .arg(self.path("team.toml"))
            .args(["--task", "edit the project"])
            .args(extra);
        finish(c, stdin)
    }
    fn session_dir(&self, id: &str) -> PathBuf {
        self.path("data").join("sessions").join(id)
    }
    fn only_session(&self) -> String {
        let ids: Vec<String> = std::fs::read_dir(self.path("data/sessions"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(ids.len(), 1, "{ids:?}");
        ids[0].clone()
    }
    fn log(&self, id: &str) -> Vec<Value> {
        std::fs::read_to_string(self.session_dir(id).join("events.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn finish(mut c: Command, stdin: &str) -> (i32, String, String) {
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
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn of_type<'a>(events: &'a [Value], t: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == t).collect()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "safe.directory=*",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Every file under `dir` (not `.git`): relative path -> (bytes, mode), symlinks as their target.
fn tree(dir: &Path) -> BTreeMap<String, (Vec<u8>, u32)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (Vec<u8>, u32)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_name() == ".git" {
                continue;
            }
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if m.is_dir() {
                walk(root, &p, out);
            } else if m.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.insert(rel, (t.display().to_string().into_bytes(), 0o120000));
            } else {
                out.insert(rel, (std::fs::read(&p).unwrap(), m.mode() & 0o777));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A small project: a git repository with a commit, an ignored file, a binary file and a link.
fn project(dir: &Path) {
    std::fs::create_dir_all(dir.join("lib")).unwrap();
    std::fs::write(dir.join("app.py"), "print('one')\n").unwrap();
    std::fs::write(dir.join("old.txt"), "remove me\n").unwrap();
    std::fs::write(dir.join("lib/data.bin"), [0u8, 1, 2, 254, 255]).unwrap();
    std::fs::write(dir.join(".gitignore"), "*.log\n").unwrap();
    std::os::unix::fs::symlink("app.py", dir.join("link.py")).unwrap();
    git(dir, &["init", "-q"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "start"]);
    std::fs::write(dir.join("debug.log"), "ignored\n").unwrap();
}

fn chown(dir: &Path, owner: &str) {
    assert!(
        Command::new("chown")
            .args(["-R", owner])
            .arg(dir)
            .status()
            .unwrap()
            .success()
    );
}

#[test]
fn refused_directories_say_why_and_nothing_runs() {
    let env = Env::new();
    let home = tempfile::tempdir().unwrap();
    let rooted = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(env.path("data/sessions")).unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--workspace".into(), "/".into()], "filesystem root"),
        (
            vec!["--workspace".into(), home.path().display().to_string()],
            "your home directory",
        ),
        (
            vec![
                "--workspace".into(),
                env.path("data/sessions").display().to_string(),
            ],
            "inside proctor's data dir",
        ),
        (
            vec!["--workspace".into(), env.path("").display().to_string()],
            "holds proctor's data dir",
        ),
        (
            vec![
                "--workspace".into(),
                env.path("missing").display().to_string(),
            ],
            "does not exist",
        ),
        (
            vec!["--workspace".into(), rooted.path().display().to_string()],
            "owned by root",
        ),
        (
            vec!["--workspace-mode".into(), "copy".into()],
            "--workspace-mode needs a directory",
        ),
    ];
    let mut cases = cases;
    if Path::new("/var/run/docker.sock").exists() {
        cases.push((
            vec!["--workspace".into(), "/var/run".into()],
            "Docker socket",
        ));
    }
    for (args, why) in cases {
        let mut c = env.cmd();
        c.env("HOME", home.path())
            .args(["run", "--team"])
            .arg(env.path("team.toml"))
            .args(["--task", "t", "--headless", "--json", "--approve", "auto"])
            .args(&args);
        let (code, stdout, stderr) = finish(c, "");
        assert_ne!(code, 0, "{args:?} was accepted");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
    let sessions = std::fs::read_dir(env.path("data/sessions"))
        .unwrap()
        .count();
    assert_eq!(sessions, 0, "a refused run left a session behind");
}

#[test]
fn copy_mode_leaves_the_original_byte_identical_and_its_patch_applies() {
    let env = Env::new();
    let src = tempfile::tempdir().unwrap();
    project(src.path());
    let before = tree(src.path());
    let head = git(src.path(), &["rev-parse", "HEAD"]);
    // A pristine copy to apply the patch to later.
    let pristine = tempfile::tempdir().unwrap();
    assert!(
        Command::new("cp")
            .args(["-a", &format!("{}/.", src.path().display())])
            .arg(pristine.path())
            .status()
            .unwrap()
            .success()
    );
    let ws = src.path().display().to_string();
    // The console front end: each block's change list under its result.
    let (code, stdout, stderr) = env.run(
        &[
            "--workspace",
            &ws,
            "--workspace-mode",
            "copy",
            "--headless",
            "--approve",
            "auto",
        ],
        "",
    );
    assert_eq!(code, 0, "{stderr}\n{stdout}");
    assert!(
        stdout.contains(&format!("workspace: a copy of {ws}")),
        "{stdout}"
    );
    for line in [
        "  ✎ created out/new.txt (1 line, 6 B)",
        "  ✎ modified app.py (+1 −0 lines, 13 B → 26 B)",
        "  ✎ deleted old.txt (1 line, 10 B)",
        "  ✎ created second.txt (1 line, 2 B)",
    ] {
        assert!(stdout.contains(line), "{line:?} not in:\n{stdout}");
    }
    // The original is untouched, byte for byte (and still at its commit).
    assert_eq!(tree(src.path()), before);
    assert_eq!(git(src.path(), &["rev-parse", "HEAD"]), head);
    assert_eq!(git(src.path(), &["status", "--porcelain"]), "");

    let id = env.only_session();
    let log = env.log(&id);
    let attached = of_type(&log, "workspace_attached");
    assert_eq!(attached.len(), 1);
    assert_eq!(attached[0]["mode"], "copy");
    assert_eq!(attached[0]["path"], ws.as_str());
    assert_eq!(attached[0]["commit"], head.as_str());
    let changed = of_type(&log, "workspace_changed");
    assert_eq!(changed.len(), 2);
    assert_eq!(
        changed[0]["created"],
        serde_json::json!([{"path": "out/new.txt", "size_after": 6, "lines_added": 1, "lines_removed": 0}])
    );
    assert_eq!(
        changed[0]["modified"],
        serde_json::json!([{"path": "app.py", "size_before": 13, "size_after": 26, "lines_added": 1, "lines_removed": 0}])
    );
    assert_eq!(
        changed[0]["deleted"],
        serde_json::json!([{"path": "old.txt", "size_before": 10, "lines_added": 0, "lines_removed": 1}])
    );
    // The Markdown export lists the changes per block.
    let mut c = env.cmd();
    c.args(["sessions", "export", &id, "--format", "md"]);
    let (code, md, _) = finish(c, "");
    assert_eq!(code, 0);
    assert!(md.contains("Files block 1 of approval 1 changed:"), "{md}");
    assert!(md.contains("- deleted `old.txt` (1 line, 10 B)"), "{md}");

    // The patch turns the original into the session's copy.
    let mut c = env.cmd();
    c.args(["sessions", "export", &id, "--format", "patch"]);
    let (code, patch, stderr) = finish(c, "");
    assert_eq!(code, 0, "{stderr}");
    assert!(patch.starts_with("diff --git"), "{patch}");
    assert!(
        !patch.contains("debug.log"),
        "ignored files are not in the patch: {patch}"
    );
    std::fs::write(env.path("session.patch"), &patch).unwrap();
    git(
        pristine.path(),
        &["apply", &env.path("session.patch").display().to_string()],
    );
    let mut copy = tree(&env.session_dir(&id).join("workspace"));
    copy.remove("debug.log");
    let mut applied = tree(pristine.path());
    applied.remove("debug.log");
    assert_eq!(applied, copy);
    assert!(applied.contains_key("second.txt") && !applied.contains_key("old.txt"));

    // A fork keeps the start state and starts from the parent's workspace as it is now: its
    // patch is the parent's, never one that deletes the project.
    let mut c = env.cmd();
    c.args(["sessions", "fork", &id, "--at", "2"]);
    let (code, fork, stderr) = finish(c, "");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        tree(&env.session_dir(fork.trim()).join("workspace")),
        tree(&env.session_dir(&id).join("workspace"))
    );
    let mut c = env.cmd();
    c.args(["sessions", "export", fork.trim(), "--format", "patch"]);
    let (code, fork_patch, stderr) = finish(c, "");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !fork_patch.contains("diff --git a/app.py b/app.py\ndeleted file mode"),
        "{fork_patch}"
    );
    assert_eq!(fork_patch, patch);
}

#[test]
fn a_read_write_git_workspace_is_resumed_in_place_moved_and_patched() {
    let env = Env::new();
    let holder = tempfile::tempdir().unwrap();
    let ws = holder.path().join("proj");
    std::fs::create_dir(&ws).unwrap();
    project(&ws);
    let start = git(&ws, &["rev-parse", "HEAD"]);
    chown(holder.path(), "4242:4242");
    let shown = ws.display().to_string();

    // First run: the approval is pending when input ends.
    let (code, stdout, stderr) = env.run(&["--workspace", &shown, "--headless", "--json"], "");
    assert_ne!(code, 0);
    assert!(stderr.contains("proctor resume"), "{stderr}");
    let events = json_lines(&stdout);
    let id = events[0]["session"].as_str().unwrap().to_string();
    assert_eq!(events[1]["type"], "workspace_attached");
    assert_eq!(events[1]["mode"], "rw");
    assert_eq!(events[1]["commit"], start.as_str());
    let approval = |events: &[Value]| {
        of_type(events, "approval_requested").last().unwrap()["id"]
            .as_u64()
            .unwrap()
    };
    let answer = |id: u64| format!("{{\"id\": {id}, \"block\": 0, \"decision\": \"approve\"}}\n");

    // Resume: the same directory is mounted; the block runs in it, as its owner.
    let first = approval(&events);
    let mut c = env.cmd();
    c.args(["resume", &id, "--headless", "--json"]);
    let (_, stdout, stderr) = finish(c, &answer(first));
    let events = json_lines(&stdout);
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "execution_finished" && e["exit_code"] == 0),
        "{stderr}\n{stdout}"
    );
    let made = std::fs::metadata(ws.join("out/new.txt")).unwrap();
    assert_eq!((made.uid(), made.gid()), (4242, 4242));
    assert!(!ws.join("old.txt").exists());
    // Proctor's own files never land in the user's directory.
    let names: Vec<String> = std::fs::read_dir(&ws)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("tmp_code_")),
        "{names:?}"
    );
    let second = approval(&events);
    assert_ne!(second, first);

    // Moved: resume says so and how to fix it; a new directory at the old path is not taken
    // for the old one.
    let moved = holder.path().join("proj-moved");
    std::fs::rename(&ws, &moved).unwrap();
    let mut c = env.cmd();
    c.args(["resume", &id, "--headless", "--json"]);
    let (code, stdout, stderr) = finish(c, "");
    assert_ne!(code, 0);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("not there any more"), "{stderr}");
    assert!(
        stderr.contains(&format!("proctor resume {id} --workspace NEWDIR")),
        "{stderr}"
    );
    std::fs::create_dir(&ws).unwrap();
    chown(&ws, "4242:4242");
    let mut c = env.cmd();
    c.args(["resume", &id, "--headless", "--json"]);
    let (code, _, stderr) = finish(c, "");
    assert_ne!(code, 0);
    assert!(stderr.contains("is not the directory session"), "{stderr}");
    std::fs::remove_dir(&ws).unwrap();

    // Resume with the new place: recorded, and the next block runs there.
    let mut c = env.cmd();
    c.args(["resume", &id, "--workspace"])
        .arg(&moved)
        .args(["--headless", "--json"]);
    let (code, stdout, stderr) = finish(c, &answer(second));
    assert_eq!(code, 0, "{stderr}\n{stdout}");
    let events = json_lines(&stdout);
    let attached = of_type(&events, "workspace_attached");
    assert_eq!(attached.len(), 2, "the move is recorded");
    assert_eq!(attached[1]["path"], moved.display().to_string().as_str());
    assert_eq!(
        std::fs::read_to_string(moved.join("second.txt")).unwrap(),
        "2\n"
    );

    // The patch is against the commit recorded at start (untracked files included) and applies
    // to a checkout of it.
    let mut c = env.cmd();
    c.args(["sessions", "export", &id, "--format", "patch"]);
    let (code, patch, stderr) = finish(c, "");
    assert_eq!(code, 0, "{stderr}");
    let checkout = tempfile::tempdir().unwrap();
    assert!(
        Command::new("cp")
            .arg("-a")
            .arg(moved.join(".git"))
            .arg(checkout.path())
            .status()
            .unwrap()
            .success()
    );
    git(checkout.path(), &["reset", "-q", "--hard", &start]);
    std::fs::write(env.path("rw.patch"), &patch).unwrap();
    git(
        checkout.path(),
        &["apply", &env.path("rw.patch").display().to_string()],
    );
    let mut want = tree(&moved);
    want.remove("debug.log");
    assert_eq!(tree(checkout.path()), want);
}

#[test]
fn the_team_files_workspace_is_relative_to_the_current_directory() {
    let env = Env::new();
    let here = tempfile::tempdir().unwrap();
    let proj = here.path().join("proj");
    std::fs::create_dir(&proj).unwrap();
    project(&proj);
    std::fs::write(
        env.path("team.toml"),
        format!("{TEAM}\n[executor]\nworkspace = \"proj\"\nworkspace_mode = \"copy\"\n"),
    )
    .unwrap();
    let mut c = env.cmd();
    c.current_dir(here.path())
        .args(["run", "--team"])
        .arg(env.path("team.toml"))
        .args(["--task", "t", "--headless", "--json", "--approve", "auto"]);
    let (code, stdout, stderr) = finish(c, "");
    assert_eq!(code, 0, "{stderr}");
    let events = json_lines(&stdout);
    let attached = of_type(&events, "workspace_attached");
    assert_eq!(
        attached[0]["path"],
        proj.canonicalize().unwrap().display().to_string().as_str()
    );
    assert_eq!(attached[0]["mode"], "copy");
    // The copy was worked on, not the original.
    assert!(proj.join("old.txt").exists());
    let id = events[0]["session"].as_str().unwrap();
    assert!(env.session_dir(id).join("workspace/second.txt").exists());
}

#[test]
fn doctor_reports_the_configured_workspace() {
    let env = Env::new();
    let ws = tempfile::tempdir().unwrap();
    project(ws.path());
    chown(ws.path(), "4242:4242");
    std::fs::write(
        env.path("team.toml"),
        format!(
            "{TEAM}\n[executor]\nworkspace = \"{}\"\n",
            ws.path().display()
        ),
    )
    .unwrap();
    let mut config = std::fs::read_to_string(env.path("config.toml")).unwrap();
    config.insert_str(
        0,
        &format!("default_team = \"{}\"\n", env.path("team.toml").display()),
    );
    std::fs::write(env.path("config.toml"), config).unwrap();
    let mut c = env.cmd();
    c.arg("doctor");
    let (_, stdout, _) = finish(c, "");
    let line = stdout
        .lines()
        .find(|l| l.contains("workspace:"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.starts_with("ok"), "{line}");
    for part in [
        ws.path().canonicalize().unwrap().display().to_string(),
        "read-write".into(),
        "owner 4242:4242".into(),
        "5 files".into(),
        "git repository at commit".into(),
    ] {
        assert!(line.contains(&part), "{part:?} not in {line}");
    }
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("ok    git: git version")),
        "{stdout}"
    );
}

#[test]
fn copy_mode_skips_a_directory_it_cannot_read_and_says_so() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    // proctor as an ordinary user (uid 65534) on a project holding a root-only directory, as a
    // container's data directory often is. Tests run as root, which reads everything.
    if !running_as_root() {
        panic!("this test needs to run as root (to play an ordinary user)");
    }
    let holder = tempfile::tempdir().unwrap();
    std::fs::set_permissions(holder.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ws = holder.path().join("proj");
    std::fs::create_dir_all(ws.join("db")).unwrap();
    std::fs::write(ws.join("app.py"), "print('one')\n").unwrap();
    std::fs::write(ws.join("db/data"), "secret").unwrap();
    std::fs::set_permissions(ws.join("db"), std::fs::Permissions::from_mode(0o700)).unwrap();
    chown(&ws, "65534:65534");
    std::fs::set_permissions(&ws, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(ws.join("db"), Some(0), Some(0)).unwrap();
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let script = home.path().join("script.toml");
    std::fs::write(
        &script,
        "[[reply]]\nagent = \"coder\"\ntext = \"Nothing to run. TERMINATE\"\n",
    )
    .unwrap();
    let config = home.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[providers.fake]\nkind = \"scripted\"\nscript = \"{}\"\n",
            script.display()
        ),
    )
    .unwrap();
    let team = home.path().join("team.toml");
    std::fs::write(&team, TEAM).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_proctor"))
        .uid(65534)
        .gid(65534)
        .env("HOME", home.path())
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(home.path().join("data"))
        .args(["run", "--team"])
        .arg(&team)
        .args(["--task", "t", "--headless", "--json", "--approve", "auto"])
        .arg("--workspace")
        .arg(&ws)
        .args(["--workspace-mode", "copy"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("db/") && stderr.contains("unreadable"),
        "{stderr}"
    );
    let sessions: Vec<_> = std::fs::read_dir(home.path().join("data/sessions"))
        .unwrap()
        .collect();
    let copy = sessions[0].as_ref().unwrap().path().join("workspace");
    assert_eq!(
        std::fs::read_to_string(copy.join("app.py")).unwrap(),
        "print('one')\n"
    );
    assert!(!copy.join("db/data").exists());
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}
