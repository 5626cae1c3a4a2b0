//! A data dir that cannot be written — read-only, full, or a file where a directory belongs —
//! through every command of the real binary: nothing panics (no exit 101), logging falls back
//! with one warning, `doctor` names the problem and the fix, new sessions refuse to start before
//! any model call unless `--unsaved`, and no message says "saved" unless every event is on disk.
//!
//! The read-only and full cases mount a tmpfs, which needs root (the test machine runs as root).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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
text = "Looks right. TERMINATE"
"#;

/// A tmpfs mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mounting a tmpfs failed: these tests need root");
        Tmpfs { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn read_only(&self) {
        let ok = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(self.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remount read-only failed");
    }
    /// Fills the file system until `leave` bytes or fewer are free.
    fn fill(&self, leave: u64) {
        let mut f = std::fs::File::create(self.path().join("filler")).unwrap();
        let chunk = vec![7u8; 4096];
        loop {
            let free = free_bytes(self.path());
            if free <= leave {
                break;
            }
            let n = ((free - leave) as usize).min(chunk.len());
            if f.write_all(&chunk[..n]).is_err() {
                break;
            }
            let _ = f.sync_data();
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

/// Config, team and script live outside the data dir under test.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(script: &str) -> Files {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("script.toml"), script).unwrap();
        std::fs::write(dir.path().join("team.toml"), TEAM).unwrap();
        std::fs::write(
            dir.path().join("config.toml"),
            format!(
                "default_team = \"{}\"\n[providers.fake]\nkind = \"scripted\"\nscript = \"{}\"\n",
                dir.path().join("team.toml").display(),
                dir.path().join("script.toml").display()
            ),
        )
        .unwrap();
        Files { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn cmd(&self, data: &Path) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_proctor"));
        c.arg("--config")
            .arg(self.path("config.toml"))
            .arg("--data-dir")
            .arg(data)
            .env_remove("PROCTOR_DATA_DIR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }
    fn run(&self, data: &Path, args: &[&str], stdin: &str) -> Output {
        let mut c = self.cmd(data);
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("TEAM", &self.path("team.toml").display().to_string()))
            .collect();
        c.args(&args);
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }
}

/// A session that waits for an approval, saved while the data dir was writable.
fn saved_session(files: &Files, data: &Path) -> String {
    let out = files.run(
        data,
        &[
            "run",
            "--team",
            "TEAM",
            "--task",
            "t",
            "--headless",
            "--json",
        ],
        "",
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap()
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    v["session"].as_str().unwrap().to_string()
}

/// What every command must do on a data dir it cannot write.
fn check(what: &str, out: &Output) -> (i32, String, String) {
    let code = out.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_ne!(code, 101, "{what}: panicked:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{what}:\n{stderr}");
    assert_eq!(
        stderr.matches("logging is off").count(),
        1,
        "{what}: one warning about logging:\n{stderr}"
    );
    assert!(
        !stderr.contains(" saved —") && !stderr.contains("session saved"),
        "{what}: claims it saved:\n{stderr}"
    );
    (code, stdout, stderr)
}

/// The commands that start a new session refuse, naming the problem and `--unsaved`, before
/// any model call (nothing on stdout: not even `session_started`).
fn new_sessions_refuse(files: &Files, data: &Path, says: &str) {
    for args in [
        &[
            "run",
            "--team",
            "TEAM",
            "--task",
            "t",
            "--headless",
            "--json",
        ][..],
        &["demo", "--headless", "--json"][..],
        &[][..],
    ] {
        let out = files.run(data, args, "");
        let (code, stdout, stderr) = check(&format!("{args:?}"), &out);
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: the session started: {stdout}");
        assert!(
            stderr.contains("cannot save sessions") && stderr.contains(says),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("--unsaved"), "{args:?}: {stderr}");
        assert!(stderr.contains("--data-dir"), "{args:?}: {stderr}");
    }
}

fn doctor_names_it(files: &Files, data: &Path, says: &str) {
    let out = files.run(data, &["doctor"], "");
    let (code, stdout, _) = check("doctor", &out);
    assert_eq!(code, 1);
    let dir_line = stdout
        .lines()
        .find(|l| l.contains("data dir"))
        .unwrap_or_default();
    assert!(
        dir_line.starts_with("FAIL") && dir_line.contains(says),
        "{stdout}"
    );
    assert!(dir_line.contains("--data-dir"), "{stdout}");
    let logs = stdout
        .lines()
        .find(|l| l.contains("logs"))
        .unwrap_or_default();
    assert!(
        logs.starts_with("FAIL") && logs.contains("off for this run"),
        "{stdout}"
    );
}

#[test]
fn a_read_only_data_dir_fails_every_command_cleanly() {
    let files = Files::new(SCRIPT);
    let fs = Tmpfs::mount("4m");
    let data = fs.path().join("data");
    let id = saved_session(&files, &data);
    fs.read_only();

    // Reading works.
    let (code, stdout, _) = check("list", &files.run(&data, &["sessions", "list"], ""));
    assert_eq!(code, 0);
    assert!(stdout.contains(&id), "{stdout}");
    let (code, stdout, _) = check(
        "export",
        &files.run(&data, &["sessions", "export", &id], ""),
    );
    assert_eq!(code, 0);
    assert!(stdout.contains("# proctor session"), "{stdout}");
    let (code, _, _) = check(
        "export json",
        &files.run(&data, &["sessions", "export", &id, "--format", "json"], ""),
    );
    assert_eq!(code, 0);
    // Writing says why it cannot.
    for args in [
        &["sessions", "fork", &id, "--at", "1"][..],
        &["sessions", "rm", &id][..],
        &["resume", &id, "--headless", "--json"][..],
        &["resume", "--last", "--headless"][..],
    ] {
        let (code, _, stderr) = check(&format!("{args:?}"), &files.run(&data, args, ""));
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains("Read-only file system"),
            "{args:?}: {stderr}"
        );
    }
    new_sessions_refuse(&files, &data, "read-only");
    doctor_names_it(&files, &data, "read-only");

    // Opting in runs the session without saving it, and says so.
    let out = files.run(
        &data,
        &[
            "run",
            "--unsaved",
            "--team",
            "TEAM",
            "--task",
            "t",
            "--headless",
            "--json",
        ],
        "{\"id\": 1, \"block\": 0, \"decision\": \"reject\", \"reason\": \"not now\"}\n",
    );
    let (code, stdout, stderr) = check("--unsaved", &out);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"terminated\""), "{stdout}");
    assert!(stderr.contains("NOT saved"), "{stderr}");
}

#[test]
fn a_file_where_the_data_dir_should_be_fails_every_command_cleanly() {
    let files = Files::new(SCRIPT);
    let data = files.path("not-a-dir");
    std::fs::write(&data, "a file").unwrap();
    for args in [
        &["sessions", "list"][..],
        &["sessions", "export", "0190"][..],
        &["sessions", "fork", "0190", "--at", "1"][..],
        &["sessions", "rm", "0190"][..],
        &["resume", "--last"][..],
    ] {
        let (code, _, stderr) = check(&format!("{args:?}"), &files.run(&data, args, ""));
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(stderr.contains("Not a directory"), "{args:?}: {stderr}");
    }
    new_sessions_refuse(&files, &data, "Not a directory");
    doctor_names_it(&files, &data, "Not a directory");
}

#[test]
fn a_full_data_dir_fails_every_command_cleanly() {
    let files = Files::new(SCRIPT);
    let fs = Tmpfs::mount("1m");
    let data = fs.path().join("data");
    let id = saved_session(&files, &data);
    // The log file of this day exists already: fill what is left, then remove it so that
    // opening the log needs space too.
    let _ = std::fs::remove_dir_all(data.join("logs"));
    fs.fill(0);
    let (code, stdout, _) = check("list", &files.run(&data, &["sessions", "list"], ""));
    assert_eq!(code, 0);
    assert!(stdout.contains(&id), "{stdout}");
    let (code, _, _) = check(
        "export",
        &files.run(&data, &["sessions", "export", &id], ""),
    );
    assert_eq!(code, 0);
    let (code, _, stderr) = check(
        "fork",
        &files.run(&data, &["sessions", "fork", &id, "--at", "2"], ""),
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("No space left"), "{stderr}");
    new_sessions_refuse(&files, &data, "the disk is full");
    doctor_names_it(&files, &data, "the disk is full");
    // Removing a session frees space and works.
    let (code, _, stderr) = check("rm", &files.run(&data, &["sessions", "rm", &id], ""));
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn a_disk_that_fills_during_a_session_is_never_reported_as_saved() {
    // A reply bigger than the space left once the session has started.
    let big = "word ".repeat(120_000);
    let script = format!(
        "[[reply]]\nagent = \"coder\"\ntext = \"{big}\"\n[[reply]]\nagent = \"reviewer\"\ntext = \"TERMINATE\"\n"
    );
    let files = Files::new(&script);
    let fs = Tmpfs::mount("1m");
    let data = fs.path().join("data");
    std::fs::create_dir_all(data.join("logs")).unwrap();
    fs.fill(200 * 1024);
    let out = files.run(
        &data,
        &[
            "run",
            "--team",
            "TEAM",
            "--task",
            "t",
            "--headless",
            "--json",
        ],
        "",
    );
    let code = out.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(code, 101, "{stderr}");
    assert!(
        stdout.contains("\"terminated\""),
        "the session went on in memory: {stdout:.2000}"
    );
    assert!(
        stdout.contains("session not saved"),
        "the save failure was reported live"
    );
    assert!(!stderr.contains(" saved —"), "{stderr}");
    assert!(stderr.contains("NOT saved"), "{stderr}");
}
