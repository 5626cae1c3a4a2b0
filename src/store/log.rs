//! Reading a session log back: parse every record, skip corrupt ones, find the torn tail a crash
//! left behind, and refuse logs written by a newer proctor.
//!
//! A log is JSON lines. Neither `\n` nor NUL can occur inside a serialized record (JSON escapes
//! control characters), so both are record boundaries here: a crash can leave NUL padding where the
//! filesystem extended the file but never wrote the data, and whatever sits between two boundaries is
//! either a whole record or garbage.

use crate::protocol::{Event, EventKind, SCHEMA_VERSION};

use super::StoreError;

/// What loading a log found and fixed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Corrupt records that were skipped, each with its byte offset in the log and the parse error.
    /// Every good record after them is kept.
    pub skipped: Vec<(u64, String)>,
    /// Bytes cut from the end of the log: a record torn by a crash, NUL padding, or both.
    pub truncated_bytes: u64,
    /// Why the cut tail did not parse, when it held more than padding.
    pub torn_tail: Option<String>,
    /// NUL bytes met while reading (crash padding), wherever they were.
    pub nul_bytes: u64,
    /// The last good record lacked its newline, which was added back.
    pub newline_added: bool,
    /// Schema version of the log as written.
    pub schema: u32,
    /// The log was written with an older schema and was migrated to the current one in memory.
    pub migrated_from: Option<u32>,
}

impl LoadReport {
    /// Whether the log was read exactly as written, with nothing skipped or cut.
    pub fn is_clean(&self) -> bool {
        self.skipped.is_empty()
            && self.truncated_bytes == 0
            && self.nul_bytes == 0
            && !self.newline_added
    }

    /// One line per problem, for the human (empty when clean).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (offset, error) in &self.skipped {
            out.push(format!(
                "skipped a corrupt record at byte {offset}: {error}"
            ));
        }
        if self.truncated_bytes > 0 {
            match &self.torn_tail {
                Some(e) => out.push(format!(
                    "cut {} bytes of a torn last record ({e}); the session continues from the record before it",
                    self.truncated_bytes
                )),
                None => out.push(format!("cut {} bytes of padding at the end of the log", self.truncated_bytes)),
            }
        }
        // NULs in the cut tail are already counted there.
        if self.nul_bytes > self.truncated_bytes {
            out.push(format!(
                "ignored {} NUL bytes left by a crash",
                self.nul_bytes
            ));
        }
        if let Some(from) = self.migrated_from {
            out.push(format!(
                "log schema {from} migrated to schema {SCHEMA_VERSION} on read"
            ));
        }
        out
    }
}

/// A parsed log and where its valid part ends.
#[derive(Debug, Clone, Default)]
pub struct ParsedLog {
    /// The good records, in order, with strictly increasing `seq`.
    pub events: Vec<Event>,
    /// What was skipped or found torn.
    pub report: LoadReport,
    /// Length of the valid prefix of the log, in bytes; anything after it is a torn tail.
    pub good_len: u64,
    /// The valid prefix does not end in a newline (the last good record was cut right before it).
    pub needs_newline: bool,
}

/// Migrations from older schemas: entry `i` lifts a record from schema `i + 1` to `i + 2`.
/// Schema 1 is the first, so there is nothing to lift yet; add a function here when the format
/// changes and bump `protocol::SCHEMA_VERSION`.
const MIGRATIONS: [fn(&mut serde_json::Value); (SCHEMA_VERSION - 1) as usize] = [];

/// Lifts one record written with `from` to the current schema and parses it.
fn parse_migrated(bytes: &[u8], from: u32) -> Result<Event, String> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let start = from.saturating_sub(1) as usize;
    for lift in MIGRATIONS.iter().skip(start) {
        lift(&mut value);
    }
    if let Some(obj) = value.as_object_mut()
        && obj.get("type").and_then(|t| t.as_str()) == Some("session_started")
    {
        obj.insert("schema".into(), SCHEMA_VERSION.into());
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// Reads the schema a log was written with from its first record, if that record is readable.
fn schema_of(bytes: &[u8]) -> Option<u32> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        schema: Option<u64>,
    }
    let head: Head = serde_json::from_slice(bytes).ok()?;
    if head.kind != "session_started" {
        return None;
    }
    Some(
        head.schema
            .map_or(SCHEMA_VERSION, |s| u32::try_from(s).unwrap_or(u32::MAX)),
    )
}

