//! HTTP limits, tried with a raw TCP client writing bytes by hand against a real
//! in-process server with small limits: the header-read, keep-alive and upgrade
//! timeouts close what would otherwise be held forever, the connection cap answers
//! the excess with a JSON 503, and every error the server answers is JSON with a
//! stable `error` code.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{API_KEY, WAIT, token};
use realtime_server::Server;
use realtime_server::limits::HttpLimits;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};

/// Limits long enough never to be reached by a test, unless it lowers one.
fn patient() -> HttpLimits {
    HttpLimits {
        header_read_timeout: Duration::from_secs(60),
        request_timeout: Duration::from_secs(60),
        keep_alive_timeout: Duration::from_secs(60),
        upgrade_timeout: Duration::from_secs(60),
        max_connections: 10_000,
    }
}

const SHORT: Duration = Duration::from_millis(500);

/// A running in-process server with `limits`.
struct LimitedServer {
    addr: SocketAddr,
    open: watch::Receiver<usize>,
    _stop: oneshot::Sender<()>,
}

impl LimitedServer {
    async fn start(limits: HttpLimits) -> LimitedServer {
        let mut settings = common::options()
            .resolve(|| "generated-0123456789".into())
            .expect("valid settings");
        settings.http = limits;
        let server = Server::bind(settings).await.expect("server binds");
        let addr = server.local_addr();
        let open = server.watch_open_connections();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        LimitedServer {
            addr,
            open,
            _stop: stop,
        }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.expect("connects")
    }

    /// Waits (bounded) until exactly `n` TCP connections are open on the server.
    async fn wait_for_open(&mut self, n: usize) {
        tokio::time::timeout(WAIT, self.open.wait_for(|open| *open == n))
            .await
            .unwrap_or_else(|_| panic!("expected {n} open connections"))
            .expect("server alive");
    }

    /// Sends `request` on a new connection and reads the answer until the server
    /// closes the connection.
    async fn exchange(&self, request: &[u8]) -> Answer {
        let mut tcp = self.connect().await;
        tcp.write_all(request).await.expect("request written");
        let answer = read_until_closed(&mut tcp).await;
        let answer = answer.unwrap_or_else(|| {
            panic!(
                "still open after {WAIT:?}: {}",
                String::from_utf8_lossy(&request[..request.len().min(120)])
            )
        });
        Answer::parse(&answer)
    }
}

/// Everything the server sends until it closes the connection, or `None` if it
/// is still open after [`WAIT`].
async fn read_until_closed(tcp: &mut TcpStream) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let read = async {
        let mut buf = [0u8; 8192];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(WAIT, read).await.ok()?;
    Some(received)
}

/// Reads one response whose body has a `content-length`, leaving the connection open.
async fn read_response(tcp: &mut TcpStream) -> Answer {
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    tokio::time::timeout(WAIT, async {
        loop {
            let n = tcp.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before a whole response");
            received.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&received);
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = header(&text[..end], "content-length")
                    .expect("content-length")
                    .parse()
                    .unwrap();
                if received.len() >= end + 4 + length {
                    return;
                }
            }
        }
    })
    .await
    .expect("a response in time");
    Answer::parse(&received)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A response as read off the wire.
#[derive(Debug)]
struct Answer {
    raw: String,
    status: u16,
    content_type: Option<String>,
    body: Value,
}

impl Answer {
    fn parse(bytes: &[u8]) -> Answer {
        let raw = String::from_utf8_lossy(bytes).into_owned();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let content_type = header(head, "content-type").map(str::to_owned);
        let body = serde_json::from_str(body).unwrap_or(Value::Null);
        Answer {
            status,
            content_type,
            body,
            raw,
        }
    }

    /// Asserts a JSON error answer with `status` and `code`.
    fn assert_error(&self, status: u16, code: &str, what: &str) {
        assert_eq!(self.status, status, "{what}: {}", self.raw);
        assert_eq!(
            self.content_type.as_deref(),
            Some("application/json"),
            "{what}: {}",
            self.raw
        );
        assert_eq!(self.body["error"], code, "{what}: {}", self.raw);
    }
}

