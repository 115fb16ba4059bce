//! Several real `realtime-server` processes sharing a real `redis-server` (started
//! by the test on a free port): every route crosses nodes exactly once, nodes only
//! hear what concerns them, Redis outages degrade and recover, dead nodes leave the
//! cluster views.

mod common;
mod held_link;
mod processes;
mod slow_link;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use held_link::HeldLink;
use processes::{ConfigFile, Node, RedisServer};
use realtime_core::{Body, ControlOp, Envelope};
use serde_json::{Value, json};
use slow_link::SlowLink;

/// The Redis links of a node; each logs `redis link connected` / `restored` when
/// it comes up and `redis link down` when it fails, as its state changes.
const LINKS: [&str; 3] = ["subscriber", "publisher", "directory"];

/// Waits until every Redis link of `node` logged `event` after `mark`.
async fn links_logged(node: &mut Node, mark: usize, event: &str) {
    for link in LINKS {
        node.wait_for_log(mark, &[event, &format!("link=\"{link}\"")])
            .await;
    }
}

/// A command on a plain connection of the test's own.
async fn redis_command(redis: &RedisServer, args: &[&str]) -> redis::Value {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut con).await.unwrap()
}

async fn post(node: &Node, path: &str, body: Value) -> (u16, Value) {
    answer(
        reqwest::Client::new()
            .post(node.url(path))
            .bearer_auth(API_KEY)
            .json(&body),
    )
    .await
}

async fn get(node: &Node, path: &str) -> (u16, Value) {
    answer(
        reqwest::Client::new()
            .get(node.url(path))
            .bearer_auth(API_KEY),
    )
    .await
}

async fn delete(node: &Node, path: &str) -> (u16, Value) {
    answer(
        reqwest::Client::new()
            .delete(node.url(path))
            .bearer_auth(API_KEY),
    )
    .await
}

async fn health(node: &Node) -> (u16, Value) {
    answer(reqwest::Client::new().get(node.url("/health"))).await
}

/// A client on `node` for `user`, past its welcome (so it is reachable cluster-wide).
async fn connect(node: &Node, user: &str, roles: &[&str]) -> Client {
    let mut client = Client::connect(&node.ws_url(&token(user, roles))).await;
    let welcome = client.recv().await;
    assert_eq!(welcome["type"], "welcome");
    client.id = welcome["connection_id"].as_str().unwrap().to_owned();
    client
}

async fn expect_type(client: &mut Client, kind: &str) -> Value {
    let msg = client.recv().await;
    assert_eq!(msg["type"], kind, "{msg}");
    msg
}

