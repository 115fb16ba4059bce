//! The generator's Server-Sent Events connection to our server (`GET /sse`):
//! plain HTTP/1.1 written and read on a tokio `TcpStream` (from the same source
//! addresses as the WebSocket clients), the body decoded and parsed as it
//! arrives, then every event accounted for as a WebSocket frame would be.

mod body;
mod parser;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

pub use body::{Decoder, Framing, Head, parse_head};
pub use parser::{Event, ParseError, Parser};

use crate::client::{self, ConnSpec, HANDSHAKE, Live};
use crate::tracker::Tracker;

/// Bytes read from the socket at a time (the WebSocket clients' read buffer).
const READ_BUFFER: usize = 4 * 1024;
/// Most bytes of a refusal's body kept for the error message.
const REFUSAL_LIMIT: usize = 64 * 1024;

/// An open event stream.
pub struct SseStream {
    tcp: TcpStream,
    /// Bytes read but not yet decoded (an incomplete chunk-size line at most).
    raw: BytesMut,
    decoder: Decoder,
    parser: Parser,
    eof: bool,
}

/// Opens `GET /sse` (subscribing to `spec.topic` if any) with `spec.token` as a
/// bearer token, and reads until the welcome and the topic's `subscribed`
/// event: a message published afterwards reaches the stream.
pub async fn open(spec: &ConnSpec) -> anyhow::Result<SseStream> {
    tokio::time::timeout(HANDSHAKE, open_inner(spec))
        .await
        .context("SSE handshake timed out")?
}

async fn open_inner(spec: &ConnSpec) -> anyhow::Result<SseStream> {
    let mut tcp = client::tcp(spec).await?;
    tcp.write_all(request(spec).as_bytes())
        .await
        .context("sending GET /sse")?;
    let mut raw = BytesMut::with_capacity(READ_BUFFER);
    let head = body::read_head(&mut tcp, &mut raw).await?;
    let mut stream = SseStream {
        tcp,
        raw,
        decoder: Decoder::new(head.framing),
        parser: Parser::new(),
        eof: false,
    };
    if head.status != 200 {
        let text = stream.body_text().await;
        bail!("GET /sse refused with {}: {text}", head.status);
    }
    if !head
        .content_type
        .as_deref()
        .is_some_and(|t| t.starts_with("text/event-stream"))
    {
        bail!(
            "GET /sse answered {:?}, not text/event-stream",
            head.content_type
        );
    }
    stream.expect(r#""welcome""#).await?;
    if spec.topic.is_some() {
        stream.expect(r#""subscribed""#).await?;
    }
    Ok(stream)
}

/// The request line and headers of `spec`'s stream.
fn request(spec: &ConnSpec) -> String {
    let mut path = String::from("/sse");
    if let Some(topic) = &spec.topic {
        path += "?topic=";
        path += &percent_encode(topic);
    }
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nhost: {}\r\naccept: text/event-stream\r\n",
        spec.server
    );
    if let Some(token) = &spec.token {
        request += &format!("authorization: Bearer {token}\r\n");
    }
    request + "\r\n"
}

/// A query value with everything but unreserved characters percent-encoded.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out += &format!("%{byte:02X}"),
        }
    }
    out
}

impl SseStream {
    /// The next event; `None` once the response body or the connection ended.
    pub async fn next_event(&mut self) -> anyhow::Result<Option<Event>> {
        loop {
            if let Some(event) = self.parser.next_event()? {
                return Ok(Some(event));
            }
            if self.decoder.is_done() || self.eof {
                return Ok(None);
            }
            self.read().await?;
        }
    }

    /// Reads once from the socket and decodes what arrived into the parser.
    async fn read(&mut self) -> anyhow::Result<()> {
        self.raw.reserve(READ_BUFFER);
        if self.tcp.read_buf(&mut self.raw).await? == 0 {
            self.eof = true;
            return Ok(());
        }
        let parser = &mut self.parser;
        let used = self.decoder.decode(&self.raw, |bytes| parser.push(bytes))?;
        self.raw.advance(used);
        Ok(())
    }

