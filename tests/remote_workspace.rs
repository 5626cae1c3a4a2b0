//! The workspace of a sandbox on a remote engine, carried through the launcher: the local daemon
//! served over TLS (socat, client certificates) and over SSH counts as remote, so nothing of this
//! machine may be mounted. Blocks run; the container is inspected (no bind mount, the workspace a
//! volume, no network unless a block is allowed it); what blocks write, modify and delete shows up
//! locally with the right contents and owner; a local edit is pushed when the sandbox is made
//! again (resume); links and FIFOs the code leaves are refused and named; a block filling the
//! engine's volume is stopped at the limit and its oversized file stays there, named.

mod remote_support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use futures::StreamExt;
use proctor::config::ExecutorConfig;
use proctor::executor::engine_host::{EngineHost, HostSource};
use proctor::executor::{DockerExecutor, ExecEvent, ExecOutcome, ExecRequest, Executor};
use remote_support::{Pki, SshServer, TlsRelay, image};
use tokio_util::sync::CancellationToken;

fn session(name: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("test-remote-{name}-{}-{n:x}", std::process::id())
}

fn tls_engine(relay: &TlsRelay, pki: &Pki) -> EngineHost {
    let engine = EngineHost::resolve_with(
        Some((&relay.docker_host(), HostSource::CommandLine)),
        |k| match k {
            "DOCKER_TLS_VERIFY" => Some("1".into()),
            "DOCKER_CERT_PATH" => Some(pki.client_dir().display().to_string()),
            _ => None,
        },
    )
    .unwrap();
    assert!(engine.is_remote(), "a TLS engine counts as remote");
    engine
}

fn request(session: &str, ws: &Path, code: &str) -> ExecRequest {
    ExecRequest {
        session: session.into(),
        workspace: ws.to_path_buf(),
        language: "python".into(),
        code: code.into(),
        filename: None,
        policy: ExecutorConfig {
            image: image(),
            timeout_s: 30,
            ..Default::default()
        },
        allow_network: false,
        user_workspace: true,
    }
}

async fn run(exec: &DockerExecutor, req: ExecRequest) -> ExecOutcome {
    let mut stream = exec.run(req, CancellationToken::new());
    while let Some(item) = stream.next().await {
        if let ExecEvent::Finished(o) = item.expect("the block ran") {
            return o;
        }
    }
    panic!("no Finished event");
}

/// `docker inspect` of a container on the local daemon (the one the relays serve).
fn inspect(id: &str) -> serde_json::Value {
    let out = std::process::Command::new("docker")
        .args(["inspect", id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0].clone()
}

/// A workspace owned by a regular user (uid 4321), as `--workspace` on a user's project.
fn user_workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.txt"), "pushed from here\n").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/old.txt"), "to be deleted\n").unwrap();
    for p in ["", "data.txt", "sub", "sub/old.txt"] {
        std::os::unix::fs::chown(dir.path().join(p), Some(4321), Some(4321)).unwrap();
    }
    dir
}

const INTERFACES: &str = "import socket\nprint(sorted(n for _, n in socket.if_nameindex()))";