#[tokio::test]
async fn every_route_crosses_nodes_exactly_once() {
    let redis = RedisServer::start().await;
    let a = Node::start(&redis.url(), "a", &[]).await;
    let b = Node::start(&redis.url(), "b", &[]).await;
    let mut alice = connect(&a, "alice", &["admin"]).await;
    let mut bob = connect(&b, "bob", &["admin"]).await;
    let mut carol = connect(&b, "carol", &[]).await;
    for c in [&mut alice, &mut bob, &mut carol] {
        c.subscribe_acked("news").await;
    }

    // User: sent on A, the only connection is on B.
    assert_eq!(
        post(&a, "/api/users/bob/messages", json!({"type": "u"})).await,
        (200, json!({"delivered": 0, "relayed": true}))
    );
    expect_type(&mut bob, "u").await;
    // Role: one holder on each node; A counts its own.
    assert_eq!(
        post(&a, "/api/roles/admin/messages", json!({"type": "r"})).await,
        (200, json!({"delivered": 1, "relayed": true}))
    );
    expect_type(&mut alice, "r").await;
    expect_type(&mut bob, "r").await;
    // Broadcast, sent on B.
    assert_eq!(
        post(&b, "/api/broadcast", json!({"type": "b"})).await,
        (200, json!({"delivered": 2, "relayed": true}))
    );
    for c in [&mut alice, &mut bob, &mut carol] {
        expect_type(c, "b").await;
    }
    // Topic.
    assert_eq!(
        post(&a, "/api/topics/news/messages", json!({"type": "t"})).await,
        (200, json!({"delivered": 1, "relayed": true}))
    );
    for c in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(expect_type(c, "t").await["topic"], "news");
    }
    // Connection on another node: the owner confirms it.
    let path = format!("/api/connections/{}/messages", carol.id);
    assert_eq!(
        post(&a, &path, json!({"type": "c"})).await,
        (200, json!({"delivered": 1, "relayed": true}))
    );
    expect_type(&mut carol, "c").await;
    let unknown = format!("/api/connections/{}/messages", uuid::Uuid::new_v4());
    assert_eq!(post(&a, &unknown, json!({"type": "c"})).await.0, 404);

    // Server-side subscribe of a B connection, from A.
    let path = format!("/api/connections/{}/subscriptions", carol.id);
    let (status, body) = post(&a, &path, json!({"topic": "orders"})).await;
    assert_eq!(
        (status, body["already_subscribed"].clone()),
        (200, json!(false))
    );
    assert_eq!(
        post(&a, "/api/topics/orders/messages", json!({"type": "o"}))
            .await
            .0,
        200
    );
    expect_type(&mut carol, "o").await;

    // Cluster views, from A.
    let (status, view) = get(&a, "/api/connections?scope=cluster").await;
    assert_eq!((status, view["count"].clone()), (200, json!(3)));
    let nodes: HashMap<String, String> = view["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["user_id"].as_str().unwrap().to_owned(),
                c["node"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        nodes,
        HashMap::from([
            ("alice".into(), "a".into()),
            ("bob".into(), "b".into()),
            ("carol".into(), "b".into())
        ])
    );
    let (_, topics) = get(&a, "/api/topics?scope=cluster").await;
    assert_eq!(topics["topics"], json!({"news": 3, "orders": 1}));
    let (_, local) = get(&a, "/api/topics").await;
    assert_eq!(local["topics"], json!({"news": 1}));

    // Disconnect a B connection from A.
    assert_eq!(
        delete(&a, &format!("/api/connections/{}", bob.id)).await,
        (200, json!({"disconnected": 1}))
    );
    bob.expect_close(3503).await;

    for c in [&mut alice, &mut carol] {
        c.assert_nothing_pending().await;
    }
}

#[tokio::test]
async fn concurrent_sends_from_both_nodes_arrive_once_and_in_order() {
    const N: usize = 150;
    let redis = RedisServer::start().await;
    let a = Node::start(&redis.url(), "a", &[]).await;
    let b = Node::start(&redis.url(), "b", &[]).await;
    let mut x = connect(&a, "x", &[]).await;
    let mut y = connect(&b, "y", &[]).await;
    x.subscribe_acked("load").await;
    y.subscribe_acked("load").await;

    let send_all = |node: &Node, origin: &'static str| {
        let url = node.url("/api/topics/load/messages");
        async move {
            let http = reqwest::Client::new();
            for n in 0..N {
                let r = http
                    .post(&url)
                    .bearer_auth(API_KEY)
                    .json(&json!({"type": "m", "origin": origin, "n": n}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200);
            }
        }
    };
    tokio::join!(send_all(&a, "a"), send_all(&b, "b"));

    for client in [&mut x, &mut y] {
        let mut next: HashMap<String, usize> = HashMap::new();
        for _ in 0..2 * N {
            let msg = expect_type(client, "m").await;
            let origin = msg["origin"].as_str().unwrap().to_owned();
            let expected = next.entry(origin.clone()).or_insert(0);
            assert_eq!(
                msg["n"],
                json!(*expected),
                "messages from {origin} in order, none twice"
            );
            *expected += 1;
        }
        assert_eq!(next, HashMap::from([("a".into(), N), ("b".into(), N)]));
        client.assert_nothing_pending().await;
    }
}

