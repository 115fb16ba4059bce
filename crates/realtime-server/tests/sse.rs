//! The SSE transport against a real server, read by a real HTTP/1.1 client with
//! its own event-stream parser: the stream carries what a WebSocket gets, as the
//! same JSON; refusals are JSON before any stream; history topics resume from
//! `Last-Event-ID` with no gap and no duplicate (tallied against what the test
//! published); the heartbeat, token expiry, shutdown, force disconnect, the
//! per-user limit and slow or vanished clients end streams as on a WebSocket;
//! and a stream is a connection like any other for the HTTP API and the metrics.

mod common;
#[path = "../../realtime/tests/support/sse.rs"]
mod sse;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use realtime_server::Options;
use serde_json::{Value, json};
use sse::{Event, SseStream};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpSocket;
use tokio::process::Command;

/// `/sse` with `token` and a `topic` parameter per topic.
fn target(token: &str, topics: &[&str]) -> String {
    let mut target = format!("/sse?token={token}");
    for topic in topics {
        target.push_str("&topic=");
        target.push_str(&query_escape(topic));
    }
    target
}

/// Percent-encodes what a query value may not carry as it is.
fn query_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Opens a stream for `user` on `topics`; returns it after its welcome.
async fn open(server: &TestServer, user: &str, topics: &[&str]) -> (SseStream, Value) {
    open_with(server, user, topics, &[]).await
}

async fn open_with(
    server: &TestServer,
    user: &str,
    topics: &[&str],
    headers: &[(&str, &str)],
) -> (SseStream, Value) {
    let target = target(&token(user, &[]), topics);
    let mut stream = sse::open(server.addr, &target, headers).await.stream();
    let welcome = stream.next_json().await;
    assert_eq!(
        welcome["type"], "welcome",
        "the welcome comes first: {welcome}"
    );
    (stream, welcome)
}

/// The `subscribed` event of a topic, which on a history topic carries an id.
async fn expect_subscribed(stream: &mut SseStream, topic: &str) -> (Event, Value) {
    let event = stream.next_event().await.expect("a subscribed event");
    let frame = event.json();
    assert_eq!(
        (frame["type"].as_str(), frame["topic"].as_str()),
        (Some("subscribed"), Some(topic)),
        "{frame}"
    );
    (event, frame)
}

