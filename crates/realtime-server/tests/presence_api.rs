//! The HTTP presence routes on one node, over real sockets: a topic's members
//! follow subscribes, unsubscribes and abrupt disconnects, paging returns every
//! member exactly once, counts and online status match what the test itself
//! opened and closed, and every bad request is a typed JSON error.

mod common;
mod processes;

use std::collections::BTreeSet;

use common::*;
use processes::eventually;
use realtime_core::Access;
use realtime_server::config::NamespaceOptions;
use serde_json::{Value, json};

/// `room` keeps presence (with join/leave frames), `doc` keeps presence without
/// them, `lobby` keeps none.
async fn server() -> TestServer {
    TestServer::start_with(realtime_server::Options {
        namespaces: Some(vec![
            NamespaceOptions::new("user:{sub}", Access::Owner, Access::Nobody),
            NamespaceOptions::new("room", Access::Authenticated, Access::Nobody)
                .with_presence(true),
            NamespaceOptions::new("doc", Access::Authenticated, Access::Nobody)
                .with_presence(false),
            NamespaceOptions::new("lobby", Access::Authenticated, Access::Nobody),
        ]),
        ..options()
    })
    .await
}

/// A client for `user` whose token carries `name` as a metadata claim.
async fn connect_named(server: &TestServer, user: &str, name: &str) -> Client {
    let mut claims = claims(user, &[]);
    claims["name"] = json!(name);
    let mut client = Client::connect(&server.ws_url(&sign_hs256(&claims, SECRET))).await;
    let welcome = client.recv().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    client.id = welcome["connection_id"].as_str().unwrap().to_owned();
    client
}

/// `(user_id, connection_id)` of every connection in a presence answer, in order.
fn listed(answer: &Value) -> Vec<(String, String)> {
    answer["users"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|u| {
            let user = u["user_id"].as_str().unwrap().to_owned();
            u["connections"].as_array().unwrap().iter().map(move |c| {
                (
                    user.clone(),
                    c["connection_id"].as_str().unwrap().to_owned(),
                )
            })
        })
        .collect()
}

async fn stats(server: &TestServer, topic: &str) -> Value {
    let (status, body) = server
        .get(&format!("/api/topics/{topic}/presence/stats"))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn members_follow_subscribes_unsubscribes_and_disconnects() {
    let server = server().await;
    let mut alice1 = connect_named(&server, "alice", "Alice").await;
    let mut alice2 = connect_named(&server, "alice", "Alice").await;
    let mut bob = connect_named(&server, "bob", "Bob").await;
    for client in [&mut alice1, &mut alice2, &mut bob] {
        client.subscribe_acked("room:1").await;
    }
    let (status, answer) = server.get("/api/topics/room:1/presence").await;
    assert_eq!(status, 200, "{answer}");
    // The expected answer, from what the test opened: users by id, each user's
    // connections by id.
    let mut alice_ids = [alice1.id.clone(), alice2.id.clone()];
    alice_ids.sort();
    assert_eq!(answer["topic"], "room:1");
    assert_eq!(answer.get("cursor"), None, "one page: no cursor");
    assert_eq!(answer.get("degraded"), None, "the store answered");
    let users = answer["users"].as_array().unwrap();
    assert_eq!(users.len(), 2, "{answer}");
    assert_eq!(users[0]["user_id"], "alice");
    assert_eq!(users[1]["user_id"], "bob");
    let alice_listed: Vec<&str> = users[0]["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["connection_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        alice_listed,
        alice_ids.iter().map(String::as_str).collect::<Vec<_>>()
    );
    let bob_entry = &users[1]["connections"][0];
    assert_eq!(bob_entry["connection_id"], json!(bob.id));
    assert_eq!(
        bob_entry["info"],
        json!({"name": "Bob"}),
        "token metadata claims"
    );
    assert!(
        time::OffsetDateTime::parse(
            bob_entry["connected_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok(),
        "{bob_entry}"
    );
    assert_eq!(
        stats(&server, "room:1").await,
        json!({"topic": "room:1", "connections": 3, "users": 2})
    );

    // An unsubscribe is answered after the store has it.
    let reply = bob
        .command(json!({"action": "unsubscribe", "topic": "room:1", "ref": "u"}))
        .await;
    assert_eq!(reply["type"], "unsubscribed", "{reply}");
    let (_, answer) = server.get("/api/topics/room:1/presence").await;
    assert_eq!(
        listed(&answer),
        alice_ids
            .iter()
            .map(|id| ("alice".to_owned(), id.clone()))
            .collect::<Vec<_>>()
    );

    // An abrupt disconnect: the socket just goes away.
    let gone = alice1.id.clone();
    drop(alice1);
    eventually(WAIT, "the closed connection leaves the topic", || async {
        stats(&server, "room:1").await["connections"] == 1
    })
    .await;
    let (_, answer) = server.get("/api/topics/room:1/presence").await;
    let left = listed(&answer);
    assert_eq!(left, vec![("alice".to_owned(), alice2.id.clone())]);
    assert!(left.iter().all(|(_, id)| *id != gone));
    assert_eq!(
        stats(&server, "room:1").await,
        json!({"topic": "room:1", "connections": 1, "users": 1})
    );
    // Bob is still connected, only not in the topic.
    assert_eq!(stats(&server, "room:2").await["connections"], 0);
}

#[tokio::test]
async fn paging_returns_every_member_exactly_once() {
    let server = server().await;
    let mut expected = BTreeSet::new();
    let mut clients = Vec::new();
    // Seven users with one to five connections each: pages cut through users.
    for (n, user) in ["u1", "u2", "u3", "u4", "u5", "u6", "u7"]
        .iter()
        .enumerate()
    {
        for _ in 0..=(n % 5) {
            let mut client = server.connect(user, &[]).await;
            client.subscribe_acked("doc:big").await;
            expected.insert((user.to_string(), client.id.clone()));
            clients.push(client);
        }
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/api/topics/doc:big/presence?limit=4".to_owned(),
            Some(c) => format!("/api/topics/doc:big/presence?limit=4&cursor={c}"),
        };
        let (status, page) = server.get(&path).await;
        assert_eq!(status, 200, "{page}");
        let members = listed(&page);
        assert!(members.len() <= 4, "{page}");
        seen.extend(members);
        pages += 1;
        match page.get("cursor") {
            Some(c) => cursor = Some(c.as_str().unwrap().to_owned()),
            None => break,
        }
        assert!(pages <= expected.len(), "the walk ends");
    }
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "nobody listed twice");
    assert_eq!(unique, expected, "everybody listed");
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "in (user_id, connection_id) order");
    assert_eq!(
        stats(&server, "doc:big").await,
        json!({"topic": "doc:big", "connections": expected.len(), "users": 7})
    );
}

