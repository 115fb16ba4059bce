//! The client protocol over a real socket: subscribe/unsubscribe/ping acks with `ref`
//! echoed, client publishing (closed by default, opened by `client_publish`), the topic
//! policy (`user:` and `role:` topics), every error code with the connection staying
//! open, delivery to subscribers and to every connection of a user, and per-publisher
//! message order.

mod common;

use common::*;
use serde_json::{Value, json};

/// Asserts `reply` is exactly an error frame with `code`, `reference` (when given)
/// and a non-empty message.
fn assert_error(reply: &Value, code: &str, reference: Option<Value>) {
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], code, "{reply}");
    assert!(
        reply["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{reply}"
    );
    let obj = reply.as_object().unwrap();
    match reference {
        Some(r) => {
            assert_eq!(obj.get("ref"), Some(&r), "{reply}");
            assert_eq!(obj.len(), 4, "{reply}");
        }
        None => {
            assert!(!obj.contains_key("ref"), "{reply}");
            assert_eq!(obj.len(), 3, "{reply}");
        }
    }
}

/// Asserts the connection is still open and answering after an error.
async fn assert_still_open(client: &mut Client) {
    let reply = client
        .command(json!({"action": "ping", "ref": "alive"}))
        .await;
    assert_eq!(reply, json!({"type": "pong", "ref": "alive"}));
}

fn publishing_options() -> realtime_server::Options {
    realtime_server::Options {
        client_publish: vec!["chat:*".into()],
        ..options()
    }
}

#[tokio::test]
async fn subscribe_and_unsubscribe_are_acknowledged_with_the_ref() {
    let server = TestServer::start().await;
    let mut a = server.connect("alice", &[]).await;
    assert_eq!(
        a.command(json!({"action": "subscribe", "topic": "order:1", "ref": "s1"}))
            .await,
        json!({"type": "subscribed", "topic": "order:1", "ref": "s1"})
    );
    assert_eq!(
        a.command(json!({"action": "subscribe", "topic": "order:2", "ref": 42}))
            .await,
        json!({"type": "subscribed", "topic": "order:2", "ref": 42})
    );
    assert_eq!(
        a.command(json!({"action": "subscribe", "topic": "order:3"}))
            .await,
        json!({"type": "subscribed", "topic": "order:3"})
    );
    // Subscribing twice is acknowledged the same way.
    assert_eq!(
        a.command(json!({"action": "subscribe", "topic": "order:1", "ref": "s1b"}))
            .await,
        json!({"type": "subscribed", "topic": "order:1", "ref": "s1b"})
    );
    assert_eq!(
        a.command(json!({"action": "unsubscribe", "topic": "order:1", "ref": "u1"}))
            .await,
        json!({"type": "unsubscribed", "topic": "order:1", "ref": "u1"})
    );
    assert_eq!(
        a.command(json!({"action": "unsubscribe", "topic": "order:2", "ref": 7.5}))
            .await,
        json!({"type": "unsubscribed", "topic": "order:2", "ref": 7.5})
    );
    // Unsubscribing from a topic never subscribed is still acknowledged.
    assert_eq!(
        a.command(json!({"action": "unsubscribe", "topic": "never"}))
            .await,
        json!({"type": "unsubscribed", "topic": "never"})
    );
    let (_, conn) = server.get(&format!("/api/connections/{}", a.id)).await;
    assert_eq!(conn["topics"], json!(["order:3"]));
}

#[tokio::test]
async fn ping_gets_pong_with_the_ref() {
    let server = TestServer::start().await;
    let mut a = server.connect("alice", &[]).await;
    assert_eq!(
        a.command(json!({"action": "ping", "ref": "p1"})).await,
        json!({"type": "pong", "ref": "p1"})
    );
    assert_eq!(
        a.command(json!({"action": "ping", "ref": 0})).await,
        json!({"type": "pong", "ref": 0})
    );
    assert_eq!(
        a.command(json!({"action": "ping"})).await,
        json!({"type": "pong"})
    );
    assert_eq!(
        a.command(json!({"action": "ping", "ref": null})).await,
        json!({"type": "pong"})
    );
}

