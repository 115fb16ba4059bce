//! The HTTP API against a real server and real sockets: API-key protection, every send
//! route (exact delivery counts, the right recipients and nobody else), request
//! validation errors and their JSON bodies, the body size limit, connection and topic
//! listings (local and single-node cluster scope), server-side subscriptions,
//! disconnects (close 3503), health and metrics.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

/// Asserts `msg` carries a server timestamp (RFC 3339 UTC, milliseconds) and returns
/// it without the timestamp, for exact comparison.
fn without_timestamp(mut msg: Value) -> Value {
    let ts = msg
        .as_object_mut()
        .and_then(|m| m.remove("timestamp"))
        .unwrap_or_else(|| panic!("no timestamp in {msg}"));
    let ts = ts.as_str().expect("timestamp is a string");
    assert_eq!(ts.len(), 24, "{ts}");
    assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
    msg
}

/// Asserts an API error: `status` and a JSON body `{"error": code, "message": <text>}`.
fn assert_api_error((status, body): (u16, Value), want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
}

#[tokio::test]
async fn missing_or_wrong_api_key_is_unauthorized() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice", &[]).await;
    for (method, path) in [
        (Method::GET, "/api/connections"),
        (Method::GET, "/api/topics"),
        (Method::POST, "/api/broadcast"),
        (Method::DELETE, "/api/users/alice/connections"),
        (Method::GET, "/api/no-such-endpoint"),
    ] {
        for auth in [
            None,
            Some("Bearer wrong-key".to_owned()),
            Some(format!("Basic {API_KEY}")),
            Some(format!("Bearer {API_KEY}x")),
            Some(API_KEY.to_owned()),
        ] {
            let reply = server
                .request_with_auth(method.clone(), path, auth.as_deref())
                .await;
            assert_api_error(reply, 401, "unauthorized");
        }
    }
    // Nothing happened on the way: alice is connected and received nothing.
    assert_eq!(server.rt.connection_count(), 1);
    alice.assert_nothing_pending().await;
    let (status, _) = server
        .request_with_auth(
            Method::GET,
            "/api/connections",
            Some(&format!("Bearer {API_KEY}")),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn broadcast_reaches_every_connection() {
    let server = TestServer::start().await;
    let mut a = server.connect("alice", &[]).await;
    let mut b = server.connect("bob", &["admin"]).await;
    let mut c = server.connect("alice", &[]).await;
    let reply = server
        .post("/api/broadcast", json!({"type": "notice", "text": "hi"}))
        .await;
    assert_eq!(reply, (200, json!({"delivered": 3, "relayed": false})));
    for client in [&mut a, &mut b, &mut c] {
        let msg = client.recv().await;
        assert_eq!(
            without_timestamp(msg),
            json!({"type": "notice", "text": "hi"})
        );
        client.assert_nothing_pending().await;
    }
}

#[tokio::test]
async fn user_route_reaches_only_that_users_connections() {
    let server = TestServer::start().await;
    let mut a1 = server.connect("alice", &[]).await;
    let mut a2 = server.connect("alice", &["admin"]).await;
    let mut bob = server.connect("bob", &[]).await;
    let reply = server
        .post(
            "/api/users/alice/messages",
            json!({"type": "dm", "n": 1, "timestamp": "sender-time"}),
        )
        .await;
    assert_eq!(reply, (200, json!({"delivered": 2, "relayed": false})));
    for client in [&mut a1, &mut a2] {
        // A timestamp the sender supplied is kept.
        assert_eq!(
            client.recv().await,
            json!({"type": "dm", "n": 1, "timestamp": "sender-time"})
        );
        client.assert_nothing_pending().await;
    }
    bob.assert_nothing_pending().await;
    let reply = server
        .post("/api/users/nobody/messages", json!({"type": "dm"}))
        .await;
    assert_eq!(reply, (200, json!({"delivered": 0, "relayed": false})));
    // Prefix of an existing user is not that user.
    let reply = server
        .post("/api/users/alic/messages", json!({"type": "dm"}))
        .await;
    assert_eq!(reply, (200, json!({"delivered": 0, "relayed": false})));
    for client in [&mut a1, &mut a2, &mut bob] {
        client.assert_nothing_pending().await;
    }
}

#[tokio::test]
async fn role_route_reaches_only_holders_of_the_role() {
    let server = TestServer::start().await;
    let mut admin1 = server.connect("alice", &["admin", "ops"]).await;
    let mut admin2 = server.connect("carol", &["admin"]).await;
    let mut ops = server.connect("dave", &["ops"]).await;
    let mut plain = server.connect("bob", &[]).await;
    let reply = server
        .post("/api/roles/admin/messages", json!({"type": "alert"}))
        .await;
    assert_eq!(reply, (200, json!({"delivered": 2, "relayed": false})));
    for client in [&mut admin1, &mut admin2] {
        assert_eq!(
            without_timestamp(client.recv().await),
            json!({"type": "alert"})
        );
    }
    for client in [&mut admin1, &mut admin2, &mut ops, &mut plain] {
        client.assert_nothing_pending().await;
    }
    let reply = server
        .post("/api/roles/ops/messages", json!({"type": "page"}))
        .await;
    assert_eq!(reply, (200, json!({"delivered": 2, "relayed": false})));
    for client in [&mut admin1, &mut ops] {
        assert_eq!(client.recv().await["type"], "page");
    }
    for client in [&mut admin1, &mut admin2, &mut ops, &mut plain] {
        client.assert_nothing_pending().await;
    }
}

#[tokio::test]
async fn connection_route_reaches_exactly_one_socket() {
    let server = TestServer::start().await;
    let mut a1 = server.connect("alice", &[]).await;
    let mut a2 = server.connect("alice", &[]).await;
    let path = format!("/api/connections/{}/messages", a2.id);
    let reply = server.post(&path, json!({"type": "only-you"})).await;
    assert_eq!(reply, (200, json!({"delivered": 1, "relayed": false})));
    assert_eq!(
        without_timestamp(a2.recv().await),
        json!({"type": "only-you"})
    );
    a2.assert_nothing_pending().await;
    a1.assert_nothing_pending().await;
}

#[tokio::test]
async fn topic_route_reaches_subscribers_with_the_topic_set() {
    let server = TestServer::start().await;
    let mut a = server.connect("alice", &[]).await;
    let mut b = server.connect("bob", &[]).await;
    let mut c = server.connect("carol", &[]).await;
    for client in [&mut a, &mut b] {
        let reply = client
            .command(json!({"action": "subscribe", "topic": "order:42"}))
            .await;
        assert_eq!(reply, json!({"type": "subscribed", "topic": "order:42"}));
    }
    let reply = c
        .command(json!({"action": "subscribe", "topic": "order:4"}))
        .await;
    assert_eq!(reply["type"], "subscribed");
    let reply = server
        .post(
            "/api/topics/order:42/messages",
            json!({"type": "order-updated", "topic": "spoofed", "status": "paid"}),
        )
        .await;
    assert_eq!(reply, (200, json!({"delivered": 2, "relayed": false})));
    for client in [&mut a, &mut b] {
        assert_eq!(
            without_timestamp(client.recv().await),
            json!({"type": "order-updated", "topic": "order:42", "status": "paid"})
        );
    }
    for client in [&mut a, &mut b, &mut c] {
        client.assert_nothing_pending().await;
    }
    let reply = server
        .post("/api/topics/order:nobody/messages", json!({"type": "x"}))
        .await;
    assert_eq!(reply, (200, json!({"delivered": 0, "relayed": false})));
}

#[tokio::test]
async fn body_that_is_not_json_is_invalid_json() {
    let server = TestServer::start().await;
    let mut a = server.connect("alice", &[]).await;
    let id = a.id.clone();
    for path in [
        "/api/broadcast".to_owned(),
        "/api/users/alice/messages".to_owned(),
        "/api/roles/admin/messages".to_owned(),
        format!("/api/connections/{id}/messages"),
        "/api/topics/news/messages".to_owned(),
    ] {
        for body in [&b"{nope"[..], b"", b"{\"type\":\"x\"} trailing"] {
            assert_api_error(
                server.post_raw(&path, body.to_vec()).await,
                400,
                "invalid_json",
            );
        }
    }
    a.assert_nothing_pending().await;
}

#[tokio::test]
async fn json_that_is_not_a_typed_object_is_invalid_message() {
    let server = TestServer::start().await;
    let mut a = server.connect("alice", &[]).await;
    let id = a.id.clone();
    for path in [
        "/api/broadcast".to_owned(),
        "/api/users/alice/messages".to_owned(),
        format!("/api/connections/{id}/messages"),
        "/api/topics/news/messages".to_owned(),
    ] {
        for body in [
            json!([1, 2]),
            json!("text"),
            json!(null),
            json!({"text": "no type"}),
            json!({"type": 5}),
            json!({"type": null}),
        ] {
            assert_api_error(server.post(&path, body).await, 400, "invalid_message");
        }
    }
    a.assert_nothing_pending().await;
}

#[tokio::test]
async fn invalid_topic_names_are_rejected() {
    let server = TestServer::start().await;
    let long = "a".repeat(256);
    for topic in ["a%20b", "bad*topic", "caf%C3%A9", "a%2Fb", long.as_str()] {
        let path = format!("/api/topics/{topic}/messages");
        assert_api_error(
            server.post(&path, json!({"type": "x"})).await,
            400,
            "invalid_topic",
        );
    }
    let max = "a".repeat(255);
    let reply = server
        .post(&format!("/api/topics/{max}/messages"), json!({"type": "x"}))
        .await;
    assert_eq!(reply, (200, json!({"delivered": 0, "relayed": false})));
}

#[tokio::test]
async fn unknown_connection_ids_are_not_found() {
    let server = TestServer::start().await;
    let mut a = server.connect("alice", &[]).await;
    // An id of the right shape from this very node (its tag) that was never handed out.
    let own_tag = realtime::NodeTag::of_connection(&a.id.parse().unwrap());
    let never_issued = own_tag.connection_id([0x5a; 16]).to_string();
    assert_ne!(never_issued, a.id);
    for id in [
        "00000000-0000-0000-0000-000000000000",
        "7d444840-9dc0-11d1-b245-5ffdce74fad2",
        "not-a-uuid",
        never_issued.as_str(),
    ] {
        assert_api_error(
            server
                .post(
                    &format!("/api/connections/{id}/messages"),
                    json!({"type": "x"}),
                )
                .await,
            404,
            "connection_not_found",
        );
        assert_api_error(
            server.get(&format!("/api/connections/{id}")).await,
            404,
            "connection_not_found",
        );
        assert_api_error(
            server.delete(&format!("/api/connections/{id}")).await,
            404,
            "connection_not_found",
        );
        assert_api_error(
            server
                .post(
                    &format!("/api/connections/{id}/subscriptions"),
                    json!({"topic": "news"}),
                )
                .await,
            404,
            "connection_not_found",
        );
        assert_api_error(
            server
                .delete(&format!("/api/connections/{id}/subscriptions/news"))
                .await,
            404,
            "connection_not_found",
        );
    }
    assert_eq!(server.rt.connection_count(), 1);
    a.assert_nothing_pending().await;
}

#[tokio::test]
async fn body_over_one_mebibyte_is_payload_too_large() {
    let server = TestServer::start().await;
    let mut a = server.connect("alice", &[]).await;
    const MIB: usize = 1024 * 1024;
    // A valid message of exactly 1 MiB is accepted...
    let frame = |len: usize| {
        let head = br#"{"type":"big","pad":""#;
        let tail = br#""}"#;
        let mut body = head.to_vec();
        body.resize(len - tail.len(), b'x');
        body.extend_from_slice(tail);
        assert_eq!(body.len(), len);
        body
    };
    let (status, body) = server.post_raw("/api/broadcast", frame(MIB)).await;
    assert_eq!(
        (status, body),
        (200, json!({"delivered": 1, "relayed": false}))
    );
    let msg = a.recv().await;
    assert_eq!(msg["type"], "big");
    assert_eq!(msg["pad"].as_str().unwrap().len(), MIB - 23);
    // ...one byte more is not, and is delivered to nobody.
    assert_api_error(
        server.post_raw("/api/broadcast", frame(MIB + 1)).await,
        413,
        "payload_too_large",
    );
    assert_api_error(
        server
            .post_raw("/api/users/alice/messages", frame(2 * MIB))
            .await,
        413,
        "payload_too_large",
    );
    a.assert_nothing_pending().await;
}

#[tokio::test]
async fn list_connections_reports_each_connection() {
    let server = TestServer::start().await;
    assert_eq!(
        server.get("/api/connections").await,
        (
            200,
            json!({"scope": "local", "count": 0, "connections": []})
        )
    );
    let mut alice = server.connect("alice", &["admin", "ops"]).await;
    let bob = server.connect("bob", &[]).await;
    for topic in ["order:1", "news"] {
        let reply = alice
            .command(json!({"action": "subscribe", "topic": topic}))
            .await;
        assert_eq!(reply["type"], "subscribed");
    }
    let (status, body) = server.get("/api/connections").await;
    assert_eq!(status, 200);
    assert_eq!(body["scope"], "local");
    assert_eq!(body["count"], 2);
    assert_eq!(body.as_object().unwrap().len(), 3, "{body}");
    let list = body["connections"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let find = |id: &str| -> Value {
        let mut c = list
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed in {body}"))
            .clone();
        let at = c
            .as_object_mut()
            .unwrap()
            .remove("connected_at")
            .expect("connected_at");
        assert_eq!(at.as_str().map(str::len), Some(24), "{at}");
        c
    };
    assert_eq!(
        find(&alice.id),
        json!({
            "id": alice.id, "user_id": "alice", "roles": ["admin", "ops"],
            "topics": ["news", "order:1"], "metadata": {}, "transport": "websocket"
        })
    );
    assert_eq!(
        find(&bob.id),
        json!({"id": bob.id, "user_id": "bob", "roles": [], "topics": [], "metadata": {},
               "transport": "websocket"})
    );
    // Listed in connect order.
    assert!(list[0]["connected_at"].as_str() <= list[1]["connected_at"].as_str());

    let (status, one) = server.get(&format!("/api/connections/{}", bob.id)).await;
    assert_eq!(status, 200);
    assert_eq!(one["user_id"], "bob");
    assert_eq!(one["id"], bob.id.as_str());
}

#[tokio::test]
async fn list_topics_reports_subscriber_counts() {
    let server = TestServer::start().await;
    assert_eq!(
        server.get("/api/topics").await,
        (200, json!({"scope": "local", "count": 0, "topics": {}}))
    );
    let mut a = server.connect("alice", &[]).await;
    let mut b = server.connect("bob", &[]).await;
    for (client, topic) in [(&mut a, "news"), (&mut b, "news")] {
        let reply = client
            .command(json!({"action": "subscribe", "topic": topic}))
            .await;
        assert_eq!(reply["type"], "subscribed");
    }
    let reply = a
        .command(json!({"action": "subscribe", "topic": "order:1"}))
        .await;
    assert_eq!(reply["type"], "subscribed");
    assert_eq!(
        server.get("/api/topics").await,
        (
            200,
            json!({"scope": "local", "count": 2, "topics": {"news": 2, "order:1": 1}})
        )
    );
    let reply = a
        .command(json!({"action": "unsubscribe", "topic": "order:1"}))
        .await;
    assert_eq!(reply["type"], "unsubscribed");
    assert_eq!(
        server.get("/api/topics").await,
        (
            200,
            json!({"scope": "local", "count": 1, "topics": {"news": 2}})
        )
    );
    // A closed connection leaves its topics.
    drop(b);
    server.wait_for_connections(1).await;
    assert_eq!(
        server.get("/api/topics").await,
        (
            200,
            json!({"scope": "local", "count": 1, "topics": {"news": 1}})
        )
    );
}

#[tokio::test]
async fn cluster_scope_on_a_single_node_reports_this_node() {
    let server = TestServer::start().await;
    assert_eq!(
        server.get("/api/connections?scope=cluster").await,
        (
            200,
            json!({"scope": "cluster", "count": 0, "connections": [], "next_cursor": null})
        )
    );
    assert_eq!(
        server.get("/api/topics?scope=cluster").await,
        (
            200,
            json!({"scope": "cluster", "count": 0, "topics": {}, "next_cursor": null})
        )
    );
    let mut alice = server.connect("alice", &["admin"]).await;
    let mut bob = server.connect("bob", &[]).await;
    for topic in ["news", "order:1"] {
        let reply = alice
            .command(json!({"action": "subscribe", "topic": topic}))
            .await;
        assert_eq!(reply, json!({"type": "subscribed", "topic": topic}));
    }
    let reply = bob
        .command(json!({"action": "subscribe", "topic": "news"}))
        .await;
    assert_eq!(reply, json!({"type": "subscribed", "topic": "news"}));

    // `scope=local` is the default.
    let (status, local) = server.get("/api/connections").await;
    assert_eq!(status, 200);
    assert_eq!(
        server.get("/api/connections?scope=local").await,
        (200, local.clone())
    );
    assert_eq!(local["scope"], "local");
    assert_eq!(local["count"], 2);

    // The cluster view is the local list, each connection labelled with node
    // `local`, in id order (the order cluster views page in).
    let (status, cluster) = server.get("/api/connections?scope=cluster").await;
    assert_eq!(status, 200, "{cluster}");
    let mut expected: Vec<Value> = local["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let mut c = c.clone();
            c.as_object_mut()
                .unwrap()
                .insert("node".into(), json!("local"));
            c
        })
        .collect();
    expected.sort_by_key(|c| c["id"].as_str().unwrap().to_owned());
    assert_eq!(
        cluster,
        json!({"scope": "cluster", "count": 2, "connections": expected, "next_cursor": null})
    );
    let ids: Vec<&str> = expected.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&alice.id.as_str()) && ids.contains(&bob.id.as_str()));

    let topics = json!({"news": 2, "order:1": 1});
    assert_eq!(
        server.get("/api/topics?scope=cluster").await,
        (
            200,
            json!({"scope": "cluster", "count": 2, "topics": topics, "next_cursor": null})
        )
    );
    assert_eq!(
        server.get("/api/topics?scope=local").await,
        (200, json!({"scope": "local", "count": 2, "topics": topics}))
    );
    alice.assert_nothing_pending().await;
    bob.assert_nothing_pending().await;
}

