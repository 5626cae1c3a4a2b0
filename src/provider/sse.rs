//! An incremental Server-Sent Events parser with a bounded buffer.
//!
//! Both provider wire formats stream SSE. Network chunks can split anywhere (inside a line, inside a
//! multi-byte UTF-8 character, between the CR and LF of a line ending), lines may end in CRLF, LF or
//! a lone CR, and a hostile or broken server can send an event of any size: this parser copes with
//! all of it and refuses events larger than its limit with a clear error instead of growing without
//! bound. It follows the WHATWG "event stream interpretation" rules.

/// Default cap on one event (its `data` plus the line being read): 4 MiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:` field; `message` when the server named none.
    pub event: String,
    /// `data:` lines joined with `\n`.
    pub data: String,
    /// Last `id:` field seen, if any.
    pub id: Option<String>,
}

/// Why the parser gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// An event grew past the limit.
    #[error("server-sent event larger than {limit} bytes; refusing to buffer it")]
    EventTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
}

/// Incremental parser: feed it byte chunks with [`SseParser::push`], collect the finished events.
#[derive(Debug)]
pub struct SseParser {
    max_event_bytes: usize,
    /// Bytes of the current, unfinished line.
    line: Vec<u8>,
    /// The previous chunk ended with CR: a leading LF of the next chunk belongs to that line ending.
    after_cr: bool,
    /// Still at the very start of the stream (a UTF-8 BOM there is skipped).
    at_start: bool,
    event: String,
    data: String,
    has_data: bool,
    last_id: Option<String>,
    failed: bool,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SseParser {
    /// A parser with the default event size limit.
    pub fn new() -> Self {
        Self::with_limit(DEFAULT_MAX_EVENT_BYTES)
    }

    /// A parser refusing events larger than `max_event_bytes`.
    pub fn with_limit(max_event_bytes: usize) -> Self {
        Self {
            max_event_bytes,
            line: Vec::new(),
            after_cr: false,
            at_start: true,
            event: String::new(),
            data: String::new(),
            has_data: false,
            last_id: None,
            failed: false,
        }
    }

    /// Feeds one chunk of the byte stream; returns the events it completed, in order.
    /// After an error the parser stays failed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        if self.failed {
            return Err(SseError::EventTooLarge {
                limit: self.max_event_bytes,
            });
        }
        let mut out = Vec::new();
        let mut rest = chunk;
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if let Some((&b'\n', tail)) = rest.split_first() {
                rest = tail;
            }
        }
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(pos) => {
                    self.extend_line(&rest[..pos])?;
                    let is_cr = rest[pos] == b'\r';
                    rest = &rest[pos + 1..];
                    if is_cr {
                        match rest.first() {
                            Some(b'\n') => rest = &rest[1..],
                            Some(_) => {}
                            None => self.after_cr = true,
                        }
                    }
                    let line = std::mem::take(&mut self.line);
                    if let Some(ev) = self.process_line(&line)? {
                        out.push(ev);
                    }
                }
                None => {
                    self.extend_line(rest)?;
                    rest = &[];
                }
            }
        }
        Ok(out)
    }

    /// True when the stream stopped in the middle of an event (bytes were read but never
    /// dispatched by a blank line). Per the SSE rules such an event is discarded.
    pub fn has_partial_event(&self) -> bool {
        !self.line.is_empty() || self.has_data || !self.event.is_empty()
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len() + self.data.len() + bytes.len() > self.max_event_bytes {
            self.failed = true;
            self.line = Vec::new();
            self.data = String::new();
            return Err(SseError::EventTooLarge {
                limit: self.max_event_bytes,
            });
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn process_line(&mut self, raw: &[u8]) -> Result<Option<SseEvent>, SseError> {
        let mut raw = raw;
        if self.at_start {
            self.at_start = false;
            if let Some(tail) = raw.strip_prefix(b"\xEF\xBB\xBF".as_slice()) {
                raw = tail;
            }
        }
        if raw.is_empty() {
            return Ok(self.dispatch());
        }
        if raw[0] == b':' {
            return Ok(None); // comment
        }
        let line = String::from_utf8_lossy(raw);
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                if self.data.len() + value.len() + 1 > self.max_event_bytes {
                    self.failed = true;
                    self.data = String::new();
                    return Err(SseError::EventTooLarge {
                        limit: self.max_event_bytes,
                    });
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.last_id = Some(value.to_string()),
            // `retry:` tells browsers how to reconnect; a chat completion is never re-sent.
            _ => {}
        }
        Ok(None)
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = std::mem::take(&mut self.event);
        let data = std::mem::take(&mut self.data);
        let had_data = std::mem::replace(&mut self.has_data, false);
        if !had_data {
            return None;
        }
        Some(SseEvent {
            event: if event.is_empty() {
                "message".into()
            } else {
                event
            },
            data,
            id: self.last_id.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        chunks
            .iter()
            .flat_map(|c| p.push(c).unwrap_or_default())
            .collect()
    }

    #[test]
    fn named_event_and_multiline_data() {
        let evs = all(&[b"event: ping\ndata: a\ndata:b\n\n"]);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].event, "ping");
        assert_eq!(evs[0].data, "a\nb");
    }

    #[test]
    fn cr_split_from_lf_across_chunks_is_one_line_ending() {
        let evs = all(&[b"data: x\r", b"\n\r", b"\n"]);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].data, "x");
    }

    #[test]
    fn empty_data_event_is_still_dispatched() {
        let evs = all(&[b"data\n\n"]);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].data, "");
    }
}
