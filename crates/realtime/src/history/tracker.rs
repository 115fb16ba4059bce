//! The node's tracker of each history topic with local subscribers: the last
//! publication it delivered, what arrived out of order, and the connections still
//! recovering. It delivers in offset order, asks for gaps to be filled from the
//! store, and tells subscribers (`missed`) when something cannot be delivered.
//!
//! Everything here runs under the topic's tracker lock and never awaits; reading
//! the store is the engine's job (see `history::engine`), which hands the pages in.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;
use realtime_core::history::{Admission, Recovery, Unrecoverable, admit, recovery, with_position};
use realtime_core::protocol::MissedReason;
use realtime_core::route::RouteKind;
use realtime_core::{CloseCode, ConnectionId, HistoryLimits, Position, ServerFrame, Topic};
use serde_json::Value;

use super::store::StoredPage;
use crate::handle::ConnectionHandle;
use crate::metrics::Metrics;
use crate::registry::Registry;

/// Where a tracker's deliveries go.
#[derive(Clone, Copy)]
pub(crate) struct Fanout<'a> {
    pub(crate) registry: &'a Registry,
    pub(crate) metrics: Option<&'a Metrics>,
}

/// Every tracked topic of this node.
#[derive(Default)]
pub(crate) struct Trackers {
    topics: DashMap<Topic, Arc<Tracker>>,
}

/// One history topic's tracker.
pub(crate) struct Tracker {
    pub(crate) topic: Topic,
    pub(crate) limits: HistoryLimits,
    state: Mutex<TrackerState>,
}

#[derive(Default)]
pub(crate) struct TrackerState {
    /// The last publication delivered; `None` until the first read initialises it.
    last: Option<Position>,
    /// Arrivals before initialisation, applied once the position is known; the
    /// latest `size` of them (what the read does not cover is filled).
    parked: VecDeque<(Position, Utf8Bytes)>,
    /// Arrivals after a gap, in the current epoch, by offset.
    pending: BTreeMap<u64, Utf8Bytes>,
    /// A fill (a read of the store after `last`) is in progress.
    filling: bool,
    /// The bus broke while a read was in flight (a fill's, or the one that
    /// initialises): what it lost may lie past that read, so read once more.
    again: bool,
    /// The topic has no local subscriber any more: a fill in progress stops.
    closed: bool,
    recovering: HashMap<ConnectionId, Recovering>,
}

/// A connection subscribing with a history read in flight.
struct Recovering {
    handle: Arc<ConnectionHandle>,
    /// `None` until its `subscribed` reply is queued; deliveries are buffered.
    /// Then the replay's top: deliveries at or below it were in the replay.
    replied_through: Option<u64>,
    /// (offset, frame, is a publication) delivered meanwhile, in order; a
    /// `missed` notice is keyed by the offset delivery continues from.
    buffer: Vec<(u64, Utf8Bytes, bool)>,
}

impl Recovering {
    /// Holds a frame back until the reply is queued. The buffer is queued in one
    /// go, so more than the connection's queue holds could never be: it is a
    /// slow consumer already.
    fn hold(&mut self, offset: u64, frame: &Utf8Bytes, publication: bool) {
        if self.handle.is_closing() {
            return;
        }
        if self.buffer.len() >= self.handle.outbox().max_frames() {
            self.buffer = Vec::new();
            self.handle.close(CloseCode::SlowConsumer);
            return;
        }
        self.buffer.push((offset, frame.clone(), publication));
    }
}

/// How a recovering subscribe ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Completion {
    /// The reply (and replay) are queued.
    Done,
    /// The read's epoch is not the tracker's: read again.
    Retry,
    /// The connection left meanwhile.
    Gone,
}

/// What a client's subscribe asked for and what its reply carries.
pub(crate) struct Subscribing<'a> {
    pub(crate) id: ConnectionId,
    pub(crate) since: Option<&'a Position>,
    /// `Some(ref)`: a client command, answered with `subscribed`; `None`: a
    /// server-side subscribe, answered by the caller.
    pub(crate) reply: Option<Option<&'a Value>>,
}

impl Trackers {
    /// The topic's tracker, created when missing, with `handle` registered as
    /// recovering (under the map's entry lock, so a concurrent [`leave`] sees it).
    /// `None` when it is recovering already: another subscribe of the connection
    /// to the topic is under way (a server-side one beside the client's), and
    /// what that one buffered stays its own.
    ///
    /// [`leave`]: Self::leave
    pub(crate) fn join(
        &self,
        topic: &Topic,
        limits: HistoryLimits,
        handle: &Arc<ConnectionHandle>,
    ) -> Option<Arc<Tracker>> {
        let entry = self.topics.entry(topic.clone()).or_insert_with(|| {
            Arc::new(Tracker {
                topic: topic.clone(),
                limits,
                state: Mutex::new(TrackerState::default()),
            })
        });
        let mut state = entry.lock();
        if state.recovering.contains_key(&handle.id()) {
            return None;
        }
        state.recovering.insert(
            handle.id(),
            Recovering {
                handle: handle.clone(),
                replied_through: None,
                buffer: Vec::new(),
            },
        );
        drop(state);
        Some(entry.clone())
    }

