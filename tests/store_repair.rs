//! Crash damage: a torn last record, a corrupt record in the middle, NUL padding, and logs from a
//! newer proctor. Every damaged log must load, repair, and take new appends cleanly.

mod store_support;

use proctor::protocol::{Event, EventKind};
use proctor::store::{EventSink, SessionStore, StoreError, new_session_id};
use store_support::{demo_session, events_of, every_kind};

/// A closed session written by the real writer; returns the store, id, events and log bytes.
async fn saved_session(tmp: &tempfile::TempDir) -> (SessionStore, String, Vec<Event>, Vec<u8>) {
    let store = SessionStore::open(tmp.path()).unwrap();
    let id = new_session_id();
    let events = demo_session(&id);
    let mut writer = store.create(&id, &events[0]).unwrap();
    for ev in &events[1..] {
        writer.append(ev).await.unwrap();
    }
    writer.close().await.unwrap();
    let bytes = std::fs::read(store.log_path(&id)).unwrap();
    (store, id, events, bytes)
}

/// Start offsets of each line.
fn line_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = vec![0];
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\n' && i + 1 < bytes.len() {
            starts.push(i + 1);
        }
    }
    starts
}

fn notice(id: &str, seq: u64, text: &str) -> Event {
    Event {
        seq,
        session: id.into(),
        ts_ms: 7,
        kind: EventKind::Notice {
            message: text.into(),
        },
    }
}

#[tokio::test]
async fn log_cut_at_any_byte_of_its_last_three_records_loads_repairs_and_appends() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, id, events, full) = saved_session(&tmp).await;
    let starts = line_starts(&full);
    assert_eq!(starts.len(), events.len());
    let from = starts[starts.len() - 3];
    for cut in from..=full.len() {
        std::fs::write(store.log_path(&id), &full[..cut]).unwrap();
        // Records whose JSON is wholly before the cut survive (a missing newline is put back).
        let newline_at = |i: usize| starts.get(i + 1).copied().unwrap_or(full.len()) - 1;
        let kept: Vec<Event> = (0..events.len())
            .filter(|&i| newline_at(i) <= cut)
            .map(|i| events[i].clone())
            .collect();
        let (loaded, report, mut writer) = store.open_existing(&id).unwrap();
        assert_eq!(loaded, kept, "cut at {cut}");
        assert!(report.skipped.is_empty(), "cut at {cut}: {report:?}");
        // The repaired log is exactly the kept records' lines.
        let good_end = starts.get(kept.len()).copied().unwrap_or(full.len());
        assert_eq!(
            report.truncated_bytes as usize,
            cut.saturating_sub(good_end),
            "cut at {cut}"
        );
        assert_eq!(report.newline_added, cut == good_end - 1, "cut at {cut}");

        let next = notice(&id, kept.last().unwrap().seq + 1, "after the crash");
        writer.append(&next).await.unwrap();
        writer.sync().await.unwrap();
        writer.close().await.unwrap();

        let after = std::fs::read(store.log_path(&id)).unwrap();
        let mut expected = full[..good_end].to_vec();
        expected.extend_from_slice(serde_json::to_string(&next).unwrap().as_bytes());
        expected.push(b'\n');
        assert_eq!(
            String::from_utf8_lossy(&after),
            String::from_utf8_lossy(&expected),
            "cut at {cut}"
        );
        let (reread, report) = store.read(&id).unwrap();
        assert!(report.is_clean(), "cut at {cut}: {report:?}");
        assert_eq!(reread.last(), Some(&next));
    }
}

#[tokio::test]
async fn corrupt_middle_record_is_skipped_with_its_offset_and_the_rest_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, id, events, full) = saved_session(&tmp).await;
    let starts = line_starts(&full);
    let bad = 4; // the approval request
    let mut damaged = full.clone();
    // Flip bytes inside the record (a bad sector, a stray write): same length, not JSON any more.
    for b in &mut damaged[starts[bad] + 5..starts[bad] + 15] {
        *b = b'#';
    }
    std::fs::write(store.log_path(&id), &damaged).unwrap();

    let (loaded, report, mut writer) = store.open_existing(&id).unwrap();
    let expected: Vec<Event> = events
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != bad)
        .map(|(_, e)| e.clone())
        .collect();
    assert_eq!(loaded, expected);
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    assert_eq!(report.skipped[0].0, starts[bad] as u64);
    assert_eq!(report.truncated_bytes, 0);
    let warnings = report.warnings().join("\n");
    assert!(
        warnings.contains(&format!("byte {}", starts[bad])),
        "{warnings}"
    );

    // The corrupt line stays where it is (nothing after it is lost) and appends go after the end.
    let next = notice(&id, events.last().unwrap().seq + 1, "still here");
    writer.append(&next).await.unwrap();
    writer.close().await.unwrap();
    let (reread, report) = store.read(&id).unwrap();
    assert_eq!(reread.len(), expected.len() + 1);
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].0, starts[bad] as u64);
}

