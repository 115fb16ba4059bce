//! The in-memory [`HistoryStore`]: each topic's epoch, top offset and latest
//! publications, kept in this process. One node on its own hands publications to
//! its engine's inbox; engines sharing a [`MemoryHub`](crate::MemoryHub) share one
//! store whose appends go out on the hub.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{OnceLock, Weak};
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::one::RefMut;
use realtime_core::history::WirePublication;
use realtime_core::{HistoryLimits, Position, StreamState, Topic};
use tokio::time::Instant;

use super::store::{
    AppendRequest, HistoryError, HistoryStore, PageFuture, PositionFuture, ReadRequest, StoredPage,
    StoredPublication,
};
use crate::cluster::bus::{BusEvent, Inbox};
use crate::cluster::memory::HubInner;

/// A history kept in memory. See the module docs for its two modes.
pub struct MemoryHistory {
    /// Sharded, so appends to different topics do not contend; a topic's entry
    /// lock is held while its publication is handed on, so order = offset order.
    topics: DashMap<Topic, TopicLog>,
    sink: Sink,
    /// Appends and reads since topics past their position's expiry were last
    /// forgotten: a pass over the map per as many operations as it has topics.
    since_sweep: AtomicUsize,
}

/// Fewest operations between two passes over a small map.
const SWEEP_EVERY: usize = 1024;

enum Sink {
    /// One engine: publications go to the inbox it gave [`HistoryStore::start`].
    Inbox(OnceLock<Inbox>),
    /// Engines on a hub: publications go to every member listening on the channel.
    Hub(Weak<HubInner>),
}

struct TopicLog {
    epoch: String,
    top: u64,
    publications: VecDeque<StoredPublication>,
    /// When the topic was last appended to (or created): the expiry clock.
    touched: Instant,
    /// How long its position outlives `touched` (its namespace's, when last used).
    position_ttl: Duration,
}

impl TopicLog {
    fn fresh(epoch: String, now: Instant, limits: HistoryLimits) -> TopicLog {
        TopicLog {
            epoch,
            top: 0,
            publications: VecDeque::new(),
            touched: now,
            position_ttl: limits.position_ttl(),
        }
    }

    /// Past this, the topic is as good as never used: forgetting it changes nothing.
    fn forgotten(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.touched) >= self.position_ttl
    }

    /// Applies expiry: publications go `ttl` after the last append, the position
    /// `position_ttl` after it (a new epoch starts then).
    fn expire(&mut self, limits: HistoryLimits, now: Instant, new_epoch: &str) {
        let idle = now.saturating_duration_since(self.touched);
        self.position_ttl = limits.position_ttl();
        if idle >= limits.position_ttl() {
            *self = TopicLog::fresh(new_epoch.to_owned(), now, limits);
        } else if idle >= limits.ttl() {
            self.publications.clear();
        }
    }

    fn state(&self) -> StreamState {
        StreamState {
            epoch: self.epoch.clone(),
            top: self.top,
            first: self.publications.front().map_or(self.top + 1, |p| p.offset),
        }
    }
}

