//! The HTTP API's topic history over a real listening server: publishes on a
//! history topic answer their offset and epoch, `GET /api/topics/{topic}/history`
//! reads them back (with `since_offset`/`epoch` and `limit`), `DELETE` starts a new
//! epoch, WebSocket subscribers see the same positions, bad requests get typed JSON
//! errors, and with the `redis` provider two nodes share one history.

mod common;
mod processes;

use common::*;
use processes::RedisServer;
use realtime_core::history::MAX_HISTORY_LIMIT;
use serde_json::{Value, json};

const TOPIC: &str = "chat:room";

/// Publishes `{"type":"note","seq":seq}` on `topic` through the HTTP API and
/// returns the 200 answer.
async fn publish(server: &TestServer, topic: &str, seq: u64) -> Value {
    let (status, body) = server
        .post(
            &format!("/api/topics/{topic}/messages"),
            json!({"type": "note", "seq": seq}),
        )
        .await;
    assert_eq!(status, 200, "publish {seq} on {topic}: {body}");
    body
}

/// The `seq` of each publication in a history answer, checking each carries the
/// answer's epoch and its `seq` as offset (the tests publish seq n as the n-th).
fn seqs(history: &Value) -> Vec<u64> {
    history["publications"]
        .as_array()
        .unwrap_or_else(|| panic!("publications: {history}"))
        .iter()
        .map(|p| {
            assert_eq!(p["epoch"], history["epoch"], "{p}");
            assert_eq!(p["offset"], p["seq"], "{p}");
            assert_eq!(p["topic"], history["topic"], "{p}");
            assert_eq!(p["type"], "note", "{p}");
            p["seq"].as_u64().unwrap()
        })
        .collect()
}

/// Publishes `seq` 1..=`n` on `topic`; returns the epoch of the last answer.
async fn publish_numbered(server: &TestServer, topic: &str, n: u64) -> String {
    let mut epoch = String::new();
    for seq in 1..=n {
        epoch = publish(server, topic, seq).await["epoch"]
            .as_str()
            .expect("a history topic's answer carries its epoch")
            .to_owned();
    }
    epoch
}

fn history_path(topic: &str, query: &str) -> String {
    format!("/api/topics/{topic}/history{query}")
}

#[tokio::test]
async fn publishes_get_offsets_and_history_reads_them_back() {
    let server = TestServer::start_with(history_options(100)).await;
    let mut epoch = None;
    for seq in 1..=5 {
        let answer = publish(&server, TOPIC, seq).await;
        assert_eq!(answer["offset"], seq, "{answer}");
        assert!(answer["delivered"].is_u64(), "{answer}");
        assert_eq!(answer["relayed"], false, "one node: {answer}");
        let this = answer["epoch"].as_str().expect("an epoch").to_owned();
        assert!(!this.is_empty());
        assert_eq!(epoch.get_or_insert(this.clone()), &this, "one epoch");
    }
    let epoch = epoch.unwrap();

    let (status, all) = server.get(&history_path(TOPIC, "")).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(seqs(&all), [1, 2, 3, 4, 5]);
    assert_eq!(
        (&all["topic"], &all["offset"], &all["epoch"]),
        (&json!(TOPIC), &json!(5), &json!(epoch))
    );
    assert!(all.get("recovered").is_none(), "no position given: {all}");

    let (status, after) = server
        .get(&history_path(
            TOPIC,
            &format!("?since_offset=2&epoch={epoch}"),
        ))
        .await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(seqs(&after), [3, 4, 5]);
    assert_eq!(
        (&after["recovered"], &after["offset"]),
        (&json!(true), &json!(5))
    );

    let (_, page) = server
        .get(&history_path(
            TOPIC,
            &format!("?since_offset=2&epoch={epoch}&limit=2"),
        ))
        .await;
    assert_eq!(seqs(&page), [3, 4], "{page}");
    assert_eq!(
        page["offset"], 5,
        "the position is the topic's, not the page's"
    );

    let (_, oldest) = server.get(&history_path(TOPIC, "?limit=2")).await;
    assert_eq!(seqs(&oldest), [1, 2], "{oldest}");

    let (_, none) = server.get(&history_path(TOPIC, "?limit=0")).await;
    assert_eq!(seqs(&none), Vec::<u64>::new(), "{none}");
    assert_eq!(
        (&none["offset"], &none["epoch"]),
        (&json!(5), &json!(epoch))
    );

    let (status, ahead) = server
        .get(&history_path(
            TOPIC,
            &format!("?since_offset={}&epoch={epoch}", u64::MAX),
        ))
        .await;
    assert_eq!(status, 200, "{ahead}");
    assert_eq!(
        (&ahead["recovered"], &ahead["offset"]),
        (&json!(false), &json!(5)),
        "a position this epoch never gave out: {ahead}"
    );

    let (_, current) = server
        .get(&history_path(
            TOPIC,
            &format!("?since_offset=5&epoch={epoch}"),
        ))
        .await;
    assert_eq!(seqs(&current), Vec::<u64>::new(), "nothing missed");
    assert_eq!(current["recovered"], true, "{current}");
}

