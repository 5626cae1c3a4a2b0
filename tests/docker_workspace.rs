//! Working on the user's own directory, against the real Docker engine: what each block changed
//! (exact lists), who owns what blocks write, the workspace disk limit, and proctor's own files
//! staying out of the user's directory. Image: PROCTOR_SANDBOX_IMAGE or `proctor-sandbox:bookworm`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use futures::StreamExt;
use proctor::config::ExecutorConfig;
use proctor::executor::{DockerExecutor, ExecError, ExecEvent, ExecOutcome, ExecRequest, Executor};
use proctor::protocol::FileChange;
use tokio_util::sync::CancellationToken;

fn image() -> String {
    std::env::var("PROCTOR_SANDBOX_IMAGE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "proctor-sandbox:bookworm".into())
}

fn session(name: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("test-ws-{name}-{}-{n:x}", std::process::id())
}

fn request(session: &str, ws: &Path, code: &str, user: bool) -> ExecRequest {
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
        user_workspace: user,
    }
}

async fn run(exec: &DockerExecutor, req: ExecRequest) -> Result<ExecOutcome, ExecError> {
    let mut stream = exec.run(req, CancellationToken::new());
    while let Some(item) = stream.next().await {
        if let ExecEvent::Finished(o) = item? {
            return Ok(o);
        }
    }
    panic!("no result");
}

fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
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
}

fn chown_tree(dir: &Path, uid: u32, gid: u32) {
    let ok = std::process::Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(dir)
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn change(
    path: &str,
    before: Option<u64>,
    after: Option<u64>,
    lines: Option<(u64, u64)>,
) -> FileChange {
    FileChange {
        path: path.into(),
        size_before: before,
        size_after: after,
        lines_added: lines.map(|l| l.0),
        lines_removed: lines.map(|l| l.1),
    }
}

#[tokio::test]
async fn a_block_that_creates_edits_and_deletes_files_yields_the_exact_lists() {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let p = ws.path();
    std::fs::write(p.join("main.py"), "a = 1\nb = 2\nc = 3\n").unwrap();
    std::fs::write(p.join("notes.txt"), "one\ntwo\n").unwrap();
    std::fs::write(p.join("same.txt"), "unchanged\n").unwrap();
    std::fs::create_dir(p.join("data")).unwrap();
    std::fs::write(p.join("data/blob.bin"), [0u8, 1, 2]).unwrap();
    chown_tree(p, 4242, 4242);
    let s = session("lists");
    let code = "import os\n\
                open('main.py', 'w').write('a = 1\\nb = 20\\nc = 3\\nd = 4\\n')\n\
                os.remove('notes.txt')\n\
                os.makedirs('out', exist_ok=True)\n\
                open('out/result.csv', 'w').write('x,y\\n1,2\\n3,4\\n')\n\
                open('data/blob.bin', 'ab').write(bytes([0, 255]))\n\
                open('same.txt', 'w').write('unchanged\\n')\n\
                print('done')\n";
    let o = run(&exec, request(&s, p, code, true)).await.unwrap();
    assert_eq!((o.exit_code, o.output.as_str()), (0, "done\n"));
    let d = o.changes.expect("changes computed");
    assert_eq!(
        d.created,
        vec![change("out/result.csv", None, Some(12), Some((3, 0)))]
    );
    assert_eq!(
        d.modified,
        vec![
            change("data/blob.bin", Some(3), Some(5), None),
            change("main.py", Some(18), Some(25), Some((2, 1))),
        ]
    );
    assert_eq!(
        d.deleted,
        vec![change("notes.txt", Some(8), None, Some((0, 2)))]
    );
    assert!(d.notes.is_empty(), "{:?}", d.notes);

    // A named block's file is what the hint asked for: it is listed; an unnamed block leaves
    // nothing of proctor's in the workspace.
    let mut req = request(&s, p, "print('named')", true);
    req.filename = Some("tools/run.py".into());
    let o = run(&exec, req).await.unwrap();
    let d = o.changes.unwrap();
    assert_eq!(
        d.created,
        vec![change("tools/run.py", None, Some(14), Some((1, 0)))]
    );
    assert!(d.modified.is_empty() && d.deleted.is_empty());
    let o = run(&exec, request(&s, p, "print('nothing changes')", true))
        .await
        .unwrap();
    assert!(o.changes.unwrap().no_file_changed());
    let names: Vec<String> = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("tmp_code_")),
        "{names:?}"
    );
    exec.shutdown(&s).await;
}

