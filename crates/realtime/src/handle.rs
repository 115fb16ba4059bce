//! A registered connection as the rest of the engine sees it: identity, its
//! bounded outbound queue, its close signal and its topic set.
//!
//! Sending never waits: a full queue marks the connection as a slow consumer and
//! signals its session to close it, so one stalled client never delays another.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU16, Ordering};

use axum::extract::ws::Utf8Bytes;
use realtime_core::{CloseCode, ConnectionId, ConnectionInfo, Topic};
use tokio::sync::Notify;

use crate::outbox::Outbox;

/// One connection's handle, shared by the registry, topic index and its session.
#[derive(Debug)]
pub struct ConnectionHandle {
    info: ConnectionInfo,
    outbox: Outbox,
    /// 0 while open, else the [`CloseCode`] number that closed it (first one wins).
    close_code: AtomicU16,
    close_signal: Notify,
    topics: Mutex<TopicSet>,
    /// Set once the connection's end has been accounted for (metrics, count).
    finished: AtomicBool,
    /// The token's `exp` (Unix seconds); `i64::MAX` when it has none. A `refresh`
    /// moves it.
    expires_at: AtomicI64,
}

#[derive(Debug, Default)]
struct TopicSet {
    /// Set once the connection is being removed; no subscription may be added after.
    removed: bool,
    topics: HashSet<Topic>,
}

/// Why a subscription could not be recorded on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectionGone;

impl ConnectionHandle {
    /// A handle whose queue holds at most `max_frames` frames and `max_bytes` bytes.
    pub(crate) fn new(
        info: ConnectionInfo,
        expires_at: Option<i64>,
        max_frames: usize,
        max_bytes: usize,
    ) -> Self {
        ConnectionHandle {
            expires_at: AtomicI64::new(expires_at.unwrap_or(i64::MAX)),
            info,
            outbox: Outbox::new(max_frames, max_bytes),
            close_code: AtomicU16::new(0),
            close_signal: Notify::new(),
            topics: Mutex::new(TopicSet::default()),
            finished: AtomicBool::new(false),
        }
    }

    /// The outbound queue; only the connection's writer takes from it.
    pub(crate) fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    pub fn id(&self) -> ConnectionId {
        self.info.id
    }

    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// When the connection's token expires (Unix seconds), if it does.
    pub fn expires_at(&self) -> Option<i64> {
        let at = self.expires_at.load(Ordering::Acquire);
        (at != i64::MAX).then_some(at)
    }

    /// Records the expiry of a refreshed token.
    pub(crate) fn set_expires_at(&self, at: Option<i64>) {
        self.expires_at
            .store(at.unwrap_or(i64::MAX), Ordering::Release);
    }

    /// Whether subscribing to `topic` keeps the connection within `max` topics
    /// (0: no limit). A topic it already has always fits.
    pub(crate) fn has_room_for(&self, topic: &Topic, max: usize) -> bool {
        let set = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        max == 0 || set.topics.len() < max || set.topics.contains(topic)
    }

    /// Queues one frame. Returns whether it was queued. A full queue (frames or
    /// bytes) closes the connection as a slow consumer; the frame is not queued.
    pub(crate) fn try_send(&self, frame: &Utf8Bytes) -> bool {
        if self.is_closing() {
            return false;
        }
        match self.outbox.push(frame) {
            Ok(()) => true,
            Err(crate::outbox::Refused::Full) => {
                self.close(CloseCode::SlowConsumer);
                false
            }
        }
    }

    /// Asks the session to close the connection with `code`. The first code wins.
    pub(crate) fn close(&self, code: CloseCode) -> bool {
        let first = self
            .close_code
            .compare_exchange(0, code.code(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first {
            self.close_signal.notify_waiters();
        }
        first
    }

    pub fn is_closing(&self) -> bool {
        self.close_code.load(Ordering::Acquire) != 0
    }

    /// The code the connection is being closed with, once [`close`](Self::close) ran.
    pub fn close_code(&self) -> Option<CloseCode> {
        CloseCode::from_code(self.close_code.load(Ordering::Acquire))
    }

    /// Returns `true` exactly once: for whoever first accounts for the end of
    /// this connection.
    pub(crate) fn mark_finished(&self) -> bool {
        !self.finished.swap(true, Ordering::AcqRel)
    }

    /// Resolves once the connection is asked to close. Any number of waiters.
    pub(crate) async fn closed(&self) {
        loop {
            let notified = self.close_signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_closing() {
                return;
            }
            notified.await;
        }
    }

    pub(crate) fn has_topic(&self, topic: &str) -> bool {
        let set = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        set.topics.contains(topic)
    }

    /// Records `topic`; `Ok(true)` when it was new.
    pub(crate) fn add_topic(
        &self,
        topic: &Topic,
        index: impl FnOnce(),
    ) -> Result<bool, ConnectionGone> {
        let mut set = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        if set.removed {
            return Err(ConnectionGone);
        }
        let added = set.topics.insert(topic.clone());
        if added {
            // Indexed while the set is locked, so removal cannot miss this topic.
            index();
        }
        Ok(added)
    }

    /// Forgets `topic`; `true` when it was subscribed.
    pub(crate) fn remove_topic(&self, topic: &str, unindex: impl FnOnce()) -> bool {
        let mut set = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let removed = set.topics.remove(topic);
        if removed {
            unindex();
        }
        removed
    }

    /// Marks the connection removed and hands back every topic it was subscribed to.
    pub(crate) fn take_topics(&self) -> HashSet<Topic> {
        let mut set = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        set.removed = true;
        std::mem::take(&mut set.topics)
    }

    /// The topics this connection is subscribed to, sorted.
    pub fn topics(&self) -> Vec<Topic> {
        let set = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<Topic> = set.topics.iter().cloned().collect();
        list.sort();
        list
    }
}
