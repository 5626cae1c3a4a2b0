//! Write failures: the caller hears "session not saved", nothing panics, the session goes on, and
//! once the disk takes writes again the log holds every event once, with no torn line.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use proctor::protocol::{Event, EventKind};
use proctor::store::{EventSink, LogTarget, SessionStore, SessionWriter, StoreError, parse_log};

fn message(seq: u64, text: &str) -> Event {
    Event {
        seq,
        session: "s".into(),
        ts_ms: seq,
        kind: EventKind::Message {
            agent: "coder".into(),
            content: text.into(),
            to: None,
        },
    }
}

fn notice(seq: u64) -> Event {
    Event {
        seq,
        session: "s".into(),
        ts_ms: seq,
        kind: EventKind::Notice {
            message: format!("n{seq}"),
        },
    }
}

#[tokio::test]
async fn dev_full_gives_not_saved_and_the_writer_keeps_going() {
    let full = File::options().write(true).open("/dev/full").unwrap();
    let mut writer = SessionWriter::spawn("s", Box::new(full), 0, 0).unwrap();
    let err = writer
        .append(&message(1, "hello"))
        .await
        .expect_err("/dev/full accepts nothing");
    assert!(matches!(err, StoreError::Io(_)));
    let msg = err.to_string();
    assert!(msg.starts_with("session not saved: "), "{msg}");
    assert!(msg.contains("No space left on device"), "{msg}");
    // The session goes on: later appends and syncs report the same, and do not hang or panic.
    let err = writer.append(&notice(2)).await.expect_err("still failing");
    assert!(err.to_string().contains("No space left"), "{err}");
    assert!(writer.append(&message(3, "again")).await.is_err());
    assert!(writer.sync().await.is_err());
    assert!(writer.close().await.is_err());
}

/// A real file whose writes fail with "disk full" after writing half their bytes, while
/// `failures` is above zero.
struct FillingDisk {
    file: File,
    failures: Arc<AtomicU32>,
}

impl LogTarget for FillingDisk {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        if self.failures.load(Ordering::SeqCst) > 0 {
            self.failures.fetch_sub(1, Ordering::SeqCst);
            self.file.write_all_at(&buf[..buf.len() / 2], offset)?;
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        self.file.write_all_at(buf, offset)
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

#[tokio::test]
async fn after_the_disk_recovers_every_event_is_in_the_log_once_and_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("events.jsonl");
    let failures = Arc::new(AtomicU32::new(0));
    let disk = FillingDisk {
        file: File::create(&path).unwrap(),
        failures: failures.clone(),
    };
    let mut writer = SessionWriter::spawn("s", Box::new(disk), 0, 0).unwrap();

    writer.append(&message(1, "saved")).await.unwrap();

    // The disk fills up: every retry writes half a batch and fails.
    failures.store(1000, Ordering::SeqCst);
    let err = writer
        .append(&message(2, "not saved yet"))
        .await
        .expect_err("disk is full");
    assert!(err.to_string().starts_with("session not saved: "), "{err}");
    assert!(err.to_string().contains("No space left"), "{err}");
    // Unsynced events are still taken, and the failure is reported at once.
    assert!(writer.append(&notice(3)).await.is_err());

    // Space is freed: the next write carries everything still queued.
    failures.store(0, Ordering::SeqCst);
    writer.append(&message(4, "saved again")).await.unwrap();
    writer.append(&notice(5)).await.unwrap();
    writer.close().await.unwrap();

    let bytes = std::fs::read(&path).unwrap();
    let parsed = parse_log(&bytes).unwrap();
    assert!(
        parsed.report.is_clean(),
        "{:?}\n{}",
        parsed.report,
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(
        parsed.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), 5);
}

#[tokio::test]
async fn a_write_that_fails_once_is_retried_without_leaving_half_a_line() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("events.jsonl");
    let failures = Arc::new(AtomicU32::new(0));
    let disk = FillingDisk {
        file: File::create(&path).unwrap(),
        failures: failures.clone(),
    };
    let mut writer = SessionWriter::spawn("s", Box::new(disk), 0, 0).unwrap();
    writer.append(&message(1, "one")).await.unwrap();
    failures.store(1, Ordering::SeqCst);
    // The retry inside the writer succeeds: the caller sees no error at all.
    writer.append(&message(2, "two")).await.unwrap();
    writer.close().await.unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let parsed = parse_log(&bytes).unwrap();
    assert!(
        parsed.report.is_clean(),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(parsed.events, vec![message(1, "one"), message(2, "two")]);
}

#[tokio::test]
async fn a_session_directory_that_cannot_be_created_is_an_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    // The data dir is a file.
    let file = tmp.path().join("data");
    std::fs::write(&file, "not a dir").unwrap();
    assert!(SessionStore::open(&file).is_err());
    // A session's directory is taken by a file.
    let store = SessionStore::open(tmp.path().join("ok")).unwrap();
    std::fs::write(store.session_dir("taken"), "x").unwrap();
    let first = Event {
        seq: 1,
        session: "taken".into(),
        ts_ms: 0,
        kind: EventKind::SessionStarted {
            team: "t".into(),
            task: "x".into(),
            schema: 1,
            team_config: None,
            mode: Default::default(),
        },
    };
    let err = store
        .create("taken", &first)
        .expect_err("cannot create over a file");
    assert!(err.to_string().contains("taken"), "{err}");
}
