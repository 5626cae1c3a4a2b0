//! The Docker sandbox executor against the real Docker engine: what runs, what is contained, what
//! the user is told. Image: PROCTOR_SANDBOX_IMAGE or `proctor-sandbox:bookworm`
//! (scripts/build-sandbox-image.sh builds it without a registry).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use proctor::config::ExecutorConfig;
use proctor::executor::{
    DockerExecutor, ExecError, ExecEvent, ExecOutcome, ExecRequest, Executor, doctor_check,
    sweep_orphans,
};
use proctor::protocol::StreamKind;
use tokio_util::sync::CancellationToken;

fn image() -> String {
    std::env::var("PROCTOR_SANDBOX_IMAGE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "proctor-sandbox:bookworm".into())
}

fn policy() -> ExecutorConfig {
    ExecutorConfig {
        image: image(),
        timeout_s: 20,
        ..Default::default()
    }
}

fn session(name: &str) -> String {
    format!("test-{name}-{}-{:x}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

struct Ran {
    events: Vec<(Instant, ExecEvent)>,
    outcome: ExecOutcome,
}

impl Ran {
    /// Output events in arrival order, adjacent pieces of the same stream joined (an unbuffered
    /// `print` writes its text and its newline separately).
    fn outputs(&self) -> Vec<(StreamKind, String)> {
        let mut joined: Vec<(StreamKind, String)> = Vec::new();
        for (_, e) in &self.events {
            if let ExecEvent::Output { stream, text } = e {
                match joined.last_mut() {
                    Some((s, t)) if s == stream && !t.ends_with('\n') => t.push_str(text),
                    _ => joined.push((*stream, text.clone())),
                }
            }
        }
        joined
    }
}

fn request(
    session: &str,
    ws: &Path,
    language: &str,
    code: &str,
    policy: &ExecutorConfig,
) -> ExecRequest {
    ExecRequest {
        session: session.into(),
        workspace: ws.to_path_buf(),
        language: language.into(),
        code: code.into(),
        filename: None,
        policy: policy.clone(),
        allow_network: false,
        user_workspace: false,
    }
}

async fn run_req(
    exec: &DockerExecutor,
    req: ExecRequest,
    cancel: CancellationToken,
) -> Result<Ran, ExecError> {
    let mut stream = exec.run(req, cancel);
    let mut events = Vec::new();
    while let Some(item) = stream.next().await {
        let ev = item?;
        if let ExecEvent::Finished(outcome) = &ev {
            let outcome = outcome.clone();
            events.push((Instant::now(), ev));
            assert!(
                stream.next().await.is_none(),
                "Finished must be the last item"
            );
            return Ok(Ran { events, outcome });
        }
        events.push((Instant::now(), ev));
    }
    panic!(
        "stream ended without Finished: {events:?}",
        events = events.iter().map(|e| &e.1).collect::<Vec<_>>()
    );
}

async fn run(
    exec: &DockerExecutor,
    session: &str,
    ws: &Path,
    code: &str,
    policy: &ExecutorConfig,
) -> Ran {
    run_req(
        exec,
        request(session, ws, "python", code, policy),
        CancellationToken::new(),
    )
    .await
    .unwrap_or_else(|e| panic!("block failed to run: {e}"))
}

fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Processes in the container other than init, its main `sleep`, the launcher and its fork
/// server, as seen by a fresh listing of `/proc` (no `ps` needed in the image).
fn stray_processes(container: &str) -> Vec<String> {
    // The fork server (a `#proctor-zygote` whose parent is the launcher) is expected, and so is
    // the next block's child it forked ahead (named `proctor-spare` while it waits); its other
    // children run block code and are strays like any other.
    let list = r#"for d in /proc/[0-9]*; do p=${d#/proc/}; [ "$p" = "$$" ] && continue; [ -r "$d/cmdline" ] || continue; pp=$(cut -d' ' -f4 "$d/stat" 2>/dev/null); if tr '\0' ' ' < "$d/cmdline" | grep -q proctor-zygote && tr '\0' ' ' < "/proc/$pp/cmdline" 2>/dev/null | grep -q proctor-launcher; then continue; fi; if [ "$(cat "$d/comm" 2>/dev/null)" = proctor-spare ] && tr '\0' ' ' < "/proc/$pp/cmdline" 2>/dev/null | grep -q proctor-zygote; then continue; fi; printf '%s ' "$p"; tr '\0\n' '  ' < "$d/cmdline"; echo; done"#;
    let (ok, out) = docker(&["exec", container, "sh", "-c", list]);
    assert!(ok, "listing processes failed: {out}");
    out.lines()
        .filter(|l| {
            let args = l.split_once(' ').map(|(_, a)| a.trim()).unwrap_or("");
            !(args.is_empty()
                || args.starts_with("tr ")
                || args.contains("for d in /proc")
                || args.contains("docker-init")
                || args.contains("sleep 2147483647")
                || args.contains("proctor-launcher")
                || args.contains("grep -q proctor-"))
        })
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn hello_world_runs_and_exits_zero() {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let s = session("hello");
    let ran = run(&exec, &s, ws.path(), "print('hello, world')", &policy()).await;
    assert_eq!(ran.outcome.exit_code, 0, "{:?}", ran.outcome);
    assert_eq!(ran.outcome.output, "hello, world\n");
    assert!(!ran.outcome.timed_out && !ran.outcome.truncated && !ran.outcome.oom);
    assert!(matches!(ran.events[0].1, ExecEvent::Started));
    assert_eq!(
        ran.outputs(),
        vec![(StreamKind::Stdout, "hello, world\n".into())]
    );
    // bash and a non-zero exit code, in the same sandbox.
    let req = request(&s, ws.path(), "bash", "echo from bash; exit 3", &policy());
    let ran = run_req(&exec, req, CancellationToken::new()).await.unwrap();
    assert_eq!(
        (ran.outcome.exit_code, ran.outcome.output.as_str()),
        (3, "from bash\n")
    );
    exec.shutdown(&s).await;
}

#[tokio::test]
async fn stdout_and_stderr_stream_in_order_while_the_block_runs() {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let s = session("order");
    let code = "import sys, time\n\
                print('one')\n\
                time.sleep(0.4)\n\
                print('two', file=sys.stderr)\n\
                time.sleep(0.4)\n\
                print('three')\n\
                time.sleep(0.4)\n\
                print('\\x1b[31mfour\\x1b[0m\\x1b]0;title\\x07', file=sys.stderr)\n";
    let ran = run(&exec, &s, ws.path(), code, &policy()).await;
    assert_eq!(
        ran.outputs(),
        vec![
            (StreamKind::Stdout, "one\n".into()),
            (StreamKind::Stderr, "two\n".into()),
            (StreamKind::Stdout, "three\n".into()),
            (StreamKind::Stderr, "four\n".into()),
        ]
    );
    assert_eq!(ran.outcome.output, "one\ntwo\nthree\nfour\n");
    // Streamed live: the first line arrived long before the block finished.
    let first = ran
        .events
        .iter()
        .find(|(_, e)| matches!(e, ExecEvent::Output { .. }))
        .unwrap()
        .0;
    let finished = ran.events.last().unwrap().0;
    assert!(
        finished - first >= Duration::from_millis(900),
        "{:?}",
        finished - first
    );
    exec.shutdown(&s).await;
}

#[tokio::test]
async fn while_true_times_out_within_a_second_of_the_deadline() {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let s = session("timeout");
    let mut p = policy();
    p.timeout_s = 2;
    let t0 = Instant::now();
    let ran = run(
        &exec,
        &s,
        ws.path(),
        "print('spinning', flush=True)\nwhile True: pass",
        &p,
    )
    .await;
    let took = t0.elapsed();
    assert!(ran.outcome.timed_out, "{:?}", ran.outcome);
    assert_eq!(ran.outcome.exit_code, 137);
    assert!(ran.outcome.output.starts_with("spinning\n"));
    assert!(
        ran.outcome.output.contains("timed out after 2 s"),
        "{}",
        ran.outcome.output
    );
    assert!(
        ran.outcome.duration_ms >= 2000 && ran.outcome.duration_ms < 3000,
        "{:?}",
        ran.outcome
    );
    assert!(took < Duration::from_secs(8), "{took:?}");
    let id = exec.container_of(&s).unwrap();
    assert_eq!(stray_processes(&id), Vec::<String>::new());
    // The sandbox keeps working.
    let ran = run(&exec, &s, ws.path(), "print('after')", &p).await;
    assert_eq!(ran.outcome.output, "after\n");
    exec.shutdown(&s).await;
}

#[tokio::test]
async fn double_forked_setsid_sleep_is_killed_at_the_timeout() {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let s = session("dfork");
    let mut p = policy();
    p.timeout_s = 2;
    let code = "import os, time\n\
                if os.fork() == 0:\n\
                \x20   os.setsid()\n\
                \x20   if os.fork() == 0:\n\
                \x20       os.execvp('sleep', ['sleep', '1000'])\n\
                \x20   os._exit(0)\n\
                os.wait()\n\
                print('daemon started', flush=True)\n\
                while True: time.sleep(0.1)\n";
    let ran = run(&exec, &s, ws.path(), code, &p).await;
    assert!(ran.outcome.timed_out, "{:?}", ran.outcome);
    assert!(ran.outcome.output.contains("daemon started"));
    assert!(ran.outcome.duration_ms < 3000, "{:?}", ran.outcome);
    let id = exec.container_of(&s).unwrap();
    assert_eq!(stray_processes(&id), Vec::<String>::new());
    exec.shutdown(&s).await;
}

#[tokio::test]
async fn background_processes_do_not_outlive_a_block_that_exits() {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let s = session("bg");
    let t0 = Instant::now();
    let ran = run(&exec, &s, ws.path(), "import subprocess\nsubprocess.Popen(['sleep', '1000'], start_new_session=True)\nprint('left one behind')", &policy()).await;
    assert_eq!(
        (ran.outcome.exit_code, ran.outcome.output.as_str()),
        (0, "left one behind\n")
    );
    // The leftover held stdout open, yet the block did not wait for it.
    assert!(t0.elapsed() < Duration::from_secs(10));
    let id = exec.container_of(&s).unwrap();
    assert_eq!(stray_processes(&id), Vec::<String>::new());
    exec.shutdown(&s).await;
}

#[tokio::test]
async fn cancel_kills_the_block_and_its_children() {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let s = session("cancel");
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        c2.cancel();
    });
    let code = "import subprocess, time\nsubprocess.Popen(['sleep', '1000'])\nprint('waiting', flush=True)\ntime.sleep(1000)";
    let ran = run_req(
        &exec,
        request(&s, ws.path(), "python", code, &policy()),
        cancel,
    )
    .await
    .unwrap();
    assert!(
        ran.outcome.cancelled && !ran.outcome.timed_out,
        "{:?}",
        ran.outcome
    );
    assert!(
        ran.outcome.output.contains("cancelled"),
        "{}",
        ran.outcome.output
    );
    assert!(ran.outcome.duration_ms < 3000, "{:?}", ran.outcome);
    let id = exec.container_of(&s).unwrap();
    assert_eq!(stray_processes(&id), Vec::<String>::new());
    exec.shutdown(&s).await;
}

#[tokio::test]
async fn fork_bomb_is_contained_and_the_sandbox_recovers() {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let s = session("forkbomb");
    let mut p = policy();
    p.timeout_s = 3;
    p.pids = 64;
    let code = "import os\nprint('boom', flush=True)\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n";
    let ran = run(&exec, &s, ws.path(), code, &p).await;
    assert!(ran.outcome.timed_out, "{:?}", ran.outcome);
    assert!(ran.outcome.duration_ms < 4000, "{:?}", ran.outcome);
    let id = exec.container_of(&s).unwrap();
    assert_eq!(stray_processes(&id), Vec::<String>::new());
    let ran = run(&exec, &s, ws.path(), "print('still here')", &p).await;
    assert_eq!(ran.outcome.output, "still here\n");
    exec.shutdown(&s).await;
}

#[tokio::test]
async fn memory_bomb_is_named_out_of_memory() {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let s = session("oom");
    let mut p = policy();
    p.memory_mb = 128;
    let code = "hog = []\nwhile True:\n    hog.append(bytearray(16 * 1024 * 1024))\n";
    let ran = run(&exec, &s, ws.path(), code, &p).await;
    assert!(ran.outcome.oom, "{:?}", ran.outcome);
    assert_eq!(ran.outcome.exit_code, 137);
    assert!(!ran.outcome.timed_out);
    assert!(
        ran.outcome.output.contains("out of memory"),
        "{}",
        ran.outcome.output
    );
    let ran = run(&exec, &s, ws.path(), "print('recovered')", &p).await;
    assert_eq!(ran.outcome.output, "recovered\n");
    exec.shutdown(&s).await;
}

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gigabyte_output_flood_is_capped_and_memory_stays_bounded() {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let s = session("flood");
    let p = policy();
    // Warm up the sandbox so the baseline includes the client's own buffers.
    run(&exec, &s, ws.path(), "print(1)", &p).await;
    let before = vm_hwm_kib();
    let code =
        "import os\nchunk = b'x' * (1 << 20)\nfor _ in range(1024):\n    os.write(1, chunk)\n";
    let t0 = Instant::now();
    let ran = run(&exec, &s, ws.path(), code, &p).await;
    let took = t0.elapsed();
    let grown_mib = (vm_hwm_kib().saturating_sub(before)) / 1024;
    assert_eq!(
        ran.outcome.exit_code,
        0,
        "{}",
        &ran.outcome.output[ran.outcome.output.len().saturating_sub(300)..]
    );
    assert!(ran.outcome.truncated);
    let kept: usize = ran.outputs().iter().map(|(_, t)| t.len()).sum();
    assert_eq!(kept, 1024 * 1024, "exactly the cap is streamed");
    assert!(
        ran.outcome.output.contains("output truncated"),
        "note missing"
    );
    assert!(
        ran.outcome
            .output
            .contains(&format!("dropped {} bytes", (1u64 << 30) - (1 << 20)))
    );
    assert!(grown_mib < 48, "proctor grew by {grown_mib} MiB");
    assert!(took < Duration::from_secs(30), "{took:?}");
    exec.shutdown(&s).await;
}

/// Runs a probe block and returns its stdout lines as `key=value` pairs.
async fn probe(name: &str, code: &str) -> std::collections::HashMap<String, String> {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let s = session(name);
    let ran = run(&exec, &s, ws.path(), code, &policy()).await;
    exec.shutdown(&s).await;
    assert_eq!(ran.outcome.exit_code, 0, "{}", ran.outcome.output);
    ran.outcome
        .output
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

#[tokio::test]
async fn writes_outside_the_workspace_fail() {
    let code = "import os\n\
                def tryw(p):\n\
                \x20   try:\n\
                \x20       open(p, 'w').write('x'); return 'ok'\n\
                \x20   except OSError as e:\n\
                \x20       return type(e).__name__\n\
                for p in ['/etc/evil', '/evil', '/usr/lib/evil', '/var/evil', '/proctor/evil', '/workspace/fine.txt', '/tmp/scratch']:\n\
                \x20   print(p + '=' + tryw(p))\n\
                open('/tmp/x.sh','w').write('#!/bin/sh\\necho hi\\n'); os.chmod('/tmp/x.sh', 0o755)\n\
                try:\n\
                \x20   os.execv('/tmp/x.sh', ['/tmp/x.sh'])\n\
                except OSError as e:\n\
                \x20   print('exec_tmp=' + type(e).__name__)\n";
    let r = probe("rofs", code).await;
    // proctor's own block files are mounted read-only: the workspace is the only writable mount.
    for p in [
        "/etc/evil",
        "/evil",
        "/usr/lib/evil",
        "/var/evil",
        "/proctor/evil",
    ] {
        assert_ne!(r[p], "ok", "{p} was writable");
    }
    assert_eq!(r["/workspace/fine.txt"], "ok");
    assert_eq!(r["/tmp/scratch"], "ok");
    assert_eq!(r["exec_tmp"], "PermissionError", "/tmp must be noexec");
}

#[tokio::test]
async fn code_runs_as_non_root_without_capabilities_or_new_privileges() {
    let code = "import os\n\
                st = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)\n\
                print('uid=%d' % os.getuid())\n\
                print('euid=%d' % os.geteuid())\n\
                print('CapEff=' + st['CapEff'].strip())\n\
                print('CapBnd=' + st['CapBnd'].strip())\n\
                print('NoNewPrivs=' + st['NoNewPrivs'].strip())\n\
                print('host_env=' + str(sorted(k for k in os.environ if k.startswith(('CARGO', 'RUST', 'NEXTEST', 'DOCKER')))))\n";
    let r = probe("caps", code).await;
    assert_ne!(r["uid"], "0");
    assert_ne!(r["euid"], "0");
    assert_eq!(r["CapEff"], "0000000000000000");
    assert_eq!(r["CapBnd"], "0000000000000000");
    assert_eq!(r["NoNewPrivs"], "1");
    assert_eq!(
        r["host_env"], "[]",
        "host environment leaked into the sandbox"
    );
}

#[tokio::test]
async fn no_network_only_loopback_and_no_route() {
    // Inspect only: nothing is ever sent anywhere.
    let code = "dev = open('/proc/net/dev').read().splitlines()[2:]\n\
                print('ifaces=' + ','.join(sorted(l.split(':')[0].strip() for l in dev)))\n\
                routes = open('/proc/net/route').read().splitlines()[1:]\n\
                print('routes=%d' % len(routes))\n";
    let r = probe("net", code).await;
    assert_eq!(r["ifaces"], "lo");
    assert_eq!(r["routes"], "0");
}

#[tokio::test]
async fn no_docker_socket_inside() {
    let code = "import os\n\
                for p in ['/var/run/docker.sock', '/run/docker.sock', '/run/containerd/containerd.sock']:\n\
                \x20   print(p + '=' + str(os.path.exists(p)))\n\
                print('DOCKER_HOST=' + str('DOCKER_HOST' in os.environ))\n";
    let r = probe("sock", code).await;
    for (k, v) in &r {
        assert_eq!(v, "False", "{k}");
    }
    assert_eq!(r.len(), 4);
}

#[tokio::test]
async fn path_escape_filenames_are_refused_and_nothing_is_written() {
    let exec = DockerExecutor::new().unwrap();
    let parent = tempfile::tempdir().unwrap();
    let ws = parent.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::os::unix::fs::symlink(parent.path(), ws.join("up")).unwrap();
    let s = session("escape");
    for bad in [
        "../escaped.py",
        "/tmp/escaped.py",
        "up/escaped.py",
        "a/../../escaped.py",
    ] {
        let mut req = request(&s, &ws, "python", "print('should not run')", &policy());
        req.filename = Some(bad.into());
        let err = run_req(&exec, req, CancellationToken::new()).await.err();
        let Some(ExecError::BadFilename { filename, why }) = err else {
            panic!("{bad}: expected a refusal, got {err:?}");
        };
        assert_eq!(filename, bad);
        assert!(!why.is_empty());
    }
    assert!(!parent.path().join("escaped.py").exists());
    assert!(!Path::new("/tmp/escaped.py").exists());
    // A good hint lands in the workspace and runs.
    let mut req = request(
        &s,
        &ws,
        "python",
        "print(open(__file__).read().count('x'))",
        &policy(),
    );
    req.filename = Some("pkg/main.py".into());
    let ran = run_req(&exec, req, CancellationToken::new()).await.unwrap();
    assert_eq!(ran.outcome.output, "1\n");
    assert!(ws.join("pkg/main.py").exists());
    exec.shutdown(&s).await;
}

#[tokio::test]
async fn container_removed_mid_session_is_recreated_on_the_same_workspace() {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let s = session("recreate");
    let ran = run(
        &exec,
        &s,
        ws.path(),
        "open('state.txt', 'w').write('kept')\nprint('saved')",
        &policy(),
    )
    .await;
    assert_eq!(ran.outcome.output, "saved\n");
    let first = exec.container_of(&s).unwrap();
    let (ok, out) = docker(&["rm", "-f", &first]);
    assert!(ok, "{out}");
    let ran = run(
        &exec,
        &s,
        ws.path(),
        "print(open('state.txt').read())",
        &policy(),
    )
    .await;
    assert_eq!(
        (ran.outcome.exit_code, ran.outcome.output.as_str()),
        (0, "kept\n")
    );
    let second = exec.container_of(&s).unwrap();
    assert_ne!(first, second);
    exec.shutdown(&s).await;
}

#[tokio::test]
async fn a_launcher_killed_by_a_block_is_replaced_and_the_block_reported() {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let s = session("killlauncher");
    run(&exec, &s, ws.path(), "print('warm')", &policy()).await;
    let code = "import os, signal\nprint('about to kill the launcher', flush=True)\nfor p in os.listdir('/proc'):\n    try:\n        if p.isdigit() and b'proctor-launcher' in open('/proc/%s/cmdline' % p, 'rb').read():\n            os.kill(int(p), signal.SIGKILL)\n    except OSError:\n        pass\nimport time; time.sleep(30)";
    let ran = run(&exec, &s, ws.path(), code, &policy()).await;
    assert!(
        ran.outcome.output.contains("launcher died"),
        "{}",
        ran.outcome.output
    );
    assert_ne!(ran.outcome.exit_code, 0);
    assert!(ran.outcome.duration_ms < 10_000);
    let ran = run(&exec, &s, ws.path(), "print('fine again')", &policy()).await;
    assert_eq!(ran.outcome.output, "fine again\n");
    let id = exec.container_of(&s).unwrap();
    assert_eq!(stray_processes(&id), Vec::<String>::new());
    exec.shutdown(&s).await;
}

#[tokio::test]
async fn a_block_that_leaves_a_process_behind_reports_its_own_exit_code() {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let s = session("leftover-exit");
    let mut p = policy();
    p.cpus = 1.0;
    // A server started in the background (a busy one, and a sleeping one): the block itself
    // exits with its own code, and the child is killed after it.
    for (i, child) in [
        "while True: pass",
        "while True: pass",
        "import time; time.sleep(60)",
    ]
    .iter()
    .cycle()
    .take(12)
    .enumerate()
    {
        let want = (i % 3) as i64;
        let code = format!(
            "import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {child:?}])\nprint('started')\nsys.exit({want})"
        );
        let ran = run(&exec, &s, ws.path(), &code, &p).await;
        assert_eq!(ran.outcome.exit_code, want, "run {i}: {:?}", ran.outcome);
        assert_eq!(ran.outcome.output, "started\n");
    }
    let id = exec.container_of(&s).unwrap();
    assert_eq!(stray_processes(&id), Vec::<String>::new());
    exec.shutdown(&s).await;
}

#[tokio::test]
async fn a_block_that_kills_or_stops_the_fork_server_does_not_reach_the_next_block() {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let s = session("killzygote");
    let ran = run(&exec, &s, ws.path(), "print('first')", &policy()).await;
    assert_eq!(ran.outcome.output, "first\n");
    // The block's parent is the fork server: kill it, then stop its replacement.
    let kill = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint('parent killed')";
    let ran = run(&exec, &s, ws.path(), kill, &policy()).await;
    assert_eq!(ran.outcome.output, "parent killed\n");
    let stop = "import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)\nprint('parent stopped')";
    let ran = run(&exec, &s, ws.path(), stop, &policy()).await;
    assert_eq!(ran.outcome.output, "parent stopped\n");
    // Blocks keep running normally, with their own exit codes.
    for (code, want) in [("print('next')", 0), ("import sys; sys.exit(7)", 7)] {
        let ran = run(&exec, &s, ws.path(), code, &policy()).await;
        assert_eq!(ran.outcome.exit_code, want, "{:?}", ran.outcome);
    }
    let id = exec.container_of(&s).unwrap();
    assert_eq!(stray_processes(&id), Vec::<String>::new());
    exec.shutdown(&s).await;
}

/// The `proctor-spare` processes in the container: the next Python block's child, forked ahead.
fn spares(container: &str) -> Vec<String> {
    let list = r#"for d in /proc/[0-9]*; do [ "$(cat "$d/comm" 2>/dev/null)" = proctor-spare ] && echo "${d#/proc/}"; done; true"#;
    let (ok, out) = docker(&["exec", container, "sh", "-c", list]);
    assert!(ok, "listing processes failed: {out}");
    out.lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn the_next_python_blocks_child_waits_forked_ahead_and_nothing_else_runs_beside_it() {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let s = session("spare");
    let ran = run(
        &exec,
        &s,
        ws.path(),
        "import json\nsecret = 41\nprint('first')",
        &policy(),
    )
    .await;
    assert_eq!(ran.outcome.output, "first\n");
    let id = exec.container_of(&s).unwrap();
    // Made once the block's processes are gone (the launcher does it after reporting the exit).
    let mut waiting = Vec::new();
    for _ in 0..100 {
        waiting = spares(&id);
        if waiting.len() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(waiting.len(), 1, "one child waits for the next block");
    // The next block runs in it, as `python3 FILE` would: a fresh __main__, the interpreter's
    // own name, its own file, none of the previous block's names or imports.
    let probe = "import sys\nprint(sorted(k for k in globals() if not k.startswith('__')))\nprint(open('/proc/self/comm').read().strip())\nprint('json' in sys.modules, sys.argv[0].endswith('.py'))\nsys.exit(3)";
    let ran = run(&exec, &s, ws.path(), probe, &policy()).await;
    assert_eq!(
        ran.outcome.output, "['sys']\npython3\nFalse True\n",
        "{:?}",
        ran.outcome
    );
    assert_eq!(ran.outcome.exit_code, 3);
    // Anything but a Python block drops the waiting child before it starts: no block code runs
    // beside one.
    let mut req = request(
        &s,
        ws.path(),
        "bash",
        "for d in /proc/[0-9]*; do cat $d/comm 2>/dev/null; done | grep -c proctor-spare; true",
        &policy(),
    );
    req.policy.timeout_s = 30;
    let ran = run_req(&exec, req, CancellationToken::new()).await.unwrap();
    assert_eq!(ran.outcome.output.trim(), "0", "{:?}", ran.outcome);
    // And Python blocks go on as before.
    let ran = run(&exec, &s, ws.path(), "print('after')", &policy()).await;
    assert_eq!(ran.outcome.output, "after\n");
    assert_eq!(stray_processes(&id), Vec::<String>::new());
    exec.shutdown(&s).await;
}

#[tokio::test]
async fn missing_image_says_how_to_build_one() {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let mut p = policy();
    p.image = "proctor-test-no-such-image:none".into();
    let mut events = Vec::new();
    let mut stream = exec.run(
        request(&session("noimage"), ws.path(), "python", "print(1)", &p),
        CancellationToken::new(),
    );
    let mut err = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(e) => events.push(e),
            Err(e) => err = Some(e),
        }
    }
    let Some(ExecError::Image(msg)) = err else {
        panic!("{err:?} {events:?}")
    };
    assert!(msg.contains("scripts/build-sandbox-image.sh"), "{msg}");
    assert!(msg.contains("proctor-test-no-such-image:none"));
    let checks = doctor_check("proctor-test-no-such-image:none").await;
    assert!(checks[0].1.is_ok() && checks[1].1.is_ok(), "{checks:?}");
    assert!(
        checks[2]
            .1
            .as_ref()
            .is_err_and(|m| m.contains("build-sandbox-image.sh"))
    );
}

#[tokio::test]
async fn doctor_passes_with_the_sandbox_image() {
    let checks = doctor_check(&image()).await;
    for (name, result) in &checks {
        assert!(result.is_ok(), "{name}: {result:?}");
    }
    assert!(
        checks
            .iter()
            .any(|(n, r)| n == "docker api version" && r.as_ref().unwrap().contains("API 1."))
    );
}

#[tokio::test]
async fn shutdown_removes_the_sandbox_and_orphans_are_swept() {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let s = session("sweep");
    run(&exec, &s, ws.path(), "print(1)", &policy()).await;
    let live = exec.container_of(&s).unwrap();
    // An orphan: labelled by a proctor process that no longer exists.
    let orphan_session = session("orphan");
    let (ok, orphan) = docker(&[
        "run",
        "-d",
        "--label",
        &format!("proctor.session={orphan_session}"),
        "--label",
        "proctor.owner=no-such-boot:1:1",
        "--network",
        "none",
        &image(),
        "sleep",
        "300",
    ]);
    assert!(ok, "{orphan}");
    let orphan = orphan.trim().to_owned();
    let removed = sweep_orphans(&[]).await.unwrap();
    assert!(removed.iter().any(|n| !n.is_empty()), "{removed:?}");
    assert!(!docker(&["inspect", &orphan]).0, "orphan still there");
    assert!(
        docker(&["inspect", &live]).0,
        "a live session's sandbox was swept"
    );
    exec.shutdown(&s).await;
    assert!(
        !docker(&["inspect", &live]).0,
        "shutdown left the container"
    );
    // Resume: a new container on the same workspace.
    let ran = run(&exec, &s, ws.path(), "print('resumed')", &policy()).await;
    assert_eq!(ran.outcome.output, "resumed\n");
    let again = exec.container_of(&s).unwrap();
    drop(exec);
    assert!(
        !docker(&["inspect", &again]).0,
        "dropping the executor left the container"
    );
}

#[tokio::test]
async fn exec_per_block_fallback_runs_and_kills_too() {
    let exec = DockerExecutor::new().unwrap().with_exec_per_block();
    let ws = tempfile::tempdir().unwrap();
    let s = session("fallback");
    let ran = run(
        &exec,
        &s,
        ws.path(),
        "import sys, time\nprint('out')\ntime.sleep(0.2)\nprint('err', file=sys.stderr)",
        &policy(),
    )
    .await;
    assert_eq!(ran.outcome.exit_code, 0);
    assert_eq!(ran.outcome.output, "out\nerr\n");
    let mut p = policy();
    p.timeout_s = 2;
    let code = "import subprocess\nsubprocess.Popen(['sleep', '1000'], start_new_session=True)\nwhile True: pass";
    let ran = run(&exec, &s, ws.path(), code, &p).await;
    assert!(ran.outcome.timed_out, "{:?}", ran.outcome);
    assert!(ran.outcome.duration_ms < 4000, "{:?}", ran.outcome);
    let id = exec.container_of(&s).unwrap();
    assert_eq!(stray_processes(&id), Vec::<String>::new());
    exec.shutdown(&s).await;
}

#[tokio::test]
async fn network_for_one_block_uses_a_separate_container() {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let s = session("netblock");
    let code = "dev = open('/proc/net/dev').read().splitlines()[2:]\nprint(','.join(sorted(l.split(':')[0].strip() for l in dev)))";
    let mut req = request(&s, ws.path(), "python", code, &policy());
    req.allow_network = true;
    let ran = run_req(&exec, req, CancellationToken::new()).await.unwrap();
    assert!(
        ran.outcome.output.contains("eth0"),
        "{}",
        ran.outcome.output
    );
    // The session's own sandbox stays offline.
    let ran = run(&exec, &s, ws.path(), code, &policy()).await;
    assert_eq!(ran.outcome.output, "lo\n");
    exec.shutdown(&s).await;
}

#[tokio::test]
async fn python_blocks_behave_like_python3_file_py_every_time() {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let s = session("semantics");
    std::fs::write(ws.path().join("helper.py"), "VALUE = 41\n").unwrap();
    let probe = "import sys, os, helper\n\
                 print(__name__, __file__, sys.argv, sys.path[0], helper.VALUE + 1)\n\
                 print(sorted(k for k in globals() if not k.startswith('__')))\n";
    let mut outputs = Vec::new();
    // The first block starts a fresh interpreter; later ones may use one started in advance.
    for _ in 0..3 {
        let mut req = request(&s, ws.path(), "python", probe, &policy());
        req.filename = Some("probe.py".into());
        let ran = run_req(&exec, req, CancellationToken::new()).await.unwrap();
        assert_eq!(ran.outcome.exit_code, 0, "{}", ran.outcome.output);
        outputs.push(ran.outcome.output);
    }
    assert_eq!(
        outputs[0],
        "__main__ /workspace/probe.py ['/workspace/probe.py'] /workspace 42\n['helper', 'os', 'sys']\n"
    );
    assert!(outputs.iter().all(|o| o == &outputs[0]), "{outputs:?}");
    // Unnamed blocks run as if they were in the workspace: its modules import, cold and warm.
    let unnamed = "import sys, helper\nprint(sys.path[0], helper.VALUE + 1, sys.argv[0].startswith('/proctor/tmp_code_'))\n";
    for _ in 0..3 {
        let ran = run(&exec, &s, ws.path(), unnamed, &policy()).await;
        assert_eq!(ran.outcome.output, "/workspace 42 True\n");
    }
    let listed: Vec<String> = std::fs::read_dir(ws.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tmp_code_"))
        .collect();
    assert_eq!(
        listed,
        Vec::<String>::new(),
        "proctor's files landed in the workspace"
    );
    let mut tracebacks = Vec::new();
    for _ in 0..2 {
        let ran = run(
            &exec,
            &s,
            ws.path(),
            "def f():\n    raise ValueError('bad')\nf()\n",
            &policy(),
        )
        .await;
        assert_eq!(ran.outcome.exit_code, 1);
        tracebacks.push(ran.outcome.output);
    }
    assert_eq!(tracebacks[0], tracebacks[1]);
    let lines: Vec<&str> = tracebacks[0].lines().collect();
    assert_eq!(lines[0], "Traceback (most recent call last):");
    // An unnamed block's file is proctor's, outside the workspace.
    assert!(
        lines[1].starts_with("  File \"/proctor/tmp_code_"),
        "{}",
        tracebacks[0]
    );
    assert_eq!(*lines.last().unwrap(), "ValueError: bad");
    let ran = run(&exec, &s, ws.path(), "import sys\nsys.exit(5)", &policy()).await;
    assert_eq!(ran.outcome.exit_code, 5);
    let ran = run(&exec, &s, ws.path(), "print('unclosed'", &policy()).await;
    assert_eq!(ran.outcome.exit_code, 1);
    assert!(
        ran.outcome.output.contains("SyntaxError"),
        "{}",
        ran.outcome.output
    );
    assert!(
        !ran.outcome.output.contains("Traceback"),
        "{}",
        ran.outcome.output
    );
    // What a fresh `python3 file.py` has and does, compared with a real one in the same sandbox:
    // loaded modules, signal dispositions, atexit handlers and non-daemon threads at exit, a
    // workspace module shadowing a stdlib one that start-up does not load, its own process group.
    std::fs::write(ws.path().join("json.py"), "SHADOW = True\n").unwrap();
    let state = "import sys, signal, os\n\
                 mods = sorted(m for m in sys.modules if m not in ('__main__',))\n\
                 sigs = [str(signal.getsignal(n)) for n in (signal.SIGINT, signal.SIGPIPE, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD)]\n\
                 import json\n\
                 print(len(mods), 'socket' in mods, 'ctypes' in mods, sigs, getattr(json, 'SHADOW', False), os.getpgid(0) == os.getpid())\n";
    std::fs::write(ws.path().join("state.py"), state).unwrap();
    let reference = run(
        &exec,
        &s,
        ws.path(),
        "import subprocess, sys\nsys.stdout.write(subprocess.run(['python3', 'state.py'], capture_output=True, text=True).stdout)",
        &policy(),
    )
    .await;
    assert!(
        reference.outcome.output.contains("False False"),
        "{}",
        reference.outcome.output
    );
    for _ in 0..2 {
        let mut req = request(&s, ws.path(), "python", state, &policy());
        req.filename = Some("state2.py".into());
        let ran = run_req(&exec, req, CancellationToken::new()).await.unwrap();
        // The reference ran as a child of a block: same interpreter, so the same module set,
        // except that its parent's process group is its own (it was not setsid'd): compare the rest.
        let strip = |o: &str| {
            o.rsplit_once(' ')
                .map(|(a, _)| a.to_string())
                .unwrap_or_default()
        };
        assert_eq!(strip(&ran.outcome.output), strip(&reference.outcome.output));
        assert!(
            ran.outcome.output.trim_end().ends_with("True"),
            "{}",
            ran.outcome.output
        );
    }
    let exit_work = "import atexit, threading, time\n\
                     atexit.register(lambda: print('atexit ran', flush=True))\n\
                     threading.Thread(target=lambda: (time.sleep(0.2), print('thread done', flush=True))).start()\n\
                     print('main done', flush=True)\n";
    let ran = run(&exec, &s, ws.path(), exit_work, &policy()).await;
    assert_eq!(ran.outcome.output, "main done\nthread done\natexit ran\n");
    // Objects are finalized at exit: a file never closed is flushed, `__del__` runs, and
    // `sys.exit` with a message prints it and exits 1.
    let finalize = "f = open('unclosed.txt', 'w')\nf.write('all of it')\n\
                    class Bye:\n    def __del__(self):\n        print('bye', flush=True)\n\
                    keep = Bye()\nprint('end of block', flush=True)\n";
    let ran = run(&exec, &s, ws.path(), finalize, &policy()).await;
    assert_eq!(ran.outcome.output, "end of block\nbye\n");
    assert_eq!(
        std::fs::read_to_string(ws.path().join("unclosed.txt")).unwrap(),
        "all of it"
    );
    let ran = run(
        &exec,
        &s,
        ws.path(),
        "import sys\nsys.exit('no config found')",
        &policy(),
    )
    .await;
    assert_eq!(
        (ran.outcome.exit_code, ran.outcome.output.as_str()),
        (1, "no config found\n")
    );
    let ran = run(&exec, &s, ws.path(), "import sys\nsys.exit(300)", &policy()).await;
    assert_eq!(ran.outcome.exit_code, 300 & 0xff);
    exec.shutdown(&s).await;
}

#[tokio::test]
async fn an_image_without_python_runs_blocks_with_one_exec_each() {
    // Named after the base image, so a different PROCTOR_SANDBOX_IMAGE gets its own.
    let base: String = image()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let tag = &format!("proctor-test-nopython:{base}");
    if !docker(&["image", "inspect", tag]).0 {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Dockerfile"),
            format!(
                "FROM {}\nRUN rm -f /usr/bin/python3* /usr/bin/python /usr/local/bin/python3* \
                 /usr/local/bin/python\n",
                image()
            ),
        )
        .unwrap();
        let (ok, out) = docker(&["build", "-q", "-t", tag, &dir.path().display().to_string()]);
        assert!(ok, "{out}");
    }
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let s = session("nopython");
    let mut p = policy();
    p.image = tag.into();
    p.timeout_s = 2;
    let req = request(&s, ws.path(), "bash", "echo hi from bash; id -u", &p);
    let ran = run_req(&exec, req, CancellationToken::new()).await.unwrap();
    assert_eq!(ran.outcome.exit_code, 0, "{}", ran.outcome.output);
    assert!(ran.outcome.output.starts_with("hi from bash\n"));
    assert_ne!(ran.outcome.output.lines().nth(1), Some("0"));
    let req = request(
        &s,
        ws.path(),
        "sh",
        "setsid sleep 1000 &\nwhile :; do :; done",
        &p,
    );
    let ran = run_req(&exec, req, CancellationToken::new()).await.unwrap();
    assert!(ran.outcome.timed_out, "{:?}", ran.outcome);
    assert!(ran.outcome.duration_ms < 3500, "{:?}", ran.outcome);
    let id = exec.container_of(&s).unwrap();
    assert_eq!(stray_processes(&id), Vec::<String>::new());
    let req = request(&s, ws.path(), "python", "print(1)", &p);
    let ran = run_req(&exec, req, CancellationToken::new()).await.unwrap();
    // The interpreter is missing: Docker's own message says so.
    assert!(
        matches!(ran.outcome.exit_code, 126 | 127),
        "{:?}",
        ran.outcome
    );
    assert!(
        ran.outcome.output.contains("python3"),
        "{}",
        ran.outcome.output
    );
    exec.shutdown(&s).await;
}

#[tokio::test]
async fn a_workspace_path_with_colons_and_commas_is_mounted() {
    let exec = DockerExecutor::new().unwrap();
    let parent = tempfile::tempdir().unwrap();
    let ws = parent.path().join("odd:name,with comma");
    let s = session("oddpath");
    let ran = run(
        &exec,
        &s,
        &ws,
        "open('made-here.txt', 'w').write('x')\nprint('ok')",
        &policy(),
    )
    .await;
    assert_eq!(
        (ran.outcome.exit_code, ran.outcome.output.as_str()),
        (0, "ok\n")
    );
    assert!(ws.join("made-here.txt").exists());
    exec.shutdown(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_of_one_session_run_one_at_a_time() {
    let exec = std::sync::Arc::new(DockerExecutor::new().unwrap());
    let ws = tempfile::tempdir().unwrap();
    let s = session("serial");
    run(&exec, &s, ws.path(), "print('warm')", &policy()).await;
    let code = "import os, time\n\
                open('log.txt', 'a').write('start\\n')\n\
                time.sleep(0.5)\n\
                open('log.txt', 'a').write('end\\n')\n\
                print('done')";
    let p = policy();
    let t0 = Instant::now();
    let (a, b) = tokio::join!(
        run(&exec, &s, ws.path(), code, &p),
        run(&exec, &s, ws.path(), code, &p)
    );
    assert_eq!(
        (a.outcome.output.as_str(), b.outcome.output.as_str()),
        ("done\n", "done\n")
    );
    assert!(t0.elapsed() >= Duration::from_millis(1000));
    let log = std::fs::read_to_string(ws.path().join("log.txt")).unwrap();
    assert_eq!(log, "start\nend\nstart\nend\n");
    exec.shutdown(&s).await;
}

/// The name proctor gives an unnamed python block (`tmp_code_<first 8 bytes of sha256>.py`).
fn unnamed_block_name(code: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(code.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("tmp_code_{hex}.py")
}

#[tokio::test]
async fn a_planted_symlink_never_makes_proctor_write_outside_the_workspace() {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim.txt");
    std::fs::write(&victim, "original").unwrap();
    let s = session("symlink-plant");
    let next = "print('second block ran')";
    // Block 1 plants links where proctor will write: the next unnamed block's file, and a named one.
    let plant = format!(
        "import os\nos.symlink({v:?}, {a:?})\nos.symlink({v:?}, 'named.py')\nos.symlink({d:?}, 'dir')\nprint('planted')",
        v = victim.to_str().unwrap(),
        a = unnamed_block_name(next),
        d = outside.path().to_str().unwrap(),
    );
    let ran = run(&exec, &s, ws.path(), &plant, &policy()).await;
    assert_eq!(ran.outcome.output, "planted\n");
    let ran = run(&exec, &s, ws.path(), next, &policy()).await;
    assert_eq!(ran.outcome.output, "second block ran\n");
    for name in ["named.py", "dir/x.py"] {
        let mut req = request(&s, ws.path(), "python", "print('x')", &policy());
        req.filename = Some(name.into());
        let err = run_req(&exec, req, CancellationToken::new()).await.err();
        assert!(
            matches!(err, Some(ExecError::BadFilename { .. })),
            "{name}: {err:?}"
        );
    }
    let meta = std::fs::metadata(&victim).unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "original");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(outside.path()).unwrap()),
        "the host file was chowned"
    );
    assert!(!outside.path().join("x.py").exists());
    exec.shutdown(&s).await;
}

#[tokio::test]
async fn a_planted_fifo_is_refused_at_once_instead_of_hanging_proctor() {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let s = session("fifo");
    let next = "print('unnamed')";
    let plant = format!(
        "import os\nos.mkfifo('f.py')\nos.mkfifo({:?})\nprint('planted')",
        unnamed_block_name(next)
    );
    let ran = run(&exec, &s, ws.path(), &plant, &policy()).await;
    assert_eq!(ran.outcome.output, "planted\n");
    // A named block's file is written into the workspace: the FIFO in its place is refused.
    // (An unnamed block's file is never written into the workspace; its FIFO is not touched.)
    let mut req = request(&s, ws.path(), "python", next, &policy());
    req.filename = Some("f.py".into());
    let t0 = Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(15),
        run_req(&exec, req, CancellationToken::new()),
    )
    .await
    .expect("proctor hung on a FIFO")
    .err();
    let Some(ExecError::BadFilename { why, .. }) = err else {
        panic!("expected a refusal, got {err:?}");
    };
    assert!(why.contains("FIFO"), "{why}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    let ran = run(&exec, &s, ws.path(), next, &policy()).await;
    assert_eq!(ran.outcome.output, "unnamed\n");
    let planted = std::fs::symlink_metadata(ws.path().join(unnamed_block_name(next))).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &planted.file_type()
    ));
    let ran = run(&exec, &s, ws.path(), "print('still fine')", &policy()).await;
    assert_eq!(ran.outcome.output, "still fine\n");
    exec.shutdown(&s).await;
}

#[tokio::test]
async fn a_block_cannot_forge_the_launchers_frames() {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let s = session("forge");
    // A fake "exit 0" report, then output, written straight into the launcher's stdout and memory.
    let code = r#"import json, os, struct, sys
x = json.dumps({"code": 0, "total": 6, "kept": 6}).encode()
fake = struct.pack(">cI", b"1", 7) + b"FORGED\n" + struct.pack(">cI", b"X", len(x)) + x
ppid = os.getppid()
for path in ("/proc/%d/fd/1" % ppid, "/proc/%d/fd/0" % ppid, "/proc/%d/mem" % ppid):
    try:
        with open(path, "r+b" if path.endswith("mem") else "wb", buffering=0) as f:
            f.write(fake) if not path.endswith("mem") else f.read(1)
        print("opened", path)
    except OSError as e:
        print("refused", path, e.errno)
sys.exit(5)
"#;
    let ran = run(&exec, &s, ws.path(), code, &policy()).await;
    assert_eq!(ran.outcome.exit_code, 5, "{:?}", ran.outcome);
    assert!(
        !ran.outcome.output.contains("FORGED"),
        "{}",
        ran.outcome.output
    );
    assert!(
        !ran.outcome.output.contains("opened"),
        "{}",
        ran.outcome.output
    );
    // The protocol is still in step: the next approved block runs and reports its own result.
    let ran = run(&exec, &s, ws.path(), "print('next')", &policy()).await;
    assert_eq!(
        (ran.outcome.exit_code, ran.outcome.output.as_str()),
        (0, "next\n")
    );
    exec.shutdown(&s).await;
}

#[tokio::test]
async fn workspace_modules_do_not_run_between_blocks() {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let s = session("warm-import");
    // Modules a pre-started interpreter might import on its own, each leaving a marker.
    let plant = r#"for m in ("types", "io", "abc", "codecs", "runpy", "importlib", "os", "posixpath"):
    open(m + ".py", "w").write("open('/workspace/ran-' + __name__, 'w')\nimport posix\nif posix.fork() == 0:\n    posix.setsid()\n    posix.execv('/bin/sleep', ['sleep', '1000'])\n")
print('planted')"#;
    let ran = run(&exec, &s, ws.path(), plant, &policy()).await;
    assert_eq!(ran.outcome.output, "planted\n");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ran = run(&exec, &s, ws.path(), "print('second')", &policy()).await;
    assert_eq!(ran.outcome.output, "second\n");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ran_files: Vec<String> = std::fs::read_dir(ws.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ran-"))
        .collect();
    assert_eq!(ran_files, Vec::<String>::new());
    let id = exec.container_of(&s).unwrap();
    assert_eq!(stray_processes(&id), Vec::<String>::new());
    exec.shutdown(&s).await;
}

/// An OOM-killed child is named out of memory; a plain SIGKILL is not (launcher and fallback).
async fn oom_is_named_only_when_the_oom_killer_acted(exec: DockerExecutor, name: &str) {
    let ws = tempfile::tempdir().unwrap();
    let s = session(name);
    let mut p = policy();
    p.memory_mb = 128;
    let bomb = "python3 -c 'hog = []\nwhile True: hog.append(bytearray(16 << 20))'\necho \"child exit $?\"\nexit 137";
    let ran = run_req(
        &exec,
        request(&s, ws.path(), "bash", bomb, &p),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(ran.outcome.oom, "{:?}", ran.outcome);
    assert!(
        ran.outcome.output.contains("child exit 137")
            && ran.outcome.output.contains("out of memory"),
        "{}",
        ran.outcome.output
    );
    let ran = run_req(
        &exec,
        request(&s, ws.path(), "bash", "echo before; kill -9 $$", &p),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(!ran.outcome.oom, "{:?}", ran.outcome);
    assert_eq!(ran.outcome.exit_code, 137);
    assert_eq!(ran.outcome.output, "before\n[proctor: killed (SIGKILL)]\n");
    exec.shutdown(&s).await;
}

#[tokio::test]
async fn oom_of_a_child_is_named_and_a_plain_sigkill_is_not() {
    oom_is_named_only_when_the_oom_killer_acted(DockerExecutor::new().unwrap(), "oom-child").await;
}

#[tokio::test]
async fn oom_naming_in_the_exec_per_block_fallback() {
    oom_is_named_only_when_the_oom_killer_acted(
        DockerExecutor::new().unwrap().with_exec_per_block(),
        "oom-child-fallback",
    )
    .await;
}

#[tokio::test]
async fn blocks_run_at_the_lowest_cpu_priority_and_a_cpu_hog_still_stops_on_time() {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let s = session("nice");
    let mut p = policy();
    p.cpus = 0.5;
    p.timeout_s = 1;
    // Twice: the second python block runs in the pre-started interpreter.
    for _ in 0..2 {
        let ran = run(&exec, &s, ws.path(), "import os\nprint(os.nice(0))", &p).await;
        assert_eq!(ran.outcome.output, "19\n");
    }
    let req = request(&s, ws.path(), "bash", "nice", &p);
    let ran = run_req(&exec, req, CancellationToken::new()).await.unwrap();
    assert_eq!(ran.outcome.output, "19\n");
    let hog =
        "import os\nfor _ in range(16):\n    if os.fork() == 0:\n        break\nwhile True: pass";
    let ran = run(&exec, &s, ws.path(), hog, &p).await;
    assert!(ran.outcome.timed_out, "{:?}", ran.outcome);
    assert!(ran.outcome.duration_ms < 2500, "{:?}", ran.outcome);
    let id = exec.container_of(&s).unwrap();
    assert_eq!(stray_processes(&id), Vec::<String>::new());
    let ran = run(&exec, &s, ws.path(), "print('after')", &p).await;
    assert_eq!(ran.outcome.output, "after\n");
    exec.shutdown(&s).await;
}

#[tokio::test]
async fn a_block_that_stops_the_launcher_is_still_killed_at_the_deadline() {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let s = session("stop-launcher");
    let mut p = policy();
    p.timeout_s = 1;
    let ran = run(&exec, &s, ws.path(), "print('warm up')", &p).await;
    assert_eq!(ran.outcome.output, "warm up\n");
    let id = exec.container_of(&s).unwrap();
    let code = "import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)\nwhile True: pass";
    let ran = run(&exec, &s, ws.path(), code, &p).await;
    assert!(ran.outcome.timed_out, "{:?}", ran.outcome);
    assert!(ran.outcome.duration_ms < 2500, "{:?}", ran.outcome);
    assert_eq!(stray_processes(&id), Vec::<String>::new());
    let ran = run(&exec, &s, ws.path(), "print('after')", &p).await;
    assert_eq!(ran.outcome.output, "after\n");
    // Same container: the host-side kill replaced only the launcher.
    assert_eq!(exec.container_of(&s).unwrap(), id);
    exec.shutdown(&s).await;
}
