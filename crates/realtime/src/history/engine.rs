//! How the engine runs history topics: appending publications to the store,
//! receiving them back (from the store's inbox or the bus) into the topic's
//! tracker, filling gaps, and subscribing with recovery ("subscribe to live first,
//! buffer, read history, merge by offset").

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use realtime_core::history::{MAX_HISTORY_LIMIT, WirePublication, with_position};
use realtime_core::protocol::MissedReason;
use realtime_core::{HistoryLimits, Position, PreparedMessage, ServerFrame, Topic};
use serde_json::Value;

use super::store::{AppendRequest, HistoryError, HistoryStore, PositionFuture, ReadRequest};
use super::tracker::{Completion, Fanout, Subscribing, Tracker};
use crate::error::SendError;
use crate::handle::ConnectionHandle;
use crate::service::{Inner, Realtime};

/// First wait before a failed fill reads the store again; doubled up to the cap.
const FILL_BACKOFF: Duration = Duration::from_millis(50);
const FILL_BACKOFF_CAP: Duration = Duration::from_secs(2);

/// The highest offset a store hands out: Redis's Lua numbers are doubles, exact
/// up to 2^53. A publication claiming more (or 0) was not made by a store, and
/// taking it would move the topic's position where no real one can follow.
const MAX_OFFSET: u64 = 1 << 53;

/// Why a subscribe on a history topic failed; the connection is not left subscribed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HistorySubscribeError {
    #[error(transparent)]
    Store(#[from] HistoryError),
    #[error("connection is closing")]
    Gone,
}

/// A fresh epoch: 16 random hex digits.
pub(crate) fn new_epoch() -> String {
    let mut epoch = uuid::Uuid::new_v4().simple().to_string();
    epoch.truncate(16);
    epoch
}

impl Realtime {
    /// The history `topic` keeps, if any.
    pub(crate) fn history_limits(&self, topic: &Topic) -> Option<HistoryLimits> {
        self.inner.config.topic_policy.history_for(topic.as_str())
    }

    pub(crate) fn history_store(&self) -> Result<&Arc<dyn HistoryStore>, HistoryError> {
        self.inner
            .history
            .as_ref()
            .ok_or_else(|| HistoryError::Unavailable("no history store configured".into()))
    }