    /// Reads until an event whose data contains `wanted`; an error frame, a
    /// close event or the end of the stream fails.
    async fn expect(&mut self, wanted: &str) -> anyhow::Result<Event> {
        while let Some(event) = self.next_event().await? {
            if event.event.as_deref() == Some("close") {
                bail!("closed during handshake: {}", event.data);
            }
            if event.data.contains(wanted) {
                return Ok(event);
            }
            if event.data.contains(r#""type":"error""#) {
                bail!("server error: {}", event.data);
            }
        }
        bail!("event stream ended during handshake")
    }

    /// A refusal's body, as text (bounded), for the error message.
    async fn body_text(&mut self) -> String {
        let mut text = Vec::new();
        loop {
            let used = self.decoder.decode(&self.raw, |bytes| {
                text.extend_from_slice(&bytes[..bytes.len().min(REFUSAL_LIMIT - text.len())])
            });
            match used {
                Ok(used) => self.raw.advance(used),
                Err(_) => break,
            }
            if self.decoder.is_done() || self.eof || text.len() >= REFUSAL_LIMIT {
                break;
            }
            self.raw.reserve(READ_BUFFER);
            match self.tcp.read_buf(&mut self.raw).await {
                Ok(0) | Err(_) => self.eof = true,
                Ok(_) => {}
            }
        }
        String::from_utf8_lossy(&text).into_owned()
    }
}

/// The code of our final `event: close` (`{"type":"close","code":N,...}`).
pub fn close_code(data: &str) -> Option<u16> {
    let value: serde_json::Value = serde_json::from_str(data).ok()?;
    value["code"].as_u64().and_then(|c| u16::try_from(c).ok())
}

/// Receives until `stop` turns true or the stream ends, feeding `tracker`, as
/// [`client::receive`] does for a WebSocket: the final close event gives the
/// close code, a stream that ends without one counts as 1006. A `stalled`
/// stream reads nothing until `stop`, then drains what is left (bounded).
pub async fn receive(
    mut stream: SseStream,
    mut tracker: Tracker,
    live: Arc<Live>,
    mut stop: watch::Receiver<bool>,
    stalled: bool,
) -> Tracker {
    if stalled {
        let _ = stop.wait_for(|s| *s).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match stream.next_event().await {
                    Ok(Some(event)) if event.event.as_deref() == Some("close") => {
                        tracker.closed(close_code(&event.data).unwrap_or(1005));
                        break;
                    }
                    Ok(Some(event)) => {
                        tracker.record(&event.data, false);
                    }
                    Ok(None) | Err(_) => {
                        tracker.closed(1006);
                        break;
                    }
                }
            }
        })
        .await;
        return tracker;
    }
    loop {
        let next = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            next = stream.next_event() => next,
        };
        match next {
            Ok(Some(event)) if event.event.as_deref() == Some("close") => {
                tracker.closed(close_code(&event.data).unwrap_or(1005));
                break;
            }
            Ok(Some(event)) => {
                if tracker.record(&event.data, true) {
                    live.delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(None) | Err(_) => {
                tracker.closed(1006);
                break;
            }
        }
    }
    tracker
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_carries_the_token_and_the_encoded_topic() {
        let spec = ConnSpec {
            kind: crate::servers::Kind::Realtime,
            server: "127.0.0.1:9000".parse().unwrap(),
            index: 0,
            token: Some("t0k".into()),
            topic: Some("room:1 a".into()),
            recv_buffer: None,
        };
        assert_eq!(
            request(&spec),
            "GET /sse?topic=room%3A1%20a HTTP/1.1\r\nhost: 127.0.0.1:9000\r\naccept: text/event-stream\r\nauthorization: Bearer t0k\r\n\r\n"
        );
    }

    #[test]
    fn reads_the_close_code_of_the_final_event() {
        assert_eq!(
            close_code(r#"{"type":"close","code":3008,"reason":"slow consumer"}"#),
            Some(3008)
        );
        assert_eq!(close_code("not json"), None);
    }
}