/// The message shown when a log is newer than this build.
pub(crate) fn newer_schema_message(schema: u32) -> String {
    format!(
        "this session was written by a newer proctor (log schema {schema}; this build reads up to \
         schema {SCHEMA_VERSION}); upgrade proctor to open it"
    )
}

/// The message shown when a log holds a whole record of a type this build does not know.
fn newer_record_message(name: &str, offset: u64) -> String {
    format!(
        "this session was written by a newer proctor: its log holds a {:?} record (at byte \
         {offset}) that this build does not know; upgrade proctor to open it (the log is left \
         as it is)",
        crate::text_safety::excerpt(name, 60)
    )
}

/// Moves the segments held since the last good record into `skipped`, in log order.
fn flush_skips(
    skipped: &mut Vec<(u64, String)>,
    bad: &mut Option<(u64, String)>,
    newer: &mut Option<(u64, String)>,
) {
    let newer = newer
        .take()
        .map(|(offset, name)| (offset, format!("a {name:?} record of a newer proctor")));
    let mut held: Vec<(u64, String)> = bad.take().into_iter().chain(newer).collect();
    held.sort_by_key(|(offset, _)| *offset);
    skipped.extend(held);
}

/// What a segment that does not parse as an event is.
enum Whole {
    /// A whole JSON object whose `type` this build does not know: a newer proctor wrote it.
    NewerType(String),
    /// A whole JSON object this build cannot read as an event (kept, reported as skipped).
    Unreadable,
    /// Not a whole JSON object: torn by a crash, or garbage.
    No,
}

/// Records of a block parsed on two threads when there are at least this many (below it, a
/// thread costs more than it saves).
const PARALLEL_MIN_RECORDS: usize = 512;

/// One segment between two boundaries, parsed (what [`LogParser::take`] needs of it).
// Not boxed: a block's records are parsed into a Vec of these and moved out once.
#[allow(clippy::large_enum_variant)]
enum Pre {
    /// Only whitespace.
    Empty,
    /// An event, at this many bytes into the segment.
    Event(usize, Event),
    /// Not an event (at this many bytes in): why, and whether it is a whole record.
    Bad(usize, String, Whole),
}

/// Parses one segment of a log written with schema `known`.
fn pre_parse(raw: &[u8], known: u32) -> Pre {
    let (lead, seg) = trim(raw);
    if seg.is_empty() {
        return Pre::Empty;
    }
    let parsed = if known == SCHEMA_VERSION {
        serde_json::from_slice::<Event>(seg).map_err(|e| e.to_string())
    } else {
        parse_migrated(seg, known)
    };
    match parsed {
        Ok(event) => Pre::Event(lead, event),
        Err(e) => Pre::Bad(lead, e, whole_record(seg)),
    }
}

/// A torn record is a strict prefix of a JSON object, which is never itself a JSON object; so a
/// segment that parses as one was written whole.
fn whole_record(seg: &[u8]) -> Whole {
    let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice::<serde_json::Value>(seg)
    else {
        return Whole::No;
    };
    match obj.get("type").and_then(|t| t.as_str()) {
        Some(name) if !EventKind::is_known_type(name) => Whole::NewerType(name.to_string()),
        Some(_) | None => Whole::Unreadable,
    }
}

fn trim(seg: &[u8]) -> (usize, &[u8]) {
    let start = seg
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(seg.len());
    let end = seg
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    (start, &seg[start..end.max(start)])
}

/// Parses a whole log. Fails only when the log was written with a schema newer than this build
/// knows (or an unknown older one); every other problem is skipped and reported.
pub fn parse_log(bytes: &[u8]) -> Result<ParsedLog, StoreError> {
    parse_from(bytes, 0, None, 0)
}

