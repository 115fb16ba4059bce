//! Unit tests of the in-memory presence store, on tokio's paused clock: paging,
//! counts, online status, the grace, leases and reaping, and the event queue.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use realtime_core::{ConnectionId, EventKind, LeaseRules, PresenceEvent, Topic};
use serde_json::{Map, json};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::time::{Instant, sleep, timeout};
use uuid::Uuid;

use super::state::{Effects, State};
use super::*;
use crate::MemoryHub;
use crate::presence::store::PresenceSnapshot;

const BOUND: Duration = Duration::from_secs(10);
const GRACE: Duration = Duration::from_secs(5);

fn settings(events: bool, event_queue: usize) -> PresenceSettings {
    PresenceSettings {
        lease: LeaseRules::new(BOUND).unwrap(),
        offline_grace: GRACE,
        events,
        event_queue,
    }
}

fn conn(n: u128) -> ConnectionId {
    Uuid::from_u128(n)
}

fn member(user: &str, connection: ConnectionId) -> Member {
    let mut info = Map::new();
    info.insert("name".into(), json!(format!("user {user}")));
    Member {
        user_id: user.to_owned(),
        connection_id: connection,
        connected_at: "2026-12-01T10:00:00.000Z".into(),
        info,
    }
}

fn topic(name: &str) -> Topic {
    Topic::parse(name).unwrap()
}

/// Starts `store` as `node`; its notices come out of the receiver.
fn start(
    store: &MemoryPresence,
    node: &str,
    settings: PresenceSettings,
) -> UnboundedReceiver<PresenceNotice> {
    let (tx, rx) = unbounded_channel();
    store.start(
        node.to_owned(),
        settings,
        Arc::new(PresenceSnapshot::default),
        Arc::new(move |notice| {
            let _ = tx.send(notice);
        }),
    );
    rx
}

/// Takes every event waiting, marking each done.
async fn drain(queue: &dyn EventQueue) -> Vec<PresenceEvent> {
    let mut out = Vec::new();
    while queue.depth() > 0 {
        let taken = queue.next().await.unwrap();
        queue.done(&taken.key).await.unwrap();
        out.push(taken.event);
    }
    out
}

fn kinds(events: &[PresenceEvent]) -> Vec<(EventKind, String)> {
    events
        .iter()
        .map(|e| {
            let about = e.user_id.clone().or(e.topic.clone()).unwrap_or_default();
            (e.kind, about)
        })
        .collect()
}

fn millis(timestamp: &str) -> i128 {
    let t = time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
        .unwrap();
    t.unix_timestamp_nanos() / 1_000_000
}

#[tokio::test(start_paused = true)]
async fn paging_returns_every_member_present_for_the_walk_exactly_once_in_order() {
    let store = MemoryPresence::new();
    let _notices = start(&store, "n1", settings(false, 10));
    let t = topic("room:paging");
    // Users whose ids are prefixes of each other, several connections each.
    let mut present: BTreeSet<(String, String)> = BTreeSet::new();
    let mut next_conn = 0u128;
    for u in 0..40 {
        let user = if u % 3 == 0 {
            format!("u{u}")
        } else {
            format!("u{u}x")
        };
        for _ in 0..(u % 4 + 1) {
            next_conn += 1;
            let c = conn(next_conn * 7919);
            store.joined(&t, member(&user, c)).await.unwrap();
            present.insert((user.clone(), c.to_string()));
        }
    }
    let mut for_the_whole_walk = present.clone();
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = store.members(&t, cursor.clone(), 7).await.unwrap();
        assert!(page.members.len() <= 7);
        pages += 1;
        seen.extend(
            page.members
                .iter()
                .map(|m| (m.user_id.clone(), m.connection_id.to_string())),
        );
        // Churn during the walk: one member already returned leaves, a new one
        // joins somewhere in the order.
        if let Some(gone) = for_the_whole_walk
            .iter()
            .find(|k| seen.contains(k))
            .cloned()
        {
            for_the_whole_walk.remove(&gone);
            let id: ConnectionId = gone.1.parse().unwrap();
            store.left(&t, &gone.0, id).await.unwrap();
        }
        next_conn += 1;
        store
            .joined(&t, member(&format!("u{}", pages * 5), conn(next_conn)))
            .await
            .unwrap();
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let sorted: Vec<_> = {
        let mut s = seen.clone();
        s.sort();
        s.dedup();
        s
    };
    assert_eq!(
        sorted, seen,
        "strictly in (user, connection) order, no repeats"
    );
    for key in &for_the_whole_walk {
        assert_eq!(seen.iter().filter(|k| *k == key).count(), 1, "{key:?}");
    }
    // A cursor this store did not make still answers, without failing.
    let odd = store
        .members(&t, Some("not a cursor".into()), 5)
        .await
        .unwrap();
    assert!(odd.members.len() <= 5);
    let empty = store.members(&topic("room:none"), None, 5).await.unwrap();
    assert_eq!(empty, MemberPage::default());
}

