//! The Redis presence store against a real `redis-server` (started by the test
//! on a free port), driven directly through the `PresenceStore` port: several
//! stores on one Redis are several nodes, each on a runtime of its own so a
//! node can be killed (its runtime shut down: no leave, its connections cut),
//! with a snapshot the test keeps. Outcomes are checked against the tests' own
//! tallies and against what Redis holds (SCAN, XRANGE, INFO commandstats).

// `processes` names `common` for the server binary it can start.
mod common;
mod processes;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use processes::{RedisServer, eventually};
use realtime::presence::{
    Member, PresenceError, PresenceNotice, PresenceSettings, PresenceSnapshot, PresenceStore,
    QueuedEvent,
};
use realtime_core::{ConnectionId, LeaseRules, Topic};
use realtime_redis::{RedisCluster, RedisConfig, RedisPresence};
use serde_json::json;
use tokio::sync::mpsc;

const PREFIX: &str = "rt-presence";
/// The shortest bound: a heartbeat of 600 ms, a lease of 1.8 s.
const BOUND: Duration = Duration::from_secs(3);
const GRACE: Duration = Duration::from_secs(2);
/// Upper bound for anything that needs a heartbeat or two.
const WAIT: Duration = Duration::from_secs(10);

fn settings(bound: Duration, events: bool, event_queue: usize) -> PresenceSettings {
    PresenceSettings {
        lease: LeaseRules::new(bound).unwrap(),
        offline_grace: GRACE,
        events,
        event_queue,
    }
}

fn topic(name: &str) -> Topic {
    Topic::parse(name).unwrap()
}