#[tokio::test]
async fn client_publish_is_forbidden_by_default() {
    let server = TestServer::start().await;
    let mut a = server.connect("alice", &[]).await;
    let mut b = server.connect("bob", &[]).await;
    for client in [&mut a, &mut b] {
        let reply = client
            .command(json!({"action": "subscribe", "topic": "chat:lobby"}))
            .await;
        assert_eq!(reply["type"], "subscribed");
    }
    let reply = a
        .command(json!({
            "action": "publish", "topic": "chat:lobby", "ref": "p1",
            "message": {"type": "chat", "text": "hi"}
        }))
        .await;
    assert_eq!(
        reply,
        json!({
            "type": "error", "ref": "p1", "code": "forbidden",
            "message": "client publishing is not enabled on topic chat:lobby"
        })
    );
    a.assert_nothing_pending().await;
    b.assert_nothing_pending().await;
}

#[tokio::test]
async fn client_publish_on_an_opened_topic_reaches_subscribers() {
    let server = TestServer::start_with(publishing_options()).await;
    let mut a = server.connect("alice", &[]).await;
    let mut b = server.connect("bob", &[]).await;
    let mut c = server.connect("carol", &[]).await;
    for client in [&mut a, &mut b] {
        let reply = client
            .command(json!({"action": "subscribe", "topic": "chat:lobby"}))
            .await;
        assert_eq!(reply["type"], "subscribed");
    }
    // carol publishes without being subscribed: the two subscribers get it.
    let reply = c
        .command(json!({
            "action": "publish", "topic": "chat:lobby", "ref": "p1",
            "message": {"type": "chat", "text": "hi", "topic": "spoofed"}
        }))
        .await;
    assert_eq!(
        reply,
        json!({"type": "published", "ref": "p1", "delivered": 2, "relayed": false})
    );
    for client in [&mut a, &mut b] {
        let msg = client.recv().await;
        assert!(msg["timestamp"].is_string(), "{msg}");
        assert_eq!(
            msg,
            json!({"type": "chat", "text": "hi", "topic": "chat:lobby", "timestamp": msg["timestamp"]})
        );
        client.assert_nothing_pending().await;
    }
    c.assert_nothing_pending().await;

    // alice publishes while subscribed: she receives her own message and the
    // acknowledgement (their relative order is not part of the protocol).
    a.send(json!({
        "action": "publish", "topic": "chat:lobby", "ref": 9,
        "message": {"type": "chat", "text": "me too"}
    }))
    .await;
    let (first, second) = (a.recv().await, a.recv().await);
    let (own, ack) = if first["type"] == "published" {
        (second, first)
    } else {
        (first, second)
    };
    assert_eq!(
        ack,
        json!({"type": "published", "ref": 9, "delivered": 2, "relayed": false})
    );
    assert_eq!(
        own,
        json!({"type": "chat", "text": "me too", "topic": "chat:lobby", "timestamp": own["timestamp"]})
    );
    assert!(own["timestamp"].is_string(), "{own}");
    let msg = b.recv().await;
    assert_eq!(msg["text"], "me too");
    assert_eq!(msg["topic"], "chat:lobby");
    for client in [&mut a, &mut b, &mut c] {
        client.assert_nothing_pending().await;
    }

    // Nobody subscribed: delivered 0.
    let reply = c
        .command(json!({
            "action": "publish", "topic": "chat:empty",
            "message": {"type": "chat"}
        }))
        .await;
    assert_eq!(
        reply,
        json!({"type": "published", "delivered": 0, "relayed": false})
    );
}

