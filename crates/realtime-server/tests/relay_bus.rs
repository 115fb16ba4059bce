//! The relay path over a real `redis-server` (started by the test on a free port):
//! what a node has read from Redis is delivered even when the link then fails,
//! both directions are bounded and a node that falls behind is visible, the bus
//! reports itself in `/metrics`, a graceful stop drains the publisher queue, and
//! a node started before Redis tells its topic subscribers what they missed.
//! Every check is a tally of the test's own sequence numbers.

mod common;
mod processes;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use processes::{Node, RedisServer, START, eventually, free_port};
use prometheus_client::registry::Registry;
use realtime::cluster::bus::{BusEvent, MessageBus};
use realtime::{JwtVerifier, Realtime, RealtimeConfig};
use realtime_core::{Body, Channels, Envelope, NodeTag, Route, Topic};
use realtime_redis::{RedisCluster, RedisConfig};
use serde_json::{Value, json};

async fn redis_connection(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A client on `node` for `user`, past its welcome.
async fn connect(node: &Node, user: &str) -> Client {
    let mut client = Client::connect(&node.ws_url(&token(user, &[]))).await;
    assert_eq!(client.recv().await["type"], "welcome");
    client
}

/// Reads frames of type `kind` until `expected` arrived or nothing came for a
/// while; returns their `n` fields in arrival order.
async fn tally(client: &mut Client, kind: &str, expected: usize, bound: Duration) -> Vec<u64> {
    use futures_util::StreamExt;
    let mut seen = Vec::new();
    while seen.len() < expected {
        let Ok(Some(Ok(frame))) = tokio::time::timeout(bound, client.ws.next()).await else {
            break;
        };
        if let tokio_tungstenite::tungstenite::Message::Text(text) = frame {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] == kind {
                seen.push(value["n"].as_u64().unwrap());
            }
        }
    }
    seen
}

async fn post(node_url: &str, path: &str, body: &Value) -> (u16, Value) {
    answer(
        reqwest::Client::new()
            .post(format!("{node_url}{path}"))
            .bearer_auth(API_KEY)
            .json(body),
    )
    .await
}