#[tokio::test]
async fn git_ignored_files_are_not_listed_and_git_changes_are_summarised() {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let p = ws.path();
    git(p, &["init", "-q"]);
    std::fs::write(p.join(".gitignore"), "*.log\nbuild/\n").unwrap();
    std::fs::write(p.join("app.py"), "print(1)\n").unwrap();
    git(p, &["add", "-A"]);
    git(p, &["commit", "-q", "-m", "start"]);
    chown_tree(p, 4242, 4242);
    let s = session("ignored");
    let code = "import os, subprocess\n\
                open('debug.log', 'w').write('noise')\n\
                os.makedirs('build/x', exist_ok=True)\n\
                open('build/x/out.o', 'w').write('obj')\n\
                open('app.py', 'a').write('print(2)\\n')\n";
    let o = run(&exec, request(&s, p, code, true)).await.unwrap();
    assert_eq!(o.exit_code, 0, "{}", o.output);
    let d = o.changes.unwrap();
    assert!(d.created.is_empty(), "{:?}", d.created);
    assert_eq!(
        d.modified,
        vec![change("app.py", Some(9), Some(18), Some((1, 0)))]
    );
    assert_eq!(
        d.notes
            .iter()
            .map(|n| (n.path.as_str(), n.note.as_str()))
            .collect::<Vec<_>>(),
        [("build", "ignored by git (not walked): created")]
    );
    exec.shutdown(&s).await;
}

#[tokio::test]
async fn a_read_write_workspace_keeps_its_owner_and_new_files_belong_to_it() {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let p = ws.path();
    git(p, &["init", "-q"]);
    std::fs::write(p.join("README.md"), "# project\n").unwrap();
    git(p, &["add", "-A"]);
    git(p, &["commit", "-q", "-m", "start"]);
    chown_tree(p, 4242, 4242);
    let s = session("owner");
    let code = "import os\n\
                os.makedirs('src/pkg', exist_ok=True)\n\
                open('src/pkg/mod.py', 'w').write('x = 1\\n')\n\
                open('README.md', 'a').write('more\\n')\n\
                print(os.getuid(), os.getgid())\n";
    let o = run(&exec, request(&s, p, code, true)).await.unwrap();
    assert_eq!(o.output, "4242 4242\n");
    let mut req = request(&s, p, "print('hinted')", true);
    req.filename = Some("scripts/hint.py".into());
    let o = run(&exec, req).await.unwrap();
    assert_eq!(o.output, "hinted\n");
    for rel in [
        "",
        "src",
        "src/pkg",
        "src/pkg/mod.py",
        "README.md",
        "scripts",
        "scripts/hint.py",
    ] {
        let m = std::fs::symlink_metadata(p.join(rel)).unwrap();
        assert_eq!((m.uid(), m.gid()), (4242, 4242), "{rel}");
    }
    exec.shutdown(&s).await;

    // A user's directory owned by root is refused: blocks never run as root, and proctor never
    // takes the directory over.
    let rooted = tempfile::tempdir().unwrap();
    let s = session("rooted");
    let err = run(&exec, request(&s, rooted.path(), "print(1)", true))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("owned by root"), "{err}");
    assert_eq!(std::fs::metadata(rooted.path()).unwrap().uid(), 0);
    exec.shutdown(&s).await;
}

#[tokio::test]
async fn a_block_filling_the_workspace_is_stopped_at_the_limit() {
    let exec = DockerExecutor::new().unwrap();
    let ws = tempfile::tempdir().unwrap();
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
        false,
    );
    req.policy.workspace_limit_mb = 16;
    let o = run(&exec, req).await.unwrap();
    assert!(o.workspace_limit_exceeded, "{o:?}");
    assert!(!o.timed_out && !o.cancelled, "{o:?}");
    assert!(!o.output.contains("wrote it all"), "{}", o.output);
    assert!(
        o.output
            .contains("past its limit of 16 MiB (workspace_limit_mb)"),
        "{}",
        o.output
    );
    let size = std::fs::metadata(ws.path().join("fill.bin")).unwrap().len();
    assert!(size > 16 << 20 && size < 4096 << 20, "{size}");
    // The next block runs normally.
    let o = run(
        &exec,
        request(
            &s,
            ws.path(),
            "import os; os.remove('fill.bin'); print('ok')",
            false,
        ),
    )
    .await
    .unwrap();
    assert_eq!(o.output, "ok\n");
    assert!(!o.workspace_limit_exceeded);
    exec.shutdown(&s).await;
}