#[tokio::test(start_paused = true)]
async fn counts_follow_joins_leaves_and_connections() {
    let store = MemoryPresence::new();
    let _notices = start(&store, "n1", settings(false, 10));
    let t = topic("room:counts");
    for (user, c) in [("a", 1), ("a", 2), ("b", 3)] {
        store.joined(&t, member(user, conn(c))).await.unwrap();
        store.connected(user, conn(c)).await.unwrap();
    }
    // Repeats change nothing.
    store.joined(&t, member("a", conn(1))).await.unwrap();
    store.connected("a", conn(1)).await.unwrap();
    assert_eq!(
        store.topic_counts(&t).await.unwrap(),
        TopicCounts {
            connections: 3,
            users: 2
        }
    );
    assert_eq!(
        store.counts().await.unwrap(),
        ClusterCounts {
            users: 2,
            connections: 3
        }
    );
    store.left(&t, "a", conn(1)).await.unwrap();
    store.left(&t, "a", conn(1)).await.unwrap();
    store.left(&t, "nobody", conn(99)).await.unwrap();
    store.disconnected("b", conn(3)).await.unwrap();
    store.disconnected("b", conn(3)).await.unwrap();
    assert_eq!(
        store.topic_counts(&t).await.unwrap(),
        TopicCounts {
            connections: 2,
            users: 2
        }
    );
    assert_eq!(
        store.counts().await.unwrap(),
        ClusterCounts {
            users: 1,
            connections: 2
        }
    );
    assert_eq!(
        store.topic_counts(&topic("room:other")).await.unwrap(),
        TopicCounts::default()
    );
}

#[tokio::test(start_paused = true)]
async fn online_status_counts_connections_and_remembers_the_last_close() {
    let store = MemoryPresence::new();
    let _notices = start(&store, "n1", settings(false, 10));
    assert_eq!(store.user("u").await.unwrap(), UserStatus::default());
    store.connected("u", conn(1)).await.unwrap();
    store.connected("u", conn(2)).await.unwrap();
    let status = store.user("u").await.unwrap();
    assert_eq!((status.connections, status.last_seen_ms), (2, None));
    store.disconnected("u", conn(1)).await.unwrap();
    assert_eq!(store.user("u").await.unwrap().connections, 1);
    store.disconnected("u", conn(2)).await.unwrap();
    let first = store.user("u").await.unwrap().last_seen_ms.unwrap();
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(first.abs_diff(wall) < 60_000, "{first} vs {wall}");

    sleep(Duration::from_secs(3)).await;
    store.connected("u", conn(3)).await.unwrap();
    assert_eq!(store.user("u").await.unwrap().last_seen_ms, None, "online");
    store.disconnected("u", conn(3)).await.unwrap();
    let second = store.user("u").await.unwrap().last_seen_ms.unwrap();
    assert_eq!(second - first, 3_000);
}

#[tokio::test(start_paused = true)]
async fn a_reconnect_within_the_grace_emits_nothing() {
    let store = MemoryPresence::new();
    let _notices = start(&store, "n1", settings(true, 100));
    let queue = store.events().unwrap();
    store.connected("u", conn(1)).await.unwrap();
    store.disconnected("u", conn(1)).await.unwrap();
    sleep(GRACE - Duration::from_millis(500)).await;
    store.connected("u", conn(2)).await.unwrap();
    sleep(GRACE * 4).await;
    let events = drain(queue.as_ref()).await;
    assert_eq!(kinds(&events), vec![(EventKind::UserOnline, "u".into())]);
}