#[tokio::test]
async fn a_connection_targeted_send_uses_only_the_owning_nodes_channel() {
    let redis = RedisServer::start().await;
    let a = Node::start(&redis.url(), "a", &[]).await;
    let b = Node::start(&redis.url(), "b", &[]).await;
    let mut target = connect(&b, "target", &[]).await;
    let _bystander = connect(&a, "bystander", &[]).await;

    // Watch every channel of this deployment.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut watcher = client.get_async_pubsub().await.unwrap();
    watcher.psubscribe("rt-test:*").await.unwrap();

    let path = format!("/api/connections/{}/messages", target.id);
    assert_eq!(
        post(&a, &path, json!({"type": "only-you", "secret": 42}))
            .await
            .0,
        200
    );
    expect_type(&mut target, "only-you").await;

    let owner_channel = format!("rt-test:node:{}", &target.id.replace('-', "")[..12]);
    let mut stream = watcher.on_message();
    let mut carried_on = Vec::new();
    // The request and its reply: two envelopes in all.
    for _ in 0..2 {
        let msg = tokio::time::timeout(WAIT, stream.next())
            .await
            .unwrap()
            .unwrap();
        let envelope = Envelope::decode(msg.get_payload_bytes()).unwrap();
        if let Body::Request {
            op: ControlOp::Deliver { payload, .. },
            ..
        } = &envelope.body
        {
            assert!(String::from_utf8_lossy(payload).contains("only-you"));
            carried_on.push(msg.get_channel_name().to_owned());
        } else {
            assert!(
                matches!(envelope.body, Body::Reply { .. }),
                "unexpected envelope {envelope:?}"
            );
            assert!(msg.get_channel_name().starts_with("rt-test:node:"));
            assert_ne!(
                msg.get_channel_name(),
                owner_channel,
                "the reply goes back to the asking node"
            );
        }
    }
    assert_eq!(carried_on, [owner_channel]);
    // Nothing else was published for this send: a marker published now is the
    // next message the watcher sees (Redis keeps one connection's order).
    redis_command(&redis, &["PUBLISH", "rt-test:marker", "end"]).await;
    let next = tokio::time::timeout(WAIT, stream.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        next.get_channel_name(),
        "rt-test:marker",
        "unexpected envelope {:?}",
        Envelope::decode(next.get_payload_bytes())
    );
    drop(stream);
    target.assert_nothing_pending().await;
}

