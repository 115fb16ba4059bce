//! Per-user, per-connection and per-command limits against a real server, each
//! with its documented outcome: 3504 over the connection limit, `limit_exceeded`
//! over the subscription limit, `rate_limited` and then 3013 over the command rate,
//! `invalid_topic` over the topic length.

mod common;

use common::*;
use realtime_server::Options;
use serde_json::json;

#[tokio::test]
async fn a_user_over_the_connection_limit_is_closed_with_3504() {
    let server = TestServer::start_with(Options {
        max_connections_per_user: Some(2),
        ..options()
    })
    .await;
    let first = server.connect("busy", &[]).await;
    let _second = server.connect("busy", &[]).await;
    let _other = server.connect("someone-else", &[]).await;
    let mut third = Client::connect(&server.ws_url(&token("busy", &[]))).await;
    third.expect_close(3504).await;
    assert_eq!(
        server.rt.connection_count(),
        3,
        "the refused one never counted"
    );
    // A slot is given back when a connection ends.
    drop(first);
    server.wait_for_connections(2).await;
    let mut again = server.connect("busy", &[]).await;
    again.assert_nothing_pending().await;
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains(r#"realtime_handshakes_rejected_total{reason="connection_limit"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn subscriptions_over_the_limit_are_refused() {
    let server = TestServer::start_with(Options {
        max_subscriptions: Some(2),
        ..options()
    })
    .await;
    let mut client = server.connect("collector", &[]).await;
    for topic in ["a", "b"] {
        let reply = client
            .command(json!({"action": "subscribe", "topic": topic}))
            .await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
    }
    let reply = client
        .command(json!({"action": "subscribe", "topic": "c", "ref": 3}))
        .await;
    assert_eq!(
        reply,
        json!({"type": "error", "ref": 3, "code": "limit_exceeded",
               "message": "a connection may subscribe to at most 2 topics"})
    );
    // Subscribing again to a topic it has is not a new subscription.
    let reply = client
        .command(json!({"action": "subscribe", "topic": "a"}))
        .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    client
        .command(json!({"action": "unsubscribe", "topic": "b"}))
        .await;
    let reply = client
        .command(json!({"action": "subscribe", "topic": "c"}))
        .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    // The backend is not limited.
    let (status, body) = server
        .post(
            &format!("/api/connections/{}/subscriptions", client.id),
            json!({"topic": "d"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn commands_over_the_rate_get_rate_limited_with_their_ref() {
    let server = TestServer::start_with(Options {
        command_rate: Some(1.0),
        command_burst: Some(5.0),
        ..options()
    })
    .await;
    let mut client = server.connect("chatty", &[]).await;
    for i in 0..8 {
        client.send(json!({"action": "ping", "ref": i})).await;
    }
    let mut limited = 0;
    for i in 0..8 {
        let reply = client.recv().await;
        assert_eq!(reply["ref"], i, "replies in order: {reply}");
        if i < 5 {
            assert_eq!(reply["type"], "pong", "the burst is allowed: {reply}");
        } else if reply["type"] == "error" {
            assert_eq!(reply["code"], "rate_limited", "{reply}");
            limited += 1;
        }
    }
    assert!(limited >= 2, "at 1/s at most one token refills here");
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains(&format!(
            r#"realtime_errors_total{{kind="rate_limited"}} {limited}"#
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn sustained_abuse_is_closed_with_3013() {
    let server = TestServer::start_with(Options {
        command_rate: Some(1.0),
        command_burst: Some(5.0),
        ..options()
    })
    .await;
    let mut client = server.connect("flooder", &[]).await;
    for i in 0..50 {
        client.send(json!({"action": "ping", "ref": i})).await;
    }
    let (frame, seen) = client.recv_close().await;
    let frame = frame.expect("a close frame");
    assert_eq!(u16::from(frame.code), 3013, "{:?}", frame.reason);
    // The burst was answered, then refusals, and the close came before the 50th.
    assert!(seen.len() < 50, "{}", seen.len());
    assert!(seen.iter().take(5).all(|f| f["type"] == "pong"));
    assert!(seen.iter().skip(5).all(|f| f["code"] == "rate_limited"));
}

#[tokio::test]
async fn a_topic_over_the_length_limit_is_invalid() {
    let server = TestServer::start_with(Options {
        max_topic_length: Some(8),
        ..options()
    })
    .await;
    let mut client = server.connect("u", &[]).await;
    let reply = client
        .command(json!({"action": "subscribe", "topic": "abcdefgh"}))
        .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    let reply = client
        .command(json!({"action": "subscribe", "topic": "abcdefghi"}))
        .await;
    assert_eq!(reply["code"], "invalid_topic", "{reply}");
}