async fn metrics(node: &Node) -> String {
    reqwest::get(node.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the sample `series` (name with labels) in an OpenMetrics text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The test plays another node: its envelopes carry its own tag and sequence.
fn envelope(origin: NodeTag, seq: u64, route: Route, message: &Value) -> Vec<u8> {
    Envelope {
        origin,
        seq,
        body: Body::Message {
            route,
            payload: message.to_string().into_bytes(),
        },
    }
    .encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_read_before_the_subscriber_link_fails_are_delivered() {
    const TOPICS: u64 = 16;
    // Under a connection's outbound queue bound, so no client is a slow consumer.
    const PER_TOPIC: u64 = 1000;
    let mut redis = RedisServer::start().await;
    let mut b = Node::start(&redis.url(), "b", &[]).await;
    let mut readers = Vec::new();
    for i in 0..TOPICS {
        let mut client = connect(&b, &format!("user-{i}")).await;
        client.subscribe_acked(&format!("burst-{i}")).await;
        readers.push(tokio::spawn(async move {
            let seen = tally(&mut client, "burst", PER_TOPIC as usize, WAIT).await;
            (client, seen)
        }));
    }
    let mut late = connect(&b, "late").await;

    // A burst from another node, every envelope confirmed by Redis (one receiver).
    let channels = Channels::new("rt-test");
    let origin = NodeTag::from_random(0x5eed);
    let mut con = redis_connection(&redis).await;
    let total = TOPICS * PER_TOPIC;
    for chunk in (1..=total).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for &seq in chunk {
            let topic = Topic::parse(&format!("burst-{}", seq % TOPICS)).unwrap();
            let message = json!({"type": "burst", "topic": topic.as_str(), "n": seq});
            pipe.cmd("PUBLISH")
                .arg(channels.topic(topic.as_str()))
                .arg(envelope(origin, seq, Route::Topic(topic), &message));
        }
        let receivers: Vec<usize> = pipe.query_async(&mut con).await.unwrap();
        assert!(
            receivers.iter().all(|n| *n == 1),
            "every envelope confirmed"
        );
    }
    // Redis answers this SUBSCRIBE after writing the whole burst to the same
    // connection, so once it is acknowledged node b has read every envelope.
    late.subscribe_acked("after-the-burst").await;
    redis.kill().await;
    // Activity on the failing link (an interest change) while the burst is still
    // being handed over.
    late.send(json!({"action": "subscribe", "topic": "during-the-outage"}))
        .await;

    for (i, reader) in readers.into_iter().enumerate() {
        let (_client, seen) = reader.await.unwrap();
        let expected: Vec<u64> = (1..=total).filter(|s| s % TOPICS == i as u64).collect();
        assert_eq!(
            seen.len(),
            expected.len(),
            "topic burst-{i}: every envelope node b had read arrives"
        );
        assert_eq!(seen, expected, "topic burst-{i}: once each, in order");
    }
    b.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_falls_behind_drops_its_link_counts_the_loss_and_recovers() {
    let redis = RedisServer::start().await;
    let mut config = RedisConfig::new(redis.url());
    config.prefix = "behind".into();
    config.inbox_capacity = 8;
    let cluster = RedisCluster::new(config).unwrap();
    let bus = cluster.bus();
    let mut registry = Registry::default();
    bus.register_metrics(&mut registry);
    // The engine stand-in: records every envelope, and stalls until `open` is
    // dropped (then `recv` fails at once, for good).
    let (open, gate) = std::sync::mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    let (tx, mut received) = tokio::sync::mpsc::unbounded_channel::<u64>();
    bus.start(
        Arc::new(move |event: BusEvent<'_>| {
            let _ = gate.lock().unwrap().recv();
            if let BusEvent::Envelope(bytes) = event {
                let _ = tx.send(u64::from_be_bytes(bytes.try_into().unwrap()));
            }
        }),
        vec!["behind:feed".into()],
    );
    assert!(cluster.wait_until_up(START).await);

    let mut con = redis_connection(&redis).await;
    const BURST: u64 = 200;
    let mut pipe = redis::pipe();
    for seq in 1..=BURST {
        pipe.cmd("PUBLISH")
            .arg("behind:feed")
            .arg(seq.to_be_bytes().as_slice());
    }
    let receivers: Vec<usize> = pipe.query_async(&mut con).await.unwrap();
    let confirmed = receivers.iter().filter(|n| **n == 1).count() as u64;
    assert!(
        bus.wait_until_down(WAIT).await,
        "the link is dropped once the backlog is full"
    );
    let status = serde_json::to_value(bus.status()).unwrap();
    assert!(
        status["reason"].as_str().unwrap().contains("fell behind"),
        "{status}"
    );
    drop(open);

    // It resubscribes once it has caught up, and delivery resumes.
    assert!(bus.wait_until_up(WAIT).await, "the link is restored");
    let marker = BURST + 1;
    let n: usize = redis::cmd("PUBLISH")
        .arg("behind:feed")
        .arg(marker.to_be_bytes().as_slice())
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let mut seen = Vec::new();
    loop {
        let seq = tokio::time::timeout(WAIT, received.recv())
            .await
            .expect("the marker arrives")
            .unwrap();
        if seq == marker {
            break;
        }
        seen.push(seq);
    }
    let kept = seen.len() as u64;
    assert_eq!(
        seen,
        (1..=kept).collect::<Vec<_>>(),
        "what was kept is a prefix, in order"
    );
    assert!(
        (1..=9).contains(&kept),
        "at most the bound (8) plus the one in the inbox's hands: {kept}"
    );

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let dropped = sample(
        &text,
        "realtime_bus_envelopes_dropped_total{reason=\"behind\"}",
    )
    .expect("dropped counter exported") as u64;
    assert!(dropped >= 1, "the loss is counted:\n{text}");
    assert!(
        kept + dropped <= confirmed,
        "nothing counted twice: kept {kept} + dropped {dropped} <= {confirmed}"
    );
    assert_eq!(
        sample(&text, "realtime_bus_reconnects_total{link=\"subscriber\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "realtime_bus_envelopes_total{direction=\"inbound\"}"),
        Some((kept + 1) as f64),
        "{text}"
    );
}

#[tokio::test]
async fn bus_metrics_report_traffic_backlog_links_and_reconnects() {
    let mut redis = RedisServer::start().await;
    let mut a = Node::start(&redis.url(), "a", &[]).await;
    let mut b = Node::start(&redis.url(), "b", &[]).await;
    let mut client = connect(&b, "watcher").await;
    client.subscribe_acked("counted").await;
    for n in 1..=10 {
        let (status, _) = post(
            &format!("http://{}", a.addr),
            "/api/topics/counted/messages",
            &json!({"type": "counted", "n": n}),
        )
        .await;
        assert_eq!(status, 200);
    }
    assert_eq!(
        tally(&mut client, "counted", 10, WAIT).await,
        (1..=10).collect::<Vec<_>>()
    );

    let up = "realtime_bus_link_up{link=\"subscriber\"}";
    for node in [&a, &b] {
        let text = metrics(node).await;
        assert_eq!(sample(&text, up), Some(1.0), "{text}");
        assert_eq!(
            sample(&text, "realtime_bus_link_up{link=\"publisher\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "realtime_bus_reconnects_total{link=\"subscriber\"}"),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "realtime_bus_link_up{link=\"directory\"}"),
            Some(1.0),
            "{text}"
        );
    }
    let text = metrics(&a).await;
    let out = sample(
        &text,
        "realtime_bus_envelopes_total{direction=\"outbound\"}",
    )
    .unwrap();
    assert!(out >= 10.0, "{text}");
    assert!(sample(&text, "realtime_bus_bytes_total{direction=\"outbound\"}").unwrap() > 0.0);
    eventually(WAIT, "b's inbound backlog empties", || async {
        let text = metrics(&b).await;
        sample(
            &text,
            "realtime_bus_backlog_envelopes{direction=\"inbound\"}",
        ) == Some(0.0)
            && sample(&text, "realtime_bus_backlog_bytes{direction=\"inbound\"}") == Some(0.0)
            && sample(&text, "realtime_bus_envelopes_total{direction=\"inbound\"}")
                .is_some_and(|n| n >= 10.0)
    })
    .await;
    assert_eq!(
        sample(
            &metrics(&a).await,
            "realtime_bus_backlog_envelopes{direction=\"outbound\"}"
        ),
        Some(0.0)
    );

    // A link updates its metrics before it logs the change, so each log line
    // awaited here is a point where the metrics already say it.
    let mark = a.log_mark();
    redis.kill().await;
    for link in ["subscriber", "directory"] {
        a.wait_for_log(mark, &["redis link down", &format!("link=\"{link}\"")])
            .await;
    }
    let text = metrics(&a).await;
    assert_eq!(sample(&text, up), Some(0.0), "{text}");
    assert_eq!(
        sample(&text, "realtime_bus_link_up{link=\"directory\"}"),
        Some(0.0),
        "{text}"
    );
    let mark = a.log_mark();
    redis.restart().await;
    for link in ["subscriber", "directory"] {
        a.wait_for_log(mark, &["redis link restored", &format!("link=\"{link}\"")])
            .await;
    }
    let text = metrics(&a).await;
    for link in ["subscriber", "directory"] {
        assert_eq!(
            sample(&text, &format!("realtime_bus_link_up{{link=\"{link}\"}}")),
            Some(1.0),
            "{text}"
        );
        assert!(
            sample(
                &text,
                &format!("realtime_bus_reconnects_total{{link=\"{link}\"}}")
            )
            .is_some_and(|n| n >= 1.0),
            "{text}"
        );
    }
    a.kill().await;
    b.kill().await;
}

#[tokio::test]
async fn the_publisher_queue_is_bounded_in_bytes() {
    let redis = RedisServer::start().await;
    let mut b = Node::start(&redis.url(), "b", &[]).await;
    let mut client = connect(&b, "bulk-reader").await;
    client.subscribe_acked("bulk").await;

    // A node built from the library with a small byte bound, serving the real API.
    let mut config = RedisConfig::new(redis.url());
    config.prefix = "rt-test".into();
    config.outbox_bytes = 256 * 1024;
    // Redis stalls below; the link must stay up so only the bound can refuse.
    config.command_timeout = Duration::from_secs(60);
    let cluster = RedisCluster::new(config).unwrap();
    let verifier = JwtVerifier::hs256(SECRET.as_bytes(), Default::default()).unwrap();
    let rt = Realtime::clustered(
        verifier,
        RealtimeConfig::default(),
        cluster.cluster_config("bounded"),
    );
    assert!(cluster.wait_until_up(START).await);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let api: axum::Router = realtime_server::api::router(rt.clone(), API_KEY).into();
    let app = axum::Router::new().nest("/api", api);
    tokio::spawn(async move { axum::serve(listener, app).await });

    // Redis stops executing writes (PUBLISH among them) but stays connected.
    let mut con = redis_connection(&redis).await;
    let _: () = redis::cmd("CLIENT")
        .arg(&["PAUSE", "60000", "WRITE"])
        .query_async(&mut con)
        .await
        .unwrap();
    let pad = "x".repeat(100 * 1024);
    let mut accepted = 0u64;
    let mut refusal = None;
    for n in 1..=20u64 {
        let (status, body) = post(
            &url,
            "/api/topics/bulk/messages",
            &json!({"type": "bulk", "n": n, "pad": pad}),
        )
        .await;
        match status {
            200 => {
                assert_eq!(body["relayed"], true);
                accepted += 1;
            }
            _ => {
                refusal = Some((status, body));
                break;
            }
        }
    }
    let (status, body) = refusal.expect("a send beyond the byte bound is refused");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "bus_unavailable", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("backlog is full"),
        "{body}"
    );
    // 256 KiB holds two 100 KiB envelopes (the one stuck in flight counts until
    // Redis takes it): far from the 65 536 envelopes the count bound allows.
    assert_eq!(accepted, 2);

    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(
        tally(&mut client, "bulk", accepted as usize, WAIT).await,
        (1..=accepted).collect::<Vec<_>>(),
        "every accepted send is relayed once, in order"
    );
    b.kill().await;
}

#[tokio::test]
async fn a_graceful_stop_drains_the_publisher_queue() {
    let redis = RedisServer::start().await;
    let mut a = Node::start(&redis.url(), "a", &[("REALTIME_SHUTDOWN_TIMEOUT", "30s")]).await;
    let mut b = Node::start(&redis.url(), "b", &[]).await;
    let mut client = connect(&b, "drain-reader").await;
    client.subscribe_acked("drain").await;

    // Redis stops executing writes for six seconds (it resumes by itself), so a's
    // sends wait in its publisher queue while it is asked to stop.
    let mut con = redis_connection(&redis).await;
    let _: () = redis::cmd("CLIENT")
        .arg(&["PAUSE", "6000", "WRITE"])
        .query_async(&mut con)
        .await
        .unwrap();
    let url = format!("http://{}", a.addr);
    let mut accepted = 0u64;
    for n in 1..=200u64 {
        let (status, _) = post(
            &url,
            "/api/topics/drain/messages",
            &json!({"type": "drain", "n": n}),
        )
        .await;
        if status != 200 {
            // The publisher timed out on the stalled Redis: later sends are refused.
            break;
        }
        accepted += 1;
    }
    assert!(accepted > 0);
    a.terminate();
    let exited = tokio::time::timeout(Duration::from_secs(30), a.wait())
        .await
        .expect("a exits within its shutdown timeout");
    assert!(exited.success(), "{exited:?}");

    assert_eq!(
        tally(&mut client, "drain", accepted as usize, WAIT).await,
        (1..=accepted).collect::<Vec<_>>(),
        "every send a accepted before stopping reaches b once, in order"
    );
    b.kill().await;
}

#[tokio::test]
async fn a_send_still_in_flight_when_the_stop_begins_is_drained_too() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let redis = RedisServer::start().await;
    let mut a = Node::start(&redis.url(), "a", &[("REALTIME_SHUTDOWN_TIMEOUT", "30s")]).await;
    let mut b = Node::start(&redis.url(), "b", &[]).await;
    let mut client = connect(&b, "late-reader").await;
    client.subscribe_acked("late").await;

    // A send whose body has not fully arrived when the stop begins: the server
    // answers it during the graceful shutdown, after the first drain.
    let body = json!({"type": "late", "n": 1}).to_string();
    let mut http = tokio::net::TcpStream::connect(a.addr).await.unwrap();
    let head = format!(
        "POST /api/topics/late/messages HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {API_KEY}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        a.addr,
        body.len()
    );
    http.write_all(head.as_bytes()).await.unwrap();
    http.write_all(&body.as_bytes()[..5]).await.unwrap();

    let mark = a.log_mark();
    a.terminate();
    a.wait_for_log(mark, &["shutting down"]).await;
    // Redis stops executing writes for three seconds, so the late send waits in
    // a's publisher queue: only a drain after the request was answered saves it.
    let mut con = redis_connection(&redis).await;
    let _: () = redis::cmd("CLIENT")
        .arg(&["PAUSE", "3000", "WRITE"])
        .query_async(&mut con)
        .await
        .unwrap();
    http.write_all(&body.as_bytes()[5..]).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, http.read_to_end(&mut answer))
        .await
        .expect("answered and closed during the shutdown")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");

    let exited = tokio::time::timeout(Duration::from_secs(30), a.wait())
        .await
        .expect("a exits within its shutdown timeout");
    assert!(exited.success(), "{exited:?}");
    assert_eq!(
        tally(&mut client, "late", 1, WAIT).await,
        vec![1],
        "the send answered 200 during the shutdown reaches b"
    );
    b.kill().await;
}