#[tokio::test]
async fn a_redis_outage_degrades_then_delivery_resumes_within_two_seconds() {
    let mut redis = RedisServer::start().await;
    let mut a = Node::start(&redis.url(), "a", &[]).await;
    let mut b = Node::start(&redis.url(), "b", &[]).await;
    let mut u = connect(&a, "u", &[]).await;
    let mut v = connect(&b, "v", &[]).await;
    v.subscribe_acked("t").await;
    assert_eq!(
        post(&a, "/api/topics/t/messages", json!({"type": "before"}))
            .await
            .0,
        200
    );
    expect_type(&mut v, "before").await;

    let marks = [a.log_mark(), b.log_mark()];
    redis.kill().await;
    for (node, mark) in [(&mut a, marks[0]), (&mut b, marks[1])] {
        node.wait_for_log(mark, &["redis link down"]).await;
        let (status, body) = health(node).await;
        assert_eq!((status, body["status"].clone()), (503, json!("degraded")));
        assert!(
            body["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("redis")),
            "{body}"
        );
        assert!(body["active_connections"].is_number());
    }
    let (status, body) = post(&a, "/api/topics/t/messages", json!({"type": "during"})).await;
    assert_eq!(
        (status, body["error"].clone()),
        (503, json!("bus_unavailable"))
    );
    let (status, body) = post(&b, "/api/users/u/messages", json!({"type": "during"})).await;
    assert_eq!(
        (status, body["error"].clone()),
        (503, json!("bus_unavailable"))
    );
    // Clients stay connected and served.
    u.assert_nothing_pending().await;
    v.assert_nothing_pending().await;

    redis.restart().await;
    let restarted = Instant::now();
    // The kill broke every link's connection, so each one reconnects (the
    // directory after rewriting its records).
    for (node, mark) in [(&mut a, marks[0]), (&mut b, marks[1])] {
        links_logged(node, mark, "redis link restored").await;
        assert_eq!(health(node).await.0, 200);
    }
    // `t` keeps no history: what was published meanwhile is gone, and v is told.
    let notice = expect_type(&mut v, "missed").await;
    assert_eq!(
        notice,
        json!({"type": "missed", "topic": "t", "reason": "bus_reconnected"})
    );
    assert_eq!(
        post(&a, "/api/topics/t/messages", json!({"type": "after"}))
            .await
            .0,
        200
    );
    expect_type(&mut v, "after").await;
    assert_eq!(
        post(&b, "/api/users/u/messages", json!({"type": "after"}))
            .await
            .0,
        200
    );
    expect_type(&mut u, "after").await;
    let resumed = restarted.elapsed();
    assert!(
        resumed < Duration::from_secs(2),
        "delivery resumed after {resumed:?}"
    );

    // The restarted Redis is empty: the directory was rewritten by both nodes,
    // topics included.
    assert_eq!(
        get(&a, "/api/connections?scope=cluster").await.1["count"],
        2
    );
    assert_eq!(
        get(&a, "/api/topics?scope=cluster").await.1["topics"],
        json!({"t": 1})
    );
}

#[tokio::test]
async fn a_node_that_dies_leaves_the_cluster_view() {
    let redis = RedisServer::start().await;
    let a = Node::start(&redis.url(), "a", &[]).await;
    let mut b = Node::start(&redis.url(), "b", &[]).await;
    let _here = connect(&a, "here", &[]).await;
    let mut gone = connect(&b, "gone", &[]).await;
    gone.subscribe_acked("room").await;

    let (_, view) = get(&a, "/api/connections?scope=cluster").await;
    assert_eq!(view["count"], 2);
    let (_, topics) = get(&a, "/api/topics?scope=cluster").await;
    assert_eq!(topics["topics"], json!({"room": 1}));

    // Redis reports the expiry of b's records as it happens.
    redis_command(&redis, &["CONFIG", "SET", "notify-keyspace-events", "Ex"]).await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut expiries = client.get_async_pubsub().await.unwrap();
    expiries.subscribe("__keyevent@0__:expired").await.unwrap();
    let mut expiries = expiries.into_on_message();

    b.kill().await;
    // Heartbeat 200 ms: records expire 600 ms after the last one.
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(msg) = expiries.next().await {
            if msg.get_payload::<String>().unwrap() == "rt-test:conns:b" {
                return;
            }
        }
    })
    .await
    .expect("the dead node's records expire");
    let (_, view) = get(&a, "/api/connections?scope=cluster").await;
    assert_eq!(view["count"], 1);
    assert_eq!(view["connections"][0]["user_id"], "here");
    let (_, topics) = get(&a, "/api/topics?scope=cluster").await;
    assert_eq!(topics["topics"], json!({}));
}

#[tokio::test]
async fn a_node_started_without_redis_serves_degraded_until_it_appears() {
    let mut redis = RedisServer::start().await;
    redis.kill().await;
    let mut a = Node::start(&redis.url(), "a", &[]).await;
    let (status, body) = health(&a).await;
    assert_eq!((status, body["status"].clone()), (503, json!("degraded")));
    let mut c = connect(&a, "early", &[]).await;
    c.assert_nothing_pending().await;

    redis.restart().await;
    links_logged(&mut a, 0, "redis link connected").await;
    assert_eq!(health(&a).await.0, 200);
    // Interest recorded while Redis was away is in place: a second node reaches c.
    let b = Node::start(&redis.url(), "b", &[]).await;
    assert_eq!(
        post(&b, "/api/users/early/messages", json!({"type": "hello"}))
            .await
            .0,
        200
    );
    expect_type(&mut c, "hello").await;
}

