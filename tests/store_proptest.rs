//! Whatever a crash or a bad disk does to one stretch of a log, loading never panics and every
//! record outside the damaged stretch comes back.

mod store_support;

use proctor::protocol::Event;
use proctor::store::parse_log;
use proptest::prelude::*;
use store_support::{events_of, every_kind};

fn log() -> (Vec<Event>, Vec<u8>, Vec<(usize, usize)>) {
    let events: Vec<Event> = events_of("s", every_kind());
    let mut bytes = Vec::new();
    let mut spans = Vec::new();
    for ev in &events {
        let start = bytes.len();
        serde_json::to_writer(&mut bytes, ev).unwrap();
        bytes.push(b'\n');
        spans.push((start, bytes.len()));
    }
    (events, bytes, spans)
}

#[derive(Debug, Clone)]
enum Damage {
    /// Overwrite `len` bytes at `at` with `byte`.
    Overwrite { at: usize, len: usize, byte: u8 },
    /// Cut the log at `at`.
    Truncate { at: usize },
    /// Cut the log at `at` and pad with `len` NULs.
    TruncatePad { at: usize, len: usize },
    /// Insert `len` copies of `byte` at `at`.
    Insert { at: usize, len: usize, byte: u8 },
}

fn damage() -> impl Strategy<Value = Damage> {
    let byte = prop_oneof![Just(0u8), Just(b'\n'), Just(b'{'), Just(b'"'), any::<u8>()];
    prop_oneof![
        (0usize..6000, 1usize..200, byte.clone()).prop_map(|(at, len, byte)| Damage::Overwrite {
            at,
            len,
            byte
        }),
        (0usize..6000).prop_map(|at| Damage::Truncate { at }),
        (0usize..6000, 1usize..5000).prop_map(|(at, len)| Damage::TruncatePad { at, len }),
        (0usize..6000, 1usize..50, byte).prop_map(|(at, len, byte)| Damage::Insert {
            at,
            len,
            byte
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn records_outside_the_damage_survive(d in damage()) {
        let (events, clean, spans) = log();
        let mut bytes = clean.clone();
        // The damaged byte range [lo, hi) in the original log.
        let (lo, hi) = match d {
            Damage::Overwrite { at, len, byte } => {
                let at = at % clean.len();
                let end = (at + len).min(clean.len());
                for b in &mut bytes[at..end] {
                    *b = byte;
                }
                (at, end)
            }
            Damage::Truncate { at } => {
                let at = at % (clean.len() + 1);
                bytes.truncate(at);
                (at, clean.len())
            }
            Damage::TruncatePad { at, len } => {
                let at = at % (clean.len() + 1);
                bytes.truncate(at);
                bytes.extend(std::iter::repeat_n(0u8, len));
                (at, clean.len())
            }
            Damage::Insert { at, len, byte } => {
                let at = at % (clean.len() + 1);
                bytes.splice(at..at, std::iter::repeat_n(byte, len));
                (at, at)
            }
        };
        let parsed = match parse_log(&bytes) {
            Ok(p) => p,
            // Damage inside a type name can leave a whole record of a type this build does not
            // know at the end: that is what a newer proctor's record looks like, so the log is
            // refused (and left alone) rather than cut.
            Err(e) if e.to_string().contains("newer proctor") => return Ok(()),
            Err(e) => panic!("a damaged log still loads, got {e}"),
        };
        // Every record is kept whose bytes, newline and preceding newline all lie outside the damage.
        for (ev, &(start, end)) in events.iter().zip(&spans) {
            if end <= lo || start > hi {
                prop_assert!(parsed.events.contains(ev), "lost seq {} with damage {:?}", ev.seq, d);
            }
        }
        // In order. (Damage inside a string can leave a valid record with other text: without
        // checksums that is indistinguishable from what was written.)
        let seqs: Vec<u64> = parsed.events.iter().map(|e| e.seq).collect();
        prop_assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        // What is kept of the file ends on a record boundary (or needs only its newline).
        let kept = &bytes[..parsed.good_len as usize];
        prop_assert!(kept.is_empty() || kept.ends_with(b"\n") || parsed.needs_newline);
    }
}
