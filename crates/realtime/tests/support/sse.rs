//! A real Server-Sent Events client for the tests, written from the HTTP/1.1 and
//! SSE specifications and not from the server's encoder: one request over a
//! plain TCP stream, the response head, a chunked (or sized) body, and the
//! event-stream parser (fields, comments, blank-line dispatch). Shared by the
//! library's and the server's tests (`#[path]`).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound for anything a test awaits; never a schedule.
pub const SSE_WAIT: Duration = Duration::from_secs(5);

/// One dispatched block of the stream: the fields up to a blank line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: Option<String>,
    pub event: Option<String>,
    /// The `data` lines joined with `\n`; `None` without any.
    pub data: Option<String>,
    pub retry: Option<String>,
    pub comments: Vec<String>,
}

impl Event {
    /// The data as JSON.
    pub fn json(&self) -> Value {
        let data = self
            .data
            .as_deref()
            .unwrap_or_else(|| panic!("no data: {self:?}"));
        serde_json::from_str(data).unwrap_or_else(|e| panic!("data is not JSON ({e}): {data}"))
    }
}

/// What opening a stream produced.
pub enum Opened {
    Stream(Box<SseStream>),
    /// A status other than 200, its headers and its body as JSON (`Null` if not).
    Refused(u16, Value),
}

impl Opened {
    pub fn stream(self) -> SseStream {
        match self {
            Opened::Stream(s) => *s,
            Opened::Refused(status, body) => panic!("stream refused: {status} {body}"),
        }
    }

    pub fn refused(self) -> (u16, Value) {
        match self {
            Opened::Refused(status, body) => (status, body),
            Opened::Stream(s) => panic!("expected a refusal, got a stream: {:?}", s.headers),
        }
    }
}

/// An open event stream.
pub struct SseStream {
    pub tcp: TcpStream,
    /// Response headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Bytes read and not decoded from the transfer encoding yet.
    raw: Vec<u8>,
    /// Body bytes not parsed into lines yet.
    body: Vec<u8>,
    framing: Framing,
    ended: bool,
}

enum Framing {
    Chunked,
    Length(usize),
    UntilClose,
}