/// Parses log bytes that start at `base` in the file, after records up to `last_seq`. `schema` is
/// the log's schema when already known from its head.
pub(crate) fn parse_from(
    bytes: &[u8],
    base: u64,
    schema: Option<u32>,
    last_seq: u64,
) -> Result<ParsedLog, StoreError> {
    let mut parser = LogParser::new(base, schema, last_seq);
    parser.feed(bytes, true)?;
    parser.finish()
}

/// Bytes read from a log at a time by [`read_log`]: the whole file is never in memory at once,
/// only the events parsed from it and one block.
const READ_BLOCK: usize = 4 << 20;

/// Reads and parses a whole log from `reader` a block at a time (as [`parse_log`] would parse the
/// whole file). Returns the parsed log and the number of bytes read.
pub(crate) fn read_log(reader: &mut impl std::io::Read) -> Result<(ParsedLog, u64), ReadError> {
    read_log_in_blocks(reader, READ_BLOCK)
}

fn read_log_in_blocks(
    reader: &mut impl std::io::Read,
    block: usize,
) -> Result<(ParsedLog, u64), ReadError> {
    use std::io::Read as _;
    let mut parser = LogParser::new(0, None, 0);
    let mut buf: Vec<u8> = Vec::new();
    let mut total = 0u64;
    loop {
        // Keep the unparsed rest (a record cut by the block's end) and read more after it; a
        // record longer than a block grows the buffer. The buffer grows with what is read (a
        // small log never costs a whole block).
        let want = block.max(buf.len() * 2) - buf.len();
        let n = reader
            .by_ref()
            .take(want as u64)
            .read_to_end(&mut buf)
            .map_err(ReadError::Io)?;
        total += n as u64;
        let at_end = n == 0;
        let used = parser.feed(&buf, at_end).map_err(ReadError::Log)?;
        if at_end {
            break;
        }
        buf.drain(..used);
    }
    Ok((parser.finish().map_err(ReadError::Log)?, total))
}

/// Why [`read_log`] failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// Reading the file.
    Io(std::io::Error),
    /// The log itself (a newer schema).
    Log(StoreError),
}

/// Where the next record boundary (`\n` or NUL) is in `bytes`: eight bytes at a time (a record is
/// hundreds of bytes long, and every byte of the log passes here).
fn boundary(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const NEWLINES: u64 = 0x0a0a_0a0a_0a0a_0a0a;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for c in &mut chunks {
        let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        if zero_byte(v) | zero_byte(v ^ NEWLINES) != 0 {
            break;
        }
        at += 8;
    }
    bytes[at..]
        .iter()
        .position(|&b| b == b'\n' || b == 0)
        .map(|p| at + p)
}

/// A log parser fed a block at a time: whole records are parsed as they come, the rest waits for
/// the next block.
struct LogParser {
    out: ParsedLog,
    /// File offset of the next byte fed.
    base: u64,
    schema: Option<u32>,
    last_seq: u64,
    /// First bad segment since the last good record: reported as skipped once a good one
    /// follows, or cut as the torn tail when none does.
    bad: Option<(u64, String)>,
    /// File offset of the end of the last good record's bytes, and whether a newline follows it.
    good: Option<(u64, bool)>,
    /// First whole record of a type this build does not know since the last good record.
    newer: Option<(u64, String)>,
    /// File offsets of the whole, readable records in `out.events` (before the seq check).
    offsets: Vec<u64>,
    /// Bytes fed in all.
    len: u64,
    /// Records of one feed parsed on two threads from this many on.
    parallel_min: usize,
}

impl LogParser {
    fn new(base: u64, schema: Option<u32>, last_seq: u64) -> Self {
        LogParser {
            out: ParsedLog::default(),
            base,
            schema,
            last_seq,
            bad: None,
            good: None,
            newer: None,
            offsets: Vec::new(),
            len: 0,
            parallel_min: PARALLEL_MIN_RECORDS,
        }
    }

