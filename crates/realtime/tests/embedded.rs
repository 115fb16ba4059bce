//! The library embedded in an axum app as a user would mount it, exercised over real
//! sockets with tokio-tungstenite clients: the welcome frame, cleanup after a client
//! leaves, the inbound size limit (1009), the pong deadline (3012), slow consumers
//! (3008), server-side disconnects (3503) and refused handshakes.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use realtime::{
    ClaimRules, CloseCode, ConnectionId, Delivery, JwtVerifier, Realtime, RealtimeConfig, SendError,
};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};

mod support;

use support::{WAIT, Ws, next_json, next_message};

const SECRET: &[u8] = b"embedded-test-secret";

/// An axum app with the realtime route mounted, serving on a free local port.
struct App {
    rt: Realtime,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl App {
    async fn start(config: RealtimeConfig) -> App {
        let verifier = JwtVerifier::hs256(SECRET, ClaimRules::default()).expect("valid secret");
        let rt = Realtime::new(verifier, config);
        let (addr, server) = support::serve(&rt).await;
        App { rt, addr, server }
    }

    fn url(&self, token: &str) -> String {
        format!("ws://{}/ws?token={token}", self.addr)
    }

    /// Connects `user` with `roles`; returns the client and its (first) welcome frame.
    async fn connect(&self, user: &str, roles: &[&str]) -> (Ws, Value) {
        let (mut ws, _) = tokio::time::timeout(
            WAIT,
            tokio_tungstenite::connect_async(self.url(&token(user, roles))),
        )
        .await
        .expect("handshake in time")
        .expect("handshake accepted");
        let first = next_message(&mut ws).await;
        let Message::Text(text) = first else {
            panic!("the first frame must be the welcome text frame, got {first:?}");
        };
        let welcome: Value = serde_json::from_str(text.as_str()).expect("JSON welcome");
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        (ws, welcome)
    }

    /// Waits (bounded) until exactly `n` connections are registered.
    async fn wait_for_connections(&self, n: usize) {
        let mut count = self.rt.watch_connection_count();
        tokio::time::timeout(WAIT, count.wait_for(|c| *c == n))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "expected {n} connections, have {}",
                    self.rt.connection_count()
                )
            })
            .expect("engine alive");
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn token(user: &str, roles: &[&str]) -> String {
    let now = realtime::unix_seconds(SystemTime::now());
    let claims = json!({"sub": user, "roles": roles, "iat": now, "exp": now + 3600});
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .expect("token signs")
}

/// What a single-node send reports: `local` connections reached, nothing relayed.
fn sent(local: usize) -> Result<Delivery, SendError> {
    Ok(Delivery {
        local,
        relayed: false,
        position: None,
    })
}

