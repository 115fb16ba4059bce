//! Presence through the library mounted in a real axum server, with real
//! WebSocket clients: `presence` and `presence_stats` following connects,
//! subscribes, unsubscribes and dropped sockets; paging that returns every
//! member once; the ACL; `join`/`leave` frames on one engine and across two
//! engines on a MemoryHub (one of them crashing); and `user.online` /
//! `user.offline` events with their grace. Expectations come from the test's
//! own tally of who it connected and subscribed, never from the engine.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::SinkExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use prometheus_client::registry::Registry;
use realtime::presence::PresenceSettings;
use realtime::testing::TestConnection;
use realtime::{
    ClaimRules, ClusterConfig, JwtVerifier, MemoryHub, MemoryPresence, PresenceQuery,
    PresenceQueryError, PresenceStore, Realtime, RealtimeConfig,
};
use realtime_core::{
    Access, EventKind, Identity, LeaseRules, Namespace, PresenceMode, Rules, TopicPolicy,
};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

mod support;

use support::{WAIT, Ws, next_json};

const SECRET: &[u8] = b"presence-test-secret";

/// `room:..` keeps presence with join/leave frames, `lobby:..` presence only,
/// `private:{sub}` presence (subscribe: owner only), `plain:..` none.
fn policy() -> TopicPolicy {
    let open = || Rules {
        subscribe: Access::Authenticated,
        publish: Access::Authenticated,
    };
    let namespaces = vec![
        Namespace::new("room", open())
            .unwrap()
            .with_presence(Some(PresenceMode { join_leave: true })),
        Namespace::new("lobby", open())
            .unwrap()
            .with_presence(Some(PresenceMode { join_leave: false })),
        Namespace::new(
            "private:{sub}",
            Rules {
                subscribe: Access::Owner,
                publish: Access::Nobody,
            },
        )
        .unwrap()
        .with_presence(Some(PresenceMode::default())),
        Namespace::new("plain", open()).unwrap(),
    ];
    TopicPolicy::new(namespaces, Rules::default()).unwrap()
}

fn config() -> RealtimeConfig {
    RealtimeConfig {
        topic_policy: policy(),
        ..RealtimeConfig::default()
    }
}