fn member(user: &str, conn: ConnectionId) -> Member {
    let info = json!({"name": format!("user {user}")});
    Member {
        user_id: user.into(),
        connection_id: conn,
        connected_at: "2026-12-01T10:00:00.000Z".into(),
        info: info.as_object().unwrap().clone(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// One node: a store on a runtime of its own, the snapshot the test keeps for
/// it (the engine's live state), and the notices it got.
struct TestNode {
    name: String,
    store: Arc<RedisPresence>,
    state: Arc<Mutex<PresenceSnapshot>>,
    notices: mpsc::UnboundedReceiver<PresenceNotice>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestNode {
    fn start(url: &str, name: &str, settings: PresenceSettings) -> TestNode {
        let mut config = RedisConfig::new(url);
        config.prefix = PREFIX.into();
        let store = RedisCluster::new(config).unwrap().presence();
        let state = Arc::new(Mutex::new(PresenceSnapshot::default()));
        let (tx, notices) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        {
            let _inside = runtime.enter();
            let snapshot = state.clone();
            store.start(
                name.into(),
                settings,
                Arc::new(move || snapshot.lock().unwrap().clone()),
                Arc::new(move |n| {
                    let _ = tx.send(n);
                }),
            );
        }
        TestNode {
            name: name.into(),
            store,
            state,
            notices,
            runtime: Some(runtime),
        }
    }

    async fn wait_up(&self) {
        eventually(WAIT, "store up", || async {
            self.store.status() == realtime::BusStatus::Up
        })
        .await;
    }

    /// Opens a connection of `user` and subscribes it to `topics`.
    async fn connect(&self, user: &str, topics: &[&str]) -> ConnectionId {
        let conn = ConnectionId::new_v4();
        self.state
            .lock()
            .unwrap()
            .connections
            .push((user.into(), conn));
        self.store.connected(user, conn).await.unwrap();
        for t in topics {
            self.join(t, user, conn).await;
        }
        conn
    }

    async fn join(&self, t: &str, user: &str, conn: ConnectionId) {
        self.state
            .lock()
            .unwrap()
            .members
            .push((topic(t), member(user, conn)));
        self.store
            .joined(&topic(t), member(user, conn))
            .await
            .unwrap();
    }

    /// Closes a connection: it leaves its topics, then goes offline.
    async fn close(&self, user: &str, conn: ConnectionId) {
        let topics: Vec<Topic> = {
            let mut state = self.state.lock().unwrap();
            state.connections.retain(|(_, c)| *c != conn);
            let (gone, kept) = std::mem::take(&mut state.members)
                .into_iter()
                .partition(|(_, m)| m.connection_id == conn);
            state.members = kept;
            gone.into_iter().map(|(t, _)| t).collect::<Vec<_>>()
        };
        for t in topics {
            self.store.left(&t, user, conn).await.unwrap();
        }
        self.store.disconnected(user, conn).await.unwrap();
    }

    /// Every member of `t`, walking pages of `limit`.
    async fn all_members(&self, t: &str, limit: usize) -> Vec<(String, ConnectionId)> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self.store.members(&topic(t), after, limit).await.unwrap();
            assert!(page.members.len() <= limit);
            all.extend(
                page.members
                    .into_iter()
                    .map(|m| (m.user_id, m.connection_id)),
            );
            match page.next {
                Some(next) => after = Some(next),
                None => return all,
            }
        }
    }

    /// Waits for the next event this node is handed, on its own runtime.
    async fn next_event(&self, within: Duration) -> Option<QueuedEvent> {
        let queue = self.store.events().expect("events on");
        let mut handle = self
            .runtime
            .as_ref()
            .unwrap()
            .spawn(async move { queue.next().await });
        match tokio::time::timeout(within, &mut handle).await {
            Ok(joined) => Some(joined.unwrap().unwrap()),
            Err(_) => {
                // Stopped, so it takes no event it would never hand to anyone.
                handle.abort();
                let _ = handle.await;
                None
            }
        }
    }

    /// The node dies: its tasks and connections stop, nothing is cleaned up.
    fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn query<T: redis::FromRedisValue>(
    con: &mut redis::aio::MultiplexedConnection,
    args: &[&str],
) -> T {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(con).await.unwrap()
}

fn key(kind: &str) -> String {
    format!("{PREFIX}:presence:{kind}")
}

/// The events in the stream, as `(type, user_id or topic)`, read from Redis.
async fn stream_events(con: &mut redis::aio::MultiplexedConnection) -> Vec<(String, String)> {
    let entries: Vec<(String, HashMap<String, String>)> =
        query(con, &["XRANGE", &key("events"), "-", "+"]).await;
    entries
        .into_iter()
        .map(|(_, f)| {
            let subject = f.get("user_id").or_else(|| f.get("topic")).cloned();
            (f["type"].clone(), subject.unwrap_or_default())
        })
        .collect()
}

/// Calls per command since the server started, from INFO commandstats.
async fn command_calls(con: &mut redis::aio::MultiplexedConnection) -> HashMap<String, u64> {
    let info: String = query(con, &["INFO", "commandstats"]).await;
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

fn delta(before: &HashMap<String, u64>, after: &HashMap<String, u64>) -> Vec<(String, u64)> {
    let mut changed: Vec<(String, u64)> = after
        .iter()
        .filter(|(name, _)| name.as_str() != "info")
        .map(|(name, n)| (name.clone(), n - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    changed.sort();
    changed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_members_counts_and_online_status() {
    let redis = RedisServer::start().await;
    let a = TestNode::start(&redis.url(), "node-a", settings(BOUND, false, 100));
    let b = TestNode::start(&redis.url(), "node-b", settings(BOUND, false, 100));
    a.wait_up().await;
    b.wait_up().await;

    let mut tally: Vec<(String, ConnectionId)> = Vec::new();
    for (node, user) in [(&a, "u1"), (&a, "u1"), (&a, "u2"), (&b, "u2"), (&b, "u3")] {
        let topics: &[&str] = if user == "u3" {
            &["room:1", "room:2"]
        } else {
            &["room:1"]
        };
        tally.push((user.into(), node.connect(user, topics).await));
    }
    tally.sort_by_key(|(u, c)| (u.clone(), c.to_string()));

    for node in [&a, &b] {
        for limit in [1, 2, 3, 100] {
            let listed = node.all_members("room:1", limit).await;
            assert_eq!(
                listed, tally,
                "pages of {limit} from {}: each once, in order",
                node.name
            );
        }
        let counts = node.store.topic_counts(&topic("room:1")).await.unwrap();
        assert_eq!((counts.connections, counts.users), (5, 3));
        let counts = node.store.topic_counts(&topic("room:2")).await.unwrap();
        assert_eq!((counts.connections, counts.users), (1, 1));
        let empty = node.store.topic_counts(&topic("room:none")).await.unwrap();
        assert_eq!((empty.connections, empty.users), (0, 0));
        let u2 = node.store.user("u2").await.unwrap();
        assert_eq!((u2.connections, u2.last_seen_ms), (2, None));
        let everyone = node.store.counts().await.unwrap();
        assert_eq!((everyone.users, everyone.connections), (3, 5));
    }
    let page = a.store.members(&topic("room:1"), None, 5).await.unwrap();
    assert_eq!(page.next, None, "exactly one full page has no next");
    assert_eq!(page.members[0].info["name"], "user u1");
    assert_eq!(page.members[0].connected_at, "2026-12-01T10:00:00.000Z");

    // u3 closes its only connection on B: A sees it offline with the time.
    let before = now_ms();
    let u3 = tally.iter().find(|(u, _)| u == "u3").unwrap().1;
    b.close("u3", u3).await;
    let after = now_ms();
    let status = a.store.user("u3").await.unwrap();
    assert_eq!(status.connections, 0);
    let seen = status.last_seen_ms.expect("last seen remembered");
    assert!(
        seen + 1000 >= before && seen <= after + 1000,
        "{seen} within [{before}, {after}]"
    );
    assert_eq!(a.store.user("nobody").await.unwrap().last_seen_ms, None);
    let everyone = a.store.counts().await.unwrap();
    assert_eq!((everyone.users, everyone.connections), (2, 4));
    assert_eq!(a.all_members("room:2", 10).await, vec![]);
    let mut con = connection(&redis.url()).await;
    let left: u64 = query(
        &mut con,
        &["EXISTS", &key("members:room:2"), &key("info:room:2")],
    )
    .await;
    assert_eq!(left, 0, "an empty topic leaves no keys");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_join_costs_the_same_with_1_and_with_5000_members() {
    let redis = RedisServer::start().await;
    // A bound of an hour: no heartbeat runs while the commands are counted.
    let a = TestNode::start(
        &redis.url(),
        "node-a",
        settings(LeaseRules::MAX_BOUND, true, 100_000),
    );
    a.wait_up().await;
    let mut con = connection(&redis.url()).await;

    a.connect("solo", &["small"]).await;
    let joins: Vec<_> = (0..5000)
        .map(|i| {
            let (user, conn) = (format!("user-{i:05}"), ConnectionId::new_v4());
            a.state
                .lock()
                .unwrap()
                .members
                .push((topic("big"), member(&user, conn)));
            a.store.joined(&topic("big"), member(&user, conn))
        })
        .collect();
    for join in joins {
        join.await.unwrap();
    }
    assert_eq!(
        a.store
            .topic_counts(&topic("big"))
            .await
            .unwrap()
            .connections,
        5000
    );

    let mut measure = async |t: &'static str| {
        let before = command_calls(&mut con).await;
        a.store
            .joined(&topic(t), member("newcomer", ConnectionId::new_v4()))
            .await
            .unwrap();
        delta(&before, &command_calls(&mut con).await)
    };
    let small = measure("small").await;
    let big = measure("big").await;
    assert_eq!(small, big, "the same commands whatever the topic's size");
    assert!(
        small.contains(&("evalsha".to_owned(), 1)),
        "one script per join: {small:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_reaped_by_one_survivor_within_the_bound() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let mut survivors: Vec<TestNode> = (1..=3)
        .map(|i| TestNode::start(&url, &format!("survivor-{i}"), settings(BOUND, true, 1000)))
        .collect();
    let mut victim = TestNode::start(&url, "victim-7f3a", settings(BOUND, true, 1000));
    for node in survivors.iter().chain([&victim]) {
        node.wait_up().await;
    }
    let keeper = survivors[0].connect("u0", &["room"]).await;
    let gone = victim.connect("u1", &["room"]).await;
    let back = victim.connect("u2", &["room"]).await;
    assert_eq!(survivors[1].all_members("room", 10).await.len(), 3);

    victim.kill();
    let killed = Instant::now();
    // The bound is the contract; the margin is for a loaded CI machine's scheduling.
    eventually(
        BOUND + Duration::from_secs(2),
        "the dead node's members gone from answers",
        || async { survivors[2].all_members("room", 10).await == vec![("u0".into(), keeper)] },
    )
    .await;
    let counts = survivors[1].store.counts().await.unwrap();
    assert_eq!((counts.users, counts.connections), (1, 1));

    // Exactly one survivor was told, with the dead node's members.
    let (reaper, notice) = tokio::time::timeout(WAIT, async {
        loop {
            for (i, node) in survivors.iter_mut().enumerate() {
                if let Ok(n) = node.notices.try_recv() {
                    return (i, n);
                }
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("one survivor reaped the dead node");
    let PresenceNotice::Reaped { node, left } = notice else {
        panic!("expected Reaped, got {notice:?}");
    };
    assert_eq!(node, "victim-7f3a");
    let mut left: Vec<(String, String, ConnectionId, String)> = left
        .into_iter()
        .map(|(t, m)| {
            (
                t.as_str().to_owned(),
                m.user_id,
                m.connection_id,
                m.info["name"].to_string(),
            )
        })
        .collect();
    left.sort();
    assert_eq!(
        left,
        vec![
            ("room".into(), "u1".into(), gone, "\"user u1\"".into()),
            ("room".into(), "u2".into(), back, "\"user u2\"".into()),
        ]
    );
    // u2 comes back on another node within the grace: no offline for u2.
    survivors[1].connect("u2", &["room"]).await;
    assert!(
        killed.elapsed() < BOUND + GRACE,
        "reconnected within the grace"
    );

    let mut con = connection(&url).await;
    let mut scanned: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = query(
            &mut con,
            &["SCAN", &cursor.to_string(), "MATCH", "*victim-7f3a*"],
        )
        .await;
        scanned.extend(keys);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert_eq!(
        scanned,
        Vec::<String>::new(),
        "no key of the dead node left"
    );
    for (zset, what) in [("leases", "lease"), ("reaping", "reap claim")] {
        let score: Option<f64> = query(&mut con, &["ZSCORE", &key(zset), "victim-7f3a"]).await;
        assert_eq!(score, None, "no {what} of the dead node left");
    }
    let generation: Option<String> = query(&mut con, &["HGET", &key("gens"), "victim-7f3a"]).await;
    assert_eq!(generation, None);
    let consumers: Vec<Vec<redis::Value>> = query(
        &mut con,
        &["XINFO", "CONSUMERS", &key("events"), "webhooks"],
    )
    .await;
    assert!(
        !format!("{consumers:?}").contains("victim-7f3a"),
        "the dead node's consumer is gone: {consumers:?}"
    );

    // u1's offline comes once, after the grace, although three nodes sweep.
    eventually(GRACE + WAIT, "user.offline for u1 queued", || async {
        let mut con = connection(&url).await;
        stream_events(&mut con)
            .await
            .contains(&("user.offline".into(), "u1".into()))
    })
    .await;
    eventually(WAIT, "nothing pending any more", || async {
        let mut con = connection(&url).await;
        query::<u64>(&mut con, &["ZCARD", &key("pending")]).await == 0
    })
    .await;
    let events = stream_events(&mut con).await;
    let offline: Vec<&(String, String)> =
        events.iter().filter(|(t, _)| t == "user.offline").collect();
    assert_eq!(
        offline,
        vec![&("user.offline".to_owned(), "u1".to_owned())],
        "{events:?}"
    );
    let online = |u: &str| {
        events
            .iter()
            .filter(|e| **e == ("user.online".to_owned(), u.to_owned()))
            .count()
    };
    assert_eq!(
        (online("u0"), online("u1"), online("u2")),
        (1, 1, 1),
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|(t, _)| t == "topic.occupied").count(),
        1,
        "the topic never emptied"
    );
    for (i, node) in survivors.iter_mut().enumerate() {
        if i != reaper {
            assert!(
                node.notices.try_recv().is_err(),
                "{} was not told",
                node.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_redis_data_is_written_again_and_restored() {
    let mut redis = RedisServer::start().await;
    let url = redis.url();
    let mut a = TestNode::start(&url, "node-a", settings(BOUND, false, 100));
    let mut b = TestNode::start(&url, "node-b", settings(BOUND, false, 100));
    a.wait_up().await;
    b.wait_up().await;
    a.connect("u1", &["room"]).await;
    a.connect("u2", &["room"]).await;
    b.connect("u3", &["room"]).await;
    let expect_counts = |node: &TestNode, conns: u64| {
        let store = node.store.clone();
        async move {
            let t = store.topic_counts(&topic("room")).await;
            let c = store.counts().await;
            matches!((t, c), (Ok(t), Ok(c)) if t.connections == conns && t.users == conns
                && c.connections == conns && c.users == conns)
        }
    };
    assert!(expect_counts(&a, 3).await);

    async fn restored(node: &mut TestNode) -> BTreeSet<String> {
        let notice = tokio::time::timeout(WAIT, node.notices.recv())
            .await
            .expect("restored in time")
            .unwrap();
        let PresenceNotice::Restored { joined } = notice else {
            panic!("expected Restored, got {notice:?}");
        };
        joined.into_iter().map(|(_, m)| m.user_id).collect()
    }

    let mut con = connection(&url).await;
    let () = query(&mut con, &["FLUSHALL"]).await;
    assert_eq!(
        restored(&mut a).await,
        BTreeSet::from(["u1".into(), "u2".into()])
    );
    assert_eq!(restored(&mut b).await, BTreeSet::from(["u3".into()]));
    eventually(WAIT, "counts right after FLUSHALL", || expect_counts(&b, 3)).await;

    // A restart without persistence: the link drops, reads fail fast, a join
    // made meanwhile is not lost.
    redis.kill().await;
    eventually(WAIT, "status down", || async {
        matches!(a.store.status(), realtime::BusStatus::Down { .. })
    })
    .await;
    let asked = Instant::now();
    let read = a.store.topic_counts(&topic("room")).await;
    assert!(
        matches!(read, Err(PresenceError::Unavailable(_))),
        "{read:?}"
    );
    assert!(asked.elapsed() < Duration::from_secs(1), "failed fast");
    let conn = ConnectionId::new_v4();
    a.state
        .lock()
        .unwrap()
        .connections
        .push(("u4".into(), conn));
    a.state
        .lock()
        .unwrap()
        .members
        .push((topic("room"), member("u4", conn)));
    assert!(
        a.store
            .joined(&topic("room"), member("u4", conn))
            .await
            .is_err()
    );
    redis.restart().await;
    let joined = restored(&mut a).await;
    assert_eq!(
        joined,
        BTreeSet::from(["u1".into(), "u2".into(), "u4".into()])
    );
    assert_eq!(restored(&mut b).await, BTreeSet::from(["u3".into()]));
    eventually(WAIT, "counts right after the restart", || {
        expect_counts(&a, 4)
    })
    .await;
    let listed: Vec<String> = a
        .all_members("room", 2)
        .await
        .into_iter()
        .map(|(u, _)| u)
        .collect();
    assert_eq!(listed, vec!["u1", "u2", "u3", "u4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_handed_out_once_and_again_when_their_holder_dies() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let a = TestNode::start(&url, "node-a", settings(BOUND, true, 1000));
    let mut b = TestNode::start(&url, "node-b", settings(BOUND, true, 1000));
    a.wait_up().await;
    b.wait_up().await;
    let users: BTreeSet<String> = (0..10).map(|i| format!("u{i}")).collect();
    for user in &users {
        a.connect(user, &[]).await;
    }

    // Both nodes read; A delivers what it gets, B holds on to its events.
    let mut held_by_b: Vec<QueuedEvent> = Vec::new();
    let mut delivered: Vec<QueuedEvent> = Vec::new();
    let deadline = Instant::now() + WAIT;
    while held_by_b.len() + delivered.len() < users.len() {
        assert!(Instant::now() < deadline, "every event handed out in time");
        let (from_a, from_b) = tokio::join!(
            a.next_event(Duration::from_millis(300)),
            b.next_event(Duration::from_millis(300))
        );
        if let Some(e) = from_a {
            a.store.events().unwrap().done(&e.key).await.unwrap();
            delivered.push(e);
        }
        held_by_b.extend(from_b);
    }
    let mut handed: Vec<String> = delivered
        .iter()
        .chain(&held_by_b)
        .map(|e| e.event.id.clone())
        .collect();
    handed.sort();
    handed.dedup();
    assert_eq!(handed.len(), users.len(), "each event handed out once");
    let subjects: BTreeSet<String> = delivered
        .iter()
        .chain(&held_by_b)
        .map(|e| e.event.user_id.clone().unwrap())
        .collect();
    assert_eq!(subjects, users);
    assert!(
        delivered
            .iter()
            .chain(&held_by_b)
            .all(|e| e.event.kind.as_str() == "user.online")
    );

    if held_by_b.is_empty() {
        // A read them all: give B some of its own to hold.
        for i in 10..13 {
            a.connect(&format!("u{i}"), &[]).await;
        }
        while held_by_b.len() < 3 {
            held_by_b.push(b.next_event(WAIT).await.expect("B gets the new events"));
        }
    }
    // While B lives, its claims stay its own, well past a lease.
    assert!(
        a.next_event(BOUND).await.is_none(),
        "nothing handed to A while B holds its events"
    );

    b.kill();
    let mut again: Vec<QueuedEvent> = Vec::new();
    while again.len() < held_by_b.len() {
        let e = a.next_event(WAIT).await.expect("B's events handed to A");
        a.store.events().unwrap().done(&e.key).await.unwrap();
        again.push(e);
    }
    let ids = |events: &[QueuedEvent]| -> HashSet<String> {
        events.iter().map(|e| e.event.id.clone()).collect()
    };
    assert_eq!(ids(&again), ids(&held_by_b), "the same ids again");
    let mut con = connection(&url).await;
    eventually(WAIT, "every delivered event removed", || async {
        let mut con = connection(&url).await;
        query::<u64>(&mut con, &["XLEN", &key("events")]).await == 0
    })
    .await;
    assert_eq!(stream_events(&mut con).await, vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_queue_is_bounded_and_counts_what_it_drops() {
    let redis = RedisServer::start().await;
    let a = TestNode::start(&redis.url(), "node-a", settings(BOUND, true, 5));
    a.wait_up().await;
    for i in 0..8 {
        a.connect(&format!("u{i}"), &[]).await;
    }
    let mut con = connection(&redis.url()).await;
    let len: u64 = query(&mut con, &["XLEN", &key("events")]).await;
    assert_eq!(len, 5);
    let queue = a.store.events().unwrap();
    assert_eq!(queue.dropped(), 3);
    eventually(WAIT, "depth measured", || async { queue.depth() == 5 }).await;
    let first = a.next_event(WAIT).await.unwrap();
    assert_eq!(first.event.user_id.as_deref(), Some("u0"));
}
