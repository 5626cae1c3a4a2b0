//! Resume cost: loading (read + parse + repair) a 100,000-event session log, and replaying it
//! through the engine (state fold + forwarding to the front end) until the session is live.

use std::io::Write;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use proctor::protocol::{CodeBlock, DecisionKind, Event, EventKind, SessionMode, StreamKind};
use proctor::store::{SessionStore, parse_log};

const EVENTS: u64 = 100_000;

/// The replay benchmark runs no code.
struct NoExecutor;

impl proctor::executor::Executor for NoExecutor {
    fn run(
        &self,
        _request: proctor::executor::ExecRequest,
        _cancel: tokio_util::sync::CancellationToken,
    ) -> futures::stream::BoxStream<
        'static,
        Result<proctor::executor::ExecEvent, proctor::executor::ExecError>,
    > {
        Box::pin(futures::stream::empty())
    }
    fn shutdown(&self, _session: &str) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// A realistic mix: turns of speaker, message, usage, approval, decision, execution.
fn kind(seq: u64) -> EventKind {
    let id = seq / 8;
    match seq % 8 {
        0 => EventKind::SpeakerSelected {
            agent: "coder".into(),
            note: None,
        },
        1 => EventKind::Message {
            agent: "coder".into(),
            content: format!(
                "Step {seq}: here is the next part.\n\n```python\nimport sys\n\ndef f(x):\n    return x * {seq}\n\nprint(f(2))\n```\n"
            ),
            to: None,
        },
        2 => EventKind::Usage {
            agent: "coder".into(),
            model: "openai/gpt-4o-mini".into(),
            input_tokens: 1200 + seq,
            output_tokens: 90,
            cached_tokens: 512,
            cache_creation_tokens: 0,
            usd: Some(0.0003),
            estimated: false,
        },
        3 => EventKind::ApprovalRequested {
            id,
            agent: "coder".into(),
            blocks: vec![CodeBlock {
                index: 0,
                language: "python".into(),
                code: format!("import sys\n\ndef f(x):\n    return x * {seq}\n\nprint(f(2))\n"),
                filename: Some("step.py".into()),
            }],
        },
        4 => EventKind::ApprovalResolved {
            id,
            block: 0,
            decision: DecisionKind::Approved,
            code: None,
            reason: None,
            by_rule: None,
            allow_network: false,
        },
        5 => EventKind::ExecutionStarted {
            id,
            block: 0,
            language: "python".into(),
        },
        6 => EventKind::ExecutionOutput {
            id,
            block: 0,
            stream: StreamKind::Stdout,
            text: format!("{}\n", seq * 2),
        },
        _ => EventKind::ExecutionFinished {
            id,
            block: 0,
            exit_code: 0,
            timed_out: false,
            truncated: false,
            duration_ms: 180,
            output: format!("{}\n", seq * 2),
            oom: false,
            interrupted: false,
            not_run: false,
            workspace_limit_exceeded: false,
        },
    }
}

fn build(store: &SessionStore, rt: &tokio::runtime::Runtime) -> (String, Vec<u8>) {
    let id = proctor::store::new_session_id();
    let first = Event {
        seq: 1,
        session: id.clone(),
        ts_ms: 1_790_000_000_000,
        kind: EventKind::SessionStarted {
            team: "pair".into(),
            task: "benchmark".into(),
            schema: proctor::protocol::SCHEMA_VERSION,
            team_config: None,
            mode: SessionMode::Gate,
        },
    };
    rt.block_on(async {
        let writer = store.create(&id, &first).expect("create");
        writer.close().await.expect("close");
    });
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(store.log_path(&id))
        .expect("open log");
    let mut buf = Vec::new();
    for seq in 2..=EVENTS {
        let ev = Event {
            seq,
            session: id.clone(),
            ts_ms: 1_790_000_000_000 + seq,
            kind: kind(seq),
        };
        serde_json::to_writer(&mut buf, &ev).expect("serialize");
        buf.push(b'\n');
    }
    file.write_all(&buf).expect("write");
    drop(file);
    let bytes = std::fs::read(store.log_path(&id)).expect("read");
    (id, bytes)
}

fn resume(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = SessionStore::open(tmp.path()).expect("store");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (id, bytes) = build(&store, &rt);
    let torn = b"{\"seq\":100001,\"session\":\"x\",\"type\":\"mess";

    let mut group = c.benchmark_group("resume_100k_events");
    group.sample_size(10);
    group.measurement_time(std::time::Duration::from_secs(8));
    group.throughput(criterion::Throughput::Bytes(bytes.len() as u64));

    group.bench_function("parse_in_memory", |b| {
        b.iter(|| {
            parse_log(std::hint::black_box(&bytes))
                .expect("parse")
                .events
                .len()
        })
    });

    group.bench_function("open_existing", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (events, _, writer) = store.open_existing(&id).expect("open");
                writer.close().await.expect("close");
                events.len()
            })
        })
    });

    group.bench_function("open_and_replay_through_engine", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (events, _, writer) = store.open_existing(&id).expect("open");
                let n = events.len();
                let mut handle = proctor::engine::start(proctor::engine::SessionSetup {
                    id: id.clone(),
                    team: proctor::config::default_team(),
                    task: String::new(),
                    mode: SessionMode::Gate,
                    models: Default::default(),
                    executor: std::sync::Arc::new(NoExecutor),
                    workspace: store.workspace_dir(&id),
                    prices: Default::default(),
                    sink: Box::new(proctor::store::MemorySink::default()),
                    resume: Some(events),
                    seed: Some(1),
                    image_override: None,
                    workspace_record: None,
                });
                // Live once the whole log is replayed and the engine says it resumed.
                let mut seen = 0;
                while let Some(ev) = handle.events.recv().await {
                    seen += 1;
                    if seen > n && matches!(ev.kind, EventKind::Notice { .. }) {
                        break;
                    }
                }
                drop(handle.ops);
                handle.task.abort();
                writer.close().await.expect("close");
                seen
            })
        })
    });

    group.bench_function("open_existing_torn_tail", |b| {
        b.iter_batched(
            || {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(store.log_path(&id))
                    .expect("open");
                f.write_all(torn).expect("tear");
            },
            |()| {
                rt.block_on(async {
                    let (events, report, writer) = store.open_existing(&id).expect("open");
                    assert_eq!(report.truncated_bytes, torn.len() as u64);
                    writer.close().await.expect("close");
                    events.len()
                })
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// `sessions list` over 1,000 saved sessions of 200 events each: reads summaries, not logs.
fn list(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = SessionStore::open(tmp.path()).expect("store");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        for _ in 0..1000 {
            let id = proctor::store::new_session_id();
            let mut events = (1..=200u64).map(|seq| Event {
                seq,
                session: id.clone(),
                ts_ms: 1_790_000_000_000 + seq,
                kind: if seq == 1 {
                    EventKind::SessionStarted {
                        team: "pair".into(),
                        task: "list me".into(),
                        schema: proctor::protocol::SCHEMA_VERSION,
                        team_config: None,
                        mode: SessionMode::Gate,
                    }
                } else {
                    kind(seq)
                },
            });
            let first = events.next().expect("first");
            let mut writer = store.create(&id, &first).expect("create");
            for ev in events {
                proctor::store::EventSink::append(&mut writer, &ev)
                    .await
                    .expect("append");
            }
            writer.close().await.expect("close");
        }
    });
    let mut group = c.benchmark_group("list");
    group.sample_size(10);
    group.bench_function("1000_sessions", |b| {
        b.iter(|| store.list().expect("list").len())
    });
    group.finish();
}

criterion_group!(benches, resume, list);
criterion_main!(benches);