#[tokio::test]
async fn online_status_and_cluster_counts_follow_connections() {
    let server = server().await;
    let (status, nobody) = server.get("/api/users/carol/presence").await;
    assert_eq!(status, 200);
    assert_eq!(
        nobody,
        json!({"user_id": "carol", "online": false, "connections": 0, "last_seen": null})
    );
    assert_eq!(
        server.get("/api/presence/stats").await,
        (200, json!({"users": 0, "connections": 0}))
    );

    let carol1 = server.connect("carol", &[]).await;
    let carol2 = server.connect("carol", &[]).await;
    let _dave = server.connect("dave", &[]).await;
    let (_, online) = server.get("/api/users/carol/presence").await;
    assert_eq!(
        (&online["online"], &online["connections"]),
        (&json!(true), &json!(2))
    );
    let seen = parse_time(&online["last_seen"]);
    let now = time::OffsetDateTime::now_utc();
    assert!(
        (now - seen).abs() < time::Duration::minutes(1),
        "online: last seen now"
    );
    assert_eq!(
        server.get("/api/presence/stats").await,
        (200, json!({"users": 2, "connections": 3}))
    );

    let before_close = time::OffsetDateTime::now_utc();
    drop(carol1);
    drop(carol2);
    eventually(WAIT, "carol goes offline", || async {
        server.get("/api/users/carol/presence").await.1["online"] == false
    })
    .await;
    let (_, offline) = server.get("/api/users/carol/presence").await;
    assert_eq!(offline["connections"], 0);
    let last = parse_time(&offline["last_seen"]);
    // The store stamps whole milliseconds from a monotonic clock anchored to the
    // wall clock when it started; the test reads the wall clock itself, finer
    // and possibly a hair apart: a few milliseconds cover both.
    assert!(
        last + time::Duration::milliseconds(5) >= before_close,
        "last seen {last} is before the close at {before_close}: {offline}"
    );
    assert_eq!(
        server.get("/api/presence/stats").await,
        (200, json!({"users": 1, "connections": 1}))
    );
}

fn parse_time(value: &Value) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(
        value.as_str().unwrap_or_else(|| panic!("a time: {value}")),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

#[tokio::test]
async fn bad_presence_requests_are_typed_errors() {
    let server = server().await;
    for (path, status, code) in [
        ("/api/topics/lobby/presence", 404, "no_presence"),
        ("/api/topics/lobby/presence/stats", 404, "no_presence"),
        ("/api/topics/bad%20topic/presence", 400, "invalid_topic"),
        (
            "/api/topics/bad%20topic/presence/stats",
            400,
            "invalid_topic",
        ),
        ("/api/topics/room:1/presence?limit=0", 400, "bad_request"),
        ("/api/topics/room:1/presence?limit=1001", 400, "bad_request"),
        ("/api/topics/room:1/presence?limit=ten", 400, "bad_request"),
        ("/api/topics/room:1/presence?limit=-1", 400, "bad_request"),
        (
            "/api/topics/room:1/presence?cursor=not-a-cursor",
            400,
            "bad_request",
        ),
        (
            "/api/topics/room:1/presence?limit=5&limit=6",
            400,
            "bad_request",
        ),
        (
            "/api/topics/room:1/presence?scope=cluster",
            400,
            "bad_request",
        ),
    ] {
        let (got, body) = server.get(path).await;
        assert_eq!(
            (got, &body["error"]),
            (status, &json!(code)),
            "{path}: {body}"
        );
        assert!(body["message"].is_string(), "{path}: {body}");
    }
    // The edges are accepted.
    for path in [
        "/api/topics/room:1/presence?limit=1",
        "/api/topics/room:1/presence?limit=1000",
    ] {
        let (got, body) = server.get(path).await;
        assert_eq!(got, 200, "{path}: {body}");
        assert_eq!(body, json!({"topic": "room:1", "users": []}));
    }
    // Like every /api route, the key is required.
    for path in [
        "/api/topics/room:1/presence",
        "/api/topics/room:1/presence/stats",
        "/api/users/alice/presence",
        "/api/presence/stats",
    ] {
        let (got, body) = server
            .request_with_auth(reqwest::Method::GET, path, None)
            .await;
        assert_eq!(
            (got, &body["error"]),
            (401, &json!("unauthorized")),
            "{path}"
        );
        let bearer = format!("Bearer {API_KEY}");
        let (got, body) = server
            .request_with_auth(reqwest::Method::POST, path, Some(&bearer))
            .await;
        assert_eq!(
            (got, &body["error"]),
            (405, &json!("method_not_allowed")),
            "{path}"
        );
    }
}