#[tokio::test]
async fn positions_that_cannot_be_recovered_say_so() {
    let server = TestServer::start_with(history_options(3)).await;
    let epoch = publish_numbered(&server, TOPIC, 5).await;
    // Three kept: 3, 4, 5.
    let (status, all) = server.get(&history_path(TOPIC, "")).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(seqs(&all), [3, 4, 5]);

    let (_, trimmed) = server
        .get(&history_path(
            TOPIC,
            &format!("?since_offset=1&epoch={epoch}"),
        ))
        .await;
    assert_eq!(trimmed["recovered"], false, "offset 2 is gone: {trimmed}");
    assert_eq!(seqs(&trimmed), [3, 4, 5], "from the oldest held");

    let (_, window) = server
        .get(&history_path(
            TOPIC,
            &format!("?since_offset=2&epoch={epoch}"),
        ))
        .await;
    assert_eq!(window["recovered"], true, "3.. are all held: {window}");

    let (_, other) = server
        .get(&history_path(TOPIC, "?since_offset=4&epoch=not-this-one"))
        .await;
    assert_eq!(other["recovered"], false, "another epoch: {other}");
    assert_eq!(seqs(&other), [3, 4, 5]);
    assert_eq!(
        (&other["offset"], &other["epoch"]),
        (&json!(5), &json!(epoch))
    );
}

#[tokio::test]
async fn delete_starts_a_new_epoch() {
    let server = TestServer::start_with(history_options(100)).await;
    let old = publish_numbered(&server, TOPIC, 3).await;
    let (status, reset) = server.delete(&history_path(TOPIC, "")).await;
    assert_eq!(status, 200, "{reset}");
    assert_eq!(
        (&reset["topic"], &reset["offset"]),
        (&json!(TOPIC), &json!(0))
    );
    let new = reset["epoch"].as_str().expect("the new epoch").to_owned();
    assert_ne!(new, old);

    let (_, empty) = server.get(&history_path(TOPIC, "")).await;
    assert_eq!(seqs(&empty), Vec::<u64>::new(), "{empty}");
    assert_eq!(
        (&empty["offset"], &empty["epoch"]),
        (&json!(0), &json!(new))
    );

    let (_, stale) = server
        .get(&history_path(
            TOPIC,
            &format!("?since_offset=3&epoch={old}"),
        ))
        .await;
    assert_eq!(stale["recovered"], false, "{stale}");

    let answer = publish(&server, TOPIC, 1).await;
    assert_eq!(
        (&answer["offset"], &answer["epoch"]),
        (&json!(1), &json!(new)),
        "numbering restarts at 1 in the new epoch"
    );
    let (_, after) = server.get(&history_path(TOPIC, "")).await;
    assert_eq!(seqs(&after), [1]);
}