impl std::fmt::Debug for MemoryHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryHistory")
            .field("topics", &self.topics.len())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryHistory {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryHistory {
    /// A store for one engine on its own; the engine calls
    /// [`start`](HistoryStore::start) with its inbox.
    pub fn new() -> MemoryHistory {
        MemoryHistory {
            topics: DashMap::new(),
            sink: Sink::Inbox(OnceLock::new()),
            since_sweep: AtomicUsize::new(0),
        }
    }

    /// A store whose appends are published on a hub's channels.
    pub(crate) fn on_hub(hub: Weak<HubInner>) -> MemoryHistory {
        MemoryHistory {
            topics: DashMap::new(),
            sink: Sink::Hub(hub),
            since_sweep: AtomicUsize::new(0),
        }
    }

    fn hand_on(&self, channel: &str, bytes: &[u8]) {
        match &self.sink {
            Sink::Inbox(inbox) => {
                if let Some(inbox) = inbox.get() {
                    inbox(BusEvent::Envelope(bytes));
                }
            }
            Sink::Hub(hub) => {
                if let Some(hub) = hub.upgrade() {
                    hub.deliver(channel, bytes);
                }
            }
        }
    }

    /// Forgets the topics whose position expired, now and then: every topic name
    /// a client reads or subscribes to is otherwise kept for good. Called with no
    /// entry of the map held.
    fn sweep(&self, now: Instant) {
        let due = self.since_sweep.fetch_add(1, Ordering::Relaxed) + 1;
        if due < self.topics.len().max(SWEEP_EVERY) {
            return;
        }
        self.since_sweep.store(0, Ordering::Relaxed);
        self.topics.retain(|_, log| !log.forgotten(now));
    }

    /// The topic's log as of `now` (expired, or made with `new_epoch`), locked.
    fn log(
        &self,
        topic: &Topic,
        limits: HistoryLimits,
        new_epoch: &str,
        now: Instant,
    ) -> RefMut<'_, Topic, TopicLog> {
        self.sweep(now);
        let mut log = self
            .topics
            .entry(topic.clone())
            .or_insert_with(|| TopicLog::fresh(new_epoch.to_owned(), now, limits));
        log.expire(limits, now, new_epoch);
        log
    }

    fn append_now(&self, request: AppendRequest) -> Position {
        let now = Instant::now();
        let mut log = self.log(&request.topic, request.limits, &request.new_epoch, now);
        log.top += 1;
        log.touched = now;
        let offset = log.top;
        log.publications.push_back(StoredPublication {
            offset,
            payload: request.payload,
        });
        let size = request.limits.size() as usize;
        while log.publications.len() > size {
            log.publications.pop_front();
        }
        let payload = log.publications.back().map_or("", |p| p.payload.as_str());
        let wire = WirePublication {
            offset,
            epoch: &log.epoch,
            topic: request.topic.as_str(),
            payload: payload.as_bytes(),
        }
        .encode();
        // Still under the topic's lock: receivers see this topic's publications
        // in offset order.
        self.hand_on(&request.channel, &wire);
        Position {
            offset,
            epoch: log.epoch.clone(),
        }
    }

    fn read_now(&self, request: ReadRequest) -> StoredPage {
        let now = Instant::now();
        let log = self.log(&request.topic, request.limits, &request.new_epoch, now);
        let after = request.after.unwrap_or(0);
        // Held offsets are consecutive: start at `after + 1` without a scan, so a
        // read near the top of a large history costs what it returns.
        let held = &log.publications;
        let start = held.front().map_or(0, |p| {
            let skip = after.saturating_add(1).saturating_sub(p.offset);
            usize::try_from(skip).map_or(held.len(), |skip| skip.min(held.len()))
        });
        let publications = held.range(start..).take(request.limit).cloned().collect();
        StoredPage {
            state: log.state(),
            publications,
        }
    }
}

impl HistoryStore for MemoryHistory {
    fn start(&self, inbox: Inbox) {
        if let Sink::Inbox(slot) = &self.sink {
            let _ = slot.set(inbox);
        }
    }

    fn append(&self, request: AppendRequest) -> PositionFuture {
        let position = self.append_now(request);
        Box::pin(std::future::ready(Ok(position)))
    }

    fn read(&self, request: ReadRequest) -> PageFuture {
        let page = self.read_now(request);
        Box::pin(std::future::ready(Ok(page)))
    }