fn connection_id(welcome: &Value) -> ConnectionId {
    welcome["connection_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("welcome carries a UUID connection_id: {welcome}"))
}

/// Reads until the close frame, skipping pings; panics on text or a missing close.
async fn expect_close(ws: &mut Ws) -> CloseFrame {
    loop {
        match next_message(ws).await {
            Message::Close(Some(frame)) => return frame,
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn welcome_is_the_first_frame() {
    let app = App::start(RealtimeConfig::default()).await;
    let before = OffsetDateTime::now_utc();
    let (mut ws, welcome) = app.connect("alice", &["admin", "staff"]).await;
    let after = OffsetDateTime::now_utc();

    let object = welcome.as_object().expect("an object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "connection_id",
            "expires_at",
            "roles",
            "timestamp",
            "type",
            "user_id"
        ]
    );
    assert_eq!(welcome["user_id"], "alice");
    assert_eq!(welcome["roles"], json!(["admin", "staff"]));
    let id = connection_id(&welcome);
    // Version 8: the first six bytes are this node's tag.
    assert_eq!(id.get_version_num(), 8);
    assert!(app.rt.is_local(&id));

    let ts = welcome["timestamp"].as_str().expect("string timestamp");
    assert!(ts.ends_with('Z'), "UTC: {ts}");
    let stamped = OffsetDateTime::parse(ts, &Rfc3339).expect("RFC 3339 timestamp");
    assert!(stamped >= before - Duration::from_millis(1) && stamped <= after);

    app.wait_for_connections(1).await;
    let listed = app.rt.connections();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    assert_eq!(listed[0].user_id, "alice");
    assert_eq!(listed[0].roles, ["admin", "staff"]);
    assert_eq!(listed[0].connected_at, ts);

    // The welcome precedes anything sent once the connection is reachable.
    assert_eq!(
        app.rt.send_to_connection(id, json!({"type": "hello"})),
        sent(1)
    );
    assert_eq!(next_json(&mut ws).await["type"], "hello");
}

// Multi-threaded so the broadcaster really runs alongside the connection's setup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_welcome_precedes_sends_racing_the_connect() {
    let app = App::start(RealtimeConfig::default()).await;
    // Broadcast continuously while the client connects, until three broadcasts have
    // reached it: the welcome must still be the first frame (App::connect asserts it).
    let rt = app.rt.clone();
    let broadcaster = tokio::spawn(async move {
        let (mut attempts, mut reached) = (0u64, 0u64);
        while reached < 3 {
            attempts += 1;
            let delivery = rt
                .broadcast(json!({"type": "race", "n": attempts}))
                .unwrap();
            assert!(!delivery.relayed, "a single node relays nothing");
            reached += delivery.local as u64;
            tokio::task::yield_now().await;
        }
        attempts
    });
    let (mut ws, welcome) = app.connect("bob", &[]).await;
    assert_eq!(welcome["user_id"], "bob");
    assert_eq!(welcome["roles"], json!([]));
    let attempts = tokio::time::timeout(WAIT, broadcaster)
        .await
        .expect("broadcaster done in time")
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let frame = next_json(&mut ws).await;
        assert_eq!(frame["type"], "race");
        seen.push(frame["n"].as_u64().unwrap());
    }
    assert_eq!(seen, [attempts - 2, attempts - 1, attempts]);
}

#[tokio::test]
async fn a_closing_client_is_unregistered_with_its_subscriptions() {
    let app = App::start(RealtimeConfig::default()).await;
    let (mut ws, welcome) = app.connect("alice", &[]).await;
    let id = connection_id(&welcome);
    ws.send(Message::Text(
        json!({"action": "subscribe", "topic": "chat:lobby", "ref": "1"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type": "subscribed", "topic": "chat:lobby", "ref": "1"})
    );
    assert_eq!(app.rt.subscribe(id, "order:1").await, Ok(true));
    assert_eq!(app.rt.topics().len(), 2);

    ws.close(None).await.unwrap();
    // The server answers the close handshake, then the stream ends.
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("socket error during the close handshake: {e}"),
        }
    }
    app.wait_for_connections(0).await;
    assert!(app.rt.topics().is_empty(), "{:?}", app.rt.topics());
    assert!(app.rt.connections().is_empty());
    assert_eq!(app.rt.publish("chat:lobby", json!({"type": "t"})), sent(0));
    assert_eq!(
        app.rt.subscribe(id, "order:1").await,
        Err(realtime::SubscribeError::UnknownConnection)
    );
}

#[tokio::test]
async fn a_vanished_client_is_unregistered_with_its_subscriptions() {
    let app = App::start(RealtimeConfig::default()).await;
    let (ws, welcome) = app.connect("alice", &[]).await;
    let (mut other, _) = app.connect("bob", &[]).await;
    let id = connection_id(&welcome);
    assert_eq!(app.rt.subscribe(id, "news").await, Ok(true));
    app.wait_for_connections(2).await;

    drop(ws); // TCP closed with no close handshake
    app.wait_for_connections(1).await;
    assert!(app.rt.topics().is_empty(), "{:?}", app.rt.topics());
    assert!(app.rt.connection(id).is_none());
    assert_eq!(app.rt.broadcast(json!({"type": "still-here"})), sent(1));
    assert_eq!(next_json(&mut other).await["type"], "still-here");
}

#[tokio::test]
async fn an_oversized_inbound_message_closes_with_1009() {
    let app = App::start(RealtimeConfig {
        max_message_size: 1024,
        ..Default::default()
    })
    .await;
    let (mut ws, _) = app.connect("alice", &[]).await;

    // Just under the limit is fine.
    let pad = "p".repeat(900);
    let small = json!({"action": "ping", "ref": pad}).to_string();
    assert!(small.len() < 1024);
    ws.send(Message::Text(small.into())).await.unwrap();
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type": "pong", "ref": pad})
    );

    let big = json!({"action": "ping", "ref": "x".repeat(2000)}).to_string();
    ws.send(Message::Text(big.into())).await.unwrap();
    let frame = expect_close(&mut ws).await;
    assert_eq!(u16::from(frame.code), 1009);
    assert_eq!(u16::from(frame.code), CloseCode::MessageTooBig.code());
    assert_eq!(frame.reason.as_str(), "message too big");
    app.wait_for_connections(0).await;
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_closed_with_3012() {
    const PING_INTERVAL: Duration = Duration::from_millis(100);
    const PONG_TIMEOUT: Duration = Duration::from_millis(200);
    let app = App::start(RealtimeConfig {
        ping_interval: PING_INTERVAL,
        pong_timeout: PONG_TIMEOUT,
        close_timeout: Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    let started = Instant::now();
    let (mut silent, _) = app.connect("silent", &[]).await;

    // A client that keeps reading answers pings (tungstenite replies underneath).
    let (mut lively, lively_welcome) = app.connect("lively", &[]).await;
    let lively_id = connection_id(&lively_welcome);
    let (texts_tx, mut texts) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = lively.next().await {
            if let Message::Text(t) = msg {
                let _ = texts_tx.send(t.to_string());
            }
        }
    });

    // `silent` is never polled, so it never pongs: the server gives up on it.
    app.wait_for_connections(1).await;
    assert!(
        started.elapsed() >= PING_INTERVAL + PONG_TIMEOUT,
        "closed after {:?}, before the pong deadline",
        started.elapsed()
    );
    let remaining = app.rt.connections();
    assert_eq!(remaining.len(), 1);
    assert_eq!(remaining[0].id, lively_id);

    let frame = expect_close(&mut silent).await;
    assert_eq!(u16::from(frame.code), 3012);
    assert_eq!(u16::from(frame.code), CloseCode::NoPong.code());
    assert_eq!(frame.reason.as_str(), "no pong");

    // The answering client is still served.
    assert_eq!(app.rt.broadcast(json!({"type": "alive"})), sent(1));
    let text = tokio::time::timeout(WAIT, texts.recv())
        .await
        .expect("in time")
        .expect("reader alive");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["type"],
        "alive"
    );
    reader.abort();
}

#[tokio::test]
async fn a_slow_socket_consumer_is_closed_with_3008_while_a_reader_gets_everything() {
    const QUEUE: usize = 16;
    /// Far more than loopback socket buffers plus the queue can hold.
    const MAX_MESSAGES: u64 = 4000;
    /// Messages still published (and checked) after the slow consumer is dropped.
    const AFTER_DROP: u64 = 32;
    let app = App::start(RealtimeConfig {
        outbound_queue: QUEUE,
        // An upper bound: the server keeps offering the close frame until the
        // client reads again, so the client must get it.
        close_timeout: Duration::from_secs(30),
        ..Default::default()
    })
    .await;
    let mut registry = prometheus_client::registry::Registry::default();
    app.rt.register_metrics(&mut registry);
    let (mut slow, slow_welcome) = app.connect("slow", &[]).await;
    let (mut reader, reader_welcome) = app.connect("reader", &[]).await;
    let (slow_id, reader_id) = (connection_id(&slow_welcome), connection_id(&reader_welcome));
    assert_eq!(app.rt.subscribe(slow_id, "feed").await, Ok(true));
    assert_eq!(app.rt.subscribe(reader_id, "feed").await, Ok(true));

    let pad = "x".repeat(32 * 1024);
    let started = Instant::now();
    let mut first_refused: Option<u64> = None;
    let mut published = 0;
    while published < MAX_MESSAGES {
        let seq = published;
        let delivery = app
            .rt
            .publish("feed", json!({"type": "tick", "seq": seq, "pad": pad}))
            .unwrap();
        assert!(!delivery.relayed, "a single node relays nothing");
        let delivered = delivery.local;
        published += 1;
        match first_refused {
            None if delivered == 2 => {}
            None => {
                assert_eq!(delivered, 1, "message {seq}: only the slow one is refused");
                first_refused = Some(seq);
            }
            Some(_) => assert_eq!(delivered, 1, "message {seq} after the slow one closed"),
        }
        // The reader keeps up: it has every message, in order, before the next one.
        let got = next_json(&mut reader).await;
        assert_eq!(got["seq"], seq, "reader message order");
        assert_eq!(got["topic"], "feed");
        assert_eq!(got["pad"].as_str().map(str::len), Some(pad.len()));
        if first_refused.is_some_and(|first| seq >= first + AFTER_DROP) {
            break;
        }
    }
    let first_refused = first_refused.expect("the stalled client overflowed its queue");

    // The server unregistered it; the reader is untouched.
    app.wait_for_connections(1).await;
    let listed = app.rt.connections();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, reader_id);
    assert!(app.rt.connection(slow_id).is_none());
    assert_eq!(app.rt.topics().get("feed"), Some(&1));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );

    // Accounted as a slow consumer, once.
    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &registry).unwrap();
    assert!(
        metrics.contains("realtime_disconnects_total{reason=\"slow_consumer\"} 1\n"),
        "{metrics}"
    );

    // What the slow client finally reads: an in-order prefix of the stream (nothing
    // after the overflow), then the 3008 close frame.
    let mut seqs: Vec<u64> = Vec::new();
    let close: Option<CloseFrame> = loop {
        let next = tokio::time::timeout(WAIT, slow.next())
            .await
            .expect("the slow client's stream ends in time");
        match next {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
                if v["type"] == "tick" {
                    seqs.push(v["seq"].as_u64().expect("seq"));
                }
            }
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("the stream failed before the 3008 close frame: {e}"),
            None => panic!("the stream ended without the 3008 close frame"),
        }
    };
    let expected: Vec<u64> = (0..seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "an in-order prefix with none missing");
    assert!(
        (seqs.len() as u64) < first_refused,
        "received {} but message {first_refused} was refused",
        seqs.len()
    );
    let frame = close.expect("the close frame carries a code");
    assert_eq!(u16::from(frame.code), CloseCode::SlowConsumer.code());
    assert_eq!(u16::from(frame.code), 3008);
    assert_eq!(frame.reason.as_str(), "slow consumer");
    eprintln!(
        "slow consumer: refused at message {first_refused}, it read {} frames",
        seqs.len()
    );
}