#[tokio::test]
async fn websocket_subscribers_see_the_positions_the_api_answers() {
    let server = TestServer::start_with(history_options(100)).await;
    let mut client = server.connect("alice", &[]).await;
    let subscribed = client
        .command(json!({"action": "subscribe", "topic": TOPIC, "ref": "s"}))
        .await;
    assert_eq!(
        (&subscribed["type"], &subscribed["offset"]),
        (&json!("subscribed"), &json!(0)),
        "a history topic answers its position: {subscribed}"
    );
    let epoch = subscribed["epoch"].as_str().expect("an epoch").to_owned();
    client.subscribe_acked("news").await;

    for seq in 1..=3 {
        let answer = publish(&server, TOPIC, seq).await;
        let message = client.recv().await;
        assert_eq!(
            (&message["offset"], &message["epoch"]),
            (&answer["offset"], &answer["epoch"]),
            "{message}"
        );
        assert_eq!(
            (
                &message["topic"],
                &message["seq"],
                &message["offset"],
                &message["epoch"]
            ),
            (&json!(TOPIC), &json!(seq), &json!(seq), &json!(epoch))
        );
        assert!(message["timestamp"].is_string(), "{message}");
    }

    // A topic without history is unchanged: no position anywhere.
    let answer = publish(&server, "news", 1).await;
    assert_eq!(answer, json!({"delivered": 1, "relayed": false}));
    let message = client.recv().await;
    assert_eq!(message["seq"], 1);
    assert!(
        message.get("offset").is_none() && message.get("epoch").is_none(),
        "{message}"
    );
    client.assert_nothing_pending().await;
}

#[tokio::test]
async fn messages_carrying_a_position_are_refused_on_history_topics() {
    let server = TestServer::start_with(history_options(100)).await;
    for body in [
        json!({"type": "note", "offset": 7}),
        json!({"type": "note", "epoch": "forged"}),
    ] {
        let (status, answer) = server
            .post(&format!("/api/topics/{TOPIC}/messages"), body.clone())
            .await;
        assert_eq!(
            (status, &answer["error"]),
            (400, &json!("invalid_message")),
            "{body}: {answer}"
        );
    }
    let (_, history) = server.get(&history_path(TOPIC, "")).await;
    assert_eq!(
        (&history["publications"], &history["offset"]),
        (&json!([]), &json!(0)),
        "nothing was kept"
    );
    // Elsewhere those are ordinary fields.
    let (status, answer) = server
        .post(
            "/api/topics/news/messages",
            json!({"type": "note", "offset": 7}),
        )
        .await;
    assert_eq!(
        (status, answer),
        (200, json!({"delivered": 0, "relayed": false}))
    );
}

#[tokio::test]
async fn bad_history_requests_get_typed_errors() {
    let server = TestServer::start_with(history_options(100)).await;
    publish(&server, TOPIC, 1).await;
    let bad = |query: &str| history_path(TOPIC, query);
    for query in [
        "?since_offset=1",
        "?epoch=abc",
        "?since_offset=abc&epoch=e",
        "?since_offset=-1&epoch=e",
        "?since_offset=1&epoch=",
        "?limit=ten",
        "?limit=-1",
        "?limit=1&limit=2",
        "?since=1",
    ] {
        let (status, body) = server.get(&bad(query)).await;
        assert_eq!(
            (status, &body["error"]),
            (400, &json!("bad_request")),
            "{query}: {body}"
        );
        assert!(body["message"].is_string(), "{query}: {body}");
    }

    for (status, body) in [
        server.get(&history_path("news", "")).await,
        server.delete(&history_path("news", "")).await,
    ] {
        assert_eq!(
            (status, &body["error"]),
            (404, &json!("no_history")),
            "{body}"
        );
    }
    for topic in ["a%20b", "bad*topic", "caf%C3%A9"] {
        for (status, body) in [
            server.get(&history_path(topic, "")).await,
            server.delete(&history_path(topic, "")).await,
        ] {
            assert_eq!(
                (status, &body["error"]),
                (400, &json!("invalid_topic")),
                "{topic}: {body}"
            );
        }
    }
    for method in [reqwest::Method::POST, reqwest::Method::PUT] {
        let (status, body) = server
            .request_with_auth(
                method.clone(),
                &history_path(TOPIC, ""),
                Some(&format!("Bearer {API_KEY}")),
            )
            .await;
        assert_eq!(
            (status, &body["error"]),
            (405, &json!("method_not_allowed")),
            "{method}: {body}"
        );
    }
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let (status, body) = server
            .request_with_auth(method.clone(), &history_path(TOPIC, ""), None)
            .await;
        assert_eq!(
            (status, &body["error"]),
            (401, &json!("unauthorized")),
            "{method}: {body}"
        );
    }
    let (_, still) = server.get(&history_path(TOPIC, "")).await;
    assert_eq!(seqs(&still), [1], "refused requests changed nothing");
}

