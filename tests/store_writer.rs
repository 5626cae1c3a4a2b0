//! The writer task groups appends between sync points and fsyncs exactly where durability
//! matters (before an approval is shown, after decisions and results, at turn end).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use proctor::protocol::{CodeBlock, Event, EventKind, StreamKind};
use proctor::store::{EventSink, LogTarget, SessionWriter, parse_log};

/// A real file that counts writes and fsyncs.
struct CountingFile {
    file: File,
    writes: Arc<AtomicU32>,
    syncs: Arc<AtomicU32>,
}

impl LogTarget for CountingFile {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.file.write_all_at(buf, offset)
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        self.file.sync_data()
    }
}

fn ev(seq: u64, kind: EventKind) -> Event {
    Event {
        seq,
        session: "s".into(),
        ts_ms: seq,
        kind,
    }
}

#[tokio::test]
async fn output_lines_are_grouped_and_fsynced_once_at_the_result() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("events.jsonl");
    let (writes, syncs) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let target = CountingFile {
        file: File::create(&path).unwrap(),
        writes: writes.clone(),
        syncs: syncs.clone(),
    };
    let mut writer = SessionWriter::spawn("s", Box::new(target), 0, 0).unwrap();

    let request = EventKind::ApprovalRequested {
        id: 1,
        agent: "coder".into(),
        blocks: vec![CodeBlock {
            index: 0,
            language: "sh".into(),
            code: "seq 1000".into(),
            filename: None,
        }],
    };
    writer.append(&ev(1, request)).await.unwrap();
    assert_eq!(
        syncs.load(Ordering::SeqCst),
        1,
        "approval request fsynced before it is shown"
    );

    writer
        .append(&ev(
            2,
            EventKind::ExecutionStarted {
                id: 1,
                block: 0,
                language: "sh".into(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(
        syncs.load(Ordering::SeqCst),
        2,
        "the start of a block is on disk before the code runs"
    );
    for i in 0..1000u64 {
        let out = EventKind::ExecutionOutput {
            id: 1,
            block: 0,
            stream: StreamKind::Stdout,
            text: format!("{i}\n"),
        };
        writer.append(&ev(3 + i, out)).await.unwrap();
    }
    let finished = EventKind::ExecutionFinished {
        id: 1,
        block: 0,
        exit_code: 0,
        timed_out: false,
        truncated: false,
        duration_ms: 5,
        output: "1..1000".into(),
        oom: false,
        interrupted: false,
        not_run: false,
        workspace_limit_exceeded: false,
    };
    writer.append(&ev(1003, finished)).await.unwrap();
    assert_eq!(
        syncs.load(Ordering::SeqCst),
        3,
        "one fsync for the result, none for the output lines"
    );
    assert!(
        writes.load(Ordering::SeqCst) <= 10,
        "1002 events in {} writes",
        writes.load(Ordering::SeqCst)
    );
    writer.close().await.unwrap();

    let parsed = parse_log(&std::fs::read(&path).unwrap()).unwrap();
    assert!(parsed.report.is_clean());
    assert_eq!(parsed.events.len(), 1003);
}

#[tokio::test]
async fn live_only_events_are_not_written() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("events.jsonl");
    let (writes, syncs) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let target = CountingFile {
        file: File::create(&path).unwrap(),
        writes,
        syncs,
    };
    let mut writer = SessionWriter::spawn("s", Box::new(target), 0, 0).unwrap();
    writer
        .append(&ev(
            1,
            EventKind::MessageDelta {
                agent: "a".into(),
                delta: "x".into(),
            },
        ))
        .await
        .unwrap();
    writer
        .append(&ev(
            2,
            EventKind::AgentStatus {
                agent: "a".into(),
                state: proctor::protocol::AgentActivity::Thinking,
            },
        ))
        .await
        .unwrap();
    writer
        .append(&ev(
            3,
            EventKind::ImagePull {
                image: "i".into(),
                status: "s".into(),
                current: 0,
                total: 0,
                layers: 0,
                layers_done: 0,
            },
        ))
        .await
        .unwrap();
    writer
        .append(&ev(
            4,
            EventKind::Message {
                agent: "a".into(),
                content: "x".into(),
                to: None,
            },
        ))
        .await
        .unwrap();
    writer.close().await.unwrap();
    let parsed = parse_log(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        parsed.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![4]
    );
}
