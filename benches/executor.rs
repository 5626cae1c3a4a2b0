//! Per-block latency of proctor's Docker executor: the cold first block (container + launcher; median
//! of 5 fresh sessions), then
//! N warm blocks of `print(1)` through the launcher and through one `docker exec` per block.
//! Run by scripts/bench.sh; prints one `key value` line per result (milliseconds).
//! Env: PROCTOR_SANDBOX_IMAGE (default proctor-sandbox:bookworm), BENCH_BLOCKS (default 50),
//! BENCH_ENGINE_LABEL (when set: only the launcher series, its keys named `proctor_launcher_LABEL_…`;
//! scripts/bench.sh sets it with DOCKER_HOST pointing at a TLS relay, to compare with the local
//! socket), BENCH_WORKSPACE_FILES (default 0: an empty workspace; else that many small files, which
//! a remote engine pushes once and lists after every block).

use std::time::{Duration, Instant};

use futures::StreamExt;
use proctor::config::ExecutorConfig;
use proctor::executor::{DockerExecutor, ExecEvent, ExecRequest, Executor};
use tokio_util::sync::CancellationToken;

async fn block(
    exec: &DockerExecutor,
    session: &str,
    ws: &std::path::Path,
    image: &str,
) -> Duration {
    let req = ExecRequest {
        session: session.into(),
        workspace: ws.to_path_buf(),
        language: "python".into(),
        code: "print(1)".into(),
        filename: None,
        policy: ExecutorConfig {
            image: image.into(),
            ..Default::default()
        },
        allow_network: false,
        user_workspace: false,
    };
    let t0 = Instant::now();
    let mut stream = exec.run(req, CancellationToken::new());
    let mut ok = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(ExecEvent::Finished(o)) => ok = o.exit_code == 0 && o.output == "1\n",
            Ok(_) => {}
            Err(e) => panic!("block failed: {e}"),
        }
    }
    assert!(ok, "print(1) did not print 1");
    t0.elapsed()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn stats(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let mean = v.iter().map(|d| ms(*d)).sum::<f64>() / v.len() as f64;
    let median = ms(v[v.len() / 2]);
    let p95 = ms(v[(v.len() * 95 / 100).min(v.len() - 1)]);
    println!("{name}_mean_ms {mean:.2}");
    println!("{name}_median_ms {median:.2}");
    println!("{name}_p95_ms {p95:.2}");
}

async fn series(exec: &DockerExecutor, label: &str, image: &str, n: usize) {
    let ws = tempfile::tempdir().expect("tempdir");
    // A workspace of that many small files (in directories of 100): what a remote engine lists
    // after every block.
    let files: usize = std::env::var("BENCH_WORKSPACE_FILES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    for i in 0..files {
        let dir = ws.path().join(format!("d{}", i / 100));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join(format!("f{i}.txt")), format!("line {i}\n")).expect("file");
    }
    // Cold: the first block of a fresh session (container + launcher + block), 5 sessions.
    let mut cold = Vec::new();
    for i in 0..5 {
        let session = format!("bench-{label}-cold{i}-{}", std::process::id());
        cold.push(block(exec, &session, ws.path(), image).await);
        exec.shutdown(&session).await;
    }
    cold.sort();
    println!(
        "{label}_cold_first_block_ms {:.2}",
        ms(cold[cold.len() / 2])
    );
    let session = format!("bench-{label}-{}", std::process::id());
    block(exec, &session, ws.path(), image).await;
    let mut warm = Vec::with_capacity(n);
    for _ in 0..n {
        warm.push(block(exec, &session, ws.path(), image).await);
    }
    stats(label, warm);
    exec.shutdown(&session).await;
}

fn main() {
    // `cargo bench` passes `--bench`; this harness takes no arguments.
    let image = std::env::var("PROCTOR_SANDBOX_IMAGE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "proctor-sandbox:bookworm".into());
    let n: usize = std::env::var("BENCH_BLOCKS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        println!("blocks {n}");
        let exec = DockerExecutor::new().expect("executor");
        if let Ok(label) = std::env::var("BENCH_ENGINE_LABEL") {
            series(&exec, &format!("proctor_launcher_{label}"), &image, n).await;
            return;
        }
        series(&exec, "proctor_launcher", &image, n).await;
        let exec = DockerExecutor::new()
            .expect("executor")
            .with_exec_per_block();
        series(&exec, "proctor_exec_per_block", &image, n).await;
    });
}