#[tokio::test(start_paused = true)]
async fn offline_is_queued_once_when_the_grace_runs_out() {
    let store = MemoryPresence::new();
    let _notices = start(&store, "n1", settings(true, 100));
    let queue = store.events().unwrap();
    store.connected("u", conn(1)).await.unwrap();
    store.connected("u", conn(2)).await.unwrap();
    sleep(Duration::from_secs(1)).await;
    store.disconnected("u", conn(1)).await.unwrap();
    store.disconnected("u", conn(2)).await.unwrap();
    let online = drain(queue.as_ref()).await;
    assert_eq!(kinds(&online), vec![(EventKind::UserOnline, "u".into())]);

    sleep(GRACE - Duration::from_millis(100)).await;
    assert_eq!(queue.depth(), 0, "still within the grace");
    sleep(Duration::from_millis(200)).await;
    assert_eq!(queue.depth(), 1, "due within 100 ms of the grace");
    let offline = drain(queue.as_ref()).await;
    assert_eq!(kinds(&offline), vec![(EventKind::UserOffline, "u".into())]);
    assert_eq!(
        millis(&offline[0].timestamp) - millis(&online[0].timestamp),
        1_000,
        "stamped with the last close, not the end of the grace"
    );
    assert_ne!(offline[0].id, online[0].id);
    sleep(GRACE * 4).await;
    assert_eq!(queue.depth(), 0, "once");
}