#[tokio::test]
async fn an_invalid_scope_is_a_bad_request() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice", &[]).await;
    for list in ["/api/connections", "/api/topics"] {
        for scope in ["bogus", "Cluster", "LOCAL", "", "cluster%20"] {
            assert_api_error(
                server.get(&format!("{list}?scope={scope}")).await,
                400,
                "bad_request",
            );
        }
    }
    // The API key is still checked first.
    let reply = server
        .request_with_auth(Method::GET, "/api/topics?scope=bogus", None)
        .await;
    assert_api_error(reply, 401, "unauthorized");
    assert_eq!(server.rt.connection_count(), 1);
    alice.assert_nothing_pending().await;
}

#[tokio::test]
async fn server_side_subscribe_and_unsubscribe() {
    let server = TestServer::start().await;
    let mut a = server.connect("alice", &[]).await;
    let mut b = server.connect("bob", &[]).await;
    let subs = format!("/api/connections/{}/subscriptions", a.id);

    let reply = server.post(&subs, json!({"topic": "news"})).await;
    assert_eq!(
        reply,
        (
            200,
            json!({"topic": "news", "subscribed": true, "already_subscribed": false})
        )
    );
    let reply = server.post(&subs, json!({"topic": "news"})).await;
    assert_eq!(
        reply,
        (
            200,
            json!({"topic": "news", "subscribed": true, "already_subscribed": true})
        )
    );
    // The server's authority bypasses the client topic policy.
    let reply = server.post(&subs, json!({"topic": "user:bob"})).await;
    assert_eq!(reply.0, 200, "{}", reply.1);

    let reply = server
        .post("/api/topics/news/messages", json!({"type": "headline"}))
        .await;
    assert_eq!(reply, (200, json!({"delivered": 1, "relayed": false})));
    assert_eq!(
        without_timestamp(a.recv().await),
        json!({"type": "headline", "topic": "news"})
    );
    a.assert_nothing_pending().await;
    b.assert_nothing_pending().await;

    let reply = server
        .delete(&format!("/api/connections/{}/subscriptions/news", a.id))
        .await;
    assert_eq!(
        reply,
        (
            200,
            json!({"topic": "news", "unsubscribed": true, "was_subscribed": true})
        )
    );
    let reply = server
        .delete(&format!("/api/connections/{}/subscriptions/news", a.id))
        .await;
    assert_eq!(
        reply,
        (
            200,
            json!({"topic": "news", "unsubscribed": true, "was_subscribed": false})
        )
    );
    let reply = server
        .post("/api/topics/news/messages", json!({"type": "headline"}))
        .await;
    assert_eq!(reply, (200, json!({"delivered": 0, "relayed": false})));
    a.assert_nothing_pending().await;

    // Bad bodies and topics.
    assert_api_error(
        server.post(&subs, json!({"topic": "a b"})).await,
        400,
        "invalid_topic",
    );
    assert_api_error(
        server.post(&subs, json!({"name": "news"})).await,
        400,
        "bad_request",
    );
    assert_api_error(
        server.post_raw(&subs, b"{nope".to_vec()).await,
        400,
        "bad_request",
    );
    let (status, conn) = server.get(&format!("/api/connections/{}", a.id)).await;
    assert_eq!((status, &conn["topics"]), (200, &json!(["user:bob"])));
}

