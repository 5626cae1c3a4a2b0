//! The launcher stream over a flaky link to a "remote" engine (the local daemon behind a TLS relay,
//! see `remote_support`): a block whose stream is cut (relay killed and restarted) or goes silent
//! (relay frozen) is attached again and finishes with every line exactly once; a cut that does not
//! heal is reported within the stream deadline with what arrived, never a hang. And a block cannot
//! attach to the launcher's socket or take its name.

mod remote_support;

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use proctor::config::ExecutorConfig;
use proctor::executor::engine_host::{EngineHost, HostSource};
use proctor::executor::{DockerExecutor, ExecError, ExecEvent, ExecOutcome, ExecRequest, Executor};
use remote_support::{Pki, TlsRelay};
use tokio_util::sync::CancellationToken;

fn policy() -> ExecutorConfig {
    ExecutorConfig {
        image: remote_support::image(),
        timeout_s: 60,
        ..Default::default()
    }
}

fn session(name: &str) -> String {
    format!(
        "test-stream-{name}-{}-{:x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

fn request(session: &str, ws: &Path, code: &str) -> ExecRequest {
    ExecRequest {
        session: session.into(),
        workspace: ws.to_path_buf(),
        language: "python".into(),
        code: code.into(),
        filename: None,
        policy: policy(),
        allow_network: false,
        user_workspace: false,
    }
}

/// The executor on the TLS relay's engine.
fn executor_on(relay: &TlsRelay, pki: &Pki) -> DockerExecutor {
    let dir = pki.client_dir();
    let engine = EngineHost::resolve_with(
        Some((&relay.docker_host(), HostSource::CommandLine)),
        |k| match k {
            "DOCKER_TLS_VERIFY" => Some("1".into()),
            "DOCKER_CERT_PATH" => Some(dir.display().to_string()),
            _ => None,
        },
    )
    .unwrap();
    DockerExecutor::for_engine(engine)
}

/// A block in flight: its streamed output and its end, collected by a task.
struct Flight {
    lines: tokio::sync::watch::Receiver<String>,
    end: tokio::task::JoinHandle<Result<ExecOutcome, ExecError>>,
}

fn launch(exec: &DockerExecutor, req: ExecRequest) -> Flight {
    let mut stream = exec.run(req, CancellationToken::new());
    let (tx, rx) = tokio::sync::watch::channel(String::new());
    let end = tokio::spawn(async move {
        let mut text = String::new();
        while let Some(item) = stream.next().await {
            match item? {
                ExecEvent::Output { text: t, .. } => {
                    text.push_str(&t);
                    let _ = tx.send(text.clone());
                }
                ExecEvent::Finished(o) => {
                    assert_eq!(o.output.trim_end(), text.trim_end(), "streamed == result");
                    return Ok(o);
                }
                _ => {}
            }
        }
        panic!("the stream ended without a result");
    });
    Flight { lines: rx, end }
}

impl Flight {
    /// Waits until `n` lines streamed.
    async fn wait_lines(&mut self, n: usize) {
        let t0 = Instant::now();
        while self.lines.borrow().lines().count() < n {
            assert!(t0.elapsed() < Duration::from_secs(30), "no output");
            let _ = tokio::time::timeout(Duration::from_millis(200), self.lines.changed()).await;
        }
    }
}

/// `n` numbered lines, one every `ms` milliseconds.
fn ticker(n: u32, ms: u32) -> String {
    format!(
        "import time\nfor i in range({n}):\n    print('tick', i, flush=True)\n    time.sleep({ms} / 1000)\n"
    )
}

fn expected(n: u32) -> String {
    (0..n).map(|i| format!("tick {i}\n")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_cut_off_by_a_dead_relay_is_reattached_without_losing_or_repeating_a_line() {
    let pki = Pki::new();
    let mut relay = TlsRelay::start(&pki);
    let port = relay.port;
    let exec = executor_on(&relay, &pki);
    let ws = tempfile::tempdir().unwrap();
    let s = session("cut");
    let mut flight = launch(&exec, request(&s, ws.path(), &ticker(60, 100)));
    flight.wait_lines(10).await;
    // Every connection through the relay dies at once; the engine is back 1.5 s later.
    relay.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let relay = TlsRelay::start_on(&pki, port);
    let t0 = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(40), flight.end)
        .await
        .expect("never a hang")
        .unwrap()
        .unwrap_or_else(|e| panic!("the block should have been reattached: {e}"));
    assert_eq!(outcome.exit_code, 0, "{outcome:?}");
    assert_eq!(outcome.output, expected(60), "every line exactly once");
    assert!(relay.connections() > 0, "reattached through the new relay");
    assert!(t0.elapsed() < Duration::from_secs(30));
    // The session goes on: the next block runs on the same launcher.
    let next = launch(&exec, request(&s, ws.path(), "print('next')"));
    let o = next.end.await.unwrap().unwrap();
    assert_eq!((o.exit_code, o.output.as_str()), (0, "next\n"));
    exec.shutdown(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_link_is_noticed_by_its_missing_keepalives_and_reattached() {
    let pki = Pki::new();
    let relay = TlsRelay::start(&pki);
    let exec = executor_on(&relay, &pki);
    let ws = tempfile::tempdir().unwrap();
    let s = session("silent");
    let mut flight = launch(&exec, request(&s, ws.path(), &ticker(100, 100)));
    flight.wait_lines(5).await;
    let connections = relay.connections();
    // The link goes silent without closing (a frozen relay: nothing passes, nothing is closed)
    // for longer than the keepalive timeout, then comes back.
    relay.pause();
    tokio::time::sleep(Duration::from_secs(7)).await;
    relay.resume();
    let outcome = tokio::time::timeout(Duration::from_secs(40), flight.end)
        .await
        .expect("never a hang")
        .unwrap()
        .unwrap_or_else(|e| panic!("the block should have been reattached: {e}"));
    assert_eq!(outcome.exit_code, 0, "{outcome:?}");
    assert_eq!(outcome.output, expected(100), "every line exactly once");
    assert!(
        relay.connections() > connections,
        "the silence was noticed and the launcher attached again over a new connection"
    );
    exec.shutdown(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_that_does_not_heal_is_reported_within_the_deadline_with_what_arrived() {
    let pki = Pki::new();
    let mut relay = TlsRelay::start(&pki);
    let port = relay.port;
    let exec = executor_on(&relay, &pki).with_stream_deadline(Duration::from_secs(3));
    let ws = tempfile::tempdir().unwrap();
    let s = session("gone");
    // Also leaves a trace in the workspace, to see when it stops running.
    let code = "import time\nfor i in range(600):\n    print('tick', i, flush=True)\n    open('/workspace/ticks', 'a').write('.')\n    time.sleep(0.1)\n";
    let mut flight = launch(&exec, request(&s, ws.path(), code));
    flight.wait_lines(5).await;
    relay.kill();
    let t0 = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(30), flight.end)
        .await
        .expect("never a hang")
        .unwrap();
    let took = t0.elapsed();
    let Err(ExecError::Docker(msg)) = end else {
        panic!("expected the block to be reported cut: {end:?}")
    };
    assert!(
        msg.contains("was cut during this block") && msg.contains("proctor doctor"),
        "{msg}"
    );
    assert!(took < Duration::from_secs(15), "reported after {took:?}");
    // What arrived is a clean prefix of what the block printed.
    let arrived = flight.lines.borrow().clone();
    assert!(arrived.lines().count() >= 5, "{arrived}");
    assert!(expected(600).starts_with(&arrived), "{arrived}");
    // The engine is back: the next block runs (on a fresh launcher) and the cut block is dead.
    let _relay = TlsRelay::start_on(&pki, port);
    let next = launch(&exec, request(&s, ws.path(), "print('next')"));
    let o = next.end.await.unwrap().unwrap();
    assert_eq!((o.exit_code, o.output.as_str()), (0, "next\n"));
    let before = std::fs::read(ws.path().join("ticks")).unwrap().len();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let after = std::fs::read(ws.path().join("ticks")).unwrap().len();
    assert_eq!(before, after, "the cut block was killed");
    exec.shutdown(&s).await;
}

#[tokio::test]
async fn a_block_cannot_attach_to_the_launchers_socket_or_take_its_name() {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let s = session("attach");
    // The block finds the launcher's abstract socket, tries to attach with a made-up proof (and
    // with none), tries to bind the same name, and prints fake keepalive and numbered frames.
    let code = r#"import json, os, socket, struct, sys
names = [l.split()[-1] for l in open("/proc/net/unix") if "@proctor-launcher-" in l]
print("sockets", len(set(names)))
name = names[0][1:]
for proof in ("00" * 32, ""):
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect("\0" + name)
    c.settimeout(10)
    head = c.recv(5)
    print("challenge", head[:1].decode(), struct.unpack(">I", head[1:])[0])
    c.recv(16)
    c.sendall(json.dumps({"op": "attach", "seq": 0, "proof": proof}).encode() + b"\n")
    rest = b""
    while True:
        d = c.recv(4096)
        if not d:
            break
        rest += d
    print("after the proof:", len(rest), "bytes")
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.bind("\0" + name)
    print("bound")
except OSError as e:
    print("bind refused", e.errno)
fake = struct.pack(">cI", b"K", 40) + b"0" * 32 + struct.pack(">Q", 99)
fake += struct.pack(">cI", b"1", 47) + b"0" * 32 + struct.pack(">Q", 2) + b"FORGED\n"
sys.stdout.buffer.write(fake)
sys.stdout.flush()
sys.exit(3)
"#;
    let flight = launch(&exec, request(&s, ws.path(), code));
    let o = flight.end.await.unwrap().unwrap();
    assert_eq!(o.exit_code, 3, "{o:?}");
    assert!(o.output.contains("sockets 1\n"), "{}", o.output);
    assert_eq!(
        o.output
            .matches("challenge A 16\nafter the proof: 0 bytes\n")
            .count(),
        2,
        "no frame reaches a connection without the key: {}",
        o.output
    );
    assert!(o.output.contains("bind refused 98"), "{}", o.output);
    assert!(!o.output.contains("bound"), "{}", o.output);
    // The fake frames were the block's own output, nothing more; the launcher is still in step.
    assert!(o.output.contains("FORGED"), "{}", o.output);
    let next = launch(&exec, request(&s, ws.path(), "print('next')"));
    let o = next.end.await.unwrap().unwrap();
    assert_eq!((o.exit_code, o.output.as_str()), (0, "next\n"));
    exec.shutdown(&s).await;
}

// ---- through the binary: the JSON events a user's front end sees ------------------------------

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

/// One block that prints 50 numbered lines over 6 s, dropping `started` in the workspace a second
/// after the sixth (by then the six lines have reached proctor).
const TICKER_SCRIPT: &str = r#"
[[reply]]
agent = "coder"
text = """
```python
import time
for i in range(50):
    print('tick', i, flush=True)
    if i == 5:
        time.sleep(1)
        open('started', 'w').close()
    time.sleep(0.1)
```
"""
[[reply]]
agent = "reviewer"
text = "Done. TERMINATE"
"#;

/// Waits (up to 60 s) until the block of the session under `data` dropped its `started` file in
/// its sandbox. (On a remote engine the workspace is a volume: the file reaches the local directory
/// only after the block, so the sandbox is asked, through this machine's own socket.)
fn wait_started(data: &Path) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(60) {
        let sessions: Vec<String> = std::fs::read_dir(data.join("sessions"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|s| s.file_name().to_string_lossy().into_owned())
            .collect();
        for session in sessions {
            let ps = std::process::Command::new("docker")
                .args(["ps", "-q", "--filter"])
                .arg(format!("label=proctor.session={session}"))
                .output();
            let ids = ps.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            for id in ids.unwrap_or_default().split_whitespace() {
                let found = std::process::Command::new("docker")
                    .args(["exec", id, "test", "-e", "/workspace/started"])
                    .output()
                    .is_ok_and(|o| o.status.success());
                if found {
                    return;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the block never started");
}

/// Asserts the session's one block finished with every line exactly once, streamed and in the
/// result.
fn assert_every_tick_once(code: i32, events: &[serde_json::Value], stderr: &str) {
    use remote_support::of_type;
    assert_eq!(code, 0, "stderr: {stderr}");
    let fin = of_type(events, "execution_finished");
    assert_eq!(fin.len(), 1, "{events:?}");
    assert_eq!(fin[0]["exit_code"], 0, "{}", fin[0]);
    assert_ne!(fin[0]["interrupted"], true, "{}", fin[0]);
    assert_eq!(fin[0]["output"].as_str().unwrap(), expected(50));
    let streamed: String = of_type(events, "execution_output")
        .iter()
        .map(|o| o["text"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, expected(50), "streamed once each, in order");
    assert!(of_type(events, "paused").is_empty(), "{events:?}");
}

#[test]
fn a_session_over_tls_rides_out_a_relay_restart_mid_block() {
    let pki = Pki::new();
    let relay = TlsRelay::start(&pki);
    let (host, certs) = (relay.docker_host(), pki.client_dir());
    let work = remote_support::Workdir::new(TICKER_SCRIPT, TEAM);
    let data = work.path("data");
    // Cuts every connection once the block runs; the engine is back 1.5 s later on the same port
    // (the PKI and the new relay live until the session ends).
    let cutter = std::thread::spawn(move || {
        let mut relay = relay;
        wait_started(&data);
        relay.kill();
        std::thread::sleep(Duration::from_millis(1500));
        let back = TlsRelay::start_on(&pki, relay.port);
        (back, pki)
    });
    let mut cmd = work.proctor();
    cmd.env("DOCKER_HOST", &host)
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", &certs);
    let (code, events, stderr) = work.run_auto(cmd, "count slowly");
    let (back, _pki) = cutter.join().unwrap();
    assert_every_tick_once(code, &events, &stderr);
    assert!(
        back.connections() > 0,
        "the session went on through the new relay"
    );
}

#[test]
fn a_session_over_ssh_rides_out_an_sshd_restart_mid_block() {
    let server = remote_support::SshServer::start();
    let client = server.client(&server.path("user_key"));
    let team = format!(
        "{TEAM}\n[executor]\ndocker_host = \"{}\"\n",
        server.docker_host()
    );
    let work = remote_support::Workdir::new(TICKER_SCRIPT, &team);
    let data = work.path("data");
    let cutter = std::thread::spawn(move || {
        let mut server = server;
        wait_started(&data);
        let logins = server.logins();
        server.kill();
        std::thread::sleep(Duration::from_millis(1500));
        server.restart();
        (server, logins)
    });
    let mut cmd = work.proctor();
    cmd.env("PATH", client.path_env());
    let (code, events, stderr) = work.run_auto(cmd, "count slowly");
    let (server, logins) = cutter.join().unwrap();
    assert_every_tick_once(code, &events, &stderr);
    assert!(
        server.logins() > logins,
        "the session logged in again after the cut"
    );
}

#[test]
fn a_session_whose_engine_stays_away_mid_block_pauses_with_what_arrived() {
    use remote_support::of_type;
    let pki = Pki::new();
    let relay = TlsRelay::start(&pki);
    let (host, certs) = (relay.docker_host(), pki.client_dir());
    let work = remote_support::Workdir::new(TICKER_SCRIPT, TEAM);
    let data = work.path("data");
    // Cuts every connection once the block runs; the engine never comes back.
    let cutter = std::thread::spawn(move || {
        let mut relay = relay;
        wait_started(&data);
        relay.kill();
        Instant::now()
    });
    let mut cmd = work.proctor();
    cmd.env("DOCKER_HOST", &host)
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", &certs);
    let (code, events, stderr) = work.run_auto(cmd, "count slowly");
    let cut_at = cutter.join().unwrap();
    let waited = cut_at.elapsed();
    assert_ne!(code, 0, "stderr: {stderr}");
    // Reported within the stream deadline (20 s) plus the keepalive timeout, not hung.
    assert!(waited < Duration::from_secs(35), "took {waited:?}");
    let fin = of_type(&events, "execution_finished");
    assert_eq!(fin.len(), 1, "{events:?}");
    assert_eq!(fin[0]["interrupted"], true, "{}", fin[0]);
    let output = fin[0]["output"].as_str().unwrap();
    let (arrived, why) = output.split_once("interrupted: ").expect(output);
    assert!(arrived.lines().count() >= 6, "{output}");
    assert!(
        expected(50).starts_with(arrived),
        "a clean prefix: {output}"
    );
    assert!(
        why.starts_with(&format!(
            "the connection to the Docker engine at {host} was cut during this block and did \
             not come back within 20 s"
        )),
        "{why}"
    );
    let paused = of_type(&events, "paused");
    assert_eq!(paused.len(), 1, "{events:?}");
    let reason = paused[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("was cut during this block") && reason.contains("proctor doctor"),
        "{reason}"
    );
    // The one stderr line names the fix before anything is cut short.
    let line = stderr
        .lines()
        .find(|l| l.contains("the session paused"))
        .expect(&stderr);
    assert!(line.contains("(`proctor doctor`)"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_swallowed_by_a_cut_is_sent_again_and_runs_once() {
    let pki = Pki::new();
    let mut relay = TlsRelay::start(&pki);
    let port = relay.port;
    let exec = executor_on(&relay, &pki);
    let ws = tempfile::tempdir().unwrap();
    let s = session("swallowed");
    let warm = launch(&exec, request(&s, ws.path(), "print('warm')"));
    assert_eq!(warm.end.await.unwrap().unwrap().output, "warm\n");
    // The next block's `run` goes into a frozen relay, which then dies with it unread.
    relay.pause();
    let flight = launch(
        &exec,
        request(
            &s,
            ws.path(),
            "open('/workspace/runs', 'a').write('.')\nprint('after the cut')",
        ),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    relay.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _relay = TlsRelay::start_on(&pki, port);
    let outcome = tokio::time::timeout(Duration::from_secs(40), flight.end)
        .await
        .expect("never a hang")
        .unwrap()
        .unwrap_or_else(|e| panic!("the block should have run: {e}"));
    assert_eq!(
        (outcome.exit_code, outcome.output.as_str()),
        (0, "after the cut\n"),
        "{outcome:?}"
    );
    assert_eq!(
        std::fs::read_to_string(ws.path().join("runs")).unwrap(),
        ".",
        "ran exactly once"
    );
    exec.shutdown(&s).await;
}