#[tokio::test]
async fn every_subscribed_ack_means_publishes_from_another_node_arrive() {
    const CLIENTS: usize = 20;
    const ROUNDS: usize = 200;
    let redis = RedisServer::start().await;
    // Node A's SUBSCRIBEs reach Redis late, so one is still on the way while the
    // test already holds acks and publishes from B.
    let slow = SlowLink::start(redis.port, Duration::from_millis(10)).await;
    let a = Node::start(&slow.url(), "a", &[]).await;
    let b = Node::start(&redis.url(), "b", &[]).await;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(connect(&a, &format!("u{i}"), &[]).await);
    }
    let http = reqwest::Client::new();
    for round in 0..ROUNDS {
        let topic = format!("fresh-{round}");
        // Every subscribe is on its way before any ack is read.
        for c in &mut clients {
            c.send(json!({"action": "subscribe", "topic": topic, "ref": round}))
                .await;
        }
        // What each client received: messages may come before its own ack (its
        // subscription can be active sooner), never fewer than those sent after.
        let mut got: Vec<Vec<usize>> = vec![Vec::new(); CLIENTS];
        let next_n = |c: Value, got: &mut Vec<usize>| -> bool {
            if c["type"] == "m" {
                got.push(usize::try_from(c["n"].as_u64().unwrap()).unwrap());
                return true;
            }
            assert_eq!(
                c,
                json!({"type": "subscribed", "topic": topic, "ref": round})
            );
            false
        };
        // Acks are read last client first: the first subscribe sent is the one
        // that asks Redis, so the later ones are those that could be answered
        // early. Right after the k-th ack read, B publishes message k.
        for (k, i) in (0..CLIENTS).rev().enumerate() {
            while next_n(clients[i].recv().await, &mut got[i]) {}
            let r = http
                .post(b.url(&format!("/api/topics/{topic}/messages")))
                .bearer_auth(API_KEY)
                .json(&json!({"type": "m", "n": k}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
        }
        for (k, i) in (0..CLIENTS).rev().enumerate() {
            let got = &mut got[i];
            while got.last() != Some(&(CLIENTS - 1)) {
                assert!(
                    next_n(clients[i].recv().await, got),
                    "one ack per subscribe"
                );
            }
            assert!(got.is_sorted_by(|x, y| x < y), "round {round}: {got:?}");
            assert!(
                (k..CLIENTS).all(|n| got.contains(&n)),
                "round {round}: a client acked before message {k}, then missed some of {k}..{CLIENTS}: {got:?}"
            );
        }
    }
}

#[tokio::test]
async fn health_is_degraded_while_the_directory_link_is_down_and_the_bus_is_up() {
    let redis = RedisServer::start().await;
    let mut a = Node::start(&redis.url(), "a", &[]).await;
    links_logged(&mut a, 0, "redis link connected").await;
    assert_eq!(health(&a).await.0, 200);
    let mut v = connect(&a, "v", &[]).await;

    // Redis refuses every command the directory uses, and nothing the bus needs.
    let mark = a.log_mark();
    redis_command(
        &redis,
        &[
            "ACL",
            "SETUSER",
            "default",
            "-@all",
            "+ping",
            "+subscribe",
            "+unsubscribe",
            "+psubscribe",
            "+punsubscribe",
            "+publish",
            "+client",
            "+acl",
            "+hello",
        ],
    )
    .await;
    a.wait_for_log(mark, &["redis link down", "link=\"directory\""])
        .await;
    let (status, body) = health(&a).await;
    assert_eq!((status, body["status"].clone()), (503, json!("degraded")));
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("redis directory:"), "{body}");
    assert!(
        !reason.contains("subscriber") && !reason.contains("publisher"),
        "{body}"
    );
    // The bus itself is up: sends still cross.
    assert_eq!(
        post(&a, "/api/users/v/messages", json!({"type": "still"})).await,
        (200, json!({"delivered": 1, "relayed": true}))
    );
    expect_type(&mut v, "still").await;

    let mark = a.log_mark();
    redis_command(&redis, &["ACL", "SETUSER", "default", "+@all"]).await;
    a.wait_for_log(mark, &["redis link restored", "link=\"directory\""])
        .await;
    let (status, body) = health(&a).await;
    assert_eq!((status, body["status"].clone()), (200, json!("healthy")));
    assert_eq!(
        get(&a, "/api/connections?scope=cluster").await.1["count"],
        1
    );
}