#[tokio::test]
async fn blocks_on_a_tls_engine_mount_nothing_and_their_changes_come_back() {
    let pki = Pki::new();
    let relay = TlsRelay::start(&pki);
    let exec = DockerExecutor::for_engine(tls_engine(&relay, &pki));
    let ws = user_workspace();
    let s = session("tls");

    let code = "import os, pathlib\n\
                print(open('data.txt').read().strip())\n\
                pathlib.Path('made/deep').mkdir(parents=True)\n\
                open('made/deep/out.txt', 'w').write('written in the sandbox\\n')\n\
                open('data.txt', 'a').write('and more\\n')\n\
                os.remove('sub/old.txt')\n\
                print(os.getuid(), os.stat('.').st_mode & 0o777 != 0)";
    let o = run(&exec, request(&s, ws.path(), code)).await;
    assert_eq!(o.exit_code, 0, "{}", o.output);
    let mut lines = o.output.lines();
    assert_eq!(lines.next(), Some("pushed from here"), "{}", o.output);
    assert_eq!(
        lines.next(),
        Some("4321 True"),
        "blocks run as the workspace's owner"
    );

    // The container: nothing of this machine is mounted; the workspace is a volume.
    let id = exec.container_of(&s).expect("a sandbox");
    let info = inspect(&id);
    let mounts = info["Mounts"].as_array().unwrap();
    assert!(
        mounts.iter().all(|m| m["Type"] != "bind"),
        "no bind mount: {mounts:?}"
    );
    assert!(
        mounts
            .iter()
            .any(|m| m["Type"] == "volume" && m["Destination"] == "/workspace"),
        "{mounts:?}"
    );
    let hc = &info["HostConfig"];
    assert!(hc["Binds"].is_null() || hc["Binds"].as_array().unwrap().is_empty());
    // Every hardening setting stays as on a local engine.
    assert_eq!(hc["ReadonlyRootfs"], true);
    assert_eq!(hc["CapDrop"][0], "ALL");
    assert_eq!(hc["SecurityOpt"][0], "no-new-privileges");
    assert_eq!(hc["Memory"], 512 * 1024 * 1024);
    assert_eq!(hc["PidsLimit"], 256);
    assert!(
        info["Config"]["User"]
            .as_str()
            .unwrap()
            .starts_with("65534")
    );

    // What the block wrote, modified and deleted is here, with its contents and owner.
    let out = ws.path().join("made/deep/out.txt");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "written in the sandbox\n"
    );
    assert_eq!(
        std::fs::read_to_string(ws.path().join("data.txt")).unwrap(),
        "pushed from here\nand more\n"
    );
    assert!(!ws.path().join("sub/old.txt").exists());
    for p in ["made", "made/deep", "made/deep/out.txt", "data.txt"] {
        let m = std::fs::metadata(ws.path().join(p)).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            (4321, 4321),
            "{p} belongs to the workspace's owner"
        );
    }
    let delta = o.changes.expect("a change list");
    let names = |v: &Vec<proctor::protocol::FileChange>| -> Vec<String> {
        v.iter().map(|c| c.path.clone()).collect()
    };
    assert_eq!(names(&delta.created), ["made/deep/out.txt"]);
    assert_eq!(names(&delta.modified), ["data.txt"]);
    assert_eq!(names(&delta.deleted), ["sub/old.txt"]);

    // A named block's file goes in through the launcher and comes back as the block's.
    let mut named = request(&s, ws.path(), "print(open(__file__).read().count('x'))");
    named.filename = Some("tools/count.py".into());
    let o = run(&exec, named).await;
    assert_eq!(o.output.trim(), "1", "{}", o.output);
    assert_eq!(
        std::fs::read_to_string(ws.path().join("tools/count.py")).unwrap(),
        "print(open(__file__).read().count('x'))"
    );

    // No network, except for a block the human allowed it, and none again after it.
    let o = run(&exec, request(&s, ws.path(), INTERFACES)).await;
    assert_eq!(o.output.trim(), "['lo']", "{}", o.output);
    let mut online = request(&s, ws.path(), INTERFACES);
    online.allow_network = true;
    let o = run(&exec, online).await;
    assert!(o.output.contains("'eth0'"), "{}", o.output);
    assert_eq!(
        exec.container_of(&s).as_deref(),
        Some(id.as_str()),
        "the same sandbox, connected for one block"
    );
    let o = run(&exec, request(&s, ws.path(), INTERFACES)).await;
    assert_eq!(o.output.trim(), "['lo']", "{}", o.output);

    exec.shutdown(&s).await;
    drop(relay);
}

#[tokio::test]
async fn a_local_edit_is_pushed_when_the_session_resumes_over_ssh() {
    let server = SshServer::start();
    let client = server.client(&server.path("user_key"));
    // The transport runs `ssh` from PATH: give this process the test client's.
    // SAFETY: nextest runs each test in its own process and nothing else reads PATH meanwhile.
    unsafe { std::env::set_var("PATH", client.path_env()) };
    let engine = EngineHost::resolve_with(
        Some((&server.docker_host(), HostSource::CommandLine)),
        |_| None,
    )
    .unwrap();
    assert!(engine.is_remote());
    let ws = user_workspace();
    let s = session("ssh");
    let exec = DockerExecutor::for_engine(engine.clone());
    let o = run(
        &exec,
        request(
            &s,
            ws.path(),
            "open('notes.txt', 'w').write('from block 1\\n')",
        ),
    )
    .await;
    assert_eq!(o.exit_code, 0, "{}", o.output);
    let first = exec.container_of(&s).unwrap();
    // The session ends (its sandbox and volume go); the user edits locally; it resumes in a new
    // proctor process (a new executor).
    exec.shutdown(&s).await;
    drop(exec);
    std::fs::write(ws.path().join("notes.txt"), "edited here\n").unwrap();
    let exec = DockerExecutor::for_engine(engine);
    let o = run(
        &exec,
        request(
            &s,
            ws.path(),
            "print(open('notes.txt').read().strip(), open('data.txt').read().strip())",
        ),
    )
    .await;
    assert_eq!(
        o.output.trim(),
        "edited here pushed from here",
        "{}",
        o.output
    );
    assert_ne!(exec.container_of(&s).unwrap(), first, "a new sandbox");
    exec.shutdown(&s).await;
    assert!(server.logins() > 0, "the blocks went over ssh");
}