#[tokio::test]
async fn the_page_size_is_capped() {
    let server = TestServer::start_with(history_options(MAX_HISTORY_LIMIT as u64 + 100)).await;
    let over = MAX_HISTORY_LIMIT as u64 + 5;
    for seq in 1..=over {
        let delivery = server
            .rt
            .publish_confirmed(TOPIC, json!({"type": "note", "seq": seq}))
            .await
            .expect("published");
        assert_eq!(delivery.position.map(|p| p.offset), Some(seq));
    }
    for query in ["", "?limit=5000", "?limit=18446744073709551615"] {
        let (status, page) = server.get(&history_path(TOPIC, query)).await;
        assert_eq!(status, 200, "{query}: {page}");
        let seqs = seqs(&page);
        assert_eq!(seqs.len(), MAX_HISTORY_LIMIT, "{query}");
        assert_eq!(
            (seqs[0], seqs[MAX_HISTORY_LIMIT - 1]),
            (1, MAX_HISTORY_LIMIT as u64)
        );
        assert_eq!(page["offset"], over);
    }
}

/// A server on the `redis` provider at `url`, labelled `node`.
async fn redis_node(url: &str, node: &str) -> TestServer {
    TestServer::start_with(realtime_server::Options {
        provider: Some("redis".into()),
        redis_url: Some(url.into()),
        node_id: Some(node.into()),
        ..history_options(100)
    })
    .await
}

#[tokio::test]
async fn two_nodes_on_redis_share_one_history() {
    let redis = RedisServer::start().await;
    let a = redis_node(&redis.url(), "a").await;
    let b = redis_node(&redis.url(), "b").await;
    let mut epoch = None;
    for seq in 1..=6 {
        let node = if seq % 2 == 1 { &a } else { &b };
        let answer = publish(node, TOPIC, seq).await;
        assert_eq!(answer["offset"], seq, "Redis numbers them: {answer}");
        let this = answer["epoch"].clone();
        assert_eq!(epoch.get_or_insert(this.clone()), &this, "one epoch");
    }
    for node in [&a, &b] {
        let (status, history) = node.get(&history_path(TOPIC, "")).await;
        assert_eq!(status, 200, "{history}");
        assert_eq!(seqs(&history), [1, 2, 3, 4, 5, 6]);
    }
    let (status, reset) = b.delete(&history_path(TOPIC, "")).await;
    assert_eq!(status, 200, "{reset}");
    let (_, seen_by_a) = a.get(&history_path(TOPIC, "")).await;
    assert_eq!(
        (&seen_by_a["offset"], &seen_by_a["epoch"]),
        (&json!(0), &reset["epoch"]),
        "a reset on one node is the topic's reset"
    );
}

#[tokio::test]
async fn history_requests_answer_503_while_the_store_is_unreachable() {
    // Nothing listens on this port: the node starts degraded.
    let url = format!("redis://127.0.0.1:{}", processes::free_port());
    let server = redis_node(&url, "alone").await;
    let (status, body) = tokio::time::timeout(WAIT * 2, server.get(&history_path(TOPIC, "")))
        .await
        .expect("answered while Redis is away");
    assert_eq!(
        (status, &body["error"]),
        (503, &json!("history_unavailable")),
        "{body}"
    );
    let (status, body) = tokio::time::timeout(WAIT * 2, server.delete(&history_path(TOPIC, "")))
        .await
        .expect("answered while Redis is away");
    assert_eq!(
        (status, &body["error"]),
        (503, &json!("history_unavailable")),
        "{body}"
    );
    let (status, body) = tokio::time::timeout(
        WAIT * 2,
        server.post(
            &format!("/api/topics/{TOPIC}/messages"),
            json!({"type": "note"}),
        ),
    )
    .await
    .expect("answered while Redis is away");
    assert_eq!(
        (status, &body["error"]),
        (503, &json!("bus_unavailable")),
        "nothing can be numbered or published: {body}"
    );
}