#[tokio::test]
async fn delete_connection_closes_it_with_3503() {
    let server = TestServer::start().await;
    let mut a = server.connect("alice", &[]).await;
    let mut other = server.connect("alice", &[]).await;
    let path = format!("/api/connections/{}", a.id);
    assert_eq!(
        server.delete(&path).await,
        (200, json!({"disconnected": 1}))
    );
    a.expect_close(3503).await;
    // Gone from the registry at once, not only after the socket closed.
    assert_eq!(server.rt.connection_count(), 1);
    assert_api_error(server.get(&path).await, 404, "connection_not_found");
    assert_api_error(server.delete(&path).await, 404, "connection_not_found");
    assert_api_error(
        server
            .post(&format!("{path}/messages"), json!({"type": "x"}))
            .await,
        404,
        "connection_not_found",
    );
    server.wait_for_connections(1).await;
    other.assert_nothing_pending().await;
}

#[tokio::test]
async fn delete_user_connections_closes_all_of_them() {
    let server = TestServer::start().await;
    let mut a1 = server.connect("alice", &[]).await;
    let mut a2 = server.connect("alice", &["admin"]).await;
    let mut bob = server.connect("bob", &[]).await;
    assert_eq!(
        server.delete("/api/users/alice/connections").await,
        (200, json!({"disconnected": 2, "relayed": false}))
    );
    a1.expect_close(3503).await;
    a2.expect_close(3503).await;
    server.wait_for_connections(1).await;
    bob.assert_nothing_pending().await;
    assert_eq!(
        server.delete("/api/users/alice/connections").await,
        (200, json!({"disconnected": 0, "relayed": false}))
    );
    let reply = server
        .post("/api/users/alice/messages", json!({"type": "x"}))
        .await;
    assert_eq!(reply, (200, json!({"delivered": 0, "relayed": false})));
    let (_, list) = server.get("/api/connections").await;
    assert_eq!(list["scope"], "local");
    assert_eq!(list["count"], 1);
    assert_eq!(list["connections"][0]["user_id"], "bob");
}

