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
    // The read that completed the head may hold the first events too.
    stream.decode()?;
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
        self.decode()
    }

    /// Decodes the bytes read so far into the parser.
    fn decode(&mut self) -> anyhow::Result<()> {
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

    /// A real listener on a free port that reads one request head, hands it
    /// back, and answers with `response` written in `pieces` (each write a
    /// separate segment, so chunk and event boundaries fall mid-read).
    async fn serve_once(
        pieces: Vec<Vec<u8>>,
    ) -> (std::net::SocketAddr, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                socket.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            for piece in pieces {
                socket.write_all(&piece).await.unwrap();
                socket.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            String::from_utf8(head).unwrap()
        });
        (addr, task)
    }

    fn spec(server: std::net::SocketAddr, topic: Option<&str>) -> ConnSpec {
        ConnSpec {
            kind: crate::servers::Kind::Realtime,
            server,
            index: 0,
            token: Some("t0k".into()),
            topic: topic.map(str::to_owned),
            recv_buffer: None,
        }
    }

    fn chunk(data: &[u8]) -> Vec<u8> {
        let mut out = format!("{:x}\r\n", data.len()).into_bytes();
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        out
    }

    #[tokio::test]
    async fn tallies_every_event_of_a_chunked_stream_and_its_close_code() {
        let mut events = String::from(
            "retry: 3000\n\ndata: {\"type\":\"welcome\"}\n\ndata: {\"type\":\"subscribed\",\"topic\":\"bench\"}\n\n",
        );
        for seq in [0, 1, 2, 1, 3] {
            events +=
                &format!("data: {{\"type\":\"bench\",\"seq\":{seq},\"sent\":1}}\n\n: ping\n\n");
        }
        events += "event: close\ndata: {\"type\":\"close\",\"code\":3001,\"reason\":\"server shutting down\"}\n\n";
        // Chunks of 7 bytes, written two at a time: boundaries fall inside
        // fields, inside CRLFs and inside chunk-size lines.
        let mut body: Vec<u8> = events.as_bytes().chunks(7).flat_map(chunk).collect();
        body.extend_from_slice(b"0\r\n\r\n");
        let mut pieces = vec![
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                .to_vec(),
        ];
        pieces.extend(body.chunks(11).map(<[u8]>::to_vec));
        let (addr, server) = serve_once(pieces).await;

        let stream = open(&spec(addr, Some("bench"))).await.unwrap();
        let live = Arc::new(Live::default());
        let (_stop, stop_rx) = watch::channel(false);
        let tracker = receive(stream, Tracker::new(0), live.clone(), stop_rx, false).await;

        let head = server.await.unwrap();
        assert!(
            head.starts_with("GET /sse?topic=bench HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("authorization: Bearer t0k\r\n"), "{head}");
        assert_eq!((tracker.distinct, tracker.duplicated), (4, 1));
        assert!((0..4).all(|seq| tracker.has(seq)));
        assert_eq!(tracker.close_code, Some(3001));
        assert_eq!(live.delivered.load(Ordering::Relaxed), 5);
    }

    #[tokio::test]
    async fn a_stream_that_ends_without_a_close_event_counts_as_dropped() {
        let pieces = vec![
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: {\"type\":\"welcome\"}\n\ndata: {\"seq\":0,\"sent\":1}\n\n".to_vec(),
        ];
        let (addr, server) = serve_once(pieces).await;
        let stream = open(&spec(addr, None)).await.unwrap();
        server.await.unwrap();
        let (_stop, stop_rx) = watch::channel(false);
        let live = Arc::new(Live::default());
        let tracker = receive(stream, Tracker::new(0), live, stop_rx, false).await;
        assert_eq!((tracker.distinct, tracker.close_code), (1, Some(1006)));
    }

    #[tokio::test]
    async fn a_refusal_fails_the_handshake_with_its_status_and_body() {
        let body = r#"{"error":"forbidden","reason":"forbidden","topic":"bench","message":"no"}"#;
        let pieces = vec![
            format!(
                "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        ];
        let (addr, _server) = serve_once(pieces).await;
        let error = open(&spec(addr, Some("bench"))).await.err().unwrap();
        assert_eq!(
            format!("{error:#}"),
            format!("GET /sse refused with 403: {body}")
        );
    }

    #[tokio::test]
    async fn an_error_before_subscribed_fails_the_handshake() {
        let pieces = vec![
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: {\"type\":\"welcome\"}\n\nevent: close\ndata: {\"type\":\"close\",\"code\":3504}\n\n".to_vec(),
        ];
        let (addr, _server) = serve_once(pieces).await;
        let error = open(&spec(addr, Some("bench"))).await.err().unwrap();
        assert!(
            format!("{error:#}").contains("closed during handshake"),
            "{error:#}"
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
