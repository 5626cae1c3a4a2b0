//! Runs the real binary as a user would, in a temporary data dir with its own config.toml, and
//! collects what it printed. Shared by the demo and team tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// The sandbox image the tests use (scripts/test.sh builds it without a registry).
pub fn image() -> String {
    std::env::var("PROCTOR_SANDBOX_IMAGE").unwrap_or_else(|_| "proctor-sandbox:bookworm".into())
}

/// What one run of the binary left behind.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout as JSON events (`--json`).
    pub fn events(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
            })
            .collect()
    }
}

/// A data dir and a config.toml of its own, so nothing of the user's is read or written.
pub struct Home {
    pub dir: tempfile::TempDir,
}

impl Home {
    /// A home whose config.toml holds `config`.
    pub fn new(config: &str) -> Home {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        Home { dir }
    }

    /// A home whose config.toml has one scripted provider, `fake`, playing `script`
    /// (`script.toml`), beside a `team.toml` holding `team`.
    pub fn scripted(script: &str, team: &str) -> Home {
        let dir = tempfile::tempdir().unwrap();
        let script_path = dir.path().join("script.toml");
        std::fs::write(&script_path, script).unwrap();
        std::fs::write(dir.path().join("team.toml"), team).unwrap();
        std::fs::write(
            dir.path().join("config.toml"),
            format!(
                "[providers.fake]\nkind = \"scripted\"\nscript = \"{}\"\n",
                script_path.display()
            ),
        )
        .unwrap();
        Home { dir }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// `proctor` with this home's config and data dir, the test sandbox image, and no API keys
    /// from the environment.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_proctor"));
        c.arg("--config")
            .arg(self.path("config.toml"))
            .arg("--data-dir")
            .arg(self.path("data"))
            .arg("--image")
            .arg(image())
            .env_remove("PROCTOR_DATA_DIR")
            .env_remove("PROCTOR_SANDBOX_IMAGE")
            .env_remove("OPENAI_API_KEY")
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("AZURE_OPENAI_API_KEY");
        c
    }

    /// A session's workspace directory.
    pub fn workspace(&self, session: &str) -> PathBuf {
        self.path("data")
            .join("sessions")
            .join(session)
            .join("workspace")
    }
}

/// Runs `c` with `stdin` as its input until it exits.
pub fn finish(mut c: Command, stdin: &str) -> Run {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The binary may exit before reading everything (a refused start): ignore a broken pipe.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// Events of type `t`.
pub fn of_type<'a>(events: &'a [Value], t: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == t).collect()
}

/// The `message` events of `agent`, in order.
pub fn messages_of(events: &[Value], agent: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "message" && e["agent"] == agent)
        .map(|e| e["content"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}