    pub(crate) fn get(&self, topic: &str) -> Option<Arc<Tracker>> {
        self.topics.get(topic).map(|t| t.value().clone())
    }

    pub(crate) fn all(&self) -> Vec<Arc<Tracker>> {
        self.topics.iter().map(|t| t.value().clone()).collect()
    }

    /// Takes `id` out of the topic's recovering set and drops the tracker once
    /// the topic has neither subscribers nor recovering connections here.
    pub(crate) fn leave(&self, topic: &str, id: ConnectionId, registry: &Registry) {
        if let Some(tracker) = self.get(topic) {
            tracker.lock().recovering.remove(&id);
        }
        self.topics.remove_if(topic, |_, tracker| {
            let mut state = tracker.lock();
            let idle = state.recovering.is_empty() && registry.topic_subscribers(topic) == 0;
            if idle {
                state.closed = true;
            }
            idle
        });
    }
}

impl Tracker {
    pub(crate) fn lock(&self) -> MutexGuard<'_, TrackerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl TrackerState {
    pub(crate) fn position(&self) -> Option<&Position> {
        self.last.as_ref()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Where a fill should read from, or `None` when nothing is tracked yet.
    pub(crate) fn fill_from(&self) -> Option<u64> {
        self.last.as_ref().map(|l| l.offset)
    }

    /// Marks a fill as started; false when one already runs.
    pub(crate) fn begin_fill(&mut self) -> bool {
        if self.filling || self.last.is_none() {
            return false;
        }
        self.filling = true;
        true
    }

    /// The bus came back after a break: a fill is to read what it lost. Returns
    /// true when one should be started; with a read in flight, it reads again
    /// after that one.
    pub(crate) fn resume_fill(&mut self) -> bool {
        if self.filling || self.last.is_none() {
            self.again = true;
            return false;
        }
        self.begin_fill()
    }

    /// The fill ends (the topic closed, or nothing is missing any more).
    pub(crate) fn end_fill(&mut self) {
        self.filling = false;
    }

    /// A publication arrived. Returns true when a fill should be started.
    pub(crate) fn arrive(
        &mut self,
        out: Fanout<'_>,
        tracker: (&Topic, HistoryLimits),
        at: Position,
        frame: Utf8Bytes,
    ) -> bool {
        if self.closed {
            // Removed from the map, maybe replaced: the topic's subscribers now
            // belong to the tracker that replaced this one.
            return false;
        }
        let Some(last) = &self.last else {
            if self.parked.len() >= tracker.1.size() as usize {
                self.parked.pop_front();
            }
            self.parked.push_back((at, frame));
            return false;
        };
        match admit(last, &at) {
            Admission::Deliver => {
                self.deliver(out, tracker.0, at.offset, &frame);
                self.drain(out, tracker.0);
                false
            }
            Admission::Duplicate => false,
            Admission::Gap { .. } => {
                self.pending.insert(at.offset, frame);
                if self.pending.len() > tracker.1.size() as usize {
                    // Not growing without bound while the store does not answer.
                    self.skip_to_pending(out, tracker.0);
                    return false;
                }
                self.begin_fill()
            }
            Admission::NewEpoch => {
                self.adopt_epoch(out, tracker.0, at.epoch.clone());
                self.arrive(out, tracker, at, frame) || self.begin_fill()
            }
        }
    }

    /// Sets the position from a read when it is not known yet, then applies what
    /// arrived before. Returns true when a fill should be started.
    fn initialise(
        &mut self,
        out: Fanout<'_>,
        tracker: (&Topic, HistoryLimits),
        page: &StoredPage,
    ) -> bool {
        if self.last.is_some() {
            return false;
        }
        self.last = Some(page.state.position());
        let mut parked = std::mem::take(&mut self.parked);
        parked.make_contiguous().sort_by_key(|(p, _)| p.offset);
        let mut fill = std::mem::take(&mut self.again);
        for (at, frame) in parked {
            fill |= self.arrive(out, tracker, at, frame);
        }
        fill
    }

    /// Applies a page read after the last delivered offset. Returns true when
    /// the fill must read again.
    pub(crate) fn apply_fill(
        &mut self,
        out: Fanout<'_>,
        tracker: (&Topic, HistoryLimits),
        page: &StoredPage,
    ) -> bool {
        let more = self.fill_step(out, tracker, page);
        if !more && !self.closed && self.last.is_some() && std::mem::take(&mut self.again) {
            self.filling = true;
            return true;
        }
        more
    }

    fn fill_step(
        &mut self,
        out: Fanout<'_>,
        tracker: (&Topic, HistoryLimits),
        page: &StoredPage,
    ) -> bool {
        let Some(last) = self.last.clone().filter(|_| !self.closed) else {
            // A closed tracker's fill delivers nothing: another tracker may serve
            // the topic's subscribers by now.
            self.filling = false;
            return false;
        };
        let topic = tracker.0;
        if page.state.epoch != last.epoch {
            // The store lost or reset the topic: the page was read in the wrong
            // epoch, so read the new one from its start.
            self.adopt_epoch(out, topic, page.state.epoch.clone());
            return true;
        }
        let before = last.offset;
        if page.state.first > last.offset.saturating_add(1) && page.state.top > last.offset {
            self.skip(
                out,
                topic,
                page.state.first - 1,
                MissedReason::HistoryTrimmed,
            );
        }
        for p in &page.publications {
            let next = self.last.as_ref().map_or(0, |l| l.offset.saturating_add(1));
            if p.offset < next {
                continue;
            }
            if p.offset > next {
                break;
            }
            let frame = Utf8Bytes::from(with_position(&p.payload, p.offset, &last.epoch));
            self.deliver(out, topic, p.offset, &frame);
        }
        self.drain(out, topic);
        let progressed = self.last.as_ref().is_some_and(|l| l.offset > before);
        if self.pending.is_empty() {
            // A page stops short of the top when it is full: read the next one.
            let more = progressed
                && self
                    .last
                    .as_ref()
                    .is_some_and(|l| l.offset < page.state.top);
            self.filling = more;
            return more;
        }
        if !progressed {
            // The store holds nothing that closes the gap: go on from what arrived.
            self.skip_to_pending(out, topic);
            if self.pending.is_empty() {
                self.filling = false;
                return false;
            }
        }
        true
    }

    /// Completes a recovering subscribe with the read it made: queues the
    /// `subscribed` reply, the replay and what was buffered meanwhile, and makes
    /// the connection an ordinary subscriber once the node has delivered as far
    /// as the replay went. Also returns whether a fill should be started.
    pub(crate) fn complete(
        &mut self,
        out: Fanout<'_>,
        tracker: (&Topic, HistoryLimits),
        who: Subscribing<'_>,
        page: &StoredPage,
    ) -> (Completion, bool) {
        if self.closed {
            // Only a connection that left can still be completing here.
            return (Completion::Gone, false);
        }
        let fill = self.initialise(out, tracker, page);
        let Some(last) = self.last.clone() else {
            return (Completion::Retry, fill);
        };
        if last.epoch != page.state.epoch {
            return (Completion::Retry, fill);
        }
        let Some(mut r) = self.recovering.remove(&who.id) else {
            return (Completion::Gone, fill);
        };
        let state = &page.state;
        let mut decided = who.since.map(|s| recovery(s, state));
        let (replay, stands_at) = match (who.since, decided) {
            (Some(since), Some(Recovery::Recovered)) => {
                let replay: Vec<_> = page
                    .publications
                    .iter()
                    .filter(|p| p.offset > since.offset)
                    .collect();
                // Only a replay of everything up to the read's top recovers: a
                // stream holding more than the namespace's size now (it was
                // lowered) answers a page that stops short.
                let whole = replay
                    .iter()
                    .map(|p| p.offset)
                    .eq(since.offset.saturating_add(1)..=state.top);
                if whole {
                    (replay, state.top)
                } else {
                    decided = Some(Recovery::NotRecovered(Unrecoverable::Trimmed));
                    (Vec::new(), state.top)
                }
            }
            _ => (Vec::new(), state.top),
        };
        if let Some(reference) = who.reply {
            let (recovered, reason) = match decided {
                None => (None, None),
                Some(Recovery::Recovered) => (Some(true), None),
                Some(Recovery::NotRecovered(why)) => (Some(false), Some(why)),
            };
            let reply = ServerFrame::Subscribed {
                topic: tracker.0.as_str(),
                reference,
                offset: Some(stands_at),
                epoch: Some(&state.epoch),
                recovered,
                reason,
            }
            .to_json();
            r.handle.try_send(&Utf8Bytes::from(reply));
        }
        let mut delivered = 0;
        for p in replay {
            let frame = with_position(&p.payload, p.offset, &state.epoch);
            delivered += usize::from(r.handle.try_send(&Utf8Bytes::from(frame)));
        }
        for (key, frame, publication) in r.buffer.drain(..) {
            if key > stands_at && r.handle.try_send(&frame) && publication {
                delivered += 1;
            }
        }
        if let Some(metrics) = out.metrics {
            // Counted here, not where they were handled: the replay's were
            // published earlier, and the buffer's were held back from this one.
            metrics.delivered(RouteKind::Topic, delivered);
        }
        if last.offset < stands_at {
            // This node has not yet delivered what the read saw: skip those when
            // they arrive, the replay had them.
            r.replied_through = Some(stands_at);
            self.recovering.insert(who.id, r);
        }
        (Completion::Done, fill)
    }

    /// The store started a new epoch (reset, or its data was lost): subscribers
    /// are told and delivery goes on from the new epoch's start.
    pub(crate) fn adopt_epoch(&mut self, out: Fanout<'_>, topic: &Topic, epoch: String) {
        if self.closed || self.last.as_ref().is_some_and(|l| l.epoch == epoch) {
            return;
        }
        let frame = missed(topic, MissedReason::HistoryLost, 0, &epoch);
        self.pending.clear();
        // Connections that already have their reply are subscribers like the rest.
        self.recovering.retain(|_, r| {
            if r.replied_through.is_some() {
                r.handle.try_send(&frame);
                false
            } else {
                // Their read will be retried in the new epoch.
                r.buffer.clear();
                true
            }
        });
        self.send_to_subscribers(out, topic, &frame);
        self.last = Some(Position { offset: 0, epoch });
    }

    /// Delivery goes on after `offset`; what lies between was lost.
    fn skip(&mut self, out: Fanout<'_>, topic: &Topic, offset: u64, reason: MissedReason) {
        let Some(last) = &mut self.last else {
            return;
        };
        if offset <= last.offset {
            return;
        }
        last.offset = offset;
        let frame = missed(topic, reason, offset, &last.epoch);
        for r in self.recovering.values_mut() {
            match r.replied_through {
                None => r.hold(offset, &frame, false),
                Some(through) if offset > through => {
                    r.handle.try_send(&frame);
                }
                Some(_) => {}
            }
        }
        self.send_to_subscribers(out, topic, &frame);
        self.recovering
            .retain(|_, r| r.replied_through.is_none_or(|t| t > offset));
    }

    fn skip_to_pending(&mut self, out: Fanout<'_>, topic: &Topic) {
        if let Some(first) = self.pending.keys().next().copied() {
            self.skip(out, topic, first - 1, MissedReason::HistoryTrimmed);
            self.drain(out, topic);
        }
    }

    /// Delivers the pending publications that now follow on.
    fn drain(&mut self, out: Fanout<'_>, topic: &Topic) {
        loop {
            // No successor past u64::MAX (only a forged store reply gets there).
            let Some(next) = self.last.as_ref().and_then(|l| l.offset.checked_add(1)) else {
                return;
            };
            self.pending = self.pending.split_off(&next);
            match self.pending.remove(&next) {
                Some(frame) => self.deliver(out, topic, next, &frame),
                None => return,
            }
        }
    }

    /// Delivers the next publication (`offset` = last + 1) to every subscriber.
    fn deliver(&mut self, out: Fanout<'_>, topic: &Topic, offset: u64, frame: &Utf8Bytes) {
        if let Some(last) = &mut self.last {
            last.offset = offset;
        }
        let delivered = if self.recovering.is_empty() {
            out.registry.deliver_to_topic(topic.as_str(), frame)
        } else {
            let direct = out
                .registry
                .deliver_to_topic_except(topic.as_str(), frame, |id| {
                    self.recovering.contains_key(&id)
                });
            let mut later = 0;
            for r in self.recovering.values_mut() {
                match r.replied_through {
                    None => r.hold(offset, frame, true),
                    Some(through) if offset > through => {
                        later += usize::from(r.handle.try_send(frame));
                    }
                    Some(_) => {}
                }
            }
            // Caught up with its replay: an ordinary subscriber from here on.
            self.recovering
                .retain(|_, r| r.replied_through.is_none_or(|t| t > offset));
            direct + later
        };
        if let Some(metrics) = out.metrics {
            metrics.sent(RouteKind::Topic, delivered);
        }
    }

    /// A notice to every subscriber that has its `subscribed` reply.
    fn send_to_subscribers(&self, out: Fanout<'_>, topic: &Topic, frame: &Utf8Bytes) {
        if self.recovering.is_empty() {
            out.registry.deliver_to_topic(topic.as_str(), frame);
        } else {
            out.registry
                .deliver_to_topic_except(topic.as_str(), frame, |id| {
                    self.recovering.contains_key(&id)
                });
        }
    }
}

/// A `missed` notice on a history topic: delivery goes on after `offset` in `epoch`.
pub(crate) fn missed(topic: &Topic, reason: MissedReason, offset: u64, epoch: &str) -> Utf8Bytes {
    Utf8Bytes::from(
        ServerFrame::Missed {
            topic: topic.as_str(),
            reason,
            offset: Some(offset),
            epoch: Some(epoch),
        }
        .to_json(),
    )
}

#[cfg(test)]
mod tests {
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
}
