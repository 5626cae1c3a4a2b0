//! Turning a block's raw output bytes into text that is safe to show and store: lossy UTF-8 across
//! chunk boundaries, terminal escape sequences removed, and a cap on what is kept.

/// Incremental sanitizer for one output stream (stdout or stderr).
///
/// Keeps `\n` and `\t`; turns `\r\n` and lone `\r` into `\n`; drops every other control character,
/// every escape sequence (CSI, OSC, DCS/SOS/PM/APC strings, two-byte escapes) and bidi overrides.
#[derive(Debug, Default)]
pub struct Sanitizer {
    pending: Vec<u8>,
    state: EscState,
    pending_cr: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum EscState {
    #[default]
    Normal,
    /// After ESC.
    Esc,
    /// After ESC and intermediates, waiting for the final byte.
    EscIntermediate,
    /// Inside `ESC [` … final.
    Csi,
    /// Inside a string (OSC, DCS, SOS, PM, APC) until BEL or ST.
    Str,
    /// ESC seen inside a string: `\` ends it.
    StrEsc,
}

impl Sanitizer {
    /// Feeds raw bytes; returns the clean text they complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len());
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(bytes);
        let mut rest: &[u8] = &buf;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    self.feed_str(s, &mut out);
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    self.feed_str(std::str::from_utf8(good).unwrap_or_default(), &mut out);
                    match e.error_len() {
                        Some(n) => {
                            self.feed_char('\u{FFFD}', &mut out);
                            rest = &bad[n..];
                        }
                        None => {
                            self.pending = bad.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        out
    }

    /// Ends the stream: flushes an incomplete UTF-8 sequence and a trailing `\r`.
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        if !self.pending.is_empty() {
            self.pending.clear();
            self.feed_char('\u{FFFD}', &mut out);
        }
        if self.pending_cr {
            self.pending_cr = false;
            out.push('\n');
        }
        out
    }

    fn feed_str(&mut self, s: &str, out: &mut String) {
        for c in s.chars() {
            self.feed_char(c, out);
        }
    }

    fn feed_char(&mut self, c: char, out: &mut String) {
        match self.state {
            EscState::Normal => {}
            EscState::Esc => {
                self.state = match c {
                    '[' => EscState::Csi,
                    ']' | 'P' | 'X' | '^' | '_' => EscState::Str,
                    '\u{20}'..='\u{2f}' => EscState::EscIntermediate,
                    _ => EscState::Normal,
                };
                return;
            }
            EscState::EscIntermediate => {
                if !('\u{20}'..='\u{2f}').contains(&c) {
                    self.state = EscState::Normal;
                }
                return;
            }
            EscState::Csi => {
                if ('\u{40}'..='\u{7e}').contains(&c) {
                    self.state = EscState::Normal;
                } else if c == '\u{1b}' {
                    self.state = EscState::Esc;
                }
                return;
            }
            EscState::Str => {
                match c {
                    '\u{07}' | '\u{9c}' => self.state = EscState::Normal,
                    '\u{1b}' => self.state = EscState::StrEsc,
                    _ => {}
                }
                return;
            }
            EscState::StrEsc => {
                self.state = if c == '\\' {
                    EscState::Normal
                } else {
                    EscState::Str
                };
                return;
            }
        }
        if self.pending_cr {
            self.pending_cr = false;
            out.push('\n');
            if c == '\n' {
                return;
            }
        }
        match c {
            '\n' | '\t' => out.push(c),
            '\r' => self.pending_cr = true,
            '\u{1b}' => self.state = EscState::Esc,
            '\u{9b}' => self.state = EscState::Csi,
            '\u{90}' | '\u{98}' | '\u{9d}' | '\u{9e}' | '\u{9f}' => self.state = EscState::Str,
            c if c.is_control() => {}
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {}
            c => out.push(c),
        }
    }
}

/// Keeps the first `limit` bytes of a block's combined output and counts the rest.
#[derive(Debug)]
pub struct OutputCap {
    limit: usize,
    kept: String,
    dropped: u64,
}

impl OutputCap {
    /// A cap of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            kept: String::new(),
            dropped: 0,
        }
    }

    /// Adds clean text; returns the part that was kept (to be streamed), if any.
    pub fn push(&mut self, text: &str) -> Option<String> {
        if self.dropped > 0 {
            // Once something was dropped, nothing later is kept: the kept text stays a prefix.
            self.dropped += text.len() as u64;
            return None;
        }
        let room = self.limit.saturating_sub(self.kept.len());
        if text.len() <= room {
            self.kept.push_str(text);
            return (!text.is_empty()).then(|| text.to_owned());
        }
        let mut cut = room;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        self.dropped += (text.len() - cut) as u64;
        let part = &text[..cut];
        self.kept.push_str(part);
        (!part.is_empty()).then(|| part.to_owned())
    }

    /// Counts bytes dropped before they reached the host (by the in-sandbox launcher).
    pub fn count_dropped(&mut self, bytes: u64) {
        self.dropped += bytes;
    }

    /// Whether anything was dropped.
    pub fn truncated(&self) -> bool {
        self.dropped > 0
    }

    /// Bytes dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The kept text.
    pub fn into_text(self) -> String {
        self.kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(input: &[u8]) -> String {
        let mut s = Sanitizer::default();
        let mut out = s.push(input);
        out.push_str(&s.finish());
        out
    }

    #[test]
    fn strips_colour_and_cursor_sequences() {
        assert_eq!(clean(b"\x1b[31mred\x1b[0m \x1b[2J\x1b[Hok\n"), "red ok\n");
    }

    #[test]
    fn strips_osc_title_and_hyperlinks() {
        assert_eq!(
            clean(b"a\x1b]0;pwned\x07b\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\c"),
            "ablinkc"
        );
    }

    #[test]
    fn escape_split_across_chunks_is_still_removed() {
        let mut s = Sanitizer::default();
        let mut out = s.push(b"x\x1b[3");
        out += &s.push(b"1my");
        assert_eq!(out, "xy");
    }

    #[test]
    fn utf8_split_across_chunks_survives_and_invalid_bytes_become_replacement() {
        let mut s = Sanitizer::default();
        let bytes = "é✓".as_bytes();
        let mut out = s.push(&bytes[..1]);
        out += &s.push(&bytes[1..4]);
        out += &s.push(&bytes[4..]);
        out += &s.push(b"\xff!");
        assert_eq!(out, "é✓\u{FFFD}!");
    }

    #[test]
    fn carriage_returns_become_newlines_and_controls_vanish() {
        assert_eq!(clean(b"a\r\nb\rc\x07\x08\x00d\r"), "a\nb\ncd\n");
        assert_eq!(clean("x\u{202e}y\u{9b}1mz".as_bytes()), "xyz");
    }

    #[test]
    fn cap_keeps_prefix_on_char_boundary_and_counts_the_rest() {
        let mut cap = OutputCap::new(5);
        assert_eq!(cap.push("abc").as_deref(), Some("abc"));
        assert_eq!(cap.push("dé!").as_deref(), Some("d"));
        assert_eq!(cap.push("more"), None);
        assert!(cap.truncated());
        assert_eq!(cap.dropped(), 3 + 4);
        assert_eq!(cap.into_text(), "abcd");
    }
}