    /// Parses every record of `bytes` that ends in a boundary (and, when `last`, the rest too).
    /// Returns how many bytes were used: the caller feeds the others again, with more after them.
    ///
    /// Parsing a record does not depend on the ones before it (once the schema is known from the
    /// first), so the records are parsed on two threads when there are many, then taken in log
    /// order by [`LogParser::take`]: the result is the same as one record after another.
    fn feed(&mut self, bytes: &[u8], last: bool) -> Result<usize, StoreError> {
        let mut segments: Vec<(usize, usize, Option<u8>)> = Vec::new();
        let mut pos = 0usize;
        while pos < bytes.len() {
            let (end, boundary) = match boundary(&bytes[pos..]) {
                Some(len) => (pos + len, Some(bytes[pos + len])),
                None if last => (bytes.len(), None),
                None => break,
            };
            segments.push((pos, end, boundary));
            pos = end + 1;
        }
        let mut rest = &segments[..];
        // The schema comes from the first record: take records one by one until it is known.
        while self.schema.is_none()
            && let Some((&(start, end, b), tail)) = rest.split_first()
        {
            let raw = &bytes[start..end];
            self.schema_from(trim(raw).1)?;
            let pre = self
                .schema
                .map_or(Pre::Empty, |known| pre_parse(raw, known));
            self.take(raw.len(), self.base + start as u64, b, pre);
            rest = tail;
        }
        if let Some(known) = self.schema {
            let parse = |segs: &[(usize, usize, Option<u8>)]| -> Vec<Pre> {
                segs.iter()
                    .map(|&(s, e, _)| pre_parse(&bytes[s..e], known))
                    .collect()
            };
            let parsed = if rest.len() >= self.parallel_min.max(2) {
                // Two halves of about the same size in bytes.
                let from = rest.first().map_or(0, |r| r.0);
                let to = rest.last().map_or(0, |r| r.1);
                let mid = rest.partition_point(|r| r.0 - from < (to - from) / 2);
                let (a, b) = rest.split_at(mid);
                std::thread::scope(|scope| {
                    let other = scope.spawn(|| parse(b));
                    let mut first = parse(a);
                    let second = other
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                    first.extend(second);
                    first
                })
            } else {
                parse(rest)
            };
            for (&(start, end, b), pre) in rest.iter().zip(parsed) {
                self.take(end - start, self.base + start as u64, b, pre);
            }
        }
        let used = pos.min(bytes.len());
        self.base += used as u64;
        self.len += used as u64;
        Ok(used)
    }

    /// Learns the log's schema from its first non-empty segment `seg` (a newer one is an error).
    fn schema_from(&mut self, seg: &[u8]) -> Result<(), StoreError> {
        if self.schema.is_some() || seg.is_empty() {
            return Ok(());
        }
        let s = schema_of(seg).unwrap_or(SCHEMA_VERSION);
        if s > SCHEMA_VERSION {
            return Err(StoreError::Corrupt(newer_schema_message(s)));
        }
        if s == 0 {
            return Err(StoreError::Corrupt(
                "log schema 0 is unknown to proctor".into(),
            ));
        }
        if s < SCHEMA_VERSION {
            self.out.report.migrated_from = Some(s);
        }
        self.schema = Some(s);
        Ok(())
    }

    /// One segment of `len` bytes between two boundaries, at file offset `at`, followed by
    /// `boundary`, already parsed (`pre`), taken in log order.
    fn take(&mut self, len: usize, at: u64, boundary: Option<u8>, pre: Pre) {
        let end = at + len as u64;
        let newline = boundary == Some(b'\n');
        match pre {
            Pre::Empty => {}
            Pre::Event(lead, event) => {
                flush_skips(&mut self.out.report.skipped, &mut self.bad, &mut self.newer);
                self.offsets.push(at + lead as u64);
                self.out.events.push(event);
                self.good = Some((end, newline));
            }
            Pre::Bad(lead, e, whole) => {
                let offset = at + lead as u64;
                match whole {
                    Whole::NewerType(name) => {
                        // Whole, so never cut: skipped if a record this build knows follows it,
                        // and a reason to refuse the log if none does.
                        if self.newer.is_none() {
                            self.newer = Some((offset, name));
                        }
                    }
                    Whole::Unreadable => {
                        // Written whole, so not torn: skipped, but never cut from the log.
                        flush_skips(&mut self.out.report.skipped, &mut self.bad, &mut self.newer);
                        self.out.report.skipped.push((offset, e));
                        self.good = Some((end, newline));
                    }
                    Whole::No => {
                        if self.bad.is_none() {
                            self.bad = Some((offset, e));
                        }
                    }
                }
            }
        }
        if boundary == Some(0) {
            self.out.report.nul_bytes += 1;
        }
    }

