//! Library-level tests of the `Realtime` API through `testing::TestConnection` (no
//! sockets): routing and delivery counts, message stamping, validation errors,
//! server-side subscriptions, state reporting (and the single-node cluster views),
//! confirmed sends, disconnects, unregistration on drop
//! and slow-consumer handling.

use std::collections::BTreeMap;
use std::time::Duration;

use realtime::testing::{RejectAll, TestConnection};
use realtime::{
    BusStatus, CloseCode, ControlReply, Delivery, DirectoryEntry, NodeTag, Realtime,
    RealtimeConfig, Route, SendError, SubscribeError, Topic,
};
use realtime_core::{Identity, InvalidTopic, MessageError};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Upper bound for anything a test awaits; never a schedule.
const WAIT: Duration = Duration::from_secs(5);

fn engine() -> Realtime {
    engine_with(RealtimeConfig::default())
}

fn engine_with(config: RealtimeConfig) -> Realtime {
    Realtime::new(RejectAll, config)
}

/// The `n` field of every frame queued on `conn` so far, in order.
fn received(conn: &mut TestConnection) -> Vec<Value> {
    conn.drain().into_iter().map(|m| m["n"].clone()).collect()
}

/// The next frame, bounded by [`WAIT`].
async fn recv(conn: &mut TestConnection) -> Option<Value> {
    tokio::time::timeout(WAIT, conn.recv())
        .await
        .expect("recv resolves within the wait bound")
}

/// What a single-node send reports: `local` connections reached, nothing relayed.
fn sent(local: usize) -> Result<Delivery, SendError> {
    Ok(Delivery {
        local,
        relayed: false,
        position: None,
    })
}