#[tokio::test(start_paused = true)]
async fn topics_are_occupied_and_vacated_once() {
    let store = MemoryPresence::new();
    let _notices = start(&store, "n1", settings(true, 100));
    let queue = store.events().unwrap();
    let t = topic("room:occ");
    store.joined(&t, member("a", conn(1))).await.unwrap();
    store.joined(&t, member("b", conn(2))).await.unwrap();
    store.left(&t, "a", conn(1)).await.unwrap();
    store.left(&t, "b", conn(2)).await.unwrap();
    sleep(Duration::from_secs(1)).await;
    store.joined(&t, member("a", conn(3))).await.unwrap();
    store.left(&t, "a", conn(3)).await.unwrap();
    sleep(GRACE * 3).await;
    let events = drain(queue.as_ref()).await;
    assert_eq!(
        kinds(&events),
        vec![
            (EventKind::TopicOccupied, "room:occ".into()),
            (EventKind::TopicVacated, "room:occ".into()),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_node_that_stops_heartbeating_is_reaped_by_another_within_the_bound() {
    let hub = MemoryHub::new();
    let a = hub.presence();
    let b = hub.presence();
    let mut a_notices = start(&a, "a", settings(true, 100));
    let mut b_notices = start(&b, "b", settings(true, 100));
    let queue = b.events().unwrap();
    let t = topic("room:reap");
    a.connected("u1", conn(1)).await.unwrap();
    a.connected("u2", conn(2)).await.unwrap();
    a.joined(&t, member("u1", conn(1))).await.unwrap();
    a.joined(&t, member("u2", conn(2))).await.unwrap();
    b.connected("u2", conn(3)).await.unwrap();
    b.joined(&t, member("u2", conn(3))).await.unwrap();
    assert_eq!(
        drain(queue.as_ref()).await.len(),
        3,
        "two online, one occupied"
    );
    sleep(Duration::from_millis(4_300)).await;

    let killed = Instant::now();
    drop(a);
    let notice = timeout(BOUND, b_notices.recv()).await.unwrap().unwrap();
    assert!(killed.elapsed() <= BOUND, "{:?}", killed.elapsed());
    assert_eq!(
        notice,
        PresenceNotice::Reaped {
            node: "a".into(),
            left: vec![
                (t.clone(), member("u1", conn(1))),
                (t.clone(), member("u2", conn(2)))
            ],
        }
    );
    assert_eq!(
        b.topic_counts(&t).await.unwrap(),
        TopicCounts {
            connections: 1,
            users: 1
        }
    );
    let page = b.members(&t, None, 10).await.unwrap();
    assert_eq!(page.members, vec![member("u2", conn(3))]);
    assert_eq!(
        b.counts().await.unwrap(),
        ClusterCounts {
            users: 1,
            connections: 1
        }
    );
    assert_eq!(b.user("u1").await.unwrap().connections, 0);
    assert!(b.user("u1").await.unwrap().last_seen_ms.is_some());
    assert_eq!(b.user("u2").await.unwrap().connections, 1);

    sleep(GRACE + Duration::from_secs(30)).await;
    let events = drain(queue.as_ref()).await;
    assert_eq!(kinds(&events), vec![(EventKind::UserOffline, "u1".into())]);
    assert!(b_notices.try_recv().is_err(), "reaped once");
    assert!(
        a_notices.recv().await.is_none(),
        "the dead node's heartbeat ended"
    );
}

#[tokio::test(start_paused = true)]
async fn a_graceful_leave_removes_the_node_at_once_without_a_reap() {
    let hub = MemoryHub::new();
    let a = hub.presence();
    let b = hub.presence();
    let _a_notices = start(&a, "a", settings(false, 10));
    let mut b_notices = start(&b, "b", settings(false, 10));
    let t = topic("room:leave");
    a.connected("u1", conn(1)).await.unwrap();
    a.joined(&t, member("u1", conn(1))).await.unwrap();
    a.leave().await.unwrap();
    assert_eq!(b.topic_counts(&t).await.unwrap(), TopicCounts::default());
    assert_eq!(b.counts().await.unwrap(), ClusterCounts::default());
    a.connected("u1", conn(2)).await.unwrap();
    assert_eq!(
        b.counts().await.unwrap(),
        ClusterCounts::default(),
        "ignored after leave"
    );
    sleep(BOUND * 3).await;
    assert!(b_notices.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_drops_and_counts() {
    let store = MemoryPresence::new();
    let _notices = start(&store, "n1", settings(true, 3));
    let queue = store.events().unwrap();
    for u in 0..5 {
        store.connected(&format!("u{u}"), conn(u)).await.unwrap();
    }
    assert_eq!((queue.depth(), queue.dropped()), (3, 2));
    let taken = queue.next().await.unwrap();
    store.connected("u9", conn(9)).await.unwrap();
    assert_eq!(
        (queue.depth(), queue.dropped()),
        (2, 3),
        "a taken event still counts"
    );
    queue.done(&taken.key).await.unwrap();
    store.connected("u10", conn(10)).await.unwrap();
    assert_eq!((queue.depth(), queue.dropped()), (3, 3));
    let users: Vec<_> = drain(queue.as_ref())
        .await
        .into_iter()
        .map(|e| e.user_id.unwrap())
        .collect();
    assert_eq!(users, vec!["u1", "u2", "u10"]);
    assert_eq!(taken.event.user_id.as_deref(), Some("u0"));
}

#[tokio::test(start_paused = true)]
async fn an_event_taken_by_a_reaped_node_is_handed_out_again() {
    let hub = MemoryHub::new();
    let a = hub.presence();
    let b = hub.presence();
    let _a_notices = start(&a, "a", settings(true, 100));
    let mut b_notices = start(&b, "b", settings(true, 100));
    let (a_queue, b_queue) = (a.events().unwrap(), b.events().unwrap());
    a.connected("u1", conn(1)).await.unwrap();
    let taken = a_queue.next().await.unwrap();
    assert_eq!(taken.event.kind, EventKind::UserOnline);
    assert!(
        timeout(Duration::from_secs(1), b_queue.next())
            .await
            .is_err(),
        "claimed by a while a lives"
    );

    drop(a);
    let again = timeout(BOUND, b_queue.next()).await.unwrap().unwrap();
    assert_eq!(again.event, taken.event, "same id, same event");
    assert!(matches!(
        b_notices.try_recv(),
        Ok(PresenceNotice::Reaped { .. })
    ));
    b_queue.done(&again.key).await.unwrap();
    assert!(a_queue.depth() <= 1, "only u1's offline may follow");
}

#[tokio::test(start_paused = true)]
async fn a_halted_node_is_reaped_though_its_endpoint_is_still_held() {
    let hub = MemoryHub::new();
    let a = hub.presence();
    let b = hub.presence();
    let _a_notices = start(&a, "a", settings(false, 10));
    let mut b_notices = start(&b, "b", settings(false, 10));
    a.connected("u1", conn(1)).await.unwrap();
    a.halt();
    let notice = timeout(BOUND, b_notices.recv()).await.unwrap().unwrap();
    assert_eq!(
        notice,
        PresenceNotice::Reaped {
            node: "a".into(),
            left: vec![]
        }
    );
    assert_eq!(b.counts().await.unwrap(), ClusterCounts::default());
}

#[test]
fn cursors_round_trip_any_user_id() {
    for user in ["", "a", "a\0b", "ü:ñ", "x y/z"] {
        let c = super::members::encode_cursor(user, conn(42));
        assert!(c.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            super::members::decode_cursor(&c),
            (user.to_owned(), conn(42).to_string())
        );
    }
    assert_eq!(
        super::members::decode_cursor("zz"),
        ("zz".to_owned(), String::new())
    );
}

#[test]
fn a_node_reaped_while_alive_writes_its_entries_again() {
    let mut state = State::default();
    let mut fx = Effects::default();
    let s = settings(false, 10);
    let lease = s.lease.lease().as_millis() as u64;
    state.start("pa", "a", &s, 0);
    state.start("pb", "b", &s, 0);
    let t = topic("room:restore");
    state.connect("a", "u1", conn(1), 0, &mut fx);
    state.join("a", &t, member("u1", conn(1)), 0, &mut fx);
    // b renews; a's heartbeat is late past its lease: b reaps it.
    let beat = state.heartbeat("b", lease, &mut fx);
    assert_eq!(
        beat.reaped,
        vec![("a".to_owned(), vec![(t.clone(), member("u1", conn(1)))])]
    );
    assert_eq!(state.counts(), ClusterCounts::default());
    // a comes back: its entries are gone, so it writes them again.
    let beat = state.heartbeat("a", lease + 100, &mut fx);
    assert!(beat.reaped.is_empty());
    let reaps = beat.restore.expect("a must restore");
    let snapshot = PresenceSnapshot {
        connections: vec![("u1".into(), conn(1))],
        members: vec![(t.clone(), member("u1", conn(1)))],
    };
    // A write after the snapshot was read is kept alongside it.
    state.connect("a", "u2", conn(2), lease + 150, &mut fx);
    let joined = state
        .restore("a", snapshot.clone(), reaps, lease + 200, &mut fx)
        .expect("not reaped again");
    assert_eq!(joined, vec![(t.clone(), member("u1", conn(1)))]);
    assert_eq!(state.topic_counts(&t).connections, 1);
    assert_eq!(state.counts().connections, 2);
    // A restore from before a later reap is not applied (the next heartbeat
    // reads the snapshot again).
    assert_eq!(
        state.restore("a", snapshot, reaps + 7, lease + 200, &mut fx),
        None
    );
    // Restored: a renews again and is not reaped while it does.
    let beat = state.heartbeat("a", lease * 2, &mut fx);
    assert!(beat.restore.is_none());
    let beat = state.heartbeat("b", lease * 2, &mut fx);
    assert!(beat.reaped.is_empty());
    let by_topic: BTreeMap<_, _> = [(t.clone(), state.topic_counts(&t))].into();
    assert_eq!(by_topic[&t].users, 1);
}

#[test]
fn a_restore_racing_closes_brings_back_no_ghost() {
    let shared = Shared::new();
    let s = settings(false, 10);
    let lease = s.lease.lease().as_millis() as u64;
    let t = topic("room:churn");
    // The engine's side, as the test tallies it: a's open connections, each
    // subscribed to `t`.
    let open: Arc<std::sync::Mutex<Vec<u128>>> = Arc::new(std::sync::Mutex::new(vec![1, 2, 3, 4]));
    let now = shared.now_ms();
    shared.apply(|st, _, fx| {
        st.start("pa", "a", &s, now);
        st.start("pb", "b", &s, now);
        for n in open.lock().unwrap().iter() {
            let user = format!("u{n}");
            st.connect("a", &user, conn(*n), now, fx);
            st.join("a", &t, member(&user, conn(*n)), now, fx);
        }
    });
    // a stalls past its lease: b reaps it; a's next heartbeat finds it out.
    let beat = shared.apply(|st, _, fx| st.heartbeat("b", now + lease, fx));
    assert_eq!(beat.reaped.len(), 1);
    let beat = shared.apply(|st, _, fx| st.heartbeat("a", now + lease + 1, fx));
    let reaps = beat.restore.expect("a must restore");
    // Churn: right after each read of the snapshot, one of a's connections
    // closes (the engine tells the store, which has nothing of it yet).
    let snapshot: SnapshotFn = {
        let (open, shared, t) = (open.clone(), shared.clone(), t.clone());
        Arc::new(move || {
            let mut open = open.lock().unwrap();
            let snap = PresenceSnapshot {
                connections: open.iter().map(|n| (format!("u{n}"), conn(*n))).collect(),
                members: open
                    .iter()
                    .map(|n| (t.clone(), member(&format!("u{n}"), conn(*n))))
                    .collect(),
            };
            if let Some(n) = open.pop() {
                let user = format!("u{n}");
                shared.apply(|st, now, fx| {
                    st.leave("a", &t, &user, conn(n), now, fx);
                    st.disconnect("a", conn(n), now, fx);
                });
            }
            snap
        })
    };
    restore(&shared, "a", reaps, &snapshot).expect("restored");
    let still_open = open.lock().unwrap().len() as u64;
    let state = shared.lock();
    assert_eq!(
        state.counts().connections,
        still_open,
        "no closed connection is back"
    );
    assert_eq!(
        state.topic_counts(&t).connections,
        still_open,
        "no closed member is back"
    );
}