#[tokio::test]
async fn disconnect_flushes_queued_frames_then_closes_with_3503() {
    let app = App::start(RealtimeConfig::default()).await;
    let (mut ws, welcome) = app.connect("alice", &[]).await;
    let id = connection_id(&welcome);
    app.wait_for_connections(1).await;

    assert_eq!(
        app.rt.send_to_connection(id, json!({"type": "bye-soon"})),
        sent(1)
    );
    assert_eq!(app.rt.disconnect(id).await, Ok(true));
    assert_eq!(app.rt.disconnect(id).await, Ok(false), "already gone");
    assert_eq!(app.rt.connection_count(), 0, "unregistered at once");

    assert_eq!(next_json(&mut ws).await["type"], "bye-soon");
    let frame = expect_close(&mut ws).await;
    assert_eq!(u16::from(frame.code), 3503);
    assert_eq!(u16::from(frame.code), CloseCode::ForceDisconnect.code());
}

#[tokio::test]
async fn a_bad_token_is_refused_with_401_and_registers_nothing() {
    let app = App::start(RealtimeConfig::default()).await;
    let now = realtime::unix_seconds(SystemTime::now());
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "mallory", "exp": now + 3600}),
        &EncodingKey::from_secret(b"another-secret"),
    )
    .unwrap();
    let err = tokio_tungstenite::connect_async(app.url(&forged))
        .await
        .expect_err("handshake refused");
    let tungstenite::Error::Http(response) = err else {
        panic!("expected an HTTP refusal, got {err}");
    };
    assert_eq!(response.status().as_u16(), 401);
    let body: Value = serde_json::from_slice(response.body().as_deref().expect("a body")).unwrap();
    assert_eq!(body["error"], "unauthorized");
    assert_eq!(body["reason"], "bad_signature");
    assert_eq!(app.rt.connection_count(), 0);
}