fn topics(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

#[tokio::test]
async fn each_route_reaches_exactly_its_recipients() {
    let rt = engine();
    let mut alice1 = TestConnection::connect(&rt, "alice", &["admin"]);
    let mut alice2 = TestConnection::connect(&rt, "alice", &[]);
    let mut bob = TestConnection::connect(&rt, "bob", &["staff"]);
    let mut carol = TestConnection::connect(&rt, "carol", &["admin", "staff"]);
    assert_eq!(rt.subscribe(alice2.id(), "order:1").await, Ok(true));
    assert_eq!(rt.subscribe(bob.id(), "order:1").await, Ok(true));
    assert_eq!(rt.subscribe(carol.id(), "order:2").await, Ok(true));

    let msg = |n: u32| json!({"type": "t", "n": n});
    assert_eq!(rt.send_to_user("alice", msg(1)), sent(2));
    assert_eq!(rt.send_to_user("nobody", msg(2)), sent(0));
    assert_eq!(rt.send_to_role("admin", msg(3)), sent(2));
    assert_eq!(rt.send_to_role("staff", msg(4)), sent(2));
    assert_eq!(rt.send_to_role("ghost", msg(5)), sent(0));
    assert_eq!(rt.broadcast(msg(6)), sent(4));
    assert_eq!(rt.send_to_connection(bob.id(), msg(7)), sent(1));
    assert_eq!(rt.send_to_connection(uuid::Uuid::new_v4(), msg(8)), sent(0));
    assert_eq!(rt.publish("order:1", msg(9)), sent(2));
    assert_eq!(rt.publish("order:2", msg(10)), sent(1));
    assert_eq!(rt.publish("order:3", msg(11)), sent(0));
    assert_eq!(rt.send(Route::User("carol".into()), msg(12)), sent(1));

    assert_eq!(received(&mut alice1), [json!(1), json!(3), json!(6)]);
    assert_eq!(received(&mut alice2), [json!(1), json!(6), json!(9)]);
    assert_eq!(received(&mut bob), [json!(4), json!(6), json!(7), json!(9)]);
    assert_eq!(
        received(&mut carol),
        [json!(3), json!(4), json!(6), json!(10), json!(12)]
    );
}

#[tokio::test]
async fn messages_are_stamped_and_topic_messages_carry_their_topic() {
    let rt = engine();
    let mut conn = TestConnection::connect(&rt, "alice", &[]);
    assert_eq!(rt.subscribe(conn.id(), "order:7").await, Ok(true));
    let before = OffsetDateTime::now_utc();

    assert_eq!(
        rt.send_to_user("alice", json!({"type": "note", "x": 1})),
        sent(1)
    );
    let msg = recv(&mut conn).await.expect("a message");
    let ts = msg["timestamp"]
        .as_str()
        .expect("timestamp added")
        .to_owned();
    assert_eq!(msg, json!({"type": "note", "x": 1, "timestamp": ts}));
    assert!(
        ts.ends_with('Z') && ts.len() == 24,
        "RFC 3339 UTC millis: {ts}"
    );
    let stamped = OffsetDateTime::parse(&ts, &Rfc3339).expect("RFC 3339");
    let after = OffsetDateTime::now_utc();
    // The stamp has millisecond precision, so compare at that precision.
    assert!(stamped >= before - Duration::from_millis(1) && stamped <= after);

    assert_eq!(
        rt.broadcast(json!({"type": "note", "timestamp": "kept-as-is"})),
        sent(1)
    );
    assert_eq!(
        recv(&mut conn).await,
        Some(json!({"type": "note", "timestamp": "kept-as-is"}))
    );

    // The topic is set by the engine, overriding anything the sender put there.
    assert_eq!(
        rt.publish(
            "order:7",
            json!({"type": "update", "topic": "spoofed", "timestamp": "t0"})
        ),
        sent(1)
    );
    assert_eq!(
        recv(&mut conn).await,
        Some(json!({"type": "update", "topic": "order:7", "timestamp": "t0"}))
    );

    // Raw JSON bodies get the same treatment.
    assert_eq!(
        rt.send_json(
            Route::Topic(Topic::parse("order:7").unwrap()),
            br#"{"type":"raw"}"#
        ),
        sent(1)
    );
    let raw = recv(&mut conn).await.expect("a message");
    assert_eq!(raw["type"], "raw");
    assert_eq!(raw["topic"], "order:7");
    assert!(raw["timestamp"].is_string());
    assert_eq!(conn.try_recv(), None);
}

#[tokio::test]
async fn invalid_messages_and_topics_are_refused_and_deliver_nothing() {
    let rt = engine_with(RealtimeConfig {
        max_topic_length: 8,
        ..Default::default()
    });
    let mut conn = TestConnection::connect(&rt, "alice", &["admin"]);
    assert_eq!(rt.subscribe(conn.id(), "ok").await, Ok(true));
    let not_object = Err(SendError::InvalidMessage(MessageError::NotAnObject));
    let missing_type = Err(SendError::InvalidMessage(MessageError::MissingType));

    assert_eq!(rt.broadcast(json!([1, 2])), not_object);
    assert_eq!(rt.send_to_user("alice", json!("text")), not_object);
    assert_eq!(rt.send_to_role("admin", json!(null)), not_object);
    assert_eq!(
        rt.send_to_connection(conn.id(), json!(3)),
        Err(SendError::InvalidMessage(MessageError::NotAnObject))
    );
    assert_eq!(rt.publish("ok", json!(true)), not_object);
    assert_eq!(rt.broadcast(json!({"text": "no type"})), missing_type);
    assert_eq!(rt.send_to_user("alice", json!({"type": 5})), missing_type);
    assert_eq!(rt.publish("ok", json!({"type": null})), missing_type);
    assert!(matches!(
        rt.send_json(Route::Broadcast, b"{nope"),
        Err(SendError::InvalidMessage(MessageError::InvalidJson(_)))
    ));

    let valid = || json!({"type": "t"});
    assert_eq!(
        rt.publish("a b", valid()),
        Err(SendError::InvalidTopic(InvalidTopic::BadCharacter {
            position: 1
        }))
    );
    assert_eq!(
        rt.publish("", valid()),
        Err(SendError::InvalidTopic(InvalidTopic::Empty))
    );
    assert_eq!(
        rt.publish("abcdefghi", valid()),
        Err(SendError::InvalidTopic(InvalidTopic::TooLong { max: 8 }))
    );
    // The topic is checked before the message.
    assert_eq!(
        rt.publish("a/b", json!(1)),
        Err(SendError::InvalidTopic(InvalidTopic::BadCharacter {
            position: 1
        }))
    );

    assert_eq!(conn.drain(), Vec::<Value>::new(), "nothing was delivered");
    assert_eq!(
        rt.publish("abcdefgh", valid()),
        sent(0),
        "8 bytes is allowed"
    );
}

#[tokio::test]
async fn server_side_subscribe_ignores_policy_and_reports_changes() {
    let rt = engine();
    let mut alice = TestConnection::connect(&rt, "alice", &[]);

    // A client could subscribe to neither (another user's topic, a role it lacks).
    assert_eq!(rt.subscribe(alice.id(), "user:bob").await, Ok(true));
    assert_eq!(rt.subscribe(alice.id(), "role:admin").await, Ok(true));
    assert_eq!(rt.subscribe(alice.id(), "user:bob").await, Ok(false));
    assert_eq!(rt.topics(), topics(&[("role:admin", 1), ("user:bob", 1)]));

    assert_eq!(
        rt.publish("user:bob", json!({"type": "t", "n": 1})),
        sent(1)
    );
    let got = recv(&mut alice).await.expect("a message");
    assert_eq!(
        (got["n"].clone(), got["topic"].clone()),
        (json!(1), json!("user:bob"))
    );

    assert_eq!(rt.unsubscribe(alice.id(), "user:bob").await, Ok(true));
    assert_eq!(rt.unsubscribe(alice.id(), "user:bob").await, Ok(false));
    assert_eq!(rt.unsubscribe(alice.id(), "never").await, Ok(false));
    assert_eq!(rt.publish("user:bob", json!({"type": "t"})), sent(0));
    assert_eq!(rt.topics(), topics(&[("role:admin", 1)]));
    assert_eq!(rt.connection(alice.id()).unwrap().topics, ["role:admin"]);

    assert_eq!(
        rt.subscribe(alice.id(), "a b").await,
        Err(SubscribeError::InvalidTopic(InvalidTopic::BadCharacter {
            position: 1
        }))
    );
    assert!(matches!(
        rt.unsubscribe(alice.id(), "bad topic").await,
        Err(SubscribeError::InvalidTopic(_))
    ));
    let unknown = uuid::Uuid::new_v4();
    assert_eq!(
        rt.subscribe(unknown, "news").await,
        Err(SubscribeError::UnknownConnection)
    );
    assert_eq!(
        rt.unsubscribe(unknown, "news").await,
        Err(SubscribeError::UnknownConnection)
    );
    assert_eq!(rt.topics(), topics(&[("role:admin", 1)]));
    assert_eq!(alice.try_recv(), None);
}

#[tokio::test]
async fn topics_and_connections_report_the_registry() {
    let rt = engine();
    assert!(rt.connections().is_empty());
    assert!(rt.topics().is_empty());

    let alice = TestConnection::connect(&rt, "alice", &["admin", "staff"]);
    let mut metadata = serde_json::Map::new();
    metadata.insert("tenant".into(), json!("acme"));
    let bob = TestConnection::connect_identity(
        &rt,
        Identity {
            user_id: "bob".into(),
            roles: vec![],
            metadata: metadata.clone(),
            expires_at: None,
        },
    );
    for topic in ["b", "a"] {
        assert_eq!(rt.subscribe(alice.id(), topic).await, Ok(true));
    }
    assert_eq!(rt.subscribe(bob.id(), "b").await, Ok(true));

    assert_eq!(rt.topics(), topics(&[("a", 1), ("b", 2)]));
    assert_eq!(rt.connection_count(), 2);
    assert_eq!(*rt.watch_connection_count().borrow(), 2);

    let list = rt.connections();
    assert_eq!(list.len(), 2);
    assert!(
        list[0].connected_at <= list[1].connected_at,
        "sorted by connect time"
    );
    let a = list
        .iter()
        .find(|c| c.id == alice.id())
        .expect("alice listed");
    assert_eq!(a.user_id, "alice");
    assert_eq!(a.roles, ["admin", "staff"]);
    assert_eq!(a.topics, ["a", "b"], "sorted topic names");
    assert!(a.metadata.is_empty());
    assert!(OffsetDateTime::parse(&a.connected_at, &Rfc3339).is_ok());
    let b = list.iter().find(|c| c.id == bob.id()).expect("bob listed");
    assert_eq!(b.user_id, "bob");
    assert!(b.roles.is_empty());
    assert_eq!(b.topics, ["b"]);
    assert_eq!(b.metadata, metadata);

    let one = rt.connection(bob.id()).expect("bob found by id");
    assert_eq!((one.id, one.user_id.as_str()), (bob.id(), "bob"));
    assert!(rt.connection(uuid::Uuid::new_v4()).is_none());
}

#[tokio::test]
async fn a_single_node_reports_itself_as_the_whole_cluster() {
    let rt = engine();
    assert_eq!(rt.bus_status(), BusStatus::Up);
    let mut alice = TestConnection::connect(&rt, "alice", &["admin"]);
    let bob = TestConnection::connect(&rt, "bob", &[]);
    // Version-8 ids that start with this node's tag.
    let tag = NodeTag::of_connection(&alice.id());
    assert_eq!(alice.id().get_version_num(), 8);
    assert_eq!(NodeTag::of_connection(&bob.id()), tag);
    assert_ne!(alice.id(), bob.id());
    assert!(rt.is_local(&alice.id()) && rt.is_local(&bob.id()));
    let foreign = NodeTag::from_random(tag.as_u64() ^ 1).connection_id([7; 16]);
    assert!(!rt.is_local(&foreign));
    assert_eq!(rt.subscribe(alice.id(), "news").await, Ok(true));
    assert_eq!(rt.subscribe(alice.id(), "order:1").await, Ok(true));
    assert_eq!(rt.subscribe(bob.id(), "news").await, Ok(true));

    // A confirmed send answers for the connection itself.
    assert_eq!(
        rt.send_json_confirmed(alice.id(), br#"{"type":"c","n":1}"#)
            .await,
        Ok(ControlReply {
            found: true,
            changed: true
        })
    );
    let got = recv(&mut alice).await.expect("the confirmed message");
    assert_eq!(
        got,
        json!({"type": "c", "n": 1, "timestamp": got["timestamp"].clone()})
    );
    assert!(got["timestamp"].is_string(), "{got}");
    let unknown = tag.connection_id([9; 16]);
    assert!(rt.is_local(&unknown));
    assert_eq!(
        rt.send_json_confirmed(unknown, br#"{"type":"c"}"#).await,
        Ok(ControlReply {
            found: false,
            changed: false
        })
    );
    assert!(matches!(
        rt.send_json_confirmed(alice.id(), b"{nope").await,
        Err(SendError::InvalidMessage(MessageError::InvalidJson(_)))
    ));
    assert_eq!(
        rt.send_json_confirmed(alice.id(), br#"{"no":"type"}"#)
            .await,
        Err(SendError::InvalidMessage(MessageError::MissingType))
    );
    assert_eq!(alice.try_recv(), None);

    // The cluster views are this node's views, labelled `local`.
    let expected: Vec<DirectoryEntry> = rt
        .connections()
        .into_iter()
        .map(|connection| DirectoryEntry {
            node: "local".into(),
            connection,
        })
        .collect();
    assert_eq!(expected.len(), 2);
    assert_eq!(rt.cluster_connections().await, Ok(expected));
    assert_eq!(
        rt.cluster_topics().await,
        Ok(topics(&[("news", 2), ("order:1", 1)]))
    );
    assert_eq!(rt.cluster_topics().await, Ok(rt.topics()));
    drop(bob);
    let listed = rt.cluster_connections().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].node.as_str(), listed[0].connection.id),
        ("local", alice.id())
    );
    assert_eq!(
        rt.cluster_topics().await,
        Ok(topics(&[("news", 1), ("order:1", 1)]))
    );
}

#[tokio::test]
async fn disconnect_closes_with_3503_and_stops_routing() {
    let rt = engine();
    let mut alice1 = TestConnection::connect(&rt, "alice", &["admin"]);
    let alice2 = TestConnection::connect(&rt, "alice", &[]);
    let alice3 = TestConnection::connect(&rt, "alice", &[]);
    let mut bob = TestConnection::connect(&rt, "bob", &["admin"]);
    assert_eq!(rt.subscribe(alice1.id(), "t").await, Ok(true));
    assert_eq!(rt.subscribe(bob.id(), "t").await, Ok(true));

    assert_eq!(
        rt.send_to_connection(alice1.id(), json!({"type": "t", "n": "before"})),
        sent(1)
    );
    assert_eq!(rt.disconnect(alice1.id()).await, Ok(true));
    assert_eq!(rt.disconnect(alice1.id()).await, Ok(false), "already gone");
    assert_eq!(alice1.close_code(), Some(CloseCode::ForceDisconnect));

    // Gone from every index at once.
    assert_eq!(rt.connection_count(), 3);
    assert_eq!(*rt.watch_connection_count().borrow(), 3);
    assert!(rt.connection(alice1.id()).is_none());
    assert_eq!(rt.topics(), topics(&[("t", 1)]));
    assert_eq!(rt.send_to_user("alice", json!({"type": "t"})), sent(2));
    assert_eq!(rt.send_to_role("admin", json!({"type": "t"})), sent(1));
    assert_eq!(
        rt.send_to_connection(alice1.id(), json!({"type": "t"})),
        sent(0)
    );
    assert_eq!(rt.publish("t", json!({"type": "t"})), sent(1));
    assert_eq!(rt.broadcast(json!({"type": "t"})), sent(3));
    assert_eq!(
        rt.subscribe(alice1.id(), "t").await,
        Err(SubscribeError::UnknownConnection)
    );

    // What was queued before the disconnect is still readable, then the end.
    let before = recv(&mut alice1).await.expect("the queued frame");
    assert_eq!(before["n"], "before");
    assert_eq!(recv(&mut alice1).await, None);

    assert_eq!(rt.disconnect_user("alice"), sent(2));
    assert_eq!(alice2.close_code(), Some(CloseCode::ForceDisconnect));
    assert_eq!(alice3.close_code(), Some(CloseCode::ForceDisconnect));
    assert_eq!(bob.close_code(), None);
    assert_eq!(rt.disconnect_user("alice"), sent(0));
    assert_eq!(rt.disconnect_user("nobody"), sent(0));
    assert_eq!(rt.connection_count(), 1);
    assert_eq!(rt.connections()[0].id, bob.id());
    assert_eq!(rt.send_to_user("alice", json!({"type": "t"})), sent(0));

    // Dropping the disconnected handles does not disturb the remaining count.
    drop((alice1, alice2, alice3));
    assert_eq!(rt.connection_count(), 1);
    assert_eq!(*rt.watch_connection_count().borrow(), 1);
    assert_eq!(
        bob.drain().len(),
        3,
        "bob got the role, topic and broadcast sends"
    );
}

#[tokio::test]
async fn dropping_a_test_connection_unregisters_it_and_its_subscriptions() {
    let rt = engine();
    let mut count = rt.watch_connection_count();
    assert_eq!(*count.borrow_and_update(), 0);

    let alice = TestConnection::connect(&rt, "alice", &["admin"]);
    let mut bob = TestConnection::connect(&rt, "bob", &[]);
    assert!(count.has_changed().unwrap());
    assert_eq!(*count.borrow_and_update(), 2);
    for topic in ["t", "u"] {
        assert_eq!(rt.subscribe(alice.id(), topic).await, Ok(true));
    }
    assert_eq!(rt.subscribe(bob.id(), "t").await, Ok(true));
    assert_eq!(rt.topics(), topics(&[("t", 2), ("u", 1)]));

    let alice_id = alice.id();
    drop(alice);
    assert!(count.has_changed().unwrap());
    assert_eq!(*count.borrow_and_update(), 1);
    assert_eq!(rt.connection_count(), 1);
    assert!(rt.connection(alice_id).is_none());
    assert_eq!(rt.topics(), topics(&[("t", 1)]));
    assert_eq!(rt.send_to_user("alice", json!({"type": "x"})), sent(0));
    assert_eq!(rt.send_to_role("admin", json!({"type": "x"})), sent(0));
    assert_eq!(rt.publish("u", json!({"type": "x"})), sent(0));
    assert_eq!(rt.publish("t", json!({"type": "x", "n": 1})), sent(1));
    assert_eq!(rt.broadcast(json!({"type": "x", "n": 2})), sent(1));
    assert_eq!(
        rt.subscribe(alice_id, "t").await,
        Err(SubscribeError::UnknownConnection)
    );
    assert_eq!(received(&mut bob), [json!(1), json!(2)]);

    drop(bob);
    assert_eq!(*count.borrow_and_update(), 0);
    assert_eq!(rt.connection_count(), 0);
    assert!(rt.topics().is_empty());
    assert!(rt.connections().is_empty());
}

#[tokio::test]
async fn slow_consumer_is_closed_while_a_reader_gets_everything() {
    const QUEUE: usize = 4;
    let rt = engine_with(RealtimeConfig {
        outbound_queue: QUEUE,
        ..Default::default()
    });
    let mut stalled = TestConnection::connect(&rt, "stalled", &[]);
    let mut reader = TestConnection::connect(&rt, "reader", &[]);
    for conn in [&stalled, &reader] {
        assert_eq!(rt.subscribe(conn.id(), "feed").await, Ok(true));
    }

    for n in 0..20usize {
        let delivered = rt.publish("feed", json!({"type": "tick", "n": n})).unwrap();
        // The stalled queue takes QUEUE frames; the next one overflows it.
        let expected = Delivery {
            local: if n < QUEUE { 2 } else { 1 },
            relayed: false,
            position: None,
        };
        assert_eq!(delivered, expected, "delivery count of message {n}");
        let code = if n < QUEUE {
            None
        } else {
            Some(CloseCode::SlowConsumer)
        };
        assert_eq!(stalled.close_code(), code, "after message {n}");
        let got = reader
            .try_recv()
            .expect("the reader has the message queued");
        assert_eq!(got["n"], n);
    }
    assert_eq!(reader.close_code(), None);
    assert_eq!(reader.try_recv(), None);

    // The stalled connection holds exactly what fit, then reports its end.
    assert_eq!(
        received(&mut stalled),
        [json!(0), json!(1), json!(2), json!(3)]
    );
    assert_eq!(recv(&mut stalled).await, None);
    // Like a socket's session, the engine unregisters the slow consumer and its
    // subscriptions without waiting for the test to drop it.
    let mut count = rt.watch_connection_count();
    tokio::time::timeout(Duration::from_secs(5), count.wait_for(|n| *n == 1))
        .await
        .expect("slow consumer unregistered in time")
        .unwrap();
    assert!(rt.connection(stalled.id()).is_none());
    assert_eq!(rt.topics().get("feed"), Some(&1));
    assert_eq!(
        rt.send_to_connection(stalled.id(), json!({"type": "t"})),
        sent(0)
    );
    assert_eq!(
        rt.send_to_connection(reader.id(), json!({"type": "t", "n": "last"})),
        sent(1)
    );
    assert_eq!(recv(&mut reader).await.unwrap()["n"], "last");
}

#[tokio::test]
async fn a_queue_over_its_byte_bound_is_a_slow_consumer_too() {
    let rt = engine_with(RealtimeConfig {
        outbound_queue: 1000,
        outbound_queue_bytes: 400,
        ..Default::default()
    });
    let stalled = TestConnection::connect(&rt, "stalled", &[]);
    assert_eq!(rt.subscribe(stalled.id(), "feed").await, Ok(true));
    let pad = "x".repeat(100);
    let mut queued = 0;
    for n in 0..10 {
        let delivery = rt
            .publish("feed", json!({"type": "tick", "n": n, "pad": pad}))
            .unwrap();
        if delivery.local == 0 {
            break;
        }
        queued += 1;
    }
    // Each frame is about 180 bytes (the pad, type, n, timestamp and topic): two fit
    // in 400 bytes, the third does not, long before the 1000-message bound.
    assert_eq!(queued, 2);
    assert_eq!(stalled.close_code(), Some(CloseCode::SlowConsumer));
}
