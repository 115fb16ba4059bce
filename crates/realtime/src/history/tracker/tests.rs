//! Tests of the per-connection history tracker.

use std::collections::VecDeque;
use std::time::Duration;

use realtime_core::{ConnectionInfo, Identity, StreamState};

use super::super::store::StoredPublication;
use super::*;

/// An in-test store: what a read of the topic answers.
struct Store {
    epoch: String,
    held: Vec<u64>,
    top: u64,
}

impl Store {
    fn page_after(&self, after: u64) -> StoredPage {
        StoredPage {
            state: StreamState {
                epoch: self.epoch.clone(),
                top: self.top,
                first: self.held.first().copied().unwrap_or(self.top + 1),
            },
            publications: self
                .held
                .iter()
                .filter(|o| **o > after)
                .map(|&offset| StoredPublication {
                    offset,
                    payload: format!(r#"{{"type":"n","n":{offset}}}"#),
                })
                .collect(),
        }
    }
}

struct Setup {
    registry: Registry,
    topic: Topic,
    limits: HistoryLimits,
    handle: Arc<ConnectionHandle>,
    state: TrackerState,
}

impl Setup {
    /// One subscriber, a tracker initialised at (`top`, "e1").
    fn new(size: u64, top: u64) -> Setup {
        let registry = Registry::default();
        let identity = Identity {
            user_id: "u".into(),
            roles: vec![],
            metadata: Default::default(),
            expires_at: None,
        };
        let id = realtime_core::NodeTag::from_random(7).connection_id([1; 16]);
        let info = ConnectionInfo::new(id, identity, "now".into());
        let handle = Arc::new(ConnectionHandle::new(info, None, 1000, 1 << 20));
        registry.insert(handle.clone());
        let topic = Topic::parse("feed:1").unwrap();
        registry.subscribe(&handle, &topic, || {}).unwrap();
        let state = TrackerState {
            last: Some(pos(top, "e1")),
            ..TrackerState::default()
        };
        let limits = HistoryLimits::new(size, Duration::from_secs(60)).unwrap();
        Setup {
            registry,
            topic,
            limits,
            handle,
            state,
        }
    }