struct App {
    rt: Realtime,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl App {
    async fn serve(rt: Realtime) -> App {
        let (addr, server) = support::serve(&rt).await;
        App { rt, addr, server }
    }

    async fn start() -> App {
        App::with(config()).await
    }

    async fn with(config: RealtimeConfig) -> App {
        App::serve(Realtime::new(verifier(), config)).await
    }

    /// Connects `user` (metadata `{"name": "<user>-name"}`) and returns the
    /// socket and its connection id.
    async fn connect(&self, user: &str) -> (Ws, String) {
        connect(self.addr, user).await
    }

    async fn wait_for_connections(&self, n: usize) {
        let mut count = self.rt.watch_connection_count();
        tokio::time::timeout(WAIT, count.wait_for(|c| *c == n))
            .await
            .expect("connection count in time")
            .expect("engine alive");
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn verifier() -> JwtVerifier {
    JwtVerifier::hs256(SECRET, ClaimRules::default()).unwrap()
}

fn token(user: &str) -> String {
    let now = realtime::unix_seconds(SystemTime::now());
    let claims =
        json!({"sub": user, "iat": now, "exp": now + 3600, "name": format!("{user}-name")});
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

async fn connect(addr: SocketAddr, user: &str) -> (Ws, String) {
    let url = format!("ws://{addr}/ws?token={}", token(user));
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("handshake in time")
        .expect("handshake accepted");
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["type"], "welcome");
    let id = welcome["connection_id"].as_str().unwrap().to_owned();
    (ws, id)
}

/// Drops the TCP connection without a close frame, as a crashed browser would.
fn drop_tcp(ws: Ws) {
    drop(ws.into_inner());
}

async fn command(ws: &mut Ws, frame: Value) -> Value {
    ws.send(Message::text(frame.to_string())).await.unwrap();
    next_json(ws).await
}

async fn subscribe(ws: &mut Ws, topic: &str) {
    let reply = command(
        ws,
        json!({"action": "subscribe", "topic": topic, "ref": "s"}),
    )
    .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
}

async fn unsubscribe(ws: &mut Ws, topic: &str) {
    let reply = command(
        ws,
        json!({"action": "unsubscribe", "topic": topic, "ref": "u"}),
    )
    .await;
    assert_eq!(reply["type"], "unsubscribed", "{reply}");
}

/// Nothing else arrives before a pong: no frame was sent that should not be.
async fn expect_quiet(ws: &mut Ws) {
    let pong = command(ws, json!({"action": "ping", "ref": "q"})).await;
    assert_eq!(pong["type"], "pong", "expected nothing more, got {pong}");
}

/// user → connection ids, as the test tallies them.
type Tally = BTreeMap<String, BTreeSet<String>>;

/// Reads every page of `topic`'s presence over the socket with `limit` and
/// returns the members, checking each page's order and shape on the way. Each
/// member must appear once over the whole walk.
async fn walk(ws: &mut Ws, topic: &str, limit: u64) -> (Tally, usize) {
    walk_expecting(ws, topic, limit, false).await
}

/// As [`walk`], every page saying it is `degraded` (or not).
async fn walk_expecting(ws: &mut Ws, topic: &str, limit: u64, degraded: bool) -> (Tally, usize) {
    let mut tally = Tally::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    let mut last: Option<(String, String)> = None;
    loop {
        let mut frame = json!({"action": "presence", "topic": topic, "ref": pages, "limit": limit});
        if let Some(c) = &cursor {
            frame["cursor"] = json!(c);
        }
        let page = command(ws, frame).await;
        assert_eq!(page["type"], "presence", "{page}");
        assert_eq!(page["topic"], topic);
        assert_eq!(page["ref"], pages);
        assert_eq!(page.get("degraded").is_some(), degraded, "{page}");
        if degraded {
            assert_eq!(page["degraded"], true);
        }
        pages += 1;
        let users = page["users"].as_array().expect("users");
        let on_page: usize = users
            .iter()
            .map(|u| u["connections"].as_array().unwrap().len())
            .sum();
        assert!(on_page as u64 <= limit, "{page}");
        for user in users {
            let user_id = user["user_id"].as_str().unwrap().to_owned();
            let connections = user["connections"].as_array().unwrap();
            assert!(!connections.is_empty());
            for c in connections {
                let id = c["connection_id"].as_str().unwrap().to_owned();
                assert!(c["connected_at"].is_string(), "{c}");
                let key = (user_id.clone(), id.clone());
                if let Some(prev) = &last {
                    assert!(
                        prev < &key,
                        "ordered by user, then connection: {prev:?} {key:?}"
                    );
                }
                last = Some(key);
                assert!(
                    tally.entry(user_id.clone()).or_default().insert(id),
                    "listed twice: {c}"
                );
            }
        }
        match page.get("cursor") {
            Some(c) => {
                assert_eq!(on_page as u64, limit, "only a full page has a next one");
                cursor = Some(c.as_str().unwrap().to_owned());
            }
            None => return (tally, pages),
        }
    }
}

async fn stats(ws: &mut Ws, topic: &str) -> (u64, u64) {
    let reply = command(
        ws,
        json!({"action": "presence_stats", "topic": topic, "ref": "st"}),
    )
    .await;
    assert_eq!(reply["type"], "presence_stats", "{reply}");
    assert_eq!(reply["ref"], "st");
    assert!(reply.get("degraded").is_none(), "{reply}");
    (
        reply["connections"].as_u64().unwrap(),
        reply["users"].as_u64().unwrap(),
    )
}

fn counts(tally: &Tally) -> (u64, u64) {
    let connections = tally.values().map(|c| c.len() as u64).sum();
    (connections, tally.len() as u64)
}

fn add(tally: &mut Tally, user: &str, id: &str) {
    tally.entry(user.into()).or_default().insert(id.into());
}

fn remove(tally: &mut Tally, user: &str, id: &str) {
    let ids = tally.get_mut(user).unwrap();
    ids.remove(id);
    if ids.is_empty() {
        tally.remove(user);
    }
}

/// Checks both the socket and the library answers against the tally.
async fn expect_presence(app: &App, observer: &mut Ws, topic: &str, expected: &Tally) {
    let (listed, _) = walk(observer, topic, 100).await;
    assert_eq!(&listed, expected);
    assert_eq!(stats(observer, topic).await, counts(expected));
    let page = app
        .rt
        .presence(topic, PresenceQuery::default())
        .await
        .unwrap();
    let from_api: Tally = page
        .users
        .iter()
        .map(|u| {
            let ids = u.connections.iter().map(|c| c.connection_id.to_string());
            (u.user_id.clone(), ids.collect())
        })
        .collect();
    assert_eq!(&from_api, expected);
    let s = app.rt.presence_stats(topic).await.unwrap();
    assert_eq!((s.connections, s.users, s.degraded), {
        let (c, u) = counts(expected);
        (c, u, false)
    });
}

#[tokio::test]
async fn presence_follows_subscribes_unsubscribes_and_dropped_sockets() {
    let app = App::start().await;
    let (mut observer, _) = app.connect("observer").await;
    let topic = "lobby:1";
    let mut expected = Tally::new();
    expect_presence(&app, &mut observer, topic, &expected).await;

    let (mut alice1, a1) = app.connect("alice").await;
    let (mut alice2, a2) = app.connect("alice").await;
    let (mut bob, b) = app.connect("bob").await;
    for (ws, user, id) in [
        (&mut alice1, "alice", &a1),
        (&mut alice2, "alice", &a2),
        (&mut bob, "bob", &b),
    ] {
        subscribe(ws, topic).await;
        add(&mut expected, user, id);
    }
    expect_presence(&app, &mut observer, topic, &expected).await;

    // Shape: info is the token's metadata claims; connected_at as in the welcome.
    let page = command(
        &mut observer,
        json!({"action": "presence", "topic": topic, "ref": "p"}),
    )
    .await;
    let alice = &page["users"][0];
    assert_eq!(alice["user_id"], "alice");
    assert_eq!(
        alice["connections"][0]["info"],
        json!({"name": "alice-name"})
    );
    assert!(page.get("cursor").is_none(), "one page: {page}");

    // Online status, cluster-wide (one node): observer, alice ×2, bob.
    let online = app.rt.online_stats().await;
    assert_eq!(
        (online.users, online.connections, online.degraded),
        (3, 4, false)
    );
    let user = app.rt.user_presence("alice").await;
    assert_eq!((user.online, user.connections), (true, 2));
    assert!(user.last_seen.is_some(), "online: now");

    unsubscribe(&mut bob, topic).await;
    remove(&mut expected, "bob", &b);
    expect_presence(&app, &mut observer, topic, &expected).await;

    // An abrupt drop: the member is gone once the server notices the socket is.
    drop_tcp(alice2);
    remove(&mut expected, "alice", &a2);
    app.wait_for_connections(3).await;
    expect_presence(&app, &mut observer, topic, &expected).await;

    // A close frame from the last of alice's connections: she is offline, and
    // was last seen about now.
    alice1.close(None).await.unwrap();
    remove(&mut expected, "alice", &a1);
    app.wait_for_connections(2).await;
    expect_presence(&app, &mut observer, topic, &expected).await;
    let user = app.rt.user_presence("alice").await;
    assert_eq!((user.online, user.connections), (false, 0));
    assert!(
        user.last_seen.is_some(),
        "the store remembers when: {user:?}"
    );
    let nobody = app.rt.user_presence("nobody").await;
    assert_eq!((nobody.online, nobody.last_seen), (false, None));
    let json = serde_json::to_value(app.rt.user_presence("nobody").await).unwrap();
    assert_eq!(
        json,
        json!({"user_id": "nobody", "online": false, "connections": 0, "last_seen": null})
    );

    // The metrics count what happened: 3 joins; bob's unsubscribe and two closes.
    assert!(metric(&app.rt, "realtime_presence_joins_total 3"));
    assert!(metric(&app.rt, "realtime_presence_leaves_total 3"));
    assert!(metric(
        &app.rt,
        "realtime_presence_degraded_answers_total 0"
    ));
    drop(bob);
}

#[tokio::test]
async fn paging_returns_every_member_exactly_once() {
    let app = App::start().await;
    let topic = "lobby:big";
    let mut expected = Tally::new();
    let mut members = Vec::new();
    // 250 connections of 7 users, subscribed in an order unrelated to the
    // listing's.
    for i in 0..250u32 {
        let user = format!("user-{}", (i * 3) % 7);
        let conn = TestConnection::connect_identity(
            &app.rt,
            Identity {
                user_id: user.clone(),
                roles: Vec::new(),
                metadata: Default::default(),
                expires_at: None,
            },
        );
        assert!(app.rt.subscribe(conn.id(), topic).await.unwrap());
        add(&mut expected, &user, &conn.id().to_string());
        members.push(conn);
    }
    let (mut observer, _) = app.connect("observer").await;
    let (listed, pages) = walk(&mut observer, topic, 7).await;
    assert_eq!(listed, expected);
    assert_eq!(pages, 250usize.div_ceil(7));
    let (listed, pages) = walk(&mut observer, topic, 1000).await;
    assert_eq!((listed, pages), (expected.clone(), 1));
    assert_eq!(stats(&mut observer, topic).await, (250, 7));

    // The library walks the same way.
    let mut seen = BTreeSet::new();
    let mut cursor = None;
    loop {
        let page = app
            .rt
            .presence(
                topic,
                PresenceQuery {
                    limit: Some(9),
                    cursor,
                },
            )
            .await
            .unwrap();
        for u in &page.users {
            for c in &u.connections {
                assert!(seen.insert((u.user_id.clone(), c.connection_id)));
            }
        }
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 250);

    // Out-of-range limits and cursors the server never gave out are refused.
    for (frame, what) in [
        (
            json!({"action":"presence","topic":topic,"limit":0,"ref":"x"}),
            "limit 0",
        ),
        (
            json!({"action":"presence","topic":topic,"limit":1001,"ref":"x"}),
            "limit 1001",
        ),
        (
            json!({"action":"presence","topic":topic,"cursor":"not a cursor","ref":"x"}),
            "cursor",
        ),
    ] {
        let reply = command(&mut observer, frame).await;
        assert_eq!(
            (
                reply["type"].clone(),
                reply["code"].clone(),
                reply["ref"].clone()
            ),
            (json!("error"), json!("bad_request"), json!("x")),
            "{what}: {reply}"
        );
    }
    let bad = |limit, cursor: Option<&str>| PresenceQuery {
        limit,
        cursor: cursor.map(str::to_owned),
    };
    assert_eq!(
        app.rt.presence(topic, bad(Some(0), None)).await,
        Err(PresenceQueryError::BadLimit)
    );
    assert_eq!(
        app.rt.presence(topic, bad(None, Some("!"))).await,
        Err(PresenceQueryError::BadCursor)
    );

    // Members leave as their connections go.
    members.truncate(100);
    app.wait_for_connections(101).await;
    assert_eq!(
        stats(&mut observer, topic).await.0,
        100,
        "150 connections closed"
    );
}

#[tokio::test]
async fn presence_is_for_whoever_may_subscribe() {
    let app = App::start().await;
    let (mut alice, alice_id) = app.connect("alice").await;
    let (mut bob, _) = app.connect("bob").await;
    subscribe(&mut alice, "private:alice").await;

    // Alice may subscribe to her own topic: she may read it, subscribed or not.
    let page = command(
        &mut alice,
        json!({"action": "presence", "topic": "private:alice", "ref": "a"}),
    )
    .await;
    assert_eq!(page["type"], "presence", "{page}");
    assert_eq!(
        page["users"][0]["connections"][0]["connection_id"],
        alice_id
    );
    let (mut alice_unsubscribed, _) = app.connect("alice").await;
    assert_eq!(
        stats(&mut alice_unsubscribed, "private:alice").await,
        (1, 1)
    );

    // Bob may not subscribe to alice's topic: refused, whatever he asks.
    for action in ["presence", "presence_stats"] {
        let reply = command(
            &mut bob,
            json!({"action": action, "topic": "private:alice", "ref": "b"}),
        )
        .await;
        assert_eq!(
            (
                reply["type"].clone(),
                reply["code"].clone(),
                reply["ref"].clone()
            ),
            (json!("error"), json!("forbidden"), json!("b")),
            "{action}: {reply}"
        );
        let reply = command(
            &mut bob,
            json!({"action": action, "topic": "plain:x", "ref": "n"}),
        )
        .await;
        assert_eq!(reply["code"], "no_presence", "{action}: {reply}");
        let reply = command(
            &mut bob,
            json!({"action": action, "topic": "no spaces", "ref": "i"}),
        )
        .await;
        assert_eq!(reply["code"], "invalid_topic", "{action}: {reply}");
    }
    assert_eq!(
        app.rt.presence("plain:x", PresenceQuery::default()).await,
        Err(PresenceQueryError::NoPresence)
    );
    assert!(matches!(
        app.rt.presence_stats("no spaces").await,
        Err(PresenceQueryError::InvalidTopic(_))
    ));
}

/// The next frame must be `kind` about `user`'s connection `id` on `topic`.
async fn expect_membership(ws: &mut Ws, kind: &str, topic: &str, user: &str, id: &str) {
    assert_eq!(
        next_json(ws).await,
        json!({"type": kind, "topic": topic, "user_id": user, "connection_id": id}),
    );
}

#[tokio::test]
async fn join_and_leave_reach_the_other_subscribers_only() {
    let app = App::start().await;
    let topic = "room:7";
    let (mut carol, _) = app.connect("carol").await;
    subscribe(&mut carol, topic).await;
    subscribe(&mut carol, "lobby:7").await;

    let (mut alice, alice_id) = app.connect("alice").await;
    subscribe(&mut alice, topic).await;
    expect_membership(&mut carol, "join", topic, "alice", &alice_id).await;
    expect_quiet(&mut alice).await;

    // A presence topic without join_leave sends nothing.
    subscribe(&mut alice, "lobby:7").await;
    unsubscribe(&mut alice, "lobby:7").await;
    expect_quiet(&mut carol).await;

    unsubscribe(&mut alice, topic).await;
    expect_membership(&mut carol, "leave", topic, "alice", &alice_id).await;
    // Subscribing again joins again; an abrupt drop leaves.
    subscribe(&mut alice, topic).await;
    expect_membership(&mut carol, "join", topic, "alice", &alice_id).await;
    drop_tcp(alice);
    expect_membership(&mut carol, "leave", topic, "alice", &alice_id).await;

    // A server-side subscribe joins too.
    let (mut bob, bob_id) = app.connect("bob").await;
    let id = bob_id.parse().unwrap();
    assert!(app.rt.subscribe(id, topic).await.unwrap());
    expect_membership(&mut carol, "join", topic, "bob", &bob_id).await;
    expect_quiet(&mut bob).await;
    expect_quiet(&mut carol).await;
}

/// An engine on its own runtime, so it can crash: shutting the runtime down
/// drops every task of the engine (sessions, server, presence heartbeat) without
/// any of them cleaning up, as a killed process would.
struct Node {
    runtime: Option<tokio::runtime::Runtime>,
    rt: Option<Realtime>,
    addr: SocketAddr,
}

impl Node {
    async fn start(hub: &MemoryHub, name: &str, config: RealtimeConfig) -> Node {
        Node::start_on(hub, name, config, Some(hub.presence())).await
    }

    async fn start_on(
        hub: &MemoryHub,
        name: &str,
        config: RealtimeConfig,
        presence: Option<Arc<MemoryPresence>>,
    ) -> Node {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let cluster = ClusterConfig {
            node_id: name.into(),
            prefix: "p".into(),
            bus: hub.bus(),
            directory: hub.directory(),
            history: None,
            presence: presence.map(|p| p as Arc<dyn PresenceStore>),
            request_timeout: Duration::from_secs(5),
        };
        let (rt, addr) = runtime
            .spawn(async move {
                let rt = Realtime::clustered(verifier(), config, cluster);
                let (addr, server) = support::serve(&rt).await;
                drop(server); // detached: it runs until the runtime ends
                (rt, addr)
            })
            .await
            .unwrap();
        Node {
            runtime: Some(runtime),
            rt: Some(rt),
            addr,
        }
    }

    fn rt(&self) -> &Realtime {
        self.rt.as_ref().unwrap()
    }

    /// Ends the engine without shutdown or leave.
    fn crash(&mut self) {
        self.rt = None;
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.crash();
    }
}

fn short_lease_config() -> RealtimeConfig {
    RealtimeConfig {
        presence: PresenceSettings {
            lease: LeaseRules::new(Duration::from_secs(3)).unwrap(),
            ..PresenceSettings::default()
        },
        ..config()
    }
}

#[tokio::test]
async fn across_two_engines_joins_travel_and_a_crashed_engine_leaves() {
    let hub = MemoryHub::new();
    // B first: the survivor starts the shared store.
    let b = Node::start(&hub, "b", short_lease_config()).await;
    let mut a = Node::start(&hub, "a", short_lease_config()).await;
    let topic = "room:x";
    let (mut carol, carol_id) = connect(b.addr, "carol").await;
    subscribe(&mut carol, topic).await;

    let (mut alice, alice_id) = connect(a.addr, "alice").await;
    let (mut dave, dave_id) = connect(a.addr, "dave").await;
    subscribe(&mut alice, topic).await;
    expect_membership(&mut carol, "join", topic, "alice", &alice_id).await;
    subscribe(&mut dave, topic).await;
    expect_membership(&mut carol, "join", topic, "dave", &dave_id).await;
    // A's subscribers hear of each other, and of nobody twice.
    expect_membership(&mut alice, "join", topic, "dave", &dave_id).await;
    expect_quiet(&mut alice).await;

    // Both engines list all three, from the shared store.
    let mut expected = Tally::new();
    add(&mut expected, "alice", &alice_id);
    add(&mut expected, "carol", &carol_id);
    add(&mut expected, "dave", &dave_id);
    let (listed, _) = walk(&mut carol, topic, 2).await;
    assert_eq!(listed, expected);
    let (listed, _) = walk(&mut alice, topic, 2).await;
    assert_eq!(listed, expected);
    assert_eq!(b.rt().online_stats().await.connections, 3);

    // A dies. Within the bound (plus the wait bound for a loaded machine) B's
    // subscriber gets a leave for each of A's members, once.
    let crashed = tokio::time::Instant::now();
    a.crash();
    drop((alice, dave));
    let bound = Duration::from_secs(3) + WAIT;
    let mut left = BTreeSet::new();
    for _ in 0..2 {
        let frame = tokio::time::timeout(bound, next_json(&mut carol))
            .await
            .expect("a leave within the bound");
        assert_eq!(frame["type"], "leave", "{frame}");
        assert_eq!(frame["topic"], topic);
        let user = frame["user_id"].as_str().unwrap().to_owned();
        let id = frame["connection_id"].as_str().unwrap().to_owned();
        assert!(left.insert((user, id)), "one leave each: {frame}");
    }
    assert!(crashed.elapsed() <= bound);
    let expected_left: BTreeSet<(String, String)> = [
        ("alice".to_owned(), alice_id.clone()),
        ("dave".to_owned(), dave_id.clone()),
    ]
    .into();
    assert_eq!(left, expected_left);
    expect_quiet(&mut carol).await;

    remove(&mut expected, "alice", &alice_id);
    remove(&mut expected, "dave", &dave_id);
    let (listed, _) = walk(&mut carol, topic, 2).await;
    assert_eq!(listed, expected);
    let online = b.rt().online_stats().await;
    assert_eq!((online.users, online.connections), (1, 1));
    assert!(!b.rt().user_presence("alice").await.online);

    assert!(metric(b.rt(), "realtime_presence_reaped_members_total 2"));
}

#[tokio::test]
async fn online_and_offline_events_are_debounced_by_the_grace() {
    let grace = Duration::from_millis(500);
    let app = App::with(RealtimeConfig {
        presence: PresenceSettings {
            offline_grace: grace,
            events: true,
            ..PresenceSettings::default()
        },
        ..config()
    })
    .await;
    let queue = app.rt.presence_events().expect("events are on");
    let next = || async {
        let e = tokio::time::timeout(WAIT, queue.next())
            .await
            .expect("an event in time")
            .expect("the queue answers");
        queue.done(&e.key).await.unwrap();
        e.event
    };

    let (alice, _) = app.connect("alice").await;
    let online = next().await;
    assert_eq!(
        (online.kind, online.user_id.as_deref()),
        (EventKind::UserOnline, Some("alice"))
    );
    assert!(online.topic.is_none() && !online.id.is_empty());

    // A reload: closed and back within the grace emits nothing.
    drop_tcp(alice);
    app.wait_for_connections(0).await;
    let (alice, _) = app.connect("alice").await;
    app.wait_for_connections(1).await;

    // Gone for good: one offline, no sooner than the grace after the close.
    let before_close = tokio::time::Instant::now();
    drop_tcp(alice);
    app.wait_for_connections(0).await;
    let offline = next().await;
    assert_eq!(
        (offline.kind, offline.user_id.as_deref()),
        (EventKind::UserOffline, Some("alice")),
        "the reload emitted nothing: {offline:?}"
    );
    assert!(before_close.elapsed() >= grace);
    assert_ne!(offline.id, online.id);

    // Nothing else about alice: the next event is bob's.
    let (bob, _) = app.connect("bob").await;
    let e = next().await;
    assert_eq!(
        (e.kind, e.user_id.as_deref()),
        (EventKind::UserOnline, Some("bob")),
        "{e:?}"
    );
    drop(bob);
    let e = next().await;
    assert_eq!(
        (e.kind, e.user_id.as_deref()),
        (EventKind::UserOffline, Some("bob")),
        "{e:?}"
    );
}

fn metric(rt: &Realtime, line: &str) -> bool {
    let mut registry = Registry::default();
    rt.register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text.lines().any(|l| l == line)
}

#[tokio::test]
async fn a_graceful_shutdown_leaves_at_once() {
    let hub = MemoryHub::new();
    let b = Node::start(&hub, "b", short_lease_config()).await;
    let a = Node::start(&hub, "a", short_lease_config()).await;
    let topic = "room:s";
    let (mut carol, carol_id) = connect(b.addr, "carol").await;
    subscribe(&mut carol, topic).await;
    let (mut alice, alice_id) = connect(a.addr, "alice").await;
    subscribe(&mut alice, topic).await;
    expect_membership(&mut carol, "join", topic, "alice", &alice_id).await;

    assert!(a.rt().shutdown(WAIT).await, "a clean shutdown");
    // Before any lease could run out: the leave came from alice's close, and the
    // store holds nothing of A's.
    expect_membership(&mut carol, "leave", topic, "alice", &alice_id).await;
    let (listed, _) = walk(&mut carol, topic, 10).await;
    let mut expected = Tally::new();
    add(&mut expected, "carol", &carol_id);
    assert_eq!(listed, expected);
    let online = b.rt().online_stats().await;
    assert_eq!((online.users, online.connections), (1, 1));
    assert!(metric(b.rt(), "realtime_presence_reaped_members_total 0"));
    drop(alice);
}

#[tokio::test]
async fn a_cluster_without_a_presence_store_answers_for_this_node_and_says_so() {
    let hub = MemoryHub::new();
    let a = Node::start_on(&hub, "a", config(), None).await;
    let b = Node::start_on(&hub, "b", config(), None).await;
    let topic = "room:d";
    let (mut carol, carol_id) = connect(b.addr, "carol").await;
    subscribe(&mut carol, topic).await;
    let mut on_a = Tally::new();
    let mut sockets = Vec::new();
    for user in ["alice", "dave", "alice"] {
        let (mut ws, id) = connect(a.addr, user).await;
        subscribe(&mut ws, topic).await;
        // join/leave frames still cross nodes: they ride the bus, not the store.
        expect_membership(&mut carol, "join", topic, user, &id).await;
        add(&mut on_a, user, &id);
        sockets.push(ws);
    }

    // Each node lists its own members only, page by page, and says so. (The
    // last to join heard of nobody; the others heard of those after them.)
    let last = &mut sockets[2];
    let (listed, pages) = walk_expecting(last, topic, 2, true).await;
    assert_eq!((listed, pages), (on_a.clone(), 2));
    let (listed, _) = walk_expecting(&mut carol, topic, 2, true).await;
    let mut on_b = Tally::new();
    add(&mut on_b, "carol", &carol_id);
    assert_eq!(listed, on_b);
    let reply = command(
        &mut sockets[2],
        json!({"action": "presence_stats", "topic": topic, "ref": "st"}),
    )
    .await;
    assert_eq!(
        reply,
        json!({"type": "presence_stats", "topic": topic, "ref": "st", "connections": 3, "users": 2, "degraded": true})
    );
    let stats = a.rt().presence_stats(topic).await.unwrap();
    assert_eq!(
        (stats.connections, stats.users, stats.degraded),
        (3, 2, true)
    );
    let online = a.rt().online_stats().await;
    assert_eq!(
        (online.users, online.connections, online.degraded),
        (2, 3, true)
    );
    let alice = b.rt().user_presence("alice").await;
    assert_eq!(
        (alice.online, alice.degraded),
        (false, true),
        "B cannot see A's"
    );
    // 2 pages on A, 1 stats frame, the stats, online and user answers: 5 on A.
    assert!(metric(a.rt(), "realtime_presence_degraded_answers_total 5"));
}

fn events_config(grace: Duration) -> RealtimeConfig {
    RealtimeConfig {
        presence: PresenceSettings {
            offline_grace: grace,
            events: true,
            ..short_lease_config().presence
        },
        ..short_lease_config()
    }
}

/// The next event of `queue`, marked done.
async fn next_event(queue: &dyn realtime::EventQueue) -> realtime_core::PresenceEvent {
    let e = tokio::time::timeout(WAIT, queue.next())
        .await
        .expect("an event in time")
        .expect("the queue answers");
    queue.done(&e.key).await.unwrap();
    e.event
}

#[tokio::test]
async fn offline_events_keep_coming_after_the_first_engine_of_a_hub_crashed() {
    let hub = MemoryHub::new();
    // A starts the shared store first, then dies: the survivor's users still
    // go offline once their grace runs out.
    let mut a = Node::start(&hub, "a", events_config(Duration::from_millis(300))).await;
    let b = Node::start(&hub, "b", events_config(Duration::from_millis(300))).await;
    let queue = b.rt().presence_events().expect("events are on");
    a.crash();

    let (alice, _) = connect(b.addr, "alice").await;
    let online = next_event(&*queue).await;
    assert_eq!(
        (online.kind, online.user_id.as_deref()),
        (EventKind::UserOnline, Some("alice"))
    );
    drop_tcp(alice);
    let offline = next_event(&*queue).await;
    assert_eq!(
        (offline.kind, offline.user_id.as_deref()),
        (EventKind::UserOffline, Some("alice")),
        "{offline:?}"
    );
}

#[tokio::test]
async fn a_walk_goes_on_whatever_the_length_of_the_user_ids() {
    let app = App::start().await;
    let topic = "lobby:long";
    let mut expected = Tally::new();
    let mut members = Vec::new();
    // Nothing bounds a token's `sub`: ids of a few KiB page like any other.
    for n in [2_500, 4_000, 6_000] {
        let user = format!("{}{n}", "u".repeat(n));
        let conn = TestConnection::connect(&app.rt, &user, &[]);
        assert!(app.rt.subscribe(conn.id(), topic).await.unwrap());
        add(&mut expected, &user, &conn.id().to_string());
        members.push(conn);
    }
    let (mut observer, _) = app.connect("observer").await;
    let (listed, pages) = walk(&mut observer, topic, 1).await;
    assert_eq!((listed, pages), (expected.clone(), 3));

    let mut seen = Tally::new();
    let mut cursor = None;
    loop {
        let query = PresenceQuery {
            limit: Some(1),
            cursor,
        };
        let page = app.rt.presence(topic, query).await.expect("the next page");
        for u in &page.users {
            for c in &u.connections {
                add(&mut seen, &u.user_id, &c.connection_id.to_string());
            }
        }
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn join_and_leave_frames_count_as_deliveries_on_every_node() {
    let hub = MemoryHub::new();
    let a = Node::start(&hub, "a", config()).await;
    let b = Node::start(&hub, "b", config()).await;
    let topic = "room:m";
    let (mut dave, _) = connect(a.addr, "dave").await;
    subscribe(&mut dave, topic).await;
    let (mut carol, _) = connect(b.addr, "carol").await;
    subscribe(&mut carol, topic).await;
    // Dave (on A) heard of carol: one frame from B, delivered on A.
    assert_eq!(next_json(&mut dave).await["type"], "join");
    let (mut alice, alice_id) = connect(a.addr, "alice").await;
    subscribe(&mut alice, topic).await;
    unsubscribe(&mut alice, topic).await;
    for ws in [&mut dave, &mut carol] {
        expect_membership(ws, "join", topic, "alice", &alice_id).await;
        expect_membership(ws, "leave", topic, "alice", &alice_id).await;
    }
    // Each node counts each frame it queued: A queued 3 to dave, B 2 to carol.
    assert!(metric(
        a.rt(),
        r#"realtime_deliveries_total{route="topic"} 3"#
    ));
    assert!(metric(
        b.rt(),
        r#"realtime_deliveries_total{route="topic"} 2"#
    ));
}