#[tokio::test]
async fn client_publish_outside_opened_patterns_is_forbidden() {
    let server = TestServer::start_with(realtime_server::Options {
        client_publish: vec!["chat:*".into(), "user:*".into()],
        ..options()
    })
    .await;
    let mut a = server.connect("alice", &[]).await;
    let mut b = server.connect("bob", &[]).await;
    let reply = b
        .command(json!({"action": "subscribe", "topic": "user:bob"}))
        .await;
    assert_eq!(reply["type"], "subscribed");
    for (topic, reference) in [("news", json!("n")), ("chatroom", json!(1))] {
        let reply = a
            .command(json!({
                "action": "publish", "topic": topic, "ref": reference,
                "message": {"type": "chat"}
            }))
            .await;
        assert_error(&reply, "forbidden", Some(reference));
    }
    // Opened, but another user's topic: the publisher must be able to read it.
    let reply = a
        .command(json!({
            "action": "publish", "topic": "user:bob", "ref": "u",
            "message": {"type": "chat"}
        }))
        .await;
    assert_error(&reply, "forbidden", Some(json!("u")));
    // A message without a string type is a bad request even on an opened topic.
    let reply = a
        .command(json!({
            "action": "publish", "topic": "chat:x", "ref": "m",
            "message": {"text": "no type"}
        }))
        .await;
    assert_error(&reply, "bad_request", Some(json!("m")));
    b.assert_nothing_pending().await;
    assert_still_open(&mut a).await;
}

#[tokio::test]
async fn user_topics_only_for_their_user() {
    let server = TestServer::start().await;
    let mut a = server.connect("alice", &[]).await;
    for topic in ["user:alice", "user:alice:x", "user:alice:inbox:urgent"] {
        assert_eq!(
            a.command(json!({"action": "subscribe", "topic": topic, "ref": topic}))
                .await,
            json!({"type": "subscribed", "topic": topic, "ref": topic})
        );
    }
    for topic in ["user:bob", "user:bob:x", "user:alicex", "user:"] {
        let reply = a
            .command(json!({"action": "subscribe", "topic": topic, "ref": topic}))
            .await;
        assert_error(&reply, "forbidden", Some(json!(topic)));
    }
    assert_still_open(&mut a).await;
    // Only the allowed subscriptions were recorded.
    let (_, conn) = server.get(&format!("/api/connections/{}", a.id)).await;
    assert_eq!(
        conn["topics"],
        json!(["user:alice", "user:alice:inbox:urgent", "user:alice:x"])
    );
    let reply = server
        .post("/api/topics/user:bob/messages", json!({"type": "x"}))
        .await;
    assert_eq!(reply, (200, json!({"delivered": 0, "relayed": false})));
}

#[tokio::test]
async fn role_topics_only_for_holders_of_the_role() {
    let server = TestServer::start().await;
    let mut admin = server.connect("alice", &["admin"]).await;
    let mut plain = server.connect("bob", &["user"]).await;
    for topic in ["role:admin", "role:admin:alerts"] {
        let reply = admin
            .command(json!({"action": "subscribe", "topic": topic, "ref": 1}))
            .await;
        assert_eq!(
            reply,
            json!({"type": "subscribed", "topic": topic, "ref": 1})
        );
        let reply = plain
            .command(json!({"action": "subscribe", "topic": topic, "ref": 2}))
            .await;
        assert_error(&reply, "forbidden", Some(json!(2)));
    }
    let reply = admin
        .command(json!({"action": "subscribe", "topic": "role:administrator"}))
        .await;
    assert_error(&reply, "forbidden", None);
    let reply = plain
        .command(json!({"action": "subscribe", "topic": "role:user"}))
        .await;
    assert_eq!(reply, json!({"type": "subscribed", "topic": "role:user"}));
    let reply = server
        .post("/api/topics/role:admin/messages", json!({"type": "alert"}))
        .await;
    assert_eq!(reply, (200, json!({"delivered": 1, "relayed": false})));
    assert_eq!(admin.recv().await["topic"], "role:admin");
    admin.assert_nothing_pending().await;
    plain.assert_nothing_pending().await;
}

