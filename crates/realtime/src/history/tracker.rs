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
mod tests;