/// Every page of a cluster view from `node`, `limit` entries at a time.
async fn all_pages(node: &Node, view: &str, limit: usize) -> Vec<Value> {
    let http = reqwest::Client::new();
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![
            ("scope", "cluster".to_owned()),
            ("limit", limit.to_string()),
        ];
        if let Some(c) = cursor.take() {
            query.push(("cursor", c));
        }
        let (status, page) =
            answer(http.get(node.url(view)).bearer_auth(API_KEY).query(&query)).await;
        assert_eq!(status, 200, "{page}");
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        pages.push(page);
        if cursor.is_none() {
            return pages;
        }
        assert!(pages.len() < 100, "paging does not end: {pages:?}");
    }
}

#[tokio::test]
async fn cluster_views_page_across_two_nodes() {
    let redis = RedisServer::start().await;
    let a = Node::start(&redis.url(), "a", &[]).await;
    let b = Node::start(&redis.url(), "b", &[]).await;
    let mut ids = HashMap::new();
    let mut clients = Vec::new();
    for k in 0..7 {
        let node = if k < 4 { &a } else { &b };
        let mut c = connect(node, &format!("user{k}"), &[]).await;
        c.subscribe_acked(&format!("p{k}")).await;
        c.subscribe_acked("shared").await;
        ids.insert(c.id.clone(), node.node_id.clone());
        clients.push(c);
    }

    for from in [&a, &b] {
        let pages = all_pages(from, "/api/connections", 2).await;
        assert!(pages.len() >= 4, "{pages:?}");
        let mut seen = HashMap::new();
        for page in &pages {
            let list = page["connections"].as_array().unwrap();
            assert!(list.len() <= 2 && page["count"] == list.len(), "{page}");
            for c in list {
                let id = c["id"].as_str().unwrap().to_owned();
                let user = c["user_id"].as_str().unwrap();
                let k = &user["user".len()..];
                assert_eq!(c["topics"], json!([format!("p{k}"), "shared"]), "{c}");
                let earlier = seen.insert(id, c["node"].as_str().unwrap().to_owned());
                assert!(earlier.is_none(), "listed twice: {c}");
            }
        }
        assert_eq!(seen, ids);

        let pages = all_pages(from, "/api/topics", 3).await;
        let mut topics = serde_json::Map::new();
        for page in &pages {
            let part = page["topics"].as_object().unwrap();
            assert!(part.len() <= 3 && page["count"] == part.len(), "{page}");
            for (topic, n) in part {
                assert!(topics.insert(topic.clone(), n.clone()).is_none(), "{page}");
            }
        }
        let mut expected: serde_json::Map<String, Value> =
            (0..7).map(|k| (format!("p{k}"), json!(1))).collect();
        expected.insert("shared".into(), json!(7));
        assert_eq!(Value::Object(topics), Value::Object(expected));
    }

    // A page with room for everything says it is the last.
    let (_, all) = get(&a, "/api/connections?scope=cluster").await;
    assert_eq!(
        (all["count"].clone(), all["next_cursor"].clone()),
        (json!(7), Value::Null)
    );
    for bad in [
        "/api/connections?scope=cluster&limit=0",
        "/api/connections?scope=cluster&limit=1001",
        "/api/topics?scope=cluster&limit=many",
        "/api/connections?scope=cluster&cursor=not-a-cursor",
        "/api/connections?limit=5",
    ] {
        let (status, body) = get(&a, bad).await;
        assert_eq!(
            (status, body["error"].clone()),
            (400, json!("bad_request")),
            "{bad}"
        );
    }
    for c in &mut clients {
        c.assert_nothing_pending().await;
    }
}