    fn finish(self) -> Result<ParsedLog, StoreError> {
        let LogParser {
            mut out,
            base,
            schema,
            last_seq,
            bad,
            good,
            newer,
            offsets,
            len,
            parallel_min: _,
        } = self;
        keep_in_seq_order(&offsets, last_seq, &mut out);
        if let Some((offset, name)) = newer {
            // The log ends in records of a newer proctor: not a torn tail, and not ours to cut.
            return Err(StoreError::Corrupt(newer_record_message(&name, offset)));
        }
        // `base` is now the file offset of the end of what was fed.
        let start = base - len;
        let good_len = match good {
            Some((end, true)) => end + 1,
            Some((end, false)) => end,
            None => start,
        };
        out.needs_newline = matches!(good, Some((_, false)));
        out.good_len = good_len;
        out.report.truncated_bytes = base - good_len;
        out.report.torn_tail = bad.map(|(_, e)| e);
        out.report.schema = schema.unwrap_or(SCHEMA_VERSION);
        Ok(out)
    }
}

/// Keeps the most records whose seqs strictly increase (after `last_seq`), in file order, and
/// reports the others as skipped. A record whose seq was damaged into a larger number (`15` read
/// as `115`) is the one skipped, never every record after it; a duplicate keeps its first copy.
/// `out.events` holds every readable record, at `offsets` in the file.
fn keep_in_seq_order(offsets: &[u64], last_seq: u64, out: &mut ParsedLog) {
    let records = &out.events;
    // The usual case: every seq is already larger than the one before.
    let mut prev_seq = last_seq;
    if records.iter().all(|ev| {
        let ok = ev.seq > prev_seq;
        prev_seq = ev.seq;
        ok
    }) {
        out.report.skipped.sort_by_key(|(offset, _)| *offset);
        return;
    }
    // Longest strictly increasing subsequence of the seqs (patience sorting): `tails[k]` is the
    // index of the smallest last seq of a kept run of length k + 1; `prev` links the runs.
    let mut tails: Vec<usize> = Vec::new();
    let mut prev: Vec<Option<usize>> = vec![None; records.len()];
    for (i, ev) in records.iter().enumerate() {
        if ev.seq <= last_seq {
            continue;
        }
        let k = tails.partition_point(|&t| records[t].seq < ev.seq);
        prev[i] = k.checked_sub(1).map(|j| tails[j]);
        if k == tails.len() {
            tails.push(i);
        } else if records[tails[k]].seq > ev.seq {
            tails[k] = i;
        }
    }
    let mut keep = vec![false; records.len()];
    let mut at = tails.last().copied();
    while let Some(i) = at {
        keep[i] = true;
        at = prev[i];
    }
    let mut kept_seq = last_seq;
    let mut i = 0;
    let skipped = &mut out.report.skipped;
    out.events.retain(|ev| {
        let k = keep[i];
        if k {
            kept_seq = ev.seq;
        } else {
            skipped.push((
                offsets[i],
                format!(
                    "record seq {} is out of order (the records around it go from seq {kept_seq} on)",
                    ev.seq
                ),
            ));
        }
        i += 1;
        k
    });
    out.report.skipped.sort_by_key(|(offset, _)| *offset);
}

