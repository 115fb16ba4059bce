//! Two engines in one process sharing one `MemoryHub`: every route sent on one node
//! reaches the other exactly once, control operations (subscribe, unsubscribe,
//! disconnect, confirmed send) reach connections on the other node, cluster views
//! aggregate both nodes, channel interest is reference-counted, one publisher's
//! messages keep their order, requests crossing between the nodes on two threads
//! do not deadlock, and real socket clients are reached across nodes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::SinkExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use realtime::cluster::bus::{BusEvent, BusFuture, CountFuture, Inbox};
use realtime::testing::{RejectAll, TestConnection};
use realtime::{
    BusError, BusStatus, ClaimRules, CloseCode, ClusterConfig, ConnectionId, ConnectionSummary,
    ControlReply, Delivery, DirectoryEntry, JwtVerifier, MemoryHub, MessageBus, NodeTag, Realtime,
    RealtimeConfig, Route, SendError, SubscribeError, TokenVerifier, Topic,
};
use realtime_core::{Body, Envelope, InvalidTopic, MessageError, PublishRule, TopicPolicy};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

mod support;

use support::{WAIT, Ws, next_json, next_message};

const SECRET: &[u8] = b"cluster-memory-test-secret";

fn cluster(hub: &MemoryHub, node: &str, bus: Arc<dyn MessageBus>) -> ClusterConfig {
    ClusterConfig {
        node_id: node.into(),
        prefix: "test".into(),
        bus,
        directory: hub.directory(),
        history: None,
        presence: None,
        request_timeout: WAIT,
    }
}

fn node(hub: &MemoryHub, name: &str, verifier: impl TokenVerifier) -> Realtime {
    Realtime::clustered(
        verifier,
        RealtimeConfig::default(),
        cluster(hub, name, hub.bus()),
    )
}

/// Engines "a" and "b" on one hub.
fn pair() -> (Realtime, Realtime) {
    let hub = MemoryHub::new();
    (node(&hub, "a", RejectAll), node(&hub, "b", RejectAll))
}

/// What a send on a clustered node reports: `local` connections reached on the
/// sending node, and the message handed to the bus.
fn relayed(local: usize) -> Result<Delivery, SendError> {
    Ok(Delivery {
        local,
        relayed: true,
        position: None,
    })
}

/// A send that stayed on the sending node (a connection of its own).
fn local_only(local: usize) -> Result<Delivery, SendError> {
    Ok(Delivery {
        local,
        relayed: false,
        position: None,
    })
}

fn reply(found: bool, changed: bool) -> Result<ControlReply, SendError> {
    Ok(ControlReply { found, changed })
}

fn msg(n: u64) -> Value {
    json!({"type": "t", "n": n})
}

/// The `n` field of every frame queued on `conn` so far, in order.
fn received(conn: &mut TestConnection) -> Vec<u64> {
    conn.drain()
        .into_iter()
        .map(|m| m["n"].as_u64().unwrap_or_else(|| panic!("no n in {m}")))
        .collect()
}

/// The next frame, bounded by [`WAIT`].
async fn recv(conn: &mut TestConnection) -> Option<Value> {
    tokio::time::timeout(WAIT, conn.recv())
        .await
        .expect("recv resolves within the wait bound")
}

/// Waits (bounded) until `rt` has exactly `n` connections.
async fn wait_for_count(rt: &Realtime, n: usize) {
    let mut count = rt.watch_connection_count();
    tokio::time::timeout(WAIT, count.wait_for(|c| *c == n))
        .await
        .unwrap_or_else(|_| panic!("expected {n} connections, have {}", rt.connection_count()))
        .expect("engine alive");
}

/// An id with `owner`'s node tag that `owner` never handed out.
fn unknown_on(owner: ConnectionId) -> ConnectionId {
    NodeTag::of_connection(&owner).connection_id([0x42; 16])
}

