//! History topics through the library mounted in a real axum server, with real
//! WebSocket clients: positions on `subscribed` and on messages, the `history`
//! command, recovery with `since` (while publishing goes on, after a dropped TCP
//! connection, past the window, after a reset), and two engines on a MemoryHub
//! agreeing on offsets. Every stream is checked against a sequence number the
//! publisher put in the message body.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use realtime::cluster::bus::Inbox;
use realtime::history::{AppendRequest, HistoryStore, PageFuture, PositionFuture, ReadRequest};
use realtime::{
    ClaimRules, ClusterConfig, HistoryQuery, JwtVerifier, MemoryHub, Realtime, RealtimeConfig,
    SendError,
};
use realtime_core::{Access, HistoryLimits, MessageError, Namespace, Position, Rules, TopicPolicy};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

mod support;

use support::{WAIT, Ws, next_json};

const SECRET: &[u8] = b"history-test-secret";

/// `feed:..` keeps 50 publications, `small:..` 5, `big:..` 2000, `private:{sub}`
/// 10 (subscribe: owner only); `plain:..` keeps none. Clients may publish on all.
fn config() -> RealtimeConfig {
    let open = || Rules {
        subscribe: Access::Authenticated,
        publish: Access::Authenticated,
    };
    let limits = |size| Some(HistoryLimits::new(size, Duration::from_secs(600)).unwrap());
    let namespaces = vec![
        Namespace::new("feed", open())
            .unwrap()
            .with_history(limits(50)),
        Namespace::new("small", open())
            .unwrap()
            .with_history(limits(5)),
        Namespace::new("big", open())
            .unwrap()
            .with_history(limits(2000)),
        Namespace::new(
            "private:{sub}",
            Rules {
                subscribe: Access::Owner,
                publish: Access::Nobody,
            },
        )
        .unwrap()
        .with_history(limits(10)),
        Namespace::new("plain", open()).unwrap(),
    ];
    RealtimeConfig {
        topic_policy: TopicPolicy::new(namespaces, Rules::default()).unwrap(),
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
        let verifier = JwtVerifier::hs256(SECRET, ClaimRules::default()).unwrap();
        App::serve(Realtime::new(verifier, config())).await
    }

    async fn on_hub(hub: &MemoryHub, name: &str) -> App {
        App::on_hub_with(hub, name, hub.history()).await
    }

    async fn on_hub_with(hub: &MemoryHub, name: &str, history: Arc<dyn HistoryStore>) -> App {
        let verifier = JwtVerifier::hs256(SECRET, ClaimRules::default()).unwrap();
        let cluster = ClusterConfig {
            node_id: name.into(),
            prefix: "h".into(),
            bus: hub.bus(),
            directory: hub.directory(),
            history: Some(history),
            presence: None,
            request_timeout: Duration::from_secs(5),
        };
        App::serve(Realtime::clustered(verifier, config(), cluster)).await
    }

    async fn connect(&self, user: &str) -> Ws {
        let url = format!("ws://{}/ws?token={}", self.addr, token(user));
        let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("handshake in time")
            .expect("handshake accepted");
        assert_eq!(next_json(&mut ws).await["type"], "welcome");
        ws
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

fn token(user: &str) -> String {
    let now = realtime::unix_seconds(SystemTime::now());
    let claims = json!({"sub": user, "iat": now, "exp": now + 3600});
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::text(frame.to_string())).await.unwrap();
}

/// Sends a command and returns the next frame (its reply, when nothing else is
/// queued before it).
async fn command(ws: &mut Ws, frame: Value) -> Value {
    send(ws, frame).await;
    next_json(ws).await
}

async fn subscribe(ws: &mut Ws, topic: &str, since: Option<&Position>) -> Value {
    let mut frame = json!({"action": "subscribe", "topic": topic, "ref": "s"});
    if let Some(since) = since {
        frame["since"] = json!({"offset": since.offset, "epoch": since.epoch});
    }
    let reply = command(ws, frame).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    assert_eq!(reply["ref"], "s");
    reply
}

fn position(frame: &Value) -> Position {
    Position {
        offset: frame["offset"].as_u64().expect("offset"),
        epoch: frame["epoch"].as_str().expect("epoch").to_owned(),
    }
}

/// Publishes `{"type":"n","seq":seq}` and returns its position.
async fn publish(rt: &Realtime, topic: &str, seq: u64) -> Position {
    rt.publish_confirmed(topic, json!({"type": "n", "seq": seq}))
        .await
        .expect("published")
        .position
        .expect("a history topic's publish has a position")
}

/// The next `n` messages on a topic; each must carry its position and a `seq`
/// equal to its offset (fresh topics: the publisher's tally and the store's agree).
async fn expect_seqs(ws: &mut Ws, topic: &str, seqs: impl IntoIterator<Item = u64>) -> Position {
    let mut last = None;
    for seq in seqs {
        let m = next_json(ws).await;
        assert_eq!(m["type"], "n", "expected seq {seq}, got {m}");
        assert_eq!(m["topic"], topic);
        assert_eq!(m["seq"], seq, "exactly once and in order: {m}");
        assert_eq!(m["offset"], seq, "{m}");
        last = Some(position(&m));
    }
    last.expect("at least one")
}

/// Nothing else arrives before a pong: nothing was duplicated or left over.
async fn expect_quiet(ws: &mut Ws) {
    let pong = command(ws, json!({"action": "ping", "ref": "q"})).await;
    assert_eq!(pong["type"], "pong", "expected nothing more, got {pong}");
}

#[tokio::test]
async fn subscribe_answers_the_position_and_messages_carry_it() {
    let app = App::start().await;
    let mut ws = app.connect("alice").await;
    let reply = subscribe(&mut ws, "feed:a", None).await;
    assert_eq!(reply["offset"], 0, "{reply}");
    let epoch = reply["epoch"].as_str().expect("an epoch").to_owned();
    assert!(reply.get("recovered").is_none(), "no since, no recovered");

    let p = publish(&app.rt, "feed:a", 1).await;
    assert_eq!(
        p,
        Position {
            offset: 1,
            epoch: epoch.clone()
        }
    );
    let m = next_json(&mut ws).await;
    assert_eq!(
        (m["offset"].clone(), m["epoch"].clone()),
        (json!(1), json!(epoch))
    );
    assert_eq!(m["topic"], "feed:a");
    assert!(m["timestamp"].is_string());

    // A client publish on a history topic is answered with the position.
    let published = command(
        &mut ws,
        json!({"action":"publish","topic":"feed:a","message":{"type":"n","seq":2},"ref":"p"}),
    )
    .await;
    // The reply and the delivery race on the same queue; take both, either order.
    let other = next_json(&mut ws).await;
    let (reply, delivered) = if published["type"] == "published" {
        (published, other)
    } else {
        (other, published)
    };
    assert_eq!(reply["type"], "published", "{reply}");
    assert_eq!(
        (reply["offset"].clone(), reply["epoch"].clone()),
        (json!(2), json!(epoch))
    );
    assert_eq!(delivered["seq"], 2);
    assert_eq!(delivered["offset"], 2);

    // The sync send on a single node knows the position at once.
    let d = app
        .rt
        .publish("feed:a", json!({"type":"n","seq":3}))
        .unwrap();
    assert_eq!(d.position.map(|p| p.offset), Some(3));
    expect_seqs(&mut ws, "feed:a", [3]).await;
}

#[tokio::test]
async fn since_on_a_topic_without_history_is_not_recovered() {
    let app = App::start().await;
    let mut ws = app.connect("alice").await;
    let since = Position {
        offset: 3,
        epoch: "x".into(),
    };
    let reply = subscribe(&mut ws, "plain:a", Some(&since)).await;
    assert_eq!(reply["recovered"], false);
    assert_eq!(reply["reason"], "no_history");
    assert!(
        reply.get("offset").is_none() && reply.get("epoch").is_none(),
        "{reply}"
    );
    let d = app.rt.publish("plain:a", json!({"type":"n"})).unwrap();
    assert_eq!(d.position, None);
    assert!(next_json(&mut ws).await.get("offset").is_none());
}

#[tokio::test]
async fn a_message_carrying_a_position_is_refused() {
    let app = App::start().await;
    let mut ws = app.connect("alice").await;
    for field in ["offset", "epoch"] {
        let mut message = json!({"type": "n"});
        message[field] = json!(1);
        let e = command(
            &mut ws,
            json!({"action":"publish","topic":"feed:a","message":message,"ref":"p"}),
        )
        .await;
        assert_eq!(e["type"], "error", "{e}");
        assert_eq!(e["code"], "invalid_message", "{e}");
        assert_eq!(e["ref"], "p");
        assert_eq!(
            app.rt.publish("feed:a", message.clone()),
            Err(SendError::InvalidMessage(MessageError::ReservedPosition))
        );
        assert_eq!(
            MessageError::ReservedPosition.code(),
            "invalid_message",
            "the HTTP API's code"
        );
        // Elsewhere the fields are the application's.
        assert!(app.rt.publish("plain:a", message).is_ok());
    }
    let page = app
        .rt
        .history("feed:a", HistoryQuery::default())
        .await
        .unwrap();
    assert!(page.publications.is_empty(), "nothing was stored");
}

#[tokio::test]
async fn the_history_command_pages_caps_and_checks_access() {
    let app = App::start().await;
    let mut ws = app.connect("alice").await;
    for seq in 1..=5 {
        publish(&app.rt, "feed:h", seq).await;
    }
    let h = command(
        &mut ws,
        json!({"action":"history","topic":"feed:h","limit":2,"ref":"h"}),
    )
    .await;
    assert_eq!(h["type"], "history", "{h}");
    assert_eq!(h["ref"], "h");
    assert_eq!(h["offset"], 5);
    let epoch = h["epoch"].as_str().unwrap().to_owned();
    let offsets = |h: &Value| -> Vec<u64> {
        h["publications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["offset"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(offsets(&h), [1, 2], "from the oldest held, at most limit");
    assert_eq!(h["publications"][0]["epoch"], epoch.as_str());
    assert_eq!(h["publications"][0]["seq"], 1);

    let h = command(
        &mut ws,
        json!({"action":"history","topic":"feed:h","since":{"offset":3,"epoch":epoch},"ref":"h"}),
    )
    .await;
    assert_eq!(offsets(&h), [4, 5]);
    assert_eq!(h["recovered"], true);

    let h = command(
        &mut ws,
        json!({"action":"history","topic":"feed:h","since":{"offset":3,"epoch":"other"},"ref":"h"}),
    )
    .await;
    assert_eq!(h["recovered"], false, "{h}");
    assert_eq!(offsets(&h), [1, 2, 3, 4, 5], "from the oldest held");

    for seq in 1..=1001 {
        app.rt
            .publish("big:h", json!({"type":"n","seq":seq}))
            .unwrap();
    }
    let h = command(
        &mut ws,
        json!({"action":"history","topic":"big:h","limit":5000,"ref":"h"}),
    )
    .await;
    assert_eq!(h["publications"].as_array().unwrap().len(), 1000, "capped");

    let e = command(
        &mut ws,
        json!({"action":"history","topic":"private:bob","ref":"x"}),
    )
    .await;
    assert_eq!(
        (e["type"].clone(), e["code"].clone()),
        (json!("error"), json!("forbidden")),
        "{e}"
    );
    let own = command(
        &mut ws,
        json!({"action":"history","topic":"private:alice","ref":"x"}),
    )
    .await;
    assert_eq!(own["type"], "history", "{own}");

    let e = command(
        &mut ws,
        json!({"action":"history","topic":"plain:h","ref":"x"}),
    )
    .await;
    assert_eq!(
        (e["code"].clone(), e["ref"].clone()),
        (json!("no_history"), json!("x")),
        "{e}"
    );
}

#[tokio::test]
async fn since_within_the_window_replays_exactly_the_missed_then_live_while_publishing() {
    let app = App::start().await;
    let mut first = app.connect("alice").await;
    subscribe(&mut first, "feed:r", None).await;
    for seq in 1..=10 {
        publish(&app.rt, "feed:r", seq).await;
    }
    let at = expect_seqs(&mut first, "feed:r", 1..=10).await;

    // A steady publisher keeps going while the second client recovers.
    const TOTAL: u64 = 45;
    let rt = app.rt.clone();
    let publisher = tokio::spawn(async move {
        for seq in 11..=TOTAL {
            publish(&rt, "feed:r", seq).await;
            tokio::task::yield_now().await;
        }
    });
    let mut second = app.connect("alice").await;
    let reply = subscribe(&mut second, "feed:r", Some(&at)).await;
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(reply["epoch"], at.epoch.as_str());
    expect_seqs(&mut second, "feed:r", 11..=TOTAL).await;
    publisher.await.unwrap();
    publish(&app.rt, "feed:r", TOTAL + 1).await;
    expect_seqs(&mut second, "feed:r", [TOTAL + 1]).await;
    expect_quiet(&mut second).await;
    expect_seqs(&mut first, "feed:r", 11..=TOTAL + 1).await;
}

#[tokio::test]
async fn a_client_whose_tcp_connection_dropped_recovers_exactly_what_it_missed() {
    let app = App::start().await;
    let mut ws = app.connect("alice").await;
    subscribe(&mut ws, "feed:d", None).await;
    for seq in 1..=10 {
        publish(&app.rt, "feed:d", seq).await;
    }
    let at = expect_seqs(&mut ws, "feed:d", 1..=10).await;
    // The socket goes away without a close frame: dropping the stream closes
    // the TCP connection and nothing else.
    drop(ws);
    app.wait_for_connections(0).await;
    for seq in 11..=30 {
        publish(&app.rt, "feed:d", seq).await;
    }
    let mut ws = app.connect("alice").await;
    let reply = subscribe(&mut ws, "feed:d", Some(&at)).await;
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(reply["offset"], 30);
    expect_seqs(&mut ws, "feed:d", 11..=30).await;
    for seq in 31..=35 {
        publish(&app.rt, "feed:d", seq).await;
    }
    expect_seqs(&mut ws, "feed:d", 31..=35).await;
    expect_quiet(&mut ws).await;
}

#[tokio::test]
async fn a_position_past_the_window_is_not_recovered_and_nothing_is_replayed() {
    let app = App::start().await;
    for seq in 1..=20 {
        publish(&app.rt, "small:w", seq).await;
    }
    let epoch = app
        .rt
        .history("small:w", HistoryQuery::default())
        .await
        .unwrap()
        .position
        .epoch;
    let mut ws = app.connect("alice").await;
    let since = Position { offset: 2, epoch };
    let reply = subscribe(&mut ws, "small:w", Some(&since)).await;
    assert_eq!(reply["recovered"], false, "{reply}");
    assert_eq!(reply["reason"], "trimmed");
    assert_eq!(reply["offset"], 20, "the current position");
    publish(&app.rt, "small:w", 21).await;
    expect_seqs(&mut ws, "small:w", [21]).await;

    let ahead = Position {
        offset: 99,
        epoch: since.epoch.clone(),
    };
    let mut other = app.connect("bob").await;
    let reply = subscribe(&mut other, "small:w", Some(&ahead)).await;
    assert_eq!(
        (reply["recovered"].clone(), reply["reason"].clone()),
        (json!(false), json!("ahead_of_top"))
    );
}

#[tokio::test]
async fn a_reset_starts_a_new_epoch_that_old_positions_cannot_recover() {
    let app = App::start().await;
    let mut ws = app.connect("alice").await;
    let old = position(&subscribe(&mut ws, "feed:e", None).await);
    for seq in 1..=3 {
        publish(&app.rt, "feed:e", seq).await;
    }
    let at = expect_seqs(&mut ws, "feed:e", 1..=3).await;
    let new = app.rt.reset_history("feed:e").await.unwrap();
    assert_eq!(new.offset, 0);
    assert_ne!(new.epoch, old.epoch);
    let notice = next_json(&mut ws).await;
    assert_eq!(notice["type"], "missed", "{notice}");
    assert_eq!(notice["reason"], "history_lost");
    assert_eq!(
        (notice["offset"].clone(), notice["epoch"].clone()),
        (json!(0), json!(new.epoch))
    );
    // Delivery goes on in the new epoch.
    publish(&app.rt, "feed:e", 1).await;
    expect_seqs(&mut ws, "feed:e", [1]).await;

    let mut late = app.connect("bob").await;
    let reply = subscribe(&mut late, "feed:e", Some(&at)).await;
    assert_eq!(reply["recovered"], false, "{reply}");
    assert_eq!(reply["reason"], "other_epoch");
    assert_eq!(
        (reply["offset"].clone(), reply["epoch"].clone()),
        (json!(1), json!(new.epoch))
    );
    expect_quiet(&mut late).await;
}

#[tokio::test]
async fn the_store_down_refuses_the_subscribe_and_the_publish() {
    // A cluster with history namespaces and no history store configured.
    let hub = MemoryHub::new();
    let verifier = JwtVerifier::hs256(SECRET, ClaimRules::default()).unwrap();
    let cluster = ClusterConfig {
        node_id: "n".into(),
        prefix: "h".into(),
        bus: hub.bus(),
        directory: hub.directory(),
        history: None,
        presence: None,
        request_timeout: Duration::from_secs(5),
    };
    let app = App::serve(Realtime::clustered(verifier, config(), cluster)).await;
    let mut ws = app.connect("alice").await;
    let e = command(
        &mut ws,
        json!({"action":"subscribe","topic":"feed:x","ref":"s"}),
    )
    .await;
    assert_eq!(
        (e["type"].clone(), e["code"].clone()),
        (json!("error"), json!("history_unavailable")),
        "{e}"
    );
    assert!(app.rt.topics().is_empty(), "not left subscribed");
    assert!(matches!(
        app.rt.publish("feed:x", json!({"type":"n"})),
        Err(SendError::History(_))
    ));
    // Topics without history are unaffected.
    let reply = subscribe(&mut ws, "plain:x", None).await;
    assert!(reply.get("offset").is_none());
}

#[tokio::test]
async fn two_engines_on_a_memory_hub_agree_on_offsets() {
    let hub = MemoryHub::new();
    assert!(
        Arc::ptr_eq(&hub.history(), &hub.history()),
        "one store per hub"
    );
    let a = App::on_hub(&hub, "a").await;
    let b = App::on_hub(&hub, "b").await;
    let mut on_a = a.connect("alice").await;
    let mut on_b = b.connect("bob").await;
    let pa = position(&subscribe(&mut on_a, "feed:c", None).await);
    let pb = position(&subscribe(&mut on_b, "feed:c", None).await);
    assert_eq!(pa, pb, "one position for the topic");
    const N: u64 = 40;
    for seq in 1..=N {
        let node = if seq % 2 == 0 { &a.rt } else { &b.rt };
        let d = node
            .publish_confirmed("feed:c", json!({"type":"n","seq":seq}))
            .await
            .unwrap();
        assert!(d.relayed);
        assert_eq!(d.position.map(|p| p.offset), Some(seq));
    }
    expect_seqs(&mut on_a, "feed:c", 1..=N).await;
    expect_seqs(&mut on_b, "feed:c", 1..=N).await;
    expect_quiet(&mut on_a).await;
    expect_quiet(&mut on_b).await;

    // A client of A that went away recovers on B.
    drop(on_a);
    a.wait_for_connections(0).await;
    let at = Position {
        offset: N,
        epoch: pa.epoch.clone(),
    };
    for seq in N + 1..=N + 5 {
        publish(&a.rt, "feed:c", seq).await;
    }
    let mut moved = b.connect("alice").await;
    let reply = subscribe(&mut moved, "feed:c", Some(&at)).await;
    assert_eq!(reply["recovered"], true, "{reply}");
    expect_seqs(&mut moved, "feed:c", N + 1..=N + 5).await;
    expect_quiet(&mut moved).await;
}

/// Keeps the otherwise unused stream helpers honest: a closed client is gone.
#[tokio::test]
async fn an_unsubscribed_client_gets_nothing_more() {
    let app = App::start().await;
    let mut ws = app.connect("alice").await;
    subscribe(&mut ws, "feed:u", None).await;
    let reply = command(
        &mut ws,
        json!({"action":"unsubscribe","topic":"feed:u","ref":"u"}),
    )
    .await;
    assert_eq!(reply["type"], "unsubscribed");
    publish(&app.rt, "feed:u", 1).await;
    expect_quiet(&mut ws).await;
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
}

/// The hub's store, except that a read can be held: it sees the store when it is
/// made and answers only when the test lets it, so publications can arrive
/// while a subscribe's read is in flight (as with Redis).
struct HeldReads {
    store: Arc<dyn HistoryStore>,
    /// (told when the read was made, released by the test) for the next read.
    next: std::sync::Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
}

impl HeldReads {
    /// Holds the next read; returns (made, release).
    fn hold_next(&self) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (made_tx, made_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        *self.next.lock().unwrap() = Some((made_tx, release_rx));
        (made_rx, release_tx)
    }
}

impl HistoryStore for HeldReads {
    fn start(&self, inbox: Inbox) {
        self.store.start(inbox);
    }
    fn append(&self, request: AppendRequest) -> PositionFuture {
        self.store.append(request)
    }
    fn read(&self, request: ReadRequest) -> PageFuture {
        let page = self.store.read(request);
        let held = self.next.lock().unwrap().take();
        Box::pin(async move {
            let page = page.await;
            if let Some((made, release)) = held {
                let _ = made.send(());
                let _ = release.await;
            }
            page
        })
    }
    fn reset(
        &self,
        topic: &realtime_core::Topic,
        limits: HistoryLimits,
        new_epoch: String,
    ) -> PositionFuture {
        self.store.reset(topic, limits, new_epoch)
    }
}

/// Subscribes from `since` with the read held while `seqs` are published on
/// `rt`, then lets the read answer; returns the reply.
async fn subscribe_publishing(
    ws: &mut Ws,
    rt: &Realtime,
    held: &HeldReads,
    topic: &str,
    since: &Position,
    seqs: std::ops::RangeInclusive<u64>,
) -> Value {
    let (made, release) = held.hold_next();
    send(
        ws,
        json!({"action":"subscribe","topic":topic,"since":{"offset":since.offset,"epoch":since.epoch},"ref":"s"}),
    )
    .await;
    made.await.unwrap();
    for seq in seqs {
        publish(rt, topic, seq).await;
    }
    release.send(()).unwrap();
    next_json(ws).await
}

#[tokio::test]
async fn publications_during_the_recovery_read_follow_the_replay_without_gap_or_duplicate() {
    let hub = MemoryHub::new();
    let held = Arc::new(HeldReads {
        store: hub.history(),
        next: std::sync::Mutex::new(None),
    });
    let app = App::on_hub_with(&hub, "a", held.clone()).await;

    // 1. Another subscriber keeps the node's tracker going.
    let mut first = app.connect("alice").await;
    subscribe(&mut first, "feed:m", None).await;
    for seq in 1..=10 {
        publish(&app.rt, "feed:m", seq).await;
    }
    expect_seqs(&mut first, "feed:m", 1..=10).await;
    let epoch = app
        .rt
        .history("feed:m", HistoryQuery::default())
        .await
        .unwrap()
        .position
        .epoch;

    let mut second = app.connect("alice").await;
    let since = Position { offset: 5, epoch };
    // The read sees 1..=10; 11..=20 arrive while it is in flight.
    let reply = subscribe_publishing(&mut second, &app.rt, &held, "feed:m", &since, 11..=20).await;
    assert_eq!(
        (reply["type"].clone(), reply["recovered"].clone()),
        (json!("subscribed"), json!(true)),
        "{reply}"
    );
    assert_eq!(reply["offset"], 10, "where the replay ends");
    expect_seqs(&mut second, "feed:m", 6..=20).await;
    publish(&app.rt, "feed:m", 21).await;
    expect_seqs(&mut second, "feed:m", [21]).await;
    expect_quiet(&mut second).await;
    expect_seqs(&mut first, "feed:m", 11..=21).await;

    // 2. The first subscriber of a topic on this node: the node learns where the
    // topic stands from the same read.
    let mut epoch_n = String::new();
    for seq in 1..=4 {
        epoch_n = publish(&app.rt, "feed:n", seq).await.epoch;
    }
    let mut third = app.connect("bob").await;
    let since = Position {
        offset: 2,
        epoch: epoch_n,
    };
    let reply = subscribe_publishing(&mut third, &app.rt, &held, "feed:n", &since, 5..=8).await;
    assert_eq!(reply["recovered"], true, "{reply}");
    expect_seqs(&mut third, "feed:n", 3..=8).await;
    expect_quiet(&mut third).await;
}

/// A node's bus link that the test can cut (envelopes to the node are lost) and
/// restore (the node is told `Resumed`, as the Redis bus does after a reconnect).
struct CuttableBus {
    bus: Arc<realtime::cluster::memory::MemoryBus>,
    cut: Arc<std::sync::atomic::AtomicBool>,
    inbox: std::sync::OnceLock<Inbox>,
}

impl CuttableBus {
    fn resume(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
        (self.inbox.get().expect("started"))(realtime::BusEvent::Resumed);
    }
}

impl realtime::MessageBus for CuttableBus {
    fn start(&self, inbox: Inbox, always: Vec<String>) {
        let _ = self.inbox.set(inbox.clone());
        let cut = self.cut.clone();
        self.bus.start(
            Arc::new(move |event| {
                if !cut.load(std::sync::atomic::Ordering::SeqCst) {
                    inbox(event);
                }
            }),
            always,
        );
    }
    fn publish(&self, channel: String, envelope: Vec<u8>) -> Result<(), realtime::BusError> {
        self.bus.publish(channel, envelope)
    }
    fn publish_counted(
        &self,
        channel: String,
        envelope: Vec<u8>,
    ) -> realtime::cluster::bus::CountFuture {
        self.bus.publish_counted(channel, envelope)
    }
    fn update_interest(
        &self,
        subscribe: Vec<String>,
        unsubscribe: Vec<String>,
    ) -> realtime::cluster::bus::BusFuture {
        self.bus.update_interest(subscribe, unsubscribe)
    }
    fn status(&self) -> realtime::BusStatus {
        realtime::BusStatus::Up
    }
}

#[tokio::test]
async fn after_a_bus_break_history_topics_are_filled_and_other_topics_told() {
    let hub = MemoryHub::new();
    let (a, b, link, _held) = cuttable_pair(&hub).await;
    let mut ws = a.connect("alice").await;
    subscribe(&mut ws, "feed:g", None).await;
    subscribe(&mut ws, "plain:g", None).await;
    for seq in 1..=3 {
        publish(&b.rt, "feed:g", seq).await;
    }
    expect_seqs(&mut ws, "feed:g", 1..=3).await;

    link.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    for seq in 4..=8 {
        publish(&b.rt, "feed:g", seq).await;
    }
    b.rt.publish("plain:g", json!({"type":"lost"})).unwrap();
    link.resume();

    // Filled from the store by the node itself: no new publication prompts it.
    let mut seqs = Vec::new();
    let mut notices = Vec::new();
    while seqs.last() != Some(&8) {
        let m = next_json(&mut ws).await;
        match m["type"].as_str() {
            Some("missed") => notices.push(m),
            Some("n") => {
                assert_eq!(m["offset"], m["seq"]);
                seqs.push(m["seq"].as_u64().unwrap());
            }
            _ => panic!("unexpected {m}"),
        }
    }
    assert_eq!(
        seqs,
        (4..=8).collect::<Vec<_>>(),
        "filled in order, nothing twice"
    );
    assert_eq!(
        notices,
        [json!({"type":"missed","topic":"plain:g","reason":"bus_reconnected"})]
    );
    publish(&b.rt, "feed:g", 9).await;
    expect_seqs(&mut ws, "feed:g", [9]).await;
    expect_quiet(&mut ws).await;
}

#[tokio::test]
async fn a_server_side_subscribe_starts_at_the_current_position() {
    let app = App::start().await;
    for seq in 1..=3 {
        publish(&app.rt, "feed:s", seq).await;
    }
    let mut ws = app.connect("alice").await;
    let id = app.rt.connections()[0].id;
    assert!(app.rt.subscribe(id, "feed:s").await.unwrap());
    assert!(!app.rt.subscribe(id, "feed:s").await.unwrap(), "idempotent");
    publish(&app.rt, "feed:s", 4).await;
    expect_seqs(&mut ws, "feed:s", [4]).await;
    expect_quiet(&mut ws).await;
    assert!(app.rt.unsubscribe(id, "feed:s").await.unwrap());
    publish(&app.rt, "feed:s", 5).await;
    expect_quiet(&mut ws).await;
}

/// Node `a` on a cuttable link whose reads can be held, node `b` publishing.
async fn cuttable_pair(hub: &MemoryHub) -> (App, App, Arc<CuttableBus>, Arc<HeldReads>) {
    let link = Arc::new(CuttableBus {
        bus: hub.bus(),
        cut: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        inbox: std::sync::OnceLock::new(),
    });
    let held = Arc::new(HeldReads {
        store: hub.history(),
        next: std::sync::Mutex::new(None),
    });
    let verifier = JwtVerifier::hs256(SECRET, ClaimRules::default()).unwrap();
    let cluster = ClusterConfig {
        node_id: "a".into(),
        prefix: "h".into(),
        bus: link.clone(),
        directory: hub.directory(),
        history: Some(held.clone()),
        presence: None,
        request_timeout: Duration::from_secs(5),
    };
    let a = App::serve(Realtime::clustered(verifier, config(), cluster)).await;
    let b = App::on_hub(hub, "b").await;
    (a, b, link, held)
}

/// Every frame up to the pong answering a ping sent now.
async fn frames_until_pong(ws: &mut Ws) -> Vec<Value> {
    send(ws, json!({"action": "ping", "ref": "q"})).await;
    let mut frames = Vec::new();
    loop {
        let m = next_json(ws).await;
        if m["type"] == "pong" {
            return frames;
        }
        frames.push(m);
    }
}

#[tokio::test]
async fn a_fill_of_a_removed_tracker_delivers_nothing_to_the_next_subscribers() {
    let hub = MemoryHub::new();
    let (a, b, link, held) = cuttable_pair(&hub).await;
    let mut first = a.connect("alice").await;
    subscribe(&mut first, "feed:r", None).await;
    for seq in 1..=2 {
        publish(&b.rt, "feed:r", seq).await;
    }
    expect_seqs(&mut first, "feed:r", 1..=2).await;

    // 3 and 4 are lost on the link; the fill after the break reads them, held.
    link.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    for seq in 3..=4 {
        publish(&b.rt, "feed:r", seq).await;
    }
    let (made, release) = held.hold_next();
    link.resume();
    made.await.unwrap();

    // The only subscriber leaves (the tracker goes), a new one comes (a new tracker).
    let reply = command(
        &mut first,
        json!({"action":"unsubscribe","topic":"feed:r","ref":"u"}),
    )
    .await;
    assert_eq!(reply["type"], "unsubscribed");
    let mut second = a.connect("bob").await;
    let reply = subscribe(&mut second, "feed:r", None).await;
    assert_eq!(reply["offset"], 4, "{reply}");

    // The old fill answers now: what it read was not for this subscriber.
    release.send(()).unwrap();
    publish(&b.rt, "feed:r", 5).await;
    let seqs: Vec<Value> = frames_until_pong(&mut second)
        .await
        .into_iter()
        .map(|m| m["seq"].clone())
        .collect();
    assert_eq!(seqs, [json!(5)], "only what follows its position, once");
    assert!(frames_until_pong(&mut first).await.is_empty());
}

#[tokio::test]
async fn a_forged_publication_with_an_impossible_offset_is_dropped() {
    let hub = MemoryHub::new();
    let (a, b, link, _held) = cuttable_pair(&hub).await;
    let mut ws = a.connect("alice").await;
    subscribe(&mut ws, "feed:f", None).await;
    let epoch = publish(&b.rt, "feed:f", 1).await.epoch;
    expect_seqs(&mut ws, "feed:f", [1]).await;

    // Another process on the same bus sends history bytes no store produces.
    for offset in [u64::MAX, 0] {
        let forged = realtime_core::history::WirePublication {
            offset,
            epoch: &epoch,
            topic: "feed:f",
            payload: br#"{"type":"n","seq":999}"#,
        }
        .encode();
        (link.inbox.get().expect("started"))(realtime::BusEvent::Envelope(&forged));
    }

    publish(&b.rt, "feed:f", 2).await;
    expect_seqs(&mut ws, "feed:f", [2]).await;
    expect_quiet(&mut ws).await;
}

#[tokio::test]
async fn a_server_side_subscribe_whose_caller_gives_up_mid_read_still_delivers() {
    let hub = MemoryHub::new();
    let (a, b, _link, held) = cuttable_pair(&hub).await;
    for seq in 1..=2 {
        publish(&b.rt, "feed:d", seq).await;
    }
    let mut ws = a.connect("alice").await;
    let id = a.rt.connections()[0].id;

    // An HTTP caller that disconnects drops the request's future mid-read.
    let (made, release) = held.hold_next();
    {
        let subscribing = a.rt.subscribe(id, "feed:d");
        tokio::pin!(subscribing);
        tokio::select! {
            done = &mut subscribing => panic!("the read is held, yet: {done:?}"),
            made = made => made.unwrap(),
        }
    }
    // Fails when the read went with the dropped future.
    let _ = release.send(());

    publish(&b.rt, "feed:d", 3).await;
    expect_seqs(&mut ws, "feed:d", [3]).await;
    expect_quiet(&mut ws).await;
}

#[tokio::test]
async fn a_bus_break_during_a_fill_is_filled_too() {
    let hub = MemoryHub::new();
    let (a, b, link, held) = cuttable_pair(&hub).await;
    let mut ws = a.connect("alice").await;
    subscribe(&mut ws, "feed:h", None).await;
    publish(&b.rt, "feed:h", 1).await;
    expect_seqs(&mut ws, "feed:h", [1]).await;

    // A first break: its fill reads 2 and is held there.
    link.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    publish(&b.rt, "feed:h", 2).await;
    let (made, release) = held.hold_next();
    link.resume();
    made.await.unwrap();
    // A second break while that read is in flight: 3 is lost on the link.
    link.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    publish(&b.rt, "feed:h", 3).await;
    link.resume();
    release.send(()).unwrap();

    // Both filled by the node itself, with no new publication to prompt it.
    expect_seqs(&mut ws, "feed:h", 2..=3).await;
    expect_quiet(&mut ws).await;
}