/// `GET /health` without any credentials.
async fn health(server: &TestServer) -> (u16, Value) {
    let r = server.http.get(server.url("/health")).send().await.unwrap();
    (r.status().as_u16(), r.json::<Value>().await.unwrap())
}

#[tokio::test]
async fn health_reports_status_and_connection_count() {
    let server = TestServer::start().await;
    assert_eq!(
        health(&server).await,
        (
            200,
            json!({"status": "healthy", "active_connections": 0, "service": "realtime"})
        )
    );
    let _a = server.connect("alice", &[]).await;
    let b = server.connect("bob", &[]).await;
    assert_eq!(
        health(&server).await,
        (
            200,
            json!({"status": "healthy", "active_connections": 2, "service": "realtime"})
        )
    );
    drop(b);
    server.wait_for_connections(1).await;
    assert_eq!(
        health(&server).await,
        (
            200,
            json!({"status": "healthy", "active_connections": 1, "service": "realtime"})
        )
    );
}

#[tokio::test]
async fn metrics_expose_connections_and_messages_by_route() {
    let server = TestServer::start().await;
    let metrics = server.metrics_text().await;
    for line in [
        "# TYPE realtime_connections gauge\n",
        "realtime_connections 0\n",
        "realtime_messages_total{route=\"broadcast\"} 0\n",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in:\n{metrics}");
    }
    let mut a = server.connect("alice", &[]).await;
    let _b = server.connect("bob", &[]).await;
    for _ in 0..2 {
        let reply = server.post("/api/broadcast", json!({"type": "x"})).await;
        assert_eq!(reply, (200, json!({"delivered": 2, "relayed": false})));
    }
    let reply = server
        .post("/api/users/alice/messages", json!({"type": "x"}))
        .await;
    assert_eq!(reply, (200, json!({"delivered": 1, "relayed": false})));
    // A refused send is not counted.
    assert_eq!(
        server.post("/api/broadcast", json!({"no": "type"})).await.0,
        400
    );
    let metrics = server.metrics_text().await;
    for line in [
        "realtime_connections 2\n",
        "realtime_connections_accepted_total 2\n",
        "realtime_messages_total{route=\"broadcast\"} 2\n",
        "realtime_messages_total{route=\"user\"} 1\n",
        "realtime_messages_total{route=\"topic\"} 0\n",
        "realtime_deliveries_total{route=\"broadcast\"} 4\n",
        "realtime_deliveries_total{route=\"user\"} 1\n",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in:\n{metrics}");
    }
    a.recv().await;
    a.recv().await;
    a.recv().await;
    a.assert_nothing_pending().await;
}

#[tokio::test]
async fn unknown_api_path_is_a_json_404() {
    let server = TestServer::start().await;
    for path in ["/api/nope", "/api/users/alice", "/api/connections/x/y/z"] {
        assert_api_error(server.get(path).await, 404, "not_found");
    }
    assert_api_error(
        server.post("/api/nope", json!({"type": "x"})).await,
        404,
        "not_found",
    );
}

#[tokio::test]
async fn unknown_paths_outside_the_api_need_no_key_and_are_a_json_404() {
    let server = TestServer::start().await;
    for path in ["/", "/nope", "/apix", "/health/extra"] {
        let r = server.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "not_found", "{path}");
    }
    // Inside /api the key is still checked before anything else.
    let r = server
        .http
        .get(server.url("/api/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}