async fn publish_seq(server: &TestServer, topic: &str, seq: u64) {
    let (status, body) = server
        .post(
            &format!("/api/topics/{topic}/messages"),
            json!({"type": "tick", "seq": seq}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Reads `n` publications of `topic`, each with an id; returns their `seq`s and
/// the last id.
async fn read_ticks(stream: &mut SseStream, topic: &str, n: usize) -> (Vec<u64>, String) {
    let mut seqs = Vec::new();
    let mut last = String::new();
    for _ in 0..n {
        let event = stream.next_event().await.expect("a publication");
        let frame = event.json();
        assert_eq!(frame["topic"], topic, "{frame}");
        assert!(frame["offset"].is_u64(), "a history publication: {frame}");
        last = event
            .id
            .clone()
            .unwrap_or_else(|| panic!("an id on {frame}"));
        seqs.push(frame["seq"].as_u64().unwrap());
    }
    (seqs, last)
}

#[tokio::test]
async fn the_stream_starts_with_retry_then_the_welcome_a_websocket_gets() {
    let server = TestServer::start().await;
    let mut stream = sse::open(server.addr, &target(&token("ann", &["staff"]), &[]), &[])
        .await
        .stream();
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    assert_eq!(stream.header("cache-control"), Some("no-cache"));
    assert_eq!(stream.header("x-accel-buffering"), Some("no"));
    let first = stream.next_block().await.unwrap();
    assert_eq!(first.data, None, "{first:?}");
    let retry: u64 = first.retry.as_deref().unwrap().parse().unwrap();
    assert!(retry > 0);
    let welcome = stream.next_event().await.unwrap();
    assert_eq!((&welcome.id, &welcome.event), (&None, &None), "{welcome:?}");
    let sse_welcome = welcome.json();

    let mut ws = Client::connect(&server.ws_url(&token("ann", &["staff"]))).await;
    let ws_welcome = ws.recv().await;
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&sse_welcome), keys(&ws_welcome));
    for field in ["type", "user_id", "roles", "expires_at"] {
        assert_eq!(sse_welcome[field], ws_welcome[field], "{field}");
    }
    assert_ne!(sse_welcome["connection_id"], ws_welcome["connection_id"]);
}

#[tokio::test]
async fn every_send_arrives_as_the_json_a_websocket_gets() {
    let server = TestServer::start().await;
    let (mut stream, welcome) = open(&server, "una", &["news"]).await;
    let sse_id = welcome["connection_id"].as_str().unwrap().to_owned();
    let (subscribed, _) = expect_subscribed(&mut stream, "news").await;
    let mut ws = server.connect("una", &[]).await;
    let reply = ws
        .command(json!({"action": "subscribe", "topic": "news"}))
        .await;
    assert_eq!(
        subscribed.json(),
        reply,
        "the same subscribed frame, without a ref"
    );
    assert_eq!(subscribed.id, None, "no id off history topics");

    let sends = [
        (
            "/api/users/una/messages",
            json!({"type": "to-user", "n": 1}),
        ),
        ("/api/broadcast", json!({"type": "to-all", "n": 2})),
        (
            "/api/topics/news/messages",
            json!({"type": "to-topic", "n": 3}),
        ),
    ];
    for (path, body) in sends {
        let (status, answer) = server.post(path, body).await;
        assert_eq!(status, 200, "{path}: {answer}");
        let on_ws = ws.recv().await;
        let event = stream.next_event().await.unwrap();
        assert_eq!(event.json(), on_ws, "{path}");
        assert_eq!((event.id, event.event), (None, None));
    }
    // Roles: a connection of another user with the role gets the same frame.
    let mut staff_ws = server.connect("vic", &["staff"]).await;
    let target = target(&token("vic", &["staff"]), &[]);
    let mut staff = sse::open(server.addr, &target, &[]).await.stream();
    assert_eq!(staff.next_json().await["type"], "welcome");
    let (status, _) = server
        .post("/api/roles/staff/messages", json!({"type": "to-role"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(staff.next_json().await, staff_ws.recv().await);
    // One connection: the same body (and timestamp) to each by id.
    let body = json!({"type": "to-connection", "timestamp": "2027-01-01T00:00:00.000Z"});
    for id in [&sse_id, &ws.id] {
        let (status, answer) = server
            .post(&format!("/api/connections/{id}/messages"), body.clone())
            .await;
        assert_eq!(status, 200, "{answer}");
    }
    assert_eq!(stream.next_json().await, ws.recv().await);
}

#[tokio::test]
async fn refusals_are_json_before_any_stream_and_open_nothing() {
    let server = TestServer::start().await;
    let alice = token("alice", &[]);
    let refused = |target: String, headers: Vec<(&'static str, String)>| {
        let addr = server.addr;
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            sse::open(addr, &target, &headers).await.refused()
        }
    };

    let (status, body) = refused(target(&alice, &["news", "user:bob", "user:carl"]), vec![]).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"], "forbidden", "{body}");
    assert_eq!(body["reason"], "forbidden", "{body}");
    assert_eq!(
        body["topic"], "user:bob",
        "the first refused topic is named: {body}"
    );
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );

    let (status, body) = refused(target(&alice, &["news", "bad topic"]), vec![]).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_topic", "{body}");
    assert_eq!(body["topic"], "bad topic", "{body}");

    let (status, body) = refused(target("not-a-jwt", &["news"]), vec![]).await;
    assert_eq!(status, 401);
    assert_eq!(
        (&body["error"], &body["reason"]),
        (&json!("unauthorized"), &json!("malformed"))
    );
    let (status, body) = refused("/sse?topic=news".into(), vec![]).await;
    assert_eq!((status, &body["reason"]), (401, &json!("missing_token")));

    let (status, body) = refused(
        target(&alice, &["news"]),
        vec![("Origin", "https://evil.example".into())],
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(body["error"], "forbidden_origin", "{body}");

    let many: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let (status, body) = refused(target(&alice, &many), vec![]).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "limit_exceeded", "{body}");

    assert_eq!(server.rt.connection_count(), 0, "nothing was registered");
    // Each refusal is counted once, by its reason, as a WebSocket handshake's is.
    let metrics = server.metrics_text().await;
    for reason in [
        "forbidden_topic",
        "invalid_topic",
        "malformed",
        "missing_token",
        "forbidden_origin",
        "limit_exceeded",
    ] {
        let series = format!(r#"realtime_handshakes_rejected_total{{reason="{reason}"}}"#);
        assert_eq!(metric(&metrics, &series), Some(1.0), "{series}: {metrics}");
    }
    // The header's token wins over the query's.
    let mut stream = sse::open(
        server.addr,
        &target("not-a-jwt", &[]),
        &[("Authorization", &format!("Bearer {alice}"))],
    )
    .await
    .stream();
    assert_eq!(stream.next_json().await["user_id"], "alice");
}

#[tokio::test]
async fn a_page_of_an_allowed_origin_may_read_the_stream_and_no_other_is_named() {
    let server = TestServer::start_with(Options {
        allowed_origins: vec!["https://app.example".into()],
        ..options()
    })
    .await;
    let header = |stream: &SseStream, name: &str| {
        stream
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    // An allowed cross-origin page: the answer names its origin, with
    // credentials, and varies by origin for caches.
    let (stream, _) = open_with(
        &server,
        "ada",
        &["news"],
        &[("Origin", "https://app.example")],
    )
    .await;
    assert_eq!(
        header(&stream, "access-control-allow-origin"),
        ["https://app.example"],
        "{:?}",
        stream.headers
    );
    assert_eq!(
        header(&stream, "access-control-allow-credentials"),
        ["true"]
    );
    assert!(
        header(&stream, "vary")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("origin")),
        "{:?}",
        stream.headers
    );
    // No Origin (a backend, curl): nothing to name.
    let (stream, _) = open(&server, "ada", &["news"]).await;
    assert!(
        header(&stream, "access-control-allow-origin").is_empty(),
        "{:?}",
        stream.headers
    );
    // Another origin is refused before any stream, as on the WebSocket.
    let target = target(&token("ada", &[]), &["news"]);
    let (status, body) = sse::open(server.addr, &target, &[("Origin", "https://evil.example")])
        .await
        .refused();
    assert_eq!((status, &body["error"]), (403, &json!("forbidden_origin")));

    // Every origin allowed: any page may read, but never with credentials.
    let server = TestServer::start_with(Options {
        allowed_origins: vec!["*".into()],
        ..options()
    })
    .await;
    let (stream, _) = open_with(
        &server,
        "ada",
        &["news"],
        &[("Origin", "https://any.example")],
    )
    .await;
    assert_eq!(header(&stream, "access-control-allow-origin"), ["*"]);
    assert!(
        header(&stream, "access-control-allow-credentials").is_empty(),
        "{:?}",
        stream.headers
    );
}

/// An `OPTIONS /sse` with `headers`: its status, its headers (names lowercase) and its body.
async fn preflight(
    server: &TestServer,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = server
        .http
        .request(reqwest::Method::OPTIONS, server.url("/sse"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_lets_a_page_send_its_token_in_a_header() {
    let server = TestServer::start_with(Options {
        allowed_origins: vec!["https://app.example".into()],
        ..options()
    })
    .await;
    let asking = [
        ("Origin", "https://app.example"),
        ("Access-Control-Request-Method", "GET"),
        (
            "Access-Control-Request-Headers",
            "authorization,last-event-id",
        ),
    ];
    let (status, h, body) = preflight(&server, &asking).await;
    assert_eq!(status, 204, "{h:?} {body}");
    let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    assert_eq!(get("access-control-allow-origin"), "https://app.example");
    assert_eq!(get("access-control-allow-credentials"), "true");
    let allowed: Vec<String> = get("access-control-allow-headers")
        .split(',')
        .map(|v| v.trim().to_ascii_lowercase())
        .collect();
    for needed in ["authorization", "last-event-id"] {
        assert!(allowed.iter().any(|v| v == needed), "{needed}: {h:?}");
    }
    assert!(get("access-control-allow-methods").contains("GET"), "{h:?}");
    assert!(
        get("access-control-max-age").parse::<u64>().is_ok(),
        "{h:?}"
    );

    // A refused origin: the handshake's JSON, and nothing a browser would accept.
    let (status, h, body) = preflight(
        &server,
        &[
            ("Origin", "https://evil.example"),
            ("Access-Control-Request-Method", "GET"),
        ],
    )
    .await;
    assert_eq!(status, 403, "{h:?}");
    assert!(h.get("access-control-allow-origin").is_none(), "{h:?}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "forbidden_origin", "{body}");

    // Not a preflight (no Origin): what the route allows.
    let (status, h, _) = preflight(&server, &[]).await;
    assert_eq!(status, 204);
    assert_eq!(
        h.get("allow").and_then(|v| v.to_str().ok()),
        Some("GET, HEAD, OPTIONS")
    );
    assert!(h.get("access-control-allow-origin").is_none(), "{h:?}");
    assert_eq!(server.rt.connection_count(), 0, "a preflight opens nothing");

    // Every origin allowed: `*`, never with credentials.
    let server = TestServer::start_with(Options {
        allowed_origins: vec!["*".into()],
        ..options()
    })
    .await;
    let (status, h, _) = preflight(&server, &[("Origin", "https://any.example")]).await;
    assert_eq!(status, 204);
    assert_eq!(
        h.get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("*")
    );
    assert!(h.get("access-control-allow-credentials").is_none(), "{h:?}");
}

#[tokio::test]
async fn more_topics_than_a_connection_may_subscribe_are_refused() {
    let server = TestServer::start_with(Options {
        max_subscriptions: Some(2),
        ..options()
    })
    .await;
    let alice = token("alice", &[]);
    let (status, body) = sse::open(server.addr, &target(&alice, &["a", "b", "c"]), &[])
        .await
        .refused();
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": "limit_exceeded", "message": "a connection may subscribe to at most 2 topics"})
    );
    // A topic named twice is one subscription.
    let (mut stream, _) = open(&server, "alice", &["a", "a", "b"]).await;
    expect_subscribed(&mut stream, "a").await;
    expect_subscribed(&mut stream, "b").await;
}

#[tokio::test]
async fn a_reconnect_with_last_event_id_resumes_without_gap_or_duplicate() {
    const TOPIC: &str = "chat:room";
    let server = TestServer::start_with(history_options(1000)).await;
    let mut published = 0..;
    let mut received = Vec::new();

    let (mut stream, welcome) = open(&server, "rita", &[TOPIC]).await;
    assert!(welcome.get("offset").is_none());
    let (subscribed, frame) = expect_subscribed(&mut stream, TOPIC).await;
    assert!(
        subscribed.id.is_some(),
        "the subscribed event states the position"
    );
    assert_eq!(frame["offset"], 0, "{frame}");
    assert!(
        frame.get("recovered").is_none(),
        "no since, no recovery: {frame}"
    );
    let epoch = frame["epoch"].as_str().unwrap().to_owned();
    for _ in 0..10 {
        publish_seq(&server, TOPIC, published.next().unwrap()).await;
    }
    let (seqs, last_id) = read_ticks(&mut stream, TOPIC, 10).await;
    received.extend(seqs);
    drop(stream);
    server.wait_for_connections(0).await;
    for _ in 0..10 {
        publish_seq(&server, TOPIC, published.next().unwrap()).await;
    }

    // Reconnect as a browser does: the last id in the header.
    let (mut stream, _) =
        open_with(&server, "rita", &[TOPIC], &[("Last-Event-ID", &last_id)]).await;
    let (_, frame) = expect_subscribed(&mut stream, TOPIC).await;
    assert_eq!(
        (
            &frame["recovered"],
            &frame["offset"],
            frame["epoch"].as_str()
        ),
        (&json!(true), &json!(20), Some(epoch.as_str())),
        "{frame}"
    );
    let (seqs, _) = read_ticks(&mut stream, TOPIC, 10).await;
    received.extend(seqs);
    for _ in 0..5 {
        publish_seq(&server, TOPIC, published.next().unwrap()).await;
    }
    let (seqs, last_id) = read_ticks(&mut stream, TOPIC, 5).await;
    received.extend(seqs);
    drop(stream);
    server.wait_for_connections(0).await;
    for _ in 0..5 {
        publish_seq(&server, TOPIC, published.next().unwrap()).await;
    }

    // Reconnect with the id as a query parameter instead.
    let mut target = target(&token("rita", &[]), &[TOPIC]);
    target.push_str(&format!("&last_event_id={}", query_escape(&last_id)));
    let mut stream = sse::open(server.addr, &target, &[]).await.stream();
    assert_eq!(stream.next_json().await["type"], "welcome");
    let (_, frame) = expect_subscribed(&mut stream, TOPIC).await;
    assert_eq!(frame["recovered"], true, "{frame}");
    let (seqs, _) = read_ticks(&mut stream, TOPIC, 5).await;
    received.extend(seqs);

    let sent: Vec<u64> = (0..published.next().unwrap()).collect();
    assert_eq!(received, sent, "every publication exactly once, in order");
}

#[tokio::test]
async fn an_unknown_epoch_or_an_unreadable_id_says_it_did_not_recover() {
    const TOPIC: &str = "chat:lost";
    let server = TestServer::start_with(history_options(100)).await;
    let (mut stream, _) = open(&server, "sam", &[TOPIC]).await;
    let (_, frame) = expect_subscribed(&mut stream, TOPIC).await;
    let epoch = frame["epoch"].as_str().unwrap().to_owned();
    publish_seq(&server, TOPIC, 0).await;
    let (_, last_id) = read_ticks(&mut stream, TOPIC, 1).await;
    drop(stream);
    assert!(
        last_id.contains(&epoch),
        "the id names the epoch: {last_id}"
    );
    let other = last_id.replace(&epoch, "0123456789abcdef");
    publish_seq(&server, TOPIC, 1).await;

    let mut top = 2;
    for id in [other.as_str(), "not-a-cursor"] {
        let (mut stream, _) = open_with(&server, "sam", &[TOPIC], &[("Last-Event-ID", id)]).await;
        let (event, frame) = expect_subscribed(&mut stream, TOPIC).await;
        assert_eq!(
            (&frame["recovered"], &frame["reason"], &frame["offset"]),
            (&json!(false), &json!("other_epoch"), &json!(top)),
            "{id}: {frame}"
        );
        assert!(
            event.id.is_some(),
            "the stream now stands at the current position"
        );
        // Nothing replayed; live publications follow.
        publish_seq(&server, TOPIC, top).await;
        top += 1;
        let (seqs, _) = read_ticks(&mut stream, TOPIC, 1).await;
        assert_eq!(seqs, [top - 1]);
    }
}

#[tokio::test]
async fn two_history_topics_on_one_stream_resume_together() {
    let server = TestServer::start_with(history_options(1000)).await;
    let topics = ["chat:a", "chat:b"];
    let (mut stream, _) = open(&server, "tom", &topics).await;
    for topic in topics {
        expect_subscribed(&mut stream, topic).await;
    }
    let mut received: [Vec<u64>; 2] = Default::default();
    let mut last_id = String::new();
    for seq in 0..6 {
        publish_seq(&server, topics[(seq % 2) as usize], seq).await;
        let event = stream.next_event().await.unwrap();
        let frame = event.json();
        let i = topics.iter().position(|t| frame["topic"] == *t).unwrap();
        received[i].push(frame["seq"].as_u64().unwrap());
        last_id = event.id.unwrap();
    }
    drop(stream);
    server.wait_for_connections(0).await;
    for seq in 6..12 {
        publish_seq(&server, topics[(seq % 2) as usize], seq).await;
    }
    let (mut stream, _) = open_with(&server, "tom", &topics, &[("Last-Event-ID", &last_id)]).await;
    for (i, topic) in topics.into_iter().enumerate() {
        let (_, frame) = expect_subscribed(&mut stream, topic).await;
        assert_eq!(frame["recovered"], true, "{frame}");
        let (seqs, _) = read_ticks(&mut stream, topic, 3).await;
        received[i].extend(seqs);
    }
    assert_eq!(received[0], [0, 2, 4, 6, 8, 10]);
    assert_eq!(received[1], [1, 3, 5, 7, 9, 11]);
}

/// Reads `topic`'s publications up to the one with `seq`; returns their `seq`s.
async fn ticks_until(stream: &mut SseStream, topic: &str, seq: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.last() != Some(&seq) {
        seqs.extend(read_ticks(stream, topic, 1).await.0);
    }
    seqs
}

#[tokio::test]
async fn the_id_of_a_recovered_subscribed_event_does_not_skip_its_replay() {
    const TOPIC: &str = "chat:cut";
    let server = TestServer::start_with(history_options(100)).await;
    let (mut stream, _) = open(&server, "cy", &[TOPIC]).await;
    let (subscribed, _) = expect_subscribed(&mut stream, TOPIC).await;
    let mut last_id = subscribed.id.expect("the position of a fresh subscribe");
    drop(stream);
    server.wait_for_connections(0).await;
    for seq in 0..5 {
        publish_seq(&server, TOPIC, seq).await;
    }

    // Resumed: the connection is cut right after the `subscribed` event, before
    // any of its replay. A browser then holds that event's id, if it has one.
    let (mut stream, _) = open_with(&server, "cy", &[TOPIC], &[("Last-Event-ID", &last_id)]).await;
    let (subscribed, frame) = expect_subscribed(&mut stream, TOPIC).await;
    assert_eq!(frame["recovered"], true, "{frame}");
    if let Some(id) = subscribed.id {
        last_id = id;
    }
    drop(stream);
    server.wait_for_connections(0).await;

    let (mut stream, _) = open_with(&server, "cy", &[TOPIC], &[("Last-Event-ID", &last_id)]).await;
    let (_, frame) = expect_subscribed(&mut stream, TOPIC).await;
    assert_eq!(frame["recovered"], true, "{frame}");
    publish_seq(&server, TOPIC, 5).await;
    assert_eq!(
        ticks_until(&mut stream, TOPIC, 5).await,
        [0, 1, 2, 3, 4, 5],
        "the replay the client never received is replayed again"
    );
}

#[tokio::test]
async fn an_id_keeps_the_position_of_a_topic_not_yet_announced_on_a_resumed_stream() {
    let server = TestServer::start_with(history_options(100)).await;
    let topics = ["chat:first", "chat:second"];
    let (mut stream, _) = open(&server, "di", &topics).await;
    for topic in topics {
        expect_subscribed(&mut stream, topic).await;
    }
    publish_seq(&server, topics[0], 0).await;
    publish_seq(&server, topics[1], 1).await;
    read_ticks(&mut stream, topics[0], 1).await;
    let (_, last_id) = read_ticks(&mut stream, topics[1], 1).await;
    drop(stream);
    server.wait_for_connections(0).await;
    publish_seq(&server, topics[0], 2).await;
    publish_seq(&server, topics[1], 3).await;
    publish_seq(&server, topics[1], 4).await;

    // Resumed, and cut at the first event with an id: the first topic's part of
    // the stream; the second topic was not announced yet.
    let (mut stream, _) = open_with(&server, "di", &topics, &[("Last-Event-ID", &last_id)]).await;
    let cut_at = loop {
        let event = stream.next_event().await.expect("the first topic's events");
        let frame = event.json();
        assert_eq!(frame["topic"], topics[0], "{frame}");
        if let Some(id) = event.id {
            break id;
        }
    };
    drop(stream);
    server.wait_for_connections(0).await;

    let (mut stream, _) = open_with(&server, "di", &topics, &[("Last-Event-ID", &cut_at)]).await;
    let mut second = Vec::new();
    loop {
        let event = stream.next_event().await.expect("both topics' events");
        let frame = event.json();
        if frame["topic"] != topics[1] {
            continue;
        }
        if frame["type"] == "subscribed" {
            assert_eq!(
                frame["recovered"], true,
                "the second topic resumes where the client left it: {frame}"
            );
            continue;
        }
        second.push(frame["seq"].as_u64().unwrap());
        if second.len() == 2 {
            break;
        }
    }
    assert_eq!(second, [3, 4], "nothing of the second topic is lost");
}

#[tokio::test]
async fn a_backlog_larger_than_the_queue_is_resumed_in_steps_across_reconnects() {
    const TOPIC: &str = "chat:backlog";
    const BACKLOG: u64 = 50;
    let server = TestServer::start_with(Options {
        outbound_queue: Some(16),
        ..history_options(100)
    })
    .await;
    let (mut stream, _) = open(&server, "bea", &[TOPIC]).await;
    let (subscribed, _) = expect_subscribed(&mut stream, TOPIC).await;
    let mut last_id = subscribed.id.expect("the position of a fresh subscribe");
    drop(stream);
    server.wait_for_connections(0).await;
    for seq in 0..BACKLOG {
        publish_seq(&server, TOPIC, seq).await;
    }

    // As a browser does: reconnect with the last id after every ending. The
    // replay does not fit the queue; each stream delivers what it queued, then
    // ends as a slow consumer, and the next one resumes after it.
    let mut received = Vec::new();
    let mut closes = 0;
    let target = target(&token("bea", &[]), &[TOPIC]);
    while received.len() < BACKLOG as usize && closes < 10 {
        let mut stream = sse::open(server.addr, &target, &[("Last-Event-ID", &last_id)])
            .await
            .stream();
        while received.len() < BACKLOG as usize {
            let event = stream.next_event().await.expect("an event or the close");
            if let Some(id) = &event.id {
                last_id = id.clone();
            }
            let frame = event.json();
            if event.event.as_deref() == Some("close") {
                assert_eq!(frame["code"], 3008, "{frame}");
                closes += 1;
                break;
            }
            if frame["topic"] == TOPIC && frame["offset"].is_u64() && frame.get("seq").is_some() {
                received.push(frame["seq"].as_u64().unwrap());
            }
        }
        drop(stream);
        server.wait_for_connections(0).await;
    }
    assert_eq!(
        received,
        (0..BACKLOG).collect::<Vec<_>>(),
        "every publication once, in order, after {closes} slow-consumer endings"
    );
}

#[tokio::test]
async fn the_heartbeat_keeps_a_stream_open_past_the_request_timeout() {
    let server = TestServer::start_with(Options {
        ping_interval: Some(Duration::from_millis(100)),
        request_timeout: Some(Duration::from_millis(300)),
        ..options()
    })
    .await;
    let (mut stream, _) = open(&server, "pat", &[]).await;
    // Six pings take at least twice the request timeout.
    for _ in 0..6 {
        let block = stream.next_block().await.expect("the stream stays open");
        assert_eq!(block.comments, ["ping"], "{block:?}");
        assert_eq!(block.data, None);
    }
    let (status, _) = server
        .post("/api/users/pat/messages", json!({"type": "still-here"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(stream.next_json().await["type"], "still-here");
}

#[tokio::test]
async fn an_open_stream_holds_a_place_under_max_connections() {
    let server = TestServer::start_with(Options {
        max_connections: Some(1),
        ..options()
    })
    .await;
    let (stream, _) = open(&server, "first", &[]).await;
    let (status, body) = sse::open(server.addr, &target(&token("second", &[]), &[]), &[])
        .await
        .refused();
    assert_eq!(
        (status, &body["error"]),
        (503, &json!("too_many_connections")),
        "{body}"
    );
    drop(stream);
    server.wait_for_connections(0).await;
    let mut open = server.open_connections.clone();
    tokio::time::timeout(WAIT, open.wait_for(|n| *n == 0))
        .await
        .unwrap()
        .unwrap();
    let (_again, welcome) = open_with(&server, "second", &[], &[]).await;
    assert_eq!(welcome["user_id"], "second");
}

#[tokio::test]
async fn token_expiry_ends_the_stream_with_a_3005_close_event() {
    let server = TestServer::start().await;
    let claims = json!({"sub": "short", "iat": now(), "exp": now() + 1});
    let target = format!("/sse?token={}", sign_hs256(&claims, SECRET));
    let mut stream = sse::open(server.addr, &target, &[]).await.stream();
    let (close, before) = stream.until_close().await;
    assert_eq!(
        close,
        json!({"type": "close", "code": 3005, "reason": "token expired"})
    );
    assert_eq!(before.len(), 1, "only the welcome: {before:?}");
    server.wait_for_connections(0).await;
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains(r#"realtime_disconnects_total{reason="token_expired"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_force_disconnect_ends_the_stream_with_a_3503_close_event() {
    let server = TestServer::start().await;
    let (mut stream, welcome) = open(&server, "gone", &[]).await;
    let id = welcome["connection_id"].as_str().unwrap();
    let (status, body) = server.delete(&format!("/api/connections/{id}")).await;
    assert_eq!(status, 200, "{body}");
    let (close, before) = stream.until_close().await;
    assert_eq!(before, Vec::<Event>::new());
    assert_eq!(
        close,
        json!({"type": "close", "code": 3503, "reason": "disconnected by server"})
    );
    server.wait_for_connections(0).await;
}

#[tokio::test]
async fn a_stream_over_the_per_user_limit_gets_a_3504_close_event_and_no_welcome() {
    let server = TestServer::start_with(Options {
        max_connections_per_user: Some(1),
        ..options()
    })
    .await;
    let (_first, _) = open(&server, "busy", &[]).await;
    let mut second = sse::open(server.addr, &target(&token("busy", &[]), &[]), &[])
        .await
        .stream();
    let (close, before) = second.until_close().await;
    assert_eq!(before, Vec::<Event>::new(), "no welcome");
    assert_eq!(
        close,
        json!({"type": "close", "code": 3504, "reason": "connection limit"})
    );
    assert_eq!(
        server.rt.connection_count(),
        1,
        "the refused one never counted"
    );
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains(r#"realtime_handshakes_rejected_total{reason="connection_limit"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_stream_whose_queue_overflows_ends_with_a_3008_close_event() {
    let server = TestServer::start_with(Options {
        outbound_queue: Some(4),
        ..options()
    })
    .await;
    let (mut stream, _) = open(&server, "flooded", &["feed"]).await;
    expect_subscribed(&mut stream, "feed").await;
    // One thread, and the burst never yields: the stream's writer cannot take
    // anything until it is over, so the fifth frame overflows the queue.
    let mut reached = 0;
    for seq in 0..100 {
        reached += server
            .rt
            .publish("feed", json!({"type": "tick", "seq": seq}))
            .unwrap()
            .local;
    }
    assert_eq!(reached, 4, "queued until the queue was full, then closed");
    let (close, before) = stream.until_close().await;
    assert_eq!(
        before,
        Vec::<Event>::new(),
        "a slow consumer's queue is dropped"
    );
    assert_eq!(
        close,
        json!({"type": "close", "code": 3008, "reason": "slow consumer"})
    );
    server.wait_for_connections(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_as_a_slow_consumer() {
    const PAD: usize = 16 * 1024;
    let server = TestServer::start_with(Options {
        // The queue never overflows: the blocked write is what ends it.
        outbound_queue: Some(1 << 16),
        outbound_queue_bytes: Some(1 << 30),
        write_timeout: Some(Duration::from_millis(300)),
        ..options()
    })
    .await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(server.addr).await.unwrap();
    let target = target(&token("stalled", &[]), &["feed"]);
    let mut stream = sse::open_on(tcp, server.addr, &target, &[]).await.stream();
    assert_eq!(stream.next_json().await["type"], "welcome");
    expect_subscribed(&mut stream, "feed").await;
    // From here on the client reads nothing.
    let pad = "x".repeat(PAD);
    for seq in 0..4096 {
        let delivery = server
            .rt
            .publish("feed", json!({"type": "tick", "seq": seq, "pad": pad}))
            .unwrap();
        if delivery.local == 0 {
            // Closed already: never for overflow, the queue holds all of it.
            break;
        }
    }
    server.wait_for_connections(0).await;
    // The engine gave the stream up, and the server closed its connection.
    let mut open = server.open_connections.clone();
    tokio::time::timeout(WAIT, open.wait_for(|n| *n == 0))
        .await
        .expect("the stalled stream's TCP connection is closed")
        .unwrap();
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains(r#"realtime_disconnects_total{reason="slow_consumer"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_client_that_drops_its_connection_is_unregistered() {
    let server = TestServer::start().await;
    let (stream, _) = open(&server, "leaver", &["news"]).await;
    assert_eq!(server.rt.connection_count(), 1);
    drop(stream);
    server.wait_for_connections(0).await;
    assert_eq!(
        server.rt.topics().get("news"),
        None,
        "its subscription went with it"
    );
    let mut open = server.open_connections.clone();
    tokio::time::timeout(WAIT, open.wait_for(|n| *n == 0))
        .await
        .unwrap()
        .unwrap();
}

/// The value of one metric line (`name{labels}`) in a `/metrics` text.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn a_stream_abandoned_at_any_point_of_its_opening_leaves_nothing_behind() {
    use realtime_core::Access;
    use realtime_server::config::NamespaceOptions;
    const TOPIC: &str = "room:replay";
    let server = TestServer::start_with(Options {
        max_connections_per_user: Some(1),
        namespaces: Some(vec![
            NamespaceOptions::new("room", Access::Authenticated, Access::Authenticated)
                .with_history(1000, Duration::from_secs(600))
                .with_presence(true),
        ]),
        ..options()
    })
    .await;
    let (mut stream, _) = open(&server, "ivy", &[TOPIC]).await;
    let (subscribed, _) = expect_subscribed(&mut stream, TOPIC).await;
    let from_start = subscribed.id.unwrap();
    drop(stream);
    server.wait_for_connections(0).await;
    for seq in 0..300 {
        server
            .rt
            .publish(TOPIC, json!({"type": "tick", "seq": seq}))
            .unwrap();
    }
    let target = target(&token("ivy", &[]), &[TOPIC]);
    // Each stream resumes with a 300-publication replay and is dropped after
    // reading `read` events: 0 (as soon as the engine accepted it), then at
    // the welcome, at the `subscribed`, and in the replay.
    let mut accepted = 1.0;
    for read in [0, 1, 2, 3, 150] {
        let mut stream = sse::open(server.addr, &target, &[("Last-Event-ID", &from_start)])
            .await
            .stream();
        accepted += 1.0;
        for _ in 0..read {
            stream.next_event().await.expect("an event");
        }
        drop(stream);
        server.wait_for_connections(0).await;
        let text = server.metrics_text().await;
        assert_eq!(
            metric(&text, "realtime_connections_accepted_total"),
            Some(accepted),
            "{text}"
        );
        for series in [
            "realtime_connections",
            r#"realtime_connections_by_transport{transport="sse"}"#,
        ] {
            assert_eq!(metric(&text, series), Some(0.0), "{series} after {read}");
        }
        let (status, stats) = server
            .get(&format!("/api/topics/{TOPIC}/presence/stats"))
            .await;
        assert_eq!(status, 200, "{stats}");
        assert_eq!(stats["connections"], 0, "presence after {read}: {stats}");
        assert_eq!(server.rt.topics().get(TOPIC), None);
    }
    // The user's one place is free again.
    let (_stream, welcome) = open(&server, "ivy", &[TOPIC]).await;
    assert_eq!(welcome["user_id"], "ivy");
}

#[tokio::test]
async fn a_stream_is_listed_targeted_and_subscribed_like_a_websocket() {
    let server = TestServer::start().await;
    let metrics = server.metrics_text().await;
    for transport in ["websocket", "sse"] {
        assert!(
            metrics.contains(&format!(
                "realtime_connections_by_transport{{transport=\"{transport}\"}} 0"
            )),
            "pre-created: {metrics}"
        );
    }
    let (mut stream, welcome) = open(&server, "lee", &["news"]).await;
    expect_subscribed(&mut stream, "news").await;
    let id = welcome["connection_id"].as_str().unwrap().to_owned();
    let ws = server.connect("wes", &[]).await;

    let (status, list) = server.get("/api/connections").await;
    assert_eq!(status, 200, "{list}");
    let transport_of = |id: &str| {
        list["connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| c["transport"].clone())
    };
    assert_eq!(transport_of(&id), Some(json!("sse")), "{list}");
    assert_eq!(transport_of(&ws.id), Some(json!("websocket")), "{list}");
    let (status, one) = server.get(&format!("/api/connections/{id}")).await;
    assert_eq!((status, &one["topics"]), (200, &json!(["news"])), "{one}");

    let (status, body) = server
        .post(
            &format!("/api/connections/{id}/messages"),
            json!({"type": "direct"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stream.next_json().await["type"], "direct");

    let (status, body) = server
        .post(
            &format!("/api/connections/{id}/subscriptions"),
            json!({"topic": "later"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = server
        .post("/api/topics/later/messages", json!({"type": "late"}))
        .await;
    assert_eq!(status, 200);
    let got = stream.next_json().await;
    assert_eq!(
        (&got["type"], &got["topic"]),
        (&json!("late"), &json!("later")),
        "{got}"
    );

    let metrics = server.metrics_text().await;
    for (transport, n) in [("websocket", 1), ("sse", 1)] {
        assert!(
            metrics.contains(&format!(
                "realtime_connections_by_transport{{transport=\"{transport}\"}} {n}"
            )),
            "{metrics}"
        );
    }
    assert!(metrics.contains("realtime_connections 2"), "{metrics}");
}

#[tokio::test]
async fn sigterm_sends_the_queued_frames_then_a_1001_close_event() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_realtime-server"))
        .env_clear()
        .env("REALTIME_LISTEN", "127.0.0.1:0")
        .env("REALTIME_JWT_SECRET", SECRET)
        .env("REALTIME_API_KEY", API_KEY)
        .env("REALTIME_SHUTDOWN_TIMEOUT", "5s")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr: std::net::SocketAddr = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("addr=").nth(1) {
                return rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        }
        panic!("server exited before listening");
    })
    .await
    .expect("server announces its address");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let mut stream = sse::open(addr, &target(&token("carol", &[]), &[]), &[])
        .await
        .stream();
    assert_eq!(stream.next_json().await["type"], "welcome");
    let http = reqwest::Client::new();
    for seq in 0..50 {
        let r = http
            .post(format!("http://{addr}/api/users/carol/messages"))
            .bearer_auth(API_KEY)
            .json(&json!({"type": "queued", "seq": seq}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    drop(http);
    let pid = child.id().expect("running").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());

    let (close, before) = stream.until_close().await;
    let frames: Vec<Value> = before.iter().map(Event::json).collect();
    let seqs: Vec<u64> = frames
        .iter()
        .filter(|f| f["type"] == "queued")
        .map(|f| f["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (0..50).collect::<Vec<_>>(),
        "every queued frame, in order"
    );
    assert_eq!(frames.len(), 51, "{frames:?}");
    assert_eq!(frames[50]["type"], "server-shutdown");
    assert_eq!(
        close,
        json!({"type": "close", "code": 1001, "reason": "server shutting down"})
    );
    let exit = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exits in time")
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}
