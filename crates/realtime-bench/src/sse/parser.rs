//! An incremental Server-Sent Events parser: bytes in as they arrive, events out
//! (`data:` lines joined with `\n`, `event:` and `id:` fields, blank line ends
//! an event), comments counted, `retry:` kept; lines may end in LF, CRLF or CR
//! and may be split anywhere across reads.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The `event:` field, when one was given (`close` for our final event).
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The `id:` field of this event, when it had one.
    pub id: Option<String>,
}

/// A line longer than this is a broken stream, not an event to buffer forever.
pub const MAX_LINE: usize = 1 << 20;

/// Why the stream cannot be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("an SSE line longer than {MAX_LINE} bytes")]
    LineTooLong,
}

/// Feed it with [`Parser::push`], drain it with [`Parser::next_event`].
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    /// Start of the bytes not yet parsed.
    pos: usize,
    /// The last line ended in CR at the end of a read: a LF that starts the
    /// next read belongs to it.
    skip_lf: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
    id: Option<String>,
    /// Comment lines seen (`: ping` heartbeats).
    pub comments: u64,
    /// The last `retry:` value, in milliseconds.
    pub retry_ms: Option<u64>,
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete event, if the bytes pushed so far hold one.
    pub fn next_event(&mut self) -> Result<Option<Event>, ParseError> {
        loop {
            if self.skip_lf && self.pos < self.buf.len() {
                self.skip_lf = false;
                if self.buf[self.pos] == b'\n' {
                    self.pos += 1;
                }
            }
            let rest = &self.buf[self.pos..];
            let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
                if rest.len() > MAX_LINE {
                    return Err(ParseError::LineTooLong);
                }
                return Ok(None);
            };
            let (start, line_end) = (self.pos, self.pos + end);
            self.pos = line_end + 1;
            if self.buf[line_end] == b'\r' {
                match self.buf.get(self.pos) {
                    Some(b'\n') => self.pos += 1,
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            if start == line_end {
                if let Some(event) = self.dispatch() {
                    return Ok(Some(event));
                }
                continue;
            }
            self.field(start, line_end);
        }
    }

    /// Applies one non-empty line `buf[start..end]`.
    fn field(&mut self, start: usize, end: usize) {
        let line = &self.buf[start..end];
        if line[0] == b':' {
            self.comments += 1;
            return;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        let text = || String::from_utf8_lossy(value);
        match name {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&text());
                self.has_data = true;
            }
            b"event" => self.event = Some(text().into_owned()),
            b"id" if !value.contains(&0) => self.id = Some(text().into_owned()),
            b"retry" => {
                if let Ok(ms) = std::str::from_utf8(value).unwrap_or("").parse() {
                    self.retry_ms = Some(ms);
                }
            }
            _ => {}
        }
    }

    /// A blank line: the event so far, unless it had no data (then nothing, as
    /// a browser does).
    fn dispatch(&mut self) -> Option<Event> {
        let event = self.event.take();
        let id = self.id.take();
        if !std::mem::take(&mut self.has_data) {
            self.data.clear();
            return None;
        }
        Some(Event {
            event,
            data: std::mem::take(&mut self.data),
            id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "retry: 2000\n\n: ping\n\ndata: {\"type\":\"welcome\"}\n\nid: c1\ndata: a\ndata:b\n\nevent: close\r\ndata: {\"type\":\"close\",\"code\":3001}\r\n\r\nid: x\n\n";

    fn expected() -> Vec<Event> {
        vec![
            Event {
                data: r#"{"type":"welcome"}"#.into(),
                ..Event::default()
            },
            Event {
                data: "a\nb".into(),
                id: Some("c1".into()),
                ..Event::default()
            },
            Event {
                event: Some("close".into()),
                data: r#"{"type":"close","code":3001}"#.into(),
                id: None,
            },
        ]
    }

    fn all(parser: &mut Parser) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(event) = parser.next_event().unwrap() {
            out.push(event);
        }
        out
    }

    #[test]
    fn parses_a_stream_pushed_at_once() {
        let mut parser = Parser::new();
        parser.push(STREAM.as_bytes());
        assert_eq!(all(&mut parser), expected());
        assert_eq!(parser.comments, 1);
        assert_eq!(parser.retry_ms, Some(2000));
    }

    #[test]
    fn parses_the_same_events_whatever_the_read_boundaries() {
        let bytes = STREAM.as_bytes();
        for split in 0..=bytes.len() {
            let mut parser = Parser::new();
            parser.push(&bytes[..split]);
            let mut events = all(&mut parser);
            parser.push(&bytes[split..]);
            events.extend(all(&mut parser));
            assert_eq!(events, expected(), "split at {split}");
        }
        let mut parser = Parser::new();
        let mut events = Vec::new();
        for byte in bytes {
            parser.push(std::slice::from_ref(byte));
            events.extend(all(&mut parser));
        }
        assert_eq!(events, expected(), "one byte at a time");
        assert_eq!(parser.comments, 1);
    }

    #[test]
    fn lone_cr_ends_lines_and_a_cr_at_a_read_end_may_be_followed_by_lf() {
        let mut parser = Parser::new();
        parser.push(b"data: one\r");
        assert_eq!(parser.next_event().unwrap(), None);
        parser.push(b"\n\rdata: two\r\r");
        let events = all(&mut parser);
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(
            (events[0].data.as_str(), events[1].data.as_str()),
            ("one", "two")
        );
    }

    #[test]
    fn an_endless_line_is_an_error_not_a_growing_buffer() {
        let mut parser = Parser::new();
        parser.push(&vec![b'x'; MAX_LINE + 1]);
        assert_eq!(parser.next_event(), Err(ParseError::LineTooLong));
    }
}