#[tokio::test]
async fn a_subscribe_changes_the_directory_by_one_small_command() {
    let redis = RedisServer::start().await;
    let a = Node::start(&redis.url(), "a", &[]).await;
    let b = Node::start(&redis.url(), "b", &[]).await;
    let mut c = connect(&a, "many", &[]).await;
    for k in 0..150 {
        c.subscribe_acked(&format!("t{k:03}")).await;
    }

    // Every command Redis runs from here until the marker.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut monitor = client
        .get_async_monitor()
        .await
        .unwrap()
        .into_on_message::<String>();
    c.subscribe_acked("t-new").await;
    let reply = c
        .command(json!({"action": "unsubscribe", "topic": "t000", "ref": 1}))
        .await;
    assert_eq!(
        reply,
        json!({"type": "unsubscribed", "topic": "t000", "ref": 1})
    );
    // And one from the other node, for a connection on A.
    let path = format!("/api/connections/{}/subscriptions/t001", c.id);
    assert_eq!(delete(&b, &path).await.0, 200);
    redis_command(&redis, &["ECHO", "end-of-window"]).await;
    let mut window = Vec::new();
    tokio::time::timeout(WAIT, async {
        while let Some(line) = monitor.next().await {
            if line.contains("end-of-window") {
                return;
            }
            window.push(line);
        }
    })
    .await
    .expect("the marker is monitored");

    for topic in ["t-new", "t000", "t001"] {
        assert!(
            window.iter().any(|l| l.contains(topic)),
            "no command for {topic}: {window:#?}"
        );
    }
    // Nothing rewrote what the connection already held, and no command grew with it.
    let untouched: Vec<&String> = window.iter().filter(|l| l.contains("t149")).collect();
    assert!(untouched.is_empty(), "{untouched:#?}");
    let large: Vec<&String> = window.iter().filter(|l| l.len() > 1024).collect();
    assert!(large.is_empty(), "{large:#?}");

    // The views agree, from either node.
    for node in [&a, &b] {
        let (_, topics) = get(node, "/api/topics?scope=cluster&limit=1000").await;
        assert_eq!(topics["count"], 149, "{topics}");
        assert_eq!(topics["topics"]["t-new"], 1);
        assert!(topics["topics"].get("t000").is_none() && topics["topics"].get("t001").is_none());
        let (_, view) = get(node, "/api/connections?scope=cluster").await;
        let held = view["connections"][0]["topics"].as_array().unwrap();
        assert_eq!(held.len(), 149);
        assert!(held.contains(&json!("t-new")) && !held.contains(&json!("t000")));
    }
    c.assert_nothing_pending().await;
}