fn upgrade_request(token: &str) -> String {
    format!(
        "GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    )
}

#[tokio::test]
async fn half_sent_headers_are_closed_after_the_header_read_timeout() {
    let server = LimitedServer::start(HttpLimits {
        header_read_timeout: SHORT,
        ..patient()
    })
    .await;
    let mut tcp = server.connect().await;
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .unwrap();
    let sent = read_until_closed(&mut tcp)
        .await
        .expect("the half-sent request is closed, not held open");
    assert!(sent.is_empty(), "nothing is answered: {sent:?}");

    // A connection that never sends a byte is closed the same way.
    let mut silent = server.connect().await;
    let sent = read_until_closed(&mut silent)
        .await
        .expect("a silent connection is closed");
    assert!(sent.is_empty(), "nothing is answered: {sent:?}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout() {
    let server = LimitedServer::start(HttpLimits {
        keep_alive_timeout: SHORT,
        ..patient()
    })
    .await;
    let mut tcp = server.connect().await;
    for _ in 0..2 {
        tcp.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let answer = read_response(&mut tcp).await;
        assert_eq!(answer.status, 200, "{}", answer.raw);
    }
    let sent = read_until_closed(&mut tcp)
        .await
        .expect("the idle keep-alive connection is closed");
    assert!(sent.is_empty(), "nothing more is sent: {sent:?}");
}

#[tokio::test]
async fn the_header_timeout_of_a_later_request_runs_from_its_first_byte() {
    // Idle time between requests is the keep-alive's, not the header timeout's:
    // a second request that starts arriving late and then stalls is closed by the
    // header timeout counted from its first byte.
    let server = LimitedServer::start(HttpLimits {
        header_read_timeout: SHORT,
        ..patient()
    })
    .await;
    let mut tcp = server.connect().await;
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut tcp).await.status, 200);
    tcp.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    let sent = read_until_closed(&mut tcp)
        .await
        .expect("the stalled second request is closed");
    assert!(sent.is_empty(), "nothing is answered: {sent:?}");
}

#[tokio::test]
async fn a_request_whose_body_stalls_is_closed_after_the_request_timeout() {
    let server = LimitedServer::start(HttpLimits {
        request_timeout: SHORT,
        ..patient()
    })
    .await;
    let mut tcp = server.connect().await;
    let head = format!(
        "POST /api/broadcast HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"type\""
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let sent = read_until_closed(&mut tcp)
        .await
        .expect("the request with a stalled body is closed");
    assert!(sent.is_empty(), "nothing is answered: {sent:?}");
}

#[tokio::test]
async fn a_websocket_handshake_longer_than_the_upgrade_timeout_is_refused() {
    let server = LimitedServer::start(HttpLimits {
        upgrade_timeout: SHORT,
        ..patient()
    })
    .await;
    // In time: switched and welcomed.
    let mut prompt = server.connect().await;
    prompt
        .write_all(upgrade_request(&token("alice", &[])).as_bytes())
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains("welcome") {
        let n = tokio::time::timeout(WAIT, prompt.read(&mut buf))
            .await
            .expect("a welcome in time")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buf[..n]);
    }
    assert!(received.starts_with(b"HTTP/1.1 101 "));

    // A handshake whose head trickles in for longer than the upgrade timeout:
    // refused, never switched.
    let mut slow = server.connect().await;
    let request = upgrade_request(&token("bob", &[]));
    let (head, end) = request.split_at(request.len() - 2);
    slow.write_all(head.as_bytes()).await.unwrap();
    // The client's slowness itself, not a wait for the server.
    tokio::time::sleep(SHORT * 2).await;
    slow.write_all(end.as_bytes()).await.unwrap();
    let sent = read_until_closed(&mut slow)
        .await
        .expect("the late handshake is closed");
    Answer::parse(&sent).assert_error(408, "upgrade_timeout", "late handshake");
}

