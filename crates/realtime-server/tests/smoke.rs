//! End-to-end smoke test: connect, subscribe, publish through the HTTP API.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn connect_subscribe_and_receive_a_published_message() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice", &["admin"]).await;
    let reply = alice
        .command(json!({"action": "subscribe", "topic": "order:123", "ref": "1"}))
        .await;
    assert_eq!(
        reply,
        json!({"type": "subscribed", "topic": "order:123", "ref": "1"})
    );
    let (status, body) = server
        .post(
            "/api/topics/order:123/messages",
            json!({"type": "order-updated", "status": "shipped"}),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"delivered": 1, "relayed": false}))
    );
    let msg = alice.recv().await;
    assert_eq!(msg["type"], "order-updated");
    assert_eq!(msg["topic"], "order:123");
    assert!(msg["timestamp"].is_string());
}