    pub(crate) fn fanout(&self) -> Fanout<'_> {
        Fanout {
            registry: &self.inner.registry,
            metrics: Some(&self.inner.metrics),
        }
    }

    /// Hands a publication to the store, which numbers it and sends it to every
    /// node subscribed to the topic, this one included: nothing is delivered here.
    pub(crate) fn append(
        &self,
        topic: &Topic,
        limits: HistoryLimits,
        message: PreparedMessage,
    ) -> Result<PositionFuture, SendError> {
        let store = self.history_store()?;
        let channel = match &self.inner.relay {
            Some(relay) => {
                relay.ensure_up()?;
                relay.channels.topic(topic.as_str())
            }
            None => format!("history:{}", topic.as_str()),
        };
        let seq = self.inner.appends.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(store.append(AppendRequest {
            topic: topic.clone(),
            limits,
            payload: message.into_string(),
            channel,
            origin: self.inner.tag,
            seq,
            new_epoch: new_epoch(),
        }))
    }

    /// A wire publication from the store's inbox or the bus.
    pub(crate) fn on_publication(&self, bytes: &[u8]) {
        let Some(publication) =
            WirePublication::decode(bytes).filter(|p| (1..=MAX_OFFSET).contains(&p.offset))
        else {
            tracing::warn!("dropped a malformed history publication");
            return;
        };
        let Some(tracker) = self.inner.trackers.get(publication.topic) else {
            return;
        };
        let Ok(payload) = std::str::from_utf8(publication.payload) else {
            tracing::warn!("dropped a history publication that is not UTF-8");
            return;
        };
        let frame = Utf8Bytes::from(with_position(
            payload,
            publication.offset,
            publication.epoch,
        ));
        let at = Position {
            offset: publication.offset,
            epoch: publication.epoch.to_owned(),
        };
        let fill =
            tracker
                .lock()
                .arrive(self.fanout(), (&tracker.topic, tracker.limits), at, frame);
        if fill {
            self.spawn_fill(tracker);
        }
    }

    /// Reads the store after the tracker's last delivered offset until nothing is
    /// missing, retrying with capped backoff while the store is down. The caller
    /// has marked the fill as started.
    pub(crate) fn spawn_fill(&self, tracker: Arc<Tracker>) {
        let (Ok(runtime), Some(store)) = (
            tokio::runtime::Handle::try_current(),
            self.inner.history.clone(),
        ) else {
            tracker.lock().end_fill();
            return;
        };
        let engine = Arc::downgrade(&self.inner);
        runtime.spawn(fill(engine, store, tracker));
    }

    /// Subscribes a local connection to a history topic. With `reply` (a client's
    /// `subscribe`, and its `ref`), queues the `subscribed` reply with the
    /// position, then the replay when `since` is recoverable, then what arrived
    /// meanwhile. Returns whether the connection was not subscribed before.
    pub(crate) async fn subscribe_history(
        &self,
        handle: &Arc<ConnectionHandle>,
        topic: &Topic,
        limits: HistoryLimits,
        since: Option<&Position>,
        reply: Option<Option<&Value>>,
    ) -> Result<bool, HistorySubscribeError> {
        let store = self.history_store()?.clone();
        if handle.has_topic(topic.as_str()) {
            // Subscribed all along: nothing was missed, nothing to replay.
            self.already_subscribed(handle, topic, reply);
            return Ok(false);
        }
        let Some(tracker) = self.inner.trackers.join(topic, limits, handle) else {
            // Another subscribe of this connection to the topic is under way.
            self.already_subscribed(handle, topic, reply);
            return Ok(false);
        };
        let added = match self.subscribe_channel(handle, topic).await {
            Ok(added) => added,
            Err(_) => {
                self.inner
                    .trackers
                    .leave(topic.as_str(), handle.id(), &self.inner.registry);
                return Err(HistorySubscribeError::Gone);
            }
        };
        let (after, limit) = match since {
            Some(since) => (Some(since.offset), limits.size() as usize),
            None => (None, 0),
        };
        for attempt in 0..2 {
            let read = store
                .read(ReadRequest {
                    topic: topic.clone(),
                    limits,
                    after,
                    limit,
                    new_epoch: new_epoch(),
                })
                .await;
            let page = match read {
                Ok(page) => page,
                Err(e) => {
                    self.undo_subscribe(handle, topic).await;
                    return Err(e.into());
                }
            };
            let who = Subscribing {
                id: handle.id(),
                since,
                reply,
            };
            let (done, fill) = {
                let mut state = tracker.lock();
                let first = state.complete(self.fanout(), (topic, limits), who, &page);
                if first.0 == Completion::Retry && attempt == 1 {
                    // Two reads agree with each other and not with what this node
                    // saw: the store moved to an epoch no publication has shown
                    // yet (a reset). Adopt it, telling the subscribers.
                    state.adopt_epoch(self.fanout(), topic, page.state.epoch.clone());
                    let who = Subscribing {
                        id: handle.id(),
                        since,
                        reply,
                    };
                    let again = state.complete(self.fanout(), (topic, limits), who, &page);
                    (again.0, first.1 || again.1)
                } else {
                    first
                }
            };
            if fill && tracker.lock().begin_fill() {
                self.spawn_fill(tracker.clone());
            }
            match done {
                Completion::Done => return Ok(added),
                Completion::Gone => return Err(HistorySubscribeError::Gone),
                Completion::Retry => continue,
            }
        }
        self.undo_subscribe(handle, topic).await;
        Err(HistorySubscribeError::Gone)
    }

    /// Answers a client's subscribe to a topic the connection has (or is being
    /// given) with the node's position.
    fn already_subscribed(
        &self,
        handle: &ConnectionHandle,
        topic: &Topic,
        reply: Option<Option<&Value>>,
    ) {
        let Some(reference) = reply else {
            return;
        };
        let position = self
            .inner
            .trackers
            .get(topic.as_str())
            .and_then(|t| t.lock().position().cloned());
        let frame = ServerFrame::Subscribed {
            topic: topic.as_str(),
            reference,
            offset: position.as_ref().map(|p| p.offset),
            epoch: position.as_ref().map(|p| p.epoch.as_str()),
            recovered: None,
            reason: None,
        };
        handle.try_send(&Utf8Bytes::from(frame.to_json()));
    }

    async fn undo_subscribe(&self, handle: &Arc<ConnectionHandle>, topic: &Topic) {
        self.unsubscribe_channel(handle, topic).await;
        self.inner
            .trackers
            .leave(topic.as_str(), handle.id(), &self.inner.registry);
    }

    /// Reads, for every history topic with subscribers here, what was published
    /// after the last publication delivered: at a bus break (what other nodes
    /// published meanwhile), and again once the bus is subscribed again (what was
    /// published between that first read and the channel's SUBSCRIBE arrived
    /// neither live nor in it).
    pub(crate) fn refill_history(&self) {
        for tracker in self.inner.trackers.all() {
            if tracker.lock().resume_fill() {
                self.spawn_fill(tracker);
            }
        }
    }

    /// The bus came back after a break: history topics are filled in from the
    /// store; subscribers of the other topics are told they may have missed
    /// messages.
    pub(crate) fn resume_after_bus_break(&self) {
        self.refill_history();
        let policy = &self.inner.config.topic_policy;
        for (topic, _) in self.inner.registry.topic_counts() {
            if policy.history_for(topic.as_str()).is_some() {
                continue;
            }
            let frame = ServerFrame::Missed {
                topic: topic.as_str(),
                reason: MissedReason::BusReconnected,
                offset: None,
                epoch: None,
            }
            .to_json();
            self.inner
                .registry
                .deliver_to_topic(topic.as_str(), &Utf8Bytes::from(frame));
        }
    }
}

async fn fill(engine: Weak<Inner>, store: Arc<dyn HistoryStore>, tracker: Arc<Tracker>) {
    let mut backoff = FILL_BACKOFF;
    loop {
        let from = {
            let mut state = tracker.lock();
            match state.fill_from() {
                Some(from) if !state.is_closed() => from,
                _ => {
                    state.end_fill();
                    return;
                }
            }
        };
        let read = store
            .read(ReadRequest {
                topic: tracker.topic.clone(),
                limits: tracker.limits,
                after: Some(from),
                // Paged: a fill after a long break reads on until the top.
                limit: (tracker.limits.size() as usize).min(MAX_HISTORY_LIMIT),
                new_epoch: new_epoch(),
            })
            .await;
        match read {
            Ok(page) => {
                backoff = FILL_BACKOFF;
                let Some(inner) = engine.upgrade() else {
                    return;
                };
                let rt = Realtime { inner };
                let again =
                    tracker
                        .lock()
                        .apply_fill(rt.fanout(), (&tracker.topic, tracker.limits), &page);
                if !again {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(topic = %tracker.topic.as_str(), error = %e, "could not read history to fill a gap; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(FILL_BACKOFF_CAP);
            }
        }
    }
}