/// `GET target` with `headers`, over `tcp`.
pub async fn open_on(
    mut tcp: TcpStream,
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> Opened {
    let mut head =
        format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(SSE_WAIT, tcp.read(&mut buf))
            .await
            .expect("a response head in time")
            .unwrap();
        assert!(n > 0, "the server closed before answering: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8(raw[..end].to_vec()).expect("an ASCII head");
    let rest = raw[end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {head}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let framing = if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        Framing::Chunked
    } else if let Some(len) = get("content-length") {
        Framing::Length(len.parse().expect("a content-length"))
    } else {
        Framing::UntilClose
    };
    let mut stream = SseStream {
        tcp,
        headers,
        raw: rest,
        body: Vec::new(),
        framing,
        ended: false,
    };
    if status == 200 {
        return Opened::Stream(Box::new(stream));
    }
    let mut body = Vec::new();
    while stream.fill_body().await {
        body.append(&mut stream.body);
    }
    Opened::Refused(status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// `GET target` with `headers` over a new connection to `addr`.
pub async fn open(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Opened {
    let tcp = TcpStream::connect(addr).await.unwrap();
    open_on(tcp, addr, target, headers).await
}

impl SseStream {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Reads from the socket until more body bytes are decoded; false at the end
    /// of the body (or of the connection).
    async fn fill_body(&mut self) -> bool {
        loop {
            if self.ended {
                return false;
            }
            if self.decode() {
                return true;
            }
            let mut buf = [0u8; 16 * 1024];
            let read = tokio::time::timeout(SSE_WAIT, self.tcp.read(&mut buf))
                .await
                .expect("stream bytes within the wait bound");
            match read {
                Ok(0) | Err(_) => {
                    self.ended = true;
                    if let Framing::UntilClose = self.framing {
                        self.body.append(&mut self.raw);
                        return !self.body.is_empty();
                    }
                    return false;
                }
                Ok(n) => self.raw.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Moves what `raw` holds of the body into `body`; whether it moved any.
    fn decode(&mut self) -> bool {
        match &mut self.framing {
            Framing::UntilClose => {
                let moved = !self.raw.is_empty();
                self.body.append(&mut self.raw);
                moved
            }
            Framing::Length(left) => {
                let n = (*left).min(self.raw.len());
                self.body.extend(self.raw.drain(..n));
                *left -= n;
                if *left == 0 {
                    self.ended = true;
                }
                n > 0
            }
            Framing::Chunked => {
                let mut moved = false;
                loop {
                    let Some(line) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                        return moved;
                    };
                    let size_text = std::str::from_utf8(&self.raw[..line]).unwrap();
                    let size_text = size_text.split(';').next().unwrap().trim();
                    let size = usize::from_str_radix(size_text, 16)
                        .unwrap_or_else(|_| panic!("a chunk size: {size_text:?}"));
                    if size == 0 {
                        self.ended = true;
                        return moved;
                    }
                    let start = line + 2;
                    if self.raw.len() < start + size + 2 {
                        return moved;
                    }
                    assert_eq!(&self.raw[start + size..start + size + 2], b"\r\n");
                    self.body.extend_from_slice(&self.raw[start..start + size]);
                    self.raw.drain(..start + size + 2);
                    moved = true;
                }
            }
        }
    }

    /// The next body line (without its line ending), `None` at the end.
    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.body.iter().position(|&b| b == b'\n' || b == b'\r') {
                let mut line: Vec<u8> = self.body.drain(..=i).collect();
                let ending = line.pop();
                if ending == Some(b'\r') {
                    // CRLF is one line ending; a CR waits for the byte after it.
                    if self.body.is_empty() {
                        self.fill_body().await;
                    }
                    if self.body.first() == Some(&b'\n') {
                        self.body.remove(0);
                    }
                }
                return Some(String::from_utf8(line).expect("UTF-8 events"));
            }
            if !self.fill_body().await {
                return None;
            }
        }
    }

    /// The next dispatched block (an event, or comments or fields without data),
    /// `None` once the body ends. Bounded by [`SSE_WAIT`] per read.
    pub async fn next_block(&mut self) -> Option<Event> {
        let mut event = Event::default();
        let mut seen = false;
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                if seen {
                    return Some(event);
                }
                continue;
            }
            seen = true;
            if let Some(comment) = line.strip_prefix(':') {
                event.comments.push(comment.trim_start().to_owned());
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match field {
                "data" => match &mut event.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => event.data = Some(value.to_owned()),
                },
                "id" => event.id = Some(value.to_owned()),
                "event" => event.event = Some(value.to_owned()),
                "retry" => event.retry = Some(value.to_owned()),
                _ => {}
            }
        }
    }

    /// The next block that carries data (skipping heartbeat comments).
    pub async fn next_event(&mut self) -> Option<Event> {
        loop {
            let block = self.next_block().await?;
            if block.data.is_some() {
                return Some(block);
            }
        }
    }

    /// The next event's data as JSON; panics at the end of the stream.
    pub async fn next_json(&mut self) -> Value {
        self.next_event()
            .await
            .expect("an event before the stream ends")
            .json()
    }

    /// Reads to the `close` event; returns it and the events before it, and
    /// checks the body ends right after it.
    pub async fn until_close(&mut self) -> (Value, Vec<Event>) {
        let mut before = Vec::new();
        loop {
            let event = self.next_event().await.unwrap_or_else(|| {
                panic!("the stream ended without a close event after {before:?}")
            });
            if event.event.as_deref() == Some("close") {
                let close = event.json();
                let after = self.next_block().await;
                assert_eq!(after, None, "the body ends after the close event");
                return (close, before);
            }
            before.push(event);
        }
    }
}