#[tokio::test]
async fn half_written_middle_record_loses_only_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, id, events, full) = saved_session(&tmp).await;
    let starts = line_starts(&full);
    // Record 6 lost its second half (and its newline) and record 7 follows directly.
    let mut damaged = full[..starts[6] + 20].to_vec();
    damaged.push(b'\n');
    damaged.extend_from_slice(&full[starts[7]..]);
    std::fs::write(store.log_path(&id), &damaged).unwrap();
    let (loaded, report, writer) = store.open_existing(&id).unwrap();
    drop(writer);
    assert_eq!(loaded.len(), events.len() - 1);
    assert!(!loaded.contains(&events[6]));
    assert_eq!(
        report.skipped,
        vec![(starts[6] as u64, report.skipped[0].1.clone())]
    );
}

#[tokio::test]
async fn nul_padding_after_the_last_record_is_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, id, events, full) = saved_session(&tmp).await;
    let mut damaged = full.clone();
    damaged.extend(std::iter::repeat_n(0u8, 4096));
    std::fs::write(store.log_path(&id), &damaged).unwrap();

    let (loaded, report, mut writer) = store.open_existing(&id).unwrap();
    assert_eq!(loaded, events);
    assert_eq!(report.truncated_bytes, 4096);
    assert_eq!(report.nul_bytes, 4096);
    assert!(report.skipped.is_empty());
    let next = notice(&id, events.last().unwrap().seq + 1, "after padding");
    writer.append(&next).await.unwrap();
    writer.close().await.unwrap();
    let after = std::fs::read(store.log_path(&id)).unwrap();
    assert!(!after.contains(&0), "NULs left in the log");
    assert_eq!(&after[..full.len()], &full[..]);
    assert!(store.read(&id).unwrap().1.is_clean());
}

#[tokio::test]
async fn torn_record_followed_by_nul_padding_is_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, id, events, full) = saved_session(&tmp).await;
    let starts = line_starts(&full);
    let last = *starts.last().unwrap();
    // The filesystem kept the size of the last write but only part of its data.
    let mut damaged = full[..last + 10].to_vec();
    damaged.extend(std::iter::repeat_n(0u8, full.len() - last - 10));
    std::fs::write(store.log_path(&id), &damaged).unwrap();
    let (loaded, report, writer) = store.open_existing(&id).unwrap();
    writer.close().await.unwrap();
    assert_eq!(loaded, events[..events.len() - 1]);
    assert_eq!(report.truncated_bytes as usize, full.len() - last);
    assert_eq!(std::fs::read(store.log_path(&id)).unwrap(), &full[..last]);
}

#[tokio::test]
async fn nul_run_in_the_middle_loses_only_what_it_covers() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, id, events, full) = saved_session(&tmp).await;
    let starts = line_starts(&full);
    let mut damaged = full.clone();
    // A whole record (and its newline) zeroed, and half of the next one.
    for b in &mut damaged[starts[3]..starts[4] + 10] {
        *b = 0;
    }
    std::fs::write(store.log_path(&id), &damaged).unwrap();
    let (loaded, report, writer) = store.open_existing(&id).unwrap();
    writer.close().await.unwrap();
    let expected: Vec<Event> = events
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, e)| e.clone())
        .collect();
    assert_eq!(loaded, expected);
    assert_eq!(report.nul_bytes as usize, starts[4] + 10 - starts[3]);
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    assert_eq!(report.skipped[0].0 as usize, starts[4] + 10);
}