fn topics(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

/// What the directory should hold: each engine's own connections under its label.
fn expected_view(nodes: &[(&str, &Realtime)]) -> Vec<DirectoryEntry> {
    let mut all: Vec<DirectoryEntry> = nodes
        .iter()
        .flat_map(|(name, rt)| {
            rt.connections()
                .into_iter()
                .map(|connection| DirectoryEntry {
                    node: name.to_string(),
                    connection,
                })
        })
        .collect();
    all.sort_by_key(|e| e.connection.id);
    all
}

/// `rt`'s cluster-wide connection list, sorted by id.
async fn cluster_view(rt: &Realtime) -> Vec<DirectoryEntry> {
    let mut all = rt.cluster_connections().await.expect("directory answers");
    all.sort_by_key(|e| e.connection.id);
    all
}

#[tokio::test]
async fn every_route_sent_on_a_reaches_both_nodes_exactly_once() {
    let (a, b) = pair();
    let mut a_alice = TestConnection::connect(&a, "alice", &["admin"]);
    let mut a_bob = TestConnection::connect(&a, "bob", &["staff"]);
    let mut b_alice = TestConnection::connect(&b, "alice", &[]);
    let mut b_carol = TestConnection::connect(&b, "carol", &["admin", "staff"]);
    let mut b_dave = TestConnection::connect(&b, "dave", &[]);
    assert!(a.is_local(&a_alice.id()) && !a.is_local(&b_alice.id()));
    assert!(b.is_local(&b_alice.id()) && !b.is_local(&a_alice.id()));
    assert_ne!(
        NodeTag::of_connection(&a_alice.id()),
        NodeTag::of_connection(&b_alice.id())
    );
    assert_eq!(b_dave.id().get_version_num(), 8);
    assert_eq!(a.subscribe(a_bob.id(), "order:1").await, Ok(true));
    assert_eq!(b.subscribe(b_carol.id(), "order:1").await, Ok(true));
    assert_eq!(b.subscribe(b_dave.id(), "order:2").await, Ok(true));
    assert_eq!(
        (a.bus_status(), b.bus_status()),
        (BusStatus::Up, BusStatus::Up)
    );

    assert_eq!(a.send_to_user("alice", msg(1)), relayed(1));
    assert_eq!(a.send_to_user("carol", msg(2)), relayed(0));
    assert_eq!(a.send_to_user("nobody", msg(3)), relayed(0));
    assert_eq!(a.send_to_role("admin", msg(4)), relayed(1));
    assert_eq!(a.send_to_role("staff", msg(5)), relayed(1));
    assert_eq!(a.send_to_role("ghost", msg(6)), relayed(0));
    assert_eq!(a.broadcast(msg(7)), relayed(2));
    assert_eq!(a.send_to_connection(b_dave.id(), msg(8)), relayed(0));
    assert_eq!(a.send_to_connection(a_bob.id(), msg(9)), local_only(1));
    assert_eq!(a.publish("order:1", msg(10)), relayed(1));
    assert_eq!(a.publish("order:2", msg(11)), relayed(0));
    assert_eq!(a.publish("order:3", msg(12)), relayed(0));
    assert_eq!(a.send(Route::User("dave".into()), msg(13)), relayed(0));
    assert_eq!(
        a.send_json(Route::Role("staff".into()), br#"{"type":"t","n":14}"#),
        relayed(1)
    );
    assert_eq!(
        a.send_json(Route::Connection(b_carol.id()), br#"{"type":"t","n":15}"#),
        relayed(0)
    );

    // The in-memory hub delivers synchronously: everything is queued already.
    assert_eq!(received(&mut a_alice), [1, 4, 7]);
    assert_eq!(received(&mut a_bob), [5, 7, 9, 10, 14]);
    assert_eq!(received(&mut b_alice), [1, 7]);
    assert_eq!(received(&mut b_carol), [2, 4, 5, 7, 10, 14, 15]);
    assert_eq!(received(&mut b_dave), [7, 8, 11, 13]);

    // A relayed message is the very frame the sending node delivered: stamped
    // once, with the topic set.
    assert_eq!(a.publish("order:1", json!({"type": "u"})), relayed(1));
    let (here, there) = (recv(&mut a_bob).await, recv(&mut b_carol).await);
    let here = here.expect("the local subscriber got it");
    assert_eq!(here["topic"], "order:1");
    assert!(here["timestamp"].is_string(), "{here}");
    assert_eq!(Some(here), there);

    // And the other way round.
    assert_eq!(b.broadcast(msg(16)), relayed(3));
    assert_eq!(b.send_to_user("alice", msg(17)), relayed(1));
    assert_eq!(b.send_to_connection(a_alice.id(), msg(18)), relayed(0));
    assert_eq!(b.publish("order:1", msg(19)), relayed(1));
    assert_eq!(received(&mut a_alice), [16, 17, 18]);
    assert_eq!(received(&mut a_bob), [16, 19]);
    assert_eq!(received(&mut b_alice), [16, 17]);
    assert_eq!(received(&mut b_carol), [16, 19]);
    assert_eq!(received(&mut b_dave), [16]);
}

#[tokio::test]
async fn a_connection_send_to_a_remote_connection_reaches_only_it() {
    let (a, b) = pair();
    let mut a_alice = TestConnection::connect(&a, "alice", &["admin"]);
    let mut b_alice1 = TestConnection::connect(&b, "alice", &["admin"]);
    let mut b_alice2 = TestConnection::connect(&b, "alice", &["admin"]);
    for conn in [&a_alice, &b_alice1, &b_alice2] {
        assert_eq!(
            a.subscribe(conn.id(), "order:1").await,
            Ok(true),
            "{}",
            conn.id()
        );
    }

    assert_eq!(a.send_to_connection(b_alice2.id(), msg(1)), relayed(0));
    assert_eq!(
        a.send_json(Route::Connection(b_alice2.id()), br#"{"type":"t","n":2}"#),
        relayed(0)
    );
    // An id of node b that b never handed out, and one of a node that does not
    // exist: relayed, delivered nowhere.
    assert_eq!(
        a.send_to_connection(unknown_on(b_alice1.id()), msg(3)),
        relayed(0)
    );
    assert_eq!(
        a.send_to_connection(uuid::Uuid::new_v4(), msg(4)),
        relayed(0)
    );

    let got = recv(&mut b_alice2).await.expect("the message");
    assert_eq!(got["n"], 1);
    assert!(
        got["timestamp"].is_string() && got.get("topic").is_none(),
        "{got}"
    );
    assert_eq!(received(&mut b_alice2), [2]);
    assert_eq!(received(&mut b_alice1), Vec::<u64>::new());
    assert_eq!(received(&mut a_alice), Vec::<u64>::new());
}

#[tokio::test]
async fn subscribe_and_unsubscribe_a_remote_connection() {
    let (a, b) = pair();
    let mut b_bob = TestConnection::connect(&b, "bob", &[]);
    let mut a_alice = TestConnection::connect(&a, "alice", &[]);
    let bob = b_bob.id();

    // Called on a, carried out by b, on the server's authority (no topic policy).
    assert_eq!(a.subscribe(bob, "news").await, Ok(true));
    assert_eq!(a.subscribe(bob, "news").await, Ok(false));
    assert_eq!(a.subscribe(bob, "user:alice").await, Ok(true));
    assert_eq!(b.topics(), topics(&[("news", 1), ("user:alice", 1)]));
    assert!(a.topics().is_empty());
    assert_eq!(
        b.connection(bob).expect("bob on b").topics,
        ["news", "user:alice"]
    );
    assert_eq!(a.connection(bob), None, "a does not hold bob");

    // Once subscribe returned, a's publishes reach bob.
    assert_eq!(a.publish("news", msg(1)), relayed(0));
    assert_eq!(a.publish("user:alice", msg(2)), relayed(0));
    assert_eq!(received(&mut b_bob), [1, 2]);

    assert_eq!(a.unsubscribe(bob, "news").await, Ok(true));
    assert_eq!(a.unsubscribe(bob, "news").await, Ok(false));
    assert_eq!(a.unsubscribe(bob, "never").await, Ok(false));
    assert_eq!(b.topics(), topics(&[("user:alice", 1)]));
    assert_eq!(a.publish("news", msg(3)), relayed(0));
    assert_eq!(a.publish("user:alice", msg(4)), relayed(0));
    assert_eq!(received(&mut b_bob), [4]);

    // The other way round: b subscribes a's connection.
    assert_eq!(b.subscribe(a_alice.id(), "news").await, Ok(true));
    assert_eq!(a.topics(), topics(&[("news", 1)]));
    assert_eq!(b.publish("news", msg(5)), relayed(0));
    assert_eq!(received(&mut a_alice), [5]);

    // Unknown ids owned by b, and invalid topics (refused before anything is sent).
    let unknown = unknown_on(bob);
    assert_eq!(
        a.subscribe(unknown, "news").await,
        Err(SubscribeError::UnknownConnection)
    );
    assert_eq!(
        a.unsubscribe(unknown, "news").await,
        Err(SubscribeError::UnknownConnection)
    );
    assert_eq!(
        a.subscribe(bob, "a b").await,
        Err(SubscribeError::InvalidTopic(InvalidTopic::BadCharacter {
            position: 1
        }))
    );
    assert!(matches!(
        a.unsubscribe(bob, "").await,
        Err(SubscribeError::InvalidTopic(InvalidTopic::Empty))
    ));
    assert_eq!(b.topics(), topics(&[("user:alice", 1)]));

    // A departed connection is unknown too.
    drop(b_bob);
    assert_eq!(
        a.subscribe(bob, "news").await,
        Err(SubscribeError::UnknownConnection)
    );
    assert_eq!(
        a.unsubscribe(bob, "user:alice").await,
        Err(SubscribeError::UnknownConnection)
    );
    assert!(b.topics().is_empty());
    assert_eq!(a_alice.try_recv(), None);
}

#[tokio::test]
async fn disconnect_a_remote_connection() {
    let (a, b) = pair();
    let mut b_bob = TestConnection::connect(&b, "bob", &["staff"]);
    let mut b_carol = TestConnection::connect(&b, "carol", &["staff"]);
    let mut a_alice = TestConnection::connect(&a, "alice", &["staff"]);
    assert_eq!(a.subscribe(b_bob.id(), "news").await, Ok(true));
    assert_eq!(a.send_to_connection(b_bob.id(), msg(1)), relayed(0));

    assert_eq!(a.disconnect(b_bob.id()).await, Ok(true));
    assert_eq!(b_bob.close_code(), Some(CloseCode::ForceDisconnect));
    wait_for_count(&b, 1).await;
    assert_eq!(b.connection(b_bob.id()), None);
    assert!(b.topics().is_empty());
    assert_eq!(a.disconnect(b_bob.id()).await, Ok(false), "already gone");
    assert_eq!(a.disconnect(unknown_on(b_carol.id())).await, Ok(false));

    // What was queued before is still readable, then the end.
    assert_eq!(
        recv(&mut b_bob).await.map(|m| m["n"].clone()),
        Some(json!(1))
    );
    assert_eq!(recv(&mut b_bob).await, None);

    // Nothing routes to it any more; the others are untouched.
    assert_eq!(a.send_to_role("staff", msg(2)), relayed(1));
    assert_eq!(a.send_to_user("bob", msg(3)), relayed(0));
    assert_eq!(a.publish("news", msg(4)), relayed(0));
    assert_eq!(b_bob.try_recv(), None);
    assert_eq!(received(&mut b_carol), [2]);
    assert_eq!(received(&mut a_alice), [2]);
    assert_eq!(b_carol.close_code(), None);
    assert_eq!(
        cluster_view(&a).await,
        expected_view(&[("a", &a), ("b", &b)])
    );
    assert_eq!(cluster_view(&a).await.len(), 2);

    // b disconnects a's connection the same way.
    assert_eq!(b.disconnect(a_alice.id()).await, Ok(true));
    assert_eq!(a_alice.close_code(), Some(CloseCode::ForceDisconnect));
    wait_for_count(&a, 0).await;
}

#[tokio::test]
async fn disconnect_user_closes_that_users_connections_on_every_node() {
    let (a, b) = pair();
    let a_alice = TestConnection::connect(&a, "alice", &[]);
    let mut a_bob = TestConnection::connect(&a, "bob", &[]);
    let b_alice1 = TestConnection::connect(&b, "alice", &["admin"]);
    let b_alice2 = TestConnection::connect(&b, "alice", &[]);
    let mut b_bob = TestConnection::connect(&b, "bob", &["admin"]);

    assert_eq!(
        a.disconnect_user("alice"),
        Ok(Delivery {
            local: 1,
            relayed: true,
            position: None,
        })
    );
    for conn in [&a_alice, &b_alice1, &b_alice2] {
        assert_eq!(conn.close_code(), Some(CloseCode::ForceDisconnect));
    }
    wait_for_count(&a, 1).await;
    wait_for_count(&b, 1).await;
    assert_eq!((a_bob.close_code(), b_bob.close_code()), (None, None));
    assert_eq!(
        a.disconnect_user("alice"),
        Ok(Delivery {
            local: 0,
            relayed: true,
            position: None,
        })
    );
    assert_eq!(a.send_to_user("alice", msg(1)), relayed(0));
    assert_eq!(a.send_to_role("admin", msg(2)), relayed(0));
    assert_eq!(received(&mut b_bob), [2]);
    assert_eq!(received(&mut a_bob), Vec::<u64>::new());
    let view = cluster_view(&b).await;
    assert_eq!(view, expected_view(&[("a", &a), ("b", &b)]));
    let users: Vec<&str> = view.iter().map(|e| e.connection.user_id.as_str()).collect();
    assert_eq!(users, ["bob", "bob"]);

    // A user held only by the other node.
    assert_eq!(
        b.disconnect_user("bob"),
        Ok(Delivery {
            local: 1,
            relayed: true,
            position: None,
        })
    );
    assert_eq!(a_bob.close_code(), Some(CloseCode::ForceDisconnect));
    wait_for_count(&a, 0).await;
    wait_for_count(&b, 0).await;
}

#[tokio::test]
async fn confirmed_sends_are_answered_by_the_owning_node() {
    let (a, b) = pair();
    let mut b_bob = TestConnection::connect(&b, "bob", &[]);
    let b_carol = TestConnection::connect(&b, "carol", &[]);
    let mut a_alice = TestConnection::connect(&a, "alice", &[]);

    assert_eq!(
        a.send_json_confirmed(b_bob.id(), br#"{"type":"t","n":1}"#)
            .await,
        reply(true, true)
    );
    let got = recv(&mut b_bob).await.expect("the confirmed message");
    assert_eq!(
        got,
        json!({"type": "t", "n": 1, "timestamp": got["timestamp"]})
    );
    assert!(got["timestamp"].is_string(), "{got}");

    // Unknown on its owning node; owned by no node at all; on the sending node.
    let started = Instant::now();
    assert_eq!(
        a.send_json_confirmed(unknown_on(b_bob.id()), br#"{"type":"t","n":2}"#)
            .await,
        reply(false, false)
    );
    assert_eq!(
        a.send_json_confirmed(uuid::Uuid::new_v4(), br#"{"type":"t","n":3}"#)
            .await,
        reply(false, false)
    );
    assert!(
        started.elapsed() < WAIT,
        "answered, not timed out: {:?}",
        started.elapsed()
    );
    assert_eq!(
        a.send_json_confirmed(a_alice.id(), br#"{"type":"t","n":4}"#)
            .await,
        reply(true, true)
    );
    assert_eq!(
        b.send_json_confirmed(a_alice.id(), br#"{"type":"t","n":5}"#)
            .await,
        reply(true, true)
    );

    // A departed connection: found no more.
    let carol = b_carol.id();
    drop(b_carol);
    assert_eq!(
        a.send_json_confirmed(carol, br#"{"type":"t","n":6}"#).await,
        reply(false, false)
    );
    // Invalid bodies are refused before anything is sent.
    assert!(matches!(
        a.send_json_confirmed(b_bob.id(), b"{nope").await,
        Err(SendError::InvalidMessage(MessageError::InvalidJson(_)))
    ));
    assert_eq!(
        a.send_json_confirmed(b_bob.id(), br#"{"n":7}"#).await,
        Err(SendError::InvalidMessage(MessageError::MissingType))
    );
    assert_eq!(received(&mut b_bob), Vec::<u64>::new());
    assert_eq!(received(&mut a_alice), [4, 5]);
}

#[tokio::test]
async fn cluster_views_list_every_node() {
    let (a, b) = pair();
    let a_alice = TestConnection::connect(&a, "alice", &["admin"]);
    let b_bob = TestConnection::connect(&b, "bob", &[]);
    let b_carol = TestConnection::connect(&b, "carol", &["staff"]);
    assert_eq!(a.subscribe(a_alice.id(), "news").await, Ok(true));
    assert_eq!(a.subscribe(a_alice.id(), "order:1").await, Ok(true));
    assert_eq!(b.subscribe(b_bob.id(), "news").await, Ok(true));
    assert_eq!(a.subscribe(b_carol.id(), "news").await, Ok(true));
    assert_eq!(a.subscribe(b_carol.id(), "order:2").await, Ok(true));

    let view = cluster_view(&a).await;
    assert_eq!(view, expected_view(&[("a", &a), ("b", &b)]));
    assert_eq!(view, cluster_view(&b).await, "one directory for both");
    let labels: BTreeMap<ConnectionId, &str> = view
        .iter()
        .map(|e| (e.connection.id, e.node.as_str()))
        .collect();
    let want: BTreeMap<ConnectionId, &str> =
        [(a_alice.id(), "a"), (b_bob.id(), "b"), (b_carol.id(), "b")].into();
    assert_eq!(labels, want);
    let carol: &ConnectionSummary = &view
        .iter()
        .find(|e| e.connection.id == b_carol.id())
        .expect("carol listed")
        .connection;
    assert_eq!(
        (carol.user_id.as_str(), &carol.roles, &carol.topics),
        (
            "carol",
            &vec!["staff".to_owned()],
            &vec!["news".to_owned(), "order:2".to_owned()]
        )
    );

    let both = topics(&[("news", 3), ("order:1", 1), ("order:2", 1)]);
    assert_eq!(a.cluster_topics().await, Ok(both.clone()));
    assert_eq!(b.cluster_topics().await, Ok(both));
    assert_eq!(a.topics(), topics(&[("news", 1), ("order:1", 1)]));
    assert_eq!(b.topics(), topics(&[("news", 2), ("order:2", 1)]));

    // Changes show up at once: an unsubscribe, a departure.
    assert_eq!(a.unsubscribe(b_carol.id(), "order:2").await, Ok(true));
    drop(b_bob);
    assert_eq!(
        a.cluster_topics().await,
        Ok(topics(&[("news", 2), ("order:1", 1)]))
    );
    let view = cluster_view(&a).await;
    assert_eq!(view, expected_view(&[("a", &a), ("b", &b)]));
    assert_eq!(view.len(), 2);
    drop((a_alice, b_carol));
    assert_eq!(a.cluster_connections().await, Ok(vec![]));
    assert_eq!(b.cluster_topics().await, Ok(BTreeMap::new()));
}

/// A bus endpoint that records every envelope its engine receives.
struct Spy {
    inner: Arc<dyn MessageBus>,
    received: Arc<Mutex<Vec<Envelope>>>,
}

impl Spy {
    fn new(inner: Arc<dyn MessageBus>) -> Arc<Spy> {
        Arc::new(Spy {
            inner,
            received: Arc::default(),
        })
    }

    /// How many relayed messages for `route` the engine has received so far.
    fn messages(&self, route: &Route) -> usize {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(&e.body, Body::Message { route: r, .. } if r == route))
            .count()
    }
}

impl MessageBus for Spy {
    fn start(&self, inbox: Inbox, always: Vec<String>) {
        let received = self.received.clone();
        let spy: Inbox = Arc::new(move |event: BusEvent<'_>| {
            if let BusEvent::Envelope(bytes) = event {
                let envelope = Envelope::decode(bytes).expect("engines publish valid envelopes");
                received.lock().unwrap().push(envelope);
            }
            inbox(event);
        });
        self.inner.start(spy, always);
    }

    fn publish(&self, channel: String, envelope: Vec<u8>) -> Result<(), BusError> {
        self.inner.publish(channel, envelope)
    }

    fn publish_counted(&self, channel: String, envelope: Vec<u8>) -> CountFuture {
        self.inner.publish_counted(channel, envelope)
    }

    fn update_interest(&self, subscribe: Vec<String>, unsubscribe: Vec<String>) -> BusFuture {
        self.inner.update_interest(subscribe, unsubscribe)
    }

    fn status(&self) -> BusStatus {
        self.inner.status()
    }
}

#[tokio::test]
async fn channel_interest_is_reference_counted() {
    let hub = MemoryHub::new();
    let a = node(&hub, "a", RejectAll);
    let spy = Spy::new(hub.bus());
    let b = Realtime::clustered(
        RejectAll,
        RealtimeConfig::default(),
        cluster(&hub, "b", spy.clone()),
    );
    let topic = Route::Topic(Topic::parse("feed").unwrap());
    let other = Route::Topic(Topic::parse("other").unwrap());
    let mut a_sub = TestConnection::connect(&a, "alice", &[]);
    let mut b1 = TestConnection::connect(&b, "bob", &[]);
    let mut b2 = TestConnection::connect(&b, "carol", &[]);
    assert_eq!(a.subscribe(a_sub.id(), "feed").await, Ok(true));
    assert_eq!(b.subscribe(b1.id(), "feed").await, Ok(true));
    assert_eq!(a.subscribe(b2.id(), "feed").await, Ok(true));
    assert_eq!(b.subscribe(b2.id(), "other").await, Ok(true));

    // Two subscribers on b: b receives each publish once and fans it out.
    assert_eq!(a.publish("feed", msg(1)), relayed(1));
    assert_eq!(spy.messages(&topic), 1);
    assert_eq!(received(&mut b1), [1]);
    assert_eq!(received(&mut b2), [1]);

    // One subscriber left on b: still received.
    assert_eq!(b.unsubscribe(b1.id(), "feed").await, Ok(true));
    assert_eq!(a.publish("feed", msg(2)), relayed(1));
    assert_eq!(spy.messages(&topic), 2);
    assert_eq!(received(&mut b2), [2]);

    // The last one leaves (unsubscribed from a): b no longer receives the topic at
    // all, while a's own subscriber and b's other topic are unaffected.
    assert_eq!(a.unsubscribe(b2.id(), "feed").await, Ok(true));
    assert_eq!(b.topics(), topics(&[("other", 1)]));
    assert_eq!(a.publish("feed", msg(3)), relayed(1));
    assert_eq!(spy.messages(&topic), 2, "b still receives the topic");
    assert_eq!(a.publish("other", msg(4)), relayed(0));
    assert_eq!(spy.messages(&other), 1);
    assert_eq!(received(&mut b1), Vec::<u64>::new());
    assert_eq!(received(&mut b2), [4]);
    assert_eq!(received(&mut a_sub), [1, 2, 3]);

    // Subscribing again brings the topic back.
    assert_eq!(a.subscribe(b1.id(), "feed").await, Ok(true));
    assert_eq!(a.publish("feed", msg(5)), relayed(1));
    assert_eq!(spy.messages(&topic), 3);
    assert_eq!(received(&mut b1), [5]);
    assert_eq!(received(&mut a_sub), [5]);

    // A departing connection releases its topics too.
    drop(b1);
    assert_eq!(a.publish("feed", msg(6)), relayed(1));
    assert_eq!(spy.messages(&topic), 3);
    assert_eq!(received(&mut a_sub), [6]);

    // User and role channels are counted per connection the same way.
    let user = Route::User("dave".into());
    let role = Route::Role("ops".into());
    let d1 = TestConnection::connect(&b, "dave", &["ops"]);
    let mut d2 = TestConnection::connect(&b, "dave", &["ops"]);
    assert_eq!(a.send_to_user("dave", msg(7)), relayed(0));
    assert_eq!(a.send_to_role("ops", msg(8)), relayed(0));
    assert_eq!((spy.messages(&user), spy.messages(&role)), (1, 1));
    drop(d1);
    assert_eq!(a.send_to_user("dave", msg(9)), relayed(0));
    assert_eq!(a.send_to_role("ops", msg(10)), relayed(0));
    assert_eq!((spy.messages(&user), spy.messages(&role)), (2, 2));
    assert_eq!(received(&mut d2), [7, 8, 9, 10]);
    drop(d2);
    assert_eq!(a.send_to_user("dave", msg(11)), relayed(0));
    assert_eq!(a.send_to_role("ops", msg(12)), relayed(0));
    assert_eq!((spy.messages(&user), spy.messages(&role)), (2, 2));

    // Nothing broke: b still takes part in the cluster.
    assert_eq!(a.broadcast(msg(13)), relayed(1));
    assert_eq!(received(&mut b2), [13]);
    assert_eq!(received(&mut a_sub), [13]);
    assert_eq!(b.send_to_user("alice", msg(14)), relayed(0));
    assert_eq!(received(&mut a_sub), [14]);
}

#[tokio::test]
async fn one_publishers_messages_arrive_in_order() {
    const N: u64 = 500;
    let (a, b) = pair();
    let mut b_bob = TestConnection::connect(&b, "bob", &[]);
    let mut b_other = TestConnection::connect(&b, "other", &[]);
    assert_eq!(a.subscribe(b_bob.id(), "seq").await, Ok(true));

    // Through several channels (connection, user, topic): one order.
    for n in 0..N {
        let sent = match n % 3 {
            0 => a.send_to_connection(b_bob.id(), msg(n)),
            1 => a.send_to_user("bob", msg(n)),
            _ => a.publish("seq", msg(n)),
        };
        assert_eq!(sent, relayed(0), "message {n}");
    }
    for n in 0..N {
        let got = recv(&mut b_bob).await.expect("a message");
        assert_eq!(got["n"], n, "{got}");
    }
    assert_eq!(b_bob.try_recv(), None);
    assert_eq!(b_bob.close_code(), None);
    assert_eq!(received(&mut b_other), Vec::<u64>::new());
}

/// A clustered engine embedded in an axum app on a free local port.
struct Node {
    rt: Realtime,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl Node {
    async fn start(hub: &MemoryHub, name: &str, config: RealtimeConfig) -> Node {
        let verifier = JwtVerifier::hs256(SECRET, ClaimRules::default()).expect("valid secret");
        let rt = Realtime::clustered(verifier, config, cluster(hub, name, hub.bus()));
        let (addr, server) = support::serve(&rt).await;
        Node { rt, addr, server }
    }

    /// Connects `user`; returns the client and its connection id, after the welcome.
    async fn connect(&self, user: &str) -> (Ws, ConnectionId) {
        let url = format!("ws://{}/ws?token={}", self.addr, token(user));
        let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("handshake in time")
            .expect("handshake accepted");
        let welcome = next_json(&mut ws).await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        assert_eq!(welcome["user_id"], user);
        let id = welcome["connection_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("welcome carries a UUID connection_id: {welcome}"));
        (ws, id)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn token(user: &str) -> String {
    let now = realtime::unix_seconds(SystemTime::now());
    let claims = json!({"sub": user, "roles": [], "iat": now, "exp": now + 3600});
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .expect("token signs")
}

async fn command(ws: &mut Ws, frame: Value) -> Value {
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
    next_json(ws).await
}

/// Asserts nothing is pending: a ping's pong is the next frame.
async fn assert_nothing_pending(ws: &mut Ws) {
    assert_eq!(
        command(ws, json!({"action": "ping", "ref": "probe"})).await,
        json!({"type": "pong", "ref": "probe"}),
        "unexpected frame before the pong"
    );
}

#[tokio::test]
async fn socket_clients_are_reached_across_nodes() {
    let hub = MemoryHub::new();
    let publishing = RealtimeConfig {
        topic_policy: TopicPolicy {
            publish: vec![PublishRule::new("chat:*")],
            ..Default::default()
        },
        ..Default::default()
    };
    let a = Node::start(&hub, "a", publishing).await;
    let b = Node::start(&hub, "b", RealtimeConfig::default()).await;
    let (mut bob, bob_id) = b.connect("bob").await;
    let (mut alice, alice_id) = a.connect("alice").await;
    assert!(b.rt.is_local(&bob_id) && !a.rt.is_local(&bob_id));
    assert_eq!(bob_id.get_version_num(), 8);

    // The welcome means "reachable from every node".
    assert_eq!(a.rt.send_to_user("bob", json!({"type": "dm"})), relayed(0));
    assert_eq!(next_json(&mut bob).await["type"], "dm");

    let ack = command(
        &mut bob,
        json!({"action": "subscribe", "topic": "chat:x", "ref": "1"}),
    )
    .await;
    assert_eq!(
        ack,
        json!({"type": "subscribed", "topic": "chat:x", "ref": "1"})
    );
    assert_eq!(
        a.rt.publish("chat:x", json!({"type": "chat", "text": "from a"})),
        relayed(0)
    );
    let got = next_json(&mut bob).await;
    assert_eq!(
        got,
        json!({"type": "chat", "text": "from a", "topic": "chat:x", "timestamp": got["timestamp"]})
    );
    assert!(got["timestamp"].is_string(), "{got}");

    // A client on a publishes; its reply reports the relay, bob receives it.
    let published = command(
        &mut alice,
        json!({
            "action": "publish", "topic": "chat:x", "ref": "p",
            "message": {"type": "chat", "text": "hi bob"}
        }),
    )
    .await;
    assert_eq!(
        published,
        json!({"type": "published", "ref": "p", "delivered": 0, "relayed": true})
    );
    let got = next_json(&mut bob).await;
    assert_eq!(
        (&got["text"], &got["topic"]),
        (&json!("hi bob"), &json!("chat:x"))
    );
    assert_nothing_pending(&mut bob).await;
    assert_nothing_pending(&mut alice).await;

    // The directory lists both sockets under their nodes.
    let view = cluster_view(&a.rt).await;
    assert_eq!(view, expected_view(&[("a", &a.rt), ("b", &b.rt)]));
    let labels: Vec<(ConnectionId, &str, Vec<String>)> = view
        .iter()
        .map(|e| {
            (
                e.connection.id,
                e.node.as_str(),
                e.connection.topics.clone(),
            )
        })
        .collect();
    let mut want = vec![
        (alice_id, "a", vec![]),
        (bob_id, "b", vec!["chat:x".to_owned()]),
    ];
    want.sort_by_key(|w| w.0);
    assert_eq!(labels, want);

    // A connection-targeted send, then a disconnect, both from a.
    assert_eq!(
        a.rt.send_to_connection(bob_id, json!({"type": "last"})),
        relayed(0)
    );
    assert_eq!(a.rt.disconnect(bob_id).await, Ok(true));
    assert_eq!(next_json(&mut bob).await["type"], "last");
    let close = loop {
        match next_message(&mut bob).await {
            Message::Close(frame) => break frame.expect("a close frame with a code"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected the close frame, got {other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), CloseCode::ForceDisconnect.code());
    wait_for_count(&b.rt, 0).await;
    assert_eq!(a.rt.disconnect(bob_id).await, Ok(false));
    assert_eq!(a.rt.publish("chat:x", json!({"type": "chat"})), relayed(0));
    assert_nothing_pending(&mut alice).await;
}

#[test]
fn requests_crossing_between_two_nodes_do_not_deadlock() {
    // The hub delivers inside the publishing call, so node a answers b's request
    // while b is in the middle of publishing, and vice versa, on two threads at once.
    const ROUNDS: usize = 2000;
    let (a, b) = pair();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _entered = runtime.enter();
    let a_conn = TestConnection::connect(&a, "alice", &[]);
    let b_conn = TestConnection::connect(&b, "bob", &[]);
    let start = Arc::new(std::sync::Barrier::new(2));
    let (done_tx, done) = std::sync::mpsc::channel();
    for (from, owner) in [(a.clone(), b_conn.id()), (b.clone(), a_conn.id())] {
        let (start, done_tx) = (start.clone(), done_tx.clone());
        std::thread::spawn(move || {
            let local = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            start.wait();
            let outcome = local.block_on(async {
                for round in 0..ROUNDS {
                    // Unknown on the owning node: answered, and nothing piles up.
                    let unknown = unknown_on(owner);
                    let got = from.send_json_confirmed(unknown, br#"{"type":"x"}"#).await;
                    if got != reply(false, false) {
                        return Err(format!("round {round}: {got:?}"));
                    }
                    if from.disconnect(unknown).await != Ok(false) {
                        return Err(format!("round {round}: disconnect"));
                    }
                }
                from.send_json_confirmed(owner, br#"{"type":"x","n":1}"#)
                    .await
                    .map_err(|e| e.to_string())
            });
            let _ = done_tx.send(outcome);
        });
    }
    for _ in 0..2 {
        let outcome = done
            .recv_timeout(Duration::from_secs(20))
            .expect("both threads finish: no deadlock");
        assert_eq!(
            outcome,
            Ok(ControlReply {
                found: true,
                changed: true
            })
        );
    }
    for mut conn in [a_conn, b_conn] {
        assert_eq!(received(&mut conn), [1]);
    }
}
