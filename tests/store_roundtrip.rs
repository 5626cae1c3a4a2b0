//! Every event kind survives the trip to disk and back, and a reopened session keeps appending.

mod store_support;

use proctor::protocol::{Event, EventKind};
use proctor::store::{EventSink, SessionStore, new_session_id};
use store_support::{KINDS, events_of, every_kind, kind_index, log_lines};

#[test]
fn every_kind_has_a_sample() {
    let mut seen = [false; KINDS];
    for k in every_kind() {
        seen[kind_index(&k)] = true;
    }
    assert!(seen.iter().all(|s| *s), "missing samples: {seen:?}");
}

#[test]
fn every_event_round_trips_through_json() {
    for ev in events_of("s", every_kind()) {
        let line = serde_json::to_string(&ev).unwrap();
        assert!(!line.contains('\n'), "a record spans lines: {line}");
        let back: Event = serde_json::from_str(&line).unwrap();
        assert_eq!(back, ev, "{line}");
    }
}

#[test]
fn session_ids_are_uuid_v7_and_sort_by_creation() {
    let ids: Vec<String> = (0..50).map(|_| new_session_id()).collect();
    for id in &ids {
        let u = uuid::Uuid::parse_str(id).unwrap();
        assert_eq!(u.get_version_num(), 7);
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, ids);
}

#[tokio::test]
async fn every_persisted_event_round_trips_through_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SessionStore::open(tmp.path()).unwrap();
    let id = new_session_id();
    let events = events_of(&id, every_kind());
    let mut writer = store.create(&id, &events[0]).unwrap();
    for ev in &events[1..] {
        writer.append(ev).await.unwrap();
    }
    writer.close().await.unwrap();

    let expected: Vec<Event> = events
        .iter()
        .filter(|e| e.kind.is_persisted())
        .cloned()
        .collect();
    assert_eq!(expected.len(), KINDS - 4);
    let types: Vec<String> = log_lines(&store.log_path(&id))
        .iter()
        .map(|v| v["type"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !types
            .iter()
            .any(|t| t == "message_delta" || t == "agent_status" || t == "image_pull"),
        "{types:?}"
    );
    assert_eq!(log_lines(&store.log_path(&id))[0]["schema"], 1);

    let (loaded, report, mut writer) = store.open_existing(&id).unwrap();
    assert_eq!(loaded, expected);
    assert!(report.is_clean(), "{report:?}");

    // The reopened session goes on with higher seqs.
    let next = Event {
        seq: events.last().unwrap().seq + 1,
        session: id.clone(),
        ts_ms: 1,
        kind: EventKind::Notice {
            message: "resumed here".into(),
        },
    };
    writer.append(&next).await.unwrap();
    writer.close().await.unwrap();
    let (again, report) = store.read(&id).unwrap();
    assert!(report.is_clean());
    assert_eq!(again.len(), expected.len() + 1);
    assert_eq!(again.last(), Some(&next));
}

#[tokio::test]
async fn replaying_old_events_into_the_writer_does_not_duplicate_them() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SessionStore::open(tmp.path()).unwrap();
    let id = new_session_id();
    let events = events_of(&id, every_kind());
    let mut writer = store.create(&id, &events[0]).unwrap();
    for ev in &events[1..] {
        writer.append(ev).await.unwrap();
    }
    writer.close().await.unwrap();
    let before = std::fs::read(store.log_path(&id)).unwrap();

    let (loaded, _, mut writer) = store.open_existing(&id).unwrap();
    for ev in &loaded {
        writer.append(ev).await.unwrap();
    }
    writer.sync().await.unwrap();
    writer.close().await.unwrap();
    assert_eq!(std::fs::read(store.log_path(&id)).unwrap(), before);
}

#[tokio::test]
async fn synced_events_are_on_disk_when_append_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SessionStore::open(tmp.path()).unwrap();
    let id = new_session_id();
    let events = events_of(&id, every_kind());
    let mut writer = store.create(&id, &events[0]).unwrap();
    // An approval request must be readable by anyone as soon as append returns.
    let approval = events
        .iter()
        .find(|e| matches!(e.kind, EventKind::ApprovalRequested { .. }))
        .unwrap();
    writer.append(approval).await.unwrap();
    let (on_disk, _) = store.read(&id).unwrap();
    assert_eq!(on_disk.last(), Some(approval));
    // An unsynced event is queued; it is on disk after sync().
    let notice = Event {
        seq: approval.seq + 1,
        session: id.clone(),
        ts_ms: 0,
        kind: EventKind::Notice {
            message: "n".into(),
        },
    };
    writer.append(&notice).await.unwrap();
    writer.sync().await.unwrap();
    let (on_disk, _) = store.read(&id).unwrap();
    assert_eq!(on_disk.last(), Some(&notice));
    drop(writer);
}

#[tokio::test]
async fn queued_events_reach_the_disk_without_a_sync_point() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SessionStore::open(tmp.path()).unwrap();
    let id = new_session_id();
    let events = events_of(&id, every_kind());
    let mut writer = store.create(&id, &events[0]).unwrap();
    let notice = Event {
        seq: 2,
        session: id.clone(),
        ts_ms: 0,
        kind: EventKind::Notice {
            message: "n".into(),
        },
    };
    writer.append(&notice).await.unwrap();
    // No sync, no close: the writer writes queued lines after a short quiet period.
    let mut found = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if store.read(&id).unwrap().0.last() == Some(&notice) {
            found = true;
            break;
        }
    }
    assert!(found, "queued event never written");
    drop(writer);
}
