//! Property and edge-case tests of the SSE parser: however the bytes are chunked and whichever
//! line endings the server uses, the same events come out; oversized events fail clearly.

use proctor::provider::sse::{SseError, SseEvent, SseParser};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Ev {
    name: Option<String>,
    lines: Vec<String>,
}

fn encode(events: &[Ev], eol: &str, comments: bool) -> Vec<u8> {
    let mut s = String::new();
    for e in events {
        if comments {
            s.push_str(": ping");
            s.push_str(eol);
        }
        if let Some(n) = &e.name {
            s.push_str(&format!("event: {n}{eol}"));
        }
        for l in &e.lines {
            s.push_str(&format!("data: {l}{eol}"));
        }
        s.push_str(eol);
    }
    s.into_bytes()
}

fn expected(events: &[Ev]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e.name.clone().unwrap_or_else(|| "message".into()),
                e.lines.join("\n"),
            )
        })
        .collect()
}

fn parse_split(bytes: &[u8], cuts: &[usize]) -> Result<Vec<SseEvent>, SseError> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    points.dedup();
    let mut parser = SseParser::new();
    let mut out = Vec::new();
    let mut start = 0;
    for p in points.into_iter().chain(std::iter::once(bytes.len())) {
        out.extend(parser.push(&bytes[start..p])?);
        start = p;
    }
    Ok(out)
}

fn names_and_data(evs: &[SseEvent]) -> Vec<(String, String)> {
    evs.iter()
        .map(|e| (e.event.clone(), e.data.clone()))
        .collect()
}

fn event_strategy() -> impl Strategy<Value = Ev> {
    let name = prop_oneof![
        Just(None),
        Just(Some("content_block_delta".to_string())),
        Just(Some("ping".to_string())),
        "[a-z_]{1,12}".prop_map(Some),
    ];
    // Data without CR/LF (a line ending would split it), with multi-byte characters.
    let line = "[a-zA-Z0-9 {}\":,é€😀\u{4e2d}]{0,40}";
    (name, prop::collection::vec(line, 1..4)).prop_map(|(name, lines)| Ev { name, lines })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn any_chunking_and_any_line_ending_give_the_same_events(
        events in prop::collection::vec(event_strategy(), 1..6),
        eol in prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
        comments in any::<bool>(),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let bytes = encode(&events, eol, comments);
        let got = parse_split(&bytes, &cuts).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(names_and_data(&got), expected(&events));
    }

    #[test]
    fn byte_at_a_time_equals_all_at_once(
        events in prop::collection::vec(event_strategy(), 1..4),
        eol in prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
    ) {
        let bytes = encode(&events, eol, true);
        let cuts: Vec<usize> = (0..bytes.len()).collect();
        let one = parse_split(&bytes, &[]).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let many = parse_split(&bytes, &cuts).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(one, many);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_never_exceed_the_limit(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..20),
    ) {
        let mut parser = SseParser::with_limit(256);
        for c in &chunks {
            match parser.push(c) {
                Ok(evs) => for e in evs { prop_assert!(e.data.len() <= 256) },
                Err(SseError::EventTooLarge { limit }) => { prop_assert_eq!(limit, 256); break; }
            }
        }
    }
}

#[test]
fn a_multibyte_character_split_across_chunks_is_kept_whole() {
    let bytes = "data: 🦀€\n\n".as_bytes();
    for cut in 0..bytes.len() {
        let evs = parse_split(bytes, &[cut]).expect("parse");
        assert_eq!(evs[0].data, "🦀€", "cut at {cut}");
    }
}

#[test]
fn comments_pings_and_field_forms_follow_the_sse_rules() {
    let text = ": comment\n\nevent: ping\ndata: {\"type\": \"ping\"}\n\ndata:no space\ndata:  two spaces\nid: 7\nretry: 100\nunknown: x\n\n";
    let evs = parse_split(text.as_bytes(), &[]).expect("parse");
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[0].event, "ping");
    assert_eq!(evs[1].event, "message");
    assert_eq!(evs[1].data, "no space\n two spaces");
    assert_eq!(evs[1].id.as_deref(), Some("7"));
}

#[test]
fn an_unterminated_event_is_not_dispatched() {
    let mut p = SseParser::new();
    assert!(p.push(b"data: {\"half\": tr").expect("parse").is_empty());
    assert!(p.has_partial_event());
}

#[test]
fn a_10_mb_event_fails_clearly_without_buffering_it_all() {
    let mut p = SseParser::new();
    let chunk = vec![b'x'; 64 * 1024];
    assert!(p.push(b"data: ").expect("head").is_empty());
    let mut fed = 0usize;
    let err = loop {
        match p.push(&chunk) {
            Ok(evs) => assert!(evs.is_empty()),
            Err(e) => break e,
        }
        fed += chunk.len();
        assert!(fed < 10 * 1024 * 1024, "10 MB accepted without error");
    };
    assert!(fed <= proctor::provider::sse::DEFAULT_MAX_EVENT_BYTES);
    assert!(err.to_string().contains("larger than"), "{err}");
    // Stays failed: the stream cannot be trusted after a refused event.
    assert!(p.push(b"\n\ndata: x\n\n").is_err());
}

#[test]
fn many_small_events_in_one_chunk_are_all_returned() {
    let text: String = (0..1000).map(|i| format!("data: {i}\n\n")).collect();
    let evs = parse_split(text.as_bytes(), &[]).expect("parse");
    assert_eq!(evs.len(), 1000);
    assert_eq!(evs[999].data, "999");
}