/// The first record of a log, when it is the `session_started` record every log begins with.
pub(crate) fn started(events: &[Event]) -> Option<&Event> {
    events
        .first()
        .filter(|e| matches!(e.kind, EventKind::SessionStarted { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// Read a block at a time, any log (torn, padded with NULs, with garbage and records out
        /// of order) parses exactly as it does whole.
        #[test]
        fn a_log_read_in_blocks_parses_as_it_does_whole(
            parts in proptest::collection::vec((1u64..12, 0u8..8), 0..12),
            cut in 0usize..400,
            block in 1usize..64,
        ) {
            let log = damaged_log(&parts);
            let bytes = &log.as_bytes()[..cut.min(log.len())];
            let whole = parse_log(bytes);
            let read = read_log_in_blocks(&mut &bytes[..], block);
            match (whole, read) {
                (Ok(w), Ok((r, len))) => {
                    prop_assert_eq!(len, bytes.len() as u64);
                    prop_assert_eq!(w.events, r.events);
                    prop_assert_eq!(w.report, r.report);
                    prop_assert_eq!(w.good_len, r.good_len);
                    prop_assert_eq!(w.needs_newline, r.needs_newline);
                }
                (Err(w), Err(ReadError::Log(r))) => prop_assert_eq!(w.to_string(), r.to_string()),
                (w, r) => prop_assert!(false, "whole {:?}, in blocks {:?}", w.map(|p| p.events.len()), r.map(|p| p.0.events.len())),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Parsed on two threads, any log (torn, padded, with garbage, unreadable and newer
        /// records, seqs out of order) gives exactly what one record after another gives.
        #[test]
        fn a_log_parsed_on_two_threads_parses_as_it_does_on_one(
            parts in proptest::collection::vec((1u64..40, 0u8..10), 0..40),
            cut in 0usize..3000,
        ) {
            let log = damaged_log(&parts);
            let bytes = &log.as_bytes()[..cut.min(log.len())];
            let parse = |parallel_min: usize| {
                let mut p = LogParser::new(0, None, 0);
                p.parallel_min = parallel_min;
                p.feed(bytes, true).and_then(|_| p.finish())
            };
            match (parse(usize::MAX), parse(2)) {
                (Ok(one), Ok(two)) => {
                    prop_assert_eq!(one.events, two.events);
                    prop_assert_eq!(one.report, two.report);
                    prop_assert_eq!(one.good_len, two.good_len);
                    prop_assert_eq!(one.needs_newline, two.needs_newline);
                }
                (Err(one), Err(two)) => prop_assert_eq!(one.to_string(), two.to_string()),
                (one, two) => prop_assert!(false, "one thread {:?}, two {:?}", one.map(|p| p.events.len()), two.map(|p| p.events.len())),
            }
        }
    }

    #[test]
    fn record_boundaries_are_found_past_a_word() {
        for len in 0..40 {
            for at in 0..len {
                for b in [b'\n', 0] {
                    let mut bytes = vec![b'x'; len];
                    bytes[at] = b;
                    assert_eq!(boundary(&bytes), Some(at), "{len} {at} {b}");
                }
            }
            assert_eq!(boundary(&vec![b'x'; len]), None);
        }
    }

    /// A log of records (seq, kind): 0 garbage, 1 NULs, 2 blank lines, 3 a whole record of a
    /// newer proctor, 4 a whole record this build cannot read, any other kind a good record.
    fn damaged_log(parts: &[(u64, u8)]) -> String {
        let mut log = String::new();
        for &(seq, damage) in parts {
            match damage {
                0 => log.push_str("garbage{\n"),
                1 => log.push_str("\0\0"),
                2 => log.push_str("\n  \n"),
                3 => log.push_str(&format!("{{\"seq\":{seq},\"type\":\"from_the_future\"}}\n")),
                4 => log.push_str("{\"seq\":\"x\"}\n"),
                _ => log.push_str(&line(seq, "a\u{e9}\u{202E}")),
            }
        }
        log
    }

    fn line(seq: u64, text: &str) -> String {
        let ev = Event {
            seq,
            session: "s".into(),
            ts_ms: 0,
            kind: EventKind::Notice {
                message: text.into(),
            },
        };
        let mut s = serde_json::to_string(&ev).unwrap_or_default();
        s.push('\n');
        s
    }

    #[test]
    fn clean_log_reads_whole() {
        let log = format!("{}{}", line(1, "a"), line(2, "b"));
        let p = parse_log(log.as_bytes()).unwrap();
        assert_eq!(p.events.len(), 2);
        assert_eq!(p.good_len, log.len() as u64);
        assert!(p.report.is_clean());
    }

    #[test]
    fn record_missing_only_its_newline_is_kept() {
        let log = format!("{}{}", line(1, "a"), line(2, "b"));
        let cut = &log[..log.len() - 1];
        let p = parse_log(cut.as_bytes()).unwrap();
        assert_eq!(p.events.len(), 2);
        assert!(p.needs_newline);
        assert_eq!(p.good_len, cut.len() as u64);
    }

    #[test]
    fn a_seq_damaged_upwards_skips_that_record_only() {
        // `"seq":2` damaged into `"seq":12`: records 3.. must survive.
        let log = format!(
            "{}{}{}{}",
            line(1, "a"),
            line(12, "b"),
            line(3, "c"),
            line(4, "d")
        );
        let p = parse_log(log.as_bytes()).unwrap();
        assert_eq!(
            p.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 3, 4]
        );
        assert_eq!(p.report.skipped.len(), 1);
        assert_eq!(p.report.skipped[0].0, line(1, "a").len() as u64);
    }

    #[test]
    fn duplicate_seq_is_skipped() {
        let log = format!("{}{}{}", line(1, "a"), line(1, "a"), line(2, "b"));
        let p = parse_log(log.as_bytes()).unwrap();
        assert_eq!(
            p.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(p.report.skipped.len(), 1);
        assert_eq!(p.report.skipped[0].0, line(1, "a").len() as u64);
    }

    #[test]
    fn a_whole_last_record_of_an_unknown_type_refuses_the_log() {
        let log = format!(
            "{}{}{{\"seq\":3,\"session\":\"s\",\"ts_ms\":0,\"type\":\"hologram\",\"x\":1}}\n",
            line(1, "a"),
            line(2, "b")
        );
        let err = parse_log(log.as_bytes()).expect_err("a newer record is not a torn tail");
        let msg = err.to_string();
        assert!(
            msg.contains("newer proctor") && msg.contains("hologram"),
            "{msg}"
        );
        assert!(msg.contains("upgrade"), "{msg}");
    }

    #[test]
    fn a_whole_unreadable_last_record_is_kept_not_cut() {
        // Known type, wrong shape: reported, never cut.
        let log = format!(
            "{}{{\"seq\":2,\"session\":\"s\",\"type\":\"message\"}}\n",
            line(1, "a")
        );
        let p = parse_log(log.as_bytes()).unwrap();
        assert_eq!(p.events.len(), 1);
        assert_eq!(p.good_len, log.len() as u64);
        assert_eq!(p.report.truncated_bytes, 0);
        assert_eq!(p.report.skipped.len(), 1);
        // A torn one still is cut.
        let torn = format!("{}{{\"seq\":2,\"session\":\"s\",\"ty", line(1, "a"));
        let p = parse_log(torn.as_bytes()).unwrap();
        assert_eq!(p.good_len, line(1, "a").len() as u64);
        assert!(p.report.truncated_bytes > 0);
    }

    #[test]
    fn an_unknown_record_followed_by_known_ones_is_skipped_in_place() {
        let log = format!(
            "{}{{\"seq\":2,\"session\":\"s\",\"type\":\"hologram\"}}\n{}",
            line(1, "a"),
            line(3, "c")
        );
        let p = parse_log(log.as_bytes()).unwrap();
        assert_eq!(p.events.len(), 2);
        assert_eq!(p.good_len, log.len() as u64);
        assert_eq!(p.report.skipped.len(), 1);
        assert!(p.report.skipped[0].1.contains("newer proctor"));
    }
}