/// Frames of `client` until a `kind` frame with `n == last`: `missed` notices as
/// `"missed:{reason}"`, `kind` frames as their `n`.
async fn frames_until(client: &mut Client, kind: &str, last: u64) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let frame = client.recv().await;
        if frame["type"] == "missed" {
            seen.push(format!("missed:{}", frame["reason"].as_str().unwrap()));
        } else if frame["type"] == kind {
            let n = frame["n"].as_u64().unwrap();
            seen.push(n.to_string());
            if n == last {
                return seen;
            }
        }
    }
}

#[tokio::test]
async fn a_topic_subscribed_before_redis_first_answers_is_told_what_it_missed() {
    // A node that starts before Redis is reachable acknowledges subscribes (they
    // are applied once Redis answers). What other nodes publish before its
    // subscriber link first connects never reaches it: its subscribers must be
    // told, as after any other break.
    let port = free_port();
    let mut a = Node::start(&format!("redis://127.0.0.1:{port}"), "a", &[]).await;
    let health = reqwest::get(a.url("/health")).await.unwrap().status();
    assert_eq!(health.as_u16(), 503, "degraded while Redis is away");
    let mut client = connect(&a, "early").await;
    client.subscribe_acked("feed").await;

    // Another node publishes on the topic from the moment Redis is up; Redis's
    // answer says whether node a was subscribed yet (one receiver) or not.
    let redis = RedisServer::start_on(port).await;
    let mut con = redis_connection(&redis).await;
    let channels = Channels::new("rt-test");
    let origin = NodeTag::from_random(0xfeed);
    let topic = Topic::parse("feed").unwrap();
    let mut heard = Vec::new();
    let mut seq = 0;
    let deadline = std::time::Instant::now() + START;
    while heard.len() < 5 {
        assert!(std::time::Instant::now() < deadline, "node a subscribes");
        seq += 1;
        let message = json!({"type": "feed", "topic": "feed", "n": seq});
        let receivers: usize = redis::cmd("PUBLISH")
            .arg(channels.topic("feed"))
            .arg(envelope(origin, seq, Route::Topic(topic.clone()), &message))
            .query_async(&mut con)
            .await
            .unwrap();
        if receivers == 1 {
            heard.push(seq);
        }
    }
    let first = heard[0];
    assert_eq!(
        heard,
        (first..first + 5).collect::<Vec<_>>(),
        "once subscribed, node a stays subscribed"
    );

    let seen = frames_until(&mut client, "feed", seq).await;
    let delivered: Vec<String> = (first..=seq).map(|n| n.to_string()).collect();
    if first == 1 {
        // Nothing was lost; a notice is allowed only before the first message.
        let skip = usize::from(seen.first().is_some_and(|f| f.starts_with("missed")));
        assert_eq!(seen[skip..], delivered[..], "every message once, in order");
    } else {
        let mut expected = vec!["missed:bus_reconnected".to_string()];
        expected.extend(delivered);
        assert_eq!(
            seen, expected,
            "messages 1..{first} never reached node a: the subscriber is told, right at the gap"
        );
    }
    a.kill().await;
}