#[tokio::test]
async fn connections_over_max_connections_get_a_json_503_until_a_slot_frees() {
    let mut server = LimitedServer::start(HttpLimits {
        max_connections: 2,
        ..patient()
    })
    .await;
    let plain = server.connect().await;
    // A WebSocket holds a slot for as long as it is open.
    let ws_url = format!("ws://{}/ws?token={}", server.addr, token("carol", &[]));
    let mut ws = common::Client::connect(&ws_url).await;
    server.wait_for_open(2).await;

    let refused = server
        .exchange(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await;
    refused.assert_error(503, "too_many_connections", "third connection");

    drop(plain);
    server.wait_for_open(1).await;
    let served = server
        .exchange(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(served.status, 200, "{}", served.raw);
    assert!(
        served
            .raw
            .contains("realtime_http_connections_refused_total 1"),
        "{}",
        served.raw
    );

    // Closing the WebSocket frees the last slot.
    let _ = ws.ws.close(None).await;
    let _ = ws.recv_close().await;
    server.wait_for_open(0).await;
}

#[tokio::test]
async fn every_error_status_is_json_with_a_stable_code() {
    let server = LimitedServer::start(patient()).await;
    let auth = format!("Authorization: Bearer {API_KEY}\r\n");
    let alice = token("alice", &[]);
    let long_uri = "a".repeat(70_000);
    let many_headers: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(String, u16, &str, &str)> = vec![
        (
            format!(
                "POST /api/users/%FF/messages HTTP/1.1\r\n{auth}\
                 Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
            ),
            400,
            "invalid_path",
            "non-UTF-8 path segment",
        ),
        (
            format!("DELETE /api/connections/%C3%28 HTTP/1.1\r\n{auth}\r\n"),
            400,
            "invalid_path",
            "non-UTF-8 connection id",
        ),
        (
            "POST /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n".into(),
            405,
            "method_not_allowed",
            "POST /health",
        ),
        (
            "POST /ws HTTP/1.1\r\nContent-Length: 0\r\n\r\n".into(),
            405,
            "method_not_allowed",
            "POST /ws",
        ),
        (
            format!("PUT /api/broadcast HTTP/1.1\r\n{auth}Content-Length: 0\r\n\r\n"),
            405,
            "method_not_allowed",
            "PUT /api/broadcast",
        ),
        (
            format!("GET /{long_uri} HTTP/1.1\r\n\r\n"),
            414,
            "uri_too_long",
            "70 kB URI",
        ),
        (
            format!("GET /health HTTP/1.1\r\n{many_headers}\r\n"),
            431,
            "headers_too_large",
            "120 headers",
        ),
        ("GARBAGE\r\n\r\n".into(), 400, "bad_request", "not HTTP"),
        (
            "GET /health HTTP/1.1\r\nBad Header\r\n\r\n".into(),
            400,
            "bad_request",
            "malformed header line",
        ),
        (
            "GET /nope HTTP/1.1\r\n\r\n".into(),
            404,
            "not_found",
            "unknown route",
        ),
        (
            format!("GET /api/nope HTTP/1.1\r\n{auth}\r\n"),
            404,
            "not_found",
            "unknown API route",
        ),
        (
            "GET /api/stats HTTP/1.1\r\n\r\n".into(),
            401,
            "unauthorized",
            "no API key",
        ),
        (
            format!(
                "POST /api/broadcast HTTP/1.1\r\n{auth}\
                 Content-Type: application/json\r\nContent-Length: 2000000\r\n\r\n"
            ),
            413,
            "payload_too_large",
            "body over the limit",
        ),
        (
            format!(
                "POST /api/broadcast HTTP/1.1\r\n{auth}\
                 Content-Type: application/json\r\nContent-Length: 1\r\n\r\n{{"
            ),
            400,
            "invalid_json",
            "bad JSON",
        ),
        (
            format!("GET /api/topics?scope=everywhere HTTP/1.1\r\n{auth}\r\n"),
            400,
            "bad_request",
            "bad query",
        ),
        (
            format!("GET /ws?token={alice} HTTP/1.1\r\n\r\n"),
            400,
            "not_a_websocket_request",
            "GET /ws without upgrade",
        ),
        (
            upgrade_request("not-a-token"),
            401,
            "unauthorized",
            "handshake with a bad token",
        ),
        (
            upgrade_request(&alice).replace("\r\n\r\n", "\r\nOrigin: https://evil.example\r\n\r\n"),
            403,
            "forbidden_origin",
            "handshake from a refused origin",
        ),
    ];
    for (request, status, code, what) in cases {
        // Every request closes its connection, so the answer is all that is read.
        let request = request.replacen("\r\n", "\r\nHost: 127.0.0.1\r\nConnection: close\r\n", 1);
        server
            .exchange(request.as_bytes())
            .await
            .assert_error(status, code, what);
    }
}