#[tokio::test]
async fn every_welcome_means_sends_from_another_node_arrive() {
    const CONNECTIONS: usize = 10;
    const ROUNDS: usize = 50;
    let redis = RedisServer::start().await;
    let slow = SlowLink::start(redis.port, Duration::from_millis(10)).await;
    let a = Node::start(&slow.url(), "a", &[]).await;
    let b = Node::start(&redis.url(), "b", &[]).await;
    let http = reqwest::Client::new();
    for round in 0..ROUNDS {
        // Connections of a new user open together; the first asks Redis for the
        // user's channel, the others could be welcomed before it is active.
        let user = format!("w{round}");
        let url = a.ws_url(&token(&user, &[]));
        let mut clients =
            futures_util::future::join_all((0..CONNECTIONS).map(|_| Client::connect(&url))).await;
        let mut got: Vec<Vec<u64>> = vec![Vec::new(); CONNECTIONS];
        for (k, i) in (0..CONNECTIONS).rev().enumerate() {
            assert_eq!(clients[i].recv().await["type"], "welcome");
            let r = http
                .post(b.url(&format!("/api/users/{user}/messages")))
                .bearer_auth(API_KEY)
                .json(&json!({"type": "m", "n": k}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
        }
        let last = u64::try_from(CONNECTIONS - 1).unwrap();
        for (k, i) in (0..CONNECTIONS).rev().enumerate() {
            let got = &mut got[i];
            while got.last() != Some(&last) {
                let msg = expect_type(&mut clients[i], "m").await;
                got.push(msg["n"].as_u64().unwrap());
            }
            let k = u64::try_from(k).unwrap();
            assert!(
                (k..=last).all(|n| got.contains(&n)),
                "round {round}: welcomed before message {k}, then missed some: {got:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_history_publication_made_while_the_subscriber_link_resubscribes_is_delivered() {
    const HISTORY: &str = "[[namespaces]]\npattern = \"feed\"\nsubscribe = \"authenticated\"\npublish = \"nobody\"\nhistory_size = 100\nhistory_ttl = \"10m\"\n";
    let config = ConfigFile::write(HISTORY);
    let redis = RedisServer::start().await;
    // Node A reaches Redis through a proxy that can hold its SUBSCRIBEs and sees
    // its history reads of the topic go by; B publishes straight to Redis.
    let link = HeldLink::start(redis.port, ":history-meta:feed:x").await;
    let a = Node::start(&link.url(), "a", &[("REALTIME_CONFIG", config.path())]).await;
    let b = Node::start(&redis.url(), "b", &[("REALTIME_CONFIG", config.path())]).await;
    let mut client = connect(&a, "ada", &[]).await;
    let reply = client
        .command(json!({"action": "subscribe", "topic": "feed:x", "ref": 1}))
        .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    let publish = |seq: u64| {
        let b = &b;
        async move {
            let (status, body) = post(
                b,
                "/api/topics/feed:x/messages",
                json!({"type": "tick", "seq": seq}),
            )
            .await;
            assert_eq!(status, 200, "{body}");
        }
    };
    publish(1).await;
    assert_eq!(client.recv().await["seq"], 1);

    // A's subscriber link breaks. It reconnects at once and reads the topic's
    // history for what it missed (nothing yet), but its SUBSCRIBE is held.
    link.arm();
    let killed = redis_command(&redis, &["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    assert!(
        matches!(killed, redis::Value::Int(n) if n >= 1),
        "{killed:?}"
    );
    link.held(1, WAIT).await;
    link.evals(1, WAIT).await;
    // B lost its subscriber link too and refuses sends until it is back.
    processes::eventually(WAIT, "node B healthy again", || async {
        health(&b).await.0 == 200
    })
    .await;
    // Published after that read and before A is subscribed again: neither the
    // read nor the live channel carries it to A.
    publish(2).await;
    link.release();
    let next = client.recv().await;
    assert_eq!(
        (&next["type"], &next["seq"]),
        (&json!("tick"), &json!(2)),
        "delivered without waiting for another publication: {next}"
    );
    publish(3).await;
    assert_eq!(client.recv().await["seq"], 3, "once each, in order");
}

/// The value of `series` (a metric name with its labels) in `node`'s `/metrics`.
async fn metric_value(node: &Node, series: &str) -> Option<f64> {
    let text = reqwest::get(node.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn a_publish_redis_refuses_is_counted_as_dropped() {
    const REFUSED: &str = r#"realtime_bus_envelopes_dropped_total{reason="refused"}"#;
    let redis = RedisServer::start().await;
    let a = Node::start(&redis.url(), "a", &[]).await;
    assert_eq!(
        metric_value(&a, REFUSED).await,
        Some(0.0),
        "exported from the start"
    );
    // Redis stops allowing PUBLISH (an operator's ACL change): the envelope of a
    // broadcast, which does not wait for the relay, reaches no node.
    redis_command(&redis, &["ACL", "SETUSER", "default", "-publish"]).await;
    let (status, body) = post(&a, "/api/broadcast", json!({"type": "note"})).await;
    assert_eq!(status, 200, "{body}");
    processes::eventually(WAIT, "the refused PUBLISH counted", || async {
        metric_value(&a, REFUSED).await == Some(1.0)
    })
    .await;
}