#[tokio::test]
async fn links_and_fifos_from_the_sandbox_are_refused_and_named() {
    let pki = Pki::new();
    let relay = TlsRelay::start(&pki);
    let exec = DockerExecutor::for_engine(tls_engine(&relay, &pki));
    let ws = user_workspace();
    let outside = tempfile::tempdir().unwrap();
    let s = session("hostile");
    let code = "import os\n\
                os.symlink('/etc/passwd', 'passwd')\n\
                os.symlink('..', 'up')\n\
                os.mkfifo('pipe')\n\
                open('fine.txt', 'w').write('fine\\n')";
    let o = run(&exec, request(&s, ws.path(), code)).await;
    assert_eq!(o.exit_code, 0, "{}", o.output);
    assert_eq!(
        std::fs::read_to_string(ws.path().join("fine.txt")).unwrap(),
        "fine\n"
    );
    for p in ["passwd", "up", "pipe"] {
        assert!(
            std::fs::symlink_metadata(ws.path().join(p)).is_err(),
            "{p} was not brought back"
        );
        assert!(
            o.output.contains(&format!("{p} (")),
            "{p} is named: {}",
            o.output
        );
    }
    assert!(o.output.contains("left in the sandbox"), "{}", o.output);
    // A link left on this machine by the user is never written through by a pull.
    std::os::unix::fs::symlink(outside.path(), ws.path().join("out")).unwrap();
    let o = run(
        &exec,
        request(
            &s,
            ws.path(),
            "import os\nos.makedirs('out', exist_ok=True)\nopen('out/x.txt', 'w').write('x')",
        ),
    )
    .await;
    assert!(!outside.path().join("x.txt").exists(), "{}", o.output);
    assert!(o.output.contains("out/x.txt ("), "{}", o.output);
    exec.shutdown(&s).await;
    drop(relay);
}

#[tokio::test]
async fn a_block_filling_the_engines_volume_is_stopped_at_the_limit() {
    let pki = Pki::new();
    let relay = TlsRelay::start(&pki);
    let exec = DockerExecutor::for_engine(tls_engine(&relay, &pki));
    let ws = user_workspace();
    let s = session("fill");
    let mut req = request(
        &s,
        ws.path(),
        "import time\n\
         with open('fill.bin', 'wb') as f:\n\
         \x20   for i in range(4096):\n\
         \x20       f.write(b'\\1' * (1 << 20)); f.flush()\n\
         \x20       time.sleep(0.005)\n\
         print('wrote it all')\n",
    );
    req.policy.workspace_limit_mb = 16;
    let o = run(&exec, req).await;
    assert!(o.workspace_limit_exceeded, "{o:?}");
    assert!(!o.timed_out && !o.cancelled, "{o:?}");
    assert!(!o.output.contains("wrote it all"), "{}", o.output);
    assert!(
        o.output
            .contains("past its limit of 16 MiB (workspace_limit_mb)"),
        "{}",
        o.output
    );
    // Past the budget of one block's changes, it stays in the sandbox and is named.
    assert!(!ws.path().join("fill.bin").exists());
    assert!(o.output.contains("fill.bin ("), "{}", o.output);
    // The next block runs normally, in the same sandbox.
    let o = run(
        &exec,
        request(
            &s,
            ws.path(),
            "import os; os.remove('fill.bin'); print('ok')",
        ),
    )
    .await;
    assert_eq!(o.output, "ok\n");
    // One watch per sandbox, not one per block.
    let count = "import os, time\n\
                 time.sleep(1)\n\
                 n = 0\n\
                 for p in filter(str.isdigit, os.listdir('/proc')):\n\
                 \x20   try: n += b'workspace watch' in open(f'/proc/{p}/cmdline', 'rb').read()\n\
                 \x20   except OSError: pass\n\
                 print(n)";
    for _ in 0..3 {
        let o = run(&exec, request(&s, ws.path(), count)).await;
        assert_eq!(o.output.trim(), "1", "{}", o.output);
    }
    exec.shutdown(&s).await;
    drop(relay);
}