#[tokio::test]
async fn malformed_commands_are_bad_requests_and_the_connection_stays_open() {
    let server = TestServer::start().await;
    let mut a = server.connect("alice", &[]).await;
    let cases: Vec<(&str, Option<Value>)> = vec![
        ("not json", None),
        ("{\"action\":", None),
        ("[1,2]", None),
        ("\"ping\"", None),
        ("42", None),
        (r#"{"ref":"r1"}"#, Some(json!("r1"))),
        (r#"{"action":5,"ref":"r2"}"#, Some(json!("r2"))),
        (r#"{"action":"subscribe","ref":3}"#, Some(json!(3))),
        (r#"{"action":"unsubscribe","ref":"r4"}"#, Some(json!("r4"))),
        (
            r#"{"action":"subscribe","topic":7,"ref":"r5"}"#,
            Some(json!("r5")),
        ),
        (
            r#"{"action":"publish","topic":"chat:x","ref":"r6"}"#,
            Some(json!("r6")),
        ),
        (r#"{"action":"ping","ref":{"x":1}}"#, None),
    ];
    for (text, reference) in cases {
        a.send_text(text).await;
        let reply = a.recv().await;
        assert_error(&reply, "bad_request", reference);
        assert_still_open(&mut a).await;
    }
    a.send_binary(b"{\"action\":\"ping\"}").await;
    let reply = a.recv().await;
    assert_error(&reply, "bad_request", None);
    assert_still_open(&mut a).await;
    assert_eq!(server.rt.connection_count(), 1);
}

#[tokio::test]
async fn unknown_action_is_reported_with_the_ref() {
    let server = TestServer::start().await;
    let mut a = server.connect("alice", &[]).await;
    let reply = a.command(json!({"action": "dance", "ref": "d"})).await;
    assert_eq!(
        reply,
        json!({"type": "error", "ref": "d", "code": "unknown_action", "message": "unknown action `dance`"})
    );
    assert_still_open(&mut a).await;
    let reply = a
        .command(json!({"action": "Subscribe", "topic": "x"}))
        .await;
    assert_error(&reply, "unknown_action", None);
    assert_still_open(&mut a).await;
}

#[tokio::test]
async fn invalid_topics_are_reported() {
    let server = TestServer::start().await;
    let mut a = server.connect("alice", &[]).await;
    let too_long = "a".repeat(256);
    for (topic, action) in [
        ("a b", "subscribe"),
        ("a/b", "subscribe"),
        ("café", "subscribe"),
        ("chat:*", "subscribe"),
        ("", "subscribe"),
        (too_long.as_str(), "subscribe"),
        ("a b", "unsubscribe"),
        ("a b", "publish"),
    ] {
        let reply = a
            .command(json!({
                "action": action, "topic": topic, "ref": "t",
                "message": {"type": "x"}
            }))
            .await;
        assert_error(&reply, "invalid_topic", Some(json!("t")));
        assert_still_open(&mut a).await;
    }
    let longest = "a".repeat(255);
    assert_eq!(
        a.command(json!({"action": "subscribe", "topic": longest}))
            .await,
        json!({"type": "subscribed", "topic": longest})
    );
    let (_, topics) = server.get("/api/topics").await;
    assert_eq!(topics["count"], 1);
    assert_eq!(topics["topics"], json!({longest.as_str(): 1}));
}

#[tokio::test]
async fn forbidden_leaves_the_connection_open() {
    let server = TestServer::start().await;
    let mut a = server.connect("alice", &[]).await;
    let reply = a
        .command(json!({"action": "subscribe", "topic": "user:bob", "ref": 5}))
        .await;
    assert_eq!(
        reply,
        json!({
            "type": "error", "ref": 5, "code": "forbidden",
            "message": "topic user:bob belongs to another user"
        })
    );
    assert_still_open(&mut a).await;
    let reply = a
        .command(json!({"action": "subscribe", "topic": "order:1", "ref": 6}))
        .await;
    assert_eq!(
        reply,
        json!({"type": "subscribed", "topic": "order:1", "ref": 6})
    );
}

#[tokio::test]
async fn unsubscribed_clients_no_longer_receive_topic_messages() {
    let server = TestServer::start().await;
    let mut a = server.connect("alice", &[]).await;
    let mut b = server.connect("bob", &[]).await;
    for client in [&mut a, &mut b] {
        let reply = client
            .command(json!({"action": "subscribe", "topic": "news"}))
            .await;
        assert_eq!(reply["type"], "subscribed");
    }
    let reply = server
        .post("/api/topics/news/messages", json!({"type": "n", "seq": 1}))
        .await;
    assert_eq!(reply, (200, json!({"delivered": 2, "relayed": false})));
    assert_eq!(a.recv().await["seq"], 1);
    assert_eq!(b.recv().await["seq"], 1);

    let reply = a
        .command(json!({"action": "unsubscribe", "topic": "news", "ref": "u"}))
        .await;
    assert_eq!(
        reply,
        json!({"type": "unsubscribed", "topic": "news", "ref": "u"})
    );
    let reply = server
        .post("/api/topics/news/messages", json!({"type": "n", "seq": 2}))
        .await;
    assert_eq!(reply, (200, json!({"delivered": 1, "relayed": false})));
    assert_eq!(b.recv().await["seq"], 2);
    a.assert_nothing_pending().await;
    b.assert_nothing_pending().await;
}

#[tokio::test]
async fn every_connection_of_a_user_receives_send_to_user() {
    let server = TestServer::start().await;
    let mut phone = server.connect("alice", &[]).await;
    let mut laptop = server.connect("alice", &[]).await;
    let mut bob = server.connect("bob", &[]).await;
    assert_ne!(phone.id, laptop.id);

    let delivery = server
        .rt
        .send_to_user("alice", json!({"type": "notification", "n": 1}))
        .unwrap();
    assert_eq!(
        delivery,
        realtime::Delivery {
            local: 2,
            relayed: false,
            position: None,
        }
    );
    let reply = server
        .post(
            "/api/users/alice/messages",
            json!({"type": "notification", "n": 2}),
        )
        .await;
    assert_eq!(reply, (200, json!({"delivered": 2, "relayed": false})));
    for client in [&mut phone, &mut laptop] {
        for n in [1, 2] {
            let msg = client.recv().await;
            assert_eq!(
                (&msg["type"], &msg["n"]),
                (&json!("notification"), &json!(n))
            );
        }
        client.assert_nothing_pending().await;
    }
    bob.assert_nothing_pending().await;
}

#[tokio::test]
async fn messages_from_one_publisher_arrive_in_order() {
    let server = TestServer::start().await;
    let mut a = server.connect("alice", &[]).await;
    let path = format!("/api/connections/{}/messages", a.id);
    for seq in 0..200 {
        let reply = server.post(&path, json!({"type": "seq", "seq": seq})).await;
        assert_eq!(
            reply,
            (200, json!({"delivered": 1, "relayed": false})),
            "message {seq}"
        );
    }
    for seq in 0..200 {
        let msg = a.recv().await;
        assert_eq!(msg["seq"], seq, "{msg}");
    }
    a.assert_nothing_pending().await;

    // The same from library code in one burst (no await between sends), which the
    // session writes out in batches.
    let id = a.id.parse().unwrap();
    for seq in 0..200 {
        assert_eq!(
            server
                .rt
                .send_to_connection(id, json!({"type": "seq", "seq": seq})),
            Ok(realtime::Delivery {
                local: 1,
                relayed: false,
                position: None,
            })
        );
    }
    for seq in 0..200 {
        assert_eq!(a.recv().await["seq"], seq);
    }
    a.assert_nothing_pending().await;
}