    fn arrive(&mut self, offset: u64, epoch: &str) -> bool {
        let frame = Utf8Bytes::from(with_position(r#"{"type":"n"}"#, offset, epoch));
        let out = Fanout {
            registry: &self.registry,
            metrics: None,
        };
        self.state
            .arrive(out, (&self.topic, self.limits), pos(offset, epoch), frame)
    }

    /// Its subscriber's read is in flight.
    fn start_recovering(&mut self) {
        self.state.recovering.insert(
            self.handle.id(),
            Recovering {
                handle: self.handle.clone(),
                replied_through: None,
                buffer: Vec::new(),
            },
        );
    }

    /// Completes its subscriber's subscribe from `since` with `page`; `reply`:
    /// a client's, answered with `subscribed`.
    fn complete(
        &mut self,
        since: &Position,
        reply: bool,
        page: &StoredPage,
        metrics: Option<&Metrics>,
    ) -> Completion {
        let who = Subscribing {
            id: self.handle.id(),
            since: Some(since),
            reply: reply.then_some(None),
        };
        let out = Fanout {
            registry: &self.registry,
            metrics,
        };
        let limits = self.limits;
        self.state.complete(out, (&self.topic, limits), who, page).0
    }

    fn fill(&mut self, store: &Store) -> bool {
        let page = store.page_after(self.state.fill_from().unwrap());
        let out = Fanout {
            registry: &self.registry,
            metrics: None,
        };
        self.state
            .apply_fill(out, (&self.topic, self.limits), &page)
    }

    /// What the subscriber was sent: offsets of publications, and notices as
    /// ("missed reason", offset).
    fn received(&self) -> Vec<String> {
        let mut batch = VecDeque::new();
        self.handle.outbox().try_take(&mut batch);
        batch
            .into_iter()
            .map(|f| {
                let v: Value = serde_json::from_str(&f).unwrap();
                match v["type"].as_str() {
                    Some("missed") => {
                        format!("{}@{}", v["reason"].as_str().unwrap(), v["offset"])
                    }
                    _ => format!("{}", v["offset"]),
                }
            })
            .collect()
    }
}

fn pos(offset: u64, epoch: &str) -> Position {
    Position {
        offset,
        epoch: epoch.into(),
    }
}

#[test]
fn in_order_arrivals_are_delivered_and_duplicates_dropped() {
    let mut s = Setup::new(10, 0);
    assert!(!s.arrive(1, "e1"));
    assert!(!s.arrive(2, "e1"));
    assert!(!s.arrive(2, "e1"), "a duplicate needs no fill");
    assert!(!s.arrive(1, "e1"));
    assert_eq!(s.received(), ["1", "2"]);
}

#[test]
fn delivery_at_the_last_possible_offset_does_not_overflow() {
    // Only a forged store reply (a top offset of u64::MAX) gets here.
    let mut s = Setup::new(10, u64::MAX - 1);
    assert!(!s.arrive(u64::MAX, "e1"));
    assert!(!s.arrive(u64::MAX, "e1"));
    assert_eq!(s.received(), [u64::MAX.to_string()]);
}

#[test]
fn a_gap_is_filled_from_the_store_in_order() {
    let mut s = Setup::new(10, 2);
    assert!(s.arrive(5, "e1"), "a gap starts a fill");
    assert!(!s.arrive(6, "e1"), "one fill at a time");
    assert!(s.received().is_empty(), "nothing out of order");
    let store = Store {
        epoch: "e1".into(),
        held: (1..=6).collect(),
        top: 6,
    };
    assert!(!s.fill(&store), "the fill closed the gap");
    assert_eq!(s.received(), ["3", "4", "5", "6"]);
    assert!(!s.arrive(7, "e1"));
    assert_eq!(s.received(), ["7"]);
}

#[test]
fn a_fill_reads_page_after_page_up_to_the_top() {
    // After a bus break nothing is pending: only the store knows 3..=8.
    let mut s = Setup::new(10, 2);
    let store = Store {
        epoch: "e1".into(),
        held: (1..=8).collect(),
        top: 8,
    };
    let out = Fanout {
        registry: &s.registry,
        metrics: None,
    };
    let mut page = store.page_after(2);
    page.publications.truncate(3);
    assert!(
        s.state.apply_fill(out, (&s.topic, s.limits), &page),
        "a page that stops short of the top is followed by another"
    );
    assert!(!s.fill(&store));
    assert_eq!(s.received(), ["3", "4", "5", "6", "7", "8"]);
}

#[test]
fn a_bus_break_before_the_first_read_answers_is_filled_after_it() {
    let mut s = Setup::new(10, 0);
    s.state.last = None;
    assert!(!s.state.resume_fill(), "nothing to fill from yet");
    let store = Store {
        epoch: "e1".into(),
        held: (1..=3).collect(),
        top: 3,
    };
    let out = Fanout {
        registry: &s.registry,
        metrics: None,
    };
    let page = store.page_after(0);
    assert!(
        s.state.initialise(out, (&s.topic, s.limits), &page),
        "the read may be older than what the break lost"
    );
    assert!(s.state.begin_fill());
    assert!(!s.fill(&store));
}

#[test]
fn a_trimmed_gap_is_announced_where_delivery_goes_on() {
    let mut s = Setup::new(10, 2);
    assert!(s.arrive(9, "e1"));
    // The store no longer holds 3..=5.
    let store = Store {
        epoch: "e1".into(),
        held: (6..=9).collect(),
        top: 9,
    };
    assert!(!s.fill(&store));
    assert_eq!(s.received(), ["history_trimmed@5", "6", "7", "8", "9"]);
}

#[test]
fn a_new_epoch_is_announced_then_delivered_from_its_start() {
    let mut s = Setup::new(10, 4);
    assert!(
        s.arrive(3, "e2"),
        "offset 3 of a new epoch: 1 and 2 are missing"
    );
    let store = Store {
        epoch: "e2".into(),
        held: (1..=3).collect(),
        top: 3,
    };
    assert!(!s.fill(&store));
    assert_eq!(s.received(), ["history_lost@0", "1", "2", "3"]);
    assert_eq!(s.state.position(), Some(&pos(3, "e2")));
}

#[test]
fn a_fill_that_finds_another_epoch_starts_over_in_it() {
    let mut s = Setup::new(10, 2);
    assert!(s.arrive(5, "e1"));
    let store = Store {
        epoch: "e2".into(),
        held: vec![1],
        top: 1,
    };
    assert!(s.fill(&store), "read again in the new epoch");
    assert!(!s.fill(&store));
    assert_eq!(s.received(), ["history_lost@0", "1"]);
}

#[test]
fn pending_arrivals_are_bounded() {
    let mut s = Setup::new(3, 0);
    assert!(s.arrive(2, "e1"));
    for offset in 3..=4 {
        s.arrive(offset, "e1");
    }
    assert!(s.received().is_empty());
    // The fourth parked arrival is one more than the history holds: give up
    // on offset 1 and go on.
    s.arrive(5, "e1");
    assert_eq!(s.received(), ["history_trimmed@1", "2", "3", "4", "5"]);
}

#[test]
fn arrivals_before_the_first_read_are_bounded_and_the_rest_filled() {
    let mut s = Setup::new(3, 0);
    s.state.last = None;
    // The first read is slow (or failing) while publications keep arriving.
    for offset in 1..=1000 {
        assert!(!s.arrive(offset, "e1"), "nothing to fill from yet");
    }
    assert!(s.state.parked.len() <= 3, "{} parked", s.state.parked.len());
    // The read answers: what was let go is read from the store.
    let store = Store {
        epoch: "e1".into(),
        held: (998..=1000).collect(),
        top: 1000,
    };
    let out = Fanout {
        registry: &s.registry,
        metrics: None,
    };
    let page = store.page_after(0);
    s.state.initialise(out, (&s.topic, s.limits), &page);
    assert!(
        s.received().is_empty(),
        "the read's position is where delivery starts"
    );
    assert!(!s.arrive(1001, "e1"));
    assert_eq!(s.received(), ["1001"]);
}

#[test]
fn a_recovering_connection_gets_its_reply_replay_and_buffer_in_order() {
    let mut s = Setup::new(10, 0);
    s.state.last = None;
    s.start_recovering();
    // Live arrivals while its read is in flight (before the node knew where it stood).
    s.arrive(4, "e1");
    s.arrive(5, "e1");
    let store = Store {
        epoch: "e1".into(),
        held: (1..=4).collect(),
        top: 4,
    };
    let since = pos(1, "e1");
    let page = store.page_after(1);
    let metrics = Metrics::new();
    let done = s.complete(&since, true, &page, Some(&metrics));
    assert_eq!(done, Completion::Done);
    assert_eq!(
        metrics.totals(),
        (1, 4),
        "5 was handled here; the replay and the buffer were delivered"
    );
    let mut batch = VecDeque::new();
    s.handle.outbox().try_take(&mut batch);
    let frames: Vec<Value> = batch
        .iter()
        .map(|f| serde_json::from_str(f).unwrap())
        .collect();
    assert_eq!(frames[0]["type"], "subscribed");
    assert_eq!(frames[0]["recovered"], true);
    assert_eq!(frames[0]["offset"], 4);
    let offsets: Vec<u64> = frames[1..]
        .iter()
        .map(|f| f["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [2, 3, 4, 5], "replay then buffered, no duplicate");
    assert!(s.state.recovering.is_empty(), "now an ordinary subscriber");
    s.arrive(6, "e1");
    assert_eq!(s.received(), ["6"]);
}

#[test]
fn a_recovering_connection_buffers_no_more_than_its_queue_holds() {
    // Its queue holds 1000 frames: the buffer goes to it in one go.
    let mut s = Setup::new(100_000, 0);
    s.start_recovering();
    for offset in 1..=5000 {
        s.arrive(offset, "e1");
    }
    let buffered = s.state.recovering[&s.handle.id()].buffer.len();
    assert!(buffered <= 1000, "{buffered} buffered");
    assert_eq!(s.handle.close_code(), Some(CloseCode::SlowConsumer));
}

#[test]
fn a_second_subscribe_of_a_recovering_connection_keeps_the_first() {
    let s = Setup::new(10, 0);
    let trackers = Trackers::default();
    let tracker = trackers.join(&s.topic, s.limits, &s.handle).unwrap();
    tracker.lock().last = Some(pos(0, "e1"));
    let frame = Utf8Bytes::from(with_position(r#"{"type":"n"}"#, 1, "e1"));
    let out = Fanout {
        registry: &s.registry,
        metrics: None,
    };
    tracker
        .lock()
        .arrive(out, (&s.topic, s.limits), pos(1, "e1"), frame);
    // A server-side subscribe beside the client's, while its read is in flight.
    assert!(trackers.join(&s.topic, s.limits, &s.handle).is_none());
    let state = tracker.lock();
    assert_eq!(
        state.recovering[&s.handle.id()].buffer.len(),
        1,
        "nothing lost"
    );
}

#[test]
fn a_replay_that_does_not_reach_the_top_is_not_a_recovery() {
    let mut s = Setup::new(3, 10);
    s.start_recovering();
    // The store holds 1..=10 (trimmed to a larger size before the namespace's
    // was lowered), but the read returns at most `size` after the position.
    let store = Store {
        epoch: "e1".into(),
        held: (1..=10).collect(),
        top: 10,
    };
    let mut page = store.page_after(2);
    page.publications.truncate(3);
    let since = pos(2, "e1");
    let done = s.complete(&since, true, &page, None);
    assert_eq!(done, Completion::Done);
    let mut batch = VecDeque::new();
    s.handle.outbox().try_take(&mut batch);
    let reply: Value = serde_json::from_str(&batch[0]).unwrap();
    assert_eq!(
        (reply["recovered"].clone(), reply["offset"].clone()),
        (Value::from(false), Value::from(10)),
        "6..=10 would be missing from a replay of 3..=5: {reply}"
    );
    assert_eq!(batch.len(), 1, "nothing replayed");
}

#[test]
fn a_node_behind_the_read_skips_what_the_replay_had() {
    let mut s = Setup::new(10, 2);
    s.start_recovering();
    // The read saw 3..=5 before they reached this node.
    let store = Store {
        epoch: "e1".into(),
        held: (1..=5).collect(),
        top: 5,
    };
    let since = pos(2, "e1");
    let page = store.page_after(2);
    let done = s.complete(&since, false, &page, None);
    assert_eq!(done, Completion::Done);
    assert_eq!(s.received(), ["3", "4", "5"], "the replay");
    for offset in 3..=6 {
        s.arrive(offset, "e1");
    }
    assert_eq!(s.received(), ["6"], "3..=5 arrived again and were skipped");
    assert!(
        s.state.recovering.is_empty(),
        "caught up: an ordinary subscriber"
    );
    s.arrive(7, "e1");
    assert_eq!(s.received(), ["7"]);
}