    fn reset(&self, topic: &Topic, limits: HistoryLimits, new_epoch: String) -> PositionFuture {
        let now = Instant::now();
        self.topics.insert(
            topic.clone(),
            TopicLog::fresh(new_epoch.clone(), now, limits),
        );
        let position = Position {
            offset: 0,
            epoch: new_epoch,
        };
        Box::pin(std::future::ready(Ok::<_, HistoryError>(position)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use realtime_core::NodeTag;

    use super::*;

    fn limits(size: u64, ttl: u64) -> HistoryLimits {
        HistoryLimits::new(size, Duration::from_secs(ttl)).unwrap()
    }

    fn append(store: &MemoryHistory, limits: HistoryLimits, body: &str) -> Position {
        store.append_now(AppendRequest {
            topic: Topic::parse("t").unwrap(),
            limits,
            payload: body.into(),
            channel: "c".into(),
            origin: NodeTag::from_random(1),
            seq: 1,
            new_epoch: "e1".into(),
        })
    }

    fn read(store: &MemoryHistory, limits: HistoryLimits, after: Option<u64>) -> StoredPage {
        store.read_now(ReadRequest {
            topic: Topic::parse("t").unwrap(),
            limits,
            after,
            limit: 100,
            new_epoch: "e2".into(),
        })
    }

    #[tokio::test]
    async fn appends_number_trim_and_reach_the_inbox_in_order() {
        let store = MemoryHistory::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        store.start(Arc::new(move |event| {
            if let BusEvent::Envelope(bytes) = event {
                let p = WirePublication::decode(bytes).unwrap();
                sink.lock().unwrap().push(p.offset);
            }
        }));
        let l = limits(3, 60);
        for i in 1..=5 {
            assert_eq!(append(&store, l, "{}").offset, i);
        }
        assert_eq!(*seen.lock().unwrap(), vec![1, 2, 3, 4, 5]);
        let page = read(&store, l, Some(1));
        assert_eq!(
            page.state,
            StreamState {
                epoch: "e1".into(),
                top: 5,
                first: 3
            }
        );
        let offsets: Vec<u64> = page.publications.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, vec![3, 4, 5]);
        assert_eq!(read(&store, l, Some(4)).publications.len(), 1);
        assert!(read(&store, l, Some(5)).publications.is_empty());
        assert!(read(&store, l, Some(u64::MAX)).publications.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn publications_expire_before_the_position() {
        let store = MemoryHistory::new();
        let l = limits(10, 60);
        append(&store, l, "{}");
        append(&store, l, "{}");
        tokio::time::advance(Duration::from_secs(61)).await;
        let page = read(&store, l, None);
        assert_eq!((page.state.top, page.state.first), (2, 3));
        assert!(page.publications.is_empty());
        tokio::time::advance(l.position_ttl()).await;
        let page = read(&store, l, None);
        assert_eq!(page.state.epoch, "e2", "a lost position starts a new epoch");
        assert_eq!(page.state.top, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn topics_whose_position_expired_are_forgotten() {
        let store = MemoryHistory::new();
        let l = limits(10, 60);
        // A client may read (subscribe to) any number of topic names.
        for n in 0..500 {
            store.read_now(ReadRequest {
                topic: Topic::parse(&format!("t{n}")).unwrap(),
                limits: l,
                after: None,
                limit: 0,
                new_epoch: "e1".into(),
            });
        }
        append(&store, l, "{}");
        tokio::time::advance(l.position_ttl() + Duration::from_secs(1)).await;
        for _ in 0..1000 {
            read(&store, l, None);
        }
        assert_eq!(store.topics.len(), 1, "only the topic still in use is kept");
        assert_eq!(
            read(&store, l, None).state.epoch,
            "e2",
            "its position expired too"
        );
    }

    #[tokio::test]
    async fn a_reset_starts_a_new_epoch() {
        let store = MemoryHistory::new();
        let l = limits(10, 60);
        append(&store, l, "{}");
        let topic = Topic::parse("t").unwrap();
        let p = store.reset(&topic, l, "e9".into()).await.unwrap();
        assert_eq!(p.offset, 0);
        assert_eq!(append(&store, l, "{}").epoch, "e9");
    }
}