#[tokio::test]
async fn a_log_from_a_newer_proctor_is_refused_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, id, _, full) = saved_session(&tmp).await;
    let text = String::from_utf8(full).unwrap();
    let newer = text.replacen("\"schema\":1", "\"schema\":99", 1);
    assert_ne!(newer, text);
    let newer = format!("{newer}{{\"torn");
    std::fs::write(store.log_path(&id), &newer).unwrap();
    let err = store
        .open_existing(&id)
        .expect_err("newer schema must be refused");
    assert!(matches!(err, StoreError::Corrupt(_)));
    let msg = err.to_string();
    assert!(
        msg.contains("newer proctor") && msg.contains("schema 99") && msg.contains(&id),
        "{msg}"
    );
    assert_eq!(
        std::fs::read_to_string(store.log_path(&id)).unwrap(),
        newer,
        "the log was modified"
    );
    assert!(store.export_md(&id).is_err());
    // The list still shows the session, saying why it cannot be read.
    let list = store.list().unwrap();
    assert!(list[0].task.contains("newer proctor"), "{:?}", list[0]);
}

#[tokio::test]
async fn a_whole_last_record_of_an_unknown_type_is_a_newer_proctors_not_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, id, events, full) = saved_session(&tmp).await;
    let next = events.last().unwrap().seq + 1;
    let mut newer = full.clone();
    newer.extend_from_slice(
        format!(
            "{{\"seq\":{next},\"session\":\"{id}\",\"ts_ms\":9,\"type\":\"workspace_snapshot\",\"files\":3}}\n"
        )
        .as_bytes(),
    );
    std::fs::write(store.log_path(&id), &newer).unwrap();
    let err = store
        .open_existing(&id)
        .expect_err("a record of a newer proctor must be refused, not cut");
    assert!(matches!(err, StoreError::Corrupt(_)));
    let msg = err.to_string();
    assert!(
        msg.contains("newer proctor")
            && msg.contains("workspace_snapshot")
            && msg.contains("upgrade"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read(store.log_path(&id)).unwrap(),
        newer,
        "the log must stay byte-identical"
    );
    // Reading for export or the list does not cut it either.
    assert!(store.read(&id).is_err());
    let _ = store.list().unwrap();
    assert_eq!(std::fs::read(store.log_path(&id)).unwrap(), newer);
}

#[tokio::test]
async fn a_log_without_schema_field_reads_as_the_current_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, id, events, full) = saved_session(&tmp).await;
    let text = String::from_utf8(full)
        .unwrap()
        .replacen("\"schema\":1,", "", 1);
    std::fs::write(store.log_path(&id), &text).unwrap();
    let (loaded, report, writer) = store.open_existing(&id).unwrap();
    writer.close().await.unwrap();
    assert_eq!(loaded, events);
    assert_eq!(report.schema, 1);
    assert_eq!(report.migrated_from, None);
}

#[tokio::test]
async fn a_log_whose_first_record_is_unreadable_is_not_resumed_or_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, id, events, full) = saved_session(&tmp).await;
    let mut damaged = full.clone();
    damaged[2] = b'!';
    damaged.extend_from_slice(b"{\"torn");
    std::fs::write(store.log_path(&id), &damaged).unwrap();
    let err = store.open_existing(&id).expect_err("refused");
    assert!(err.to_string().contains("session_started"), "{err}");
    assert_eq!(std::fs::read(store.log_path(&id)).unwrap(), damaged);
    // Reading and exporting still work from what is left.
    let (loaded, report) = store.read(&id).unwrap();
    assert_eq!(loaded, events[1..]);
    assert_eq!(report.skipped[0].0, 0);
    assert!(store.export_md(&id).unwrap().contains("Looks right"));
}

#[tokio::test]
async fn every_kind_survives_a_torn_tail_too() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SessionStore::open(tmp.path()).unwrap();
    let id = new_session_id();
    let events = events_of(&id, every_kind());
    let mut writer = store.create(&id, &events[0]).unwrap();
    for ev in &events[1..] {
        writer.append(ev).await.unwrap();
    }
    writer.close().await.unwrap();
    let mut bytes = std::fs::read(store.log_path(&id)).unwrap();
    bytes.extend_from_slice(b"{\"seq\":99,\"session\":\"x\",\"type\":\"mess");
    std::fs::write(store.log_path(&id), &bytes).unwrap();
    let (loaded, report, writer) = store.open_existing(&id).unwrap();
    writer.close().await.unwrap();
    let persisted: Vec<Event> = events
        .into_iter()
        .filter(|e| e.kind.is_persisted())
        .collect();
    assert_eq!(loaded, persisted);
    assert!(report.torn_tail.is_some());
    assert!(
        report
            .warnings()
            .iter()
            .any(|w| w.contains("torn last record")),
        "{:?}",
        report.warnings()
    );
}
